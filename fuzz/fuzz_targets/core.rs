//! The whole sans-IO core, driven like the shell drives it, by a program decoded from the
//! fuzz input: datagrams from four clients (three UDP, one TCP), requests the harness signs
//! with the client's last NONCE (so the fuzzer gets past authentication), peer datagrams, relay
//! socket results, connection closes, and a fake clock that only moves forward.
//!
//! Client 2 signs as a second user (bob), so reservation tokens meet another user too; an
//! Allocate may carry EVEN-PORT with the R bit, or the RESERVATION-TOKEN last handed out.
//!
//! Invariants checked after every step:
//! - no panic;
//! - every `Transmit` parses as STUN;
//! - no `Forward` goes to a peer the filter refuses, and no peer datagram the filter refuses
//!   reaches a client — the own-host rule included: the relay IP is this host's, so only its
//!   relay ports may be reached, and peers on it at other ports (a host service) never are;
//! - after a stricter filter is stored and `handle_peer_filter_changed` runs, the same holds
//!   against the new filter at once;
//! - after `handle_timeout(now)`, no active allocation has `expires <= now`;
//! - every bound holds: deadlines ≤ `pending_timers_bound()` (three per allocation plus one
//!   per RFC 6062 connection), cached responses ≤ the cache's capacity, each user's quota
//!   units (allocations + reservations) ≤ `user_quota`, quota units = allocations +
//!   reservations exactly, ports in use = the ports allocations and reservations hold,
//!   permissions and channels per allocation ≤ `max_permissions`/`max_channels`, RFC 6062
//!   connections ≤ 64 per TCP allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use turnd::core::allocation::{Additional, State};
use turnd::core::auth::{long_term_key, Credentials, Md5Key, UserSecret};
use turnd::core::nonce::NonceKey;
use turnd::core::own_host::{HostAddrs, OwnHost};
use turnd::core::peer_filter::{Cidr, PeerFilter};
use turnd::core::ports::PortPool;
use turnd::core::tcp_relay::MAX_PEER_CONNECTIONS;
use turnd::core::{
    AllocationId, CoreConfig, FiveTuple, Output, RelayAddr, RelayOpenError, Server, Shared,
    Transport, PEER_HEADROOM, PEER_TAILROOM,
};
use turnd::stun::{AttrType, Class, Message, MessageBuilder, MessageType, Method, TransactionId};

const REALM: &str = "fuzz";
const USER: &str = "alice";
const PASSWORD: &str = "alice-pw";
const OTHER_USER: &str = "bob";
const OTHER_PASSWORD: &str = "bob-pw";
const USER_QUOTA: u32 = 3;
const MAX_PERMISSIONS: u32 = 6;
const MAX_CHANNELS: u32 = 3;

/// The relay IP: inside the allowed 198.51.100.0/24, so only the own-host rule keeps its
/// non-relay ports out of reach.
const RELAY_IP: &str = "198.51.100.10";
const RELAY_PORTS: (u16, u16) = (50000, 50007);

/// The filter the program starts with: 198.51.100.0/24 allowed, this host (the listener and
/// the relay IP) own. `stricter` also denies 198.51.100.0/31 (a reload taking a peer away).
fn filter(stricter: bool) -> PeerFilter {
    let allow = vec![Cidr::new("198.51.100.0".parse().unwrap(), 24).unwrap()];
    let deny = if stricter {
        vec![Cidr::new("198.51.100.0".parse().unwrap(), 31).unwrap()]
    } else {
        Vec::new()
    };
    let relay: IpAddr = RELAY_IP.parse().unwrap();
    PeerFilter::new(allow, deny).with_own_host(OwnHost::new(&HostAddrs {
        listeners: vec!["192.0.2.1:3478".parse().unwrap()],
        relays: vec![RelayAddr {
            bind: relay,
            advertised: relay,
        }],
        relay_ports: RELAY_PORTS,
        interfaces: Vec::new(),
    }))
}

fn shared() -> Arc<Shared> {
    let relay: IpAddr = RELAY_IP.parse().unwrap();
    Arc::new(Shared {
        config: CoreConfig {
            relays: vec![RelayAddr {
                bind: relay,
                advertised: relay,
            }],
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            nonce_lifetime: Duration::from_secs(600),
            user_quota: USER_QUOTA,
            max_permissions: MAX_PERMISSIONS,
            max_channels: MAX_CHANNELS,
            ..CoreConfig::default()
        },
        credentials: Credentials::new(
            REALM,
            [
                (USER.to_string(), UserSecret::Password(PASSWORD.into())),
                (
                    OTHER_USER.to_string(),
                    UserSecret::Password(OTHER_PASSWORD.into()),
                ),
            ],
            ["rest".to_string()],
        )
        .into(),
        nonce_key: NonceKey::new([7; 32]),
        peer_filter: filter(false).into(),
        ports: Mutex::new(PortPool::new(&[relay], RELAY_PORTS.0, RELAY_PORTS.1)),
        reservations: Default::default(),
        tcp_connections: Default::default(),
        quotas: Default::default(),
    })
}

/// Peers the program may name: allowed, denied in several disguises, and this host's relay IP
/// at a relay port (another allocation's relayed address: allowed) and at other ports (a
/// service of the host: never).
const PEERS: [&str; 11] = [
    "198.51.100.1:5000",
    "198.51.100.2:6000",
    "198.51.100.10:50001",
    "198.51.100.10:22",
    "198.51.100.10:3478",
    "10.0.0.1:5000",
    "127.0.0.1:80",
    "169.254.169.254:80",
    "[::ffff:127.0.0.1]:80",
    "[64:ff9b::a00:1]:80",
    "[::1]:80",
];

fn clients() -> [FiveTuple; 4] {
    let server: SocketAddr = "192.0.2.1:3478".parse().unwrap();
    let udp = |c: &str| FiveTuple::udp(c.parse().unwrap(), server);
    let mut tcp = udp("203.0.113.4:40004");
    tcp.transport = Transport::Tcp;
    [
        udp("203.0.113.1:40001"),
        udp("203.0.113.2:40002"),
        udp("203.0.113.3:40003"),
        tcp,
    ]
}

fn key() -> &'static Md5Key {
    static K: OnceLock<Md5Key> = OnceLock::new();
    K.get_or_init(|| long_term_key(USER, REALM, PASSWORD))
}

fn other_key() -> &'static Md5Key {
    static K: OnceLock<Md5Key> = OnceLock::new();
    K.get_or_init(|| long_term_key(OTHER_USER, REALM, OTHER_PASSWORD))
}

/// Who client `i` is: client 2 is bob, the others alice.
fn user_of(client: usize) -> (&'static str, &'static Md5Key) {
    if client == 2 {
        (OTHER_USER, other_key())
    } else {
        (USER, key())
    }
}

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }
    fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = (self.byte().unwrap_or(0) as usize)
            .min(max)
            .min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

struct Run {
    server: Server,
    shared: Arc<Shared>,
    now: Instant,
    clients: [FiveTuple; 4],
    nonces: [Option<Vec<u8>>; 4],
    txid: u64,
    /// Answer for the next `OpenRelay`s: true = AddrInUse.
    fail_open: u8,
    /// The last RESERVATION-TOKEN an Allocate answer carried.
    token: Option<[u8; 8]>,
}

impl Run {
    fn drain(&mut self) {
        while let Some(out) = self.server.poll_output() {
            match out {
                Output::Transmit { to, payload } => {
                    let msg = Message::parse(&payload).expect("every Transmit parses as STUN");
                    if let Some(Ok(token)) = msg.reservation_token() {
                        self.token = Some(token);
                    }
                    if msg.class() == Class::ErrorResponse {
                        if let Some(Ok(nonce)) = msg.nonce() {
                            if let Some(i) = self.clients.iter().position(|c| *c == to) {
                                self.nonces[i] = Some(nonce.to_vec());
                            }
                        }
                    }
                }
                Output::OpenRelay { id, .. } => {
                    let r = if self.fail_open & 1 == 1 {
                        Err(RelayOpenError::AddrInUse)
                    } else if self.fail_open & 2 == 2 {
                        Err(RelayOpenError::Other)
                    } else {
                        Ok(())
                    };
                    self.fail_open >>= 2;
                    self.server.handle_relay_opened(self.now, id, r);
                }
                // FastPath only with `CoreConfig::fast_path` (the XDP program attached), which
                // this target leaves off; the core tests' kernel-map model checks those entries.
                Output::CloseRelay { .. }
                | Output::TcpRelay(_)
                | Output::Event(_)
                | Output::FastPath(_) => {}
            }
        }
    }

    fn check_forward(&self, fwd: Option<turnd::core::Forward>, len: usize) {
        if let Some(f) = fwd {
            assert!(
                self.shared.peer_filter.load().allows(f.peer),
                "forward to refused peer {}",
                f.peer
            );
            assert!(f.payload.end <= len);
        }
    }

    /// Every structure a client grows is within its bound.
    fn check_bounds(&self) {
        let s = &self.server;
        assert!(
            s.pending_timers() <= s.pending_timers_bound(),
            "{} deadlines, bound {}",
            s.pending_timers(),
            s.pending_timers_bound()
        );
        assert!(s.cached_responses() <= s.cached_responses_capacity());
        let allocations = s.allocations().count();
        let reservations = self.shared.reservations.len();
        assert_eq!(
            self.shared.quotas.total() as usize,
            allocations + reservations,
            "quota units: one per allocation and per reservation"
        );
        for user in [USER, OTHER_USER] {
            let held = s.allocations().filter(|a| &*a.account == user).count()
                + self
                    .shared
                    .reservations
                    .iter()
                    .filter(|r| &*r.account == user)
                    .count();
            assert_eq!(held, self.shared.quotas.of_user(user) as usize, "{user}");
            assert!(held <= USER_QUOTA as usize, "{user} holds {held}");
        }
        let mut held_ports = reservations;
        let mut tcp = 0;
        for a in s.allocations() {
            assert!(a.permissions.len() <= MAX_PERMISSIONS as usize);
            assert!(a.channels.len() <= MAX_CHANNELS as usize);
            held_ports += match a.state {
                State::Active => a.held_relays().count(),
                State::Opening { additional, .. } => {
                    usize::from(a.relay.port() != 0)
                        + usize::from(matches!(
                            additional,
                            Additional::Waiting { .. } | Additional::Opening { .. }
                        ))
                }
            };
            tcp += usize::from(a.is_tcp());
        }
        // Invariant: the pool's mutex is never poisoned (nothing panics holding it).
        let in_use = self.shared.ports.lock().unwrap().in_use_total();
        assert_eq!(in_use, held_ports, "port accounting");
        assert!(self.shared.tcp_connections.len() <= tcp * MAX_PEER_CONNECTIONS);
    }

    fn check_lifetimes(&self) {
        for a in self.server.allocations() {
            if a.state == State::Active {
                assert!(a.expires > self.now, "allocation outlived its lifetime");
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        while let Some(next) = self.server.poll_timeout() {
            if next > target {
                break;
            }
            self.now = self.now.max(next);
            self.server.handle_timeout(self.now);
            self.drain();
        }
        self.now = target;
        self.server.handle_timeout(self.now);
        self.drain();
        self.check_lifetimes();
    }

    fn next_txid(&mut self) -> TransactionId {
        self.txid += 1;
        let mut t = [0u8; 12];
        t[4..].copy_from_slice(&self.txid.to_be_bytes());
        TransactionId(t)
    }

    /// A request signed with the client's last nonce; `extra` is appended raw as attributes
    /// (the fuzzer's own TLVs, possibly malformed) before the credentials.
    fn signed(&mut self, client: usize, inp: &mut Input) -> Option<Vec<u8>> {
        let m = inp.byte()?;
        let method = [
            Method::ALLOCATE,
            Method::REFRESH,
            Method::CREATE_PERMISSION,
            Method::CHANNEL_BIND,
            Method::BINDING,
        ][(m & 0x3f) as usize % 5];
        let flags = inp.byte()?;
        let peer: SocketAddr = PEERS[(flags & 7) as usize].parse().unwrap();
        let lifetime = inp.u16()?;
        let channel = inp.u16()?;
        let extra = inp.bytes(64);
        let mut buf = vec![0u8; 1024];
        let txid = self.next_txid();
        let mut b =
            MessageBuilder::new(&mut buf, MessageType::new(method, Class::Request), txid).ok()?;
        if method == Method::ALLOCATE {
            b.add(AttrType::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).ok()?;
            if m & 0x80 != 0 {
                b.add(AttrType::EVEN_PORT, &[0x80]).ok()?;
            }
            if let Some(token) = self.token.filter(|_| m & 0x40 != 0) {
                b.add(AttrType::RESERVATION_TOKEN, &token).ok()?;
            }
        }
        if flags & 0x08 != 0 {
            b.add_u32(AttrType::LIFETIME, lifetime as u32).ok()?;
        }
        if flags & 0x10 != 0 {
            b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &peer).ok()?;
        }
        if flags & 0x20 != 0 {
            b.add_u32(AttrType::CHANNEL_NUMBER, (channel as u32) << 16)
                .ok()?;
        }
        // Raw TLVs: only whole 4-byte-aligned chunks keep the builder's length consistent.
        let aligned = &extra[..extra.len() & !3];
        let start = b.len();
        drop(b);
        buf[start..start + aligned.len()].copy_from_slice(aligned);
        let body = (start + aligned.len() - 20) as u16;
        buf[2..4].copy_from_slice(&body.to_be_bytes());
        // Re-open the builder over what is written: rebuild from the header we have.
        let mut out = buf[..start + aligned.len()].to_vec();
        let nonce = self.nonces[client].clone().unwrap_or_default();
        let (user, user_key) = user_of(client);
        append_attr(&mut out, AttrType::USERNAME, user.as_bytes());
        append_attr(&mut out, AttrType::REALM, REALM.as_bytes());
        append_attr(&mut out, AttrType::NONCE, &nonce);
        let mut tail = vec![0u8; out.len() + 64];
        tail[..out.len()].copy_from_slice(&out);
        let len = out.len();
        let k = if flags & 0x40 != 0 {
            &[0u8; 16]
        } else {
            user_key
        };
        let n = finish_signed(&mut tail, len, k, flags & 0x80 != 0)?;
        tail.truncate(n);
        Some(tail)
    }

    fn client_datagram(&mut self, client: usize, data: &[u8]) {
        let fwd = self
            .server
            .handle_client_datagram(self.now, self.clients[client], data);
        self.check_forward(fwd, data.len());
        self.drain();
    }
}

fn append_attr(out: &mut Vec<u8>, ty: AttrType, value: &[u8]) {
    out.extend_from_slice(&ty.0.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    let body = (out.len() - 20) as u16;
    out[2..4].copy_from_slice(&body.to_be_bytes());
}

/// Appends MESSAGE-INTEGRITY (and FINGERPRINT) to the message in `buf[..len]`.
fn finish_signed(buf: &mut [u8], len: usize, key: &[u8], fingerprint: bool) -> Option<usize> {
    // Parse the type and transaction id back, rebuild with the builder, copy the attributes.
    let ty = MessageType::from_u16(u16::from_be_bytes([buf[0], buf[1]]))?;
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&buf[8..20]);
    let attrs = buf[20..len].to_vec();
    let mut out = vec![0u8; len + 64];
    let mut b = MessageBuilder::new(&mut out, ty, TransactionId(txid)).ok()?;
    // The builder has no raw-append, so walk the TLVs we wrote (they may be malformed: stop).
    let mut rest = &attrs[..];
    while rest.len() >= 4 {
        let t = u16::from_be_bytes([rest[0], rest[1]]);
        let l = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        let padded = (l + 3) & !3;
        if rest.len() < 4 + padded {
            break;
        }
        b.add(AttrType(t), &rest[4..4 + l]).ok()?;
        rest = &rest[4 + padded..];
    }
    b.add_message_integrity(key).ok()?;
    if fingerprint {
        b.add_fingerprint().ok()?;
    }
    let n = b.finish().min(buf.len());
    buf[..n].copy_from_slice(&out[..n]);
    Some(n)
}

fuzz_target!(|data: &[u8]| {
    let shared = shared();
    let t0 = Instant::now();
    let mut run = Run {
        server: Server::new(shared.clone(), [0x5e; 32], t0, 1_700_000_000),
        shared,
        now: t0,
        clients: clients(),
        nonces: Default::default(),
        txid: 0,
        fail_open: 0,
        token: None,
    };
    let mut inp = Input(data);
    let mut steps = 0;
    while let Some(op) = inp.byte() {
        steps += 1;
        if steps > 256 {
            break;
        }
        let client = (op >> 4) as usize % 4;
        match op & 0x0f {
            // A raw datagram (or stream frame) from a client.
            0 | 1 => {
                let d = inp.bytes(255).to_vec();
                run.client_datagram(client, &d);
            }
            // A request signed with the client's last nonce.
            2..=5 => {
                if let Some(req) = run.signed(client, &mut inp) {
                    run.client_datagram(client, &req);
                }
            }
            // Time passes (up to ~18 hours, usually seconds).
            6 => {
                let s = inp.u16().unwrap_or(0) as u64;
                run.advance(Duration::from_millis(s * 1000 + (op as u64)));
            }
            // ChannelData from a client.
            7 => {
                let ch = inp.u16().unwrap_or(0x4000);
                let payload = inp.bytes(64);
                let mut d = ch.to_be_bytes().to_vec();
                let lie = inp.byte().unwrap_or(0);
                let len = if lie & 1 == 1 {
                    lie as u16
                } else {
                    payload.len() as u16
                };
                d.extend_from_slice(&len.to_be_bytes());
                d.extend_from_slice(payload);
                run.client_datagram(client, &d);
            }
            // A Send indication to one of the peers.
            8 => {
                let p = inp.byte().unwrap_or(0);
                let peer: SocketAddr = PEERS[p as usize % PEERS.len()].parse().unwrap();
                let payload = inp.bytes(64).to_vec();
                let mut buf = vec![0u8; 256];
                let txid = run.next_txid();
                let ty = MessageType::new(Method::SEND, Class::Indication);
                let Ok(mut b) = MessageBuilder::new(&mut buf, ty, txid) else {
                    continue;
                };
                let _ = b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &peer);
                let _ = b.add(AttrType::DATA, &payload);
                let n = b.finish();
                buf.truncate(n);
                run.client_datagram(client, &buf);
            }
            // A datagram from a peer to some allocation.
            9 => {
                let p = inp.byte().unwrap_or(0);
                let peer: SocketAddr = PEERS[p as usize % PEERS.len()].parse().unwrap();
                let payload = inp.bytes(128);
                let ids: Vec<AllocationId> = run.server.allocations().map(|a| a.id).collect();
                if ids.is_empty() {
                    continue;
                }
                let id = ids[(p as usize >> 3) % ids.len()];
                let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
                buf[PEER_HEADROOM..PEER_HEADROOM + payload.len()].copy_from_slice(payload);
                let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
                if let Some(tc) = run
                    .server
                    .handle_peer_datagram(run.now, id, peer, &mut buf, range)
                {
                    assert!(
                        run.shared.peer_filter.load().allows(peer),
                        "datagram from refused peer {peer} reached a client"
                    );
                    assert!(tc.range.end <= buf.len());
                    let framed = &buf[tc.range.clone()];
                    if framed.first().is_some_and(|b| b >> 6 == 0) {
                        Message::parse(framed).expect("a Data indication parses");
                    }
                }
                run.drain();
            }
            // The client's stream connection closes.
            10 => {
                run.server
                    .handle_connection_closed(run.now, run.clients[client]);
                run.drain();
            }
            // Script the next relay-socket results.
            11 => run.fail_open = inp.byte().unwrap_or(0),
            // Close an allocation from the admin API.
            12 => {
                let ids: Vec<AllocationId> = run.server.allocations().map(|a| a.id).collect();
                if let Some(&id) = ids.get(client) {
                    run.server.close(run.now, id);
                    run.drain();
                }
            }
            // SIGHUP: a stricter (or the first) filter, applied at once.
            13 => {
                let stricter = inp.byte().unwrap_or(0) & 1 == 1;
                run.shared.peer_filter.store(filter(stricter));
                run.server.handle_peer_filter_changed(run.now);
                run.drain();
            }
            _ => {
                run.server.handle_timeout(run.now);
                run.drain();
                run.check_lifetimes();
            }
        }
        run.check_bounds();
    }
    run.server.close_all(run.now);
    run.drain();
    run.check_bounds();
    assert_eq!(
        run.server.pending_timers(),
        0,
        "every deadline went with its owner"
    );
    assert_eq!(run.shared.quotas.total(), 0);
});
