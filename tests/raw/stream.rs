//! The raw TURN client on one TCP connection: RFC 8656 §12.5 framing (STUN messages and
//! ChannelData padded to 4, found in the byte stream here, independently of turnd's framing),
//! the long-term credential over a stream, and RFC 6062's Connect and ConnectionBind.
//!
//! Every wait is bounded: an answer within [`STREAM_WAIT`], a connect within
//! [`CONNECT_TIMEOUT`], anything else within the timeout its caller gives.

use super::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

// RFC 6062 methods and attribute.
pub const CONNECT: u16 = 0x00a;
pub const CONNECTION_BIND: u16 = 0x00b;
pub const CONNECTION_ATTEMPT: u16 = 0x00c;
pub const A_CONNECTION_ID: u16 = 0x002a;

/// How long an answer on a stream may take: a Connect is answered only after the relay's own
/// TCP connection to the peer.
pub const STREAM_WAIT: Duration = Duration::from_secs(5);
/// How long a TCP connect may take: a test that opens thousands of connections at once may
/// find the listener's backlog full for a while.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames skipped while waiting for one response, so a reply loop is bounded by count.
const MAX_FRAMES: usize = 32;

/// The length of the frame at the start of `buf` once its 4-byte header is there: ChannelData
/// is padded to 4 on streams (RFC 8656 §12.5), STUN is 20 bytes and its length.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 4 {
        return None;
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    Some(if buf[0] & 0xC0 == 0x40 {
        4 + len.div_ceil(4) * 4
    } else {
        20 + len
    })
}

/// A TCP connection to `server` from source address `from` (another loopback address: the
/// whole 127/8 reaches a server on 127.0.0.1).
pub fn connect_from(from: IpAddr, server: SocketAddr) -> TcpStream {
    let domain = if from.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, None).expect("tcp socket");
    s.bind(&SocketAddr::new(from, 0).into())
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    s.connect_timeout(&server.into(), CONNECT_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {from} -> {server}: {e}"));
    s.into()
}

/// True once the other side has closed `stream` (EOF or reset) within `timeout`; whatever it
/// sent before is discarded.
pub fn closed_within(mut stream: &TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut chunk = [0u8; 4096];
    // Bounded: each round reads at least one byte or ends at the deadline.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Reads exactly `n` bytes from `stream` (a spliced RFC 6062 data connection), each read
/// within [`STREAM_WAIT`].
pub fn read_exactly(mut stream: &TcpStream, n: usize) -> Vec<u8> {
    stream.set_read_timeout(Some(STREAM_WAIT)).unwrap();
    let mut got = vec![0u8; n];
    stream.read_exact(&mut got).expect("all bytes in time");
    got
}

/// A long-term credential and what the server's 401 taught (REALM, NONCE): what a client on
/// a stream signs its requests with.
pub struct Credential {
    pub username: String,
    pub password: String,
    realm: String,
    nonce: Option<Vec<u8>>,
}

impl Credential {
    pub fn new(user: (&str, &str)) -> Credential {
        Credential {
            username: user.0.into(),
            password: user.1.into(),
            realm: String::new(),
            nonce: None,
        }
    }

    /// Whether a 401 has been learnt from: until then, a request needs one first.
    pub fn has_nonce(&self) -> bool {
        self.nonce.is_some()
    }

    /// Takes REALM and NONCE from `r`, which must be the 401 to an unauthenticated Refresh.
    #[track_caller]
    pub fn learn(&mut self, r: &Parsed) {
        assert_error(r, REFRESH, 401);
        self.realm = r.realm().expect("REALM");
        self.nonce = r.nonce();
    }

    pub fn auth(&self) -> Auth {
        Auth {
            username: self.username.clone(),
            realm: self.realm.clone(),
            nonce: self.nonce.clone().expect("nonce"),
            key: long_term_key(&self.username, &self.realm, &self.password),
        }
    }

    /// An authenticated request's bytes, with a fresh transaction id.
    pub fn sign(&self, method: u16, attrs: &[Attr]) -> Vec<u8> {
        signed_request(method, attrs, &self.auth())
    }
}

/// A raw TURN client on one TCP connection (alice unless [`StreamClient::with_user`]).
pub struct StreamClient {
    /// The connection, for a test that writes to it directly.
    pub stream: TcpStream,
    /// Bytes read but not yet returned as a frame.
    buf: Vec<u8>,
    credential: Credential,
}

impl StreamClient {
    pub fn connect(server: SocketAddr) -> StreamClient {
        let stream = TcpStream::connect_timeout(&server, CONNECT_TIMEOUT).expect("tcp connect");
        StreamClient::on(stream)
    }

    /// A client whose connection comes from source address `from` ([`connect_from`]).
    pub fn connect_from(from: IpAddr, server: SocketAddr) -> StreamClient {
        StreamClient::on(connect_from(from, server))
    }

    fn on(stream: TcpStream) -> StreamClient {
        stream.set_nodelay(true).unwrap();
        StreamClient {
            stream,
            buf: Vec::new(),
            credential: Credential::new(ALICE),
        }
    }

    pub fn with_user(mut self, user: (&str, &str)) -> StreamClient {
        self.credential = Credential::new(user);
        self
    }

    pub fn local(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("tcp write");
    }

    /// The next whole frame within `timeout`; `None` on timeout or when the server closed.
    pub fn recv_frame_for(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 4096];
        // Bounded: each round reads at least one byte or ends at the deadline.
        loop {
            if let Some(n) = frame_len(&self.buf).filter(|&n| n <= self.buf.len()) {
                return Some(self.buf.drain(..n).collect());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next whole frame, which must come within [`STREAM_WAIT`].
    #[track_caller]
    pub fn recv_frame(&mut self) -> Vec<u8> {
        self.recv_frame_for(STREAM_WAIT)
            .expect("no frame from the server within the timeout")
    }

    /// The next message within `timeout`, which must be STUN; `None` on timeout or close.
    #[track_caller]
    pub fn recv_for(&mut self, timeout: Duration) -> Option<Parsed> {
        let frame = self.recv_frame_for(timeout)?;
        Some(Parsed::parse(&frame).expect("server sent STUN"))
    }

    /// True once the server has closed the connection (EOF or reset) within `timeout`.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        closed_within(&self.stream, timeout)
    }

    /// Sends `bytes` (a request) and returns the response with the same transaction id.
    #[track_caller]
    pub fn transact(&mut self, bytes: &[u8]) -> Parsed {
        let txid: [u8; 12] = bytes[8..20].try_into().unwrap();
        self.send(bytes);
        self.response_to(txid)
    }

    /// The response with transaction id `txid`; other frames before it are skipped.
    #[track_caller]
    pub fn response_to(&mut self, txid: [u8; 12]) -> Parsed {
        for _ in 0..MAX_FRAMES {
            let frame = self.recv_frame();
            if let Some(p) = Parsed::parse(&frame) {
                if p.txid == txid && matches!(p.class(), SUCCESS | ERROR) {
                    return p;
                }
            }
        }
        panic!("no response with the request's transaction id");
    }

    /// An unauthenticated request.
    #[track_caller]
    pub fn request_plain(&mut self, method: u16, attrs: &[Attr]) -> Parsed {
        self.transact(&plain_request(method, attrs))
    }

    /// An authenticated request, after the 401 that teaches REALM and NONCE the first time.
    #[track_caller]
    pub fn request(&mut self, method: u16, attrs: &[Attr]) -> Parsed {
        if !self.credential.has_nonce() {
            let r = self.request_plain(REFRESH, &[]);
            self.credential.learn(&r);
        }
        let bytes = self.credential.sign(method, attrs);
        self.transact(&bytes)
    }

    /// A UDP allocation made over this connection; returns the relayed address.
    #[track_caller]
    pub fn allocate(&mut self) -> SocketAddr {
        let r = self.request(ALLOCATE, &[udp()]);
        assert_success(&r, ALLOCATE);
        r.xor_address(A_XOR_RELAYED_ADDRESS)
            .expect("relayed address")
    }

    /// An RFC 6062 TCP allocation; returns the relayed address.
    #[track_caller]
    pub fn allocate_tcp(&mut self) -> SocketAddr {
        let r = self.request(ALLOCATE, &[requested_transport(TCP)]);
        assert_success(&r, ALLOCATE);
        r.xor_address(A_XOR_RELAYED_ADDRESS).expect("relayed")
    }

    #[track_caller]
    pub fn permit(&mut self, p: SocketAddr) {
        let r = self.request(CREATE_PERMISSION, &[peer(p)]);
        assert_success(&r, CREATE_PERMISSION);
    }

    /// ChannelBind `channel` to `p`, which must succeed.
    #[track_caller]
    pub fn bind_channel(&mut self, channel: u16, p: SocketAddr) {
        let r = self.request(CHANNEL_BIND, &[channel_number(channel), peer(p)]);
        assert_success(&r, CHANNEL_BIND);
    }

    /// A Binding request; returns XOR-MAPPED-ADDRESS.
    #[track_caller]
    pub fn binding(&mut self) -> SocketAddr {
        let r = self.request_plain(BINDING, &[]);
        assert_success(&r, BINDING);
        r.xor_address(A_XOR_MAPPED_ADDRESS)
            .expect("XOR-MAPPED-ADDRESS")
    }

    /// Connect to `p`, which must succeed: the CONNECTION-ID.
    #[track_caller]
    pub fn connect_peer(&mut self, p: SocketAddr) -> u32 {
        let r = self.request(CONNECT, &[peer(p)]);
        assert_success(&r, CONNECT);
        r.u32_attr(A_CONNECTION_ID).expect("CONNECTION-ID")
    }

    /// ConnectionBind `cid` on this (new) connection, which then carries raw bytes; for
    /// connections whose peer has sent nothing yet. The stream is returned without a read
    /// timeout.
    #[track_caller]
    pub fn bind(self, cid: u32) -> TcpStream {
        let (stream, early) = self.bind_keeping_early_bytes(cid);
        assert!(early.is_empty(), "bytes after the ConnectionBind response");
        stream
    }

    /// ConnectionBind `cid`; also returns any peer bytes that arrived in the same read as the
    /// response (the server forwards what the peer sent before the bind right behind it).
    #[track_caller]
    pub fn bind_keeping_early_bytes(mut self, cid: u32) -> (TcpStream, Vec<u8>) {
        let r = self.request(
            CONNECTION_BIND,
            &[Attr::Raw(A_CONNECTION_ID, cid.to_be_bytes().to_vec())],
        );
        assert_success(&r, CONNECTION_BIND);
        self.stream.set_read_timeout(None).unwrap();
        (self.stream, std::mem::take(&mut self.buf))
    }
}
