//! Refresh (RFC 8656 §8): extend an allocation's life, or end it with LIFETIME 0.

use crate::core::allocation::{AllocationId, State};
use crate::core::auth::SessionKey;
use crate::core::five_tuple::FiveTuple;
use crate::core::reply::Responder;
use crate::core::{EndReason, Server};
use crate::stun::{AttrType, Message};
use std::time::{Duration, Instant};

impl Server {
    /// The active allocation of `from`, if `username` owns it: 437 when there is none, 441
    /// when another user created it (RFC 8656 §5: requests on an allocation must use the
    /// credentials that created it).
    pub(crate) fn owned_allocation(
        &self,
        from: &FiveTuple,
        username: &str,
    ) -> Result<AllocationId, u16> {
        let id = self.allocations.id_for(from).ok_or(437u16)?;
        let a = self.allocations.get(id).ok_or(437u16)?;
        if a.state != State::Active {
            return Err(437);
        }
        if &*a.username != username {
            return Err(441);
        }
        Ok(id)
    }

    pub(crate) fn handle_refresh(
        &mut self,
        now: Instant,
        from: FiveTuple,
        msg: &Message,
        username: &str,
        key: &SessionKey,
    ) -> Vec<u8> {
        let shared = self.shared.clone();
        let r = Responder::to(msg, Some(key), shared.config.software.as_deref());
        let id = match self.owned_allocation(&from, username) {
            Ok(id) => id,
            Err(code) => return r.plain_error(code),
        };
        // RFC 8656 §8.2: REQUESTED-ADDRESS-FAMILY names the family to refresh (or delete) of a
        // dual allocation; a family the allocation does not hold is 443.
        let family = match msg.requested_address_family().transpose() {
            Ok(f) => f,
            Err(_) => return r.plain_error(400),
        };
        if let Some(f) = family {
            if !self.allocations.get(id).is_some_and(|a| a.has_family(f)) {
                return r.plain_error(443);
            }
        }
        let cfg = &shared.config;
        let lifetime = match msg.lifetime().transpose() {
            Ok(Some(0)) => Duration::ZERO,
            // RFC 8656 §8.2: as for Allocate, the smaller of the request and the maximum, but
            // never below the default.
            Ok(Some(secs)) => Duration::from_secs(secs as u64)
                .min(cfg.max_lifetime)
                .max(cfg.default_lifetime),
            Ok(None) => cfg.default_lifetime,
            Err(_) => return r.plain_error(400),
        };
        match (lifetime.is_zero(), family) {
            (true, None) => self.free_allocation(now, id, EndReason::Deleted),
            // The last family held ends the allocation with it.
            (true, Some(f)) => self.end_family(now, id, f, EndReason::Deleted),
            (false, _) => {
                if let Some(a) = self.allocations.get_mut(id) {
                    match family {
                        Some(f) => {
                            a.set_family_expiry(f, Some(now + lifetime));
                        }
                        None => a.set_expiry(now + lifetime),
                    }
                    // The allocation's one expiry deadline moves; none is added.
                    self.schedule_expiry(id);
                }
            }
        }
        r.success(|b| b.add_u32(AttrType::LIFETIME, lifetime.as_secs() as u32))
    }
}
