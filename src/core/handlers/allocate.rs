//! Allocate (RFC 8656 §7): reserve a relayed transport address for the client's 5-tuple.
//!
//! Handled in two steps, because binding the relay socket is I/O: the request is checked and
//! a port chosen here, the shell is asked to open the socket ([`Output::OpenRelay`]), and the
//! response is sent from [`Server::finish_allocate`] when the shell reports back.

use crate::core::allocation::{Allocation, AllocationId, State, Stats};
use crate::core::auth::SessionKey;
use crate::core::five_tuple::FiveTuple;
use crate::core::reply::Responder;
use crate::core::tcp_relay::TCP;
use crate::core::timer::TimerKind;
use crate::core::{Event, Output, RelayOpenError, Reservation, Server};
use crate::stun::{AddressFamily, AttrType, Message};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// REQUESTED-TRANSPORT value for UDP (IANA protocol number 17).
const UDP: u8 = 17;
/// RFC 8656 §7.2: a reserved port is held for about 30 seconds.
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// Ports tried before answering 508 when other processes hold the ones we pick.
const MAX_BIND_ATTEMPTS: u8 = 8;

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::V4,
        IpAddr::V6(_) => AddressFamily::V6,
    }
}

impl Server {
    pub(crate) fn handle_allocate(
        &mut self,
        now: Instant,
        from: FiveTuple,
        msg: &Message,
        username: &str,
        key: &SessionKey,
    ) -> Option<Vec<u8>> {
        let shared = self.shared.clone();
        let r = Responder::to(msg, Some(key), shared.config.software.as_deref());

        // One allocation per 5-tuple (RFC 8656 §7.2 step 2). A retransmission of the request
        // that is still opening its socket gets its answer when the socket is open.
        if let Some(a) = self
            .allocations
            .id_for(&from)
            .and_then(|id| self.allocations.get(id))
        {
            if let State::Opening { txid, .. } = a.state {
                if txid == msg.transaction_id() {
                    return None;
                }
            }
            return Some(r.plain_error(437));
        }
        // Draining before exit: existing allocations keep relaying, new ones go elsewhere
        // (508: the server cannot carry out the request for capacity reasons).
        if self.shared.quotas.is_draining() {
            return Some(r.plain_error(508));
        }
        let tcp = match msg.requested_transport() {
            Some(Ok(UDP)) => false,
            Some(Ok(TCP)) => match Self::check_tcp_allocate(from, msg) {
                Ok(()) => true,
                Err(code) => return Some(r.plain_error(code)),
            },
            Some(Ok(_)) => return Some(r.plain_error(442)),
            None | Some(Err(_)) => return Some(r.plain_error(400)),
        };
        let even = match msg.even_port().transpose() {
            Ok(v) => v,
            Err(_) => return Some(r.plain_error(400)),
        };
        let token = match msg.reservation_token().transpose() {
            Ok(v) => v,
            Err(_) => return Some(r.plain_error(400)),
        };
        let family = match msg.requested_address_family().transpose() {
            Ok(v) => v,
            Err(_) => return Some(r.plain_error(440)),
        };
        // RFC 8656 §7.2: RESERVATION-TOKEN excludes EVEN-PORT and REQUESTED-ADDRESS-FAMILY.
        if token.is_some() && (even.is_some() || family.is_some()) {
            return Some(r.plain_error(400));
        }
        let cfg = &shared.config;
        let lifetime = match msg.lifetime().transpose() {
            // The smaller of the request and the maximum, but never below the default.
            Ok(Some(secs)) => Duration::from_secs(secs as u64)
                .min(cfg.max_lifetime)
                .max(cfg.default_lifetime),
            Ok(None) => cfg.default_lifetime,
            Err(_) => return Some(r.plain_error(400)),
        };

        let (relay, reservation, retryable) = if let Some(t) = token {
            match shared.reservations.remove(&t) {
                Some((_, res)) if res.expires > now => (res.relay, None, false),
                Some((_, res)) => {
                    self.release_port(res.relay);
                    return Some(r.plain_error(508));
                }
                None => return Some(r.plain_error(508)),
            }
        } else {
            let family = family.unwrap_or(AddressFamily::V4);
            let Some(ip) = self.pick_relay_ip(family) else {
                return Some(r.plain_error(440));
            };
            let random = self.random();
            let pair = even == Some(true);
            let port = {
                let mut ports = shared.ports.lock().unwrap_or_else(|e| e.into_inner());
                ports.take(ip, random, even.is_some(), pair)
            };
            let Some(port) = port else {
                return Some(r.plain_error(508));
            };
            let reservation = if pair {
                let token = self.random().to_be_bytes();
                let next = SocketAddr::new(ip, port + 1);
                let expires = now + RESERVATION_LIFETIME;
                shared.reservations.insert(
                    token,
                    Reservation {
                        relay: next,
                        expires,
                    },
                );
                self.timers.push(expires, TimerKind::Reservation(token));
                Some(token)
            } else {
                None
            };
            (SocketAddr::new(ip, port), reservation, even.is_none())
        };

        // Quotas are checked last, once everything else succeeded, so a refused request
        // holds nothing: the port (and any reservation) taken above goes back.
        if !shared
            .quotas
            .acquire(username, cfg.user_quota, cfg.total_quota)
        {
            self.release_port(relay);
            if let Some((_, res)) = reservation.and_then(|t| shared.reservations.remove(&t)) {
                self.release_port(res.relay);
            }
            self.counters.quota += 1;
            return Some(r.plain_error(486));
        }
        let id = self.allocations.next_id();
        let dont_fragment = msg.dont_fragment();
        self.allocations.insert(Allocation {
            id,
            five_tuple: from,
            username: username.into(),
            key: *key,
            relay,
            advertised: shared.advertised(relay),
            created: now,
            expires: now + lifetime,
            state: State::Opening {
                txid: msg.transaction_id(),
                attempts: 1,
                reservation,
                fingerprint: msg.has_fingerprint(),
                retryable,
            },
            dont_fragment,
            permissions: Default::default(),
            channels: Default::default(),
            stats: Stats::default(),
            next_sweep: None,
        });
        if tcp {
            self.tcp_relay.allocs.insert(id, Vec::new());
        }
        let open = self.open_relay_output(id, relay, dont_fragment);
        self.outputs.push_back(open);
        None
    }

    /// Round-robin over the configured relay addresses of `family`.
    fn pick_relay_ip(&mut self, family: AddressFamily) -> Option<IpAddr> {
        let relays = &self.shared.config.relays;
        let candidates = relays
            .iter()
            .filter(|r| family_of(r.bind) == family)
            .count();
        if candidates == 0 {
            return None;
        }
        self.relay_cursor = self.relay_cursor.wrapping_add(1);
        let k = self.relay_cursor % candidates;
        relays
            .iter()
            .filter(|r| family_of(r.bind) == family)
            .nth(k)
            .map(|r| r.bind)
    }

    /// Completes an Allocate once the shell has tried to open the relay socket.
    pub(crate) fn finish_allocate(
        &mut self,
        now: Instant,
        id: AllocationId,
        result: Result<(), RelayOpenError>,
    ) {
        let shared = self.shared.clone();
        let Some(a) = self.allocations.get_mut(id) else {
            return;
        };
        let State::Opening {
            txid,
            attempts,
            reservation,
            fingerprint,
            retryable,
        } = a.state
        else {
            return;
        };
        let key = a.key;
        let five_tuple = a.five_tuple;
        let r = Responder {
            method: crate::stun::Method::ALLOCATE,
            txid,
            key: Some(&key),
            software: shared.config.software.as_deref(),
            fingerprint,
        };
        match result {
            Ok(()) => {
                a.state = State::Active;
                let lifetime = a.expires.saturating_duration_since(a.created);
                let (advertised, expires) = (a.advertised, a.expires);
                let username = a.username.clone();
                self.timers.push(expires, TimerKind::AllocationExpiry(id));
                let resp = r.success(|b| {
                    b.add_xor_address(AttrType::XOR_RELAYED_ADDRESS, &advertised)?;
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
                        lifetime,
                    }));
                self.respond_and_remember(now, five_tuple, txid, resp);
            }
            Err(RelayOpenError::AddrInUse) if retryable && attempts < MAX_BIND_ATTEMPTS => {
                let old = a.relay;
                let random = self.random();
                let port = {
                    let mut ports = shared.ports.lock().unwrap_or_else(|e| e.into_inner());
                    let port = ports.take(old.ip(), random, false, false);
                    ports.release(old.ip(), old.port());
                    port
                };
                let Some(a) = self.allocations.get_mut(id) else {
                    return;
                };
                match port {
                    Some(port) => {
                        a.relay = SocketAddr::new(old.ip(), port);
                        a.advertised = shared.advertised(a.relay);
                        a.state = State::Opening {
                            txid,
                            attempts: attempts + 1,
                            reservation,
                            fingerprint,
                            retryable,
                        };
                        let (bind, dont_fragment) = (a.relay, a.dont_fragment);
                        let open = self.open_relay_output(id, bind, dont_fragment);
                        self.outputs.push_back(open);
                    }
                    None => {
                        a.relay = SocketAddr::new(old.ip(), 0);
                        self.fail_allocate(
                            now,
                            id,
                            five_tuple,
                            txid,
                            r.plain_error(508),
                            reservation,
                        );
                    }
                }
            }
            Err(_) => {
                self.fail_allocate(now, id, five_tuple, txid, r.plain_error(508), reservation)
            }
        }
    }

    fn fail_allocate(
        &mut self,
        now: Instant,
        id: AllocationId,
        five_tuple: FiveTuple,
        txid: crate::stun::TransactionId,
        resp: Vec<u8>,
        reservation: Option<[u8; 8]>,
    ) {
        if let Some((_, res)) = reservation.and_then(|t| self.shared.reservations.remove(&t)) {
            self.release_port(res.relay);
        }
        self.tcp_allocation_ended(id);
        if let Some(a) = self.allocations.remove(id) {
            self.shared.quotas.release(&a.username);
            if a.relay.port() != 0 {
                self.release_port(a.relay);
            }
        }
        self.respond_and_remember(now, five_tuple, txid, resp);
    }
}
