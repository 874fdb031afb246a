//! One worker's published counters.
//!
//! The core counts in plain integers that only its worker touches. After each batch of
//! datagrams the worker copies them here, into atomics that only it writes (`Relaxed` loads and
//! stores, no read-modify-write), and the scrape thread reads them. Each `WorkerMetrics` sits
//! in its own 128-byte-aligned allocation, so two workers never write the same cache line and
//! the relay path shares nothing with other cores; the scraper's reads cost the worker at most
//! a cache miss per scrape.
//!
//! What the shell sees but the core does not — allocations opening and closing (from the
//! core's lifecycle events) and failed sends — is counted here directly, by the same single
//! writer.

use crate::core::{
    AuthFailure, CounterKey, Counters, DropReason, Event, RequestMethod, ResponseResult, Transport,
};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub(crate) const TRANSPORTS: usize = Transport::ALL.len();
const METHODS: usize = <Option<RequestMethod>>::ALL.len();
const RESULTS: usize = ResponseResult::ALL.len();
const AUTH_FAILURES: usize = AuthFailure::ALL.len();
const DROPS: usize = DropReason::ALL.len();

/// The address family of an allocation's relayed addresses, as the allocation metrics split
/// them: a dual allocation (ADDITIONAL-ADDRESS-FAMILY: one IPv4 and one IPv6 relayed address)
/// is counted once under "dual" for its whole life, even if one family is deleted before the
/// other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayFamily {
    Ipv4,
    Ipv6,
    Dual,
}

impl RelayFamily {
    /// The family of an allocation with these relayed addresses.
    fn of(relay: &std::net::SocketAddr, additional: Option<&std::net::SocketAddr>) -> RelayFamily {
        match additional {
            Some(_) => RelayFamily::Dual,
            None if relay.is_ipv6() => RelayFamily::Ipv6,
            None => RelayFamily::Ipv4,
        }
    }
}

impl CounterKey for RelayFamily {
    const ALL: &'static [RelayFamily] = &[RelayFamily::Ipv4, RelayFamily::Ipv6, RelayFamily::Dual];

    fn index(self) -> usize {
        self as usize
    }

    fn label(self) -> &'static str {
        match self {
            RelayFamily::Ipv4 => "ipv4",
            RelayFamily::Ipv6 => "ipv6",
            RelayFamily::Dual => "dual",
        }
    }
}

pub const FAMILIES: usize = RelayFamily::ALL.len();

/// Why a TCP/TLS connection was closed as soon as it was accepted (the shell's limits decide).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// `max_connections`: the server holds as many as it may.
    MaxConnections,
    /// `max_connections_per_source`: this source holds as many as it may.
    PerSource,
}

impl CounterKey for ConnectionRefusal {
    const ALL: &'static [ConnectionRefusal] = &[
        ConnectionRefusal::MaxConnections,
        ConnectionRefusal::PerSource,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn label(self) -> &'static str {
        match self {
            ConnectionRefusal::MaxConnections => "max_connections",
            ConnectionRefusal::PerSource => "per_source",
        }
    }
}

pub const CONNECTION_REFUSALS: usize = ConnectionRefusal::ALL.len();

/// Upper bounds (seconds) of the allocation duration histogram: from a failed ICE check to a
/// day-long call.
pub const DURATION_BUCKETS: [f64; 12] = [
    1.0, 5.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
];

/// A counter written by one thread only: a load and a store, never a locked instruction.
#[derive(Debug, Default)]
struct Cell(AtomicU64);

impl Cell {
    #[inline]
    fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    #[inline]
    fn add(&self, v: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(v), Relaxed);
    }

    #[inline]
    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// The published copy of one worker's counters. Written by that worker only.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerMetrics {
    /// By [`DropReason`].
    dropped: [Cell; DROPS],
    requests: Cell,
    auth_failures: Cell,
    peers_denied: Cell,
    tcp_relay_throttled: Cell,
    /// Per transport: to-peer packets, to-peer bytes, to-client packets, to-client bytes.
    relayed: [[Cell; 4]; TRANSPORTS],
    responses: [[Cell; RESULTS]; METHODS],
    auth_failure_reasons: [Cell; AUTH_FAILURES],
    permissions: Cell,
    permissions_created: Cell,
    channels: Cell,
    channels_created: Cell,
    // Counted by the shell.
    send_errors: Cell,
    /// Frames for a stream client dropped because its bounded write queue was full.
    write_queue_full: Cell,
    /// Kernel fast-path installs not carried out, by [`super::xdp::SKIPPED`]'s order.
    xdp_skipped: [Cell; super::xdp::SKIPPED.len()],
    /// TCP/TLS connections closed at accept, by [`ConnectionRefusal`].
    connections_refused: [Cell; CONNECTION_REFUSALS],
    allocations_created: [[Cell; FAMILIES]; TRANSPORTS],
    allocations_ended: [[Cell; FAMILIES]; TRANSPORTS],
    /// Not cumulative: `durations[i]` counts durations in (bound[i-1], bound[i]]; the last
    /// entry counts those above every bound.
    durations: [Cell; DURATION_BUCKETS.len() + 1],
    duration_sum_ms: Cell,
}

/// A consistent-enough copy of one or more workers' metrics, summed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub core: Counters,
    pub send_errors: u64,
    pub write_queue_full: u64,
    pub xdp_skipped: [u64; super::xdp::SKIPPED.len()],
    pub connections_refused: [u64; CONNECTION_REFUSALS],
    pub allocations_created: [[u64; FAMILIES]; TRANSPORTS],
    pub allocations_ended: [[u64; FAMILIES]; TRANSPORTS],
    pub durations: [u64; DURATION_BUCKETS.len() + 1],
    pub duration_sum: Duration,
}

impl Snapshot {
    pub fn add(&mut self, o: &Snapshot) {
        self.core.add(&o.core);
        self.send_errors += o.send_errors;
        self.write_queue_full += o.write_queue_full;
        for (a, b) in self.xdp_skipped.iter_mut().zip(&o.xdp_skipped) {
            *a += b;
        }
        for (a, b) in self
            .connections_refused
            .iter_mut()
            .zip(&o.connections_refused)
        {
            *a += b;
        }
        for t in 0..TRANSPORTS {
            for f in 0..FAMILIES {
                self.allocations_created[t][f] += o.allocations_created[t][f];
                self.allocations_ended[t][f] += o.allocations_ended[t][f];
            }
        }
        for (a, b) in self.durations.iter_mut().zip(&o.durations) {
            *a += b;
        }
        self.duration_sum += o.duration_sum;
    }

    /// Allocations open now, by transport and family. Created and ended are read at slightly
    /// different instants, so a scrape racing a close could see one fewer end than creation
    /// of the same allocation, never the reverse within one worker (created is read last).
    pub fn allocations_active(&self, t: usize, f: usize) -> u64 {
        self.allocations_created[t][f].saturating_sub(self.allocations_ended[t][f])
    }
}

impl WorkerMetrics {
    /// Publishes the counters the relay path moves; cheap enough for every batch.
    #[inline]
    pub fn publish_relay(&self, c: &Counters) {
        for (cell, v) in self.dropped.iter().zip(c.dropped.values()) {
            cell.set(*v);
        }
        for (cells, r) in self.relayed.iter().zip(c.relayed.values()) {
            cells[0].set(r.to_peer_packets);
            cells[1].set(r.to_peer_bytes);
            cells[2].set(r.to_client_packets);
            cells[3].set(r.to_client_bytes);
        }
    }

    /// Publishes every counter of the core (after requests and timers).
    pub fn publish(&self, c: &Counters) {
        self.publish_relay(c);
        self.requests.set(c.requests);
        self.auth_failures.set(c.auth_failures);
        self.peers_denied.set(c.peers_denied);
        self.tcp_relay_throttled.set(c.tcp_relay_throttled);
        for (cells, row) in self.responses.iter().zip(c.responses.values()) {
            for (cell, v) in cells.iter().zip(row.values()) {
                cell.set(*v);
            }
        }
        for (cell, v) in self
            .auth_failure_reasons
            .iter()
            .zip(c.auth_failure_reasons.values())
        {
            cell.set(*v);
        }
        self.permissions.set(c.permissions);
        self.permissions_created.set(c.permissions_created);
        self.channels.set(c.channels);
        self.channels_created.set(c.channels_created);
    }

    /// A kernel fast-path install was not carried out (`reason`: an index of
    /// [`super::xdp::SKIPPED`]); the channel stays in user space.
    pub fn xdp_install_skipped(&self, reason: usize) {
        if let Some(c) = self.xdp_skipped.get(reason) {
            c.add(1);
        }
    }

    /// A send to a peer or a client failed (the datagram is lost).
    #[inline]
    pub fn send_error(&self) {
        self.send_errors.add(1);
    }

    /// A frame for a TCP/TLS client was dropped: its write queue was full (a slow reader).
    #[inline]
    pub fn write_queue_full(&self) {
        self.write_queue_full.add(1);
    }

    /// A TCP/TLS connection was closed at accept.
    pub fn connection_refused(&self, why: ConnectionRefusal) {
        self.connections_refused[why.index()].add(1);
    }

    /// Counts an allocation opening or closing.
    pub fn on_event(&self, e: &Event) {
        match e {
            Event::AllocationCreated {
                five_tuple,
                relay,
                additional,
                ..
            } => {
                let t = five_tuple.transport.index();
                self.allocations_created[t][RelayFamily::of(relay, additional.as_ref()).index()]
                    .add(1);
            }
            Event::AllocationEnded {
                five_tuple,
                relay,
                additional,
                duration,
                ..
            } => {
                let secs = duration.as_secs_f64();
                let bucket = DURATION_BUCKETS
                    .iter()
                    .position(|&b| secs <= b)
                    .unwrap_or(DURATION_BUCKETS.len());
                self.durations[bucket].add(1);
                let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
                self.duration_sum_ms.add(ms);
                let t = five_tuple.transport.index();
                self.allocations_ended[t][RelayFamily::of(relay, additional.as_ref()).index()]
                    .add(1);
            }
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        // Ended before created: an allocation is never seen ended but not created.
        for t in 0..TRANSPORTS {
            for f in 0..FAMILIES {
                s.allocations_ended[t][f] = self.allocations_ended[t][f].get();
            }
        }
        for t in 0..TRANSPORTS {
            for f in 0..FAMILIES {
                s.allocations_created[t][f] = self.allocations_created[t][f].get();
            }
        }
        let c = &mut s.core;
        for (v, cell) in c.dropped.values_mut().iter_mut().zip(&self.dropped) {
            *v = cell.get();
        }
        c.requests = self.requests.get();
        c.auth_failures = self.auth_failures.get();
        c.peers_denied = self.peers_denied.get();
        c.tcp_relay_throttled = self.tcp_relay_throttled.get();
        for (r, cells) in c.relayed.values_mut().iter_mut().zip(&self.relayed) {
            r.to_peer_packets = cells[0].get();
            r.to_peer_bytes = cells[1].get();
            r.to_client_packets = cells[2].get();
            r.to_client_bytes = cells[3].get();
        }
        for (row, cells) in c.responses.values_mut().iter_mut().zip(&self.responses) {
            for (v, cell) in row.values_mut().iter_mut().zip(cells) {
                *v = cell.get();
            }
        }
        for (v, cell) in c
            .auth_failure_reasons
            .values_mut()
            .iter_mut()
            .zip(&self.auth_failure_reasons)
        {
            *v = cell.get();
        }
        c.permissions = self.permissions.get();
        c.permissions_created = self.permissions_created.get();
        c.channels = self.channels.get();
        c.channels_created = self.channels_created.get();
        s.send_errors = self.send_errors.get();
        s.write_queue_full = self.write_queue_full.get();
        for (v, cell) in s.xdp_skipped.iter_mut().zip(&self.xdp_skipped) {
            *v = cell.get();
        }
        for (v, cell) in s
            .connections_refused
            .iter_mut()
            .zip(&self.connections_refused)
        {
            *v = cell.get();
        }
        for (v, cell) in s.durations.iter_mut().zip(&self.durations) {
            *v = cell.get();
        }
        s.duration_sum = Duration::from_millis(self.duration_sum_ms.get());
        s
    }
}

/// Sums the snapshots of every worker.
pub fn sum<'a>(workers: impl IntoIterator<Item = &'a WorkerMetrics>) -> Snapshot {
    let mut total = Snapshot::default();
    for w in workers {
        total.add(&w.snapshot());
    }
    total
}
