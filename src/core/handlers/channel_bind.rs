//! ChannelBind (RFC 8656 §11): bind a channel number to a peer transport address, which also
//! installs or refreshes a permission for the peer's IP.
//!
//! Not on a TCP allocation (RFC 6062): a channel frames datagrams, and a TCP allocation relays
//! no datagrams — its data goes through connections opened with Connect or accepted from
//! peers. The request is a 400, as coturn answers it too; the permission it would have
//! installed is not, so a client that wants one asks with CreatePermission.
//!
//! The peer filter sees the whole transport address here: a relay IP of this host may be bound
//! on a relay port only (another allocation's relayed address), 403 on any other port.

use crate::core::counters::DropReason;
use crate::core::peer_filter::PeerVerdict;
use crate::core::request::{Answer, Handled, Request};
use crate::core::Server;
use crate::stun::channel_data::is_valid_channel;
use crate::stun::ErrorCode;

impl Server {
    pub(crate) fn handle_channel_bind(&mut self, req: &Request) -> Handled {
        let (now, msg) = (req.now, req.msg);
        let id = req.owned?;
        let shared = self.shared.clone();
        let a = self
            .allocations
            .get_mut(id)
            .ok_or(ErrorCode::AllocationMismatch)?;
        if a.is_tcp() {
            return Err(ErrorCode::BadRequest);
        }
        let (Some(Ok(number)), Some(Ok(peer))) = (msg.channel_number(), msg.xor_peer_address())
        else {
            return Err(ErrorCode::BadRequest);
        };
        if !is_valid_channel(number) {
            return Err(ErrorCode::BadRequest);
        }
        req.relays_peer_family(&peer)?;
        let filter = shared.peer_filter.load();
        if !filter.allows(peer) {
            self.counters.peers_denied += 1;
            return Err(ErrorCode::Forbidden);
        }
        let own_host = filter.verdict(peer.ip()) == PeerVerdict::RelayPortsOnly;
        // `max_channels` and `max_permissions` bound the allocation's lists: 508 when this
        // binding needs a new entry that would not fit (RFC 8656 §11.2, a capacity limit).
        let (max_channels, max_permissions, channel_lifetime) = (
            shared.config.channel_limit(),
            shared.config.permission_limit(),
            shared.config.channel_lifetime,
        );
        if !a.channels.holds(number, peer, now) && a.channels.held(now) >= max_channels {
            self.counters.dropped[DropReason::ChannelQuota] += 1;
            return Err(ErrorCode::InsufficientCapacity);
        }
        if !a.permissions.contains(peer.ip()) && a.permissions.len() >= max_permissions {
            self.counters.dropped[DropReason::PermissionQuota] += 1;
            return Err(ErrorCode::InsufficientCapacity);
        }
        let (channels, permissions) = (a.channels.len(), a.permissions.len());
        let new_channel = a.channels.by_number(number, now).is_none();
        let new_permission = !a.permissions.allows(peer.ip(), now);
        let Ok(channel_expires) = a.channels.bind_for(number, peer, now, channel_lifetime) else {
            return Err(ErrorCode::BadRequest);
        };
        let permission_expires = a.permissions.install(peer.ip(), now, own_host);
        let c = &mut self.counters;
        c.channels = (c.channels + a.channels.len() as u64).saturating_sub(channels as u64);
        c.permissions =
            (c.permissions + a.permissions.len() as u64).saturating_sub(permissions as u64);
        c.channels_created += u64::from(new_channel);
        c.permissions_created += u64::from(new_permission);
        self.schedule_sweep(id, permission_expires.min(channel_expires));
        Ok(Answer::Now(req.reply.success(|_| Ok(()))))
    }
}
