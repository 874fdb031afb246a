//! One family of a dual allocation ending before the other (RFC 8656 §8.1): deleted by a
//! Refresh with REQUESTED-ADDRESS-FAMILY and LIFETIME 0, or past its own time-to-expiry.
//! Its port goes back to the pool, its relay socket closes, and its permissions and channels
//! go with it; the other family's are untouched.

use crate::core::allocation::AllocationId;
use crate::core::{EndReason, Output, Server};
use crate::stun::AddressFamily;
use std::time::Instant;

impl Server {
    /// Ends `family` of allocation `id`; when it was the last one held, the whole allocation
    /// ends for `reason`.
    pub(crate) fn end_family(
        &mut self,
        now: Instant,
        id: AllocationId,
        family: AddressFamily,
        reason: EndReason,
    ) {
        let Some(a) = self.allocations.get_mut(id) else {
            return;
        };
        let Some(relay) = a
            .held_relays()
            .map(|(relay, _)| relay)
            .find(|r| AddressFamily::of(r) == family)
        else {
            return;
        };
        if a.held_relays().count() < 2 {
            return self.free_allocation(now, id, reason);
        }
        a.set_family_expiry(family, None);
        // The family's bindings leave the kernel before they leave the list.
        self.sync_fast_path(now, id);
        let Some(a) = self.allocations.get_mut(id) else {
            return;
        };
        let (permissions, channels) = a.drop_family_state(family);
        let c = &mut self.counters;
        c.permissions = c.permissions.saturating_sub(permissions as u64);
        c.channels = c.channels.saturating_sub(channels as u64);
        self.release_port(relay);
        self.outputs.push_back(Output::CloseRelay {
            id,
            family: Some(family),
        });
        self.schedule_expiry(id);
    }

    /// The allocation's expiry deadline fired but the allocation lives on: end any family of
    /// a dual allocation that is past its own expiry, and wake again for the remaining one.
    pub(crate) fn expire_families(&mut self, now: Instant, id: AllocationId) {
        let Some(a) = self.allocations.get(id) else {
            return;
        };
        let mut due = [None; 2];
        for (slot, (relay, expires)) in due.iter_mut().zip(a.held_relays()) {
            if expires <= now {
                *slot = Some(AddressFamily::of(&relay));
            }
        }
        for family in due.into_iter().flatten() {
            self.end_family(now, id, family, EndReason::Expired);
        }
    }
}
