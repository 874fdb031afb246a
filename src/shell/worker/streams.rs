//! The loop's handlers for TCP and TLS clients: accepting within the connection limits,
//! reading and framing, writing queued frames, idle and handshake timeouts, closing.

use super::{forward, Worker};
use crate::core::{CounterKey, FiveTuple, Transport};
use crate::shell::poller::Interest;
use crate::shell::stream::Stream;
use crate::shell::tcp::{Closed, Conn, Mode, Reader, Slot, READS_PER_TURN};
use crate::shell::token::{Kind, Token};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tokio_rustls::rustls::ServerConnection;

/// Connections one listener accepts per turn.
const ACCEPTS_PER_TURN: usize = 32;
/// After an accept error (fds exhausted, …), wait before trying again rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl Worker {
    /// Accepts what waits on TCP or TLS listener `t`, within `max_connections` and
    /// `max_connections_per_source`; a refused connection is closed at once and counted.
    pub(super) fn accept(&mut self, t: Token) {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(l) = self.listeners.get(t.index as usize) else {
                return;
            };
            match l.socket.accept() {
                Ok((stream, client)) => self.on_accepted(t, stream, client),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "tcp accept failed");
                    self.pause_accepting(t);
                    return;
                }
            }
        }
    }

    /// Stops listening on `t` for [`ACCEPT_BACKOFF`] (level-triggered, an accept that keeps
    /// failing would otherwise spin).
    pub(super) fn pause_accepting(&mut self, t: Token) {
        let fd = match t.kind {
            Kind::Listener => self.listeners.get(t.index as usize).map(|l| &l.socket),
            _ => self.tcp_relays.listener(t).map(|(_, l)| l),
        };
        if let Some(fd) = fd {
            let _ = self.poller.modify(fd, t.pack(), Interest::NONE);
            self.timers.push(Instant::now() + ACCEPT_BACKOFF, t.pack());
        }
    }

    pub(super) fn resume_accepting(&mut self, t: Token) {
        let fd = match t.kind {
            Kind::Listener => self.listeners.get(t.index as usize).map(|l| &l.socket),
            _ => self.tcp_relays.listener(t).map(|(_, l)| l),
        };
        if let Some(fd) = fd {
            let _ = self.poller.modify(fd, t.pack(), Interest::READ);
        }
    }

    fn on_accepted(&mut self, listener: Token, stream: TcpStream, client: SocketAddr) {
        let slot = match Slot::take(&self.limits, client.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                // Closed before anything was read or allocated for it (and before it is
                // counted, so whoever sees the count finds it closed).
                drop(stream);
                self.metrics.connection_refused(why);
                tracing::debug!(%client, reason = why.label(), "connection refused at accept");
                return;
            }
        };
        let Ok(server) = stream.local_addr() else {
            return;
        };
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        // TURN messages are small and latency-bound: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let certs = self
            .listeners
            .get(listener.index as usize)
            .and_then(|l| l.certs.clone());
        let (stream, transport) = match certs {
            None => (Stream::Tcp(stream), Transport::Tcp),
            Some(certs) => match ServerConnection::new(certs.current()) {
                Ok(tls) => (Stream::tls(stream, tls), Transport::Tls),
                Err(e) => {
                    tracing::debug!(%client, error = %e, "tls session not started");
                    return;
                }
            },
        };
        let ft = FiveTuple {
            client,
            server,
            transport,
        };
        let now = Instant::now();
        let conn = Conn::new(
            ft,
            stream,
            self.limits.max_frame,
            self.queue_budget.clone(),
            slot,
            now,
        );
        let (token, old) = self.conns.insert(conn);
        if old.is_some() {
            // The old connection of this 5-tuple has closed but its end was not seen yet:
            // its allocation belonged to that connection, so it ends now.
            drop(old);
            self.core.handle_connection_closed(now, ft);
            self.drain_outputs();
        }
        let registered = self.conns.get_mut(token).map(|c| {
            self.poller.set(
                c.stream.socket(),
                token.pack(),
                Interest::READ,
                &mut c.interest,
            )
        });
        if !matches!(registered, Some(Ok(()))) {
            self.conns.remove(token);
            return;
        }
        self.sync_conn(token);
    }

    /// A connection's socket is ready (or it is served again without an event).
    pub(super) fn on_conn(&mut self, t: Token, read: bool, write: bool) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        if matches!(c.mode, Mode::Splice(_)) {
            return self.pump_splice(t);
        }
        if write && c.flush().is_err() {
            return self.close_conn(t, Closed::Error);
        }
        if read {
            if let Some(why) = self.read_conn(t) {
                return self.close_conn(t, why);
            }
        }
        self.sync_conn(t);
    }

    /// Reads what the client sent, up to [`READS_PER_TURN`] reads, and hands each frame to
    /// the core. Why the connection must close, if it must.
    fn read_conn(&mut self, t: Token) -> Option<Closed> {
        let c = self.conns.get_mut(t)?;
        let ft = c.ft;
        if c.stream.is_handshaking() {
            match c.stream.handshake() {
                Ok(()) => handshake_done(c),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return None,
                Err(e) => {
                    tracing::debug!(client = %ft, error = %e, "tls handshake failed");
                    return Some(Closed::HandshakeFailed);
                }
            }
        }
        let mut reader = std::mem::take(&mut c.reader);
        reader.ensure();
        let mut why = None;
        let mut reads = 0;
        loop {
            // The connection stays while its frames are handled (only a close removes it).
            let c = self.conns.get_mut(t)?;
            if reads == READS_PER_TURN {
                self.again.push(t);
                break;
            }
            reads += 1;
            match c.stream.read(&mut reader.buf[reader.filled..]) {
                Ok(0) => {
                    why = Some(Closed::ByClient);
                    break;
                }
                Ok(n) => {
                    reader.filled += n;
                    if let Err(e) = self.cut(&mut reader, ft) {
                        why = Some(e);
                        break;
                    }
                    if self
                        .conns
                        .get_mut(t)
                        .is_some_and(|c| c.splice_cid.is_some())
                    {
                        why = Some(Closed::Spliced);
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    why = Some(Closed::Error);
                    break;
                }
            }
        }
        if let Some(c) = self.conns.get_mut(t) {
            if why.is_none() && reads < READS_PER_TURN && c.stream.buffered() {
                self.again.push(t);
            }
            c.reader = reader;
        }
        why
    }

    /// Hands every complete frame in `reader` to the core (exactly what a UDP datagram is to
    /// it) and keeps the incomplete rest. Stops after a ConnectionBind that made this a data
    /// connection: what follows it is not STUN.
    fn cut(&mut self, reader: &mut Reader, ft: FiveTuple) -> Result<(), Closed> {
        let now = Instant::now();
        let mut start = 0;
        // The full length of the incomplete frame left at the end, once its header is in.
        let mut next = None;
        let result = loop {
            match reader.frame_len(start) {
                Err(e) => break Err(Closed::Framing(e)),
                Ok(Some(n)) if n <= reader.filled - start => {
                    let frame = &reader.buf[start..start + n];
                    if let Some(fwd) = self.core.handle_client_datagram(now, ft, frame) {
                        forward(
                            &self.relays,
                            &self.metrics,
                            &frame[fwd.payload],
                            fwd.id,
                            fwd.peer,
                        );
                    }
                    start += n;
                    // A ConnectionBind request (type 0x000b) may turn the connection into a
                    // raw RFC 6062 data connection.
                    if frame[..2] == [0x00, 0x0b] {
                        self.drain_outputs();
                        if self
                            .conns
                            .by_tuple(&ft)
                            .is_some_and(|c| c.splice_cid.is_some())
                        {
                            break Ok(());
                        }
                    }
                }
                Ok(Some(n)) => {
                    next = Some(n);
                    break Ok(());
                }
                Ok(None) => break Ok(()),
            }
        };
        self.drain_outputs();
        reader.consume(start, next);
        result
    }

    /// Writes what this turn queued for stream clients.
    pub(super) fn flush_dirty(&mut self) {
        // Closing a connection may queue output for others: written in the same pass. The
        // two lists swap, so neither allocates once grown.
        let spare = std::mem::take(&mut self.dirty_spare);
        let mut dirty = std::mem::replace(&mut self.dirty, spare);
        loop {
            for t in dirty.drain(..) {
                let Some(c) = self.conns.get_mut(t) else {
                    continue;
                };
                if matches!(c.mode, Mode::Splice(_)) {
                    continue;
                }
                if c.flush().is_err() {
                    self.close_conn(t, Closed::Error);
                } else {
                    self.sync_conn(t);
                }
            }
            if self.dirty.is_empty() {
                break;
            }
            std::mem::swap(&mut dirty, &mut self.dirty);
        }
        self.dirty_spare = dirty;
    }

    /// Sets what the poller waits for on the connection's sockets, and its next deadline.
    pub(super) fn sync_conn(&mut self, t: Token) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        let now = Instant::now();
        let (client, peer) = match &c.mode {
            Mode::Frames => (
                Interest {
                    read: true,
                    write: c.wants_write(),
                },
                None,
            ),
            Mode::Splice(s) => {
                let (ci, pi) = s.interests(&c.stream, now);
                (ci, Some(pi))
            }
        };
        // A failed change keeps the old registration; the next sync tries again.
        let _ = self
            .poller
            .set(c.stream.socket(), t.pack(), client, &mut c.interest);
        if let (Some(pi), Mode::Splice(s)) = (peer, &mut c.mode) {
            let pt = Token::new(Kind::SplicePeer, t.index, t.generation);
            let _ = self
                .poller
                .set(&s.peer, pt.pack(), pi, &mut s.peer_interest);
        }
        if let Some(d) = c.deadline(self.limits.unauthenticated_timeout) {
            if c.timer_at.is_none_or(|at| at > d) {
                c.timer_at = Some(d);
                self.timers.push(d, t.pack());
            }
        }
    }

    /// A connection's deadline (maybe) passed: close it if it still has no allocation, or
    /// go on with a paced splice.
    pub(super) fn on_conn_timer(&mut self, t: Token, now: Instant) {
        let timeout = self.limits.unauthenticated_timeout;
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        c.timer_at = None;
        if matches!(c.mode, Mode::Splice(_)) {
            return self.pump_splice(t);
        }
        let expired = c.idle_since.is_some_and(|since| since + timeout <= now);
        if expired {
            if c.stream.is_handshaking() {
                tracing::debug!(client = %c.ft, "tls handshake timed out");
                return self.close_conn(t, Closed::HandshakeTimeout);
            }
            if self.core.has_allocation(&c.ft) {
                // Its allocation started without the worker hearing of it: from now.
                c.idle_since = None;
            } else {
                return self.close_conn(t, Closed::NoAllocation);
            }
        }
        self.sync_conn(t);
    }

    /// Ends a connection: its allocation ends with it. A connection a ConnectionBind made
    /// a data connection becomes a splice instead.
    pub(super) fn close_conn(&mut self, t: Token, why: Closed) {
        if matches!(why, Closed::Spliced) {
            return self.start_splice(t);
        }
        let Some(mut c) = self.conns.remove(t) else {
            return;
        };
        self.core.handle_connection_closed(Instant::now(), c.ft);
        self.drain_outputs();
        // A handshake that failed or timed out just closes (no TLS session to end politely).
        let polite = !matches!(
            why,
            Closed::Error | Closed::HandshakeFailed | Closed::HandshakeTimeout
        );
        if polite && !c.stream.is_handshaking() {
            // What is queued goes out as far as the socket takes it now, then a polite end.
            let _ = c.flush();
            c.stream.shutdown();
        }
        tracing::debug!(client = %c.ft, reason = %why, dropped = c.queue.dropped.get(), "connection closed");
    }

    /// Closes every connection (the worker is stopping).
    pub(super) fn close_all_conns(&mut self) {
        let tokens: Vec<Token> = self.conns.tokens().collect();
        for t in tokens {
            let spliced = self
                .conns
                .get_mut(t)
                .is_some_and(|c| matches!(c.mode, Mode::Splice(_)));
            if spliced {
                self.end_splice(t);
            } else {
                self.close_conn(t, Closed::Shutdown);
            }
        }
    }
}

/// The TLS handshake of `c` just finished: its time without an allocation starts now.
fn handshake_done(c: &mut Conn) {
    if let Some((alpn, version)) = c.stream.tls_info() {
        tracing::debug!(client = %c.ft, %alpn, %version, "tls handshake done");
    }
    c.idle_since = Some(Instant::now());
}
