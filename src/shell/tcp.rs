//! TURN over TCP (RFC 8656 §3.1): the client transport is a byte stream on the same port as
//! UDP. Each accepted connection is a task on the worker whose `SO_REUSEPORT` listener
//! accepted it, so the connection, its allocation and the allocation's relay socket all live
//! on one core.
//!
//! A connection task reads into a bounded buffer of its own, cuts it into frames with
//! [`framing`], and hands each frame to the core exactly like a UDP datagram. Writes to the
//! client (responses, and peer data on the relay path) go through [`Conn::send`]: straight to
//! the socket with `try_write`, and only when the kernel's send buffer is full into a bounded
//! queue that the task flushes when the socket is writable again. Over the bound, whole
//! frames are dropped (and counted) — a TURN relay carries media, where a late packet is as
//! good as a lost one — so a client that stops reading cannot make the server grow.
//!
//! Hygiene against clients that hold connections without using them: at most
//! `max_connections` at once across the server (more are closed at accept), and a connection
//! with no allocation — before its first one, or after it ends — is closed after
//! `unauthenticated_timeout`.

use super::worker::{Shared, Worker};
use crate::core::FiveTuple;
use crate::stun::framing;
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The first read buffer of a connection; it grows (up to `max_frame`) only when a frame
/// needs more, so idle connections stay small.
const INITIAL_READ_BUF: usize = 4096;
/// Bytes queued for a client whose socket is full before whole frames are dropped. A frame
/// already partly written is always queued in full, so the queue can exceed this by one frame.
const WRITE_QUEUE_MAX: usize = 256 * 1024;
/// Capacity an emptied write queue keeps.
const QUEUE_KEEP: usize = 16 * 1024;
/// Reads per wake-up before yielding to the worker's other tasks.
const BATCH: usize = 64;
/// After an accept error (fds exhausted, …), wait before trying again rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often a connection that holds an allocation looks again (only a safety net: the
/// worker tells it when its allocation ends).
const RECHECK: Duration = Duration::from_secs(3600);

/// Connection limits shared by every worker of a server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// 0 = no limit.
    pub max_connections: usize,
    /// Open connections across all workers.
    pub open: Arc<AtomicUsize>,
    pub unauthenticated_timeout: Duration,
    pub max_frame: usize,
}

/// One slot of `max_connections`, given back when the connection ends.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(limits: &Limits) -> Option<Slot> {
        let before = limits.open.fetch_add(1, Ordering::Relaxed);
        if limits.max_connections != 0 && before >= limits.max_connections {
            limits.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Slot(limits.open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the worker keeps of a connection to write to it (the map `FiveTuple → Conn`).
pub struct Conn {
    stream: TcpStream,
    /// Bytes the kernel would not take yet, oldest first, from `head`.
    queue: RefCell<Queue>,
    /// Wakes the task: output was queued, the allocation state changed, or close.
    wake: Notify,
    /// Since when the connection has had no allocation (`None` while it has one).
    idle_since: Cell<Option<Instant>>,
    /// Set when a write failed: the task closes the connection.
    broken: Cell<bool>,
    /// Frames dropped because the queue was over its bound.
    pub dropped: Cell<u64>,
}

#[derive(Default)]
struct Queue {
    buf: Vec<u8>,
    head: usize,
}

impl Queue {
    fn pending(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    fn is_empty(&self) -> bool {
        self.head == self.buf.len()
    }

    fn consume(&mut self, n: usize) {
        self.head += n;
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
            // Keep some capacity (a client that was slow once may be slow again), but not
            // a burst's worth on every connection that ever had one.
            self.buf.shrink_to(QUEUE_KEEP);
        }
    }
}

impl Conn {
    /// Sends one whole frame to the client: now if the socket takes it, else queued behind
    /// what is already waiting; dropped when the queue is over its bound. Never blocks.
    pub fn send(&self, frame: &[u8]) {
        if self.broken.get() {
            return;
        }
        let mut q = self.queue.borrow_mut();
        let rest = if q.is_empty() {
            match self.stream.try_write(frame) {
                Ok(n) if n == frame.len() => return,
                Ok(n) => &frame[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => frame,
                Err(_) => {
                    self.broken.set(true);
                    self.wake.notify_one();
                    return;
                }
            }
        } else if q.pending().len() + frame.len() > WRITE_QUEUE_MAX {
            self.dropped.set(self.dropped.get() + 1);
            return;
        } else {
            frame
        };
        // The rest of a frame partly written must follow, or the stream is out of step.
        if q.head > 0 && q.buf.len() + rest.len() > q.buf.capacity() {
            let head = q.head;
            q.buf.drain(..head);
            q.head = 0;
        }
        q.buf.extend_from_slice(rest);
        self.wake.notify_one();
    }

    /// The worker saw this connection's allocation start (`false`) or end (`true`).
    pub fn set_idle(&self, now: Instant, idle: bool) {
        self.idle_since.set(idle.then_some(now));
        self.wake.notify_one();
    }

    /// Writes as much of the queue as the socket takes; false when the socket failed.
    fn flush(&self) -> bool {
        let mut q = self.queue.borrow_mut();
        while !q.is_empty() {
            match self.stream.try_write(q.pending()) {
                Ok(0) => return false,
                Ok(n) => q.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        true
    }
}

/// Accepts connections on one listener of this worker.
pub async fn accept(worker: Shared, listener: TcpListener, limits: Limits) {
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Some(slot) = Slot::take(&limits) else {
            // Dropping the stream closes it: over max_connections.
            tracing::debug!(%client, "tcp connection refused: max_connections reached");
            continue;
        };
        let Ok(server) = stream.local_addr() else {
            continue;
        };
        // TURN messages are small and latency-bound: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let five_tuple = FiveTuple {
            client,
            server,
            transport: crate::core::Transport::Tcp,
        };
        let conn = Rc::new(Conn {
            stream,
            queue: RefCell::default(),
            wake: Notify::new(),
            idle_since: Cell::new(Some(Instant::now())),
            broken: Cell::new(false),
            dropped: Cell::new(0),
        });
        let mut w = worker.borrow_mut();
        if w.conns.insert(five_tuple, conn.clone()).is_some() {
            // The old connection of this 5-tuple has closed but its task has not run yet:
            // its allocation belonged to that connection, so it ends now.
            w.core.handle_connection_closed(Instant::now(), five_tuple);
            w.drain_outputs();
        }
        drop(w);
        tokio::task::spawn_local(connection(
            worker.clone(),
            conn,
            five_tuple,
            limits.clone(),
            slot,
        ));
    }
}

/// Why a connection ended, for its debug log line.
enum Closed {
    ByClient,
    Error,
    Framing(framing::FramingError),
    NoAllocation,
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::ByClient => f.write_str("closed by the client"),
            Closed::Error => f.write_str("socket error"),
            Closed::Framing(e) => write!(f, "framing error: {e}"),
            Closed::NoAllocation => f.write_str("no allocation within unauthenticated_timeout"),
        }
    }
}

/// Drives one connection until it closes, then ends its allocation.
async fn connection(worker: Shared, conn: Rc<Conn>, ft: FiveTuple, limits: Limits, slot: Slot) {
    let mut reader = Reader {
        buf: vec![0; INITIAL_READ_BUF.min(limits.max_frame)],
        filled: 0,
        max_frame: limits.max_frame,
    };
    let timeout = limits.unauthenticated_timeout;
    // One timer for the connection's life, moved only when its deadline changes, so reads
    // do not touch the timer wheel.
    let mut recheck_at = Instant::now() + RECHECK;
    let sleep = tokio::time::sleep_until(deadline(&conn, timeout, recheck_at).into());
    tokio::pin!(sleep);
    let why = loop {
        if conn.broken.get() {
            break Closed::Error;
        }
        let at = tokio::time::Instant::from(deadline(&conn, timeout, recheck_at));
        if sleep.deadline() != at {
            sleep.as_mut().reset(at);
        }
        let queued = !conn.queue.borrow().is_empty();
        tokio::select! {
            _ = conn.wake.notified() => {}
            r = conn.stream.readable() => {
                if r.is_err() {
                    break Closed::Error;
                }
                match reader.on_readable(&worker, &conn.stream, ft) {
                    Ok(true) => tokio::task::yield_now().await,
                    Ok(false) => {}
                    Err(why) => break why,
                }
            }
            r = conn.stream.writable(), if queued => {
                if r.is_err() || !conn.flush() {
                    break Closed::Error;
                }
            }
            _ = &mut sleep => {
                let now = Instant::now();
                if worker.borrow().core.has_allocation(&ft) {
                    conn.idle_since.set(None);
                    recheck_at = now + RECHECK;
                } else {
                    match conn.idle_since.get() {
                        Some(t) if t + timeout <= now => break Closed::NoAllocation,
                        Some(_) => {}
                        // Its allocation ended without the worker saying so: from now.
                        None => conn.idle_since.set(Some(now)),
                    }
                }
            }
        }
    };
    let mut w = worker.borrow_mut();
    // A client reconnecting from the same port may already have a new connection under the
    // same 5-tuple: only this connection's entry and allocation end here.
    if w.conns.get(&ft).is_some_and(|c| Rc::ptr_eq(c, &conn)) {
        w.conns.remove(&ft);
        w.core.handle_connection_closed(Instant::now(), ft);
        w.drain_outputs();
    }
    drop(w);
    tracing::debug!(client = %ft, reason = %why, dropped = conn.dropped.get(), "tcp connection closed");
    drop(slot);
}

/// When the connection's timer should next fire: the end of its allowed idle time, or (while
/// it has an allocation) the next safety recheck.
fn deadline(conn: &Conn, timeout: Duration, recheck_at: Instant) -> Instant {
    conn.idle_since.get().map_or(recheck_at, |t| t + timeout)
}

/// A connection's read side: a buffer of `buf[..filled]` not yet framed.
struct Reader {
    buf: Vec<u8>,
    filled: usize,
    max_frame: usize,
}

impl Reader {
    /// Reads what the socket has and feeds every complete frame to the core. Ok(true) when
    /// the batch filled (more may be waiting).
    fn on_readable(
        &mut self,
        worker: &Shared,
        stream: &TcpStream,
        ft: FiveTuple,
    ) -> Result<bool, Closed> {
        for _ in 0..BATCH {
            match stream.try_read(&mut self.buf[self.filled..]) {
                Ok(0) => return Err(Closed::ByClient),
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(Closed::Error),
            }
            self.cut(worker, ft)?;
        }
        Ok(true)
    }

    /// Hands every complete frame to the core, keeps the incomplete rest at the front, and
    /// grows the buffer when the next frame is longer than it.
    fn cut(&mut self, worker: &Shared, ft: FiveTuple) -> Result<(), Closed> {
        let mut start = 0;
        let mut w = worker.borrow_mut();
        let now = Instant::now();
        loop {
            let pending = &self.buf[start..self.filled];
            match framing::frame_len(pending, self.max_frame).map_err(Closed::Framing)? {
                Some(n) if n <= pending.len() => {
                    w.on_stream_frame(now, ft, &pending[..n]);
                    start += n;
                }
                Some(n) => {
                    if n > self.buf.len() {
                        // Bounded by max_frame, which frame_len enforced.
                        self.buf.resize(n, 0);
                    }
                    break;
                }
                None => break,
            }
        }
        w.drain_outputs();
        drop(w);
        if start > 0 {
            self.buf.copy_within(start..self.filled, 0);
            self.filled -= start;
        }
        Ok(())
    }
}

impl Worker {
    /// One frame from a stream client: exactly what a UDP datagram is to the core.
    fn on_stream_frame(&mut self, now: Instant, from: FiveTuple, frame: &[u8]) {
        if let Some(fwd) = self.core.handle_client_datagram(now, from, frame) {
            self.forward(&frame[fwd.payload], fwd.id, fwd.peer);
        }
    }
}
