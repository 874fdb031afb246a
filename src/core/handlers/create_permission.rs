//! CreatePermission (RFC 8656 §9): let one or more peer IP addresses exchange data with the
//! allocation for 5 minutes. All addresses are checked before any is installed, so a request
//! naming one denied peer changes nothing.
//!
//! A relay IP of this host is not denied: other allocations' relayed addresses live there. Its
//! permission is marked own-host, and data through it is held to the relay ports (see
//! [`peer_filter`](crate::core::peer_filter)).

use crate::core::counters::DropReason;
use crate::core::peer_filter::PeerVerdict;
use crate::core::request::{Answer, Handled, Request};
use crate::core::Server;
use crate::stun::message::MAX_ATTRIBUTES;
use crate::stun::ErrorCode;
use std::net::{IpAddr, Ipv4Addr};

impl Server {
    pub(crate) fn handle_create_permission(&mut self, req: &Request) -> Handled {
        let (now, msg) = (req.now, req.msg);
        let id = req.owned?;
        let shared = self.shared.clone();
        let mut peers = [IpAddr::V4(Ipv4Addr::UNSPECIFIED); MAX_ATTRIBUTES];
        let mut own_host = [false; MAX_ATTRIBUTES];
        let filter = shared.peer_filter.load();
        let mut n = 0;
        for peer in msg.xor_peer_addresses() {
            let peer = peer.map_err(|_| ErrorCode::BadRequest)?;
            // A dual allocation takes peers of both families (RFC 8656 §10.2).
            req.relays_peer_family(&peer)?;
            let verdict = filter.verdict(peer.ip());
            if verdict == PeerVerdict::Denied {
                self.counters.peers_denied += 1;
                return Err(ErrorCode::Forbidden);
            }
            // At most MAX_ATTRIBUTES attributes parse, so `n` stays in bounds.
            peers[n] = peer.ip();
            own_host[n] = verdict == PeerVerdict::RelayPortsOnly;
            n += 1;
        }
        if n == 0 {
            return Err(ErrorCode::BadRequest);
        }
        // `max_permissions` bounds each allocation's list (and so the per-datagram scan of
        // it): 508 when the new peers would not fit (RFC 8656 §9.2, a capacity limit).
        let max = shared.config.permission_limit();
        if let Some(a) = self.allocations.get(id) {
            let peers = &peers[..n];
            let new = peers
                .iter()
                .enumerate()
                .filter(|(i, ip)| !a.permissions.contains(**ip) && !peers[..*i].contains(ip))
                .count();
            if a.permissions.len() + new > max {
                self.counters.dropped[DropReason::PermissionQuota] += 1;
                return Err(ErrorCode::InsufficientCapacity);
            }
        }
        if let Some(a) = self.allocations.get_mut(id) {
            let mut expires = now;
            let before = a.permissions.len() as u64;
            for (ip, own_host) in peers[..n].iter().zip(own_host) {
                self.counters.permissions_created += u64::from(!a.permissions.allows(*ip, now));
                expires = a.permissions.install(*ip, now, own_host);
            }
            let c = &mut self.counters;
            c.permissions = (c.permissions + a.permissions.len() as u64).saturating_sub(before);
            self.schedule_sweep(id, expires);
        }
        Ok(Answer::Now(req.reply.success(|_| Ok(()))))
    }
}
