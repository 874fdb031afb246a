//! Property test: random sequences of client requests, garbage, relayed data and peer
//! datagrams, with random clock advances. Whatever happens, the core must not panic, every
//! `Transmit` must parse as STUN, nothing may be relayed to a peer the filter denies or
//! without a permission, ports must be accounted for, and no allocation may outlive its
//! expiry once `handle_timeout` has run, nor a stream client's allocation its connection.

use super::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Moves the clock, firing timers as the shell would.
    Advance(u16),
    /// Moves the clock without firing timers (a late shell).
    Jump(u8),
    Allocate {
        c: u8,
        lifetime: Option<u32>,
        even: Option<bool>,
        family: Option<u8>,
        /// ADDITIONAL-ADDRESS-FAMILY value (2 asks for a dual allocation).
        additional: Option<u8>,
        df: bool,
        open: u8,
    },
    ClaimToken {
        c: u8,
    },
    Refresh {
        c: u8,
        lifetime: Option<u32>,
        family: Option<u8>,
    },
    Permission {
        c: u8,
        peers: Vec<u8>,
    },
    ChannelBind {
        c: u8,
        number: u8,
        peer: u8,
    },
    Send {
        c: u8,
        peer: u8,
        len: u16,
    },
    ChannelData {
        c: u8,
        number: u8,
        len: u16,
    },
    /// A peer datagram for a live allocation, or (`live` false) any allocation ever opened.
    Peer {
        live: bool,
        alloc: u8,
        peer: u8,
        len: u16,
    },
    /// Allocate, CreatePermission and ChannelBind in a row, as a real client does.
    Session {
        c: u8,
        peer: u8,
        number: u8,
    },
    Binding {
        c: u8,
    },
    Retransmit {
        c: u8,
    },
    Corrupt {
        c: u8,
        at: u16,
        xor: u8,
    },
    Garbage {
        c: u8,
        bytes: Vec<u8>,
    },
    /// The client's connection closes (a no-op for UDP clients).
    CloseConnection {
        c: u8,
    },
}

fn peers() -> Vec<SocketAddr> {
    [
        "198.51.100.1:5000",
        "198.51.100.2:6000",
        "[2001:db8:1::1]:5000",
        "10.0.0.1:5000",
        "127.0.0.1:80",
        "0.0.0.0:1",
        "192.0.2.10:50000",
        "[::ffff:10.0.0.1]:5000",
        "[2001:db8::5]:5000",
        "[::1]:9",
    ]
    .iter()
    .map(|s| sa(s))
    .collect()
}

const CHANNELS: [u16; 5] = [0x4000, 0x4001, 0x7FFF, 0x3FFF, 0x8000];

fn clients() -> Vec<Client> {
    vec![
        Client::alice(udp("192.0.2.100:40000")),
        Client::bob(udp("192.0.2.101:40000")),
        Client::alice(udp("[2001:db8:2::100]:40000")),
        Client::rest(
            tcp("192.0.2.102:40000"),
            UNIX_T0 + 2000,
            "carol",
            REST_SECRET,
        ),
        Client::alice(udp("192.0.2.100:40001")),
        // Bob's name with alice's password: never authenticates.
        Client::new(udp("192.0.2.103:40000"), "bob", "alice-pw"),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    use proptest::collection::vec;
    use proptest::option::weighted;
    // Biased towards the first clients, allowed peers and valid channels, so that sequences
    // often get as far as relaying data; the rest keeps the error paths busy.
    let c = prop_oneof![4 => 0u8..3, 1 => 0u8..6];
    let peer = prop_oneof![4 => 0u8..3, 1 => 0u8..10];
    let number = prop_oneof![4 => 0u8..3, 1 => 0u8..5];
    let len = prop_oneof![0u16..8, 0u16..1500];
    let life = weighted(0.3, prop_oneof![Just(0u32), 1u32..700, Just(100_000)]);
    let allocate = (
        c.clone(),
        life.clone(),
        weighted(0.2, any::<bool>()),
        weighted(0.3, 0u8..4),
        weighted(0.3, prop_oneof![3 => Just(2u8), 1 => 0u8..4]),
        any::<bool>(),
        0u8..10,
    )
        .prop_map(
            |(c, lifetime, even, family, additional, df, open)| Op::Allocate {
                c,
                lifetime,
                even,
                family,
                additional,
                df,
                open,
            },
        );
    let n = number.clone();
    prop_oneof![
        2 => prop_oneof![0u16..30, 0u16..700].prop_map(Op::Advance),
        1 => any::<u8>().prop_map(Op::Jump),
        3 => allocate,
        1 => c.clone().prop_map(|c| Op::ClaimToken { c }),
        2 => (c.clone(), life, weighted(0.3, 0u8..4))
            .prop_map(|(c, lifetime, family)| Op::Refresh { c, lifetime, family }),
        4 => (c.clone(), vec(peer.clone(), 0..4))
            .prop_map(|(c, peers)| Op::Permission { c, peers }),
        3 => (c.clone(), n.clone(), peer.clone())
            .prop_map(|(c, number, peer)| Op::ChannelBind { c, number, peer }),
        5 => (c.clone(), peer.clone(), len.clone())
            .prop_map(|(c, peer, len)| Op::Send { c, peer, len }),
        5 => (c.clone(), n.clone(), len.clone())
            .prop_map(|(c, number, len)| Op::ChannelData { c, number, len }),
        6 => (proptest::bool::weighted(0.8), any::<u8>(), peer.clone(), len)
            .prop_map(|(live, alloc, peer, len)| Op::Peer { live, alloc, peer, len }),
        2 => (c.clone(), peer, number)
            .prop_map(|(c, peer, number)| Op::Session { c, peer, number }),
        1 => c.clone().prop_map(|c| Op::Binding { c }),
        1 => c.clone().prop_map(|c| Op::Retransmit { c }),
        2 => (c.clone(), any::<u16>(), 1u8..=255)
            .prop_map(|(c, at, xor)| Op::Corrupt { c, at, xor }),
        1 => (c.clone(), vec(any::<u8>(), 0..64)).prop_map(|(c, bytes)| Op::Garbage { c, bytes }),
        1 => c.prop_map(|c| Op::CloseConnection { c }),
    ]
}

/// The fake shell, the clients, and what the test remembers between operations.
struct World {
    h: Harness,
    clients: Vec<Client>,
    /// RESERVATION-TOKENs handed out so far.
    tokens: Vec<[u8; 8]>,
    peers: Vec<SocketAddr>,
}

impl World {
    fn new(seed: u64) -> World {
        World {
            // With the kernel fast path on: the harness checks after every step that each live
            // entry relays only what the core would (`Harness::check_kernel`).
            h: Harness::from_shared(
                Setup {
                    fast_path: true,
                    ..Setup::default()
                }
                .shared(),
                seed,
            ),
            clients: clients(),
            tokens: Vec::new(),
            peers: peers(),
        }
    }

    /// A signed request from client `c`, after the nonce dance (the client keeps the last
    /// datagram it sent, for retransmission and corruption).
    fn request(&mut self, c: u8, method: Method, attrs: &[Attr]) {
        let c = c as usize % self.clients.len();
        let client = &mut self.clients[c];
        let resp = client.try_request(&mut self.h, method, attrs);
        if let Some(r) = resp {
            if r.class() == Class::SuccessResponse && r.has(AttrType::RESERVATION_TOKEN) {
                self.tokens.push(r.token());
            }
        }
    }

    fn client_input(&mut self, c: u8, data: &[u8]) -> Option<Forward> {
        let c = c as usize % self.clients.len();
        let ft = self.clients[c].ft;
        let fwd = self.h.input(ft, data);
        if let Some(f) = &fwd {
            let a = self
                .h
                .server
                .allocation(f.id)
                .expect("forward for a live allocation");
            assert_eq!(a.five_tuple, ft, "forward on someone else's allocation");
            assert!(
                a.permissions.allows(f.peer.ip(), self.h.now),
                "forward without permission to {}",
                f.peer
            );
            assert!(
                a.has_family(crate::stun::AddressFamily::of(&f.peer)),
                "forward to {} on a family the allocation does not hold",
                f.peer
            );
        }
        fwd
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Advance(s) => {
                self.h.advance(secs(s.into()));
                self.check_expiry();
            }
            Op::Jump(s) => self.h.jump(secs(s.into())),
            Op::Allocate {
                c,
                lifetime: l,
                even,
                family: f,
                additional,
                df,
                open,
            } => {
                let mut attrs = vec![transport_udp()];
                attrs.extend(l.map(lifetime));
                attrs.extend(even.map(even_port));
                attrs.extend(f.map(family));
                attrs.extend(
                    additional
                        .map(|v| Attr::Raw(AttrType::ADDITIONAL_ADDRESS_FAMILY, vec![v, 0, 0, 0])),
                );
                if df {
                    attrs.push(dont_fragment());
                }
                match open {
                    8 => self
                        .h
                        .open_results
                        .push_back(Err(RelayOpenError::AddrInUse)),
                    9 => self.h.open_results.push_back(Err(RelayOpenError::Other)),
                    _ => {}
                }
                self.request(c, Method::ALLOCATE, &attrs);
                self.h.open_results.clear();
            }
            Op::ClaimToken { c } => {
                let t = self.tokens.last().copied().unwrap_or(*b"nosuchtk");
                self.request(c, Method::ALLOCATE, &[transport_udp(), token(t)]);
            }
            Op::Refresh {
                c,
                lifetime: l,
                family: f,
            } => {
                let mut attrs: Vec<Attr> = l.map(lifetime).into_iter().collect();
                attrs.extend(f.map(family));
                self.request(c, Method::REFRESH, &attrs);
            }
            Op::Permission { c, peers } => {
                let attrs: Vec<Attr> = peers
                    .iter()
                    .map(|p| Attr::Peer(self.peers[*p as usize]))
                    .collect();
                self.request(c, Method::CREATE_PERMISSION, &attrs);
            }
            Op::ChannelBind { c, number, peer } => {
                let attrs = [
                    channel(CHANNELS[number as usize]),
                    Attr::Peer(self.peers[peer as usize]),
                ];
                self.request(c, Method::CHANNEL_BIND, &attrs);
            }
            Op::Send { c, peer, len } => {
                let payload = vec![0xAB; len as usize];
                let peer = self.peers[peer as usize];
                let ind = build(
                    Method::SEND,
                    Class::Indication,
                    TransactionId([c; 12]),
                    &[Attr::Peer(peer), data(&payload)],
                    None,
                    false,
                );
                if let Some(f) = self.client_input(c, &ind) {
                    assert_eq!(f.peer, peer);
                    assert_eq!(&ind[f.payload], &payload[..]);
                }
            }
            Op::ChannelData { c, number, len } => {
                let payload = vec![0xCD; len as usize];
                let msg = channel_data_msg(CHANNELS[number as usize], &payload, len % 2 == 0);
                if let Some(f) = self.client_input(c, &msg) {
                    assert_eq!(&msg[f.payload.clone()], &payload[..]);
                    let a = self.h.server.allocation(f.id).unwrap();
                    let b = a
                        .channels
                        .by_number(CHANNELS[number as usize], self.h.now)
                        .expect("a bound channel");
                    assert_eq!(b.peer, f.peer);
                }
            }
            Op::Peer {
                live,
                alloc,
                peer,
                len,
            } => {
                let mut ids: Vec<AllocationId> = if live {
                    self.h.server.allocations().map(|a| a.id).collect()
                } else {
                    self.h.opened.iter().map(|o| o.id).collect()
                };
                ids.dedup();
                if ids.is_empty() {
                    return;
                }
                let id = ids[alloc as usize % ids.len()];
                let peer = self.peers[peer as usize];
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let Some((out, buf)) = self.h.peer_raw(id, peer, &payload) else {
                    return;
                };
                let a = self
                    .h
                    .server
                    .allocation(id)
                    .expect("framed for a live allocation");
                assert_eq!(out.to, a.five_tuple);
                assert!(a.permissions.allows(peer.ip(), self.h.now));
                assert!(self.h.shared.peer_filter.load().allows(peer));
                let framed = &buf[out.range];
                if crate::stun::ChannelData::is_channel_data(framed) {
                    let cd = crate::stun::ChannelData::parse(framed).unwrap();
                    assert_eq!(cd.data, &payload[..]);
                    assert_eq!(
                        a.channels.by_number(cd.channel, self.h.now).unwrap().peer,
                        peer
                    );
                } else {
                    let m = Message::parse(framed).expect("Data indication parses");
                    assert_eq!((m.method(), m.class()), (Method::DATA, Class::Indication));
                    assert_eq!(m.xor_peer_address().unwrap().unwrap(), peer);
                    assert_eq!(m.data().unwrap(), &payload[..]);
                }
            }
            Op::Session { c, peer, number } => {
                self.request(c, Method::ALLOCATE, &[transport_udp()]);
                let peer = self.peers[peer as usize];
                self.request(c, Method::CREATE_PERMISSION, &[Attr::Peer(peer)]);
                let attrs = [channel(CHANNELS[number as usize]), Attr::Peer(peer)];
                self.request(c, Method::CHANNEL_BIND, &attrs);
            }
            Op::Binding { c } => {
                let req = build(
                    Method::BINDING,
                    Class::Request,
                    TransactionId([c; 12]),
                    &[],
                    None,
                    c % 2 == 0,
                );
                assert!(self.client_input(c, &req).is_none());
            }
            Op::Retransmit { c } => {
                if let Some(req) = self.clients[c as usize % self.clients.len()]
                    .last_sent
                    .clone()
                {
                    assert!(self.client_input(c, &req).is_none());
                }
            }
            Op::Corrupt { c, at, xor } => {
                if let Some(mut req) = self.clients[c as usize % self.clients.len()]
                    .last_sent
                    .clone()
                {
                    let i = at as usize % req.len();
                    req[i] ^= xor;
                    self.client_input(c, &req);
                }
            }
            Op::Garbage { c, bytes } => {
                self.client_input(c, &bytes);
            }
            Op::CloseConnection { c } => {
                let ft = self.clients[c as usize % self.clients.len()].ft;
                let had = self.h.server.has_allocation(&ft);
                let others = self.h.allocation_count() - usize::from(had);
                self.h.server.handle_connection_closed(self.h.now, ft);
                self.h.drain();
                if ft.transport.is_stream() {
                    assert!(
                        !self.h.server.has_allocation(&ft),
                        "outlived its connection"
                    );
                    assert_eq!(self.h.allocation_count(), others, "others untouched");
                } else {
                    assert_eq!(
                        self.h.server.has_allocation(&ft),
                        had,
                        "UDP has no connection"
                    );
                }
            }
        }
        self.h.transmits.clear();
        self.check_ports();
    }

    /// After `handle_timeout(now)`, nothing is past its expiry.
    fn check_expiry(&self) {
        let now = self.h.now;
        for a in self.h.server.allocations() {
            assert_eq!(
                a.state,
                crate::core::allocation::State::Active,
                "the fake shell answers every OpenRelay"
            );
            assert!(a.expires > now, "allocation {:?} outlived its expiry", a.id);
            for (relay, expires) in a.held_relays() {
                assert!(expires > now, "{relay} of {:?} outlived its expiry", a.id);
            }
        }
        if let Some(t) = self.h.server.poll_timeout() {
            assert!(t > now, "a due deadline survived handle_timeout");
        }
        for r in self.h.shared.reservations.iter() {
            assert!(
                r.expires > now,
                "a lapsed reservation survived handle_timeout"
            );
        }
    }

    /// Every port in use belongs to an allocation or a reservation, and vice versa.
    fn check_ports(&self) {
        let used = self.h.ports_in_use(relay_v4()) + self.h.ports_in_use(relay_v6());
        let mut relays: Vec<SocketAddr> = self
            .h
            .server
            .allocations()
            .flat_map(|a| {
                // An allocation still opening holds its first port (the fake shell answers at
                // once, so none is left opening between ops).
                a.held_relays().map(|(r, _)| r).collect::<Vec<_>>()
            })
            .collect();
        let owners = relays.len() + self.h.shared.reservations.len();
        assert_eq!(used, owners, "port accounting");
        relays.extend(self.h.shared.reservations.iter().map(|r| r.relay));
        let n = relays.len();
        relays.sort();
        relays.dedup();
        assert_eq!(relays.len(), n, "two owners of one relay port");
        // Quota units: one per allocation, one per reservation (a redeemed one's passed on).
        assert_eq!(
            self.h.shared.quotas.total() as usize,
            self.h.allocation_count() + self.h.shared.reservations.len(),
            "quota accounting"
        );
        let timers = self.h.server.pending_timers();
        assert!(
            timers <= self.h.server.pending_timers_bound(),
            "{timers} deadlines for {} allocations",
            self.h.allocation_count()
        );
    }

    fn finish(&mut self) {
        // Everything ends once the longest lifetime has passed.
        self.h.advance(secs(3601));
        self.check_expiry();
        assert_eq!(self.h.allocation_count(), 0);
        assert_eq!(
            self.h.ports_in_use(relay_v4()) + self.h.ports_in_use(relay_v6()),
            0
        );
        assert!(self.h.shared.reservations.is_empty());
        assert_eq!(self.h.server.poll_timeout(), None);
        assert_eq!(self.h.server.pending_timers(), 0);
        assert_eq!(self.h.shared.quotas.total(), 0);
        assert!(
            self.h.kernel.is_empty(),
            "kernel entries left: {:?}",
            self.h.kernel
        );
        let created = self.h.created().len();
        assert_eq!(
            self.h.ended().len(),
            created,
            "every created allocation ended once"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Failures print the shrunk input; no regression files in the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_traffic_keeps_the_invariants(
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..100),
    ) {
        let mut w = World::new(seed);
        for op in ops {
            w.apply(op);
        }
        w.finish();
    }
}
