//! ConnectionBind (RFC 6062 §5.4): on a new TCP or TLS connection, the client binds it to a
//! peer connection by CONNECTION-ID; from then on that connection carries raw bytes, spliced
//! with the peer's, and is no longer read as STUN.
//!
//! The request may reach any worker (see [`crate::core::tcp_relay`]): it is checked against
//! the shared CONNECTION-ID map, authenticated like any request, and must come from the user
//! who owns the allocation (441 otherwise, as for every request on an allocation).

use crate::core::five_tuple::FiveTuple;
use crate::core::nonce::NonceStatus;
use crate::core::request::{Answer, Handled, Request};
use crate::core::tcp_relay::{ClaimError, ConnState, ConnectionId, SpliceShare, TcpRelayOutput};
use crate::core::{Output, Server, Transport};
use crate::stun::{AttrType, ErrorCode, Message};
use std::sync::Arc;
use std::time::Instant;

impl Server {
    pub(crate) fn handle_connection_bind(&mut self, req: &Request) -> Handled {
        let (now, from, msg) = (req.now, req.from, req.msg);
        // A data connection is a fresh stream connection that holds no allocation.
        if !from.transport.is_stream() || req.allocation.is_some() {
            return Err(ErrorCode::BadRequest);
        }
        let cid = match msg.get(AttrType::CONNECTION_ID) {
            Some(v) if v.len() == 4 => u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
            _ => return Err(ErrorCode::BadRequest),
        };
        match self.shared.tcp_connections.claim(cid, req.username, now) {
            Ok(()) => {}
            Err(ClaimError::Unknown) => return Err(ErrorCode::BadRequest),
            Err(ClaimError::WrongUser) => return Err(ErrorCode::WrongCredentials),
        }
        let resp = req.reply.success(|_| Ok(()));
        // The response is queued before the splice starts, so it is the last STUN the
        // client reads on this connection.
        self.respond_and_remember(now, from, msg.transaction_id(), resp);
        self.outputs
            .push_back(Output::TcpRelay(TcpRelayOutput::Splice {
                data: from,
                connection_id: cid,
            }));
        Ok(Answer::Later)
    }

    /// Whose nonce a ConnectionBind may carry. Nonces are bound to the client address they
    /// were issued to, and a data connection is new, so its address is new: clients (coturn's
    /// among them) sign the ConnectionBind with the nonce of their control connection, and
    /// would otherwise earn a 438 on every data connection — some never retry. So when the
    /// nonce was issued to the control connection of the allocation that owns the
    /// CONNECTION-ID named, authentication checks it against that address. MESSAGE-INTEGRITY
    /// is still checked with the user's key, and the claim still requires that user, so this
    /// admits no one the control connection's nonce did not already admit.
    pub(crate) fn connection_bind_nonce_owner(
        &self,
        now: Instant,
        from: FiveTuple,
        msg: &Message,
    ) -> FiveTuple {
        let cid = match msg.get(AttrType::CONNECTION_ID) {
            Some(v) if v.len() == 4 => u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
            _ => return from,
        };
        let (Some(conn), Some(Ok(nonce))) = (self.shared.tcp_connections.get(cid), msg.nonce())
        else {
            return from;
        };
        let unix_now = self.unix_now(now);
        let lifetime = self.shared.config.nonce_lifetime.as_secs();
        let key = &self.shared.nonce_key;
        let valid = |client| key.check(nonce, unix_now, client, lifetime) == NonceStatus::Valid;
        if !valid(from.client) && valid(conn.control) {
            FiveTuple {
                client: conn.control,
                ..from
            }
        } else {
            from
        }
    }

    /// The splice of `cid` ended (either side closed, or its allocation ended): the
    /// CONNECTION-ID is forgotten, so a new Connect to the same peer is allowed again.
    pub fn handle_data_connection_closed(&mut self, cid: ConnectionId) {
        self.shared
            .tcp_connections
            .remove_if(cid, |c| c.state == ConnState::Bound);
    }

    /// The caps and byte counts of bound connection `cid`'s allocation, for its splice:
    /// `None` when it is no longer bound (its allocation ended meanwhile), and then there is
    /// nothing to splice.
    pub fn splice_share(&self, cid: ConnectionId) -> Option<Arc<SpliceShare>> {
        self.shared.tcp_connections.share(cid)
    }

    /// A splice held bytes back for its allocation's or user's bandwidth cap.
    pub fn count_splice_throttled(&mut self) {
        self.counters.tcp_relay_throttled += 1;
    }

    /// Bytes spliced between a client data connection over `transport` and its peer, for the
    /// relayed-bytes counters (a stream has no datagrams to count).
    pub fn count_stream_relayed(&mut self, transport: Transport, to_peer: u64, to_client: u64) {
        let r = &mut self.counters.relayed[transport];
        r.to_peer_bytes += to_peer;
        r.to_client_bytes += to_client;
    }
}
