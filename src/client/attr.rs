//! The attributes a client puts in its requests, and the encoding of a whole request.
//!
//! A request is kept as its method and attribute list, not as bytes: after a 401 or 438 it
//! is sent again as a new transaction, and the XOR of an IPv6 XOR-PEER-ADDRESS depends on the
//! transaction id (RFC 8489 §14.2), so it has to be encoded again.

use super::credentials::Auth;
use crate::stun::{
    AddressFamily, AttrType, BuildError, Class, MessageBuilder, MessageType, Method, TransactionId,
};
use std::net::SocketAddr;

/// IANA protocol numbers for REQUESTED-TRANSPORT (RFC 8656 §18.7, RFC 6062 §6.1).
pub const PROTOCOL_UDP: u8 = 17;
pub const PROTOCOL_TCP: u8 = 6;

/// One attribute of a request or indication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attr {
    /// LIFETIME in seconds (RFC 8656 §18.2).
    Lifetime(u32),
    /// REQUESTED-TRANSPORT: [`PROTOCOL_UDP`], or [`PROTOCOL_TCP`] for RFC 6062.
    RequestedTransport(u8),
    /// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.10).
    RequestedAddressFamily(AddressFamily),
    /// ADDITIONAL-ADDRESS-FAMILY: a dual-stack allocation (RFC 8656 §18.11).
    AdditionalAddressFamily(AddressFamily),
    /// EVEN-PORT with its R bit: reserve the next port too (RFC 8656 §18.6).
    EvenPort(bool),
    /// RESERVATION-TOKEN from an earlier EVEN-PORT allocation (RFC 8656 §18.9).
    ReservationToken([u8; 8]),
    /// DONT-FRAGMENT (RFC 8656 §18.8).
    DontFragment,
    /// XOR-PEER-ADDRESS (RFC 8656 §18.3).
    XorPeerAddress(SocketAddr),
    /// CHANNEL-NUMBER (RFC 8656 §18.1).
    ChannelNumber(u16),
    /// CONNECTION-ID (RFC 6062 §6.2.1).
    ConnectionId(u32),
    /// CHANGE-REQUEST flags (RFC 5780 §7.2): 0x4 change IP, 0x2 change port.
    ChangeRequest(u32),
    /// DATA (RFC 8656 §18.4).
    Data(Vec<u8>),
    /// Any other attribute, value as given.
    Other(AttrType, Vec<u8>),
}

impl Attr {
    fn add(&self, b: &mut MessageBuilder<'_>) -> Result<(), BuildError> {
        match self {
            Attr::Lifetime(s) => b.add_u32(AttrType::LIFETIME, *s),
            Attr::RequestedTransport(p) => {
                b.add_u32(AttrType::REQUESTED_TRANSPORT, u32::from(*p) << 24)
            }
            Attr::RequestedAddressFamily(f) => {
                b.add(AttrType::REQUESTED_ADDRESS_FAMILY, &[f.to_u8(), 0, 0, 0])
            }
            Attr::AdditionalAddressFamily(f) => {
                b.add(AttrType::ADDITIONAL_ADDRESS_FAMILY, &[f.to_u8(), 0, 0, 0])
            }
            Attr::EvenPort(r) => b.add(AttrType::EVEN_PORT, &[if *r { 0x80 } else { 0 }]),
            Attr::ReservationToken(t) => b.add(AttrType::RESERVATION_TOKEN, t),
            Attr::DontFragment => b.add(AttrType::DONT_FRAGMENT, &[]),
            Attr::XorPeerAddress(p) => b.add_xor_address(AttrType::XOR_PEER_ADDRESS, p),
            Attr::ChannelNumber(c) => b.add_u32(AttrType::CHANNEL_NUMBER, u32::from(*c) << 16),
            Attr::ConnectionId(id) => b.add_u32(AttrType::CONNECTION_ID, *id),
            Attr::ChangeRequest(f) => b.add_u32(AttrType::CHANGE_REQUEST, *f),
            Attr::Data(d) => b.add(AttrType::DATA, d),
            Attr::Other(t, v) => b.add(*t, v),
        }
    }
}

/// What is added after a request's own attributes.
#[derive(Clone, Copy, Debug)]
pub struct Trailer<'a> {
    pub software: Option<&'a str>,
    /// USERNAME, REALM, NONCE and MESSAGE-INTEGRITY (RFC 8489 §9.2.3) when given.
    pub auth: Option<(&'a str, &'a Auth)>,
    pub fingerprint: bool,
}

/// The largest request this client builds: a few fixed-size attributes and credentials
/// (USERNAME ≤ 508 bytes, REALM and NONCE ≤ 763 each), well inside one datagram.
pub const MAX_REQUEST_LEN: usize = 2048;

/// Encodes a request: `attrs`, SOFTWARE, the credentials, FINGERPRINT — in the order RFC 8489
/// §14.5–14.7 requires for the last two.
pub fn encode_request(
    method: Method,
    txid: TransactionId,
    attrs: &[Attr],
    t: Trailer<'_>,
) -> Result<Vec<u8>, BuildError> {
    let mut buf = vec![0u8; MAX_REQUEST_LEN];
    let mut b = MessageBuilder::new(&mut buf, MessageType::new(method, Class::Request), txid)?;
    for a in attrs {
        a.add(&mut b)?;
    }
    if let Some(s) = t.software {
        b.add(AttrType::SOFTWARE, s.as_bytes())?;
    }
    if let Some((username, auth)) = t.auth {
        b.add(AttrType::USERNAME, username.as_bytes())?;
        b.add(AttrType::REALM, auth.realm.as_bytes())?;
        b.add(AttrType::NONCE, &auth.nonce)?;
        b.add_message_integrity(&auth.key)?;
    }
    if t.fingerprint {
        b.add_fingerprint()?;
    }
    let n = b.finish();
    buf.truncate(n);
    Ok(buf)
}
