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

use crate::core::auth::SessionKey;
use crate::core::five_tuple::FiveTuple;
use crate::core::peer_filter::PeerVerdict;
use crate::core::reply::Responder;
use crate::core::Server;
use crate::stun::channel_data::is_valid_channel;
use crate::stun::{AddressFamily, Message};
use std::time::Instant;

impl Server {
    pub(crate) fn handle_channel_bind(
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
        if self.tcp_relay.allocs.contains_key(&id) {
            return r.plain_error(400);
        }
        let (Some(Ok(number)), Some(Ok(peer))) = (msg.channel_number(), msg.xor_peer_address())
        else {
            return r.plain_error(400);
        };
        if !is_valid_channel(number) {
            return r.plain_error(400);
        }
        let Some(a) = self.allocations.get_mut(id) else {
            return r.plain_error(437);
        };
        if !a.has_family(AddressFamily::of(&peer)) {
            return r.plain_error(443);
        }
        let filter = shared.peer_filter.load();
        if !filter.allows(peer) {
            self.counters.peers_denied += 1;
            return r.plain_error(403);
        }
        let own_host = filter.verdict(peer.ip()) == PeerVerdict::RelayPortsOnly;
        // `max_channels` and `max_permissions` bound the allocation's lists: 508 when this
        // binding needs a new entry that would not fit (RFC 8656 §11.2, a capacity limit).
        let (max_channels, max_permissions) = (
            shared.config.channel_limit(),
            shared.config.permission_limit(),
        );
        if !a.channels.holds(number, peer, now) && a.channels.held(now) >= max_channels {
            self.counters.channel_quota += 1;
            return r.plain_error(508);
        }
        if !a.permissions.contains(peer.ip()) && a.permissions.len() >= max_permissions {
            self.counters.permission_quota += 1;
            return r.plain_error(508);
        }
        let (channels, permissions) = (a.channels.len(), a.permissions.len());
        let new_channel = a.channels.by_number(number, now).is_none();
        let new_permission = !a.permissions.allows(peer.ip(), now);
        let Ok(channel_expires) = a.channels.bind(number, peer, now) else {
            return r.plain_error(400);
        };
        let permission_expires = a.permissions.install(peer.ip(), now, own_host);
        let c = &mut self.counters;
        c.channels = (c.channels + a.channels.len() as u64).saturating_sub(channels as u64);
        c.permissions =
            (c.permissions + a.permissions.len() as u64).saturating_sub(permissions as u64);
        c.channels_created += u64::from(new_channel);
        c.permissions_created += u64::from(new_permission);
        self.schedule_sweep(id, permission_expires.min(channel_expires));
        r.success(|_| Ok(()))
    }
}
