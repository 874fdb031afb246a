//! Connect (RFC 6062 §5.2): the client asks the server to open a TCP connection from the
//! relayed transport address to a peer.
//!
//! Like Allocate, handled in two steps because connecting is I/O: the request is checked
//! and a CONNECTION-ID reserved here, the shell is asked to connect
//! ([`TcpRelayOutput::Connect`]), and the response — success with CONNECTION-ID, or 447 —
//! is sent when the shell reports back, or when [`CONNECT_TIMEOUT`] passes first.

use crate::core::reply::Responder;
use crate::core::request::{Answer, Handled, Request};
use crate::core::tcp_relay::{
    ConnState, Connecting, Connection, ConnectionId, TcpRelayOutput, BIND_TIMEOUT, CONNECT_TIMEOUT,
    MAX_PEER_CONNECTIONS,
};
use crate::core::timer::TimerKind;
use crate::core::{Output, Server};
use crate::stun::{AddressFamily, AttrType, ErrorCode, Method};
use std::time::Instant;

impl Server {
    pub(crate) fn handle_connect(&mut self, req: &Request) -> Handled {
        let (now, msg) = (req.now, req.msg);
        let id = req.owned?;
        let shared = self.shared.clone();
        let a = self
            .allocations
            .get(id)
            .ok_or(ErrorCode::AllocationMismatch)?;
        // Connect only makes sense on a TCP allocation.
        let Some(tcp) = a.tcp() else {
            return Err(ErrorCode::BadRequest);
        };
        let peer = match msg.xor_peer_address() {
            Some(Ok(p)) => p,
            _ => return Err(ErrorCode::BadRequest),
        };
        // The connection is made from the (first) relayed address, so the peer must be of its
        // family.
        if AddressFamily::of(&peer) != AddressFamily::of(&a.relay) {
            return Err(ErrorCode::PeerAddressFamilyMismatch);
        }
        // "Forbidden by local policy" (403): the peer filter, and — as for data on a UDP
        // allocation — a peer the client has installed no permission for. The filter sees the
        // port: a relay IP of this host is reachable on its relay ports only (another TCP
        // allocation's relayed address), never on a service of the host.
        if !shared.peer_filter.load().allows(peer) {
            self.counters.peers_denied += 1;
            return Err(ErrorCode::Forbidden);
        }
        if !a.permissions.allows_peer(peer, now, self.filter.own_host()) {
            return Err(ErrorCode::Forbidden);
        }
        let (relay, username_owned, control) = (a.relay, a.username.clone(), a.five_tuple.client);
        let (share, ids) = (tcp.splice.clone(), tcp.connections.clone());
        // 446 while a connection to this peer is being made, waits for its bind, or is
        // active; a retransmission of the Connect being made gets its answer later.
        for cid in ids {
            match shared.tcp_connections.get(cid) {
                Some(c) if c.peer == peer => {
                    let retransmit = self
                        .tcp_relay
                        .connecting
                        .get(&cid)
                        .is_some_and(|c| c.txid == msg.transaction_id());
                    if retransmit {
                        return Ok(Answer::Later);
                    }
                    return Err(ErrorCode::ConnectionAlreadyExists);
                }
                Some(_) => {}
                // Ended on another worker (its data connection closed): prune.
                None => self.forget_connection(id, cid),
            }
        }
        let held = self
            .allocations
            .get(id)
            .and_then(|a| a.tcp())
            .map_or(0, |t| t.connections.len());
        if held >= MAX_PEER_CONNECTIONS {
            return Err(ErrorCode::InsufficientCapacity);
        }
        let conn = Connection {
            owner: self.tcp_relay.tag,
            alloc: id,
            username: username_owned,
            peer,
            control,
            state: ConnState::Connecting,
            share,
        };
        let cid = shared.tcp_connections.insert(|| self.random(), conn);
        self.tcp_relay.connecting.insert(
            cid,
            Connecting {
                alloc: id,
                txid: msg.transaction_id(),
                fingerprint: msg.has_fingerprint(),
            },
        );
        if let Some(tcp) = self.allocations.get_mut(id).and_then(|a| a.tcp_mut()) {
            tcp.connections.push(cid);
        }
        self.timers
            .push(now + CONNECT_TIMEOUT, TimerKind::TcpConnection(cid));
        self.outputs
            .push_back(Output::TcpRelay(TcpRelayOutput::Connect {
                id,
                connection_id: cid,
                bind: relay,
                peer,
            }));
        Ok(Answer::Later)
    }

    /// The shell's connection for `cid` is established. Returns whether to keep it: false
    /// when the attempt was given up (timeout, allocation gone) — then the shell closes it.
    /// The shell must have stored the stream under `cid` before calling this, since the
    /// success response (carrying `cid`) goes out with the next outputs.
    pub fn handle_peer_connected(&mut self, now: Instant, cid: ConnectionId) -> bool {
        let Some(c) = self.tcp_relay.connecting.remove(&cid) else {
            return false;
        };
        let expires = now + BIND_TIMEOUT;
        let state = ConnState::Pending { expires };
        if self.allocations.get(c.alloc).is_none() {
            return false;
        }
        if !self
            .shared
            .tcp_connections
            .set_state(cid, self.tcp_relay.tag, state)
        {
            return false;
        }
        self.timers.push(expires, TimerKind::TcpConnection(cid));
        self.answer_connect(now, &c, |r| {
            r.success(|b| b.add_u32(AttrType::CONNECTION_ID, cid))
        });
        true
    }

    /// Answers the deferred Connect request `c` with what `answer` builds, signed with its
    /// allocation's key and with FINGERPRINT when the request had one; nothing when the
    /// allocation is gone.
    fn answer_connect(
        &mut self,
        now: Instant,
        c: &Connecting,
        answer: impl FnOnce(&Responder) -> Vec<u8>,
    ) {
        let Some(a) = self.allocations.get(c.alloc) else {
            return;
        };
        let (key, five_tuple) = (a.key, a.five_tuple);
        let shared = self.shared.clone();
        let r = Responder {
            method: Method::CONNECT,
            txid: c.txid,
            key: Some(&key),
            software: shared.config.software.as_deref(),
            fingerprint: c.fingerprint,
        };
        let resp = answer(&r);
        self.respond_and_remember(now, five_tuple, c.txid, resp);
    }

    /// The shell could not connect for `cid`: 447 (RFC 6062 §5.2).
    pub fn handle_peer_connect_failed(&mut self, now: Instant, cid: ConnectionId) {
        if self.tcp_relay.connecting.contains_key(&cid) {
            self.fail_connect(now, cid);
        }
    }

    /// Answers the Connect of `cid` with 447 and forgets the connection.
    pub(crate) fn fail_connect(&mut self, now: Instant, cid: ConnectionId) {
        self.refuse_connect(now, cid, ErrorCode::ConnectionTimeoutOrFailure);
    }

    /// Answers the Connect of `cid` with error `code` (447, or 403 when a reload denies its
    /// peer while it connects), aborts the attempt and forgets the connection.
    pub(crate) fn refuse_connect(&mut self, now: Instant, cid: ConnectionId, code: ErrorCode) {
        let Some(c) = self.tcp_relay.connecting.remove(&cid) else {
            return;
        };
        let owner = self.tcp_relay.tag;
        self.shared
            .tcp_connections
            .remove_if(cid, |e| e.owner == owner);
        self.forget_connection(c.alloc, cid);
        self.outputs
            .push_back(Output::TcpRelay(TcpRelayOutput::CloseConnection {
                id: c.alloc,
                connection_id: cid,
            }));
        self.answer_connect(now, &c, |r| r.plain_error(code));
    }
}
