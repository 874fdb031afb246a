//! Tests of the sans-IO core through its public API, with a fake clock and no sockets.
//!
//! A [`Harness`] plays the shell: it feeds datagrams to a [`Server`], drains
//! [`Server::poll_output`] after every input, answers [`Output::OpenRelay`] itself (with `Ok`
//! unless a test scripts `AddrInUse`/`Other`), and fires timers the way the tokio worker does
//! (`poll_timeout`, then `handle_timeout`). Time is an `Instant` taken once plus offsets that
//! tests advance explicitly; Unix time starts at [`UNIX_T0`].
//!
//! A [`Client`] drives the library's sans-IO TURN client ([`crate::client`]), which encodes
//! the requests and does the 401 → NONCE → signed-request dance, and keeps its nonce; [`Resp`]
//! parses what came back and checks class, error code, attributes and MESSAGE-INTEGRITY (keyed
//! with [`long_term_key`], independently of the server's credential store and of the client).
//! [`build`] stays for the requests no client would send: unsigned parts, missing fields,
//! other classes.
//!
//! Every `Transmit` the harness drains is checked to parse as STUN, in every test.

mod allocate;
mod alternate;
mod amplification;
mod auth;
mod bandwidth;
mod binding;
mod bounds;
mod channel_bind;
mod connection;
mod counters;
mod dual;
mod expiry;
mod fast_path;
mod nat_discovery;
mod own_host;
mod permission;
mod prop;
mod random;
mod refresh;
mod relay;
mod request;
mod reservation;
mod retransmit;
mod rfc8489;
mod tcp_relay;
mod tcp_relay_caps;

use super::auth::{long_term_key, rest_api_password, Credentials, Md5Key, RestPolicy, UserSecret};
use super::fast_path::{ChannelKey, FastPath};
use super::nonce::NonceKey;
use super::peer_filter::{Cidr, PeerFilter};
use super::ports::PortPool;
use super::rate_limit::Rate;
use super::tcp_relay::TcpRelayOutput;
use super::{
    Allocation, AllocationId, CoreConfig, DropReason, EndReason, Event, FiveTuple, Forward, Output,
    RelayAddr, RelayOpenError, Relayed, Server, Shared, ToClient, Transport, PEER_HEADROOM,
    PEER_TAILROOM,
};
use crate::client::attr::{encode_request, Trailer};
use crate::client::{self as turn};
use crate::stun::{AttrType, Class, Message, MessageBuilder, MessageType, Method, TransactionId};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const REALM: &str = "turnd.test";
pub const REST_SECRET: &str = "rest-secret";
/// The Unix time at the harness's `t0`.
pub const UNIX_T0: u64 = 1_700_000_000;
pub const PORT_LOW: u16 = 50000;
pub const PORT_HIGH: u16 = 50009;
/// Ports in the relay range, per relay address.
pub const PORT_COUNT: usize = (PORT_HIGH - PORT_LOW + 1) as usize;

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn relay_v4() -> IpAddr {
    ip("192.0.2.10")
}

pub fn advertised_v4() -> IpAddr {
    ip("203.0.113.10")
}

pub fn relay_v6() -> IpAddr {
    ip("2001:db8::10")
}

pub fn server_v4() -> SocketAddr {
    sa("192.0.2.1:3478")
}

pub fn server_v6() -> SocketAddr {
    sa("[2001:db8::1]:3478")
}

/// A UDP 5-tuple from a client at `client` to the server's IPv4 or IPv6 listener.
pub fn udp(client: &str) -> FiveTuple {
    let client = sa(client);
    let server = if client.is_ipv4() {
        server_v4()
    } else {
        server_v6()
    };
    FiveTuple::udp(client, server)
}

pub fn tcp(client: &str) -> FiveTuple {
    FiveTuple {
        transport: Transport::Tcp,
        ..udp(client)
    }
}

/// Peers the harness's filter allows explicitly (documentation ranges are denied by default).
pub fn peer_a() -> SocketAddr {
    sa("198.51.100.1:5000")
}

pub fn peer_b() -> SocketAddr {
    sa("198.51.100.2:6000")
}

pub fn peer_v6() -> SocketAddr {
    sa("[2001:db8:1::1]:5000")
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A fixed 32-byte CSPRNG seed made from `n`.
pub fn seed_bytes(n: u64) -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    seed
}

/// What to build the [`Shared`] state with; `Default` is the standard test server.
#[derive(Clone, Debug)]
pub struct Setup {
    pub v4: bool,
    pub v6: bool,
    pub ports: (u16, u16),
    pub secrets: Vec<&'static str>,
    pub software: Option<&'static str>,
    /// (user_quota, total_quota); 0 = no limit.
    pub quotas: (u32, u32),
    pub refuse_amplification: bool,
    /// RFC 5780 pairs; empty = NAT behaviour discovery off.
    pub nat_discovery: Vec<super::nat_discovery::NatPair>,
    /// ALTERNATE-SERVER targets (300 Try Alternate).
    pub alternate_servers: Vec<SocketAddr>,
    /// `allocation_bandwidth`, bytes/s; 0 = no cap.
    pub allocation_bandwidth: u64,
    /// `user_bandwidth`, bytes/s; 0 = no cap.
    pub user_bandwidth: u64,
    pub userhash: bool,
    /// (max_permissions, max_channels); 0 = no limit.
    pub per_allocation: (u32, u32),
    /// (unauthenticated_rate, binding_rate).
    pub rates: (Rate, Rate),
    /// How REST usernames are read (`rest_username_order`, `rest_max_ttl`).
    pub rest: RestPolicy,
    /// `CoreConfig::fast_path`: the shell has an XDP fast path.
    pub fast_path: bool,
    /// `CoreConfig::channel_lifetime` (RFC 8656's 10 minutes unless a test shortens it).
    pub channel_lifetime: Duration,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            v4: true,
            v6: true,
            ports: (PORT_LOW, PORT_HIGH),
            secrets: vec![REST_SECRET],
            software: None,
            quotas: (0, 0),
            refuse_amplification: false,
            nat_discovery: Vec::new(),
            alternate_servers: Vec::new(),
            allocation_bandwidth: 0,
            user_bandwidth: 0,
            userhash: false,
            per_allocation: (0, 0),
            rates: (Rate::UNLIMITED, Rate::UNLIMITED),
            rest: RestPolicy::default(),
            fast_path: false,
            channel_lifetime: crate::core::channel::CHANNEL_LIFETIME,
        }
    }
}

impl Setup {
    pub fn shared(&self) -> Arc<Shared> {
        let mut relays = Vec::new();
        if self.v4 {
            relays.push(RelayAddr {
                bind: relay_v4(),
                advertised: advertised_v4(),
            });
        }
        if self.v6 {
            relays.push(RelayAddr {
                bind: relay_v6(),
                advertised: relay_v6(),
            });
        }
        let ips: Vec<IpAddr> = relays.iter().map(|r| r.bind).collect();
        let users = [
            ("alice".to_string(), UserSecret::Password("alice-pw".into())),
            ("bob".to_string(), UserSecret::Password("bob-pw".into())),
            // Configured with the MD5 key only: no SHA-256 key can be derived.
            (
                "carol".to_string(),
                UserSecret::Key(long_term_key("carol", REALM, "carol-pw")),
            ),
            // Configured with both keys, as a fleet store user added with a password.
            (
                "erin".to_string(),
                UserSecret::Keys {
                    md5: long_term_key("erin", REALM, "erin-pw"),
                    sha256: crate::core::auth::long_term_key_sha256("erin", REALM, "erin-pw"),
                },
            ),
        ];
        let allow = vec![
            Cidr::new(ip("198.51.100.0"), 24).unwrap(),
            Cidr::new(ip("2001:db8:1::"), 48).unwrap(),
        ];
        Arc::new(Shared {
            config: CoreConfig {
                software: self.software.map(str::to_string),
                relays,
                user_quota: self.quotas.0,
                total_quota: self.quotas.1,
                refuse_amplification: self.refuse_amplification,
                nat_discovery: self.nat_discovery.clone(),
                alternate_servers: self.alternate_servers.clone(),
                allocation_bandwidth: self.allocation_bandwidth,
                user_bandwidth: self.user_bandwidth,
                userhash: self.userhash,
                max_permissions: self.per_allocation.0,
                max_channels: self.per_allocation.1,
                unauthenticated_rate: self.rates.0,
                binding_rate: self.rates.1,
                fast_path: self.fast_path,
                channel_lifetime: self.channel_lifetime,
                ..CoreConfig::default()
            },
            credentials: Credentials::new(REALM, users, self.secrets.iter().map(|s| s.to_string()))
                .with_rest_policy(self.rest)
                .into(),
            nonce_key: NonceKey::new([7; 32]),
            peer_filter: PeerFilter::new(allow, Vec::new()).into(),
            ports: Mutex::new(PortPool::new(&ips, self.ports.0, self.ports.1)),
            reservations: Default::default(),
            tcp_connections: Default::default(),
            quotas: Default::default(),
        })
    }
}

/// An `OpenRelay` the fake shell saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub id: AllocationId,
    pub bind: SocketAddr,
    pub dont_fragment: bool,
}

/// The fake shell around one [`Server`].
pub struct Harness {
    pub server: Server,
    pub shared: Arc<Shared>,
    pub t0: Instant,
    pub now: Instant,
    /// Answered `OpenRelay`s are given these results in order; `Ok` once it is empty.
    pub open_results: VecDeque<Result<(), RelayOpenError>>,
    /// When false, `OpenRelay` is recorded in `pending_open` and left unanswered.
    pub auto_open: bool,
    pub pending_open: Vec<AllocationId>,
    pub transmits: VecDeque<(FiveTuple, Vec<u8>)>,
    pub opened: Vec<Opened>,
    pub closed: Vec<AllocationId>,
    /// `CloseRelay`s of one family of a dual allocation.
    pub closed_families: Vec<(AllocationId, crate::stun::AddressFamily)>,
    pub events: Vec<Event>,
    /// Every RFC 6062 output, in order (a `Listen` is also answered like `OpenRelay`).
    pub tcp: Vec<TcpRelayOutput>,
    /// Every fast-path output, with the time it was drained at.
    pub fast_path: Vec<(Instant, FastPath)>,
    /// The kernel's entries as the fast-path outputs so far leave them, by (client 5-tuple,
    /// channel): checked after every drain against what the core itself would relay.
    pub kernel: HashMap<(FiveTuple, u16), (ChannelKey, Instant)>,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with(Setup::default())
    }

    pub fn with(setup: Setup) -> Harness {
        Harness::from_shared(setup.shared(), 0x5eed)
    }

    /// A harness around a fresh core on `shared` whose CSPRNG is seeded from `seed` (fixed,
    /// so a test runs the same every time).
    pub fn from_shared(shared: Arc<Shared>, seed: u64) -> Harness {
        let t0 = Instant::now();
        Harness {
            server: Server::new(shared.clone(), seed_bytes(seed), t0, UNIX_T0),
            shared,
            t0,
            now: t0,
            open_results: VecDeque::new(),
            auto_open: true,
            pending_open: Vec::new(),
            transmits: VecDeque::new(),
            opened: Vec::new(),
            closed: Vec::new(),
            closed_families: Vec::new(),
            events: Vec::new(),
            tcp: Vec::new(),
            fast_path: Vec::new(),
            kernel: HashMap::new(),
        }
    }

    pub fn at(&self, s: u64) -> Instant {
        self.t0 + secs(s)
    }

    /// Moves the clock forward by `d`, firing every deadline on the way at its own time, as
    /// the shell's timer does.
    pub fn advance(&mut self, d: Duration) {
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
    }

    /// Advances to `s` seconds after `t0`.
    pub fn advance_to(&mut self, s: u64) {
        let target = self.at(s);
        assert!(target >= self.now, "the clock only moves forward");
        self.advance(target - self.now);
    }

    /// Moves the clock without firing timers (a late shell).
    pub fn jump(&mut self, d: Duration) {
        self.now += d;
    }

    /// Executes every pending output, answering `OpenRelay` unless `auto_open` is off.
    pub fn drain(&mut self) {
        while let Some(out) = self.server.poll_output() {
            match out {
                Output::Transmit { to, payload } => {
                    if let Err(e) = Message::parse(&payload) {
                        panic!("transmit to {to} does not parse as STUN ({e:?}): {payload:02x?}");
                    }
                    self.transmits.push_back((to, payload));
                }
                Output::OpenRelay {
                    id,
                    bind,
                    dont_fragment,
                } => {
                    self.opened.push(Opened {
                        id,
                        bind,
                        dont_fragment,
                    });
                    if self.auto_open {
                        let result = self.open_results.pop_front().unwrap_or(Ok(()));
                        self.server.handle_relay_opened(self.now, id, result);
                    } else {
                        self.pending_open.push(id);
                    }
                }
                Output::CloseRelay { id, family: None } => self.closed.push(id),
                Output::CloseRelay {
                    id,
                    family: Some(f),
                } => self.closed_families.push((id, f)),
                Output::TcpRelay(o) => {
                    if let TcpRelayOutput::Listen { id, bind } = o {
                        self.opened.push(Opened {
                            id,
                            bind,
                            dont_fragment: false,
                        });
                        if self.auto_open {
                            let result = self.open_results.pop_front().unwrap_or(Ok(()));
                            self.server.handle_relay_opened(self.now, id, result);
                        } else {
                            self.pending_open.push(id);
                        }
                    }
                    self.tcp.push(o);
                }
                Output::FastPath(f) => {
                    self.apply_fast_path(f);
                    self.fast_path.push((self.now, f));
                }
                Output::Event(e) => self.events.push(e),
            }
        }
        self.check_kernel();
    }

    /// Carries out a fast-path output on the model of the kernel's maps: an install inserts
    /// or replaces, a removal must name an installed entry exactly.
    fn apply_fast_path(&mut self, f: FastPath) {
        match f {
            FastPath::Install { key, expires, .. } => {
                self.kernel
                    .insert((key.client, key.channel), (key, expires));
            }
            FastPath::Remove(key) => {
                let old = self.kernel.remove(&(key.client, key.channel));
                assert_eq!(
                    old.map(|(k, _)| k),
                    Some(key),
                    "removal of an entry that is not installed"
                );
            }
        }
    }

    /// The fast path's safety: every kernel entry that is live at `now` relays exactly what
    /// the core would — the same peer for the channel, from the relay address of the peer's
    /// family, under a live permission, never for a capped or stream allocation.
    pub fn check_kernel(&self) {
        for ((client, channel), (key, expires)) in &self.kernel {
            if *expires <= self.now {
                continue;
            }
            let a = self
                .server
                .allocation(key.id)
                .unwrap_or_else(|| panic!("live kernel entry {key:?} of an ended allocation"));
            assert_eq!(a.five_tuple, *client);
            assert_eq!(client.transport, Transport::Udp);
            assert!(a.bandwidth.is_none() && a.user_bandwidth.is_none());
            let binding = a.channels.by_number(*channel, self.now);
            assert_eq!(
                binding.map(|b| b.peer),
                Some(key.peer),
                "live kernel entry {key:?} for a channel the core does not relay"
            );
            assert!(*expires <= binding.map_or(self.now, |b| b.expires));
            let own = self.shared.peer_filter.load();
            assert!(
                a.permissions
                    .allows_peer(key.peer, self.now, own.own_host())
                    && a.relays_family_of(key.peer.ip(), self.now),
                "live kernel entry {key:?} without a permission or its family"
            );
            assert!(
                a.held_relays()
                    .any(|(relay, e)| relay == key.relay && *expires <= e),
                "live kernel entry {key:?} from a relay address not held until {expires:?}"
            );
        }
    }

    /// Answers a held `OpenRelay` (when `auto_open` is off).
    pub fn open(&mut self, id: AllocationId, result: Result<(), RelayOpenError>) {
        self.server.handle_relay_opened(self.now, id, result);
        self.drain();
    }

    /// A datagram from a client; outputs are drained.
    pub fn input(&mut self, from: FiveTuple, data: &[u8]) -> Option<Forward> {
        let fwd = self.server.handle_client_datagram(self.now, from, data);
        self.drain();
        if let Some(f) = &fwd {
            assert!(
                f.payload.end <= data.len(),
                "forward range {:?} outside datagram",
                f.payload
            );
            assert!(
                self.shared.peer_filter.load().allows(f.peer),
                "forward to denied peer {}",
                f.peer
            );
        }
        fwd
    }

    /// Every transmit queued for `to`, oldest first; others are kept.
    pub fn take_to(&mut self, to: FiveTuple) -> Vec<Vec<u8>> {
        let (mine, rest): (Vec<_>, Vec<_>) = self.transmits.drain(..).partition(|(t, _)| *t == to);
        self.transmits = rest.into();
        mine.into_iter().map(|(_, p)| p).collect()
    }

    /// The single transmit queued for `to`.
    pub fn take_one(&mut self, to: FiveTuple) -> Resp {
        let mut v = self.take_to(to);
        assert_eq!(
            v.len(),
            1,
            "expected exactly one transmit to {to}, got {}",
            v.len()
        );
        Resp(v.remove(0))
    }

    pub fn assert_silent(&self) {
        assert!(
            self.transmits.is_empty(),
            "unexpected transmits: {:?}",
            self.transmits
        );
    }

    /// A datagram from `peer` on allocation `id`'s relay socket, laid out as the shell does
    /// (headroom before, tailroom after). Returns the answer and the buffer it refers to.
    pub fn peer_raw(
        &mut self,
        id: AllocationId,
        peer: SocketAddr,
        payload: &[u8],
    ) -> Option<(ToClient, Vec<u8>)> {
        let mut buf = vec![0xEE; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
        buf[PEER_HEADROOM..PEER_HEADROOM + payload.len()].copy_from_slice(payload);
        let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
        let out = self
            .server
            .handle_peer_datagram(self.now, id, peer, &mut buf, range);
        self.drain();
        out.map(|o| (o, buf))
    }

    /// Like [`Harness::peer_raw`], returning the framed bytes to send.
    pub fn peer(
        &mut self,
        id: AllocationId,
        peer: SocketAddr,
        payload: &[u8],
    ) -> Option<(FiveTuple, Vec<u8>)> {
        self.peer_raw(id, peer, payload)
            .map(|(o, buf)| (o.to, buf[o.range].to_vec()))
    }

    pub fn id_of(&self, ft: FiveTuple) -> Option<AllocationId> {
        self.server
            .allocations()
            .find(|a| a.five_tuple == ft)
            .map(|a| a.id)
    }

    pub fn alloc(&self, ft: FiveTuple) -> &Allocation {
        self.server
            .allocations()
            .find(|a| a.five_tuple == ft)
            .expect("allocation for 5-tuple")
    }

    pub fn allocation_count(&self) -> usize {
        self.server.allocations().count()
    }

    pub fn ports_in_use(&self, ip: IpAddr) -> usize {
        self.shared.ports.lock().unwrap().in_use(ip)
    }

    pub fn ended(&self) -> Vec<(AllocationId, EndReason, Relayed, Duration)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::AllocationEnded {
                    id,
                    reason,
                    stats,
                    duration,
                    ..
                } => Some((*id, *reason, *stats, *duration)),
                _ => None,
            })
            .collect()
    }

    pub fn created(&self) -> Vec<AllocationId> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::AllocationCreated { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    }
}

/// One attribute of a request under construction.
#[derive(Clone, Debug)]
pub enum Attr {
    Raw(AttrType, Vec<u8>),
    /// XOR-PEER-ADDRESS, encoded with the request's transaction id.
    Peer(SocketAddr),
}

pub fn transport(proto: u8) -> Attr {
    Attr::Raw(AttrType::REQUESTED_TRANSPORT, vec![proto, 0, 0, 0])
}

pub fn transport_udp() -> Attr {
    transport(17)
}

pub fn lifetime(s: u32) -> Attr {
    Attr::Raw(AttrType::LIFETIME, s.to_be_bytes().to_vec())
}

/// REQUESTED-ADDRESS-FAMILY: 1 = IPv4, 2 = IPv6.
pub fn family(f: u8) -> Attr {
    Attr::Raw(AttrType::REQUESTED_ADDRESS_FAMILY, vec![f, 0, 0, 0])
}

pub fn even_port(r: bool) -> Attr {
    Attr::Raw(AttrType::EVEN_PORT, vec![if r { 0x80 } else { 0 }])
}

pub fn token(t: [u8; 8]) -> Attr {
    Attr::Raw(AttrType::RESERVATION_TOKEN, t.to_vec())
}

pub fn channel(n: u16) -> Attr {
    Attr::Raw(
        AttrType::CHANNEL_NUMBER,
        (u32::from(n) << 16).to_be_bytes().to_vec(),
    )
}

pub fn dont_fragment() -> Attr {
    Attr::Raw(AttrType::DONT_FRAGMENT, Vec::new())
}

pub fn data(d: &[u8]) -> Attr {
    Attr::Raw(AttrType::DATA, d.to_vec())
}

/// How a request is signed. Fields can be removed or changed to build bad requests.
#[derive(Clone, Debug)]
pub struct Sign {
    pub username: Option<String>,
    pub realm: Option<String>,
    pub nonce: Option<Vec<u8>>,
    pub key: Md5Key,
}

/// Builds a STUN message with the crate's own builder: `attrs`, then USERNAME, REALM, NONCE
/// and MESSAGE-INTEGRITY when `sign` is given, then FINGERPRINT when asked.
pub fn build(
    method: Method,
    class: Class,
    txid: TransactionId,
    attrs: &[Attr],
    sign: Option<&Sign>,
    fingerprint: bool,
) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let mut b = MessageBuilder::new(&mut buf, MessageType::new(method, class), txid).unwrap();
    for a in attrs {
        match a {
            Attr::Raw(t, v) => b.add(*t, v).unwrap(),
            Attr::Peer(p) => b.add_xor_address(AttrType::XOR_PEER_ADDRESS, p).unwrap(),
        }
    }
    if let Some(s) = sign {
        if let Some(u) = &s.username {
            b.add(AttrType::USERNAME, u.as_bytes()).unwrap();
        }
        if let Some(r) = &s.realm {
            b.add(AttrType::REALM, r.as_bytes()).unwrap();
        }
        if let Some(n) = &s.nonce {
            b.add(AttrType::NONCE, n).unwrap();
        }
        b.add_message_integrity(&s.key).unwrap();
    }
    if fingerprint {
        b.add_fingerprint().unwrap();
    }
    let len = b.finish();
    buf.truncate(len);
    buf
}

/// A response (or any STUN message) the server sent, with checking helpers.
#[derive(Clone, PartialEq, Eq)]
pub struct Resp(pub Vec<u8>);

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.msg();
        write!(
            f,
            "Resp({:?} {:?} code={:?})",
            m.method(),
            m.class(),
            self.code()
        )
    }
}

impl Resp {
    pub fn msg(&self) -> Message<'_> {
        Message::parse(&self.0).expect("response parses")
    }

    pub fn class(&self) -> Class {
        self.msg().class()
    }

    pub fn txid(&self) -> TransactionId {
        self.msg().transaction_id()
    }

    pub fn code(&self) -> Option<u16> {
        self.msg()
            .error_code()
            .map(|r| r.expect("well-formed ERROR-CODE").0)
    }

    pub fn lifetime(&self) -> u32 {
        self.msg().lifetime().expect("LIFETIME").unwrap()
    }

    pub fn relayed(&self) -> SocketAddr {
        self.msg()
            .xor_relayed_address()
            .expect("XOR-RELAYED-ADDRESS")
            .unwrap()
    }

    pub fn mapped(&self) -> SocketAddr {
        self.msg()
            .xor_mapped_address()
            .expect("XOR-MAPPED-ADDRESS")
            .unwrap()
    }

    pub fn nonce(&self) -> Vec<u8> {
        self.msg().nonce().expect("NONCE").unwrap().to_vec()
    }

    pub fn realm(&self) -> String {
        self.msg().realm().expect("REALM").unwrap().to_string()
    }

    pub fn token(&self) -> [u8; 8] {
        self.msg()
            .reservation_token()
            .expect("RESERVATION-TOKEN")
            .unwrap()
    }

    pub fn has(&self, t: AttrType) -> bool {
        self.msg().has(t)
    }

    /// MESSAGE-INTEGRITY is present and verifies with `key`, and not with another key.
    pub fn assert_signed(&self, key: &Md5Key) -> &Self {
        let m = self.msg();
        assert!(m.has_integrity(), "{self:?} has no MESSAGE-INTEGRITY");
        assert!(
            m.verify_integrity(key),
            "{self:?}: MESSAGE-INTEGRITY does not verify"
        );
        assert!(
            !m.verify_integrity(&[0u8; 16]),
            "{self:?}: MESSAGE-INTEGRITY verifies with any key"
        );
        self
    }

    pub fn assert_unsigned(&self) -> &Self {
        assert!(
            !self.msg().has_integrity(),
            "{self:?} carries MESSAGE-INTEGRITY"
        );
        self
    }

    /// A success response to `method`, signed with `key`.
    pub fn assert_success(&self, method: Method, key: &Md5Key) -> &Self {
        let m = self.msg();
        assert_eq!(
            (m.method(), m.class()),
            (method, Class::SuccessResponse),
            "{self:?}"
        );
        self.assert_signed(key)
    }

    /// An error response to `method` with `code`, signed with `key` when given, unsigned
    /// otherwise.
    pub fn assert_error(&self, method: Method, code: u16, key: Option<&Md5Key>) -> &Self {
        let m = self.msg();
        assert_eq!(
            (m.method(), m.class(), self.code()),
            (method, Class::ErrorResponse, Some(code)),
            "{self:?}"
        );
        match key {
            Some(k) => self.assert_signed(k),
            None => self.assert_unsigned(),
        }
    }
}

/// A TURN client: a 5-tuple, credentials, and the nonce it last received.
///
/// The protocol work is the library's sans-IO client ([`crate::client`]): it encodes the
/// requests, does the 401 → NONCE → signed-request dance and the 438 retry, and builds Send
/// indications and ChannelData. This wrapper carries its datagrams through the [`Harness`]
/// one at a time and returns the server's last answer as a [`Resp`], so a test checks the
/// bytes the core sent. Its own state is only the nonce, which tests read and replace.
#[derive(Clone, Debug)]
pub struct Client {
    pub ft: FiveTuple,
    pub username: String,
    password: String,
    /// The long-term key, computed here with [`long_term_key`] and [`REALM`], independently
    /// of both the server's credential store and the library client.
    pub key: Md5Key,
    pub nonce: Option<Vec<u8>>,
    pub fingerprint: bool,
    /// The last datagram [`Client::send_raw`] sent, for retransmission tests.
    pub last_sent: Option<Vec<u8>>,
    counter: u32,
}

/// Transaction ids and client seeds unique across every client of the test binary (several
/// clients may share a 5-tuple, and the server remembers responses per 5-tuple and id).
static NEXT: AtomicU64 = AtomicU64::new(1);

impl From<&Attr> for turn::Attr {
    fn from(a: &Attr) -> turn::Attr {
        match a {
            Attr::Raw(t, v) => turn::Attr::Other(*t, v.clone()),
            Attr::Peer(p) => turn::Attr::XorPeerAddress(*p),
        }
    }
}

fn lib_attrs(attrs: &[Attr]) -> Vec<turn::Attr> {
    attrs.iter().map(turn::Attr::from).collect()
}

impl Client {
    pub fn new(ft: FiveTuple, username: &str, password: &str) -> Client {
        Client {
            ft,
            username: username.to_string(),
            password: password.to_string(),
            key: long_term_key(username, REALM, password),
            nonce: None,
            fingerprint: false,
            last_sent: None,
            counter: 0,
        }
    }

    pub fn alice(ft: FiveTuple) -> Client {
        Client::new(ft, "alice", "alice-pw")
    }

    pub fn bob(ft: FiveTuple) -> Client {
        Client::new(ft, "bob", "bob-pw")
    }

    /// A TURN REST API client whose credential expires at Unix time `expiry`, minted with
    /// `secret`.
    pub fn rest(ft: FiveTuple, expiry: u64, user: &str, secret: &str) -> Client {
        let username = format!("{expiry}:{user}");
        let password = rest_api_password(secret.as_bytes(), &username);
        Client::new(ft, &username, &password)
    }

    /// A fresh transaction id, unique across every client of the test binary.
    pub fn txid(&mut self) -> TransactionId {
        self.counter += 1;
        let mut t = [0u8; 12];
        t[0..4].copy_from_slice(&self.counter.to_be_bytes());
        t[4..12].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        TransactionId(t)
    }

    /// What the library client knows when this client has a nonce.
    fn auth(&self) -> Option<turn::Auth> {
        self.nonce.clone().map(|nonce| turn::Auth {
            realm: REALM.to_string(),
            nonce,
            key: self.key,
        })
    }

    /// The library client speaking for this one now: its credentials and its nonce.
    fn turn(&self) -> turn::Client {
        let config = turn::Config {
            fingerprint: self.fingerprint,
            ..turn::Config::new(turn::Transport::Udp)
        };
        let creds = turn::Credentials::new(&self.username, &self.password);
        let seed = seed_bytes(NEXT.fetch_add(1, Ordering::Relaxed));
        let mut c = turn::Client::new(config, Some(creds), seed);
        c.set_auth(self.auth());
        c
    }

    /// The signature this client would put on a request now.
    pub fn sign(&self) -> Sign {
        Sign {
            username: Some(self.username.clone()),
            realm: Some(REALM.to_string()),
            nonce: self.nonce.clone(),
            key: self.key,
        }
    }

    /// A signed request with the current nonce (which must be known), encoded by the library.
    pub fn signed(&self, method: Method, txid: TransactionId, attrs: &[Attr]) -> Vec<u8> {
        let auth = self.auth().expect("no nonce yet: call challenge() first");
        let trailer = Trailer {
            software: None,
            auth: Some((&self.username, &auth)),
            fingerprint: self.fingerprint,
        };
        encode_request(method, txid, &lib_attrs(attrs), trailer).unwrap()
    }

    pub fn unsigned(&self, method: Method, txid: TransactionId, attrs: &[Attr]) -> Vec<u8> {
        let trailer = Trailer {
            software: None,
            auth: None,
            fingerprint: self.fingerprint,
        };
        encode_request(method, txid, &lib_attrs(attrs), trailer).unwrap()
    }

    /// Sends an unsigned Allocate and keeps the nonce of the 401 it earns (learnt by the
    /// library client, checked against the 401 here).
    pub fn challenge(&mut self, h: &mut Harness) -> Resp {
        let mut t = self.turn();
        t.set_auth(None);
        t.allocate(h.now, Vec::new()).unwrap();
        let req = t.poll_transmit().expect("an Allocate");
        assert!(h.input(self.ft, &req).is_none());
        let resp = h.take_one(self.ft);
        resp.assert_error(Method::ALLOCATE, 401, None);
        assert_eq!(resp.realm(), REALM);
        t.handle_input(h.now, &resp.0);
        let auth = t.auth().expect("the 401 taught realm and nonce");
        assert_eq!((&auth.nonce, &auth.key), (&resp.nonce(), &self.key));
        self.nonce = Some(auth.nonce.clone());
        resp
    }

    /// Sends `req` and returns the one response to it, if any (an Allocate whose relay socket
    /// is not open yet has none).
    pub fn send_raw(&mut self, h: &mut Harness, req: &[u8]) -> Option<Resp> {
        self.last_sent = Some(req.to_vec());
        assert!(h.input(self.ft, req).is_none(), "a request was relayed");
        let mut v = h.take_to(self.ft);
        assert!(v.len() <= 1, "more than one response: {}", v.len());
        v.pop().map(Resp)
    }

    /// Sends a request through the library client, which signs it, answers a 401 (no nonce
    /// yet) and a 438 (stale nonce) by sending it again; returns the server's last answer
    /// (None when an Allocate is left opening). Every answer must carry the transaction id of
    /// the request it answers, and a challenge must be an unsigned 401 naming [`REALM`].
    pub fn try_request(&mut self, h: &mut Harness, method: Method, attrs: &[Attr]) -> Option<Resp> {
        let mut t = self.turn();
        t.request(h.now, method, lib_attrs(attrs)).unwrap();
        let mut last = None;
        // Bounded: a challenge and two stale-nonce retries at most.
        for _ in 0..4 {
            let Some(req) = t.poll_transmit() else { break };
            let sent = Message::parse(&req).expect("the client's request parses");
            let (txid, signed) = (sent.transaction_id(), sent.has_integrity());
            let resp = self.send_raw(h, &req)?;
            assert_eq!(resp.txid(), txid);
            if resp.code() == Some(401) && !signed {
                resp.assert_unsigned();
                assert_eq!(resp.realm(), REALM);
            }
            t.handle_input(h.now, &resp.0);
            self.nonce = t.auth().map(|a| a.nonce.clone());
            last = Some(resp);
        }
        last
    }

    pub fn request(&mut self, h: &mut Harness, method: Method, attrs: &[Attr]) -> Resp {
        self.try_request(h, method, attrs).expect("a response")
    }

    /// Allocate with REQUESTED-TRANSPORT UDP plus `extra`.
    pub fn allocate_with(&mut self, h: &mut Harness, extra: &[Attr]) -> Resp {
        let mut attrs = vec![transport_udp()];
        attrs.extend_from_slice(extra);
        self.request(h, Method::ALLOCATE, &attrs)
    }

    /// A successful default Allocate: returns the allocation id and the relayed address.
    pub fn allocate(&mut self, h: &mut Harness) -> (AllocationId, SocketAddr) {
        let resp = self.allocate_with(h, &[]);
        resp.assert_success(Method::ALLOCATE, &self.key);
        (h.id_of(self.ft).expect("allocation exists"), resp.relayed())
    }

    pub fn refresh(&mut self, h: &mut Harness, lifetime_secs: Option<u32>) -> Resp {
        let attrs: Vec<Attr> = lifetime_secs.map(lifetime).into_iter().collect();
        self.request(h, Method::REFRESH, &attrs)
    }

    pub fn create_permission(&mut self, h: &mut Harness, peers: &[SocketAddr]) -> Resp {
        let attrs: Vec<Attr> = peers.iter().map(|p| Attr::Peer(*p)).collect();
        self.request(h, Method::CREATE_PERMISSION, &attrs)
    }

    /// CreatePermission that must succeed.
    pub fn permit(&mut self, h: &mut Harness, peers: &[SocketAddr]) {
        let key = self.key;
        self.create_permission(h, peers)
            .assert_success(Method::CREATE_PERMISSION, &key);
    }

    pub fn channel_bind(&mut self, h: &mut Harness, number: u16, peer: SocketAddr) -> Resp {
        self.request(
            h,
            Method::CHANNEL_BIND,
            &[channel(number), Attr::Peer(peer)],
        )
    }

    /// ChannelBind that must succeed.
    pub fn bind(&mut self, h: &mut Harness, number: u16, peer: SocketAddr) {
        let key = self.key;
        self.channel_bind(h, number, peer)
            .assert_success(Method::CHANNEL_BIND, &key);
    }

    /// A Send indication, encoded by the library; returns what the server relays and the
    /// datagram it refers to.
    pub fn send_indication(
        &mut self,
        h: &mut Harness,
        peer: SocketAddr,
        payload: &[u8],
    ) -> (Option<Forward>, Vec<u8>) {
        let mut ind = vec![0u8; 64 + payload.len()];
        let n = turn::data::encode_send(&mut ind, self.txid(), peer, payload).unwrap();
        ind.truncate(n);
        let fwd = h.input(self.ft, &ind);
        assert!(h.take_to(self.ft).is_empty(), "indications get no response");
        (fwd, ind)
    }

    /// A ChannelData message (with UDP padding to 4 bytes).
    pub fn channel_data(
        &mut self,
        h: &mut Harness,
        number: u16,
        payload: &[u8],
    ) -> (Option<Forward>, Vec<u8>) {
        let msg = channel_data_msg(number, payload, true);
        let fwd = h.input(self.ft, &msg);
        assert!(
            h.take_to(self.ft).is_empty(),
            "ChannelData gets no response"
        );
        (fwd, msg)
    }
}

/// ChannelData on `number`, encoded by the library; `pad` to a multiple of 4.
pub fn channel_data_msg(number: u16, payload: &[u8], pad: bool) -> Vec<u8> {
    let mut msg = vec![0u8; 4 + payload.len() + 3];
    let n = turn::data::encode_channel_data(&mut msg, number, payload, pad).unwrap();
    msg.truncate(n);
    msg
}

/// `fwd` relays exactly `payload` from `datagram` to `peer` on allocation `id`.
pub fn assert_forward(
    fwd: Option<Forward>,
    datagram: &[u8],
    id: AllocationId,
    peer: SocketAddr,
    payload: &[u8],
) {
    let fwd = fwd.expect("datagram is relayed");
    assert_eq!((fwd.id, fwd.peer), (id, peer));
    assert_eq!(&datagram[fwd.payload.clone()], payload);
}

#[test]
fn harness_shared_denies_documentation_peers_unless_listed() {
    let shared = Setup::default().shared();
    let f = shared.peer_filter.load();
    assert!(f.is_allowed(peer_a().ip()) && f.is_allowed(peer_v6().ip()));
    for denied in [
        "192.0.2.55",
        "203.0.113.5",
        "10.0.0.1",
        "2001:db8::5",
        "::ffff:10.0.0.1",
    ] {
        assert!(!f.is_allowed(ip(denied)), "{denied}");
    }
}
