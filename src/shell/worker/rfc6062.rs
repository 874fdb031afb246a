//! The loop's handlers for RFC 6062 TCP allocations: carrying out the core's
//! `TcpRelayOutput`s, accepting peers on an allocation's listener, finishing connection
//! attempts, and running splices (`splice.rs`) with their pacing and byte counts.

use super::Worker;
use crate::core::tcp_relay::{ConnectionId, TcpRelayOutput};
use crate::core::{AllocationId, RelayOpenError};
use crate::shell::splice::Splice;
use crate::shell::tcp::{Closed, Mode, Reader};
use crate::shell::token::Token;
use crate::shell::write_queue::WriteQueue;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

/// Peers one relay listener accepts per turn.
const ACCEPTS_PER_TURN: usize = 16;

impl Worker {
    /// Carries out one [`TcpRelayOutput`].
    pub(super) fn tcp_relay_output(&mut self, out: TcpRelayOutput) {
        match out {
            TcpRelayOutput::Listen { id, bind } => {
                let result = self.listen(id, bind);
                self.core.handle_relay_opened(Instant::now(), id, result);
            }
            TcpRelayOutput::Connect {
                id,
                connection_id,
                bind,
                peer,
            } => {
                if self
                    .tcp_relays
                    .connect(&self.poller, id, connection_id, bind, peer)
                    .is_err()
                {
                    self.core
                        .handle_peer_connect_failed(Instant::now(), connection_id);
                }
            }
            TcpRelayOutput::CloseConnection { id, connection_id } => {
                self.tcp_relays.close_connection(id, connection_id)
            }
            TcpRelayOutput::Splice {
                data,
                connection_id,
            } => {
                if let Some(c) = self.conns.by_tuple(&data) {
                    c.splice_cid = Some(connection_id);
                }
            }
            TcpRelayOutput::Close { id } => self.tcp_relays.close(id),
        }
    }

    fn listen(&mut self, id: AllocationId, bind: SocketAddr) -> Result<(), RelayOpenError> {
        self.tcp_relays.listen(&self.poller, id, bind).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                RelayOpenError::AddrInUse
            } else {
                tracing::warn!(%bind, error = %e, "cannot open tcp relay listener");
                RelayOpenError::Other
            }
        })
    }

    /// Accepts peers on a TCP allocation's listener; the core says which to keep (parked for
    /// a ConnectionBind), the others are closed by being dropped.
    pub(super) fn accept_peers(&mut self, t: Token) {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some((id, listener)) = self.tcp_relays.listener(t) else {
                return;
            };
            let (stream, peer) = match listener.accept() {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.pause_accepting(t),
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            if let Some(cid) = self.core.handle_peer_inbound(Instant::now(), id, peer) {
                self.tcp_relays.park(id, cid, stream);
            }
            self.drain_outputs();
        }
    }

    /// A connection attempt for a Connect request finished.
    pub(super) fn on_connect_done(&mut self, cid: ConnectionId) {
        let Some((id, result)) = self.tcp_relays.connected(&self.poller, cid) else {
            return;
        };
        let now = Instant::now();
        match result {
            // Parked before the core answers, since its answer names the id.
            Ok(stream) => {
                if !self.tcp_relays.park(id, cid, stream) {
                    self.core.handle_peer_connect_failed(now, cid);
                } else if !self.core.handle_peer_connected(now, cid) {
                    self.tcp_relays.close_connection(id, cid);
                }
            }
            Err(_) => self.core.handle_peer_connect_failed(now, cid),
        }
        self.drain_outputs();
    }

    /// Turns the data connection `t` (its ConnectionBind was accepted) into a splice with the
    /// parked peer connection: first what is still queued for the client (the ConnectionBind
    /// response), and what the client sent after its ConnectionBind, then raw bytes.
    pub(super) fn start_splice(&mut self, t: Token) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        let (ft, cid) = (c.ft, c.splice_cid);
        let Some(cid) = cid else {
            return;
        };
        // A data connection is no longer a STUN client: no 5-tuple entry, no allocation.
        self.conns.unindex(t);
        self.core.handle_connection_closed(Instant::now(), ft);
        self.drain_outputs();
        let parked = self.tcp_relays.parked().take(cid);
        // No share: the connection is no longer bound (its allocation ended meanwhile).
        let share = self.core.splice_share(cid);
        let (Some(parked), Some(share), Some(c)) = (parked, share, self.conns.get_mut(t)) else {
            return self.end_splice_of(t, cid);
        };
        let to_client = c.take_unwritten();
        let to_peer = c.reader.buf[..c.reader.filled].to_vec();
        // The queue and read buffer are done with: their memory and budget go back.
        c.queue = WriteQueue::new(self.queue_budget.clone());
        c.reader = Reader::default();
        c.mode = Mode::Splice(Box::new(Splice::new(
            cid,
            parked.stream,
            share,
            parked.closed,
            to_client,
            to_peer,
        )));
        self.pump_splice(t);
    }

    /// Moves what a splice's sockets allow now, and counts it.
    pub(super) fn pump_splice(&mut self, t: Token) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        let transport = c.ft.transport;
        let Mode::Splice(s) = &mut c.mode else {
            return;
        };
        if s.allocation_ended() {
            return self.end_splice(t);
        }
        let moved = s.pump(&mut c.stream, Instant::now());
        let finished = s.finished();
        let buffered = c.stream.buffered();
        let Ok(moved) = moved else {
            return self.end_splice(t);
        };
        for _ in 0..moved.throttled {
            self.core.count_splice_throttled();
        }
        if moved.to_peer > 0 || moved.to_client > 0 {
            self.core
                .count_stream_relayed(transport, moved.to_peer as u64, moved.to_client as u64);
            self.drain_outputs();
        }
        if finished {
            return self.end_splice(t);
        }
        if buffered {
            self.again.push(t);
        }
        self.sync_conn(t);
    }

    /// Ends the splice of connection `t`: both sockets close.
    pub(super) fn end_splice(&mut self, t: Token) {
        let cid = match self.conns.get_mut(t).map(|c| &c.mode) {
            Some(Mode::Splice(s)) => s.cid,
            _ => return,
        };
        self.end_splice_of(t, cid);
    }

    fn end_splice_of(&mut self, t: Token, cid: ConnectionId) {
        if let Some(c) = self.conns.remove(t) {
            tracing::debug!(client = %c.ft, reason = %Closed::Spliced, "connection closed");
        }
        self.core.handle_data_connection_closed(cid);
        self.drain_outputs();
    }

    /// Ends the splices whose allocation ended on another worker (once a second).
    pub(super) fn end_orphaned_splices(&mut self) {
        let mut ended = std::mem::take(&mut self.scratch);
        ended.clear();
        for t in self.conns.tokens() {
            ended.push(t);
        }
        for t in ended.drain(..) {
            let orphaned = self.conns.get_mut(t).is_some_and(|c| match &c.mode {
                Mode::Splice(s) => s.allocation_ended(),
                Mode::Frames => false,
            });
            if orphaned {
                self.end_splice(t);
            }
        }
        self.scratch = ended;
    }
}
