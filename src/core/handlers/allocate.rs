//! Allocate (RFC 8656 §7): reserve a relayed transport address for the client's 5-tuple.
//!
//! Handled in two steps, because binding the relay socket is I/O: the request is checked and
//! a port chosen here, the shell is asked to open the socket ([`Output::OpenRelay`]), and the
//! response is sent from [`Server::finish_allocate`] when the shell reports back.

use crate::core::allocation::{
    Additional, Allocation, AllocationId, AllocationKind, Dual, Retry, State, TcpAllocation,
};
use crate::core::bandwidth::SharedBucket;
use crate::core::counters::DropReason;
use crate::core::ids::ReservationToken;
use crate::core::reply::Responder;
use crate::core::request::{Answer, Handled, Request};
use crate::core::tcp_relay::{SpliceShare, TCP};
use crate::core::timer::TimerKind;
use crate::core::{Event, Output, RelayOpenError, Reservation, Server};
use crate::stun::{AddressFamily, AttrType, ErrorCode, Message};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// REQUESTED-TRANSPORT value for UDP (IANA protocol number 17).
const UDP: u8 = 17;
/// RFC 8656 §7.2: a reserved port is held for about 30 seconds.
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// Ports tried before answering 508 when other processes hold the ones we pick.
const MAX_BIND_ATTEMPTS: u8 = 8;

/// Why no relay port could be taken.
enum NoPort {
    /// No relay address of the family is configured (440).
    NoAddress,
    /// Every relay address of the family has all its ports taken (508).
    Full,
}

impl NoPort {
    /// What the client is told.
    fn code(self) -> ErrorCode {
        match self {
            NoPort::NoAddress => ErrorCode::AddressFamilyNotSupported,
            NoPort::Full => ErrorCode::InsufficientCapacity,
        }
    }
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::V4,
        IpAddr::V6(_) => AddressFamily::V6,
    }
}

impl Server {
    pub(crate) fn handle_allocate(&mut self, req: &Request) -> Handled {
        let (now, from, msg, username) = (req.now, req.from, req.msg, req.username);
        let shared = self.shared.clone();
        let r = &req.reply;

        // One allocation per 5-tuple (RFC 8656 §7.2 step 2). A retransmission of the request
        // that is still opening its socket gets its answer when the socket is open.
        if let Some(a) = req.allocation.and_then(|id| self.allocations.get(id)) {
            if let State::Opening { txid, .. } = a.state {
                if txid == msg.transaction_id() {
                    return Ok(Answer::Later);
                }
            }
            return Err(ErrorCode::AllocationMismatch);
        }
        // Draining before exit: existing allocations keep relaying, new ones go elsewhere
        // (300 to an alternate server, else 508: the server cannot carry out the request for
        // capacity reasons).
        if self.shared.quotas.is_draining() {
            return self
                .try_alternate(from, r)
                .map(Answer::Now)
                .ok_or(ErrorCode::InsufficientCapacity);
        }
        let tcp = match msg.requested_transport() {
            Some(Ok(UDP)) => false,
            Some(Ok(TCP)) => {
                Self::check_tcp_allocate(from, msg)?;
                true
            }
            Some(Ok(_)) => return Err(ErrorCode::UnsupportedTransportProtocol),
            None | Some(Err(_)) => return Err(ErrorCode::BadRequest),
        };
        let even = msg
            .even_port()
            .transpose()
            .map_err(|_| ErrorCode::BadRequest)?;
        let token = msg
            .reservation_token()
            .transpose()
            .map_err(|_| ErrorCode::BadRequest)?;
        let family = msg
            .requested_address_family()
            .transpose()
            .map_err(|_| ErrorCode::AddressFamilyNotSupported)?;
        // ADDITIONAL-ADDRESS-FAMILY: only IPv6 is a valid value (RFC 8656 §18.11, §7.2 step 9).
        let dual = match additional_address_family(msg) {
            Ok(None) => false,
            Ok(Some(AddressFamily::V6)) => true,
            Ok(Some(AddressFamily::V4)) | Err(()) => return Err(ErrorCode::BadRequest),
        };
        // RFC 8656 §7.2 step 5: RESERVATION-TOKEN excludes EVEN-PORT, REQUESTED-ADDRESS-FAMILY
        // and ADDITIONAL-ADDRESS-FAMILY; step 6: the two family attributes exclude each other;
        // step 8: a reserved port pair (EVEN-PORT with R) is single-family.
        if token.is_some() && (even.is_some() || family.is_some() || dual)
            || (family.is_some() && dual)
            || (even == Some(true) && dual)
        {
            return Err(ErrorCode::BadRequest);
        }
        let cfg = &shared.config;
        let lifetime = match msg.lifetime().transpose() {
            // The smaller of the request and the maximum, but never below the default.
            Ok(Some(secs)) => Duration::from_secs(secs as u64)
                .min(cfg.max_lifetime)
                .max(cfg.default_lifetime),
            Ok(None) => cfg.default_lifetime,
            Err(_) => return Err(ErrorCode::BadRequest),
        };

        // `redeemed`: the port comes from a reservation, whose quota unit passes to this
        // allocation; `pair`: the next port is taken too, for a reservation made below.
        let (relay, pair, retry, redeemed) = if let Some(t) = token {
            // Only the user who obtained the token may redeem it. Anyone else gets the answer
            // an unknown token gets, and the reservation stays for its owner.
            match shared
                .reservations
                .remove_if(&t, |_, res| *res.username == *username)
            {
                Some((_, res)) if res.expires > now => {
                    self.forget_redeemed(&res);
                    (res.relay, false, Retry::No, Some(res.account))
                }
                Some((_, res)) => {
                    self.release_port(res.relay);
                    shared.quotas.release(&res.account);
                    self.forget_redeemed(&res);
                    return Err(ErrorCode::InsufficientCapacity);
                }
                None => return Err(ErrorCode::InsufficientCapacity),
            }
        } else {
            let mut family = family.unwrap_or(AddressFamily::V4);
            // A dual Allocate on a server without IPv4 relaying gets the IPv6 address alone
            // (a partial success, step 9) rather than the 440 a plain one would.
            if dual && !self.has_relay_ip(AddressFamily::V4) {
                family = AddressFamily::V6;
            }
            let pair = even == Some(true);
            let (ip, port) = match self.take_relay_port(family, even.is_some(), pair) {
                Ok(taken) => taken,
                Err(NoPort::NoAddress) => return Err(ErrorCode::AddressFamilyNotSupported),
                Err(NoPort::Full) => {
                    return self
                        .try_alternate(from, r)
                        .map(Answer::Now)
                        .ok_or(ErrorCode::InsufficientCapacity)
                }
            };
            let retry = match even {
                None => Retry::Any,
                Some(false) => Retry::Even,
                Some(true) => Retry::Pair,
            };
            (SocketAddr::new(ip, port), pair, retry, None)
        };

        let additional = if dual {
            self.take_additional(relay)
        } else {
            Additional::None
        };

        // Quotas are checked last, once everything else succeeded, so a refused request
        // holds nothing: the ports taken above go back. A reservation is counted like an
        // allocation (two units for EVEN-PORT with R); a redeemed one brought its unit along.
        let units = match (&redeemed, pair) {
            (Some(_), _) => 0,
            (None, false) => 1,
            (None, true) => 2,
        };
        // Counted under the account (a REST username's user id), not the username, so
        // minting more credentials does not buy more allocations; a redeemed reservation's
        // unit stays under the account it was taken under.
        let account: Box<str> =
            redeemed.unwrap_or_else(|| shared.credentials.load().account_of(username).into());
        if let Err(refusal) = self.acquire_quota(&account, units) {
            self.release_port(relay);
            if pair {
                self.release_port(SocketAddr::new(relay.ip(), relay.port() + 1));
            }
            if let Additional::Waiting { bind } = additional {
                self.release_port(bind);
            }
            // A full server sends the client elsewhere; a user over their own quota is not.
            if refusal == crate::core::quota::Refusal::Total {
                if let Some(resp) = self.try_alternate(from, r) {
                    return Ok(Answer::Now(resp));
                }
            }
            self.counters.dropped[DropReason::Quota] += 1;
            return Err(ErrorCode::AllocationQuotaReached);
        }
        let id = self.allocations.next_id();
        let reservation = pair.then(|| {
            let expires = now + RESERVATION_LIFETIME;
            let reserved = Reservation {
                relay: SocketAddr::new(relay.ip(), relay.port() + 1),
                expires,
                username: username.into(),
                account: account.clone(),
                owner: self.tcp_relay.tag,
                alloc: id,
            };
            (self.insert_reservation(reserved), expires)
        });
        let dont_fragment = msg.dont_fragment();
        let user_bandwidth = if cfg.user_bandwidth > 0 {
            shared.quotas.user_bucket(&account, cfg.user_bandwidth, now)
        } else {
            None
        };
        self.allocations.insert(Allocation {
            id,
            five_tuple: from,
            username: username.into(),
            account,
            key: *req.key,
            relay,
            advertised: shared.advertised(relay),
            created: now,
            expires: now + lifetime,
            state: State::Opening {
                txid: msg.transaction_id(),
                attempts: 1,
                fingerprint: msg.has_fingerprint(),
                retry,
                additional,
            },
            dont_fragment,
            permissions: Default::default(),
            channels: Default::default(),
            stats: Default::default(),
            reservation: reservation.map(|(token, _)| token),
            bandwidth: (cfg.allocation_bandwidth > 0)
                .then(|| crate::core::bandwidth::TokenBucket::new(cfg.allocation_bandwidth, now)),
            kind: match tcp {
                false => AllocationKind::Udp,
                true => AllocationKind::Tcp(TcpAllocation {
                    splice: Arc::new(SpliceShare::new(
                        (cfg.allocation_bandwidth > 0)
                            .then(|| SharedBucket::new(cfg.allocation_bandwidth, now)),
                        user_bandwidth.clone(),
                    )),
                    connections: Vec::new(),
                }),
            },
            user_bandwidth,
            dual: None,
        });
        if let Some((_, expires)) = reservation {
            self.timers.push(expires, TimerKind::Reservation(id));
        }
        let open = self.open_relay_output(id, relay, dont_fragment);
        self.outputs.push_back(open);
        Ok(Answer::Later)
    }

    /// Counts `units` allocations (or reservations) against `username`'s and the server's
    /// quotas, all or none.
    fn acquire_quota(
        &mut self,
        username: &str,
        units: u32,
    ) -> Result<(), crate::core::quota::Refusal> {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        for taken in 0..units {
            if let Err(refusal) =
                shared
                    .quotas
                    .try_acquire(username, cfg.user_quota, cfg.total_quota)
            {
                for _ in 0..taken {
                    shared.quotas.release(username);
                }
                return Err(refusal);
            }
        }
        Ok(())
    }

    /// Stores `reservation` under a fresh RESERVATION-TOKEN from the CSPRNG and returns it.
    fn insert_reservation(&mut self, reservation: Reservation) -> ReservationToken {
        let shared = self.shared.clone();
        // Bounded in practice: the map holds far fewer than 2^64 tokens, so a draw collides
        // with a live one about never.
        loop {
            let token = self.random().to_be_bytes();
            if let dashmap::Entry::Vacant(v) = shared.reservations.entry(token) {
                v.insert(reservation);
                return token;
            }
        }
    }

    /// A reservation left the map (redeemed, or found lapsed): when this core's allocation
    /// made it, that allocation forgets it and its deadline goes.
    fn forget_redeemed(&mut self, res: &Reservation) {
        if res.owner != self.tcp_relay.tag {
            return;
        }
        self.timers.cancel(TimerKind::Reservation(res.alloc));
        if let Some(a) = self.allocations.get_mut(res.alloc) {
            a.reservation = None;
        }
    }

    fn has_relay_ip(&self, family: AddressFamily) -> bool {
        let relays = &self.shared.config.relays;
        relays.iter().any(|r| family_of(r.bind) == family)
    }

    /// Takes a port for the second relayed address of a dual allocation whose first is
    /// `first`: of the other family. What cannot be had is a partial success (ADDRESS-ERROR-CODE):
    /// 440 when no relay address of that family is configured, 508 when its ports are all taken.
    fn take_additional(&mut self, first: SocketAddr) -> Additional {
        let family = match first {
            SocketAddr::V4(_) => AddressFamily::V6,
            SocketAddr::V6(_) => AddressFamily::V4,
        };
        match self.take_relay_port(family, false, false) {
            Ok((ip, port)) => Additional::Waiting {
                bind: SocketAddr::new(ip, port),
            },
            Err(no_port) => Additional::Refused {
                family,
                code: no_port.code(),
            },
        }
    }

    /// Takes a relay port on one of the configured relay addresses of `family`: starting
    /// round-robin (so allocations spread over the addresses), and moving on to the next
    /// address when one has no free port, so one full address never refuses an allocation
    /// another could carry.
    fn take_relay_port(
        &mut self,
        family: AddressFamily,
        even: bool,
        pair: bool,
    ) -> Result<(IpAddr, u16), NoPort> {
        let shared = self.shared.clone();
        let candidates: usize = shared
            .config
            .relays
            .iter()
            .filter(|r| family_of(r.bind) == family)
            .count();
        if candidates == 0 {
            return Err(NoPort::NoAddress);
        }
        self.relay_cursor = self.relay_cursor.wrapping_add(1);
        let start = self.relay_cursor % candidates;
        let random = self.random();
        // Invariant: the pool's mutex is never held across a panic (no code panics inside).
        let mut ports = shared.ports.lock().unwrap_or_else(|e| e.into_inner());
        let mut ips = shared
            .config
            .relays
            .iter()
            .filter(|r| family_of(r.bind) == family)
            .map(|r| r.bind)
            .cycle()
            .skip(start)
            .take(candidates);
        ips.find_map(|ip| ports.take(ip, random, even, pair).map(|port| (ip, port)))
            .ok_or(NoPort::Full)
    }

    /// Takes the shell's answer to the allocation's outstanding `OpenRelay`: the first relay
    /// socket's, or, once that one is open, the second one's of a dual allocation.
    pub(crate) fn finish_allocate(
        &mut self,
        now: Instant,
        id: AllocationId,
        result: Result<(), RelayOpenError>,
    ) {
        let Some(a) = self.allocations.get_mut(id) else {
            return;
        };
        let State::Opening { additional, .. } = a.state else {
            return;
        };
        match additional {
            Additional::Opening { bind, attempts } => {
                self.finish_additional(now, id, bind, attempts, result)
            }
            _ => self.finish_first(now, id, result),
        }
    }

    /// The first relay socket: on success, open the second one (dual) or answer; when the
    /// port is taken by another process, try another; otherwise 508.
    fn finish_first(&mut self, now: Instant, id: AllocationId, result: Result<(), RelayOpenError>) {
        let shared = self.shared.clone();
        let Some(a) = self.allocations.get_mut(id) else {
            return;
        };
        let State::Opening {
            txid,
            attempts,
            fingerprint,
            retry,
            additional,
        } = a.state
        else {
            return;
        };
        let reservation = a.reservation;
        match result {
            Ok(()) => {
                if let Additional::Waiting { bind } = additional {
                    a.state = State::Opening {
                        txid,
                        attempts,
                        fingerprint,
                        retry,
                        additional: Additional::Opening { bind, attempts: 1 },
                    };
                    let dont_fragment = a.dont_fragment;
                    self.outputs.push_back(Output::OpenRelay {
                        id,
                        bind,
                        dont_fragment,
                    });
                } else {
                    self.complete_allocate(now, id, None);
                }
            }
            Err(RelayOpenError::AddrInUse)
                if retry != Retry::No && attempts < MAX_BIND_ATTEMPTS =>
            {
                let old = a.relay;
                match self.retake_port(old, retry, reservation) {
                    Some(port) => {
                        let Some(a) = self.allocations.get_mut(id) else {
                            return;
                        };
                        a.relay = SocketAddr::new(old.ip(), port);
                        a.advertised = shared.advertised(a.relay);
                        a.state = State::Opening {
                            txid,
                            attempts: attempts + 1,
                            fingerprint,
                            retry,
                            additional,
                        };
                        let (bind, dont_fragment) = (a.relay, a.dont_fragment);
                        let open = self.open_relay_output(id, bind, dont_fragment);
                        self.outputs.push_back(open);
                    }
                    None => {
                        if let Some(a) = self.allocations.get_mut(id) {
                            a.relay = SocketAddr::new(old.ip(), 0);
                        }
                        self.fail_allocate(now, id, ErrorCode::InsufficientCapacity);
                    }
                }
            }
            Err(_) => self.fail_allocate(now, id, ErrorCode::InsufficientCapacity),
        }
    }

    /// The second relay socket of a dual allocation. Its failure is not the allocation's:
    /// the client gets the first address with ADDRESS-ERROR-CODE (RFC 8656 §7.2 step 9) —
    /// 440 when the host cannot bind that family at all, 508 when no port could be had.
    fn finish_additional(
        &mut self,
        now: Instant,
        id: AllocationId,
        bind: SocketAddr,
        attempts: u8,
        result: Result<(), RelayOpenError>,
    ) {
        let family = AddressFamily::of(&bind);
        let refused = match result {
            Ok(()) => return self.complete_allocate(now, id, Some(bind)),
            Err(RelayOpenError::AddrInUse) if attempts < MAX_BIND_ATTEMPTS => {
                match self.retake_port(bind, Retry::Any, None) {
                    Some(port) => {
                        let Some(a) = self.allocations.get_mut(id) else {
                            return;
                        };
                        let bind = SocketAddr::new(bind.ip(), port);
                        if let State::Opening { additional, .. } = &mut a.state {
                            *additional = Additional::Opening {
                                bind,
                                attempts: attempts + 1,
                            };
                        }
                        let dont_fragment = a.dont_fragment;
                        self.outputs.push_back(Output::OpenRelay {
                            id,
                            bind,
                            dont_fragment,
                        });
                        return;
                    }
                    // `retake_port` gave the old port back already.
                    None => Additional::Refused {
                        family,
                        code: ErrorCode::InsufficientCapacity,
                    },
                }
            }
            Err(e) => {
                self.release_port(bind);
                let code = if e == RelayOpenError::AddrInUse {
                    ErrorCode::InsufficientCapacity
                } else {
                    ErrorCode::AddressFamilyNotSupported
                };
                Additional::Refused { family, code }
            }
        };
        if let Some(a) = self.allocations.get_mut(id) {
            if let State::Opening { additional, .. } = &mut a.state {
                *additional = refused;
            }
        }
        self.complete_allocate(now, id, None);
    }

    /// Takes another port on `old`'s IP, of the kind `retry` allows, and releases `old`'s (taken
    /// by another process). For a pair, the reserved next port moves too: the old one is
    /// released and `reservation` now promises the new port's neighbour. With no port to be had
    /// nothing moves but `old`'s release (and, for a pair, its reserved neighbour's, whose
    /// reservation is dropped).
    fn retake_port(
        &mut self,
        old: SocketAddr,
        retry: Retry,
        reservation: Option<ReservationToken>,
    ) -> Option<u16> {
        let random = self.random();
        let pair = retry == Retry::Pair;
        let port = {
            // Invariant: the pool's mutex is never held across a panic (no code panics inside).
            let mut ports = self.shared.ports.lock().unwrap_or_else(|e| e.into_inner());
            let port = ports.take(old.ip(), random, retry == Retry::Even, pair);
            ports.release(old.ip(), old.port());
            if pair {
                ports.release(old.ip(), old.port().saturating_add(1));
            }
            port
        };
        if let Some(token) = reservation.filter(|_| pair) {
            match port {
                Some(p) => {
                    if let Some(mut res) = self.shared.reservations.get_mut(&token) {
                        res.relay = SocketAddr::new(old.ip(), p + 1);
                    }
                }
                None => {
                    // Its port went back above; its quota unit goes too.
                    if let Some((_, res)) = self.shared.reservations.remove(&token) {
                        self.shared.quotas.release(&res.account);
                    }
                }
            }
        }
        port
    }

    /// Every relay socket the allocation gets is open (`second`: the dual allocation's
    /// second one): the allocation becomes active and the client gets its answer.
    fn complete_allocate(&mut self, now: Instant, id: AllocationId, second: Option<SocketAddr>) {
        let shared = self.shared.clone();
        let Some(a) = self.allocations.get_mut(id) else {
            return;
        };
        let State::Opening {
            txid,
            fingerprint,
            additional,
            ..
        } = a.state
        else {
            return;
        };
        let reservation = a.reservation;
        a.state = State::Active;
        a.dual = second.map(|relay| Dual {
            relay,
            advertised: shared.advertised(relay),
            expires: [Some(a.expires), Some(a.expires)],
        });
        let lifetime = a.expires.saturating_duration_since(a.created);
        let (advertised, five_tuple) = (a.advertised, a.five_tuple);
        let second_advertised = a.dual.map(|d| d.advertised);
        let username = a.username.clone();
        let key = a.key;
        let r = Responder {
            method: crate::stun::Method::ALLOCATE,
            txid,
            key: Some(&key),
            software: shared.config.software.as_deref(),
            fingerprint,
        };
        self.schedule_expiry(id);
        let resp = r.success(|b| {
            b.add_xor_address(AttrType::XOR_RELAYED_ADDRESS, &advertised)?;
            if let Some(second) = &second_advertised {
                b.add_xor_address(AttrType::XOR_RELAYED_ADDRESS, second)?;
            }
            if let Additional::Refused { family, code } = additional {
                b.add(
                    AttrType::ADDRESS_ERROR_CODE,
                    &address_error_code(family, code),
                )?;
            }
            b.add_u32(AttrType::LIFETIME, lifetime.as_secs() as u32)?;
            if let Some(token) = reservation {
                b.add(AttrType::RESERVATION_TOKEN, &token)?;
            }
            b.add_xor_address(AttrType::XOR_MAPPED_ADDRESS, &five_tuple.client)
        });
        // The event goes out before the response, so the allocation is logged (and
        // counted) by the time the client knows it exists.
        self.outputs
            .push_back(Output::Event(Event::AllocationCreated {
                id,
                five_tuple,
                username,
                relay: advertised,
                additional: second_advertised,
                lifetime,
            }));
        self.respond_and_remember(now, five_tuple, txid, resp);
    }

    /// Ends an Allocate that could not get its (first) relay socket: everything it holds
    /// goes back, and the client gets `code`.
    fn fail_allocate(&mut self, now: Instant, id: AllocationId, code: ErrorCode) {
        let Some(a) = self.allocations.remove(id) else {
            return;
        };
        let State::Opening {
            txid,
            fingerprint,
            additional,
            ..
        } = a.state
        else {
            return;
        };
        if let Some(token) = a.reservation {
            self.free_reservation(id, token, None);
        }
        self.timers.cancel(TimerKind::Reservation(id));
        self.tcp_allocation_ended(id, &a.kind);
        if let Additional::Waiting { bind } = additional {
            self.release_port(bind);
        }
        self.shared.quotas.release(&a.account);
        if a.relay.port() != 0 {
            self.release_port(a.relay);
        }
        let r = Responder {
            method: crate::stun::Method::ALLOCATE,
            txid,
            key: Some(&a.key),
            software: self.shared.config.software.as_deref(),
            fingerprint,
        };
        let resp = r.plain_error(code);
        self.respond_and_remember(now, a.five_tuple, txid, resp);
    }
}

/// The ADDITIONAL-ADDRESS-FAMILY of an Allocate: RFC 8656's 0x8000, or else the 0x8032 of the
/// turnbis drafts, which coturn (its `turnutils_uclient -Z` among others) still sends. 0x8032
/// is unassigned by IANA and comprehension-optional, so reading it as the same attribute
/// cannot misread another one; without this, those clients silently get single-family
/// allocations.
fn additional_address_family(msg: &Message) -> Result<Option<AddressFamily>, ()> {
    if let Some(v) = msg.additional_address_family() {
        return v.map(Some).map_err(|_| ());
    }
    match msg.get(DRAFT_ADDITIONAL_ADDRESS_FAMILY) {
        None => Ok(None),
        Some([f, _, _, _]) => AddressFamily::from_u8(*f).map(Some).ok_or(()),
        Some(_) => Err(()),
    }
}

/// ADDITIONAL-ADDRESS-FAMILY's code point in draft-ietf-tram-turnbis (before RFC 8656).
const DRAFT_ADDITIONAL_ADDRESS_FAMILY: AttrType = AttrType(0x8032);

/// The value of ADDRESS-ERROR-CODE (RFC 8656 §18.12): family, 13 reserved bits, class and
/// number as in ERROR-CODE, then the reason phrase.
fn address_error_code(family: AddressFamily, code: ErrorCode) -> Vec<u8> {
    let number = code.code();
    let mut v = vec![
        family.to_u8(),
        0,
        (number / 100) as u8,
        (number % 100) as u8,
    ];
    v.extend_from_slice(code.reason().as_bytes());
    v
}
