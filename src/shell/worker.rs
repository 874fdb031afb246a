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
use crate::core::{
    AllocationId, Event, FiveTuple, Output, RelayOpenError, Server as Core, PEER_HEADROOM,
    PEER_TAILROOM,
};
use crate::metrics::WorkerMetrics;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Datagrams handled per wake-up before yielding, so one busy socket cannot starve the
/// worker's other sockets and timers.
const BATCH: usize = 64;
/// Largest UDP payload, plus room to frame it in place.
const BUF_LEN: usize = PEER_HEADROOM + 65_536 + PEER_TAILROOM;
/// The timer task wakes at least this often, to refresh the wall clock.
const MAX_SLEEP: Duration = Duration::from_secs(1);

struct Relay {
    id: AllocationId,
    socket: Rc<UdpSocket>,
    task: JoinHandle<()>,
}

/// Relay sockets indexed like the core's allocation slab, so finding the socket for a
/// forwarded datagram is an index and a generation check rather than a hash.
#[derive(Default)]
struct Relays {
    slots: Vec<Option<Relay>>,
}

impl Relays {
    fn get(&self, id: AllocationId) -> Option<&Relay> {
        self.slots
            .get(id.index as usize)?
            .as_ref()
            .filter(|r| r.id == id)
    }

    fn insert(&mut self, relay: Relay) {
        let i = relay.id.index as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        if let Some(old) = self.slots[i].replace(relay) {
            old.task.abort();
        }
    }

    fn remove(&mut self, id: AllocationId) -> Option<Relay> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.as_ref().is_some_and(|r| r.id == id) {
            slot.take()
        } else {
            None
        }
    }
}

pub(super) struct Worker {
    pub(super) core: Core,
    listeners: Vec<(SocketAddr, Rc<UdpSocket>)>,
    /// This worker's TCP connections, by 5-tuple, for writes to their clients.
    pub(super) conns: HashMap<FiveTuple, Rc<Conn>>,
    relays: Relays,
    /// RFC 6062 TCP allocations' listeners and peer connections (`tcp_relay.rs`).
    pub(super) tcp_relays: super::tcp_relay::TcpRelays,
    buf: Box<[u8]>,
    index: usize,
    metrics: std::sync::Arc<WorkerMetrics>,
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
    link: crate::metrics::WorkerLink,
) {
    let crate::metrics::WorkerLink { metrics, admin } = link;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
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
            tcp_relays: super::tcp_relay::TcpRelays::new(limits.parked.clone()),
            buf: vec![0u8; BUF_LEN].into_boxed_slice(),
            index,
            metrics,
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
    /// Reads up to [`BATCH`] client datagrams; true when the batch filled (more may wait).
    fn on_listener_readable(&mut self, socket: &UdpSocket, local: SocketAddr) -> bool {
        let now = Instant::now();
        let mut full = true;
        for _ in 0..BATCH {
            match socket.try_recv_from(&mut self.buf) {
                Ok((n, from)) => self.on_client_datagram(now, FiveTuple::udp(from, local), n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    full = false;
                    break;
                }
                // ICMP-induced errors and the like: the socket itself is fine.
                Err(_) => {}
            }
        }
        self.drain_outputs();
        full
    }

    /// Reads up to [`BATCH`] peer datagrams from one relay socket.
    fn on_relay_readable(&mut self, socket: &UdpSocket, id: AllocationId) -> bool {
        let now = Instant::now();
        let mut full = true;
        for _ in 0..BATCH {
            let end = BUF_LEN - PEER_TAILROOM;
            match socket.try_recv_from(&mut self.buf[PEER_HEADROOM..end]) {
                Ok((n, peer)) => self.on_peer_datagram(now, id, peer, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    full = false;
                    break;
                }
                Err(_) => {}
            }
        }
        self.metrics.publish_relay(self.core.counters());
        full
    }

    fn on_client_datagram(&mut self, now: Instant, from: FiveTuple, n: usize) {
        let Worker {
            core,
            relays,
            buf,
            metrics,
            ..
        } = self;
        if let Some(fwd) = core.handle_client_datagram(now, from, &buf[..n]) {
            forward(relays, metrics, &buf[fwd.payload], fwd.id, fwd.peer);
        }
    }

    /// Sends `payload` from allocation `id`'s relay socket to `peer`.
    pub(super) fn forward(&self, payload: &[u8], id: AllocationId, peer: SocketAddr) {
        forward(&self.relays, &self.metrics, payload, id, peer);
    }

    fn on_peer_datagram(&mut self, now: Instant, id: AllocationId, peer: SocketAddr, n: usize) {
        let Worker {
            core,
            listeners,
            conns,
            buf,
            metrics,
            ..
        } = self;
        let payload = PEER_HEADROOM..PEER_HEADROOM + n;
        if let Some(out) = core.handle_peer_datagram(now, id, peer, buf, payload) {
            to_client(listeners, conns, metrics, out.to, &buf[out.range]);
        }
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
                Output::CloseRelay { id } => {
                    if let Some(r) = self.relays.remove(id) {
                        r.task.abort();
                    }
                }
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
        let std_socket = socket::bind_relay(bind, dont_fragment).map_err(|e| {
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
        self.relays.insert(Relay { id, socket, task });
        Ok(())
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

/// Sends `payload` from allocation `id`'s relay socket to `peer`.
fn forward(
    relays: &Relays,
    metrics: &WorkerMetrics,
    payload: &[u8],
    id: AllocationId,
    peer: SocketAddr,
) {
    if let Some(r) = relays.get(id) {
        // A failed send (unreachable peer, full buffer) loses one datagram; it never
        // ends the allocation, so one bad ICE candidate cannot break the others.
        if send_now(&r.socket, payload, peer).is_err() {
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
            lifetime,
            ..
        } => tracing::info!(
            worker,
            user = %username,
            client = %five_tuple,
            relay = %relay,
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
