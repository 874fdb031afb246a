//! Refresh (RFC 8656 §8): extend an allocation's life, or end it with LIFETIME 0.

use crate::core::request::{Answer, Handled, Request};
use crate::core::{EndReason, Server};
use crate::stun::{AttrType, ErrorCode};
use std::time::Duration;

impl Server {
    pub(crate) fn handle_refresh(&mut self, req: &Request) -> Handled {
        let (now, msg) = (req.now, req.msg);
        let id = req.owned?;
        // RFC 8656 §8.2: REQUESTED-ADDRESS-FAMILY names the family to refresh (or delete) of a
        // dual allocation; a family the allocation does not hold is 443.
        let family = msg
            .requested_address_family()
            .transpose()
            .map_err(|_| ErrorCode::BadRequest)?;
        if let Some(f) = family {
            req.relays_family(f)?;
        }
        let cfg = &self.shared.config;
        let lifetime = match msg.lifetime().transpose() {
            Ok(Some(0)) => Duration::ZERO,
            // RFC 8656 §8.2: as for Allocate, the smaller of the request and the maximum, but
            // never below the default.
            Ok(Some(secs)) => Duration::from_secs(secs as u64)
                .min(cfg.max_lifetime)
                .max(cfg.default_lifetime),
            Ok(None) => cfg.default_lifetime,
            Err(_) => return Err(ErrorCode::BadRequest),
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
        Ok(Answer::Now(req.reply.success(|b| {
            b.add_u32(AttrType::LIFETIME, lifetime.as_secs() as u32)
        })))
    }
}
