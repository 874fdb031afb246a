//! What a client reports: the outcome of each request, and indications from the server.

use super::attr::Attr;
use crate::stun::address;
use crate::stun::{AttrType, Class, Message, Method};
use std::fmt;
use std::net::SocketAddr;

/// The handle a command returns; its [`Event`] carries it back. One request may take several
/// transactions (a 401 challenge, a 438 stale nonce), each with its own transaction id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// The parts of a response a client looks at, copied out of the datagram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub success: bool,
    /// ERROR-CODE (code, reason phrase).
    pub error: Option<(u16, String)>,
    pub realm: Option<String>,
    pub nonce: Option<Vec<u8>>,
    /// XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from an old server.
    pub mapped: Option<SocketAddr>,
    /// Every XOR-RELAYED-ADDRESS: two for a dual-stack allocation (RFC 8656 §7.4).
    pub relayed: Vec<SocketAddr>,
    pub lifetime: Option<u32>,
    pub reservation_token: Option<[u8; 8]>,
    pub connection_id: Option<u32>,
    /// OTHER-ADDRESS and RESPONSE-ORIGIN (RFC 5780 §7.4, §7.3).
    pub other_address: Option<SocketAddr>,
    pub response_origin: Option<SocketAddr>,
    pub software: Option<String>,
    /// The response as received, for a caller that checks more than the fields above.
    pub raw: Vec<u8>,
}

impl Reply {
    pub fn from_message(m: &Message<'_>) -> Reply {
        let plain = |t: AttrType| m.get(t).and_then(address::decode_plain);
        let txid = m.transaction_id();
        Reply {
            success: m.class() == Class::SuccessResponse,
            error: m
                .error_code()
                .and_then(Result::ok)
                .map(|(c, r)| (c, r.to_string())),
            realm: m.realm().and_then(Result::ok).map(str::to_string),
            nonce: m.nonce().and_then(Result::ok).map(<[u8]>::to_vec),
            mapped: m
                .xor_mapped_address()
                .and_then(Result::ok)
                .or_else(|| m.mapped_address().and_then(Result::ok)),
            relayed: m
                .attributes()
                .filter(|(t, _)| *t == AttrType::XOR_RELAYED_ADDRESS)
                .filter_map(|(_, v)| address::decode_xor(v, &txid))
                .collect(),
            lifetime: m.lifetime().and_then(Result::ok),
            reservation_token: m.reservation_token().and_then(Result::ok),
            connection_id: m.get(AttrType::CONNECTION_ID).and_then(|v| {
                let b: [u8; 4] = v.try_into().ok()?;
                Some(u32::from_be_bytes(b))
            }),
            other_address: plain(AttrType::OTHER_ADDRESS),
            response_origin: plain(AttrType::RESPONSE_ORIGIN),
            software: m.software().and_then(Result::ok).map(str::to_string),
            raw: m.raw().to_vec(),
        }
    }

    /// The first XOR-RELAYED-ADDRESS.
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.relayed.first().copied()
    }
}

/// What a successful request did, by method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Binding: the reflexive transport address.
    Mapped(SocketAddr),
    /// Allocate: the relayed transport address(es) and the lifetime granted.
    Allocated {
        relayed: Vec<SocketAddr>,
        lifetime: u32,
    },
    /// Refresh: the lifetime granted (0: the allocation is gone).
    Refreshed { lifetime: u32 },
    /// CreatePermission: the peers now permitted.
    PermissionInstalled { peers: Vec<SocketAddr> },
    /// ChannelBind: the channel now bound to the peer.
    ChannelBound { channel: u16, peer: SocketAddr },
    /// Connect (RFC 6062): the connection to bind on a new data connection.
    Connected { connection_id: u32 },
    /// ConnectionBind (RFC 6062): the data connection now carries the peer's bytes.
    ConnectionBound { connection_id: u32 },
    /// A request of another method.
    Other,
}

impl Outcome {
    /// What a success response to a `method` request carrying `attrs` says; `Err` names what
    /// a success of that method must carry and this one does not.
    pub fn of(method: Method, attrs: &[Attr], reply: &Reply) -> Result<Outcome, &'static str> {
        let peers = || -> Vec<SocketAddr> {
            attrs
                .iter()
                .filter_map(|a| match a {
                    Attr::XorPeerAddress(p) => Some(*p),
                    _ => None,
                })
                .collect()
        };
        Ok(match method {
            Method::BINDING => Outcome::Mapped(
                reply
                    .mapped
                    .ok_or("Binding success without XOR-MAPPED-ADDRESS")?,
            ),
            Method::ALLOCATE if reply.relayed.is_empty() => {
                return Err("Allocate success without XOR-RELAYED-ADDRESS")
            }
            Method::ALLOCATE => Outcome::Allocated {
                relayed: reply.relayed.clone(),
                lifetime: reply.lifetime.unwrap_or(0),
            },
            Method::REFRESH => Outcome::Refreshed {
                lifetime: reply.lifetime.unwrap_or(0),
            },
            Method::CREATE_PERMISSION => Outcome::PermissionInstalled { peers: peers() },
            Method::CHANNEL_BIND => {
                let channel = attrs.iter().find_map(|a| match a {
                    Attr::ChannelNumber(c) => Some(*c),
                    _ => None,
                });
                match (channel, peers().first()) {
                    (Some(channel), Some(peer)) => Outcome::ChannelBound {
                        channel,
                        peer: *peer,
                    },
                    _ => Outcome::Other,
                }
            }
            Method::CONNECT => Outcome::Connected {
                connection_id: reply
                    .connection_id
                    .ok_or("Connect success without CONNECTION-ID")?,
            },
            Method::CONNECTION_BIND => match attrs.iter().find_map(|a| match a {
                Attr::ConnectionId(c) => Some(*c),
                _ => None,
            }) {
                Some(connection_id) => Outcome::ConnectionBound { connection_id },
                None => Outcome::Other,
            },
            _ => Outcome::Other,
        })
    }
}

/// Why a request did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No answer: after `sent` transmissions over UDP, or within Ti over a stream.
    TimedOut { sent: u32 },
    /// An error response. `authenticated`: the request carried MESSAGE-INTEGRITY.
    Error {
        code: u16,
        reason: String,
        authenticated: bool,
    },
    /// 401 to a request signed with the credentials: they are wrong (RFC 8489 §9.2.5 says
    /// not to retry).
    Rejected { realm: String },
    /// The server asks for credentials and the client has none.
    NeedCredentials,
    /// The answer did not carry what it must (a 401 without NONCE, an Allocate success
    /// without XOR-RELAYED-ADDRESS, 438 after 438 …).
    Malformed(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::TimedOut { sent } => write!(f, "no answer after {sent} transmissions"),
            Failure::Error { code, reason, .. } => write!(f, "error {code} {reason}"),
            Failure::Rejected { realm } => write!(f, "credentials rejected (realm \"{realm}\")"),
            Failure::NeedCredentials => f.write_str("the server asks for credentials"),
            Failure::Malformed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Failure {}

/// What [`super::Client::poll_event`] hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Succeeded {
        request: RequestId,
        method: Method,
        outcome: Outcome,
        reply: Reply,
    },
    Failed {
        request: RequestId,
        method: Method,
        error: Failure,
        /// The error response, when there was one.
        reply: Option<Reply>,
    },
    /// A peer connected to a TCP allocation (RFC 6062 §4.4): ConnectionBind it on a new
    /// connection to accept.
    ConnectionAttempt {
        connection_id: u32,
        peer: SocketAddr,
    },
}

impl Event {
    /// The request this event answers (none for a ConnectionAttempt).
    pub fn request(&self) -> Option<RequestId> {
        match self {
            Event::Succeeded { request, .. } | Event::Failed { request, .. } => Some(*request),
            Event::ConnectionAttempt { .. } => None,
        }
    }

    /// The request's result: the reply on success, the failure otherwise.
    pub fn into_result(self) -> Result<Reply, Failure> {
        match self {
            Event::Succeeded { reply, .. } => Ok(reply),
            Event::Failed { error, .. } => Err(error),
            Event::ConnectionAttempt { .. } => Err(Failure::Malformed(
                "a ConnectionAttempt answers no request".into(),
            )),
        }
    }
}
