//! The per-worker TURN server state machine: dispatch, timers and allocation teardown.
//! Each TURN method's rules live in its own file under `handlers/`.

use super::allocation::{Additional, AllocationId, AllocationTable, State};
use super::counters::{Counters, DropReason};
use super::five_tuple::FiveTuple;
use super::peer_filter::PeerFilter;
use super::rate_limit::RateLimiter;
use super::request::RequestMethod;
use super::timer::{TimerKind, Timers};
use super::transactions::TransactionCache;
use super::{EndReason, Event, Forward, Output, RelayOpenError, Shared, ToClient};
use crate::stun::{ChannelData, Class, Message, Method};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

/// Bytes the shell must leave free in front of a peer datagram so the core can frame it in
/// place: a Data indication header (20) + XOR-PEER-ADDRESS for IPv6 (24) + DATA header (4).
pub const PEER_HEADROOM: usize = 48;
/// Bytes the shell must leave free after a peer datagram for padding to 4 bytes.
pub const PEER_TAILROOM: usize = 4;

/// How many responses a worker remembers for retransmissions.
const TRANSACTION_CACHE: usize = 16 * 1024;

/// A clock pairing: the monotonic instant at which the wall clock read `unix` seconds.
#[derive(Clone, Copy, Debug)]
struct WallClock {
    at: Instant,
    unix: u64,
}

pub struct Server {
    pub(super) shared: Arc<Shared>,
    pub(super) allocations: AllocationTable,
    pub(super) timers: Timers,
    pub(super) outputs: VecDeque<Output>,
    pub(super) transactions: TransactionCache,
    /// Every value a client sees and must not be able to guess comes from here: relay ports,
    /// transaction ids of Data and ConnectionAttempt indications, CONNECTION-IDs,
    /// RESERVATION-TOKENs, the alternate server picked. `StdRng` is a CSPRNG (ChaCha12 in
    /// rand 0.8): its past outputs do not reveal its next ones, as xorshift's did.
    pub(super) rng: StdRng,
    wall: WallClock,
    pub(super) relay_cursor: usize,
    pub(super) counters: Counters,
    pub(super) tcp_relay: super::tcp_relay::TcpRelayState,
    /// Error answers to unauthenticated requests, per source (`unauthenticated_rate`).
    pub(super) unauthenticated_limit: RateLimiter,
    /// Binding answers, per source (`binding_rate`).
    pub(super) binding_limit: RateLimiter,
    /// The peer filter this worker last applied to its permissions and channels
    /// ([`Server::handle_peer_filter_changed`]). The relay path reads its own-host ports
    /// through this `Arc` rather than the shared `Reloadable`, so it takes no lock.
    pub(super) filter: Arc<PeerFilter>,
}

impl Server {
    /// `seed` seeds the worker's CSPRNG ([`Server::random`]): the shell draws it from the
    /// operating system for each worker (the core reads no OS randomness itself), tests pass
    /// fixed ones. `now` and `unix_now` anchor the wall clock (REST API expiry and nonces need
    /// Unix time).
    pub fn new(shared: Arc<Shared>, seed: [u8; 32], now: Instant, unix_now: u64) -> Server {
        let mut rng = StdRng::from_seed(seed);
        // The limiters' hash keys are secret (random per worker): a client that could compute
        // them could aim a flood at another source's buckets.
        let unauthenticated_limit =
            RateLimiter::new(shared.config.unauthenticated_rate, rng.next_u64(), now);
        let binding_limit = RateLimiter::new(shared.config.binding_rate, rng.next_u64(), now);
        let filter = shared.peer_filter.load();
        Server {
            unauthenticated_limit,
            binding_limit,
            filter,
            shared,
            allocations: AllocationTable::default(),
            timers: Timers::default(),
            outputs: VecDeque::new(),
            transactions: TransactionCache::new(TRANSACTION_CACHE),
            rng,
            wall: WallClock {
                at: now,
                unix: unix_now,
            },
            relay_cursor: 0,
            counters: Counters::default(),
            tcp_relay: Default::default(),
        }
    }

    /// Re-anchors the wall clock; the shell calls this now and then so a stepped system
    /// clock is picked up.
    pub fn set_wall_clock(&mut self, now: Instant, unix_now: u64) {
        self.wall = WallClock {
            at: now,
            unix: unix_now,
        };
    }

    pub(super) fn unix_now(&self, now: Instant) -> u64 {
        self.wall.unix + now.saturating_duration_since(self.wall.at).as_secs()
    }

    /// 64 bits from the worker's CSPRNG (the `rng` field: `StdRng`, seeded by the shell).
    pub(super) fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn allocations(&self) -> impl Iterator<Item = &super::Allocation> {
        self.allocations.iter()
    }

    pub fn allocation(&self, id: AllocationId) -> Option<&super::Allocation> {
        self.allocations.get(id)
    }

    /// The next output for the shell to execute.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the shell should next call [`Server::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// A datagram (or a framed stream message) from a client. Returns where to relay it when
    /// it is ChannelData or a Send indication; anything else is answered through
    /// [`Server::poll_output`].
    pub fn handle_client_datagram(
        &mut self,
        now: Instant,
        from: FiveTuple,
        data: &[u8],
    ) -> Option<Forward> {
        if ChannelData::is_channel_data(data) {
            return self.relay_channel_data(now, from, data);
        }
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(_) => {
                self.counters.dropped[DropReason::Malformed] += 1;
                return None;
            }
        };
        match msg.class() {
            Class::Indication if msg.method() == Method::SEND => {
                self.relay_send_indication(now, from, &msg)
            }
            Class::Request => {
                // RFC 8489 §6.3: a message whose method the server does not support, or whose
                // class the method does not allow (a Send, Data or ConnectionAttempt request),
                // is silently discarded — not answered with an error.
                let Some(method) = RequestMethod::of(msg.method()) else {
                    self.counters.dropped[DropReason::Malformed] += 1;
                    return None;
                };
                self.counters.requests += 1;
                self.handle_request(now, from, &msg, method);
                None
            }
            // Responses, and indications other than Send (a Binding keepalive, a Data or
            // ConnectionAttempt indication that only a server sends, an unknown method), are
            // not for a server: RFC 8489 §6.3.2 and §6.3 discard them.
            _ => None,
        }
    }

    /// Sends an error response to a request that did not authenticate (401, 438, 400, 420)
    /// — unless `refuse_amplification` is set and the answer is larger than the request of
    /// `request_len` bytes: then nothing is sent, so a spoofed source cannot be flooded with
    /// more bytes than the attacker spends. RFC 8489 lets a server ignore a request it will
    /// not serve. Binding success responses are exempt: XOR-MAPPED-ADDRESS is the service
    /// itself, and adds a fixed 12 (IPv4) or 24 (IPv6) bytes.
    ///
    /// Over its source's `unauthenticated_rate`, nothing is sent either: a spoofed flood gets
    /// a bounded trickle of answers per victim address.
    pub(super) fn transmit_unauthenticated(
        &mut self,
        now: Instant,
        to: FiveTuple,
        payload: Vec<u8>,
        request_len: usize,
    ) {
        if self.shared.config.refuse_amplification && payload.len() > request_len {
            self.counters.dropped[DropReason::Amplification] += 1;
            return;
        }
        if !self.unauthenticated_limit.allow(now, to.client.ip()) {
            self.counters.dropped[DropReason::RateLimited] += 1;
            return;
        }
        self.transmit(to, payload);
    }

    pub(super) fn transmit(&mut self, to: FiveTuple, payload: Vec<u8>) {
        self.counters.response(&payload);
        self.outputs.push_back(Output::Transmit { to, payload });
    }

    pub(super) fn respond_and_remember(
        &mut self,
        now: Instant,
        to: FiveTuple,
        txid: crate::stun::TransactionId,
        resp: Vec<u8>,
    ) {
        self.transactions.insert(now, to, txid, resp.clone());
        self.transmit(to, resp);
    }

    /// The shell's answer to [`Output::OpenRelay`].
    pub fn handle_relay_opened(
        &mut self,
        now: Instant,
        id: AllocationId,
        result: Result<(), RelayOpenError>,
    ) {
        self.finish_allocate(now, id, result);
    }

    /// A datagram from `peer` arrived on the relay socket of allocation `id`. The payload is
    /// `buf[payload]`, with at least [`PEER_HEADROOM`] bytes before it and
    /// [`PEER_TAILROOM`] after it, where the core writes the ChannelData or Data indication
    /// framing in place. Returns what to send to the client.
    pub fn handle_peer_datagram(
        &mut self,
        now: Instant,
        id: AllocationId,
        peer: SocketAddr,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Option<ToClient> {
        self.frame_for_client(now, id, peer, buf, payload)
    }

    /// Fires due deadlines: allocation expiry, permission and channel sweeps, reservations.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Forgetting old responses needs no deadline of its own: it is memory, not protocol
        // (an old entry is never served — `insert` and this purge drop it first), and it
        // rides on every call here; the shell calls at least once a second.
        self.transactions.expire(now);
        // The shell calls `handle_peer_filter_changed` right after a reload; this catches a
        // reload it did not report, within a second.
        if !Arc::ptr_eq(&self.filter, &self.shared.peer_filter.load()) {
            self.handle_peer_filter_changed(now);
        }
        while let Some(kind) = self.timers.pop_due(now) {
            match kind {
                TimerKind::AllocationExpiry(id) => {
                    let due = self
                        .allocations
                        .get(id)
                        .is_some_and(|a| a.state == State::Active && a.expires <= now);
                    if due {
                        self.free_allocation(now, id, EndReason::Expired);
                    } else {
                        // One family of a dual allocation may end before the other; the
                        // deadline then moves to the one left.
                        self.expire_families(now, id);
                        self.schedule_expiry(id);
                    }
                }
                TimerKind::Sweep(id) => {
                    // What expired leaves the kernel before it leaves the lists.
                    self.sync_fast_path(now, id);
                    let counters = &mut self.counters;
                    let next = self.allocations.get_mut(id).and_then(|a| {
                        let (permissions, channels) = (a.permissions.len(), a.channels.len());
                        let p = a.permissions.sweep(now);
                        let c = a.channels.sweep(now);
                        counters.permissions = counters
                            .permissions
                            .saturating_sub((permissions - a.permissions.len()) as u64);
                        counters.channels = counters
                            .channels
                            .saturating_sub((channels - a.channels.len()) as u64);
                        [p, c].into_iter().flatten().min()
                    });
                    if let Some(next) = next {
                        self.schedule_sweep(id, next);
                    }
                }
                TimerKind::Reservation(id) => {
                    let token = self.allocations.get_mut(id).and_then(|a| a.reservation);
                    if let Some(token) = token {
                        self.free_reservation(id, token, Some(now));
                    }
                }
                TimerKind::TcpConnection(cid) => self.tcp_connection_timeout(now, cid),
            }
        }
    }

    /// Makes sure a sweep of the allocation's permissions and channels happens by `at`: one
    /// pending sweep per allocation, moved earlier when needed, never later.
    pub(super) fn schedule_sweep(&mut self, id: AllocationId, at: Instant) {
        if self.allocations.get(id).is_none() {
            return;
        }
        let kind = TimerKind::Sweep(id);
        if self.timers.at(kind).is_none_or(|t| at < t) {
            self.timers.push(at, kind);
        }
    }

    /// Sets the allocation's one expiry deadline to the earliest time-to-expiry of the
    /// families it still holds (every Refresh moves it; it never adds one).
    pub(super) fn schedule_expiry(&mut self, id: AllocationId) {
        let kind = TimerKind::AllocationExpiry(id);
        let next = self
            .allocations
            .get(id)
            .filter(|a| a.state == State::Active)
            .and_then(|a| a.held_relays().map(|(_, expires)| expires).min());
        match next {
            Some(at) => self.timers.push(at, kind),
            None => self.timers.cancel(kind),
        }
    }

    /// Frees the reservation `token` that allocation `id`'s Allocate made — its port back to
    /// the pool, its quota unit released — if it is still there (not redeemed) and, with
    /// `due: Some(now)`, if it has lapsed by `now`. Its deadline goes too.
    pub(super) fn free_reservation(
        &mut self,
        id: AllocationId,
        token: super::ids::ReservationToken,
        due: Option<Instant>,
    ) {
        let owner = self.tcp_relay.tag;
        let freed = self.shared.reservations.remove_if(&token, |_, r| {
            r.owner == owner && r.alloc == id && due.is_none_or(|now| r.expires <= now)
        });
        if let Some((_, r)) = freed {
            self.release_port(r.relay);
            self.shared.quotas.release(&r.account);
        }
        let still_held = self
            .shared
            .reservations
            .get(&token)
            .filter(|r| r.owner == owner && r.alloc == id)
            .map(|r| r.expires);
        match still_held {
            // Not due yet (a deadline that fired early): wait for it.
            Some(expires) => self.timers.push(expires, TimerKind::Reservation(id)),
            None => {
                self.timers.cancel(TimerKind::Reservation(id));
                if let Some(a) = self.allocations.get_mut(id) {
                    a.reservation = None;
                }
            }
        }
    }

    pub(super) fn release_port(&self, relay: SocketAddr) {
        // Invariant: the pool's mutex is never held across a panic (no code panics inside).
        let mut ports = self.shared.ports.lock().unwrap_or_else(|e| e.into_inner());
        ports.release(relay.ip(), relay.port());
    }

    /// Ends an allocation: frees its port, its reservation and its deadlines, closes its
    /// socket, reports it. Its cost does not depend on the allocation's past requests.
    pub(super) fn free_allocation(&mut self, now: Instant, id: AllocationId, reason: EndReason) {
        if let Some(token) = self.allocations.get(id).and_then(|a| a.reservation) {
            self.free_reservation(id, token, None);
        }
        let Some(a) = self.allocations.remove(id) else {
            return;
        };
        self.timers.cancel(TimerKind::AllocationExpiry(id));
        self.timers.cancel(TimerKind::Sweep(id));
        self.timers.cancel(TimerKind::Reservation(id));
        self.shared.quotas.release(&a.account);
        if a.state == State::Active {
            for (relay, _) in a.held_relays() {
                self.release_port(relay);
            }
        } else {
            // Still opening: the first port, and the second one's if it is taken.
            self.release_port(a.relay);
            if let State::Opening {
                additional: Additional::Waiting { bind } | Additional::Opening { bind, .. },
                ..
            } = a.state
            {
                self.release_port(bind);
            }
        }
        let c = &mut self.counters;
        c.permissions = c.permissions.saturating_sub(a.permissions.len() as u64);
        c.channels = c.channels.saturating_sub(a.channels.len() as u64);
        self.remove_fast_path(&a);
        self.outputs
            .push_back(Output::CloseRelay { id, family: None });
        self.tcp_allocation_ended(id, &a.kind);
        if a.state == State::Active {
            let stats = a.relayed();
            self.outputs
                .push_back(Output::Event(Event::AllocationEnded {
                    id,
                    five_tuple: a.five_tuple,
                    username: a.username,
                    relay: a.advertised,
                    additional: a.dual.map(|d| d.advertised),
                    reason,
                    duration: now.saturating_duration_since(a.created),
                    stats,
                }));
        }
    }

    /// Responses held for retransmissions (RFC 8489 §6.3.1).
    pub fn cached_responses(&self) -> usize {
        self.transactions.len()
    }

    /// Responses the retransmission cache holds at most ([`TRANSACTION_CACHE`]).
    pub fn cached_responses_capacity(&self) -> usize {
        TRANSACTION_CACHE
    }

    /// Deadlines held. Each has one owner and at most one pending deadline per purpose (see
    /// [`super::timer`]), so this never exceeds [`Server::pending_timers_bound`].
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// The most deadlines the core may hold in its present state: three per allocation (its
    /// expiry, its permission/channel sweep, the 30 s of the reservation its Allocate made)
    /// and one per RFC 6062 peer connection it tracks (at most
    /// [`MAX_PEER_CONNECTIONS`](super::tcp_relay::MAX_PEER_CONNECTIONS) per TCP allocation).
    /// Past Refreshes, permissions, bindings and ended allocations add nothing.
    pub fn pending_timers_bound(&self) -> usize {
        let connections: usize = self
            .allocations
            .iter()
            .filter_map(|a| a.tcp())
            .map(|t| t.connections.len())
            .sum();
        3 * self.allocations.len() + connections
    }

    /// Whether the client of `five_tuple` holds an allocation (one still being opened counts).
    /// The shell asks this to close stream connections that never allocate.
    pub fn has_allocation(&self, five_tuple: &FiveTuple) -> bool {
        self.allocations.id_for(five_tuple).is_some()
    }

    /// The stream (TCP/TLS) connection of `five_tuple` closed, whichever side closed it.
    /// Over a stream transport the allocation lives only as long as its control connection
    /// (RFC 8656 §3.1), so it ends now, with the usual `CloseRelay` and `AllocationEnded`.
    /// A UDP 5-tuple has no connection and is ignored.
    pub fn handle_connection_closed(&mut self, now: Instant, five_tuple: FiveTuple) {
        if !five_tuple.transport.is_stream() {
            return;
        }
        if let Some(id) = self.allocations.id_for(&five_tuple) {
            self.free_allocation(now, id, EndReason::ConnectionClosed);
        }
    }

    /// Ends allocation `id` at an operator's request (the admin API), as a Refresh with
    /// lifetime 0 would. False when there is no such allocation.
    pub fn close(&mut self, now: Instant, id: AllocationId) -> bool {
        if self.allocations.get(id).is_none() {
            return false;
        }
        self.free_allocation(now, id, EndReason::Deleted);
        true
    }

    /// Ends every allocation (shutdown).
    pub fn close_all(&mut self, now: Instant) {
        let ids: Vec<AllocationId> = self.allocations.iter().map(|a| a.id).collect();
        for id in ids {
            self.free_allocation(now, id, EndReason::Shutdown);
        }
    }
}
