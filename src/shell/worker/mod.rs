//! One worker: a thread running a plain poll loop that owns everything of its core — the
//! core itself, one `SO_REUSEPORT` UDP socket and one TCP listener per listening address (and
//! one per `tls_listen` address), the TCP and TLS connections it accepted with their buffers
//! and write queues, the relay sockets of its allocations, and the RFC 6062 listeners,
//! connection attempts and splices. Nothing here is shared with other workers, so the relay
//! path takes no lock; and nothing is shared *within* the worker either: [`Worker`] is the
//! single owner, sockets are leaves that report readiness, and the loop calls the core and
//! carries out what it returns (`poll_output`). See docs/architecture.md for the picture.
//!
//! One turn of the loop, in order:
//! 1. write what the last turn queued for stream clients, and set each socket's interest;
//! 2. block in `epoll_wait` until a socket is ready, the earliest deadline (the core's
//!    `poll_timeout`, the worker's own [`Timers`], the one-second clock tick), or a wake-up
//!    from another thread (admin API, reload, stop) — after the coalescing pause when busy;
//! 3. serve each ready socket once: one `recvmmsg` batch per UDP socket, a bounded number of
//!    reads per connection, a bounded number of accepts per listener (the iteration budget:
//!    a busy socket is reported again next turn, after the others);
//! 4. fire what is due: the core's timers, connection timeouts, pacing waits.
//!
//! The `streams` and `rfc6062` submodules hold the loop's handlers for TCP/TLS connections and
//! for RFC 6062; they extend [`Worker`] and are the only files that may.

mod rfc6062;
mod streams;

use super::coalesce::Coalescer;
use super::poller::{Interest, Notifier, Poller, Ready};
use super::relays::Relays;
use super::reload::ReloadLink;
use super::socket;
use super::tcp::{Conns, Limits};
use super::tcp_relay::TcpRelays;
use super::timers::Timers;
use super::tls::Certs;
use super::token::{Kind, Token};
use super::udp::{self, RecvBatch, SendBatch};
use super::write_queue::{QueueBudget, WORKER_QUEUE_BUDGET};
use crate::core::{AllocationId, Event, FiveTuple, Output, RelayOpenError, Server as Core};
use crate::metrics::admin::AdminReceiver;
use crate::metrics::WorkerMetrics;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The loop wakes at least this often, to refresh the core's wall clock and to look for
/// splices whose allocation ended on another worker.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// What other threads ask of a worker (besides admin requests and reloads, which have their
/// own channels). Sent with [`WorkerHandle::send`], which also wakes the loop.
#[derive(Debug)]
pub enum Command {
    /// End every allocation and return.
    Stop,
    /// Panic on the worker's thread: only [`super::Server::panic_worker`] sends it, a hidden
    /// hook for the test of the panic policy (never reachable from the network).
    Panic,
}

/// How other threads reach a running worker.
pub struct WorkerHandle {
    pub thread: std::thread::JoinHandle<()>,
    commands: mpsc::Sender<Command>,
    notifier: Arc<Notifier>,
}

impl WorkerHandle {
    pub fn send(&self, c: Command) {
        let _ = self.commands.send(c);
        self.notifier.wake();
    }
}

/// Everything a worker starts with.
pub struct Start {
    pub index: usize,
    pub core: Core,
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
    pub tls: Vec<(TcpListener, Arc<Certs>)>,
    pub limits: Limits,
    pub reload: ReloadLink,
    pub metrics: Arc<WorkerMetrics>,
    pub admin: AdminReceiver,
    pub udp_options: udp::Options,
    pub notifier: Arc<Notifier>,
    /// Capacity of the ended-allocation log the store's usage accounting drains; 0 (no
    /// store) keeps none.
    pub ended_log: usize,
    /// The kernel fast path's maps, when the XDP program is attached.
    pub fast_path: Option<crate::shell::xdp::WorkerFastPath>,
}

/// Starts the worker's thread.
pub fn spawn(start: Start) -> io::Result<WorkerHandle> {
    let (tx, rx) = mpsc::channel();
    let notifier = start.notifier.clone();
    let thread = std::thread::Builder::new()
        .name(format!("turnd-worker-{}", start.index))
        .spawn(move || {
            let index = start.index;
            match Worker::new(start, rx) {
                Ok(w) => w.run(),
                Err(e) => {
                    tracing::error!(worker = index, error = %e, "cannot start worker");
                }
            }
        })?;
    Ok(WorkerHandle {
        thread,
        commands: tx,
        notifier,
    })
}

/// A TCP or TLS listener of the worker.
pub(super) struct Listener {
    socket: TcpListener,
    /// The certificate for a TLS listener.
    certs: Option<Arc<Certs>>,
}

pub(super) struct Worker {
    index: usize,
    core: Core,
    poller: Poller,
    notifier: Arc<Notifier>,
    /// `notifier` as a task waker, for the admin channel.
    waker: std::task::Waker,
    commands: mpsc::Receiver<Command>,
    admin: AdminReceiver,
    /// Ended allocations for the store's usage accounting (empty and off without a store).
    ended: crate::metrics::admin::EndedLog,
    reload: ReloadLink,
    /// UDP listeners, by the index in their token, with their bound addresses.
    udp: Vec<(SocketAddr, UdpSocket)>,
    listeners: Vec<Listener>,
    relays: Relays,
    /// This worker's TCP and TLS connections.
    conns: Conns,
    /// RFC 6062 TCP allocations' listeners, connection attempts and parked peers.
    tcp_relays: TcpRelays,
    limits: Limits,
    /// Datagrams of one socket's turn (one `recvmmsg`, at most [`udp::RING`]), and the sends
    /// they caused.
    rx: RecvBatch,
    tx: SendBatch,
    udp_options: udp::Options,
    metrics: Arc<WorkerMetrics>,
    /// What this worker's TCP/TLS write queues may hold beyond their floors
    /// (`write_queue.rs`).
    queue_budget: Rc<QueueBudget>,
    timers: Timers,
    /// Connections to serve again next turn without an event: their read budget ran out,
    /// or TLS holds decrypted bytes the socket no longer shows.
    again: Vec<Token>,
    /// Connections with output queued this turn, written before the loop blocks.
    dirty: Vec<Token>,
    dirty_spare: Vec<Token>,
    /// A scratch list, kept to spare allocations.
    scratch: Vec<Token>,
    coalescer: Coalescer,
    /// When the core's wall clock was last set.
    clock_at: Instant,
    /// When splices are next checked for an allocation that ended on another worker.
    orphans_at: Instant,
    stopping: bool,
    /// The kernel fast path's maps (XDP attached), or `None`.
    fast_path: Option<crate::shell::xdp::WorkerFastPath>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Worker {
    fn new(s: Start, commands: mpsc::Receiver<Command>) -> io::Result<Worker> {
        let poller = Poller::new()?;
        poller.add(
            &*s.notifier,
            Token::new(Kind::Wake, 0, 0).pack(),
            Interest::READ,
        )?;
        let mut udp = Vec::new();
        for sock in s.udp {
            let i = udp.len() as u32;
            poller.add(&sock, Token::new(Kind::Udp, i, 0).pack(), Interest::READ)?;
            udp.push((sock.local_addr()?, sock));
        }
        let mut listeners = Vec::new();
        let tcp = s.tcp.into_iter().map(|l| (l, None));
        let tls = s.tls.into_iter().map(|(l, c)| (l, Some(c)));
        for (socket, certs) in tcp.chain(tls) {
            let i = listeners.len() as u32;
            poller.add(
                &socket,
                Token::new(Kind::Listener, i, 0).pack(),
                Interest::READ,
            )?;
            listeners.push(Listener { socket, certs });
        }
        let waker = std::task::Waker::from(s.notifier.clone());
        Ok(Worker {
            index: s.index,
            core: s.core,
            poller,
            notifier: s.notifier,
            waker,
            commands,
            admin: s.admin,
            ended: crate::metrics::admin::EndedLog::new(s.ended_log),
            reload: s.reload,
            udp,
            listeners,
            relays: Relays::default(),
            conns: Conns::default(),
            tcp_relays: TcpRelays::new(s.limits.parked.clone()),
            limits: s.limits,
            rx: RecvBatch::new(),
            tx: SendBatch::new(s.udp_options.gso),
            udp_options: s.udp_options,
            metrics: s.metrics,
            queue_budget: QueueBudget::new(WORKER_QUEUE_BUDGET),
            timers: Timers::default(),
            again: Vec::new(),
            dirty: Vec::new(),
            dirty_spare: Vec::new(),
            scratch: Vec::new(),
            coalescer: Coalescer::new(),
            clock_at: Instant::now(),
            orphans_at: Instant::now() + MAX_SLEEP,
            stopping: false,
            fast_path: s.fast_path,
        })
    }

    /// Runs until [`Command::Stop`], then ends every allocation.
    fn run(mut self) {
        // Registers the waker with the admin channel before the first wait.
        self.on_wake();
        self.tick(Instant::now());
        while !self.stopping {
            self.turn();
        }
        let now = Instant::now();
        self.core.close_all(now);
        self.drain_outputs();
        self.close_all_conns();
    }

    /// One turn of the loop (see the module doc).
    fn turn(&mut self) {
        self.flush_dirty();
        let now = Instant::now();
        let mut next = self.clock_at + MAX_SLEEP;
        if let Some(t) = self.core.poll_timeout() {
            next = next.min(t);
        }
        if let Some(t) = self.timers.next() {
            next = next.min(t);
        }
        let timeout = if self.again.is_empty() {
            next.saturating_duration_since(now)
        } else {
            Duration::ZERO
        };
        if !timeout.is_zero() {
            if let Some(window) = self.udp_options.coalesce {
                self.coalescer.before_wait(window);
            }
        }
        if let Err(e) = self.poller.wait(Some(timeout)) {
            tracing::error!(worker = self.index, error = %e, "epoll_wait failed");
            std::thread::sleep(Duration::from_millis(10));
        }
        for i in 0..self.poller.len() {
            if let Some(r) = self.poller.ready(i) {
                self.dispatch(r);
            }
        }
        // Served again without an event; what runs out of budget again goes on the fresh
        // list (the two lists swap, so neither allocates once grown).
        let mut again = std::mem::take(&mut self.scratch);
        std::mem::swap(&mut again, &mut self.again);
        for t in again.drain(..) {
            self.on_conn(t, true, false);
        }
        self.scratch = again;
        let now = Instant::now();
        if self.core.poll_timeout().is_some_and(|t| t <= now) || now >= self.clock_at + MAX_SLEEP {
            self.tick(now);
        }
        while let Some(t) = self.timers.pop_due(now) {
            self.on_timer(t, now);
        }
    }

    fn dispatch(&mut self, r: Ready) {
        let Some(t) = Token::unpack(r.token) else {
            return;
        };
        match t.kind {
            Kind::Wake => self.on_wake(),
            Kind::Udp => self.on_listener_readable(t.index as usize),
            Kind::Listener => self.accept(t),
            Kind::RelayV4 => self.on_relay_readable(t, false),
            Kind::RelayV6 => self.on_relay_readable(t, true),
            Kind::Conn => self.on_conn(t, r.read, r.write),
            Kind::SplicePeer => self.on_conn(
                Token::new(Kind::Conn, t.index, t.generation),
                r.read,
                r.write,
            ),
            Kind::RelayListener => self.accept_peers(t),
            Kind::Connecting => self.on_connect_done(t.index),
        }
    }

    /// Fires the core's deadlines and keeps its wall clock current; once a second it also
    /// ends splices whose allocation ended on another worker.
    fn tick(&mut self, now: Instant) {
        self.core.set_wall_clock(now, unix_now());
        self.core.handle_timeout(now);
        self.drain_outputs();
        if now >= self.orphans_at {
            self.orphans_at = now + MAX_SLEEP;
            self.end_orphaned_splices();
        }
        self.clock_at = now;
    }

    /// Another thread woke the loop: commands, admin requests, a reload.
    fn on_wake(&mut self) {
        self.notifier.clear();
        while let Ok(c) = self.commands.try_recv() {
            match c {
                Command::Stop => self.stopping = true,
                Command::Panic => panic!("worker {}: panic requested by the test hook", self.index),
            }
        }
        let waker = self.waker.clone();
        let mut cx = Context::from_waker(&waker);
        // Bounded by what was sent: each request is answered at once.
        while let Poll::Ready(Some(req)) = self.admin.poll_recv(&mut cx) {
            let fast_path = &self.fast_path;
            if crate::metrics::admin::handle(
                &mut self.core,
                &mut self.ended,
                self.index,
                req,
                unix_now(),
                |id, stats| {
                    if let Some(fp) = fast_path {
                        fp.add_so_far(id, stats);
                    }
                },
            ) {
                self.drain_outputs();
            }
        }
        if let Some(generation) = self.reload.pending() {
            self.core.handle_peer_filter_changed(Instant::now());
            self.drain_outputs();
            self.reload.applied(generation);
        }
    }

    /// Reads one batch of client datagrams and relays them.
    fn on_listener_readable(&mut self, i: usize) {
        let Worker {
            core,
            udp,
            relays,
            rx,
            tx,
            metrics,
            coalescer,
            ..
        } = self;
        let Some((local, socket)) = udp.get(i) else {
            return;
        };
        let Ok(n) = rx.recv(socket.as_raw_fd()) else {
            return;
        };
        coalescer.received(n);
        let now = Instant::now();
        for i in 0..rx.len() {
            let Some((from, slot, payload)) = rx.get_mut(i) else {
                continue;
            };
            let from = FiveTuple::udp(from, *local);
            if let Some(fwd) = core.handle_client_datagram(now, from, &slot[payload.clone()]) {
                let range = payload.start + fwd.payload.start..payload.start + fwd.payload.end;
                queue_forward(relays, tx, metrics, fwd.id, fwd.peer, i, range);
            }
        }
        flush(tx, rx, metrics);
        self.drain_outputs();
    }

    /// Reads one batch of peer datagrams from an allocation's relay socket and relays them.
    fn on_relay_readable(&mut self, t: Token, ipv6: bool) {
        let Worker {
            core,
            udp,
            conns,
            relays,
            rx,
            tx,
            metrics,
            coalescer,
            dirty,
            ..
        } = self;
        let Some((id, socket)) = relays.by_token(t, ipv6) else {
            return;
        };
        let Ok(n) = rx.recv(socket.as_raw_fd()) else {
            return;
        };
        coalescer.received(n);
        let now = Instant::now();
        for i in 0..rx.len() {
            let Some((peer, slot, payload)) = rx.get_mut(i) else {
                continue;
            };
            if let Some(out) = core.handle_peer_datagram(now, id, peer, slot, payload) {
                if out.to.transport.is_stream() {
                    to_stream(conns, dirty, metrics, out.to, &slot[out.range]);
                } else if let Some(l) = listener_for(udp, out.to.server) {
                    if !tx.push(l.as_raw_fd(), out.to.client, i, out.range) {
                        metrics.send_error();
                    }
                }
            }
        }
        flush(tx, rx, metrics);
        self.metrics.publish_relay(self.core.counters());
    }

    /// Carries out everything the core asked for.
    fn drain_outputs(&mut self) {
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Transmit { to, payload } => self.send_to_client(to, &payload),
                Output::OpenRelay {
                    id,
                    bind,
                    dont_fragment,
                } => {
                    let result = self.open_relay(id, bind, dont_fragment);
                    self.core.handle_relay_opened(Instant::now(), id, result);
                }
                Output::CloseRelay { id, family } => self.relays.remove(id, family),
                Output::TcpRelay(o) => self.tcp_relay_output(o),
                // Only emitted with `CoreConfig::fast_path`, set when the program is attached.
                Output::FastPath(f) => {
                    if let Some(fp) = &mut self.fast_path {
                        fp.apply(f, &self.metrics);
                    }
                }
                Output::Event(mut e) => {
                    // What the kernel relayed for an allocation is in its stats from here on:
                    // its log line, the admin view and the metrics.
                    if let (Some(fp), Event::AllocationEnded { id, stats, .. }) =
                        (&mut self.fast_path, &mut e)
                    {
                        fp.allocation_ended(*id, stats);
                    }
                    self.metrics.on_event(&e);
                    self.track_connection(&e);
                    self.log_ended(&e);
                    log_event(self.index, &e);
                }
            }
        }
        self.metrics.publish(self.core.counters());
    }

    /// Sends one datagram or frame to a client: from the UDP listener it wrote to, or down
    /// its TCP connection (gone already if the connection closed).
    fn send_to_client(&mut self, to: FiveTuple, payload: &[u8]) {
        if to.transport.is_stream() {
            to_stream(&mut self.conns, &mut self.dirty, &self.metrics, to, payload);
        } else if let Some(l) = listener_for(&self.udp, to.server) {
            if send_now(l, payload, to.client).is_err() {
                self.metrics.send_error();
            }
        }
    }

    /// Keeps an ended allocation's final counters for the store's usage accounting (only
    /// with a store: the log is off otherwise). Once per allocation, never per packet.
    fn log_ended(&mut self, e: &Event) {
        if let Event::AllocationEnded {
            id,
            five_tuple,
            username,
            relay,
            additional,
            duration,
            stats,
            ..
        } = e
        {
            let worker = self.index;
            self.ended.push(|| {
                let ended_unix = unix_now();
                crate::metrics::admin::EndedAllocation {
                    id: crate::metrics::admin::format_id(worker, *id),
                    user: username.to_string(),
                    client: five_tuple.client,
                    relays: std::iter::once(*relay).chain(*additional).collect(),
                    created_unix: ended_unix.saturating_sub(duration.as_secs()),
                    ended_unix,
                    stats: *stats,
                }
            });
        }
    }

    /// Tells a TCP connection its allocation started or ended, for its idle timeout.
    fn track_connection(&mut self, e: &Event) {
        let (five_tuple, idle) = match e {
            Event::AllocationCreated { five_tuple, .. } => (five_tuple, false),
            Event::AllocationEnded { five_tuple, .. } => (five_tuple, true),
        };
        if let Some(t) = self.conns.token_of(five_tuple) {
            if let Some(c) = self.conns.get_mut(t) {
                c.idle_since = idle.then(Instant::now);
            }
            self.sync_conn(t);
        }
    }

    fn open_relay(
        &mut self,
        id: AllocationId,
        bind: SocketAddr,
        dont_fragment: bool,
    ) -> Result<(), RelayOpenError> {
        let socket = socket::bind_relay(bind, dont_fragment, &self.udp_options).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                RelayOpenError::AddrInUse
            } else {
                tracing::warn!(%bind, error = %e, "cannot open relay socket");
                RelayOpenError::Other
            }
        })?;
        let token = Token::relay(id, bind.is_ipv6());
        self.poller
            .add(&socket, token.pack(), Interest::READ)
            .map_err(|e| {
                tracing::warn!(%bind, error = %e, "cannot register relay socket");
                RelayOpenError::Other
            })?;
        self.relays.insert(id, bind, socket);
        Ok(())
    }

    /// One of the worker's own deadlines is (maybe) due.
    fn on_timer(&mut self, token: u64, now: Instant) {
        let Some(t) = Token::unpack(token) else {
            return;
        };
        match t.kind {
            Kind::Conn => self.on_conn_timer(t, now),
            Kind::Listener | Kind::RelayListener => self.resume_accepting(t),
            _ => {}
        }
    }
}

/// Queues `ring` slot `slot`'s `range` to go from allocation `id`'s relay socket to `peer`.
fn queue_forward(
    relays: &Relays,
    tx: &mut SendBatch,
    metrics: &WorkerMetrics,
    id: AllocationId,
    peer: SocketAddr,
    slot: usize,
    range: Range<usize>,
) {
    if let Some(socket) = relays.socket(id, peer) {
        if !tx.push(socket.as_raw_fd(), peer, slot, range) {
            metrics.send_error();
        }
    }
}

/// Sends what one batch queued. A refused datagram is lost and counted; it never ends an
/// allocation, so one bad ICE candidate cannot break the others.
fn flush(tx: &mut SendBatch, rx: &RecvBatch, metrics: &WorkerMetrics) {
    for _ in 0..tx.flush(rx) {
        metrics.send_error();
    }
}

/// Sends `payload` from allocation `id`'s relay socket to `peer` (a frame from a stream
/// client).
fn forward(
    relays: &Relays,
    metrics: &WorkerMetrics,
    payload: &[u8],
    id: AllocationId,
    peer: SocketAddr,
) {
    if let Some(socket) = relays.socket(id, peer) {
        // A failed send (unreachable peer, full buffer) loses one datagram; it never
        // ends the allocation, so one bad ICE candidate cannot break the others.
        if send_now(socket, payload, peer).is_err() {
            metrics.send_error();
        }
    }
}

/// Queues one frame for a stream client; it is written before the loop blocks.
fn to_stream(
    conns: &mut Conns,
    dirty: &mut Vec<Token>,
    metrics: &WorkerMetrics,
    to: FiveTuple,
    payload: &[u8],
) {
    let Some(t) = conns.token_of(&to) else {
        return;
    };
    let Some(c) = conns.get_mut(t) else {
        return;
    };
    let mut first = false;
    if !c.queue.push(payload, &mut first) {
        metrics.write_queue_full();
    } else if first {
        dirty.push(t);
    }
}

/// Sends a datagram with one `sendto` on the non-blocking socket.
fn send_now(socket: &UdpSocket, payload: &[u8], to: SocketAddr) -> io::Result<usize> {
    socket.send_to(payload, to)
}

/// The listening socket a client wrote to: answers must come from the address it used.
fn listener_for(listeners: &[(SocketAddr, UdpSocket)], server: SocketAddr) -> Option<&UdpSocket> {
    listeners.iter().find(|(a, _)| *a == server).map(|(_, s)| s)
}

fn log_event(worker: usize, e: &Event) {
    match e {
        Event::AllocationCreated {
            five_tuple,
            username,
            relay,
            additional,
            lifetime,
            ..
        } => tracing::info!(
            worker,
            user = %username,
            client = %five_tuple,
            relay = %relay,
            additional_relay = additional.map(tracing::field::display),
            lifetime_s = lifetime.as_secs(),
            "allocation created"
        ),
        Event::AllocationEnded {
            five_tuple,
            username,
            relay,
            reason,
            duration,
            stats,
            ..
        } => tracing::info!(
            worker,
            user = %username,
            client = %five_tuple,
            relay = %relay,
            reason = reason.as_str(),
            duration_s = duration.as_secs(),
            to_peer_packets = stats.to_peer_packets,
            to_peer_bytes = stats.to_peer_bytes,
            to_client_packets = stats.to_client_packets,
            to_client_bytes = stats.to_client_bytes,
            "allocation ended"
        ),
    }
}
