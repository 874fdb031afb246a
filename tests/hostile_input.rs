//! Hostile input against a running server (issue #8): every malformed or abusive message gets
//! the RFC's answer or a silent drop — each case asserts which — and after every case a
//! *bystander*, a second client allocated before the attack, still relays both ways through its
//! channel, and the server still answers `/healthz` and a fresh Binding. UDP, TCP and TLS.
//!
//! The peer filter's full matrix of address forms (IPv6 disguises included) is in
//! `tests/peer_filter_matrix.rs`; here the denied forms are replayed over every transport.

mod raw;
mod tls_certs;

use raw::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tls_certs::{Ca, CertFiles};
use turnd::config::ConfigArgs;

const CHANNEL: u16 = 0x4000;

/// The server under attack plus a bystander that must keep working.
struct Fixture {
    server: TestServer,
    bystander: Client,
    relay: SocketAddr,
    peer: Peer,
    _dir: Option<std::path::PathBuf>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(|_| {})
    }

    fn with(extra: impl FnOnce(&mut ConfigArgs)) -> Fixture {
        let mut args = ConfigArgs {
            allow_peer: vec!["127.0.0.1/32".into()],
            ..base_args()
        };
        extra(&mut args);
        let server = TestServer::start(args);
        let mut bystander = server.client().with_user(BOB.0, BOB.1);
        let relay = bystander.allocate();
        let peer = Peer::v4();
        bystander.bind_channel(CHANNEL, peer.addr());
        let f = Fixture {
            server,
            bystander,
            relay,
            peer,
            _dir: None,
        };
        f.assert_alive("start");
        f
    }

    /// The bystander relays both ways, a fresh client gets a Binding answer, and `/healthz`
    /// answers 200: the worker and the admin threads are alive.
    #[track_caller]
    fn assert_alive(&self, after: &str) {
        let up = format!("up after {after}");
        self.bystander
            .send_channel_data(CHANNEL, up.as_bytes(), false);
        let (got, from) = self
            .peer
            .recv()
            .unwrap_or_else(|| panic!("bystander's ChannelData not relayed after {after}"));
        assert_eq!((got.as_slice(), from), (up.as_bytes(), self.relay));
        let down = format!("down after {after}");
        self.peer.send_to(self.relay, down.as_bytes());
        let (ch, got) = self.bystander.recv_channel_data();
        assert_eq!((ch, got), (CHANNEL, down.into_bytes()), "after {after}");
        assert_ne!(
            self.server.client().binding().port(),
            0,
            "Binding after {after}"
        );
        assert_eq!(http_status(self.server.metrics_addr(), "/healthz"), 200);
    }
}

fn http_status(addr: SocketAddr, path: &str) -> u16 {
    let mut s = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT).expect("admin connect");
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// What the server must do with a hostile message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Nothing comes back.
    Silence,
    /// A success response to this method.
    Success(u16),
    /// An error response to this method with this code.
    Error(u16, u16),
}

fn header(ty: u16, len: u16, txid: [u8; 12]) -> Vec<u8> {
    let mut v = ty.to_be_bytes().to_vec();
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    v.extend_from_slice(&txid);
    v
}

fn raw_attr(ty: u16, value: &[u8]) -> Vec<u8> {
    let mut v = ty.to_be_bytes().to_vec();
    v.extend_from_slice(&(value.len() as u16).to_be_bytes());
    v.extend_from_slice(value);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

fn binding_req() -> u16 {
    msg_type(BINDING, REQUEST)
}

/// Unauthenticated hostile messages and the answer each must get (the same on every transport
/// where the framing is intact).
fn unauthenticated_cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let good = encode(binding_req(), new_txid(), &[], None, false);
    let mut cases: Vec<(&'static str, Vec<u8>, Expect)> = Vec::new();

    // Lying length fields.
    let mut longer = good.clone();
    longer[3] = 8;
    cases.push(("length longer than the message", longer, Expect::Silence));
    let mut unaligned = good.clone();
    unaligned.extend_from_slice(&[0, 0]);
    unaligned[3] = 2;
    cases.push(("length not a multiple of 4", unaligned, Expect::Silence));
    // Bad cookie.
    let mut cookie = good.clone();
    cookie[4] ^= 0xff;
    cases.push(("wrong magic cookie", cookie, Expect::Silence));
    // An attribute whose length runs past the end of the message.
    let mut over = header(binding_req(), 8, new_txid());
    over.extend_from_slice(&[0x80, 0x22, 0x00, 0x64, b'x', b'y', b'z', b'w']);
    cases.push(("attribute length past the end", over, Expect::Silence));
    // An attribute header cut short by the message length (4 bytes of body: a header only,
    // claiming 4 bytes of value).
    let mut cut = header(binding_req(), 4, new_txid());
    cut.extend_from_slice(&[0x80, 0x22, 0x00, 0x04]);
    cases.push(("attribute value missing", cut, Expect::Silence));
    // FINGERPRINT with a wrong CRC: RFC 8489 §7.3 — not STUN, discarded.
    let mut fp = encode(binding_req(), new_txid(), &[], None, true);
    let n = fp.len();
    fp[n - 1] ^= 1;
    cases.push(("FINGERPRINT wrong", fp, Expect::Silence));
    // FINGERPRINT followed by another attribute: FINGERPRINT must be last.
    let mut fp_mid = encode(binding_req(), new_txid(), &[], None, true);
    fp_mid.extend_from_slice(&raw_attr(0x8022, b"late"));
    let body = (fp_mid.len() - 20) as u16;
    fp_mid[2..4].copy_from_slice(&body.to_be_bytes());
    cases.push(("attribute after FINGERPRINT", fp_mid, Expect::Silence));
    // Duplicate SOFTWARE (optional, understood): only the first counts (RFC 8489 §14).
    let dup = encode(
        binding_req(),
        new_txid(),
        &[
            Attr::Raw(A_SOFTWARE, b"one".to_vec()),
            Attr::Raw(A_SOFTWARE, b"two".to_vec()),
        ],
        None,
        false,
    );
    cases.push((
        "duplicate SOFTWARE on Binding",
        dup,
        Expect::Success(BINDING),
    ));
    // Unknown comprehension-required attribute: 420 (RFC 8489 §6.3.1.1).
    let unk = encode(
        binding_req(),
        new_txid(),
        &[Attr::Raw(0x0031, vec![1, 2, 3, 4])],
        None,
        false,
    );
    cases.push((
        "unknown required attribute",
        unk,
        Expect::Error(BINDING, 420),
    ));
    // Unknown comprehension-optional attribute: ignored.
    let opt = encode(
        binding_req(),
        new_txid(),
        &[Attr::Raw(0x8031, vec![1, 2, 3, 4])],
        None,
        false,
    );
    cases.push(("unknown optional attribute", opt, Expect::Success(BINDING)));
    // Unknown-required on a TURN request without credentials: the 401 comes first (§6.3:
    // unknown attributes are checked after authentication).
    let unk_alloc = encode(
        msg_type(ALLOCATE, REQUEST),
        new_txid(),
        &[udp(), Attr::Raw(0x0031, vec![0; 4])],
        None,
        false,
    );
    cases.push((
        "unknown required attribute on unauthenticated Allocate",
        unk_alloc,
        Expect::Error(ALLOCATE, 401),
    ));
    // Oversized USERNAME/REALM/NONCE without integrity: only a 401 challenge, no state.
    for (name, ty) in [
        ("oversized USERNAME", A_USERNAME),
        ("oversized REALM", A_REALM),
        ("oversized NONCE", A_NONCE),
    ] {
        let big = encode(
            msg_type(ALLOCATE, REQUEST),
            new_txid(),
            &[udp(), Attr::Raw(ty, vec![b'a'; 2000])],
            None,
            false,
        );
        cases.push((name, big, Expect::Error(ALLOCATE, 401)));
    }
    // Responses and indications other than Send are not for a server: dropped.
    let resp = encode(msg_type(BINDING, SUCCESS), new_txid(), &[], None, false);
    cases.push((
        "a Binding success sent to the server",
        resp,
        Expect::Silence,
    ));
    let ind = encode(msg_type(DATA, INDICATION), new_txid(), &[], None, false);
    cases.push(("a Data indication sent to the server", ind, Expect::Silence));
    // A Send indication without an allocation, and one without DATA: dropped.
    let send = encode(
        msg_type(SEND, INDICATION),
        new_txid(),
        &[peer("127.0.0.1:9".parse().unwrap())],
        None,
        false,
    );
    cases.push(("Send indication without allocation", send, Expect::Silence));
    // An unknown method: silently discarded (RFC 8489 §6.3), no 400.
    let unknown_method = encode(msg_type(0x0ff, REQUEST), new_txid(), &[], None, false);
    cases.push(("unknown method", unknown_method, Expect::Silence));
    cases
}

/// Datagram-only hostile input (meaningless as a stream frame).
fn datagram_only_cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let good = encode(binding_req(), new_txid(), &[], None, false);
    let mut cases: Vec<(&'static str, Vec<u8>, Expect)> = Vec::new();
    for n in [0usize, 1, 4, 19] {
        cases.push(("truncated header", good[..n].to_vec(), Expect::Silence));
    }
    let mut shorter = good.clone();
    shorter.extend_from_slice(&raw_attr(0x8022, b"tail"));
    cases.push(("length shorter than the datagram", shorter, Expect::Silence));
    // ChannelData without an allocation, with bad lengths and numbers.
    cases.push((
        "ChannelData longer than the datagram",
        vec![0x40, 0x00, 0x00, 0x10, 1, 2],
        Expect::Silence,
    ));
    cases.push((
        "ChannelData reserved number 0x5000",
        channel_data(0x5000, b"x", true),
        Expect::Silence,
    ));
    cases.push((
        "ChannelData number 0x7fff",
        channel_data(0x7fff, b"x", true),
        Expect::Silence,
    ));
    cases.push(("ChannelData header only", vec![0x40, 0x00], Expect::Silence));
    cases.push(("garbage", vec![0xff; 64], Expect::Silence));
    cases
}

#[track_caller]
fn check_reply(what: &str, reply: Option<Vec<u8>>, expect: Expect) {
    match (expect, reply) {
        (Expect::Silence, None) => {}
        (Expect::Silence, Some(r)) => {
            let shown = Parsed::parse(&r).map_or_else(|| format!("{r:02x?}"), |p| describe(&p));
            panic!("{what}: expected silence, got {shown}");
        }
        (_, None) => panic!("{what}: expected {expect:?}, got nothing"),
        (Expect::Success(m), Some(r)) => {
            let p = Parsed::parse(&r).unwrap_or_else(|| panic!("{what}: reply is not STUN"));
            assert_success(&p, m);
        }
        (Expect::Error(m, code), Some(r)) => {
            let p = Parsed::parse(&r).unwrap_or_else(|| panic!("{what}: reply is not STUN"));
            assert_error(&p, m, code);
        }
    }
}

#[test]
fn udp_malformed_and_unauthenticated_input() {
    let f = Fixture::new();
    let mut cases = unauthenticated_cases();
    cases.extend(datagram_only_cases());
    for (what, bytes, expect) in cases {
        let attacker = f.server.client();
        attacker.send(&bytes);
        let wait = if expect == Expect::Silence {
            QUIET
        } else {
            REPLY_TIMEOUT
        };
        check_reply(what, attacker.recv_for(wait), expect);
        f.assert_alive(what);
    }
}

/// Hostile messages from a client that has authenticated and holds an allocation.
#[test]
fn udp_authenticated_hostile_input() {
    let f = Fixture::new();
    let mut c = f.server.client();
    c.allocate();
    let key = c.key();

    // MESSAGE-INTEGRITY before USERNAME/REALM/NONCE: what follows it is ignored (RFC 8489
    // §14.5), so the request carries integrity without credentials → 400 (§9.2.4).
    c.ensure_nonce();
    let txid = new_txid();
    let mut m = header(msg_type(REFRESH, REQUEST), 0, txid);
    let body = 24u16;
    m[2..4].copy_from_slice(&body.to_be_bytes());
    let mac = hmac(&key, &m);
    m.extend_from_slice(&raw_attr(A_MESSAGE_INTEGRITY, &mac));
    m.extend_from_slice(&raw_attr(A_USERNAME, c.username.as_bytes()));
    m.extend_from_slice(&raw_attr(A_REALM, c.realm.as_bytes()));
    m.extend_from_slice(&raw_attr(A_NONCE, c.nonce.as_ref().unwrap()));
    let len = (m.len() - 20) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    let r = c.transact(&m);
    assert_error(&r, REFRESH, 400);
    f.assert_alive("MESSAGE-INTEGRITY before USERNAME");

    // Attributes after MESSAGE-INTEGRITY (other than FINGERPRINT) are ignored: a LIFETIME of
    // 0 after it does not delete the allocation, an unknown required one does not cause 420.
    for (what, trailing) in [
        (
            "LIFETIME 0 after MESSAGE-INTEGRITY",
            raw_attr(A_LIFETIME, &[0, 0, 0, 0]),
        ),
        (
            "unknown required after MESSAGE-INTEGRITY",
            raw_attr(0x0031, &[0; 4]),
        ),
    ] {
        let mut m = c.signed(REFRESH, &[lifetime(900)]);
        m.extend_from_slice(&trailing);
        let len = (m.len() - 20) as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        let r = c.transact(&m);
        assert_success(&r, REFRESH);
        assert_eq!(r.lifetime(), Some(900), "{what}");
        f.assert_alive(what);
    }

    // Duplicate attributes: the first counts.
    let r = c.request(REFRESH, &[lifetime(1200), lifetime(0)]);
    assert_success(&r, REFRESH);
    assert_eq!(r.lifetime(), Some(1200), "first LIFETIME wins");
    f.assert_alive("duplicate LIFETIME");

    // Unknown comprehension-required attribute on a signed request: a signed 420.
    let r = c.request(REFRESH, &[Attr::Raw(0x0031, vec![0; 4])]);
    assert_error(&r, REFRESH, 420);
    assert_eq!(r.unknown_attributes(), vec![0x0031]);
    assert!(
        r.verify_integrity(&key),
        "420 to an authenticated request is signed"
    );
    f.assert_alive("signed unknown required attribute");

    // Oversized USERNAME with integrity: RFC 8489 §14.3 caps it below 509 bytes, so the
    // attribute is malformed → 400.
    c.ensure_nonce();
    let mut auth = c.auth();
    auth.username = "u".repeat(600);
    let m = encode(
        msg_type(REFRESH, REQUEST),
        new_txid(),
        &[],
        Some(&auth),
        false,
    );
    let r = c.transact(&m);
    assert_error(&r, REFRESH, 400);
    f.assert_alive("signed oversized USERNAME");
    // Oversized NONCE with integrity: not one we issued → 438 (a fresh nonce).
    let mut auth = c.auth();
    auth.nonce = vec![b'n'; 700];
    let m = encode(
        msg_type(REFRESH, REQUEST),
        new_txid(),
        &[],
        Some(&auth),
        false,
    );
    let r = c.transact(&m);
    assert_error(&r, REFRESH, 438);
    f.assert_alive("signed oversized NONCE");

    // ChannelData: unbound channel, reserved number, lying lengths, zero length.
    c.send_channel_data(0x4001, b"unbound", false);
    c.expect_silence("ChannelData on an unbound channel");
    f.peer.expect_silence("ChannelData on an unbound channel");
    f.assert_alive("ChannelData on an unbound channel");
    c.bind_channel(0x4002, f.peer.addr());
    c.send(&[0x40, 0x02, 0x00, 0x20, 1, 2, 3]);
    f.peer
        .expect_silence("ChannelData longer than its datagram");
    f.assert_alive("ChannelData longer than its datagram");
    // Length shorter than the datagram: only `length` bytes are relayed (the rest is padding
    // or junk, RFC 8656 §12.5).
    c.send(&[0x40, 0x02, 0x00, 0x02, b'o', b'k', b'x', b'x', b'x', b'x']);
    let (got, _) = f.peer.recv().expect("short-length ChannelData relayed");
    assert_eq!(got, b"ok");
    f.assert_alive("ChannelData shorter than its datagram");
    // Zero-length application data is legal and relayed as an empty datagram.
    c.send_channel_data(0x4002, b"", false);
    let (got, _) = f.peer.recv().expect("zero-length ChannelData relayed");
    assert!(got.is_empty());
    f.assert_alive("zero-length ChannelData");
    c.send_indication(f.peer.addr(), b"");
    let (got, _) = f.peer.recv().expect("zero-length Send relayed");
    assert!(got.is_empty());
    // A Send indication without DATA is dropped.
    let m = encode(
        msg_type(SEND, INDICATION),
        new_txid(),
        &[peer(f.peer.addr())],
        None,
        false,
    );
    c.send(&m);
    f.peer.expect_silence("Send indication without DATA");
    f.assert_alive("Send indication without DATA");
    // ChannelBind to a number outside 0x4000..=0x4FFF: 400.
    let r = c.channel_bind(0x5000, f.peer.addr());
    assert_error(&r, CHANNEL_BIND, 400);
    let r = c.channel_bind(0x3fff, f.peer.addr());
    assert_error(&r, CHANNEL_BIND, 400);
    f.assert_alive("ChannelBind with bad numbers");
}

/// Denied peers in every IPv4 form, over one transport's client. IPv6 disguises of them are
/// covered on an IPv6 allocation in `tests/peer_filter_matrix.rs`.
const DENIED: &[&str] = &[
    "10.0.0.1:9",
    "127.0.0.2:9",
    "169.254.169.254:80",
    "100.64.0.1:9",
    "192.168.1.1:9",
    "172.16.0.1:9",
    "0.0.0.0:9",
    "255.255.255.255:9",
    "224.0.0.1:9",
    "240.0.0.1:9",
];

/// Every denied form gets 403 on CreatePermission and ChannelBind, alone or mixed with an
/// allowed peer, and the refused mixed request installs nothing: a Send indication to the
/// allowed peer is then dropped for want of a permission. (Nothing is ever sent to the denied,
/// non-loopback addresses themselves; `tests/peer_filter_matrix.rs` drops data to denied
/// loopback forms, where a socket listens.)
#[test]
fn udp_denied_peers_get_403_and_a_refused_mixed_request_installs_nothing() {
    let f = Fixture::new();
    let mut c = f.server.client();
    c.allocate();
    for d in DENIED {
        let p: SocketAddr = d.parse().unwrap();
        let r = c.create_permission(&[p]);
        assert_error(&r, CREATE_PERMISSION, 403);
        let r = c.channel_bind(0x4100, p);
        assert_error(&r, CHANNEL_BIND, 403);
        // Mixed with an allowed peer: the whole request is refused, nothing installed.
        let r = c.create_permission(&[f.peer.addr(), p]);
        assert_error(&r, CREATE_PERMISSION, 403);
        f.assert_alive(d);
    }
    // No permission was installed for the allowed peer by the refused mixed request.
    c.send_indication(f.peer.addr(), b"no permission");
    f.peer.expect_silence("Send without a permission");
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

/// Whether `bytes` is one well-framed STUN message on a stream (its length field tells the
/// truth and is a multiple of 4): the hostile cases that survive stream framing.
fn intact_frame(bytes: &[u8]) -> bool {
    bytes.len() >= 20 && {
        let len = u16::from_be_bytes([bytes[2], bytes[3]]) as usize;
        len % 4 == 0 && len + 20 == bytes.len()
    }
}

/// Bytes read from `s` within `timeout`; `None` once the server closed the connection.
fn read_some(s: &mut impl Read, timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if Instant::now() >= deadline {
            return Some(out);
        }
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => {
                out.extend_from_slice(&chunk[..n]);
                // One whole STUN message is all any case expects.
                if out.len() >= 20
                    && out.len() >= 20 + u16::from_be_bytes([out[2], out[3]]) as usize
                {
                    return Some(out);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Some(out)
            }
            // A reset, or a TLS peer closing without close_notify.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
                ) =>
            {
                return None
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn tcp_hostile_frames() {
    // A short unauthenticated timeout, so a frame that never completes (a TLS ClientHello's
    // bytes read as a STUN header announcing 276 bytes) is closed within the test's wait.
    let f = Fixture::with(|a| a.unauthenticated_timeout = Some("2".into()));
    // Intact frames with hostile content: the same answers as over UDP, and the connection
    // stays open.
    for (what, bytes, expect) in unauthenticated_cases() {
        if !intact_frame(&bytes) {
            continue; // a lying or unaligned length on a stream is a framing case, below
        }
        let mut s = TcpStream::connect(f.server.tcp_addr).unwrap();
        s.set_read_timeout(Some(QUIET)).unwrap();
        s.write_all(&bytes).unwrap();
        let wait = if expect == Expect::Silence {
            QUIET
        } else {
            REPLY_TIMEOUT
        };
        s.set_read_timeout(Some(wait)).unwrap();
        let got = read_some(&mut s, wait).unwrap_or_else(|| panic!("{what}: TCP closed"));
        check_reply(what, if got.is_empty() { None } else { Some(got) }, expect);
        // Still open and serving: a Binding on the same connection.
        let b = encode(binding_req(), new_txid(), &[], None, false);
        s.write_all(&b).unwrap();
        s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        let got = read_some(&mut s, REPLY_TIMEOUT).expect("open after hostile frame");
        assert_success(&Parsed::parse(&got).expect("Binding answer"), BINDING);
        f.assert_alive(what);
    }
    // Broken framing: the connection is closed, nothing is answered.
    let stream_breakers: Vec<(&str, Vec<u8>)> = vec![
        ("garbage first byte", vec![0xff; 32]),
        (
            "TLS ClientHello on the plain port",
            vec![0x16, 0x03, 0x01, 0x00, 0x10],
        ),
        ("HTTP on the TURN port", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("unaligned STUN length", {
            let mut h = header(binding_req(), 6, new_txid());
            h.extend_from_slice(&[0; 6]);
            h
        }),
        (
            "frame larger than max_frame_size",
            header(binding_req(), 0xfffc, new_txid()),
        ),
    ];
    for (what, bytes) in stream_breakers {
        let mut s = TcpStream::connect(f.server.tcp_addr).unwrap();
        s.write_all(&bytes).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        match read_some(&mut s, Duration::from_secs(5)) {
            None => {}
            Some(got) => panic!("{what}: connection not closed (got {} bytes)", got.len()),
        }
        f.assert_alive(what);
    }
}

#[test]
fn tcp_denied_peers_and_channel_data() {
    let f = Fixture::with(|a| a.max_frame_size = Some("4096".into()));
    let mut c = TcpTurn::connect(f.server.tcp_addr);
    c.allocate();
    for d in DENIED {
        let p: SocketAddr = d.parse().unwrap();
        let r = c.request(CREATE_PERMISSION, &[peer(p)]);
        assert_error(&r, CREATE_PERMISSION, 403);
        let r = c.request(CHANNEL_BIND, &[channel_number(0x4100), peer(p)]);
        assert_error(&r, CHANNEL_BIND, 403);
    }
    f.assert_alive("TCP denied peers");
    // ChannelData on an unbound channel over the stream: dropped, connection kept.
    c.s.write_all(&channel_data(0x4001, b"abcd", true)).unwrap();
    f.peer
        .expect_silence("TCP ChannelData on an unbound channel");
    // The connection still serves the client's requests.
    let r = c.request(REFRESH, &[lifetime(300)]);
    assert_success(&r, REFRESH);
    f.assert_alive("TCP ChannelData on an unbound channel");
}

/// A raw TURN client over one TCP connection (just enough for these tests).
struct TcpTurn {
    s: TcpStream,
    nonce: Option<Vec<u8>>,
    realm: String,
}

impl TcpTurn {
    fn connect(addr: SocketAddr) -> TcpTurn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        TcpTurn {
            s,
            nonce: None,
            realm: REALM.into(),
        }
    }

    fn transact(&mut self, m: &[u8]) -> Parsed {
        self.s.write_all(m).unwrap();
        let got = read_some(&mut self.s, REPLY_TIMEOUT).expect("TCP open");
        Parsed::parse(&got).expect("a STUN answer")
    }

    fn request(&mut self, method: u16, attrs: &[Attr]) -> Parsed {
        if self.nonce.is_none() {
            let r = self.transact(&encode(
                msg_type(method, REQUEST),
                new_txid(),
                attrs,
                None,
                false,
            ));
            assert_error(&r, method, 401);
            self.nonce = r.nonce();
            self.realm = r.realm().unwrap();
        }
        let auth = Auth {
            username: ALICE.0.into(),
            realm: self.realm.clone(),
            nonce: self.nonce.clone().unwrap(),
            key: long_term_key(ALICE.0, &self.realm, ALICE.1),
        };
        self.transact(&encode(
            msg_type(method, REQUEST),
            new_txid(),
            attrs,
            Some(&auth),
            false,
        ))
    }

    fn allocate(&mut self) {
        let r = self.request(ALLOCATE, &[udp()]);
        assert_success(&r, ALLOCATE);
    }
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

fn tls_fixture(dir: &std::path::Path) -> (Fixture, Arc<rustls_client::ClientConfig>) {
    let ca = Ca::new();
    let files = CertFiles::write(dir, &ca.issue("turnd hostile", 1));
    let f = Fixture::with(|a| {
        a.tls_listen = vec!["127.0.0.1:0".into()];
        a.tls_cert = Some(files.cert.display().to_string());
        a.tls_key = Some(files.key.display().to_string());
    });
    (f, rustls_client::config(&ca))
}

mod rustls_client {
    use super::*;
    pub use tokio_rustls::rustls::ClientConfig;
    use tokio_rustls::rustls::{self, RootCertStore};

    pub fn config(ca: &Ca) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().into()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// A blocking TLS stream over std's TcpStream.
fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls_client::ClientConfig>,
) -> tokio_rustls::rustls::StreamOwned<tokio_rustls::rustls::ClientConnection, TcpStream> {
    use tokio_rustls::rustls::{pki_types::ServerName, ClientConnection, StreamOwned};
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    StreamOwned::new(conn, tcp)
}

#[test]
fn tls_garbage_and_hostile_frames() {
    let dir = std::env::temp_dir().join(format!("turnd-hostile-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (f, config) = tls_fixture(&dir);
    let addr = f.server.tls_addrs[0];

    // Garbage instead of a handshake: closed.
    for (what, bytes) in [
        ("garbage instead of ClientHello", vec![0xff; 64]),
        (
            "plain STUN on the TLS port",
            encode(binding_req(), new_txid(), &[], None, false),
        ),
        (
            "truncated ClientHello",
            vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01],
        ),
    ] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&bytes).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // The server answers garbage with a TLS alert at most, then closes; it never answers
        // STUN. Read to the close.
        let mut all = Vec::new();
        let closed = loop {
            let mut chunk = [0u8; 512];
            match s.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        // "truncated ClientHello" waits for the rest until the handshake timeout (10 s by
        // default); the connection must at least not be answered with STUN.
        if what != "truncated ClientHello" {
            assert!(closed, "{what}: TLS connection not closed");
        }
        assert!(Parsed::parse(&all).is_none(), "{what}: answered with STUN");
        f.assert_alive(what);
    }

    // Inside a good TLS session: hostile frames get the same answers as over TCP.
    for (what, bytes, expect) in unauthenticated_cases() {
        if !intact_frame(&bytes) {
            continue;
        }
        let mut s = tls_connect(addr, config.clone());
        s.write_all(&bytes).unwrap();
        s.flush().unwrap();
        let wait = if expect == Expect::Silence {
            QUIET
        } else {
            REPLY_TIMEOUT
        };
        s.sock.set_read_timeout(Some(wait)).unwrap();
        let got = read_some(&mut s, wait).unwrap_or_else(|| panic!("{what}: TLS closed"));
        check_reply(what, if got.is_empty() { None } else { Some(got) }, expect);
        f.assert_alive(what);
    }
    // Garbage inside the TLS session: closed.
    let mut s = tls_connect(addr, config.clone());
    s.write_all(&[0xff; 32]).unwrap();
    s.flush().unwrap();
    s.sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(
        read_some(&mut s, Duration::from_secs(5)).is_none(),
        "garbage in TLS: not closed"
    );
    f.assert_alive("garbage inside TLS");

    // Denied peers over TLS.
    let mut s = tls_connect(addr, config);
    let mut transact = |m: Vec<u8>| -> Parsed {
        s.write_all(&m).unwrap();
        s.flush().unwrap();
        Parsed::parse(&read_some(&mut s, REPLY_TIMEOUT).expect("TLS open")).expect("STUN")
    };
    let r = transact(encode(
        msg_type(ALLOCATE, REQUEST),
        new_txid(),
        &[udp()],
        None,
        false,
    ));
    assert_error(&r, ALLOCATE, 401);
    let auth = Auth {
        username: ALICE.0.into(),
        realm: r.realm().unwrap(),
        nonce: r.nonce().unwrap(),
        key: long_term_key(ALICE.0, REALM, ALICE.1),
    };
    let r = transact(encode(
        msg_type(ALLOCATE, REQUEST),
        new_txid(),
        &[udp()],
        Some(&auth),
        false,
    ));
    assert_success(&r, ALLOCATE);
    for d in DENIED {
        let p: SocketAddr = d.parse().unwrap();
        let r = transact(encode(
            msg_type(CREATE_PERMISSION, REQUEST),
            new_txid(),
            &[peer(p)],
            Some(&auth),
            false,
        ));
        assert_error(&r, CREATE_PERMISSION, 403);
    }
    f.assert_alive("TLS denied peers");
    let _ = std::fs::remove_dir_all(&dir);
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 20] {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}
