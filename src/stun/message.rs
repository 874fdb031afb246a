//! Parsing a STUN message by borrowing the datagram.
//!
//! [`Message::parse`] validates the framing once and records where each attribute lies in a
//! fixed table; getters then read values straight out of the datagram. Nothing is copied and
//! nothing is allocated, which is what lets a Send indication be relayed without touching the
//! heap.

use super::address::{self, AddressFamily};
use super::attribute::AttrType;
use super::integrity::{self, INTEGRITY_LEN, INTEGRITY_SHA256_MAX, INTEGRITY_SHA256_MIN};
use super::{Class, MessageType, Method, ParseError, TransactionId, HEADER_LEN, MAGIC_COOKIE};
use std::net::SocketAddr;

/// The most attributes a message may carry. Real TURN requests carry fewer than 12; a table
/// of fixed size keeps parsing allocation-free and bounds the work an attacker can ask for.
pub const MAX_ATTRIBUTES: usize = 32;

#[derive(Clone, Copy, Debug, Default)]
struct AttrRef {
    ty: u16,
    /// Offset of the value from the start of the message. Not a u16: a message (a TCP frame)
    /// can be 20 + 65532 bytes long, so a value can start past offset 65535.
    start: u32,
    len: u16,
}

/// A parsed STUN message borrowing its datagram.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    ty: MessageType,
    txid: TransactionId,
    attrs: [AttrRef; MAX_ATTRIBUTES],
    count: usize,
    /// Offset of the MESSAGE-INTEGRITY attribute header, if present.
    integrity_at: Option<usize>,
    /// Offset of the MESSAGE-INTEGRITY-SHA256 attribute header, if present.
    integrity_sha256_at: Option<usize>,
    has_fingerprint: bool,
}

/// True when `buf` starts like a STUN message (top two bits zero and the magic cookie), the
/// test RFC 8656 §12 uses to tell STUN from ChannelData on one port.
pub fn looks_like_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN
        && buf[0] & 0xC0 == 0
        && u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) == MAGIC_COOKIE
}

impl<'a> Message<'a> {
    /// Parses one whole STUN message; `buf` must be exactly the message (a UDP datagram, or a
    /// frame cut from a stream by its length field).
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let raw_type = u16::from_be_bytes([buf[0], buf[1]]);
        let ty = MessageType::from_u16(raw_type).ok_or(ParseError::NotStun)?;
        if u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE {
            return Err(ParseError::BadMagicCookie);
        }
        let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        if len % 4 != 0 || HEADER_LEN + len != buf.len() {
            return Err(ParseError::BadLength);
        }
        let mut txid = TransactionId::default();
        txid.0.copy_from_slice(&buf[8..20]);

        let mut msg = Message {
            buf,
            ty,
            txid,
            attrs: [AttrRef::default(); MAX_ATTRIBUTES],
            count: 0,
            integrity_at: None,
            integrity_sha256_at: None,
            has_fingerprint: false,
        };
        let mut at = HEADER_LEN;
        while at < buf.len() {
            if buf.len() - at < 4 {
                return Err(ParseError::AttributeOverflow);
            }
            let t = u16::from_be_bytes([buf[at], buf[at + 1]]);
            let l = u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize;
            let start = at + 4;
            let padded = (l + 3) & !3;
            if buf.len() - start < padded {
                return Err(ParseError::AttributeOverflow);
            }
            if msg.has_fingerprint {
                // FINGERPRINT must be the last attribute (RFC 8489 §14.7).
                return Err(ParseError::BadFingerprint);
            }
            let at_type = AttrType(t);
            if at_type == AttrType::FINGERPRINT {
                if l != 4 {
                    return Err(ParseError::BadFingerprint);
                }
                let want = u32::from_be_bytes([
                    buf[start],
                    buf[start + 1],
                    buf[start + 2],
                    buf[start + 3],
                ]);
                // The length field as if the message ended with FINGERPRINT, which it does.
                if integrity::fingerprint(&buf[..at], len as u16) != want {
                    return Err(ParseError::BadFingerprint);
                }
                msg.has_fingerprint = true;
            } else if at_type == AttrType::MESSAGE_INTEGRITY_SHA256
                && msg.integrity_sha256_at.is_none()
            {
                // MESSAGE-INTEGRITY-SHA256 may follow MESSAGE-INTEGRITY (RFC 8489 §14.5); its
                // value is an HMAC-SHA256 truncated to 16–32 bytes, a multiple of 4 (§14.6).
                if !(INTEGRITY_SHA256_MIN..=INTEGRITY_SHA256_MAX).contains(&l) || l % 4 != 0 {
                    return Err(ParseError::BadAttribute(t));
                }
                msg.integrity_sha256_at = Some(at);
                if msg.count == MAX_ATTRIBUTES {
                    return Err(ParseError::TooManyAttributes);
                }
                msg.attrs[msg.count] = AttrRef {
                    ty: t,
                    start: start as u32,
                    len: l as u16,
                };
                msg.count += 1;
            } else if msg.integrity_at.is_none() && msg.integrity_sha256_at.is_none() {
                // Attributes after MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 (other than
                // FINGERPRINT, and MESSAGE-INTEGRITY-SHA256 after MESSAGE-INTEGRITY) are
                // ignored (RFC 8489 §14.5, §14.6): they are not covered by the HMAC.
                if at_type == AttrType::MESSAGE_INTEGRITY {
                    if l != INTEGRITY_LEN {
                        return Err(ParseError::BadAttribute(t));
                    }
                    msg.integrity_at = Some(at);
                }
                if msg.count == MAX_ATTRIBUTES {
                    return Err(ParseError::TooManyAttributes);
                }
                // `l` was read from a u16; `start` is below 20 + 65536, so it needs a u32.
                msg.attrs[msg.count] = AttrRef {
                    ty: t,
                    start: start as u32,
                    len: l as u16,
                };
                msg.count += 1;
            }
            at = start + padded;
        }
        Ok(msg)
    }

    pub fn message_type(&self) -> MessageType {
        self.ty
    }

    pub fn method(&self) -> Method {
        self.ty.method
    }

    pub fn class(&self) -> Class {
        self.ty.class
    }

    pub fn transaction_id(&self) -> TransactionId {
        self.txid
    }

    /// The whole message as received.
    pub fn raw(&self) -> &'a [u8] {
        self.buf
    }

    /// Every attribute up to MESSAGE-INTEGRITY (inclusive; and MESSAGE-INTEGRITY-SHA256 when it
    /// follows), in order, duplicates included.
    pub fn attributes(&self) -> impl Iterator<Item = (AttrType, &'a [u8])> + '_ {
        let buf = self.buf;
        self.attrs[..self.count].iter().map(move |a| {
            let s = a.start as usize;
            (AttrType(a.ty), &buf[s..s + a.len as usize])
        })
    }

    /// The value of the first attribute of type `ty`: later duplicates are ignored, as
    /// RFC 8489 §14 asks.
    pub fn get(&self, ty: AttrType) -> Option<&'a [u8]> {
        self.attributes().find(|(t, _)| *t == ty).map(|(_, v)| v)
    }

    pub fn has(&self, ty: AttrType) -> bool {
        self.attrs[..self.count].iter().any(|a| a.ty == ty.0)
    }

    /// Writes into `out` the comprehension-required attributes `understood` rejects, and
    /// returns how many (at most `out.len()`). Non-zero means the request earns a 420.
    pub fn unknown_required(
        &self,
        understood: impl Fn(AttrType) -> bool,
        out: &mut [u16],
    ) -> usize {
        let mut n = 0;
        for (t, _) in self.attributes() {
            if t.is_comprehension_required()
                && !understood(t)
                && n < out.len()
                && !out[..n].contains(&t.0)
            {
                out[n] = t.0;
                n += 1;
            }
        }
        n
    }

    pub fn has_fingerprint(&self) -> bool {
        self.has_fingerprint
    }

    /// Whether MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 is present (RFC 8489 §9.2.4
    /// treats either as an attempt to authenticate).
    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some() || self.integrity_sha256_at.is_some()
    }

    /// Whether MESSAGE-INTEGRITY-SHA256 is present: it is then the one checked (§9.2.4).
    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256_at.is_some()
    }

    /// Checks the request's integrity against `key` the way RFC 8489 §9.2.4 says: with
    /// MESSAGE-INTEGRITY-SHA256 when present, else with MESSAGE-INTEGRITY. Constant time.
    pub fn verify_any_integrity(&self, key: &[u8]) -> bool {
        if self.integrity_sha256_at.is_some() {
            self.verify_integrity_sha256(key)
        } else {
            self.verify_integrity(key)
        }
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 against `key` in constant time, over the value's
    /// (possibly truncated) length. False when absent.
    pub fn verify_integrity_sha256(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_sha256_at else {
            return false;
        };
        let len = u16::from_be_bytes([self.buf[at + 2], self.buf[at + 3]]) as usize;
        let length_field = (at + 4 + len - HEADER_LEN) as u16;
        let value = &self.buf[at + 4..at + 4 + len];
        integrity::verify_hmac_sha256(key, &self.buf[..at], length_field, value)
    }

    /// Checks MESSAGE-INTEGRITY against `key` in constant time. False when absent.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        // The length field as if the message ended right after MESSAGE-INTEGRITY.
        let length_field = (at + 4 + INTEGRITY_LEN - HEADER_LEN) as u16;
        let value = &self.buf[at + 4..at + 4 + INTEGRITY_LEN];
        integrity::verify_hmac_sha1(key, &self.buf[..at], length_field, value)
    }

    fn str_attr(&self, ty: AttrType, max: usize) -> Option<Result<&'a str, ParseError>> {
        let v = self.get(ty)?;
        if v.len() > max {
            return Some(Err(ParseError::BadAttribute(ty.0)));
        }
        Some(std::str::from_utf8(v).map_err(|_| ParseError::BadAttribute(ty.0)))
    }

    /// USERNAME: UTF-8, fewer than 509 bytes (RFC 8489 §14.3).
    pub fn username(&self) -> Option<Result<&'a str, ParseError>> {
        self.str_attr(AttrType::USERNAME, 508)
    }

    /// REALM: fewer than 128 characters, at most 763 bytes (RFC 8489 §14.9).
    pub fn realm(&self) -> Option<Result<&'a str, ParseError>> {
        self.str_attr(AttrType::REALM, 763)
    }

    /// NONCE as raw bytes (RFC 8489 §14.10 bounds it to 763 bytes).
    pub fn nonce(&self) -> Option<Result<&'a [u8], ParseError>> {
        let v = self.get(AttrType::NONCE)?;
        Some(if v.len() > 763 {
            Err(ParseError::BadAttribute(AttrType::NONCE.0))
        } else {
            Ok(v)
        })
    }

    /// USERHASH: SHA-256(username ":" realm), exactly 32 bytes (RFC 8489 §14.4).
    pub fn userhash(&self) -> Option<Result<&'a [u8; 32], ParseError>> {
        let v = self.get(AttrType::USERHASH)?;
        Some(
            v.try_into()
                .map_err(|_| ParseError::BadAttribute(AttrType::USERHASH.0)),
        )
    }

    /// PASSWORD-ALGORITHM: the algorithm number; its parameters must fit the value
    /// (RFC 8489 §14.12). Neither MD5 nor SHA-256 has parameters.
    pub fn password_algorithm(&self) -> Option<Result<u16, ParseError>> {
        let v = self.get(AttrType::PASSWORD_ALGORITHM)?;
        let bad = ParseError::BadAttribute(AttrType::PASSWORD_ALGORITHM.0);
        Some(match v {
            [a, b, c, d, params @ ..] if u16::from_be_bytes([*c, *d]) as usize == params.len() => {
                Ok(u16::from_be_bytes([*a, *b]))
            }
            _ => Err(bad),
        })
    }

    /// PASSWORD-ALGORITHMS as sent (RFC 8489 §14.11): the server compares it byte for byte
    /// with the list it offers (§9.2.4).
    pub fn password_algorithms(&self) -> Option<&'a [u8]> {
        self.get(AttrType::PASSWORD_ALGORITHMS)
    }

    pub fn software(&self) -> Option<Result<&'a str, ParseError>> {
        self.str_attr(AttrType::SOFTWARE, 763)
    }

    fn u32_attr(&self, ty: AttrType) -> Option<Result<u32, ParseError>> {
        let v = self.get(ty)?;
        Some(match v {
            [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => Err(ParseError::BadAttribute(ty.0)),
        })
    }

    /// LIFETIME in seconds (RFC 8656 §18.2).
    pub fn lifetime(&self) -> Option<Result<u32, ParseError>> {
        self.u32_attr(AttrType::LIFETIME)
    }

    /// REQUESTED-TRANSPORT: the IANA protocol number, 17 for UDP (RFC 8656 §18.7).
    pub fn requested_transport(&self) -> Option<Result<u8, ParseError>> {
        self.u32_attr(AttrType::REQUESTED_TRANSPORT)
            .map(|r| r.map(|v| (v >> 24) as u8))
    }

    /// CHANNEL-NUMBER: the top 16 bits of a 4-byte value (RFC 8656 §18.1).
    pub fn channel_number(&self) -> Option<Result<u16, ParseError>> {
        self.u32_attr(AttrType::CHANNEL_NUMBER)
            .map(|r| r.map(|v| (v >> 16) as u16))
    }

    /// EVEN-PORT: Some(R bit) (RFC 8656 §18.6).
    pub fn even_port(&self) -> Option<Result<bool, ParseError>> {
        let v = self.get(AttrType::EVEN_PORT)?;
        Some(match v {
            [b] | [b, _, _, _] => Ok(b & 0x80 != 0),
            _ => Err(ParseError::BadAttribute(AttrType::EVEN_PORT.0)),
        })
    }

    /// RESERVATION-TOKEN: 8 opaque bytes (RFC 8656 §18.9).
    pub fn reservation_token(&self) -> Option<Result<[u8; 8], ParseError>> {
        let v = self.get(AttrType::RESERVATION_TOKEN)?;
        Some(
            v.try_into()
                .map_err(|_| ParseError::BadAttribute(AttrType::RESERVATION_TOKEN.0)),
        )
    }

    /// DONT-FRAGMENT has no value (RFC 8656 §18.8).
    pub fn dont_fragment(&self) -> bool {
        self.has(AttrType::DONT_FRAGMENT)
    }

    fn family_attr(&self, ty: AttrType) -> Option<Result<AddressFamily, ParseError>> {
        let v = self.get(ty)?;
        Some(match v {
            [f, _, _, _] => AddressFamily::from_u8(*f).ok_or(ParseError::BadAttribute(ty.0)),
            _ => Err(ParseError::BadAttribute(ty.0)),
        })
    }

    /// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.10).
    pub fn requested_address_family(&self) -> Option<Result<AddressFamily, ParseError>> {
        self.family_attr(AttrType::REQUESTED_ADDRESS_FAMILY)
    }

    /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11).
    pub fn additional_address_family(&self) -> Option<Result<AddressFamily, ParseError>> {
        self.family_attr(AttrType::ADDITIONAL_ADDRESS_FAMILY)
    }

    fn xor_addr(&self, ty: AttrType) -> Option<Result<SocketAddr, ParseError>> {
        let v = self.get(ty)?;
        Some(address::decode_xor(v, &self.txid).ok_or(ParseError::BadAttribute(ty.0)))
    }

    pub fn xor_mapped_address(&self) -> Option<Result<SocketAddr, ParseError>> {
        self.xor_addr(AttrType::XOR_MAPPED_ADDRESS)
    }

    pub fn xor_relayed_address(&self) -> Option<Result<SocketAddr, ParseError>> {
        self.xor_addr(AttrType::XOR_RELAYED_ADDRESS)
    }

    /// The first XOR-PEER-ADDRESS (Send indications, ChannelBind).
    pub fn xor_peer_address(&self) -> Option<Result<SocketAddr, ParseError>> {
        self.xor_addr(AttrType::XOR_PEER_ADDRESS)
    }

    /// Every XOR-PEER-ADDRESS: CreatePermission may carry several (RFC 8656 §9.1).
    pub fn xor_peer_addresses(&self) -> impl Iterator<Item = Result<SocketAddr, ParseError>> + '_ {
        let txid = self.txid;
        self.attributes()
            .filter(|(t, _)| *t == AttrType::XOR_PEER_ADDRESS)
            .map(move |(_, v)| {
                address::decode_xor(v, &txid)
                    .ok_or(ParseError::BadAttribute(AttrType::XOR_PEER_ADDRESS.0))
            })
    }

    pub fn mapped_address(&self) -> Option<Result<SocketAddr, ParseError>> {
        let v = self.get(AttrType::MAPPED_ADDRESS)?;
        Some(address::decode_plain(v).ok_or(ParseError::BadAttribute(AttrType::MAPPED_ADDRESS.0)))
    }

    /// DATA: the application payload of Send/Data indications (RFC 8656 §18.4).
    pub fn data(&self) -> Option<&'a [u8]> {
        self.get(AttrType::DATA)
    }

    /// Where DATA's value sits in the message, so the relay can send that slice of the
    /// received buffer without copying it.
    pub fn data_range(&self) -> Option<std::ops::Range<usize>> {
        let a = self.attrs[..self.count]
            .iter()
            .find(|a| a.ty == AttrType::DATA.0)?;
        Some(a.start as usize..a.start as usize + a.len as usize)
    }

    /// ERROR-CODE as (code, reason) (RFC 8489 §14.8).
    pub fn error_code(&self) -> Option<Result<(u16, &'a str), ParseError>> {
        let v = self.get(AttrType::ERROR_CODE)?;
        let bad = ParseError::BadAttribute(AttrType::ERROR_CODE.0);
        if v.len() < 4 {
            return Some(Err(bad));
        }
        let class = (v[2] & 0x07) as u16;
        let number = v[3] as u16;
        if !(3..=6).contains(&class) || number > 99 {
            return Some(Err(bad));
        }
        Some(
            std::str::from_utf8(&v[4..])
                .map(|r| (class * 100 + number, r))
                .map_err(|_| bad),
        )
    }

    /// UNKNOWN-ATTRIBUTES as an iterator of types.
    pub fn unknown_attributes(&self) -> impl Iterator<Item = u16> + 'a {
        let v = self.get(AttrType::UNKNOWN_ATTRIBUTES).unwrap_or(&[]);
        v.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]))
    }
}
