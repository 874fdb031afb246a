//! TURN over TCP and TLS (RFC 8656 §3.1): what the worker keeps of each client connection.
//! The client transport is a byte stream on the same port as UDP (or on `tls_listen`); each
//! accepted connection belongs to the worker whose `SO_REUSEPORT` listener accepted it, so
//! the connection, its allocation and the allocation's relay socket all live on one core.
//!
//! A [`Conn`] is a leaf: it holds its [`Stream`], its read buffer ([`Reader`]) and its write
//! queue, and knows nothing of the core. The worker reads it when the poller says so, cuts the
//! bytes into frames and hands each to the core exactly like a UDP datagram; what the core
//! sends back is appended to the write queue and written at the end of the turn.
//!
//! The read buffer grows only with bytes that arrived (never to the length a header
//! announces), up to `max_frame_size`, and shrinks back once a long frame is out: an idle
//! connection costs its first 4 KiB whatever it announced. Over the write queue's bound
//! (`write_queue.rs`), whole frames are dropped (and counted) — a TURN relay carries media,
//! where a late packet is as good as a lost one — so a client that stops reading cannot make
//! the server grow.
//!
//! Hygiene against clients that hold connections without using them: at most
//! `max_connections` at once across the server and `max_connections_per_source` from one
//! source (more are closed at accept, `limits.rs`), and a connection with no allocation —
//! during its TLS handshake, before its first allocation, or after it ends — is closed after
//! `unauthenticated_timeout`.

pub use super::limits::{Limits, Slot};
use super::poller::Interest;
use super::splice::Splice;
use super::stream::Stream;
use super::token::{Kind, Token};
use super::write_queue::{QueueBudget, WriteQueue};
use crate::core::FiveTuple;
use crate::stun::framing;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::time::Instant;

/// The first read buffer of a connection.
const INITIAL_READ_BUF: usize = 4096;
/// How far the read buffer may grow beyond the bytes already in it. A frame longer than the
/// buffer makes it grow only as its bytes arrive, never to the length its header announces:
/// a client that sends a 20-byte header announcing 64 KiB and stops costs this much, not
/// 64 KiB.
const READ_STEP: usize = 4096;
/// Reads of one connection per turn of the loop, so one busy connection cannot starve the
/// worker's other sockets (it is served again next turn).
pub const READS_PER_TURN: usize = 16;

/// Why a connection ended, for its debug log line.
#[derive(Debug)]
pub enum Closed {
    ByClient,
    Error,
    Framing(framing::FramingError),
    NoAllocation,
    HandshakeTimeout,
    HandshakeFailed,
    /// Became an RFC 6062 data connection.
    Spliced,
    /// The server is stopping.
    Shutdown,
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::ByClient => f.write_str("closed by the client"),
            Closed::Error => f.write_str("socket error"),
            Closed::Framing(e) => write!(f, "framing error: {e}"),
            Closed::NoAllocation => f.write_str("no allocation within unauthenticated_timeout"),
            Closed::HandshakeTimeout => f.write_str("tls handshake timed out"),
            Closed::HandshakeFailed => f.write_str("tls handshake failed"),
            Closed::Spliced => f.write_str("tcp relay data connection ended"),
            Closed::Shutdown => f.write_str("server stopping"),
        }
    }
}

/// A connection's read side: a buffer of `buf[..filled]` not yet framed.
#[derive(Default)]
pub struct Reader {
    pub buf: Vec<u8>,
    pub filled: usize,
    /// The buffer's first size, which it returns to once a longer frame is out.
    initial: usize,
    max_frame: usize,
}

impl Reader {
    pub fn new(max_frame: usize) -> Reader {
        let mut r = Reader::empty(max_frame);
        r.ensure();
        r
    }

    /// A reader whose buffer is allocated only by [`Reader::ensure`]: a TLS connection's,
    /// which needs none until its handshake is done.
    pub fn empty(max_frame: usize) -> Reader {
        Reader {
            buf: Vec::new(),
            filled: 0,
            initial: INITIAL_READ_BUF.min(max_frame),
            max_frame,
        }
    }

    /// Allocates the first buffer if there is none yet.
    pub fn ensure(&mut self) {
        if self.buf.is_empty() {
            self.buf = vec![0; self.initial];
        }
    }

    /// The length of the frame starting at `start`: `Some` once its header is in (the frame
    /// may still be incomplete), `None` before.
    pub fn frame_len(&self, start: usize) -> Result<Option<usize>, framing::FramingError> {
        framing::frame_len(&self.buf[start..self.filled], self.max_frame)
    }

    /// Drops the `used` bytes framed, keeps the incomplete rest at the front, and sizes the
    /// buffer for what comes next: at most [`READ_STEP`] beyond the bytes already in it,
    /// however long the next frame (`next`, when its header is in) says it is. There is
    /// always room for at least one more byte while a frame is incomplete, so a read never
    /// gets an empty buffer.
    pub fn consume(&mut self, used: usize, next: Option<usize>) {
        if used > 0 {
            self.buf.copy_within(used..self.filled, 0);
            self.filled -= used;
        }
        let want = next
            .unwrap_or(0)
            .min(self.filled + READ_STEP)
            .max(self.initial)
            // Never below what is pending (the raw bytes after a ConnectionBind may be more
            // than the first size).
            .max(self.filled);
        if want > self.buf.len() {
            // Exact, so the capacity is what was asked for, not the doubling `resize` does.
            self.buf.reserve_exact(want - self.buf.len());
            self.buf.resize(want, 0);
        } else if self.buf.len() > want {
            // A long frame is out: its memory goes back rather than stay for the
            // connection's life. `want` is at least `filled`: nothing pending is cut.
            self.buf.truncate(want);
            self.buf.shrink_to_fit();
        }
    }
}

/// What a connection is doing.
pub enum Mode {
    /// Reading STUN and ChannelData frames (after the TLS handshake, for TLS).
    Frames,
    /// An RFC 6062 data connection spliced with a peer connection (`splice.rs`).
    Splice(Box<Splice>),
}

/// One client connection, owned by the worker's connection table.
pub struct Conn {
    pub ft: FiveTuple,
    pub stream: Stream,
    /// Taken out (left empty) while the worker frames what it read.
    pub reader: Reader,
    /// Whole frames waiting to be written (`write_queue.rs`).
    pub queue: WriteQueue,
    /// What is being written: the queue, taken whole (the two buffers swap, so neither is
    /// reallocated once grown), and how much of it is written.
    out: Vec<u8>,
    pos: usize,
    /// Since when the connection has had no allocation (`None` while it has one).
    pub idle_since: Option<Instant>,
    /// A ConnectionBind bound it to this peer connection: it becomes a splice once the
    /// frame that did it is handled.
    pub splice_cid: Option<u32>,
    pub mode: Mode,
    /// What the poller waits for on its socket now (`None`: not registered).
    pub interest: Option<Interest>,
    /// The earliest deadline of this connection already in the worker's timer heap.
    pub timer_at: Option<Instant>,
    /// Its place in the connection limits, given back when it is dropped.
    _slot: Slot,
}

impl Conn {
    pub fn new(
        ft: FiveTuple,
        stream: Stream,
        max_frame: usize,
        budget: Rc<QueueBudget>,
        slot: Slot,
        now: Instant,
    ) -> Conn {
        // A TLS connection reads no plaintext before its handshake is done: no buffer yet, so
        // a half-open handshake costs only rustls's state.
        let reader = if stream.is_handshaking() {
            Reader::empty(max_frame)
        } else {
            Reader::new(max_frame)
        };
        Conn {
            ft,
            stream,
            reader,
            queue: WriteQueue::new(budget),
            out: Vec::new(),
            pos: 0,
            idle_since: Some(now),
            splice_cid: None,
            mode: Mode::Frames,
            interest: None,
            timer_at: None,
            _slot: slot,
        }
    }

    /// Writes what is queued until the socket takes no more. Err on a broken connection.
    pub fn flush(&mut self) -> io::Result<()> {
        loop {
            if self.pos == self.out.len() {
                self.pos = 0;
                self.queue.take(&mut self.out);
                if self.out.is_empty() {
                    self.queue.written(0);
                    return match self.stream.flush() {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                        r => r,
                    };
                }
            }
            match self.stream.write(&self.out[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pos += n;
                    self.queue.written(self.out.len() - self.pos);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Output is waiting for the socket.
    pub fn wants_write(&self) -> bool {
        self.pos < self.out.len() || self.queue.held() > 0 || self.stream.wants_write()
    }

    /// Everything not yet written (for a splice to send before the raw bytes).
    pub fn take_unwritten(&mut self) -> Vec<u8> {
        let mut rest = self.out.split_off(self.pos);
        rest.extend_from_slice(&self.queue.waiting());
        rest
    }

    /// When the connection's timer should next fire: the end of its allowed idle time (its
    /// handshake's, for TLS), if it has no allocation.
    pub fn deadline(&self, timeout: std::time::Duration) -> Option<Instant> {
        match &self.mode {
            Mode::Frames => self.idle_since.map(|t| t + timeout),
            Mode::Splice(s) => s.paused_until(),
        }
    }
}

/// The worker's connections: a slab indexed by the poller token's index, with a generation
/// per slot so a stale event never reaches a newer connection, and the 5-tuple index that
/// writes to clients go through.
#[derive(Default)]
pub struct Conns {
    slots: Vec<(u32, Option<Conn>)>,
    free: Vec<u32>,
    by_tuple: HashMap<FiveTuple, Token>,
}

impl Conns {
    /// Adds a connection; its token. A connection still registered under the same 5-tuple
    /// (closed, its end not yet seen) is returned to be closed.
    pub fn insert(&mut self, conn: Conn) -> (Token, Option<Conn>) {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push((0, None));
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.0 = slot.0.wrapping_add(1);
        let token = Token::new(Kind::Conn, index, slot.0);
        let ft = conn.ft;
        slot.1 = Some(conn);
        let old = self
            .by_tuple
            .insert(ft, token)
            .and_then(|t| self.remove_slot(t));
        (token, old)
    }

    pub fn get_mut(&mut self, token: Token) -> Option<&mut Conn> {
        let slot = self.slots.get_mut(token.index as usize)?;
        if Token::new(Kind::Conn, token.index, slot.0).generation != token.generation {
            return None;
        }
        slot.1.as_mut()
    }

    /// The connection of a client 5-tuple (not a spliced one: those left the index).
    pub fn by_tuple(&mut self, ft: &FiveTuple) -> Option<&mut Conn> {
        let t = *self.by_tuple.get(ft)?;
        self.get_mut(t)
    }

    pub fn token_of(&self, ft: &FiveTuple) -> Option<Token> {
        self.by_tuple.get(ft).copied()
    }

    /// Takes the connection out of the 5-tuple index (it became a splice) but keeps it.
    pub fn unindex(&mut self, token: Token) {
        let Some(ft) = self.get_mut(token).map(|c| c.ft) else {
            return;
        };
        if self.by_tuple.get(&ft) == Some(&token) {
            self.by_tuple.remove(&ft);
        }
    }

    /// Removes the connection (it is closed when dropped).
    pub fn remove(&mut self, token: Token) -> Option<Conn> {
        let conn = self.remove_slot(token)?;
        if self.by_tuple.get(&conn.ft) == Some(&token) {
            self.by_tuple.remove(&conn.ft);
        }
        Some(conn)
    }

    fn remove_slot(&mut self, token: Token) -> Option<Conn> {
        self.get_mut(token)?;
        let conn = self.slots[token.index as usize].1.take();
        self.free.push(token.index);
        conn
    }

    /// Every connection's token (shutdown, the splice check).
    pub fn tokens(&self) -> impl Iterator<Item = Token> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, (g, c))| c.as_ref().map(|_| Token::new(Kind::Conn, i as u32, *g)))
    }
}

/// What each connection holds inline in the worker's table, whatever it has received: TLS
/// state and splices are boxed, so a plain TCP connection pays for neither. The abuse test
/// (`tests/abuse_connections.rs`) measures the whole cost; this keeps the entry from growing
/// unseen (it replaces the size check of the per-connection tasks this table replaced).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_entry_stays_small() {
        let conn = std::mem::size_of::<Conn>();
        let slot = std::mem::size_of::<(u32, Option<Conn>)>();
        assert!(conn <= 320, "a connection entry holds {conn} bytes inline");
        assert!(slot <= 320, "a table slot holds {slot} bytes inline");
        assert!(std::mem::size_of::<Stream>() <= 16);
        assert!(std::mem::size_of::<Mode>() <= 16);
    }
}
