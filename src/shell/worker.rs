//! One worker: a thread running a single-threaded tokio runtime that owns a core instance,
//! one `SO_REUSEPORT` UDP socket and one TCP listener per listening address (and one per
//! `tls_listen` address), the TCP and TLS connections it accepted (`tcp.rs`, `tls.rs`), and
//! the relay sockets of its allocations. Nothing here is shared with other workers, so the
//! relay path takes no lock.
//!
//! Tasks on the worker share its state through `Rc<RefCell<…>>`; a borrow is never held
//! across an `.await`, so borrows cannot collide.

use super::socket;
use super::tcp::{self, Conn, Limits};
use super::tls::{self, Certs};
use super::udp::{self, RecvBatch, SendBatch};
use super::write_queue::{QueueBudget, WORKER_QUEUE_BUDGET};
use crate::core::{AllocationId, Event, FiveTuple, Output, RelayOpenError, Server as Core};
use crate::metrics::WorkerMetrics;
use crate::stun::AddressFamily;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The timer task wakes at least this often, to refresh the wall clock.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// One relay socket and the task reading it.
struct RelaySocket {
    socket: Rc<UdpSocket>,
    task: JoinHandle<()>,
}

/// An allocation's relay sockets, by family (0 IPv4, 1 IPv6): one for most allocations, two
/// for a dual one (ADDITIONAL-ADDRESS-FAMILY), each carrying the peers of its own family.
struct Relay {
    id: AllocationId,
    sockets: [Option<RelaySocket>; 2],
}

impl Drop for Relay {
    fn drop(&mut self) {
        for s in self.sockets.iter().flatten() {
            s.task.abort();
        }
    }
}

/// Relay sockets indexed like the core's allocation slab, so finding the socket for a
/// forwarded datagram is an index, a generation check and the peer's family rather than a
/// hash.
#[derive(Default)]
struct Relays {
    slots: Vec<Option<Relay>>,
}

impl Relays {
    /// The socket of allocation `id` that talks to `peer`'s family.
    fn socket(&self, id: AllocationId, peer: SocketAddr) -> Option<&Rc<UdpSocket>> {
        let relay = self
            .slots
            .get(id.index as usize)?
            .as_ref()
            .filter(|r| r.id == id)?;
        relay.sockets[usize::from(peer.is_ipv6())]
            .as_ref()
            .map(|s| &s.socket)
    }

    /// Adds the socket bound to `bind`; a slot still holding an older generation's sockets
    /// is cleared first (dropping a `Relay` aborts its tasks).
    fn insert(&mut self, id: AllocationId, bind: SocketAddr, socket: RelaySocket) {
        let i = id.index as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        let slot = &mut self.slots[i];
        if slot.as_ref().is_none_or(|r| r.id != id) {
            *slot = Some(Relay {
                id,
                sockets: [None, None],
            });
        }
        if let Some(r) = slot {
            if let Some(old) = r.sockets[usize::from(bind.is_ipv6())].replace(socket) {
                old.task.abort();
            }
        }
    }

    /// Closes allocation `id`'s sockets: all, or the one of `family`.
    fn remove(&mut self, id: AllocationId, family: Option<AddressFamily>) {
        let Some(slot) = self.slots.get_mut(id.index as usize) else {
            return;
        };
        if slot.as_ref().is_none_or(|r| r.id != id) {
            return;
        }
        match family {
            None => *slot = None,
            Some(f) => {
                if let Some(r) = slot {
                    if let Some(s) = r.sockets[usize::from(f == AddressFamily::V6)].take() {
                        s.task.abort();
                    }
                }
            }
        }
    }
}

pub(super) struct Worker {
    pub(super) core: Core,
    listeners: Vec<(SocketAddr, Rc<UdpSocket>)>,
    /// This worker's TCP connections, by 5-tuple, for writes to their clients.
    pub(super) conns: HashMap<FiveTuple, Rc<Conn>>,
    relays: Relays,
    /// Datagrams of one wake-up (one `recvmmsg`, at most [`udp::RING`], so one busy socket
    /// cannot starve the worker's other sockets and timers), and the sends they caused.
    rx: RecvBatch,
    tx: SendBatch,
    udp: udp::Options,
    /// RFC 6062 TCP allocations' listeners and peer connections (`tcp_relay.rs`).
    pub(super) tcp_relays: super::tcp_relay::TcpRelays,
    index: usize,
    metrics: std::sync::Arc<WorkerMetrics>,
    /// What this worker's TCP/TLS write queues may hold beyond their floors
    /// (`write_queue.rs`).
    pub(super) queue_budget: Rc<QueueBudget>,
}

pub(super) type Shared = Rc<RefCell<Worker>>;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs a worker until `shutdown` flips to true, then ends every allocation.
// One argument per kind of socket and per link to the rest of the process; a struct for them
// would only move the list.
#[allow(clippy::too_many_arguments)]
pub fn run(
    index: usize,
    core: Core,
    listeners: Vec<std::net::UdpSocket>,
    tcp_listeners: Vec<std::net::TcpListener>,
    tls_listeners: Vec<(std::net::TcpListener, Arc<Certs>)>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    reloads: super::reload::ReloadLink,
    link: crate::metrics::WorkerLink,
    udp: udp::Options,
) {
    let crate::metrics::WorkerLink { metrics, admin } = link;
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    if let Some(window) = udp.coalesce {
        builder.on_thread_park(move || super::coalesce::before_park(window));
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "cannot start worker runtime");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let mut socks = Vec::new();
        for l in listeners {
            match UdpSocket::from_std(l) {
                Ok(s) => socks.push(Rc::new(s)),
                Err(e) => tracing::error!(worker = index, error = %e, "cannot register listener"),
            }
        }
        let worker = Rc::new(RefCell::new(Worker {
            core,
            listeners: socks
                .iter()
                .filter_map(|s| Some((s.local_addr().ok()?, s.clone())))
                .collect(),
            conns: HashMap::new(),
            relays: Relays::default(),
            rx: RecvBatch::new(),
            tx: SendBatch::new(udp.gso),
            udp,
            tcp_relays: super::tcp_relay::TcpRelays::new(limits.parked.clone()),
            index,
            metrics,
            queue_budget: QueueBudget::new(WORKER_QUEUE_BUDGET),
        }));
        SELF.with(|s| *s.borrow_mut() = Some(worker.clone()));
        for s in socks {
            tokio::task::spawn_local(listen(worker.clone(), s));
        }
        for l in tcp_listeners {
            match tokio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    tokio::task::spawn_local(tcp::accept(worker.clone(), l, limits.clone()));
                }
                Err(e) => {
                    tracing::error!(worker = index, error = %e, "cannot register tcp listener")
                }
            }
        }
        for (l, certs) in tls_listeners {
            match tokio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    let w = worker.clone();
                    tokio::task::spawn_local(tls::accept(w, l, limits.clone(), certs));
                }
                Err(e) => {
                    tracing::error!(worker = index, error = %e, "cannot register tls listener")
                }
            }
        }
        tokio::task::spawn_local(timers(worker.clone()));
        tokio::task::spawn_local(admin_requests(worker.clone(), admin));
        tokio::task::spawn_local(peer_filter_reloads(worker.clone(), reloads));
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        let mut w = worker.borrow_mut();
        w.core.close_all(Instant::now());
        w.drain_outputs();
    });
}

/// Receives client datagrams on one listening socket.
async fn listen(worker: Shared, socket: Rc<UdpSocket>) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let full = worker.borrow_mut().on_listener_readable(&socket, local);
        if full {
            tokio::task::yield_now().await;
        }
    }
}

/// Receives peer datagrams on one allocation's relay socket.
async fn relay(worker: Shared, id: AllocationId, socket: Rc<UdpSocket>) {
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let full = worker.borrow_mut().on_relay_readable(&socket, id);
        if full {
            tokio::task::yield_now().await;
        }
    }
}

/// Answers the admin API (list allocations, end one) between batches.
async fn admin_requests(worker: Shared, mut rx: crate::metrics::admin::AdminReceiver) {
    while let Some(req) = rx.recv().await {
        let mut w = worker.borrow_mut();
        let index = w.index;
        if crate::metrics::admin::handle(&mut w.core, index, req, unix_now()) {
            w.drain_outputs();
        }
    }
}

/// Applies each reloaded peer filter to the core's existing permissions, channels and TCP
/// connections as soon as it is stored.
async fn peer_filter_reloads(worker: Shared, mut reloads: super::reload::ReloadLink) {
    while let Some(generation) = reloads.changed().await {
        {
            let mut w = worker.borrow_mut();
            w.core.handle_peer_filter_changed(Instant::now());
            w.drain_outputs();
        }
        reloads.applied(generation);
    }
}

/// Fires the core's deadlines and keeps its wall clock current.
async fn timers(worker: Shared) {
    loop {
        let next = {
            let mut w = worker.borrow_mut();
            let now = Instant::now();
            w.core.set_wall_clock(now, unix_now());
            w.core.handle_timeout(now);
            w.drain_outputs();
            let cap = now + MAX_SLEEP;
            w.core.poll_timeout().map_or(cap, |t| t.min(cap))
        };
        tokio::time::sleep_until(next.into()).await;
    }
}

impl Worker {
    /// Reads one batch of client datagrams and relays them; true when the batch filled
    /// (more may wait).
    fn on_listener_readable(&mut self, socket: &UdpSocket, local: SocketAddr) -> bool {
        let full = recv_batch(socket, &mut self.rx);
        let now = Instant::now();
        let Worker {
            core,
            relays,
            rx,
            tx,
            metrics,
            ..
        } = self;
        for i in 0..rx.len() {
            let Some((from, slot, payload)) = rx.get_mut(i) else {
                continue;
            };
            let from = FiveTuple::udp(from, local);
            if let Some(fwd) = core.handle_client_datagram(now, from, &slot[payload.clone()]) {
                let range = payload.start + fwd.payload.start..payload.start + fwd.payload.end;
                queue_forward(relays, tx, metrics, fwd.id, fwd.peer, i, range);
            }
        }
        flush(tx, rx, metrics);
        self.drain_outputs();
        full
    }

    /// Reads one batch of peer datagrams from allocation `id`'s relay socket and relays them.
    fn on_relay_readable(&mut self, socket: &UdpSocket, id: AllocationId) -> bool {
        let full = recv_batch(socket, &mut self.rx);
        let now = Instant::now();
        let Worker {
            core,
            listeners,
            conns,
            rx,
            tx,
            metrics,
            ..
        } = self;
        for i in 0..rx.len() {
            let Some((peer, slot, payload)) = rx.get_mut(i) else {
                continue;
            };
            if let Some(out) = core.handle_peer_datagram(now, id, peer, slot, payload) {
                if out.to.transport.is_stream() {
                    to_client(listeners, conns, metrics, out.to, &slot[out.range]);
                } else if let Some(l) = listener_for(listeners, out.to.server) {
                    if !tx.push(l.as_raw_fd(), out.to.client, i, out.range) {
                        metrics.send_error();
                    }
                }
            }
        }
        flush(tx, rx, metrics);
        self.metrics.publish_relay(self.core.counters());
        full
    }

    /// Sends `payload` from allocation `id`'s relay socket to `peer`.
    pub(super) fn forward(&self, payload: &[u8], id: AllocationId, peer: SocketAddr) {
        forward(&self.relays, &self.metrics, payload, id, peer);
    }

    /// Executes everything the core asked for.
    pub(super) fn drain_outputs(&mut self) {
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Transmit { to, payload } => {
                    to_client(&self.listeners, &self.conns, &self.metrics, to, &payload);
                }
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
                Output::Event(e) => {
                    self.metrics.on_event(&e);
                    self.track_connection(&e);
                    log_event(self.index, &e);
                }
            }
        }
        self.metrics.publish(self.core.counters());
    }

    /// Tells a TCP connection its allocation started or ended, for its idle timeout.
    fn track_connection(&self, e: &Event) {
        let (five_tuple, idle) = match e {
            Event::AllocationCreated { five_tuple, .. } => (five_tuple, false),
            Event::AllocationEnded { five_tuple, .. } => (five_tuple, true),
        };
        if let Some(c) = self.conns.get(five_tuple) {
            c.set_idle(Instant::now(), idle);
        }
    }

    fn open_relay(
        &mut self,
        id: AllocationId,
        bind: SocketAddr,
        dont_fragment: bool,
    ) -> Result<(), RelayOpenError> {
        let std_socket = socket::bind_relay(bind, dont_fragment, &self.udp).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                RelayOpenError::AddrInUse
            } else {
                tracing::warn!(%bind, error = %e, "cannot open relay socket");
                RelayOpenError::Other
            }
        })?;
        let socket = Rc::new(UdpSocket::from_std(std_socket).map_err(|_| RelayOpenError::Other)?);
        let worker = self.self_handle();
        let task = tokio::task::spawn_local(relay(worker, id, socket.clone()));
        self.relays.insert(id, bind, RelaySocket { socket, task });
        Ok(())
    }

    /// Counts a TCP/TLS connection closed at accept.
    pub(super) fn connection_refused(&self, why: super::limits::Refusal) {
        self.metrics.connection_refused(why.index());
    }

    pub(super) fn self_handle(&self) -> Shared {
        SELF.with(|s| {
            // Invariant: set before any task runs (see `run`).
            s.borrow()
                .clone()
                .expect("worker handle is set at start-up")
        })
    }
}

thread_local! {
    /// The worker of this thread, so code holding `&mut Worker` can hand tasks a handle.
    static SELF: RefCell<Option<Shared>> = const { RefCell::new(None) };
}

/// Reads one batch from `socket` into `ring` with one `recvmmsg`; true when the batch filled
/// (more may wait, so the caller yields and comes back).
///
/// A short batch means the socket's queue was empty when the kernel stopped reading, so
/// tokio's readiness is cleared then and there (by answering `WouldBlock` from `try_io`),
/// sparing the extra call that would only have answered `EAGAIN`. Tokio keeps any readiness
/// that arrived after it handed this one out, so no wake-up is lost.
fn recv_batch(socket: &UdpSocket, ring: &mut RecvBatch) -> bool {
    let fd = socket.as_raw_fd();
    let r = socket.try_io(Interest::READABLE, || {
        let n = ring.recv(fd)?;
        super::coalesce::received(n);
        if n < udp::RING {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    });
    match r {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        // ICMP-induced errors and the like: the socket itself is fine; come back.
        Err(_) => true,
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

/// Sends `payload` from allocation `id`'s relay socket to `peer`.
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

/// Sends one datagram or frame to a client: from the UDP listener it wrote to, or down its
/// TCP connection (gone already if the connection closed).
fn to_client(
    listeners: &[(SocketAddr, Rc<UdpSocket>)],
    conns: &HashMap<FiveTuple, Rc<Conn>>,
    metrics: &WorkerMetrics,
    to: FiveTuple,
    payload: &[u8],
) {
    if to.transport.is_stream() {
        if let Some(c) = conns.get(&to) {
            if !c.send(payload) {
                metrics.write_queue_full();
            }
        }
    } else if let Some(l) = listener_for(listeners, to.server) {
        if send_now(l, payload, to.client).is_err() {
            metrics.send_error();
        }
    }
}

/// Sends a datagram with one `sendto` on the non-blocking socket.
///
/// Not tokio's `try_send_to`: that answers `WouldBlock` without trying whenever tokio has not
/// yet seen the socket become writable — always the case for a relay socket opened since the
/// runtime last polled its I/O driver, and after any real `EAGAIN` until the next poll — so
/// datagrams were dropped although the kernel would have taken them. A UDP socket's writability
/// only matters when its send buffer is full, and then the datagram is dropped either way.
fn send_now(socket: &UdpSocket, payload: &[u8], to: SocketAddr) -> io::Result<usize> {
    socket2::SockRef::from(socket).send_to(payload, &to.into())
}

/// The listening socket a client wrote to: answers must come from the address it used.
fn listener_for(
    listeners: &[(SocketAddr, Rc<UdpSocket>)],
    server: SocketAddr,
) -> Option<&Rc<UdpSocket>> {
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
