//! The splice of an RFC 6062 data connection with its peer connection: raw bytes both ways
//! through two bounded buffers, until both sides have closed, either fails, or the allocation
//! ends. A leaf: the worker calls [`Splice::pump`] when either socket is ready (or a pacing
//! wait ends) and counts what it reports into the core.
//!
//! **Bandwidth caps.** `allocation_bandwidth` and `user_bandwidth` hold for spliced bytes too,
//! both directions charging the same buckets (the user's is the one their UDP allocations
//! charge). TCP is reliable, so nothing is dropped: each chunk read is charged, and when the
//! caps say so that direction waits for the refill time before writing it and reading the next
//! (leaving datagrams, which cannot wait, half of each bucket's burst). Meanwhile the kernel's
//! buffers fill and TCP flow control slows the sender — back-pressure. Without a cap a chunk
//! costs one test of an `Option`.

use super::poller::Interest;
use super::stream::Stream;
use crate::core::tcp_relay::{ConnectionId, SpliceShare};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Each direction copies through a buffer of this size.
const SPLICE_BUF: usize = 16 * 1024;
/// Chunks one direction moves per turn of the loop.
const CHUNKS_PER_TURN: usize = 4;

/// One direction: bytes read from one side and not yet written to the other.
struct Pipe {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The source said end of stream.
    eof: bool,
    /// The end of stream was passed on (write shutdown).
    shut: bool,
    /// Under a cap: nothing is written or read before this.
    paused_until: Option<Instant>,
    /// Bytes at the front that were queued before the splice (the ConnectionBind response):
    /// written first, but not relayed bytes, so not counted.
    unrelayed: usize,
}

impl Pipe {
    fn new(first: Vec<u8>, relayed: bool) -> Pipe {
        let end = first.len();
        let mut buf = first;
        if buf.len() < SPLICE_BUF {
            buf.resize(SPLICE_BUF, 0);
        }
        Pipe {
            buf,
            start: 0,
            end,
            eof: false,
            shut: false,
            paused_until: None,
            unrelayed: if relayed { 0 } else { end },
        }
    }

    fn pending(&self) -> bool {
        self.start < self.end
    }

    fn paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|t| now < t)
    }

    fn done(&self) -> bool {
        self.shut
    }

    /// Wants to read from its source.
    fn wants_read(&self, now: Instant) -> bool {
        !self.pending() && !self.eof && !self.paused(now)
    }

    /// Wants to write to its destination.
    fn wants_write(&self, now: Instant) -> bool {
        self.pending() && !self.paused(now)
    }
}

/// What one pump moved, for the core's counters.
#[derive(Default)]
pub struct Moved {
    pub to_peer: usize,
    pub to_client: usize,
    /// Chunks that had to wait for a cap.
    pub throttled: u64,
}

/// A data connection's splice state (the client stream stays in its connection).
pub struct Splice {
    pub cid: ConnectionId,
    pub peer: TcpStream,
    share: Arc<SpliceShare>,
    /// Set by the allocation's owner (any worker) when the allocation ends.
    closed: Arc<AtomicBool>,
    up: Pipe,
    down: Pipe,
    /// What the poller waits for on the peer socket now (`None`: not registered).
    pub peer_interest: Option<Interest>,
}

/// The two sides of a read or write: the client's stream or the peer's socket.
enum Side<'a> {
    Client(&'a mut Stream),
    Peer(&'a mut TcpStream),
}

impl Side<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Side::Client(s) => s.read(buf),
            Side::Peer(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Side::Client(s) => s.write(buf),
            Side::Peer(s) => s.write(buf),
        }
    }

    fn shutdown(&mut self) {
        match self {
            Side::Client(s) => s.shutdown(),
            Side::Peer(s) => {
                let _ = s.shutdown(Shutdown::Write);
            }
        }
    }
}

impl Splice {
    /// `to_client` is what was still queued for the client (the ConnectionBind response) and
    /// `to_peer` what the client sent after its ConnectionBind: both go first.
    pub fn new(
        cid: ConnectionId,
        peer: TcpStream,
        share: Arc<SpliceShare>,
        closed: Arc<AtomicBool>,
        to_client: Vec<u8>,
        to_peer: Vec<u8>,
    ) -> Splice {
        Splice {
            cid,
            peer,
            share,
            closed,
            up: Pipe::new(to_peer, true),
            down: Pipe::new(to_client, false),
            peer_interest: None,
        }
    }

    /// The allocation ended (on whatever worker owns it).
    pub fn allocation_ended(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Both directions ended.
    pub fn finished(&self) -> bool {
        self.up.done() && self.down.done()
    }

    /// When a paced direction may go on.
    pub fn paused_until(&self) -> Option<Instant> {
        match (self.up.paused_until, self.down.paused_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What the client's and the peer's sockets should wait for.
    pub fn interests(&self, client: &Stream, now: Instant) -> (Interest, Interest) {
        let client_i = Interest {
            read: self.up.wants_read(now),
            write: self.down.wants_write(now) || client.wants_write(),
        };
        let peer_i = Interest {
            read: self.down.wants_read(now),
            write: self.up.wants_write(now),
        };
        (client_i, peer_i)
    }

    /// Moves what both sides allow now; Err when either side failed.
    pub fn pump(&mut self, client: &mut Stream, now: Instant) -> io::Result<Moved> {
        let mut moved = Moved::default();
        // TLS records still waiting from the last turn go first.
        match client.flush() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ => {}
        }
        let Splice {
            peer,
            share,
            up,
            down,
            ..
        } = self;
        moved.to_peer = pump(
            up,
            &mut Side::Client(client),
            &mut Side::Peer(peer),
            share,
            now,
            &mut moved.throttled,
        )?;
        moved.to_client = pump(
            down,
            &mut Side::Peer(peer),
            &mut Side::Client(client),
            share,
            now,
            &mut moved.throttled,
        )?;
        if moved.to_peer > 0 {
            share.count(true, moved.to_peer as u64);
        }
        if moved.to_client > 0 {
            share.count(false, moved.to_client as u64);
        }
        Ok(moved)
    }
}

/// Moves one direction: writes what is pending, reads the next chunk, up to
/// [`CHUNKS_PER_TURN`]; passes the source's end of stream on as a write shutdown (the other
/// direction goes on until its own). Returns the bytes written.
fn pump(
    pipe: &mut Pipe,
    from: &mut Side<'_>,
    to: &mut Side<'_>,
    share: &SpliceShare,
    now: Instant,
    throttled: &mut u64,
) -> io::Result<usize> {
    let mut written = 0;
    if pipe.paused(now) {
        return Ok(0);
    }
    pipe.paused_until = None;
    for _ in 0..CHUNKS_PER_TURN * 2 {
        if pipe.pending() {
            match to.write(&pipe.buf[pipe.start..pipe.end]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    pipe.start += n;
                    let skip = n.min(pipe.unrelayed);
                    pipe.unrelayed -= skip;
                    written += n - skip;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if pipe.eof {
            if !pipe.shut {
                to.shutdown();
                pipe.shut = true;
            }
            break;
        }
        let chunk = SPLICE_BUF.min(pipe.buf.len());
        match from.read(&mut pipe.buf[..chunk]) {
            Ok(0) => pipe.eof = true,
            Ok(n) => {
                pipe.start = 0;
                pipe.end = n;
                if share.is_capped() {
                    let wait = share.pace(now, n as u64);
                    if !wait.is_zero() {
                        *throttled += 1;
                        pipe.paused_until = Some(now + wait);
                        break;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // A first buffer larger than a chunk (a long queue at the ConnectionBind) goes back to
    // the chunk size once written.
    if !pipe.pending() && pipe.buf.len() > SPLICE_BUF {
        pipe.buf.truncate(SPLICE_BUF);
        pipe.buf.shrink_to_fit();
    }
    Ok(written)
}
