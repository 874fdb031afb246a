//! TURN over TCP (RFC 8656 §3.1): the client transport is a byte stream on the same port as
//! UDP. Each accepted connection is a task on the worker whose `SO_REUSEPORT` listener
//! accepted it, so the connection, its allocation and the allocation's relay socket all live
//! on one core.
//!
//! A connection task owns its stream — a `TcpStream`, or a TLS stream over one (`tls.rs`):
//! the task is generic over `AsyncRead + AsyncWrite`. It reads into a buffer of its own, cuts
//! it into frames with [`framing`], and hands each frame to the core exactly like a UDP
//! datagram. The buffer grows only with bytes that arrived (never to the length a header
//! announces), up to `max_frame_size`, and shrinks back once a long frame is out: an idle
//! connection costs its first 4 KiB whatever it announced. Writes to the client (responses,
//! and peer data on the relay path) go through [`Conn::send`], which appends the frame to the
//! connection's bounded queue (`write_queue.rs`) and wakes the task; the task takes the whole
//! queue at once and writes it (through TLS when the stream is TLS). Over the bound, whole
//! frames are dropped (and counted) — a TURN relay carries media, where a late packet is as
//! good as a lost one — so a client that stops reading cannot make the server grow.
//!
//! Hygiene against clients that hold connections without using them: at most
//! `max_connections` at once across the server and `max_connections_per_source` from one
//! source (more are closed at accept, `limits.rs`), and a connection with no allocation —
//! before its first one, or after it ends — is closed after `unauthenticated_timeout`.

pub use super::limits::{Limits, Slot};
use super::worker::{Shared, Worker};
use super::write_queue::{QueueBudget, WriteQueue};
use crate::core::{FiveTuple, Transport};
use crate::stun::framing;
use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The first read buffer of a connection.
const INITIAL_READ_BUF: usize = 4096;
/// How far the read buffer may grow beyond the bytes already in it. A frame longer than the
/// buffer makes it grow only as its bytes arrive, never to the length its header announces:
/// a client that sends a 20-byte header announcing 64 KiB and stops costs this much, not
/// 64 KiB.
const READ_STEP: usize = 4096;
/// Reads per wake-up before yielding to the worker's other tasks.
const BATCH: usize = 64;
/// After an accept error (fds exhausted, …), wait before trying again rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often a connection that holds an allocation looks again (only a safety net: the
/// worker tells it when its allocation ends).
const RECHECK: Duration = Duration::from_secs(3600);
/// How long a closing connection may take to send its close_notify and FIN.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the worker keeps of a connection to write to it (the map `FiveTuple → Conn`). The
/// stream itself belongs to the connection's task; the worker only queues frames here.
pub struct Conn {
    /// Whole frames waiting for the task to write them (`write_queue.rs`).
    queue: WriteQueue,
    /// Wakes the task: output was queued, the allocation state changed, or close.
    wake: Notify,
    /// Since when the connection has had no allocation (`None` while it has one).
    idle_since: Cell<Option<Instant>>,
    /// Set when a ConnectionBind made this an RFC 6062 data connection: the task stops
    /// reading STUN and splices it with that peer connection (`tcp_relay.rs`).
    splice: Cell<Option<u32>>,
}

impl Conn {
    fn new(budget: Rc<QueueBudget>) -> Conn {
        Conn {
            queue: WriteQueue::new(budget),
            wake: Notify::new(),
            idle_since: Cell::new(Some(Instant::now())),
            splice: Cell::new(None),
        }
    }

    /// Queues one whole frame for the client; the connection's task writes it. Dropped when
    /// the queue is at its bound or the worker's budget is spent (`write_queue.rs`). Never
    /// blocks, and (once the queue has grown to its working size) never allocates. Returns
    /// false when the frame was dropped.
    pub fn send(&self, frame: &[u8]) -> bool {
        let mut first = false;
        if !self.queue.push(frame, &mut first) {
            return false;
        }
        if first {
            // The task takes the whole queue when it wakes, so one wake-up per batch.
            self.wake.notify_one();
        }
        true
    }

    /// The core bound this connection to peer connection `cid` (RFC 6062 ConnectionBind).
    pub fn start_splice(&self, cid: u32) {
        self.splice.set(Some(cid));
        self.wake.notify_one();
    }

    /// The worker saw this connection's allocation start (`false`) or end (`true`).
    pub fn set_idle(&self, now: Instant, idle: bool) {
        self.idle_since.set(idle.then_some(now));
        self.wake.notify_one();
    }
}

/// Accepts the next connection within `max_connections` and `max_connections_per_source` on
/// `listener`, for `transport`; one refused is closed at once and counted.
pub(super) async fn accept_one(
    worker: &Shared,
    listener: &TcpListener,
    limits: &Limits,
    transport: Transport,
) -> (TcpStream, FiveTuple, Slot) {
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let slot = match Slot::take(limits, client.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                // Closed before anything was read or allocated for it (and before it is
                // counted, so whoever sees the count finds it closed).
                drop(stream);
                worker.borrow().connection_refused(why);
                tracing::debug!(%client, reason = why.label(), "connection refused at accept");
                continue;
            }
        };
        let Ok(server) = stream.local_addr() else {
            continue;
        };
        // TURN messages are small and latency-bound: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let five_tuple = FiveTuple {
            client,
            server,
            transport,
        };
        return (stream, five_tuple, slot);
    }
}

/// Accepts TCP connections on one listener of this worker.
pub async fn accept(worker: Shared, listener: TcpListener, limits: Limits) {
    loop {
        let (stream, ft, slot) = accept_one(&worker, &listener, &limits, Transport::Tcp).await;
        tokio::task::spawn_local(serve(worker.clone(), stream, ft, limits.clone(), slot));
    }
}

/// Registers a connection (TCP, or TLS once its handshake is done) with the worker and
/// drives it until it closes.
pub(super) async fn serve<S>(worker: Shared, stream: S, ft: FiveTuple, limits: Limits, slot: Slot)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn = Rc::new(Conn::new(worker.borrow().queue_budget.clone()));
    {
        let mut w = worker.borrow_mut();
        if w.conns.insert(ft, conn.clone()).is_some() {
            // The old connection of this 5-tuple has closed but its task has not run yet:
            // its allocation belonged to that connection, so it ends now.
            w.core.handle_connection_closed(Instant::now(), ft);
            w.drain_outputs();
        }
    }
    connection(worker, conn, stream, ft, limits, slot).await;
}

/// Why a connection ended, for its debug log line.
enum Closed {
    ByClient,
    Error,
    Framing(framing::FramingError),
    NoAllocation,
    /// Became an RFC 6062 data connection.
    Spliced,
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::ByClient => f.write_str("closed by the client"),
            Closed::Error => f.write_str("socket error"),
            Closed::Framing(e) => write!(f, "framing error: {e}"),
            Closed::NoAllocation => f.write_str("no allocation within unauthenticated_timeout"),
            Closed::Spliced => f.write_str("tcp relay data connection ended"),
        }
    }
}

/// What woke a connection's task.
enum Step {
    Wake,
    Timer,
    Wrote(io::Result<usize>),
    Flushed(io::Result<()>),
    Read(io::Result<usize>),
}

/// Drives one connection until it closes, then ends its allocation. The task owns the
/// stream (a `TcpStream`, or a TLS stream over one): it reads and frames what the client
/// sends, and writes what the worker queued in `conn`.
async fn connection<S>(
    worker: Shared,
    conn: Rc<Conn>,
    mut stream: S,
    ft: FiveTuple,
    limits: Limits,
    slot: Slot,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let initial = INITIAL_READ_BUF.min(limits.max_frame);
    let mut reader = Reader {
        buf: vec![0; initial],
        filled: 0,
        initial,
        max_frame: limits.max_frame,
    };
    // What the task is writing: the queue, taken whole (the two buffers swap, so neither
    // is reallocated once grown), and how much of it is written.
    let mut out: Vec<u8> = Vec::new();
    let mut pos = 0;
    // Written into the stream but maybe not flushed (TLS buffers records).
    let mut unflushed = false;
    let mut reads = 0;
    let timeout = limits.unauthenticated_timeout;
    // One timer for the connection's life, moved only when its deadline changes, so reads
    // do not touch the timer wheel.
    let mut recheck_at = Instant::now() + RECHECK;
    let sleep = tokio::time::sleep_until(deadline(&conn, timeout, recheck_at).into());
    tokio::pin!(sleep);
    let why = loop {
        if pos == out.len() {
            pos = 0;
            conn.queue.take(&mut out);
        }
        let at = tokio::time::Instant::from(deadline(&conn, timeout, recheck_at));
        if sleep.deadline() != at {
            sleep.as_mut().reset(at);
        }
        let notified = conn.wake.notified();
        tokio::pin!(notified);
        let step = std::future::poll_fn(|cx| {
            if notified.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Step::Wake);
            }
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Step::Timer);
            }
            if pos < out.len() {
                if let Poll::Ready(r) = Pin::new(&mut stream).poll_write(cx, &out[pos..]) {
                    return Poll::Ready(Step::Wrote(r));
                }
            } else if unflushed {
                if let Poll::Ready(r) = Pin::new(&mut stream).poll_flush(cx) {
                    return Poll::Ready(Step::Flushed(r));
                }
            }
            let mut rb = ReadBuf::new(&mut reader.buf[reader.filled..]);
            match Pin::new(&mut stream).poll_read(cx, &mut rb) {
                Poll::Ready(r) => Poll::Ready(Step::Read(r.map(|()| rb.filled().len()))),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match step {
            Step::Wake => {}
            Step::Wrote(Ok(0)) | Step::Wrote(Err(_)) | Step::Flushed(Err(_)) => {
                break Closed::Error
            }
            Step::Wrote(Ok(n)) => {
                pos += n;
                unflushed = true;
                conn.queue.written(out.len() - pos);
            }
            Step::Flushed(Ok(())) => unflushed = false,
            Step::Read(Ok(0)) => break Closed::ByClient,
            Step::Read(Ok(n)) => {
                reader.filled += n;
                if let Err(why) = reader.cut(&worker, ft, &conn) {
                    break why;
                }
                if conn.splice.get().is_some() {
                    break Closed::Spliced;
                }
                reads += 1;
                if reads == BATCH {
                    // Let the worker's other tasks run between batches.
                    reads = 0;
                    tokio::task::yield_now().await;
                }
            }
            Step::Read(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Step::Read(Err(_)) => break Closed::Error,
            Step::Timer => {
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
    {
        let mut w = worker.borrow_mut();
        // A client reconnecting from the same port may already have a new connection under
        // the same 5-tuple: only this connection's entry and allocation end here.
        if w.conns.get(&ft).is_some_and(|c| Rc::ptr_eq(c, &conn)) {
            w.conns.remove(&ft);
            w.core.handle_connection_closed(Instant::now(), ft);
            w.drain_outputs();
        }
    }
    if let (Closed::Spliced, Some(cid)) = (&why, conn.splice.get()) {
        // What is still queued for the client (the ConnectionBind response) goes first;
        // what the client sent after its ConnectionBind goes to the peer.
        let mut to_client = out.split_off(pos);
        to_client.extend_from_slice(&conn.queue.waiting());
        let to_peer = &reader.buf[..reader.filled];
        // Boxed: few connections become splices, and inline its state would make every
        // connection's task larger.
        Box::pin(super::tcp_relay::splice(
            &worker, stream, ft, cid, &to_client, to_peer,
        ))
        .await;
    } else if !matches!(why, Closed::Error) {
        // Close politely: a TCP FIN, and over TLS a close_notify alert first, so the client
        // sees a clean end of stream rather than a truncation it must treat as an attack
        // (RFC 8446 §6.1). Bounded, so a client that never reads cannot hold the task.
        let _ = tokio::time::timeout(CLOSE_GRACE, stream.shutdown()).await;
    }
    tracing::debug!(client = %ft, reason = %why, dropped = conn.queue.dropped.get(), "connection closed");
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
    /// The buffer's first size, which it returns to once a longer frame is out.
    initial: usize,
    max_frame: usize,
}

impl Reader {
    /// Hands every complete frame to the core, keeps the incomplete rest at the front, and
    /// sizes the buffer for what comes next: at most [`READ_STEP`] beyond the bytes already
    /// in it, however long the next frame says it is (up to `max_frame`, which `frame_len`
    /// enforces). There is always room for at least one more byte while a frame is
    /// incomplete, so a read never gets an empty buffer.
    fn cut(&mut self, worker: &Shared, ft: FiveTuple, conn: &Conn) -> Result<(), Closed> {
        let mut start = 0;
        // The full length of the incomplete frame left at the end, once its header is in.
        let mut next = None;
        let mut w = worker.borrow_mut();
        let now = Instant::now();
        loop {
            let pending = &self.buf[start..self.filled];
            match framing::frame_len(pending, self.max_frame).map_err(Closed::Framing)? {
                Some(n) if n <= pending.len() => {
                    w.on_stream_frame(now, ft, &pending[..n]);
                    start += n;
                    // A ConnectionBind request (type 0x000b) may turn the connection into a
                    // raw RFC 6062 data connection: what follows it is not STUN.
                    if pending[..2] == [0x00, 0x0b] {
                        w.drain_outputs();
                        if conn.splice.get().is_some() {
                            break;
                        }
                    }
                }
                Some(n) => {
                    next = Some(n);
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
        self.size_for(next.unwrap_or(0));
        Ok(())
    }

    /// Grows the buffer towards a frame of `next` bytes by at most [`READ_STEP`] beyond what
    /// it holds, or gives a grown buffer back once nothing pending needs it.
    fn size_for(&mut self, next: usize) {
        let want = next.min(self.filled + READ_STEP).max(self.initial);
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

impl Worker {
    /// One frame from a stream client: exactly what a UDP datagram is to the core.
    fn on_stream_frame(&mut self, now: Instant, from: FiveTuple, frame: &[u8]) {
        if let Some(fwd) = self.core.handle_client_datagram(now, from, frame) {
            self.forward(&frame[fwd.payload], fwd.id, fwd.peer);
        }
    }
}
