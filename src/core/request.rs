//! A TURN request as its handler receives it: decoded, authenticated and matched to the
//! 5-tuple's allocation once, in one place ([`Server::handle_request`](super::Server)), so
//! each method's file holds only that method's rules.

use super::auth::SessionKey;
use super::five_tuple::FiveTuple;
use super::ids::AllocationId;
use super::reply::Responder;
use crate::stun::{AddressFamily, ErrorCode, Message, Method};
use std::net::SocketAddr;
use std::time::Instant;

/// The request methods the server serves: STUN's Binding (RFC 8489), TURN's (RFC 8656 §17)
/// and RFC 6062's. Send is an indication only, Data and ConnectionAttempt go only from server
/// to client: a request of any of those — or of any unknown method — is not supported, and
/// RFC 8489 §6.3 discards it without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestMethod {
    Binding,
    Allocate,
    Refresh,
    CreatePermission,
    ChannelBind,
    Connect,
    ConnectionBind,
}

impl RequestMethod {
    pub const ALL: [RequestMethod; 7] = [
        RequestMethod::Binding,
        RequestMethod::Allocate,
        RequestMethod::Refresh,
        RequestMethod::CreatePermission,
        RequestMethod::ChannelBind,
        RequestMethod::Connect,
        RequestMethod::ConnectionBind,
    ];

    /// The request method `m` is, or `None` for a method served by no request.
    pub fn of(m: Method) -> Option<RequestMethod> {
        RequestMethod::ALL.into_iter().find(|r| r.method() == m)
    }

    pub const fn method(self) -> Method {
        match self {
            RequestMethod::Binding => Method::BINDING,
            RequestMethod::Allocate => Method::ALLOCATE,
            RequestMethod::Refresh => Method::REFRESH,
            RequestMethod::CreatePermission => Method::CREATE_PERMISSION,
            RequestMethod::ChannelBind => Method::CHANNEL_BIND,
            RequestMethod::Connect => Method::CONNECT,
            RequestMethod::ConnectionBind => Method::CONNECTION_BIND,
        }
    }

    /// Its name in logs and metric labels.
    pub fn label(self) -> &'static str {
        self.method().name()
    }

    /// The TURN methods: everything but Binding needs the long-term credential (RFC 8656
    /// §5) and is remembered for retransmissions.
    pub fn is_turn(self) -> bool {
        self != RequestMethod::Binding
    }
}

/// An authenticated TURN request and what the server knows of its 5-tuple.
pub(crate) struct Request<'a, 'm> {
    pub now: Instant,
    pub from: FiveTuple,
    pub msg: &'a Message<'m>,
    /// The authenticated user: the name its allocation and quota are kept under.
    pub username: &'a str,
    pub key: &'a SessionKey,
    /// Builds the answer: signed with `key`, with SOFTWARE, and with FINGERPRINT when the
    /// request had one.
    pub reply: Responder<'a>,
    /// The allocation on `from` in any state (one still opening counts).
    pub allocation: Option<AllocationId>,
    /// The active allocation on `from` that `username` owns; 437 when there is none, 441 when
    /// another user created it (RFC 8656 §5: requests on an allocation must use the
    /// credentials that created it).
    pub owned: Result<AllocationId, ErrorCode>,
    /// The address families the owned allocation relays now, `[IPv4, IPv6]` (both for a dual
    /// allocation, until one is deleted).
    pub families: [bool; 2],
}

impl Request<'_, '_> {
    /// 443 (Peer Address Family Mismatch, RFC 8656 §9.2, §11.2) unless the owned allocation
    /// relays `family`.
    pub fn relays_family(&self, family: AddressFamily) -> Result<(), ErrorCode> {
        match self.families[usize::from(family == AddressFamily::V6)] {
            true => Ok(()),
            false => Err(ErrorCode::PeerAddressFamilyMismatch),
        }
    }

    /// 443 unless the owned allocation relays the family of `peer`.
    pub fn relays_peer_family(&self, peer: &SocketAddr) -> Result<(), ErrorCode> {
        self.relays_family(AddressFamily::of(peer))
    }
}

/// What a handler did with a request it did not refuse (a refusal is an `Err(ErrorCode)`,
/// answered with that code and nothing else).
pub(crate) enum Answer {
    /// Send this response now (and remember it for retransmissions).
    Now(Vec<u8>),
    /// Nothing to send now: the answer waits for I/O the shell does (a relay socket, a peer
    /// connection), the request is a retransmission of one that does, or the handler sent
    /// its answer itself (ConnectionBind's must precede the splice it starts).
    Later,
}

/// What a request handler returns.
pub(crate) type Handled = Result<Answer, ErrorCode>;
