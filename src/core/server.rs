//! The per-worker TURN server state machine: dispatch, timers and allocation teardown.
//! Each TURN method's rules live in its own file under `handlers/`.

use super::allocation::{Additional, AllocationId, AllocationTable, State};
use super::five_tuple::FiveTuple;
use super::peer_filter::PeerFilter;
use super::rate_limit::RateLimiter;
use super::reply::Responder;
use super::timer::{TimerKind, Timers};
use super::transactions::TransactionCache;
use super::{EndReason, Event, Forward, Output, RelayOpenError, Shared, ToClient};
use crate::stun::attribute::{is_nat_discovery_attribute, is_understood};
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

/// What one worker's core has counted: datagrams declined by reason, relayed traffic,
/// requests by method and result, authentication failures by reason, and the permissions and
/// channels it holds. Plain integers owned by one worker, incremented on the relay path without
/// a lock or an atomic; the shell copies them out after each batch and the metrics endpoint sums
/// every worker's copy when scraped. The core counts; it knows nothing of Prometheus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub malformed: u64,
    pub no_allocation: u64,
    pub no_permission: u64,
    pub no_channel: u64,
    /// Requests received (every method, before any check).
    pub requests: u64,
    /// Failed authentications, all reasons ([`Counters::auth_failure_reasons`] splits them).
    pub auth_failures: u64,
    pub peers_denied: u64,
    /// Requests refused by an allocation quota (486).
    pub quota: u64,
    /// Datagrams dropped by the `allocation_bandwidth` cap.
    pub bandwidth: u64,
    /// Times a TCP relay splice waited for the `allocation_bandwidth` or `user_bandwidth`
    /// cap before passing bytes on (a stream is paced, never dropped).
    pub tcp_relay_throttled: u64,
    /// CreatePermission/ChannelBind refused by `max_permissions` (508).
    pub permission_quota: u64,
    /// ChannelBind refused by `max_channels` (508).
    pub channel_quota: u64,
    /// Requests not answered because their source is over its pre-authentication rate
    /// (`unauthenticated_rate`, `binding_rate`).
    pub rate_limited: u64,
    /// Unauthenticated requests not answered because the answer would be larger than the
    /// request (`amplification = "refuse"`).
    pub amplification: u64,
    /// Relayed traffic, indexed by the client's transport ([`transport_index`]).
    pub relayed: [Relayed; TRANSPORTS],
    /// Responses sent, by method ([`METHOD_LABELS`]) and result ([`RESULT_LABELS`]).
    pub responses: [[u64; RESULTS]; METHODS],
    /// Failed authentications by reason ([`AUTH_FAILURE_LABELS`]).
    pub auth_failure_reasons: [u64; AUTH_FAILURES],
    /// Permissions currently installed (expired ones until their sweep runs).
    pub permissions: u64,
    pub permissions_created: u64,
    /// Channel bindings currently held (including those in their 5-minute cool-down).
    pub channels: u64,
    pub channels_created: u64,
}

/// Relayed datagrams and payload bytes of one transport, per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Relayed {
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

pub const TRANSPORTS: usize = 3;
/// The label of each [`Counters::relayed`] entry.
pub const TRANSPORT_LABELS: [&str; TRANSPORTS] = ["udp", "tcp", "tls"];

pub fn transport_index(t: super::Transport) -> usize {
    match t {
        super::Transport::Udp => 0,
        super::Transport::Tcp => 1,
        super::Transport::Tls => 2,
    }
}

pub const METHODS: usize = 8;
pub const METHOD_LABELS: [&str; METHODS] = [
    "binding",
    "allocate",
    "refresh",
    "create_permission",
    "channel_bind",
    "connect",
    "connection_bind",
    "other",
];

/// Every error code the server sends, plus "other" for any code not listed.
const RESULT_CODES: [u16; RESULTS - 2] = [
    400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 446, 447, 486, 500, 508, 300,
];
pub const RESULTS: usize = 18;
/// In the order of [`RESULT_CODES`]; 300 (Try Alternate) came last, so earlier indices keep
/// their meaning.
pub const RESULT_LABELS: [&str; RESULTS] = [
    "success", "400", "401", "403", "420", "437", "438", "440", "441", "442", "443", "446", "447",
    "486", "500", "508", "300", "other",
];

pub const AUTH_FAILURES: usize = 8;
pub const AUTH_FAILURE_LABELS: [&str; AUTH_FAILURES] = [
    "bad_request",
    "stale_nonce",
    "unknown_user",
    "expired",
    "bad_integrity",
    "bid_down",
    "unsupported_algorithm",
    "expiry_too_far",
];

/// An index into [`AUTH_FAILURE_LABELS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// MESSAGE-INTEGRITY without USERNAME, REALM or NONCE (400).
    BadRequest = 0,
    /// A nonce that is stale or not ours (438).
    StaleNonce = 1,
    UnknownUser = 2,
    /// A TURN REST API username past its expiry.
    Expired = 3,
    BadIntegrity = 4,
    /// PASSWORD-ALGORITHMS/PASSWORD-ALGORITHM missing one of the pair, or not what we
    /// offered (RFC 8489 §9.2.4 bid-down check, 400).
    BidDown = 5,
    /// SHA-256 asked for a user configured with only an MD5 key (401).
    UnsupportedAlgorithm = 6,
    /// A TURN REST API username whose expiry lies further ahead than `rest_max_ttl` (401).
    ExpiryTooFar = 7,
}

impl Counters {
    /// Adds `other` into `self` (summing workers).
    pub fn add(&mut self, other: &Counters) {
        self.malformed += other.malformed;
        self.no_allocation += other.no_allocation;
        self.no_permission += other.no_permission;
        self.no_channel += other.no_channel;
        self.requests += other.requests;
        self.auth_failures += other.auth_failures;
        self.peers_denied += other.peers_denied;
        self.quota += other.quota;
        self.bandwidth += other.bandwidth;
        self.tcp_relay_throttled += other.tcp_relay_throttled;
        self.permission_quota += other.permission_quota;
        self.channel_quota += other.channel_quota;
        self.rate_limited += other.rate_limited;
        self.amplification += other.amplification;
        for (a, b) in self.relayed.iter_mut().zip(&other.relayed) {
            a.to_peer_packets += b.to_peer_packets;
            a.to_peer_bytes += b.to_peer_bytes;
            a.to_client_packets += b.to_client_packets;
            a.to_client_bytes += b.to_client_bytes;
        }
        for (a, b) in self.responses.iter_mut().zip(&other.responses) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        for (a, b) in self
            .auth_failure_reasons
            .iter_mut()
            .zip(&other.auth_failure_reasons)
        {
            *a += b;
        }
        self.permissions += other.permissions;
        self.permissions_created += other.permissions_created;
        self.channels += other.channels;
        self.channels_created += other.channels_created;
    }

    pub(crate) fn auth_failure(&mut self, reason: AuthFailure) {
        self.auth_failures += 1;
        self.auth_failure_reasons[reason as usize] += 1;
    }

    /// Counts a response by the method and result it carries (a response we built, so it
    /// parses; anything else is ignored).
    fn response(&mut self, payload: &[u8]) {
        let Ok(msg) = Message::parse(payload) else {
            return;
        };
        let method = match msg.method() {
            Method::BINDING => 0,
            Method::ALLOCATE => 1,
            Method::REFRESH => 2,
            Method::CREATE_PERMISSION => 3,
            Method::CHANNEL_BIND => 4,
            Method::CONNECT => 5,
            Method::CONNECTION_BIND => 6,
            _ => 7,
        };
        let result = match msg.class() {
            Class::SuccessResponse => 0,
            Class::ErrorResponse => match msg.error_code() {
                Some(Ok((code, _))) => RESULT_CODES
                    .iter()
                    .position(|&c| c == code)
                    .map_or(RESULTS - 1, |i| i + 1),
                _ => RESULTS - 1,
            },
            // Data indications built on the control path are not responses.
            _ => return,
        };
        self.responses[method][result] += 1;
    }
}

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
    transactions: TransactionCache,
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
    unauthenticated_limit: RateLimiter,
    /// Binding answers, per source (`binding_rate`).
    binding_limit: RateLimiter,
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
                self.counters.malformed += 1;
                return None;
            }
        };
        match msg.class() {
            Class::Indication if msg.method() == Method::SEND => {
                self.relay_send_indication(now, from, &msg)
            }
            Class::Request => {
                self.counters.requests += 1;
                self.handle_request(now, from, &msg);
                None
            }
            // Responses, and indications other than Send, are not for a server.
            _ => None,
        }
    }

    fn handle_request(&mut self, now: Instant, from: FiveTuple, msg: &Message) {
        let responder = Responder::to(msg, None, None);
        let mut unknown = [0u16; 16];
        let nat = msg.method() == Method::BINDING && self.nat_pair(&from).is_some();
        // RFC 5780's request attributes are understood only where discovery is served:
        // elsewhere CHANGE-REQUEST must earn a 420 (RFC 5780 §6).
        let n = msg.unknown_required(
            |t| is_understood(t) || (nat && is_nat_discovery_attribute(t)),
            &mut unknown,
        );
        // Only Binding is served on the three extra NAT discovery addresses: TURN stays on
        // the primary listen address (dropped, like any datagram for no one).
        if msg.method() != Method::BINDING && self.on_nat_secondary(&from) {
            return;
        }
        let turn_method = matches!(
            msg.method(),
            Method::ALLOCATE
                | Method::REFRESH
                | Method::CREATE_PERMISSION
                | Method::CHANNEL_BIND
                | Method::CONNECT
                | Method::CONNECTION_BIND
        );
        // TURN requests are checked for unknown attributes after authentication (below).
        if n > 0 && !turn_method {
            let resp = responder.error(420, |b| b.add_unknown_attributes(&unknown[..n]));
            self.transmit_unauthenticated(now, from, resp, msg.raw().len());
            return;
        }
        match msg.method() {
            Method::BINDING => {
                if !self.binding_limit.allow(now, from.client.ip()) {
                    self.counters.rate_limited += 1;
                    return;
                }
                self.handle_binding(now, from, msg);
            }
            Method::ALLOCATE
            | Method::REFRESH
            | Method::CREATE_PERMISSION
            | Method::CHANNEL_BIND
            | Method::CONNECT
            | Method::CONNECTION_BIND => {
                if let Some(cached) = self.transactions.get(&from, &msg.transaction_id()) {
                    let payload = cached.to_vec();
                    self.transmit(from, payload);
                    return;
                }
                // An allocation past its expiry whose deadline has not fired yet is gone
                // for every purpose: a request must not bring it back.
                if let Some(id) = self.allocations.id_for(&from) {
                    let expired = self
                        .allocations
                        .get(id)
                        .is_some_and(|a| a.state == State::Active && a.expires <= now);
                    if expired {
                        self.free_allocation(now, id, EndReason::Expired);
                    }
                }
                let auth_from = if msg.method() == Method::CONNECTION_BIND {
                    self.connection_bind_nonce_owner(now, from, msg)
                } else {
                    from
                };
                let (username, key) = match self.authenticate(now, auth_from, msg) {
                    Ok(v) => v,
                    Err(resp) => {
                        self.transmit_unauthenticated(now, from, resp, msg.raw().len());
                        return;
                    }
                };
                // RFC 8489 §6.3: unknown attributes are checked once authentication is done,
                // so the 420 is signed like every answer to an authenticated request (a
                // client discards an unsigned one, §9.2.5).
                if n > 0 {
                    let shared = self.shared.clone();
                    let r = Responder::to(msg, Some(&key), shared.config.software.as_deref());
                    let resp = r.error(420, |b| b.add_unknown_attributes(&unknown[..n]));
                    self.respond_and_remember(now, from, msg.transaction_id(), resp);
                    return;
                }
                let username: &str = &username;
                let resp = match msg.method() {
                    Method::ALLOCATE => self.handle_allocate(now, from, msg, username, &key),
                    Method::REFRESH => Some(self.handle_refresh(now, from, msg, username, &key)),
                    Method::CREATE_PERMISSION => {
                        Some(self.handle_create_permission(now, from, msg, username, &key))
                    }
                    Method::CONNECT => self.handle_connect(now, from, msg, username, &key),
                    Method::CONNECTION_BIND => {
                        self.handle_connection_bind(now, from, msg, username, &key)
                    }
                    _ => Some(self.handle_channel_bind(now, from, msg, username, &key)),
                };
                if let Some(resp) = resp {
                    self.respond_and_remember(now, from, msg.transaction_id(), resp);
                }
            }
            _ => {
                let resp = responder.plain_error(400);
                self.transmit_unauthenticated(now, from, resp, msg.raw().len());
            }
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
            self.counters.amplification += 1;
            return;
        }
        if !self.unauthenticated_limit.allow(now, to.client.ip()) {
            self.counters.rate_limited += 1;
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
        token: [u8; 8],
        due: Option<Instant>,
    ) {
        let owner = self.tcp_relay.tag;
        let freed = self.shared.reservations.remove_if(&token, |_, r| {
            r.owner == owner && r.alloc == id && due.is_none_or(|now| r.expires <= now)
        });
        if let Some((_, r)) = freed {
            self.release_port(r.relay);
            self.shared.quotas.release(&r.username);
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
        self.shared.quotas.release(&a.username);
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
        self.outputs
            .push_back(Output::CloseRelay { id, family: None });
        self.tcp_allocation_ended(id);
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
        let connections: usize = self.tcp_relay.allocs.values().map(Vec::len).sum();
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
