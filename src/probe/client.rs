//! A TURN client session over one [`Conn`]: transactions with retransmission (RFC 8489
//! §6.2.1), the long-term credential dance (401 challenge, 438 stale nonce; §9.2), and the
//! TURN requests and indications the probe needs. Built on the project's own codec.

use super::transport::{Conn, Recv};
use crate::core::auth::{long_term_key, Key};
use crate::stun::channel_data::{self, ChannelData};
use crate::stun::message::looks_like_stun;
use crate::stun::{AttrType, Class, Message, MessageBuilder, MessageType, Method, TransactionId};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The first retransmission timeout over UDP (RFC 8489 §6.2.1 recommends 500 ms), doubled
/// after each transmission.
pub const RTO: Duration = Duration::from_millis(500);
/// SOFTWARE sent in every request. It also pads the first, unauthenticated Allocate past the
/// size of a 401, so a server that refuses to amplify still answers it.
pub const SOFTWARE: &str = concat!("turnd-probe/", env!("CARGO_PKG_VERSION"));
/// REQUESTED-TRANSPORT: UDP (RFC 8656 §18.7).
const UDP_PROTOCOL: u32 = 17 << 24;

/// An attribute of a request the probe sends.
#[derive(Clone, Copy, Debug)]
pub enum Attr {
    Lifetime(u32),
    RequestedTransport,
    XorPeer(SocketAddr),
    Channel(u16),
    /// CHANGE-REQUEST flags (RFC 5780 §7.2): 0x4 change IP, 0x2 change port.
    ChangeRequest(u32),
}

/// The parts of a response the probe looks at, copied out of the datagram.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    pub success: bool,
    pub error: Option<(u16, String)>,
    pub realm: Option<String>,
    pub nonce: Option<Vec<u8>>,
    pub xor_mapped: Option<SocketAddr>,
    pub xor_relayed: Option<SocketAddr>,
    pub other_address: Option<SocketAddr>,
    pub response_origin: Option<SocketAddr>,
    pub lifetime: Option<u32>,
    pub software: Option<String>,
    /// Who answered (UDP without `connect`: the address the response came from).
    pub from: Option<SocketAddr>,
}

impl Reply {
    pub fn from_message(m: &Message<'_>) -> Reply {
        let plain = |t: AttrType| m.get(t).and_then(crate::stun::address::decode_plain);
        Reply {
            success: m.class() == Class::SuccessResponse,
            error: m
                .error_code()
                .and_then(Result::ok)
                .map(|(c, r)| (c, r.to_string())),
            realm: m.realm().and_then(Result::ok).map(str::to_string),
            nonce: m.nonce().and_then(Result::ok).map(<[u8]>::to_vec),
            xor_mapped: m
                .xor_mapped_address()
                .and_then(Result::ok)
                .or_else(|| m.mapped_address().and_then(Result::ok)),
            xor_relayed: m.xor_relayed_address().and_then(Result::ok),
            other_address: plain(AttrType::OTHER_ADDRESS),
            response_origin: plain(AttrType::RESPONSE_ORIGIN),
            lifetime: m.lifetime().and_then(Result::ok),
            software: m.software().and_then(Result::ok).map(str::to_string),
            from: None,
        }
    }
}

/// Why a transaction did not give a usable answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxError {
    /// No answer: after `sent` transmissions over UDP, or within the timeout over a stream.
    NoAnswer {
        sent: u32,
    },
    /// UDP: ICMP port unreachable.
    Unreachable,
    /// TCP/TLS: the server closed the connection.
    Closed,
    /// An error response. `authenticated`: the request carried MESSAGE-INTEGRITY.
    Error {
        code: u16,
        reason: String,
        authenticated: bool,
    },
    /// A 401 to a request keyed with the user's credentials.
    Rejected {
        realm: String,
    },
    /// The server asks for credentials and none were given.
    NeedCredentials,
    /// The response did not carry what it must (e.g. no XOR-RELAYED-ADDRESS).
    Malformed(String),
    Io(String),
}

/// Long-term credentials as the user gave them.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// `--realm`: when set, the key is computed with it even if the server says otherwise,
    /// exactly as a client configured with that realm would.
    pub realm: Option<String>,
}

/// One client: a connection, and the realm, nonce and key learnt from the server.
pub struct Session {
    pub conn: Conn,
    creds: Option<Credentials>,
    timeout: Duration,
    pub realm: Option<String>,
    nonce: Option<Vec<u8>>,
    key: Option<Key>,
    /// Frames that arrived while waiting for a response (data during a transaction).
    pending: Vec<Vec<u8>>,
    pub software: Option<String>,
}

fn new_txid() -> TransactionId {
    TransactionId(rand::random())
}

impl Session {
    pub fn new(conn: Conn, creds: Option<Credentials>, timeout: Duration) -> Session {
        Session {
            conn,
            creds,
            timeout,
            realm: None,
            nonce: None,
            key: None,
            pending: Vec::new(),
            software: None,
        }
    }

    /// Builds a request; with `auth`, adds USERNAME, REALM, NONCE and MESSAGE-INTEGRITY.
    fn build(&self, method: Method, txid: TransactionId, attrs: &[Attr], auth: bool) -> Vec<u8> {
        let mut buf = vec![0u8; 1024];
        let ty = MessageType::new(method, Class::Request);
        // Invariant: 1024 bytes hold the header, a handful of fixed-size attributes and the
        // credentials (USERNAME ≤ 508, REALM and NONCE bounded by what the server sent, which
        // was parsed from one datagram) — the `expect`s below cannot fail for the requests the
        // probe makes, except with absurd credentials, which then panic with this message.
        let mut b = MessageBuilder::new(&mut buf, ty, txid).expect("1024-byte buffer");
        for a in attrs {
            match *a {
                Attr::Lifetime(s) => b.add_u32(AttrType::LIFETIME, s),
                Attr::RequestedTransport => b.add_u32(AttrType::REQUESTED_TRANSPORT, UDP_PROTOCOL),
                Attr::XorPeer(p) => b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &p),
                Attr::Channel(c) => b.add_u32(AttrType::CHANNEL_NUMBER, u32::from(c) << 16),
                Attr::ChangeRequest(f) => b.add_u32(AttrType::CHANGE_REQUEST, f),
            }
            .expect("attribute fits in 1024 bytes");
        }
        b.add(AttrType::SOFTWARE, SOFTWARE.as_bytes())
            .expect("SOFTWARE fits");
        if auth {
            if let (Some(c), Some(realm), Some(nonce), Some(key)) =
                (&self.creds, &self.realm, &self.nonce, &self.key)
            {
                b.add(AttrType::USERNAME, c.username.as_bytes())
                    .and_then(|_| b.add(AttrType::REALM, realm.as_bytes()))
                    .and_then(|_| b.add(AttrType::NONCE, nonce))
                    .and_then(|_| b.add_message_integrity(key))
                    .expect("credentials fit in 1024 bytes");
            }
        }
        b.add_fingerprint().expect("FINGERPRINT fits");
        let n = b.finish();
        buf.truncate(n);
        buf
    }

    /// Sends `bytes` and waits for the response with `txid`: over UDP retransmitting after
    /// 500 ms, 1 s, 2 s … until `timeout` has passed; over a stream sending once and waiting
    /// `timeout`. Other frames arriving meanwhile are kept for [`Session::recv_data`].
    pub fn transact_raw(&mut self, bytes: &[u8], txid: TransactionId) -> Result<Reply, TxError> {
        let start = Instant::now();
        let end = start + self.timeout;
        let mut sent = 0u32;
        let mut rto = RTO;
        // Bounded: each pass sends once and waits until the next retransmission or `end`; the
        // retransmission times double, so there are at most log2(timeout / 500 ms) + 1 passes.
        loop {
            self.conn
                .send(bytes)
                .map_err(|e| TxError::Io(e.to_string()))?;
            sent += 1;
            let wait_until = if self.conn.is_stream() {
                end
            } else {
                (Instant::now() + rto).min(end)
            };
            rto *= 2;
            // Bounded by `wait_until`: every `recv` waits at most until then.
            loop {
                match self.conn.recv(wait_until) {
                    Ok(Recv::Frame(f)) => {
                        if looks_like_stun(&f) {
                            if let Ok(m) = Message::parse(&f) {
                                if m.transaction_id() == txid
                                    && matches!(
                                        m.class(),
                                        Class::SuccessResponse | Class::ErrorResponse
                                    )
                                {
                                    let r = Reply::from_message(&m);
                                    if r.software.is_some() {
                                        self.software.clone_from(&r.software);
                                    }
                                    return Ok(r);
                                }
                            }
                        }
                        self.pending.push(f);
                    }
                    Ok(Recv::Timeout) => break,
                    Ok(Recv::Unreachable) => return Err(TxError::Unreachable),
                    Ok(Recv::Closed) => return Err(TxError::Closed),
                    Err(e) => return Err(TxError::Io(e.to_string())),
                }
            }
            if Instant::now() >= end {
                return Err(TxError::NoAnswer { sent });
            }
        }
    }

    /// A request without credentials (Binding).
    pub fn request(&mut self, method: Method, attrs: &[Attr]) -> Result<Reply, TxError> {
        let txid = new_txid();
        let bytes = self.build(method, txid, attrs, false);
        let r = self.transact_raw(&bytes, txid)?;
        check(r, false)
    }

    /// An authenticated request: the first one is sent bare to learn REALM and NONCE from
    /// the 401 (RFC 8489 §9.2.3); a 438 (stale nonce) is retried with the new nonce.
    pub fn auth_request(&mut self, method: Method, attrs: &[Attr]) -> Result<Reply, TxError> {
        // Bounded: at most 4 requests (challenge, authenticated, two stale-nonce retries).
        for _ in 0..4 {
            let auth = self.key.is_some();
            let txid = new_txid();
            let bytes = self.build(method, txid, attrs, auth);
            let r = self.transact_raw(&bytes, txid)?;
            match r.error.as_ref().map(|(c, _)| *c) {
                Some(401) if !auth => self.learn(&r)?,
                Some(401) => {
                    return Err(TxError::Rejected {
                        realm: r.realm.or(self.realm.clone()).unwrap_or_default(),
                    })
                }
                Some(438) => self.learn(&r)?,
                _ => return check(r, auth),
            }
        }
        Err(TxError::Malformed(
            "the server keeps asking for a new nonce (438 after 438)".into(),
        ))
    }

    /// Takes REALM and NONCE from a 401 or 438 and derives the key.
    fn learn(&mut self, r: &Reply) -> Result<(), TxError> {
        let (Some(realm), Some(nonce)) = (&r.realm, &r.nonce) else {
            return Err(TxError::Malformed(format!(
                "{} without REALM and NONCE",
                r.error.as_ref().map_or(0, |e| e.0)
            )));
        };
        let Some(c) = &self.creds else {
            return Err(TxError::NeedCredentials);
        };
        let key_realm = c.realm.as_deref().unwrap_or(realm);
        self.key = Some(long_term_key(&c.username, key_realm, &c.password));
        self.realm = Some(realm.clone());
        self.nonce = Some(nonce.clone());
        Ok(())
    }

    pub fn allocate(&mut self) -> Result<Reply, TxError> {
        let r = self.auth_request(Method::ALLOCATE, &[Attr::RequestedTransport])?;
        if r.xor_relayed.is_none() {
            return Err(TxError::Malformed(
                "Allocate success without XOR-RELAYED-ADDRESS".into(),
            ));
        }
        Ok(r)
    }

    /// A Send indication (RFC 8656 §11.1): no answer, no integrity.
    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> Result<(), TxError> {
        let mut buf = vec![0u8; 128 + data.len()];
        let ty = MessageType::new(Method::SEND, Class::Indication);
        // Invariant: the buffer is sized for the header, XOR-PEER-ADDRESS (≤ 24) and DATA.
        let mut b = MessageBuilder::new(&mut buf, ty, new_txid()).expect("sized buffer");
        b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &peer)
            .and_then(|_| b.add(AttrType::DATA, data))
            .expect("sized buffer");
        let n = b.finish();
        self.conn
            .send(&buf[..n])
            .map_err(|e| TxError::Io(e.to_string()))
    }

    pub fn send_channel_data(&mut self, channel: u16, data: &[u8]) -> Result<(), TxError> {
        let padded = if self.conn.is_stream() {
            (data.len() + 3) & !3
        } else {
            data.len()
        };
        let mut buf = vec![0u8; 4 + padded];
        // Invariant: the probe's payloads are a few dozen bytes, far below u16::MAX.
        channel_data::write_header(&mut buf, channel, data.len() as u16);
        buf[4..4 + data.len()].copy_from_slice(data);
        self.conn.send(&buf).map_err(|e| TxError::Io(e.to_string()))
    }

    /// The next relayed payload before `deadline`: a Data indication (`Some(peer)`) or
    /// ChannelData (`None` and the channel number).
    pub fn recv_data(&mut self, deadline: Instant) -> Result<Option<Relayed>, TxError> {
        // Bounded: each pass consumes one pending frame or one `recv` that waits at most until
        // the deadline.
        loop {
            let frame = if self.pending.is_empty() {
                match self.conn.recv(deadline) {
                    Ok(Recv::Frame(f)) => f,
                    Ok(Recv::Timeout) => return Ok(None),
                    Ok(Recv::Unreachable) => return Err(TxError::Unreachable),
                    Ok(Recv::Closed) => return Err(TxError::Closed),
                    Err(e) => return Err(TxError::Io(e.to_string())),
                }
            } else {
                self.pending.remove(0)
            };
            if ChannelData::is_channel_data(&frame) {
                if let Ok(cd) = ChannelData::parse(&frame) {
                    return Ok(Some(Relayed {
                        via: Via::Channel(cd.channel),
                        data: cd.data.to_vec(),
                    }));
                }
            } else if let Ok(m) = Message::parse(&frame) {
                if m.method() == Method::DATA && m.class() == Class::Indication {
                    if let (Some(Ok(peer)), Some(d)) = (m.xor_peer_address(), m.data()) {
                        return Ok(Some(Relayed {
                            via: Via::Peer(peer),
                            data: d.to_vec(),
                        }));
                    }
                }
            }
        }
    }
}

/// How a relayed payload arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A Data indication from this peer.
    Peer(SocketAddr),
    /// ChannelData on this channel.
    Channel(u16),
}

#[derive(Clone, Debug)]
pub struct Relayed {
    pub via: Via,
    pub data: Vec<u8>,
}

fn check(r: Reply, authenticated: bool) -> Result<Reply, TxError> {
    if r.success {
        return Ok(r);
    }
    let (code, reason) = r
        .error
        .unwrap_or((0, "error response without ERROR-CODE".into()));
    Err(TxError::Error {
        code,
        reason,
        authenticated,
    })
}
