//! The relay path: ChannelData and Send indications from the client, and peer datagrams
//! framed for the client (RFC 8656 §10–§12).
//!
//! Nothing here allocates, logs or takes a lock: it is a hash lookup of the 5-tuple, a
//! linear scan of a few permissions or channels, and (peer → client) a header written in
//! place in front of the payload the shell received at an offset. No peer filter runs here
//! either: a permission carries the filter's verdict from when it was installed (or the last
//! reload), and an own-host one is held to the relay ports, both directions.

use crate::core::allocation::State;
use crate::core::counters::DropReason;
use crate::core::five_tuple::FiveTuple;
use crate::core::server::{PEER_HEADROOM, PEER_TAILROOM};
use crate::core::{AllocationId, Forward, Server, ToClient};
use crate::stun::address::{encode_xor, encoded_len};
use crate::stun::channel_data::write_header;
use crate::stun::{
    AttrType, ChannelData, Class, Message, MessageType, Method, TransactionId,
    CHANNEL_DATA_HEADER_LEN, HEADER_LEN, MAGIC_COOKIE,
};
use rand::RngCore;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

const DATA_INDICATION: MessageType = MessageType::new(Method::DATA, Class::Indication);

impl Server {
    /// ChannelData from the client: forward the data to the channel's peer.
    pub(crate) fn relay_channel_data(
        &mut self,
        now: Instant,
        from: FiveTuple,
        data: &[u8],
    ) -> Option<Forward> {
        let Ok(cd) = ChannelData::parse(data) else {
            self.counters.dropped[DropReason::Malformed] += 1;
            return None;
        };
        let Some(a) = self.allocations.by_five_tuple_mut(&from) else {
            self.counters.dropped[DropReason::NoAllocation] += 1;
            return None;
        };
        if a.expires <= now {
            self.counters.dropped[DropReason::NoAllocation] += 1;
            return None;
        }
        let Some(binding) = a.channels.by_number(cd.channel, now) else {
            self.counters.dropped[DropReason::NoChannel] += 1;
            return None;
        };
        let peer = binding.peer;
        if !a.permissions.allows_peer(peer, now, self.filter.own_host())
            || !a.relays_family_of(peer.ip(), now)
        {
            self.counters.dropped[DropReason::NoPermission] += 1;
            return None;
        }
        if !a.within_bandwidth(now, cd.data.len() as u64) {
            self.counters.dropped[DropReason::Bandwidth] += 1;
            return None;
        }
        a.stats.count_to_peer(cd.data.len());
        self.counters.relayed[from.transport].count_to_peer(cd.data.len());
        let start = CHANNEL_DATA_HEADER_LEN;
        Some(Forward {
            id: a.id,
            peer,
            payload: start..start + cd.data.len(),
        })
    }

    /// A Send indication: forward DATA to XOR-PEER-ADDRESS if a permission exists. Errors are
    /// silent — indications have no responses (RFC 8656 §10.2).
    pub(crate) fn relay_send_indication(
        &mut self,
        now: Instant,
        from: FiveTuple,
        msg: &Message,
    ) -> Option<Forward> {
        // Unknown comprehension-required attributes: discard (RFC 8489 §6.3.2).
        let mut unknown = [0u16; 1];
        if msg.unknown_required(crate::stun::attribute::is_understood, &mut unknown) > 0 {
            self.counters.dropped[DropReason::Malformed] += 1;
            return None;
        }
        let (Some(Ok(peer)), Some(range)) = (msg.xor_peer_address(), msg.data_range()) else {
            self.counters.dropped[DropReason::Malformed] += 1;
            return None;
        };
        let Some(a) = self.allocations.by_five_tuple_mut(&from) else {
            self.counters.dropped[DropReason::NoAllocation] += 1;
            return None;
        };
        // A TCP allocation (RFC 6062) has no UDP relayed address to send a datagram from:
        // its data goes through spliced connections only, so a Send indication on it is
        // discarded like one with no allocation (an indication has no error response).
        if a.state != State::Active || a.expires <= now || a.is_tcp() {
            self.counters.dropped[DropReason::NoAllocation] += 1;
            return None;
        }
        // A permission is only ever installed for a peer the filter allowed, so a denied
        // peer is dropped here too; through an own-host permission, so is a port of the host
        // that is not a relay port.
        if !a.permissions.allows_peer(peer, now, self.filter.own_host())
            || !a.relays_family_of(peer.ip(), now)
        {
            self.counters.dropped[DropReason::NoPermission] += 1;
            return None;
        }
        if !a.within_bandwidth(now, range.len() as u64) {
            self.counters.dropped[DropReason::Bandwidth] += 1;
            return None;
        }
        a.stats.count_to_peer(range.len());
        self.counters.relayed[from.transport].count_to_peer(range.len());
        Some(Forward {
            id: a.id,
            peer,
            payload: range,
        })
    }

    /// Frames a peer datagram for the client: ChannelData when a channel is bound to the
    /// peer, otherwise a Data indication; dropped without a permission.
    pub(crate) fn frame_for_client(
        &mut self,
        now: Instant,
        id: AllocationId,
        peer: SocketAddr,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Option<ToClient> {
        let len = payload.len();
        if payload.start > payload.end
            || payload.start < PEER_HEADROOM
            || payload.end + PEER_TAILROOM > buf.len()
            || len > u16::MAX as usize - 64
        {
            self.counters.dropped[DropReason::Malformed] += 1;
            return None;
        }
        let Some(a) = self.allocations.get_mut(id) else {
            self.counters.dropped[DropReason::NoAllocation] += 1;
            return None;
        };
        if a.state != State::Active || a.expires <= now {
            self.counters.dropped[DropReason::NoAllocation] += 1;
            return None;
        }
        // From the host's own services (through an own-host permission, any source port but
        // a relay port) nothing reaches the client either.
        if !a.permissions.allows_peer(peer, now, self.filter.own_host())
            || !a.relays_family_of(peer.ip(), now)
        {
            self.counters.dropped[DropReason::NoPermission] += 1;
            return None;
        }
        if !a.within_bandwidth(now, len as u64) {
            self.counters.dropped[DropReason::Bandwidth] += 1;
            return None;
        }
        a.stats.count_to_client(len);
        let to = a.five_tuple;
        self.counters.relayed[to.transport].count_to_client(len);
        let padded_end = payload.start + ((len + 3) & !3);
        if let Some(binding) = a.channels.by_peer(peer, now) {
            let start = payload.start - CHANNEL_DATA_HEADER_LEN;
            write_header(&mut buf[start..], binding.number, len as u16);
            // Padding is mandatory on streams and optional on UDP, where we leave it off.
            let end = if to.transport.is_stream() {
                buf[payload.end..padded_end].fill(0);
                padded_end
            } else {
                payload.end
            };
            return Some(ToClient {
                to,
                range: start..end,
            });
        }
        // Data indication: header, XOR-PEER-ADDRESS, DATA header, then the payload in place.
        // Its transaction id is fresh from the CSPRNG: an off-path attacker who saw one must
        // not be able to forge the next (RFC 8489 §6: "uniformly and randomly chosen").
        let mut txid = TransactionId::default();
        self.rng.fill_bytes(&mut txid.0);
        let addr_len = encoded_len(&peer);
        let start = payload.start - (HEADER_LEN + 4 + addr_len + 4);
        let body = 4 + addr_len + 4 + (padded_end - payload.start);
        let m = &mut buf[start..];
        m[0..2].copy_from_slice(&DATA_INDICATION.to_u16().to_be_bytes());
        m[2..4].copy_from_slice(&(body as u16).to_be_bytes());
        m[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        m[8..20].copy_from_slice(&txid.0);
        m[20..22].copy_from_slice(&AttrType::XOR_PEER_ADDRESS.0.to_be_bytes());
        m[22..24].copy_from_slice(&(addr_len as u16).to_be_bytes());
        encode_xor(&peer, &txid, &mut m[24..24 + addr_len]);
        let d = 24 + addr_len;
        m[d..d + 2].copy_from_slice(&AttrType::DATA.0.to_be_bytes());
        m[d + 2..d + 4].copy_from_slice(&(len as u16).to_be_bytes());
        buf[payload.end..padded_end].fill(0);
        Some(ToClient {
            to,
            range: start..padded_end,
        })
    }
}
