//! A small raw TURN client for integration tests, written independently of turnd's own codec:
//! it encodes requests, computes MESSAGE-INTEGRITY and FINGERPRINT, and decodes responses by
//! hand, so a bug shared by turnd's builder and parser cannot hide itself.
//!
//! Servers run in-process ([`TestServer`], a `turnd::shell::Server` on 127.0.0.1:0 or
//! [::1]:0); clients and peers are plain UDP sockets on loopback with ephemeral ports, and
//! [`stream::StreamClient`] is the client on one TCP connection. Every wait is bounded:
//! replies within [`REPLY_TIMEOUT`], silence checked for [`QUIET`].

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use turnd::config::ConfigArgs;

pub mod stream;

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// The realm every test server announces.
pub const REALM: &str = "R";
/// How long to wait for a datagram that must arrive.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to listen for a datagram that must not arrive.
pub const QUIET: Duration = Duration::from_millis(300);
/// Datagrams skipped while waiting for one response, so a reply loop is bounded by count.
const MAX_SKIPPED: usize = 32;

pub const ALICE: (&str, &str) = ("alice", "alice-pw");
pub const BOB: (&str, &str) = ("bob", "bob-pw");

// Methods (RFC 8489 §18.2, RFC 8656 §17).
pub const BINDING: u16 = 0x001;
pub const ALLOCATE: u16 = 0x003;
pub const REFRESH: u16 = 0x004;
pub const SEND: u16 = 0x006;
pub const DATA: u16 = 0x007;
pub const CREATE_PERMISSION: u16 = 0x008;
pub const CHANNEL_BIND: u16 = 0x009;

// Classes, already in their bit positions of the type field (RFC 8489 §5).
pub const REQUEST: u16 = 0x000;
pub const INDICATION: u16 = 0x010;
pub const SUCCESS: u16 = 0x100;
pub const ERROR: u16 = 0x110;

// Attributes.
pub const A_MAPPED_ADDRESS: u16 = 0x0001;
pub const A_USERNAME: u16 = 0x0006;
pub const A_MESSAGE_INTEGRITY: u16 = 0x0008;
pub const A_ERROR_CODE: u16 = 0x0009;
pub const A_UNKNOWN_ATTRIBUTES: u16 = 0x000A;
pub const A_CHANNEL_NUMBER: u16 = 0x000C;
pub const A_LIFETIME: u16 = 0x000D;
pub const A_XOR_PEER_ADDRESS: u16 = 0x0012;
pub const A_DATA: u16 = 0x0013;
pub const A_REALM: u16 = 0x0014;
pub const A_NONCE: u16 = 0x0015;
pub const A_XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const A_REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const A_EVEN_PORT: u16 = 0x0018;
pub const A_REQUESTED_TRANSPORT: u16 = 0x0019;
pub const A_DONT_FRAGMENT: u16 = 0x001A;
pub const A_XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const A_RESERVATION_TOKEN: u16 = 0x0022;
pub const A_ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
pub const A_ADDRESS_ERROR_CODE: u16 = 0x8001;
pub const A_SOFTWARE: u16 = 0x8022;
pub const A_FINGERPRINT: u16 = 0x8028;

/// IANA protocol numbers for REQUESTED-TRANSPORT.
pub const UDP: u8 = 17;
pub const TCP: u8 = 6;
/// REQUESTED-ADDRESS-FAMILY values.
pub const FAMILY_V4: u8 = 0x01;
pub const FAMILY_V6: u8 = 0x02;

/// The 16-bit type field for a method and class (RFC 8489 §5, figure 3).
pub fn msg_type(method: u16, class: u16) -> u16 {
    (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | class
}

pub fn method_of(ty: u16) -> u16 {
    (ty & 0x000F) | ((ty & 0x00E0) >> 1) | ((ty & 0x3E00) >> 2)
}

pub fn class_of(ty: u16) -> u16 {
    ty & 0x0110
}

pub fn new_txid() -> [u8; 12] {
    rand::random()
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// One attribute to encode. XOR addresses are encoded against the message's transaction id.
#[derive(Clone, Debug)]
pub enum Attr {
    Raw(u16, Vec<u8>),
    XorAddr(u16, SocketAddr),
}

pub fn requested_transport(proto: u8) -> Attr {
    Attr::Raw(A_REQUESTED_TRANSPORT, vec![proto, 0, 0, 0])
}

pub fn udp() -> Attr {
    requested_transport(UDP)
}

pub fn lifetime(secs: u32) -> Attr {
    Attr::Raw(A_LIFETIME, secs.to_be_bytes().to_vec())
}

pub fn address_family(family: u8) -> Attr {
    Attr::Raw(A_REQUESTED_ADDRESS_FAMILY, vec![family, 0, 0, 0])
}

/// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11): ask for a dual allocation.
pub fn additional_family(family: u8) -> Attr {
    Attr::Raw(A_ADDITIONAL_ADDRESS_FAMILY, vec![family, 0, 0, 0])
}

pub fn channel_number(n: u16) -> Attr {
    let b = n.to_be_bytes();
    Attr::Raw(A_CHANNEL_NUMBER, vec![b[0], b[1], 0, 0])
}

pub fn even_port(reserve: bool) -> Attr {
    Attr::Raw(A_EVEN_PORT, vec![if reserve { 0x80 } else { 0 }])
}

pub fn reservation_token(token: [u8; 8]) -> Attr {
    Attr::Raw(A_RESERVATION_TOKEN, token.to_vec())
}

pub fn data(bytes: &[u8]) -> Attr {
    Attr::Raw(A_DATA, bytes.to_vec())
}

pub fn peer(addr: SocketAddr) -> Attr {
    Attr::XorAddr(A_XOR_PEER_ADDRESS, addr)
}

/// The plain (non-XOR) address encoding: reserved, family, port, address.
fn plain_address(addr: &SocketAddr) -> Vec<u8> {
    let mut v = vec![0, 0];
    v.extend_from_slice(&addr.port().to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            v[1] = FAMILY_V4;
            v.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            v[1] = FAMILY_V6;
            v.extend_from_slice(&ip.octets());
        }
    }
    v
}

/// XOR (RFC 8489 §14.2): the port with the cookie's top half, an IPv4 address with the cookie,
/// an IPv6 address with the cookie and the transaction id. Its own inverse.
fn xor_in_place(value: &mut [u8], txid: &[u8; 12]) {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    value[2] ^= cookie[0];
    value[3] ^= cookie[1];
    for (i, b) in value[4..].iter_mut().enumerate() {
        *b ^= if i < 4 { cookie[i] } else { txid[i - 4] };
    }
}

pub fn encode_xor_address(addr: &SocketAddr, txid: &[u8; 12]) -> Vec<u8> {
    let mut v = plain_address(addr);
    xor_in_place(&mut v, txid);
    v
}

pub fn decode_xor_address(value: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    let mut v = value.to_vec();
    match (v.get(1), v.len()) {
        (Some(&FAMILY_V4), 8) | (Some(&FAMILY_V6), 20) => {}
        _ => return None,
    }
    xor_in_place(&mut v, txid);
    let port = u16::from_be_bytes([v[2], v[3]]);
    let ip = if v[1] == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(v[4], v[5], v[6], v[7]))
    } else {
        let mut o = [0u8; 16];
        o.copy_from_slice(&v[4..20]);
        IpAddr::V6(Ipv6Addr::from(o))
    };
    Some(SocketAddr::new(ip, port))
}

/// Long-term credentials to sign a request with.
#[derive(Clone, Debug)]
pub struct Auth {
    pub username: String,
    pub realm: String,
    pub nonce: Vec<u8>,
    pub key: [u8; 16],
}

/// `MD5(username ":" realm ":" password)` (RFC 8489 §9.2.2).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(format!("{username}:{realm}:{password}").as_bytes());
    h.finalize().into()
}

/// TURN REST API password: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &str, username: &str) -> String {
    use base64::Engine as _;
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, value: &[u8]) {
    buf.extend_from_slice(&ty.to_be_bytes());
    buf.extend_from_slice(&(value.len() as u16).to_be_bytes());
    buf.extend_from_slice(value);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

fn set_length(buf: &mut [u8], body: usize) {
    buf[2..4].copy_from_slice(&(body as u16).to_be_bytes());
}

/// Encodes a STUN message: `attrs`, then (with `auth`) USERNAME, REALM, NONCE and
/// MESSAGE-INTEGRITY, then (with `fingerprint`) FINGERPRINT.
pub fn encode(
    ty: u16,
    txid: [u8; 12],
    attrs: &[Attr],
    auth: Option<&Auth>,
    fingerprint: bool,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    buf.extend_from_slice(&ty.to_be_bytes());
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    buf.extend_from_slice(&txid);
    for a in attrs {
        match a {
            Attr::Raw(t, v) => push_attr(&mut buf, *t, v),
            Attr::XorAddr(t, addr) => push_attr(&mut buf, *t, &encode_xor_address(addr, &txid)),
        }
    }
    if let Some(auth) = auth {
        push_attr(&mut buf, A_USERNAME, auth.username.as_bytes());
        push_attr(&mut buf, A_REALM, auth.realm.as_bytes());
        push_attr(&mut buf, A_NONCE, &auth.nonce);
        let body = buf.len() - 20 + 24;
        set_length(&mut buf, body);
        let mac = hmac_sha1(&auth.key, &buf);
        push_attr(&mut buf, A_MESSAGE_INTEGRITY, &mac);
    }
    let body = buf.len() - 20;
    set_length(&mut buf, body);
    if fingerprint {
        set_length(&mut buf, body + 8);
        let crc = crc32fast::hash(&buf) ^ 0x5354_554e;
        push_attr(&mut buf, A_FINGERPRINT, &crc.to_be_bytes());
    }
    buf
}

/// An unauthenticated request's bytes, with a fresh transaction id.
pub fn plain_request(method: u16, attrs: &[Attr]) -> Vec<u8> {
    encode(msg_type(method, REQUEST), new_txid(), attrs, None, false)
}

/// A request's bytes signed with `auth` (MESSAGE-INTEGRITY), with a fresh transaction id.
pub fn signed_request(method: u16, attrs: &[Attr], auth: &Auth) -> Vec<u8> {
    encode(
        msg_type(method, REQUEST),
        new_txid(),
        attrs,
        Some(auth),
        false,
    )
}

/// A ChannelData frame; with `pad`, zero-padded to a multiple of 4 (optional over UDP).
pub fn channel_data(channel: u16, payload: &[u8], pad: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 8);
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    if pad {
        while v.len() % 4 != 0 {
            v.push(0);
        }
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// One decoded attribute: type, offset of its header in the message, value.
#[derive(Clone, Debug)]
pub struct RawAttr {
    pub ty: u16,
    pub at: usize,
    pub value: Vec<u8>,
}

/// A decoded STUN message (every attribute kept, in order).
#[derive(Clone, Debug)]
pub struct Parsed {
    pub raw: Vec<u8>,
    pub ty: u16,
    pub txid: [u8; 12],
    pub attrs: Vec<RawAttr>,
}

impl Parsed {
    /// Decodes a STUN message; `None` when `buf` is not one (wrong framing, cookie, length).
    pub fn parse(buf: &[u8]) -> Option<Parsed> {
        if buf.len() < 20 || buf[0] & 0xC0 != 0 {
            return None;
        }
        if u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE {
            return None;
        }
        let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        if len % 4 != 0 || len + 20 != buf.len() {
            return None;
        }
        let mut txid = [0u8; 12];
        txid.copy_from_slice(&buf[8..20]);
        let mut attrs = Vec::new();
        let mut at = 20;
        while at < buf.len() {
            if buf.len() - at < 4 {
                return None;
            }
            let ty = u16::from_be_bytes([buf[at], buf[at + 1]]);
            let l = u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize;
            let padded = (l + 3) & !3;
            if buf.len() - at - 4 < padded {
                return None;
            }
            attrs.push(RawAttr {
                ty,
                at,
                value: buf[at + 4..at + 4 + l].to_vec(),
            });
            at += 4 + padded;
        }
        Some(Parsed {
            raw: buf.to_vec(),
            ty: u16::from_be_bytes([buf[0], buf[1]]),
            txid,
            attrs,
        })
    }

    pub fn method(&self) -> u16 {
        method_of(self.ty)
    }

    pub fn class(&self) -> u16 {
        class_of(self.ty)
    }

    pub fn get(&self, ty: u16) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|a| a.ty == ty)
            .map(|a| a.value.as_slice())
    }

    pub fn has(&self, ty: u16) -> bool {
        self.get(ty).is_some()
    }

    /// ERROR-CODE as (code, reason).
    pub fn error_code(&self) -> Option<(u16, String)> {
        let v = self.get(A_ERROR_CODE)?;
        if v.len() < 4 {
            return None;
        }
        let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
        Some((code, String::from_utf8_lossy(&v[4..]).into_owned()))
    }

    pub fn xor_address(&self, ty: u16) -> Option<SocketAddr> {
        decode_xor_address(self.get(ty)?, &self.txid)
    }

    /// Every attribute of type `ty` decoded as an XOR address, in order (a dual Allocate
    /// answer has two XOR-RELAYED-ADDRESS).
    pub fn xor_addresses(&self, ty: u16) -> Vec<SocketAddr> {
        self.attrs
            .iter()
            .filter(|a| a.ty == ty)
            .filter_map(|a| decode_xor_address(&a.value, &self.txid))
            .collect()
    }

    /// ADDRESS-ERROR-CODE (RFC 8656 §18.12) as (family, code, reason).
    pub fn address_error_code(&self) -> Option<(u8, u16, String)> {
        let v = self.get(A_ADDRESS_ERROR_CODE)?;
        if v.len() < 4 {
            return None;
        }
        let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
        Some((v[0], code, String::from_utf8_lossy(&v[4..]).into_owned()))
    }

    pub fn u32_attr(&self, ty: u16) -> Option<u32> {
        let v = self.get(ty)?;
        Some(u32::from_be_bytes(v.try_into().ok()?))
    }

    pub fn lifetime(&self) -> Option<u32> {
        self.u32_attr(A_LIFETIME)
    }

    pub fn nonce(&self) -> Option<Vec<u8>> {
        self.get(A_NONCE).map(<[u8]>::to_vec)
    }

    pub fn realm(&self) -> Option<String> {
        self.get(A_REALM)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn unknown_attributes(&self) -> Vec<u16> {
        self.get(A_UNKNOWN_ATTRIBUTES)
            .unwrap_or(&[])
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    /// Verifies MESSAGE-INTEGRITY with `key` (RFC 8489 §14.5): HMAC-SHA1 over the message up
    /// to the attribute, with the length field covering the attribute. False when absent.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(mi) = self.attrs.iter().find(|a| a.ty == A_MESSAGE_INTEGRITY) else {
            return false;
        };
        let mut head = self.raw[..mi.at].to_vec();
        set_length(&mut head, mi.at + 24 - 20);
        mi.value.len() == 20 && hmac_sha1(key, &head) == mi.value.as_slice()
    }

    /// Verifies FINGERPRINT (RFC 8489 §14.7): present, last, and the right CRC.
    pub fn verify_fingerprint(&self) -> bool {
        let Some(last) = self.attrs.last() else {
            return false;
        };
        if last.ty != A_FINGERPRINT || last.value.len() != 4 {
            return false;
        }
        let mut head = self.raw[..last.at].to_vec();
        set_length(&mut head, last.at + 8 - 20);
        let want = crc32fast::hash(&head) ^ 0x5354_554e;
        last.value == want.to_be_bytes()
    }
}

/// A human description of a response for assertion messages.
pub fn describe(p: &Parsed) -> String {
    let class = match p.class() {
        REQUEST => "request",
        INDICATION => "indication",
        SUCCESS => "success",
        _ => "error",
    };
    match p.error_code() {
        Some((code, reason)) => format!("method {:#05x} {class} {code} {reason:?}", p.method()),
        None => format!("method {:#05x} {class}", p.method()),
    }
}

#[track_caller]
pub fn assert_success(p: &Parsed, method: u16) {
    assert_eq!(
        (p.method(), p.class()),
        (method, SUCCESS),
        "expected a success response to method {method:#05x}, got {}",
        describe(p)
    );
}

#[track_caller]
pub fn assert_error(p: &Parsed, method: u16, code: u16) {
    assert_eq!(
        (p.method(), p.class()),
        (method, ERROR),
        "expected error {code} to method {method:#05x}, got {}",
        describe(p)
    );
    let (got, reason) = p.error_code().expect("error response without ERROR-CODE");
    assert_eq!(got, code, "expected error {code}, got {got} {reason:?}");
}

/// A ChannelData frame received from the server: (channel, data). Checks that the datagram is
/// exactly the header and the data, optionally padded to 4 with zeros.
#[track_caller]
pub fn parse_channel_data(buf: &[u8]) -> (u16, Vec<u8>) {
    assert!(
        buf.len() >= 4,
        "ChannelData shorter than its header: {buf:?}"
    );
    assert_eq!(
        buf[0] & 0xC0,
        0x40,
        "not ChannelData: first byte {:#04x}",
        buf[0]
    );
    let channel = u16::from_be_bytes([buf[0], buf[1]]);
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let padded = 4 + ((len + 3) & !3);
    assert!(
        buf.len() == 4 + len || buf.len() == padded,
        "ChannelData length field {len} but datagram of {} bytes",
        buf.len()
    );
    assert!(buf[4 + len..].iter().all(|&b| b == 0), "non-zero padding");
    (channel, buf[4..4 + len].to_vec())
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// Ports handed out to test servers, for listening and relaying: disjoint within this process,
/// probed free before use, and outside the kernel's ephemeral range (32768–60999).
///
/// Listening ports are chosen here rather than with port 0 because turnd binds its listeners
/// with `SO_REUSEPORT`, and Linux lets a port-0 bind with `SO_REUSEPORT` land on a port that
/// another `SO_REUSEPORT` socket of the same user already holds: two test servers would then
/// share one port and split its clients between them. Ports outside the ephemeral range are
/// never picked by a port-0 bind, so servers started here cannot be joined that way.
const PORT_BASE: u32 = 10_000;
const PORT_SPAN: u32 = 22_000;
static NEXT_PORT: AtomicU32 = AtomicU32::new(u32::MAX);

/// `width` consecutive ports (1..=64), every one bindable on `ip` right now.
pub fn free_ports(ip: IpAddr, width: u16) -> (u16, u16) {
    assert!((1..=64).contains(&width));
    // A random start per process, so concurrent test processes rarely meet.
    let _ = NEXT_PORT.compare_exchange(
        u32::MAX,
        rand::random::<u32>() % PORT_SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..64 {
        let start = NEXT_PORT.fetch_add(u32::from(width), Ordering::SeqCst) % PORT_SPAN;
        if start + u32::from(width) > PORT_SPAN {
            continue;
        }
        let low = (PORT_BASE + start) as u16;
        let high = low + width - 1;
        // Hold all of them at once, so the check sees the whole block free. No SO_REUSEPORT
        // here: this bind fails if any socket at all holds the port.
        let held: Result<Vec<UdpSocket>, _> = (low..=high)
            .map(|p| UdpSocket::bind(SocketAddr::new(ip, p)))
            .collect();
        if held.is_ok() {
            return (low, high);
        }
    }
    panic!("no block of {width} free ports on {ip} in 64 tries");
}

/// Relay ports per test server.
const RELAY_PORTS: u16 = 32;

/// The flags every test server starts from: listening on 127.0.0.1 (a port from
/// [`free_ports`]), relaying on 127.0.0.1 (a private block of [`RELAY_PORTS`] ports), realm `R`, users alice and bob, one worker. Loopback peers
/// stay denied unless a test adds `allow_peer`.
pub fn base_args() -> ConfigArgs {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (listen, _) = free_ports(ip, 1);
    let (low, high) = free_ports(ip, RELAY_PORTS);
    ConfigArgs {
        listen: vec![format!("127.0.0.1:{listen}")],
        relay_ip: vec!["127.0.0.1".into()],
        relay_ports: Some(format!("{low}-{high}")),
        realm: Some(REALM.into()),
        user: vec![
            format!("{}:{}", ALICE.0, ALICE.1),
            format!("{}:{}", BOB.0, BOB.1),
        ],
        workers: Some("1".into()),
        metrics_listen: Some("127.0.0.1:0".into()),
        ..ConfigArgs::default()
    }
}

/// [`base_args`] for an IPv6-only server: listening and relaying on ::1.
pub fn base_args_v6() -> ConfigArgs {
    require_ipv6_loopback();
    let ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let (listen, _) = free_ports(ip, 1);
    let (low, high) = free_ports(ip, RELAY_PORTS);
    ConfigArgs {
        listen: vec![format!("[::1]:{listen}")],
        relay_ip: vec!["::1".into()],
        relay_ports: Some(format!("{low}-{high}")),
        ..base_args()
    }
}

/// Fails (never skips) with a clear message when IPv6 loopback is unusable here.
pub fn require_ipv6_loopback() {
    let a = UdpSocket::bind("[::1]:0").unwrap_or_else(|e| {
        panic!("IPv6 loopback [::1] is unavailable in this environment (bind failed: {e}); the IPv6 tests need it")
    });
    let b = UdpSocket::bind("[::1]:0").expect("second [::1] socket");
    b.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    a.send_to(b"v6?", b.local_addr().unwrap())
        .unwrap_or_else(|e| panic!("IPv6 loopback [::1] cannot send datagrams: {e}"));
    let mut buf = [0u8; 8];
    let (n, _) = b
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("IPv6 loopback [::1] does not deliver datagrams: {e}"));
    assert_eq!(&buf[..n], b"v6?", "IPv6 loopback garbled a datagram");
}

/// A turnd server running in this process; shut down when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The TCP listener on the same port.
    pub tcp_addr: SocketAddr,
    /// The TLS listeners (`tls_listen`), if any.
    pub tls_addrs: Vec<SocketAddr>,
    server: Option<turnd::shell::Server>,
}

impl TestServer {
    pub fn start(args: ConfigArgs) -> TestServer {
        let config = turnd::config::load_from(&args, &HashMap::new())
            .unwrap_or_else(|e| panic!("test config rejected: {e}"));
        let options = turnd::config::shell_options(&config).expect("shell options");
        let server = turnd::shell::Server::start(options).expect("server starts");
        let addr = server.udp_addrs()[0];
        let tcp_addr = server.tcp_addrs()[0];
        TestServer {
            addr,
            tcp_addr,
            tls_addrs: server.tls_addrs(),
            server: Some(server),
        }
    }

    /// A server with [`base_args`] plus `allow` as `--allow-peer` entries.
    pub fn allowing(allow: &[&str]) -> TestServer {
        TestServer::start(ConfigArgs {
            allow_peer: allow.iter().map(|s| s.to_string()).collect(),
            ..base_args()
        })
    }

    /// The metrics and health listener's address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.server
            .as_ref()
            .expect("server runs until dropped")
            .metrics_addr()
    }

    /// A client of this server authenticating as alice.
    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clients and peers
// ---------------------------------------------------------------------------------------------

fn bind_loopback_like(addr: SocketAddr) -> UdpSocket {
    let local: SocketAddr = if addr.is_ipv4() {
        "127.0.0.1:0".parse().unwrap()
    } else {
        "[::1]:0".parse().unwrap()
    };
    UdpSocket::bind(local).expect("bind a loopback socket")
}

/// Receives one datagram within `timeout` (at most 2 s per read).
pub fn recv_within(sock: &UdpSocket, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + timeout.min(REPLY_TIMEOUT);
    let mut buf = vec![0u8; 65_536];
    for _ in 0..MAX_SKIPPED {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => return Some((buf[..n].to_vec(), from)),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return None
            }
            // An ICMP error surfaced on the socket: keep listening until the deadline.
            Err(_) => continue,
        }
    }
    None
}

/// A raw TURN client on its own loopback socket.
pub struct Client {
    pub sock: UdpSocket,
    pub server: SocketAddr,
    pub username: String,
    pub password: String,
    pub realm: String,
    pub nonce: Option<Vec<u8>>,
}

impl Client {
    pub fn new(server: SocketAddr) -> Client {
        Client {
            sock: bind_loopback_like(server),
            server,
            username: ALICE.0.into(),
            password: ALICE.1.into(),
            realm: REALM.into(),
            nonce: None,
        }
    }

    pub fn with_user(mut self, username: &str, password: &str) -> Client {
        self.username = username.into();
        self.password = password.into();
        self
    }

    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    pub fn key(&self) -> [u8; 16] {
        long_term_key(&self.username, &self.realm, &self.password)
    }

    pub fn auth(&self) -> Auth {
        Auth {
            username: self.username.clone(),
            realm: self.realm.clone(),
            nonce: self.nonce.clone().expect("no nonce yet: call ensure_nonce"),
            key: self.key(),
        }
    }

    pub fn send(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.server).expect("send");
    }

    /// The next datagram from the server within [`REPLY_TIMEOUT`].
    pub fn recv(&self) -> Option<Vec<u8>> {
        self.recv_for(REPLY_TIMEOUT)
    }

    pub fn recv_for(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        for _ in 0..MAX_SKIPPED {
            let left = deadline.saturating_duration_since(Instant::now());
            let (bytes, from) = recv_within(&self.sock, left)?;
            if from == self.server {
                return Some(bytes);
            }
        }
        None
    }

    /// Panics if the server sends anything within [`QUIET`].
    #[track_caller]
    pub fn expect_silence(&self, what: &str) {
        if let Some(bytes) = self.recv_for(QUIET) {
            let shown = Parsed::parse(&bytes).map_or_else(
                || {
                    format!(
                        "{} bytes {:02x?}",
                        bytes.len(),
                        &bytes[..bytes.len().min(32)]
                    )
                },
                |p| describe(&p),
            );
            panic!("expected no datagram after {what}, got {shown}");
        }
    }

    /// Sends `bytes` (a request) and returns the response with the same transaction id.
    #[track_caller]
    pub fn transact(&self, bytes: &[u8]) -> Parsed {
        let txid: [u8; 12] = bytes[8..20].try_into().unwrap();
        self.send(bytes);
        let deadline = Instant::now() + REPLY_TIMEOUT;
        for _ in 0..MAX_SKIPPED {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(reply) = self.recv_for(left) else {
                break;
            };
            if let Some(p) = Parsed::parse(&reply) {
                if p.txid == txid && matches!(p.class(), SUCCESS | ERROR) {
                    return p;
                }
            }
        }
        panic!(
            "no response to method {:#05x} within {REPLY_TIMEOUT:?}",
            method_of(u16::from_be_bytes([bytes[0], bytes[1]]))
        );
    }

    /// An unauthenticated request.
    #[track_caller]
    pub fn request_plain(&self, method: u16, attrs: &[Attr]) -> Parsed {
        self.transact(&plain_request(method, attrs))
    }

    /// Gets REALM and NONCE from a 401 (the first half of the long-term credential dance).
    #[track_caller]
    pub fn ensure_nonce(&mut self) {
        if self.nonce.is_some() {
            return;
        }
        let r = self.request_plain(REFRESH, &[]);
        assert_error(&r, REFRESH, 401);
        self.realm = r.realm().expect("401 without REALM");
        self.nonce = Some(r.nonce().expect("401 without NONCE"));
    }

    /// An authenticated request's bytes, with a fresh transaction id.
    pub fn signed(&mut self, method: u16, attrs: &[Attr]) -> Vec<u8> {
        self.ensure_nonce();
        signed_request(method, attrs, &self.auth())
    }

    /// An authenticated request; a 438 refreshes the nonce and retries once, as a client would.
    #[track_caller]
    pub fn request(&mut self, method: u16, attrs: &[Attr]) -> Parsed {
        let bytes = self.signed(method, attrs);
        let r = self.transact(&bytes);
        if r.error_code().map(|(c, _)| c) == Some(438) {
            self.nonce = r.nonce();
            let bytes = self.signed(method, attrs);
            return self.transact(&bytes);
        }
        r
    }

    /// Allocate with `attrs` (REQUESTED-TRANSPORT UDP is not added for you).
    #[track_caller]
    pub fn allocate_with(&mut self, attrs: &[Attr]) -> Parsed {
        self.request(ALLOCATE, attrs)
    }

    /// A UDP allocation; returns the relayed address.
    #[track_caller]
    pub fn allocate(&mut self) -> SocketAddr {
        let r = self.allocate_with(&[udp()]);
        assert_success(&r, ALLOCATE);
        r.xor_address(A_XOR_RELAYED_ADDRESS)
            .expect("Allocate success without XOR-RELAYED-ADDRESS")
    }

    /// An IPv6 UDP allocation (REQUESTED-ADDRESS-FAMILY IPv6).
    #[track_caller]
    pub fn allocate_v6(&mut self) -> SocketAddr {
        let r = self.allocate_with(&[udp(), address_family(FAMILY_V6)]);
        assert_success(&r, ALLOCATE);
        let relay = r.xor_address(A_XOR_RELAYED_ADDRESS).unwrap();
        assert!(relay.is_ipv6(), "asked for IPv6, got relay {relay}");
        relay
    }

    #[track_caller]
    pub fn create_permission(&mut self, peers: &[SocketAddr]) -> Parsed {
        let attrs: Vec<Attr> = peers.iter().map(|p| peer(*p)).collect();
        self.request(CREATE_PERMISSION, &attrs)
    }

    #[track_caller]
    pub fn permit(&mut self, p: SocketAddr) {
        let r = self.create_permission(&[p]);
        assert_success(&r, CREATE_PERMISSION);
    }

    #[track_caller]
    pub fn channel_bind(&mut self, channel: u16, p: SocketAddr) -> Parsed {
        self.request(CHANNEL_BIND, &[channel_number(channel), peer(p)])
    }

    #[track_caller]
    pub fn bind_channel(&mut self, channel: u16, p: SocketAddr) {
        let r = self.channel_bind(channel, p);
        assert_success(&r, CHANNEL_BIND);
    }

    #[track_caller]
    pub fn refresh(&mut self, secs: Option<u32>) -> Parsed {
        let attrs: Vec<Attr> = secs.map(lifetime).into_iter().collect();
        self.request(REFRESH, &attrs)
    }

    pub fn send_indication(&self, to: SocketAddr, payload: &[u8]) {
        let bytes = encode(
            msg_type(SEND, INDICATION),
            new_txid(),
            &[peer(to), data(payload)],
            None,
            false,
        );
        self.send(&bytes);
    }

    pub fn send_channel_data(&self, channel: u16, payload: &[u8], pad: bool) {
        self.send(&channel_data(channel, payload, pad));
    }

    /// The next datagram, which must be a Data indication: (XOR-PEER-ADDRESS, DATA).
    #[track_caller]
    pub fn recv_data_indication(&self) -> (SocketAddr, Vec<u8>) {
        let bytes = self.recv().expect("no Data indication within the timeout");
        let p = Parsed::parse(&bytes).expect("Data indication is not STUN");
        assert_eq!(
            (p.method(), p.class()),
            (DATA, INDICATION),
            "expected a Data indication, got {}",
            describe(&p)
        );
        let from = p
            .xor_address(A_XOR_PEER_ADDRESS)
            .expect("Data indication without XOR-PEER-ADDRESS");
        let payload = p
            .get(A_DATA)
            .expect("Data indication without DATA")
            .to_vec();
        (from, payload)
    }

    /// The next datagram, which must be ChannelData: (channel, data).
    #[track_caller]
    pub fn recv_channel_data(&self) -> (u16, Vec<u8>) {
        let bytes = self.recv().expect("no ChannelData within the timeout");
        parse_channel_data(&bytes)
    }

    /// A Binding request; returns XOR-MAPPED-ADDRESS.
    #[track_caller]
    pub fn binding(&self) -> SocketAddr {
        let r = self.request_plain(BINDING, &[]);
        assert_success(&r, BINDING);
        r.xor_address(A_XOR_MAPPED_ADDRESS)
            .expect("Binding success without XOR-MAPPED-ADDRESS")
    }
}

/// A peer: a plain UDP socket on loopback.
pub struct Peer {
    pub sock: UdpSocket,
}

impl Peer {
    pub fn v4() -> Peer {
        Peer {
            sock: UdpSocket::bind("127.0.0.1:0").expect("bind peer"),
        }
    }

    pub fn v6() -> Peer {
        Peer {
            sock: UdpSocket::bind("[::1]:0").expect("bind IPv6 peer"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    pub fn send_to(&self, to: SocketAddr, payload: &[u8]) {
        self.sock.send_to(payload, to).expect("peer send");
    }

    /// The next datagram within [`REPLY_TIMEOUT`]: (payload, source).
    pub fn recv(&self) -> Option<(Vec<u8>, SocketAddr)> {
        recv_within(&self.sock, REPLY_TIMEOUT)
    }

    #[track_caller]
    pub fn expect_silence(&self, what: &str) {
        if let Some((bytes, from)) = recv_within(&self.sock, QUIET) {
            panic!(
                "peer {} expected nothing after {what}, got {} bytes from {from}",
                self.addr(),
                bytes.len()
            );
        }
    }
}

/// Unix time now, in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Deterministic pseudo-random bytes (xorshift), for payloads and garbage.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
