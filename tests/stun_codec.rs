//! Conformance tests for the zero-copy STUN codec (`turnd::stun`).
//!
//! 1. Every RFC 5769 test vector (and RFC 8489 Appendix B.1): parse, check every value, check
//!    MESSAGE-INTEGRITY and FINGERPRINT, and rebuild the message byte for byte.
//! 2. Round-trip property tests (build -> parse) and "never panics" fuzzing of the parsers.
//! 3. Differential tests against the webrtc-rs `stun` crate, in both directions.
//! 4. A table of malformed inputs, each mapped to the `ParseError` it must produce.
//!
//! The oracles here (TLV walking, XOR addressing, HMAC and CRC placement) are written
//! independently of the codec so that a shared misunderstanding does not pass silently.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use sha1::Sha1;

use turnd::stun::attribute::{is_understood, AttrType};
use turnd::stun::channel_data::{self, ChannelData};
use turnd::stun::message::{looks_like_stun, Message, MAX_ATTRIBUTES};
use turnd::stun::{
    AddressFamily, BuildError, Class, MessageBuilder, MessageType, Method, ParseError,
    TransactionId, HEADER_LEN, MAGIC_COOKIE,
};

use stun::agent::TransactionId as WTransactionId;
use stun::attributes::{
    AttrType as WAttrType, ATTR_NONCE, ATTR_REALM, ATTR_SOFTWARE, ATTR_USERNAME,
    ATTR_XORMAPPED_ADDRESS, ATTR_XOR_PEER_ADDRESS, ATTR_XOR_RELAYED_ADDRESS,
};
use stun::error_code::{ErrorCode as WErrorCode, ErrorCodeAttribute};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{Getter, Message as WMessage, MessageType as WMessageType, Setter};
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;

// ---------------------------------------------------------------------------------------------
// Test vectors
// ---------------------------------------------------------------------------------------------

/// RFC 5769 §2: the short-term password of §2.1–§2.3 (the key is the password bytes).
const RFC5769_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
/// RFC 5769 §2.1–§2.3 transaction id.
const RFC5769_TXID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

/// RFC 5769 §2.1 Sample Request (Binding request, short-term credentials, FINGERPRINT).
/// Note the USERNAME padding is three 0x20 bytes, not zeros.
#[rustfmt::skip]
const RFC5769_SAMPLE_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, //    Request type and message length
    0x21, 0x12, 0xa4, 0x42, //    Magic cookie
    0xb7, 0xe7, 0xa7, 0x01, // }
    0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
    0xfa, 0x87, 0xdf, 0xae, // }
    0x80, 0x22, 0x00, 0x10, //    SOFTWARE attribute header
    0x53, 0x54, 0x55, 0x4e, // }
    0x20, 0x74, 0x65, 0x73, // }  User-agent...
    0x74, 0x20, 0x63, 0x6c, // }  ...name
    0x69, 0x65, 0x6e, 0x74, // }
    0x00, 0x24, 0x00, 0x04, //    PRIORITY attribute header
    0x6e, 0x00, 0x01, 0xff, //    ICE priority value
    0x80, 0x29, 0x00, 0x08, //    ICE-CONTROLLED attribute header
    0x93, 0x2f, 0xf9, 0xb1, // }  Pseudo-random tie breaker...
    0x51, 0x26, 0x3b, 0x36, // }   ...for ICE control
    0x00, 0x06, 0x00, 0x09, //    USERNAME attribute header
    0x65, 0x76, 0x74, 0x6a, // }
    0x3a, 0x68, 0x36, 0x76, // }  Username (9 bytes) and padding (3 bytes)
    0x59, 0x20, 0x20, 0x20, // }
    0x00, 0x08, 0x00, 0x14, //    MESSAGE-INTEGRITY attribute header
    0x9a, 0xea, 0xa7, 0x0c, // }
    0xbf, 0xd8, 0xcb, 0x56, // }
    0x78, 0x1e, 0xf2, 0xb5, // }  HMAC-SHA1 fingerprint
    0xb2, 0xd3, 0xf2, 0x49, // }
    0xc1, 0xb5, 0x71, 0xa2, // }
    0x80, 0x28, 0x00, 0x04, //    FINGERPRINT attribute header
    0xe5, 0x7a, 0x3b, 0xcf, //    CRC32 fingerprint
];

/// RFC 5769 §2.2 Sample IPv4 Response (XOR-MAPPED-ADDRESS 192.0.2.1:32853).
/// The SOFTWARE value "test vector" (11 bytes) is padded with one 0x20 byte.
#[rustfmt::skip]
const RFC5769_SAMPLE_IPV4_RESPONSE: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, //    Response type and message length
    0x21, 0x12, 0xa4, 0x42, //    Magic cookie
    0xb7, 0xe7, 0xa7, 0x01, // }
    0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
    0xfa, 0x87, 0xdf, 0xae, // }
    0x80, 0x22, 0x00, 0x0b, //    SOFTWARE attribute header
    0x74, 0x65, 0x73, 0x74, // }
    0x20, 0x76, 0x65, 0x63, // }  UTF-8 server name
    0x74, 0x6f, 0x72, 0x20, // }
    0x00, 0x20, 0x00, 0x08, //    XOR-MAPPED-ADDRESS attribute header
    0x00, 0x01, 0xa1, 0x47, //    Address family (IPv4) and xor'd mapped port number
    0xe1, 0x12, 0xa6, 0x43, //    Xor'd mapped IPv4 address
    0x00, 0x08, 0x00, 0x14, //    MESSAGE-INTEGRITY attribute header
    0x2b, 0x91, 0xf5, 0x99, // }
    0xfd, 0x9e, 0x90, 0xc3, // }
    0x8c, 0x74, 0x89, 0xf9, // }  HMAC-SHA1 fingerprint
    0x2a, 0xf9, 0xba, 0x53, // }
    0xf0, 0x6b, 0xe7, 0xd7, // }
    0x80, 0x28, 0x00, 0x04, //    FINGERPRINT attribute header
    0xc0, 0x7d, 0x4c, 0x96, //    CRC32 fingerprint
];

/// RFC 5769 §2.3 Sample IPv6 Response
/// (XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853).
#[rustfmt::skip]
const RFC5769_SAMPLE_IPV6_RESPONSE: [u8; 92] = [
    0x01, 0x01, 0x00, 0x48, //    Response type and message length
    0x21, 0x12, 0xa4, 0x42, //    Magic cookie
    0xb7, 0xe7, 0xa7, 0x01, // }
    0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
    0xfa, 0x87, 0xdf, 0xae, // }
    0x80, 0x22, 0x00, 0x0b, //    SOFTWARE attribute header
    0x74, 0x65, 0x73, 0x74, // }
    0x20, 0x76, 0x65, 0x63, // }  UTF-8 server name
    0x74, 0x6f, 0x72, 0x20, // }
    0x00, 0x20, 0x00, 0x14, //    XOR-MAPPED-ADDRESS attribute header
    0x00, 0x02, 0xa1, 0x47, //    Address family (IPv6) and xor'd mapped port number
    0x01, 0x13, 0xa9, 0xfa, // }
    0xa5, 0xd3, 0xf1, 0x79, // }  Xor'd mapped IPv6 address
    0xbc, 0x25, 0xf4, 0xb5, // }
    0xbe, 0xd2, 0xb9, 0xd9, // }
    0x00, 0x08, 0x00, 0x14, //    MESSAGE-INTEGRITY attribute header
    0xa3, 0x82, 0x95, 0x4e, // }
    0x4b, 0xe6, 0x7b, 0xf1, // }
    0x17, 0x84, 0xc9, 0x7c, // }  HMAC-SHA1 fingerprint
    0x82, 0x92, 0xc2, 0x75, // }
    0xbf, 0xe3, 0xed, 0x41, // }
    0x80, 0x28, 0x00, 0x04, //    FINGERPRINT attribute header
    0xc8, 0xfb, 0x0b, 0x4c, //    CRC32 fingerprint
];

/// RFC 5769 §2.4 transaction id.
const RFC5769_LT_TXID: [u8; 12] = [
    0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e,
];
/// RFC 5769 §2.4 username "マトリックス" (unaffected by SASLprep).
const RFC5769_LT_USERNAME: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
/// RFC 5769 §2.4 password "The<U+00AD>M<U+00AA>tr<U+2168>" after SASLprep.
const RFC5769_LT_PASSWORD: &str = "TheMatrIX";
const RFC5769_LT_NONCE: &[u8] = b"f//499k954d6OL34oL9FSTvy64sA";
const RFC5769_LT_REALM: &str = "example.org";

/// RFC 5769 §2.4 Sample Request with Long-Term Authentication (no FINGERPRINT; zero padding).
#[rustfmt::skip]
const RFC5769_SAMPLE_REQUEST_LONG_TERM: [u8; 116] = [
    0x00, 0x01, 0x00, 0x60, //    Request type and message length
    0x21, 0x12, 0xa4, 0x42, //    Magic cookie
    0x78, 0xad, 0x34, 0x33, // }
    0xc6, 0xad, 0x72, 0xc0, // }  Transaction ID
    0x29, 0xda, 0x41, 0x2e, // }
    0x00, 0x06, 0x00, 0x12, //    USERNAME attribute header
    0xe3, 0x83, 0x9e, 0xe3, // }
    0x83, 0x88, 0xe3, 0x83, // }
    0xaa, 0xe3, 0x83, 0x83, // }  Username value (18 bytes) and padding (2 bytes)
    0xe3, 0x82, 0xaf, 0xe3, // }
    0x82, 0xb9, 0x00, 0x00, // }
    0x00, 0x15, 0x00, 0x1c, //    NONCE attribute header
    0x66, 0x2f, 0x2f, 0x34, // }
    0x39, 0x39, 0x6b, 0x39, // }
    0x35, 0x34, 0x64, 0x36, // }
    0x4f, 0x4c, 0x33, 0x34, // }  Nonce value
    0x6f, 0x4c, 0x39, 0x46, // }
    0x53, 0x54, 0x76, 0x79, // }
    0x36, 0x34, 0x73, 0x41, // }
    0x00, 0x14, 0x00, 0x0b, //    REALM attribute header
    0x65, 0x78, 0x61, 0x6d, // }
    0x70, 0x6c, 0x65, 0x2e, // }  Realm value (11 bytes) and padding (1 byte)
    0x6f, 0x72, 0x67, 0x00, // }
    0x00, 0x08, 0x00, 0x14, //    MESSAGE-INTEGRITY attribute header
    0xf6, 0x70, 0x24, 0x65, // }
    0x6d, 0xd6, 0x4a, 0x3e, // }
    0x02, 0xb8, 0xe0, 0x71, // }  HMAC-SHA1 fingerprint
    0x2e, 0x85, 0xc9, 0xa2, // }
    0x8c, 0xa8, 0x96, 0x66, // }
];

/// RFC 8489 Appendix B.1 Sample Request with Long-Term Authentication with
/// MESSAGE-INTEGRITY-SHA256 and USERHASH, exactly as printed. The printed length field (0x9c =
/// 156) is the length of the whole message *including* the 20-byte header; the attributes that
/// follow are 136 (0x88) bytes. See `rfc8489_b1_vector`.
#[rustfmt::skip]
const RFC8489_B1_AS_PRINTED: [u8; 156] = [
    0x00, 0x01, 0x00, 0x9c, //    Request type and message length
    0x21, 0x12, 0xa4, 0x42, //    Magic cookie
    0x78, 0xad, 0x34, 0x33, // }
    0xc6, 0xad, 0x72, 0xc0, // }  Transaction ID
    0x29, 0xda, 0x41, 0x2e, // }
    0x00, 0x1e, 0x00, 0x20, //    USERHASH attribute header
    0x4a, 0x3c, 0xf3, 0x8f, // }
    0xef, 0x69, 0x92, 0xbd, // }
    0xa9, 0x52, 0xc6, 0x78, // }
    0x04, 0x17, 0xda, 0x0f, // }  Userhash value (32 bytes)
    0x24, 0x81, 0x94, 0x15, // }
    0x56, 0x9e, 0x60, 0xb2, // }
    0x05, 0xc4, 0x6e, 0x41, // }
    0x40, 0x7f, 0x17, 0x04, // }
    0x00, 0x15, 0x00, 0x29, //    NONCE attribute header
    0x6f, 0x62, 0x4d, 0x61, // }
    0x74, 0x4a, 0x6f, 0x73, // }
    0x32, 0x41, 0x41, 0x41, // }
    0x43, 0x66, 0x2f, 0x2f, // }
    0x34, 0x39, 0x39, 0x6b, // }  Nonce value and padding (3 bytes)
    0x39, 0x35, 0x34, 0x64, // }
    0x36, 0x4f, 0x4c, 0x33, // }
    0x34, 0x6f, 0x4c, 0x39, // }
    0x46, 0x53, 0x54, 0x76, // }
    0x79, 0x36, 0x34, 0x73, // }
    0x41, 0x00, 0x00, 0x00, // }
    0x00, 0x14, 0x00, 0x0b, //    REALM attribute header
    0x65, 0x78, 0x61, 0x6d, // }
    0x70, 0x6c, 0x65, 0x2e, // }  Realm value (11 bytes) and padding (1 byte)
    0x6f, 0x72, 0x67, 0x00, // }
    0x00, 0x1c, 0x00, 0x20, //    MESSAGE-INTEGRITY-SHA256 attribute header
    0xe4, 0x68, 0x6c, 0x8f, // }
    0x0e, 0xde, 0xb5, 0x90, // }
    0x13, 0xe0, 0x70, 0x90, // }
    0x01, 0x0a, 0x93, 0xef, // }  HMAC-SHA256 value
    0xcc, 0xbc, 0xcc, 0x54, // }
    0x4c, 0x0a, 0x45, 0xd9, // }
    0xf8, 0x30, 0xaa, 0x6d, // }
    0x6f, 0x73, 0x5a, 0x01, // }
];

// ---------------------------------------------------------------------------------------------
// Independent oracles and helpers
// ---------------------------------------------------------------------------------------------

/// One attribute as it lies in a message: type, offset of its 4-byte header, value length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tlv {
    ty: u16,
    at: usize,
    len: usize,
}

/// Walks the TLVs of a well-formed message, without the codec.
fn tlvs(msg: &[u8]) -> Vec<Tlv> {
    let mut out = Vec::new();
    let mut at = HEADER_LEN;
    while at + 4 <= msg.len() {
        let ty = u16::from_be_bytes([msg[at], msg[at + 1]]);
        let len = u16::from_be_bytes([msg[at + 2], msg[at + 3]]) as usize;
        out.push(Tlv { ty, at, len });
        at += 4 + ((len + 3) & !3);
    }
    out
}

/// Sets every padding byte of a well-formed message to `pad`.
fn repad(msg: &mut [u8], pad: u8) {
    for t in tlvs(msg) {
        let end = t.at + 4 + ((t.len + 3) & !3);
        msg[t.at + 4 + t.len..end].fill(pad);
    }
}

/// True for the bytes that are padding.
fn padding_mask(msg: &[u8]) -> Vec<bool> {
    let mut mask = vec![false; msg.len()];
    for t in tlvs(msg) {
        let end = t.at + 4 + ((t.len + 3) & !3);
        mask[t.at + 4 + t.len..end].fill(true);
    }
    mask
}

/// HMAC-SHA1 of `msg[..mi_at]` with the header length covering MESSAGE-INTEGRITY (RFC 8489 §14.5).
fn oracle_hmac(key: &[u8], msg: &[u8], mi_at: usize) -> [u8; 20] {
    let mut head = msg[..mi_at].to_vec();
    head[2..4].copy_from_slice(&((mi_at + 24 - HEADER_LEN) as u16).to_be_bytes());
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).unwrap();
    mac.update(&head);
    mac.finalize().into_bytes().into()
}

/// CRC-32 of `msg[..fp_at]` XOR 0x5354554e, with the header length covering FINGERPRINT
/// (RFC 8489 §14.7).
fn oracle_fingerprint(msg: &[u8], fp_at: usize) -> u32 {
    let mut head = msg[..fp_at].to_vec();
    head[2..4].copy_from_slice(&((fp_at + 8 - HEADER_LEN) as u16).to_be_bytes());
    crc32fast::hash(&head) ^ 0x5354_554e
}

/// Recomputes MESSAGE-INTEGRITY (with `key`) and FINGERPRINT in place, wherever they are.
fn reseal(msg: &mut [u8], key: &[u8]) {
    for t in tlvs(msg) {
        match t.ty {
            0x0008 => {
                let mac = oracle_hmac(key, msg, t.at);
                msg[t.at + 4..t.at + 24].copy_from_slice(&mac);
            }
            0x8028 => {
                let crc = oracle_fingerprint(msg, t.at);
                msg[t.at + 4..t.at + 8].copy_from_slice(&crc.to_be_bytes());
            }
            _ => {}
        }
    }
}

/// The long-term key MD5(username ":" realm ":" password) (RFC 8489 §9.2.2).
fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(format!("{username}:{realm}:{password}").as_bytes());
    h.finalize().into()
}

/// An XOR-…-ADDRESS value, computed without the codec (RFC 8489 §14.2).
fn oracle_xor_value(addr: &SocketAddr, txid: &[u8; 12]) -> Vec<u8> {
    let mut mask = MAGIC_COOKIE.to_be_bytes().to_vec();
    mask.extend_from_slice(txid);
    let port = addr.port() ^ 0x2112;
    let (family, ip): (u8, Vec<u8>) = match addr.ip() {
        IpAddr::V4(ip) => (1, ip.octets().to_vec()),
        IpAddr::V6(ip) => (2, ip.octets().to_vec()),
    };
    let mut v = vec![0, family];
    v.extend_from_slice(&port.to_be_bytes());
    v.extend(ip.iter().zip(&mask).map(|(a, b)| a ^ b));
    v
}

/// A header (with the length field matching `body`) followed by `body`.
fn frame(ty: u16, txid: [u8; 12], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER_LEN + body.len());
    m.extend_from_slice(&ty.to_be_bytes());
    m.extend_from_slice(&(body.len() as u16).to_be_bytes());
    m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m.extend_from_slice(&txid);
    m.extend_from_slice(body);
    m
}

/// One attribute, zero-padded.
fn tlv(ty: u16, value: &[u8]) -> Vec<u8> {
    let mut v = ty.to_be_bytes().to_vec();
    v.extend_from_slice(&(value.len() as u16).to_be_bytes());
    v.extend_from_slice(value);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

fn attr_list(m: &Message<'_>) -> Vec<(u16, Vec<u8>)> {
    m.attributes().map(|(t, v)| (t.0, v.to_vec())).collect()
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Calls every accessor of a parsed message: none may panic, whatever the bytes.
fn exercise(m: &Message<'_>) {
    let raw = m.raw();
    let _ = (
        m.message_type(),
        m.method().name(),
        m.class(),
        m.transaction_id(),
    );
    for (t, v) in m.attributes() {
        assert!(v.len() <= raw.len());
        let _ = (
            t.is_comprehension_required(),
            is_understood(t),
            m.get(t),
            m.has(t),
        );
    }
    let _ = (m.username(), m.realm(), m.nonce(), m.software());
    let _ = (
        m.lifetime(),
        m.requested_transport(),
        m.channel_number(),
        m.even_port(),
    );
    let _ = (m.reservation_token(), m.dont_fragment());
    let _ = (m.requested_address_family(), m.additional_address_family());
    let _ = (
        m.xor_mapped_address(),
        m.xor_relayed_address(),
        m.xor_peer_address(),
    );
    let _ = m.xor_peer_addresses().collect::<Vec<_>>();
    let _ = (
        m.mapped_address(),
        m.error_code(),
        m.unknown_attributes().count(),
    );
    let _ = (
        m.has_fingerprint(),
        m.has_integrity(),
        m.verify_integrity(b"key"),
    );
    if let Some(r) = m.data_range() {
        assert!(r.end <= raw.len());
        assert_eq!(Some(&raw[r]), m.data());
    }
    let mut out = [0u16; 4];
    assert!(m.unknown_required(is_understood, &mut out) <= out.len());
}

// ---------------------------------------------------------------------------------------------
// 1. RFC 5769 / RFC 8489 test vectors
// ---------------------------------------------------------------------------------------------

/// Strips FINGERPRINT (the last 8 bytes) and fixes the length: MESSAGE-INTEGRITY must still
/// verify, since its length field is "as if the message ended" after it.
fn without_fingerprint(msg: &[u8]) -> Vec<u8> {
    let mut m = msg[..msg.len() - 8].to_vec();
    let body = (m.len() - HEADER_LEN) as u16;
    m[2..4].copy_from_slice(&body.to_be_bytes());
    m
}

/// Checks the vector's MESSAGE-INTEGRITY and FINGERPRINT, that a wrong key fails, that the
/// vector stays valid without FINGERPRINT, that a flipped byte is caught, and that the
/// `stun` crate agrees.
fn check_vector_security(vector: &[u8], key: &[u8], wrong_key: &[u8]) {
    let m = Message::parse(vector).expect("vector parses");
    assert!(looks_like_stun(vector));
    assert!(!ChannelData::is_channel_data(vector));
    assert!(m.has_integrity());
    assert!(
        m.verify_integrity(key),
        "MESSAGE-INTEGRITY with the right key"
    );
    assert!(
        !m.verify_integrity(wrong_key),
        "MESSAGE-INTEGRITY with a wrong key"
    );
    assert!(
        !m.verify_integrity(b""),
        "MESSAGE-INTEGRITY with the empty key"
    );

    if m.has_fingerprint() {
        let stripped = without_fingerprint(vector);
        let s = Message::parse(&stripped).expect("vector without FINGERPRINT parses");
        assert!(!s.has_fingerprint());
        assert!(s.verify_integrity(key));
        // FINGERPRINT covers everything: any flipped byte before it is rejected.
        for i in [HEADER_LEN, 30, vector.len() - 9] {
            let mut bad = vector.to_vec();
            bad[i] ^= 0x01;
            assert_eq!(
                Message::parse(&bad).err(),
                Some(ParseError::BadFingerprint),
                "byte {i}"
            );
        }
    }
    // A flipped bit in a covered attribute value breaks MESSAGE-INTEGRITY.
    let mut tampered = if m.has_fingerprint() {
        without_fingerprint(vector)
    } else {
        vector.to_vec()
    };
    tampered[HEADER_LEN + 4] ^= 0x80;
    assert!(!Message::parse(&tampered).unwrap().verify_integrity(key));

    // The webrtc-rs `stun` crate agrees on the same bytes.
    let mut w = WMessage::new();
    w.unmarshal_binary(vector)
        .expect("stun crate decodes the vector");
    MessageIntegrity(key.to_vec())
        .check(&mut w)
        .expect("stun crate: integrity");
    assert!(MessageIntegrity(wrong_key.to_vec()).check(&mut w).is_err());
    if m.has_fingerprint() {
        FINGERPRINT.check(&w).expect("stun crate: fingerprint");
    }
}

/// Asserts `rebuilt` (zero-padded, sealed with `key`) equals `vector` everywhere except the
/// padding and the values that cover the padding (MESSAGE-INTEGRITY, FINGERPRINT); then
/// re-pads the rebuilt message with the vector's padding byte, reseals it, and asserts the
/// result is byte-identical to the vector.
fn assert_rebuild_matches(vector: &[u8], rebuilt: &[u8], key: &[u8], vector_pad: u8) {
    assert_eq!(rebuilt.len(), vector.len(), "rebuilt length");
    let mask = padding_mask(vector);
    let mut sealed = vec![false; vector.len()];
    for t in tlvs(vector) {
        if t.ty == 0x0008 || t.ty == 0x8028 {
            sealed[t.at + 4..t.at + 4 + t.len].fill(true);
        }
    }
    for i in 0..vector.len() {
        if !mask[i] && !sealed[i] {
            assert_eq!(rebuilt[i], vector[i], "byte {i} differs");
        }
        if mask[i] {
            assert_eq!(rebuilt[i], 0, "the builder pads with zeros (byte {i})");
        }
    }
    let mut repadded = rebuilt.to_vec();
    repad(&mut repadded, vector_pad);
    reseal(&mut repadded, key);
    assert_eq!(
        repadded, vector,
        "byte-identical once padded like the vector"
    );
}

#[test]
fn rfc5769_2_1_sample_request() {
    let v = &RFC5769_SAMPLE_REQUEST;
    let m = Message::parse(v).unwrap();
    assert_eq!(m.method(), Method::BINDING);
    assert_eq!(m.class(), Class::Request);
    assert_eq!(m.message_type().to_u16(), 0x0001);
    assert_eq!(m.transaction_id(), TransactionId(RFC5769_TXID));
    assert_eq!(m.software(), Some(Ok("STUN test client")));
    assert_eq!(
        m.get(AttrType::PRIORITY),
        Some(&[0x6e, 0x00, 0x01, 0xff][..])
    );
    assert_eq!(
        m.get(AttrType::ICE_CONTROLLED),
        Some(&[0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36][..])
    );
    assert_eq!(m.username(), Some(Ok("evtj:h6vY")));
    let types: Vec<u16> = m.attributes().map(|(t, _)| t.0).collect();
    assert_eq!(types, [0x8022, 0x0024, 0x8029, 0x0006, 0x0008]);
    assert!(m.has_fingerprint());
    let mut out = [0u16; 4];
    assert_eq!(m.unknown_required(is_understood, &mut out), 0);
    check_vector_security(v, RFC5769_PASSWORD, b"VOkJxbRl1RmTxUk/WvJxBu");

    // Rebuild from the parsed values.
    // Not zeroed: the builder must write every byte, padding included.
    let mut buf = [0xA5u8; 256];
    let mut b = MessageBuilder::new(&mut buf, m.message_type(), m.transaction_id()).unwrap();
    b.add(
        AttrType::SOFTWARE,
        m.software().unwrap().unwrap().as_bytes(),
    )
    .unwrap();
    b.add(AttrType::PRIORITY, m.get(AttrType::PRIORITY).unwrap())
        .unwrap();
    b.add(
        AttrType::ICE_CONTROLLED,
        m.get(AttrType::ICE_CONTROLLED).unwrap(),
    )
    .unwrap();
    b.add(
        AttrType::USERNAME,
        m.username().unwrap().unwrap().as_bytes(),
    )
    .unwrap();
    b.add_message_integrity(RFC5769_PASSWORD).unwrap();
    b.add_fingerprint().unwrap();
    let n = b.finish();
    let rebuilt = &buf[..n];
    let r = Message::parse(rebuilt).unwrap();
    assert!(r.verify_integrity(RFC5769_PASSWORD) && r.has_fingerprint());
    assert_rebuild_matches(v, rebuilt, RFC5769_PASSWORD, 0x20);
}

#[test]
fn rfc5769_2_2_sample_ipv4_response() {
    let v = &RFC5769_SAMPLE_IPV4_RESPONSE;
    let m = Message::parse(v).unwrap();
    assert_eq!(
        (m.method(), m.class()),
        (Method::BINDING, Class::SuccessResponse)
    );
    assert_eq!(m.message_type().to_u16(), 0x0101);
    assert_eq!(m.transaction_id(), TransactionId(RFC5769_TXID));
    assert_eq!(m.software(), Some(Ok("test vector")));
    let addr = sock("192.0.2.1:32853");
    assert_eq!(m.xor_mapped_address(), Some(Ok(addr)));
    assert_eq!(
        m.get(AttrType::XOR_MAPPED_ADDRESS).unwrap(),
        oracle_xor_value(&addr, &RFC5769_TXID)
    );
    let types: Vec<u16> = m.attributes().map(|(t, _)| t.0).collect();
    assert_eq!(types, [0x8022, 0x0020, 0x0008]);
    assert!(m.has_fingerprint());
    check_vector_security(v, RFC5769_PASSWORD, b"wrong");

    // Not zeroed: the builder must write every byte, padding included.
    let mut buf = [0xA5u8; 256];
    let mut b = MessageBuilder::new(&mut buf, m.message_type(), m.transaction_id()).unwrap();
    b.add(
        AttrType::SOFTWARE,
        m.software().unwrap().unwrap().as_bytes(),
    )
    .unwrap();
    b.add_xor_address(
        AttrType::XOR_MAPPED_ADDRESS,
        &m.xor_mapped_address().unwrap().unwrap(),
    )
    .unwrap();
    b.add_message_integrity(RFC5769_PASSWORD).unwrap();
    b.add_fingerprint().unwrap();
    let n = b.finish();
    assert_rebuild_matches(v, &buf[..n], RFC5769_PASSWORD, 0x20);
}

#[test]
fn rfc5769_2_3_sample_ipv6_response() {
    let v = &RFC5769_SAMPLE_IPV6_RESPONSE;
    let m = Message::parse(v).unwrap();
    assert_eq!(
        (m.method(), m.class()),
        (Method::BINDING, Class::SuccessResponse)
    );
    assert_eq!(m.transaction_id(), TransactionId(RFC5769_TXID));
    assert_eq!(m.software(), Some(Ok("test vector")));
    let addr = sock("[2001:db8:1234:5678:11:2233:4455:6677]:32853");
    assert_eq!(m.xor_mapped_address(), Some(Ok(addr)));
    assert_eq!(
        m.get(AttrType::XOR_MAPPED_ADDRESS).unwrap(),
        oracle_xor_value(&addr, &RFC5769_TXID)
    );
    let types: Vec<u16> = m.attributes().map(|(t, _)| t.0).collect();
    assert_eq!(types, [0x8022, 0x0020, 0x0008]);
    assert!(m.has_fingerprint());
    check_vector_security(v, RFC5769_PASSWORD, b"VOkJxbRl1RmTxUk/WvJxB");

    // Not zeroed: the builder must write every byte, padding included.
    let mut buf = [0xA5u8; 256];
    let mut b = MessageBuilder::new(&mut buf, m.message_type(), m.transaction_id()).unwrap();
    b.add(
        AttrType::SOFTWARE,
        m.software().unwrap().unwrap().as_bytes(),
    )
    .unwrap();
    b.add_xor_address(AttrType::XOR_MAPPED_ADDRESS, &addr)
        .unwrap();
    b.add_message_integrity(RFC5769_PASSWORD).unwrap();
    b.add_fingerprint().unwrap();
    let n = b.finish();
    assert_rebuild_matches(v, &buf[..n], RFC5769_PASSWORD, 0x20);
}

#[test]
fn rfc5769_2_4_sample_request_long_term() {
    let v = &RFC5769_SAMPLE_REQUEST_LONG_TERM;
    let m = Message::parse(v).unwrap();
    assert_eq!((m.method(), m.class()), (Method::BINDING, Class::Request));
    assert_eq!(m.transaction_id(), TransactionId(RFC5769_LT_TXID));
    assert_eq!(m.username(), Some(Ok(RFC5769_LT_USERNAME)));
    assert_eq!(m.username().unwrap().unwrap().len(), 18);
    assert_eq!(m.nonce(), Some(Ok(RFC5769_LT_NONCE)));
    assert_eq!(m.realm(), Some(Ok(RFC5769_LT_REALM)));
    let types: Vec<u16> = m.attributes().map(|(t, _)| t.0).collect();
    assert_eq!(types, [0x0006, 0x0015, 0x0014, 0x0008]);
    assert!(!m.has_fingerprint());

    let key = long_term_key(RFC5769_LT_USERNAME, RFC5769_LT_REALM, RFC5769_LT_PASSWORD);
    // The stun crate derives the same key.
    let w_key = MessageIntegrity::new_long_term_integrity(
        RFC5769_LT_USERNAME.into(),
        RFC5769_LT_REALM.into(),
        RFC5769_LT_PASSWORD.into(),
    );
    assert_eq!(w_key.0, key);
    // Before SASLprep the password is "The\u{AD}M\u{AA}tr\u{2168}": that key must fail.
    let unprepped = long_term_key(
        RFC5769_LT_USERNAME,
        RFC5769_LT_REALM,
        "The\u{AD}M\u{AA}tr\u{2168}",
    );
    check_vector_security(v, &key, &unprepped);
    // The short-term interpretation (password as key) is wrong too.
    assert!(!m.verify_integrity(RFC5769_LT_PASSWORD.as_bytes()));

    // The vector pads with zeros, like the builder: the rebuild is byte-identical as is.
    // Not zeroed: the builder must write every byte, padding included.
    let mut buf = [0xA5u8; 256];
    let mut b = MessageBuilder::new(&mut buf, m.message_type(), m.transaction_id()).unwrap();
    b.add(
        AttrType::USERNAME,
        m.username().unwrap().unwrap().as_bytes(),
    )
    .unwrap();
    b.add(AttrType::NONCE, m.nonce().unwrap().unwrap()).unwrap();
    b.add(AttrType::REALM, m.realm().unwrap().unwrap().as_bytes())
        .unwrap();
    b.add_message_integrity(&key).unwrap();
    let n = b.finish();
    assert_eq!(&buf[..n], &v[..]);
}

#[test]
fn rfc8489_b1_vector() {
    // As printed, the length field (156) counts the header: a strict parser must refuse it.
    assert_eq!(
        Message::parse(&RFC8489_B1_AS_PRINTED).err(),
        Some(ParseError::BadLength)
    );

    // With the length corrected to the 136 bytes of attributes actually printed, it parses.
    let mut v = RFC8489_B1_AS_PRINTED;
    v[2..4].copy_from_slice(&136u16.to_be_bytes());
    let m = Message::parse(&v).unwrap();
    assert_eq!((m.method(), m.class()), (Method::BINDING, Class::Request));
    assert_eq!(m.transaction_id(), TransactionId(RFC5769_LT_TXID));
    let userhash = m.get(AttrType::USERHASH).unwrap();
    assert_eq!(userhash.len(), 32);
    assert_eq!(&userhash[..4], &[0x4a, 0x3c, 0xf3, 0x8f]);
    assert_eq!(
        m.nonce(),
        Some(Ok(&b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"[..]))
    );
    assert_eq!(m.realm(), Some(Ok("example.org")));
    assert_eq!(
        m.get(AttrType::MESSAGE_INTEGRITY_SHA256).map(<[u8]>::len),
        Some(32)
    );
    // MESSAGE-INTEGRITY-SHA256 counts as integrity (RFC 8489 §9.2.4), but not HMAC-SHA1's.
    assert!(m.has_integrity() && m.has_integrity_sha256());
    assert!(!m.verify_integrity(&long_term_key(
        RFC5769_LT_USERNAME,
        "example.org",
        "TheMatrIX"
    )));
    let sha_key =
        turnd::core::auth::long_term_key_sha256(RFC5769_LT_USERNAME, "example.org", "TheMatrIX");
    // The vector's HMAC-SHA256 was computed over the message as printed, length field 156
    // included: with that length field our HMAC and SHA-256 key derivation give its value
    // (a known answer for both); with the corrected length it cannot verify.
    let at = v.len() - 36;
    assert_eq!(
        turnd::stun::integrity::hmac_sha256(&sha_key, &RFC8489_B1_AS_PRINTED[..at], 156)[..],
        RFC8489_B1_AS_PRINTED[at + 4..]
    );
    assert!(!m.verify_integrity_sha256(&sha_key));
    // USERHASH is SHA-256(username ":" realm): the vector's value, computed independently.
    assert_eq!(
        userhash[..],
        turnd::core::auth::userhash(RFC5769_LT_USERNAME, "example.org")[..]
    );
    assert!(!m.has_fingerprint());
    // USERHASH and MESSAGE-INTEGRITY-SHA256 are comprehension-required; the server
    // understands both.
    let mut out = [0u16; 4];
    let n = m.unknown_required(|t| t == AttrType::NONCE || t == AttrType::REALM, &mut out);
    assert_eq!(&out[..n], &[0x001E, 0x001C]);
    assert_eq!(m.unknown_required(is_understood, &mut out), 0);

    // Rebuild (zero padding, like the vector).
    // Not zeroed: the builder must write every byte, padding included.
    let mut buf = [0xA5u8; 256];
    let mut b = MessageBuilder::new(&mut buf, m.message_type(), m.transaction_id()).unwrap();
    for (t, val) in m.attributes() {
        b.add(t, val).unwrap();
    }
    let n = b.finish();
    assert_eq!(&buf[..n], &v[..]);
}

// ---------------------------------------------------------------------------------------------
// 2. Round trips and fuzzing
// ---------------------------------------------------------------------------------------------

/// An attribute the property tests put into a message.
#[derive(Clone, Debug)]
enum Attr {
    /// Any type (but MESSAGE-INTEGRITY and FINGERPRINT), any bytes.
    Raw(u16, Vec<u8>),
    /// XOR-MAPPED-ADDRESS, XOR-PEER-ADDRESS or XOR-RELAYED-ADDRESS.
    Xor(u16, SocketAddr),
    ErrorCode(u16, String),
    Lifetime(u32),
    Channel(u16),
    Data(Vec<u8>),
    /// USERNAME, REALM, NONCE or SOFTWARE.
    Text(u16, String),
}

impl Attr {
    /// The type and value the attribute must have on the wire (computed without the codec).
    fn expected(&self, txid: &[u8; 12]) -> (u16, Vec<u8>) {
        match self {
            Attr::Raw(t, v) => (*t, v.clone()),
            Attr::Xor(t, a) => (*t, oracle_xor_value(a, txid)),
            Attr::ErrorCode(code, reason) => {
                let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
                v.extend_from_slice(reason.as_bytes());
                (0x0009, v)
            }
            Attr::Lifetime(s) => (0x000D, s.to_be_bytes().to_vec()),
            Attr::Channel(n) => (0x000C, vec![(n >> 8) as u8, *n as u8, 0, 0]),
            Attr::Data(d) => (0x0013, d.clone()),
            Attr::Text(t, s) => (*t, s.as_bytes().to_vec()),
        }
    }

    fn add_to(&self, b: &mut MessageBuilder<'_>) -> Result<(), BuildError> {
        match self {
            Attr::Raw(t, v) => b.add(AttrType(*t), v),
            Attr::Xor(t, a) => b.add_xor_address(AttrType(*t), a),
            Attr::ErrorCode(code, reason) => b.add_error_code(*code, reason),
            Attr::Lifetime(s) => b.add_u32(AttrType::LIFETIME, *s),
            Attr::Channel(n) => b.add_u32(AttrType::CHANNEL_NUMBER, u32::from(*n) << 16),
            Attr::Data(d) => b.add(AttrType::DATA, d),
            Attr::Text(t, s) => b.add(AttrType(*t), s.as_bytes()),
        }
    }
}

#[derive(Clone, Debug)]
struct Spec {
    method: Method,
    class: Class,
    txid: [u8; 12],
    attrs: Vec<Attr>,
    key: Option<Vec<u8>>,
    fingerprint: bool,
}

impl Spec {
    fn message_type(&self) -> MessageType {
        MessageType::new(self.method, self.class)
    }

    fn build(&self) -> Vec<u8> {
        // Not zeroed: a reused scratch buffer must not leak into padding.
        let mut buf = vec![0xA5u8; 16 * 1024];
        let mut b =
            MessageBuilder::new(&mut buf, self.message_type(), TransactionId(self.txid)).unwrap();
        for a in &self.attrs {
            a.add_to(&mut b).unwrap();
        }
        if let Some(key) = &self.key {
            b.add_message_integrity(key).unwrap();
        }
        if self.fingerprint {
            b.add_fingerprint().unwrap();
        }
        let n = b.finish();
        buf.truncate(n);
        buf
    }

    /// What `Message::attributes` must list: the attributes, then MESSAGE-INTEGRITY.
    fn expected_attrs(&self, built: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut v: Vec<_> = self.attrs.iter().map(|a| a.expected(&self.txid)).collect();
        if let Some(key) = &self.key {
            let mi_at = HEADER_LEN
                + v.iter()
                    .map(|(_, x)| 4 + ((x.len() + 3) & !3))
                    .sum::<usize>();
            v.push((0x0008, oracle_hmac(key, built, mi_at).to_vec()));
        }
        v
    }
}

/// A key that is certainly not HMAC-equivalent to `key`. (HMAC pads keys with zeros, so
/// `key` and `key ++ [0]` are the same key; flipping a bit is not.)
fn other_key(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    match k.first_mut() {
        Some(b) => *b ^= 0x01,
        None => k.push(0x01),
    }
    k
}

fn arb_class() -> impl Strategy<Value = Class> {
    prop_oneof![
        Just(Class::Request),
        Just(Class::Indication),
        Just(Class::SuccessResponse),
        Just(Class::ErrorResponse),
    ]
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, p)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), p)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, p)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), p)),
    ]
}

fn arb_attr() -> impl Strategy<Value = Attr> {
    prop_oneof![
        (
            // The integrity and fingerprint attributes are added separately: a raw one (say a
            // MESSAGE-INTEGRITY-SHA256 of length 0) is rightly refused by the parser.
            any::<u16>().prop_filter("added separately", |t| {
                !matches!(*t, 0x0008 | 0x001C | 0x8028)
            }),
            vec(any::<u8>(), 0..300)
        )
            .prop_map(|(t, v)| Attr::Raw(t, v)),
        (
            prop_oneof![Just(0x0020u16), Just(0x0012), Just(0x0016)],
            arb_addr()
        )
            .prop_map(|(t, a)| Attr::Xor(t, a)),
        (300u16..700, "\\PC{0,40}").prop_map(|(c, r)| Attr::ErrorCode(c, r)),
        any::<u32>().prop_map(Attr::Lifetime),
        (0x4000u16..=0x7FFF).prop_map(Attr::Channel),
        vec(any::<u8>(), 0..300).prop_map(Attr::Data),
        (
            prop_oneof![Just(0x0006u16), Just(0x0014), Just(0x0015), Just(0x8022)],
            "\\PC{0,60}"
        )
            .prop_map(|(t, s)| Attr::Text(t, s)),
    ]
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    (
        (0u16..0x1000).prop_map(Method),
        arb_class(),
        any::<[u8; 12]>(),
        vec(arb_attr(), 0..20),
        option::of(vec(any::<u8>(), 0..100)),
        any::<bool>(),
    )
        .prop_map(|(method, class, txid, attrs, key, fingerprint)| Spec {
            method,
            class,
            txid,
            attrs,
            key,
            fingerprint,
        })
}

/// Checks a parsed message against the spec it was built from.
fn check_parsed(spec: &Spec, built: &[u8]) {
    let m = Message::parse(built).expect("a built message parses");
    assert_eq!(m.raw(), built);
    assert_eq!(m.method(), spec.method);
    assert_eq!(m.class(), spec.class);
    assert_eq!(
        m.message_type().to_u16(),
        u16::from_be_bytes([built[0], built[1]])
    );
    assert_eq!(m.transaction_id(), TransactionId(spec.txid));
    let expected = spec.expected_attrs(built);
    assert_eq!(attr_list(&m), expected);

    // Integrity: verifies with the key, not with another, and is absent when not added.
    assert_eq!(m.has_integrity(), spec.key.is_some());
    match &spec.key {
        Some(key) => {
            assert!(m.verify_integrity(key));
            assert!(!m.verify_integrity(&other_key(key)));
        }
        None => assert!(!m.verify_integrity(b"")),
    }
    // Fingerprint: present iff added, and its value is the oracle's.
    assert_eq!(m.has_fingerprint(), spec.fingerprint);
    if spec.fingerprint {
        let fp_at = built.len() - 8;
        assert_eq!(u16::from_be_bytes([built[fp_at], built[fp_at + 1]]), 0x8028);
        let v = u32::from_be_bytes(built[fp_at + 4..].try_into().unwrap());
        assert_eq!(v, oracle_fingerprint(built, fp_at));
    }

    // `get` returns the first of each type; typed getters agree with the source values
    // whenever the first attribute of that type is a typed one.
    for (t, _) in &expected {
        let first = expected.iter().find(|(u, _)| u == t).unwrap();
        assert_eq!(m.get(AttrType(*t)), Some(&first.1[..]));
        assert!(m.has(AttrType(*t)));
    }
    let first_of = |t: u16| spec.attrs.iter().find(|a| a.expected(&spec.txid).0 == t);
    for t in [0x0020u16, 0x0012, 0x0016] {
        let got = match t {
            0x0020 => m.xor_mapped_address(),
            0x0012 => m.xor_peer_address(),
            _ => m.xor_relayed_address(),
        };
        match first_of(t) {
            Some(Attr::Xor(_, a)) => assert_eq!(got, Some(Ok(*a))),
            Some(_) => {}
            None => assert_eq!(got, None),
        }
    }
    let peers: Vec<_> = m.xor_peer_addresses().collect();
    assert_eq!(
        peers.len(),
        expected.iter().filter(|(t, _)| *t == 0x0012).count()
    );
    for (got, a) in peers.iter().zip(
        spec.attrs
            .iter()
            .filter(|a| a.expected(&spec.txid).0 == 0x0012),
    ) {
        if let Attr::Xor(_, a) = a {
            assert_eq!(got, &Ok(*a));
        }
    }
    match first_of(0x0009) {
        Some(Attr::ErrorCode(c, r)) => assert_eq!(m.error_code(), Some(Ok((*c, r.as_str())))),
        Some(_) => {}
        None => assert_eq!(m.error_code(), None),
    }
    match first_of(0x000D) {
        Some(Attr::Lifetime(s)) => assert_eq!(m.lifetime(), Some(Ok(*s))),
        Some(_) => {}
        None => assert_eq!(m.lifetime(), None),
    }
    match first_of(0x000C) {
        Some(Attr::Channel(n)) => assert_eq!(m.channel_number(), Some(Ok(*n))),
        Some(_) => {}
        None => assert_eq!(m.channel_number(), None),
    }
    match first_of(0x0013) {
        Some(Attr::Data(d)) => {
            assert_eq!(m.data(), Some(&d[..]));
            assert_eq!(&built[m.data_range().unwrap()], &d[..]);
        }
        Some(_) => {}
        None => assert_eq!((m.data(), m.data_range()), (None, None)),
    }
    for (t, got) in [
        (0x0006u16, m.username().map(|r| r.map(str::as_bytes))),
        (0x0014, m.realm().map(|r| r.map(str::as_bytes))),
        (0x8022, m.software().map(|r| r.map(str::as_bytes))),
        (0x0015, m.nonce()),
    ] {
        match first_of(t) {
            Some(Attr::Text(_, s)) => assert_eq!(got, Some(Ok(s.as_bytes()))),
            Some(_) => {}
            None => assert_eq!(got, None),
        }
    }

    // unknown_required: every comprehension-required type `is_understood` rejects, in order,
    // once each, truncated to the output buffer.
    let mut want: Vec<u16> = Vec::new();
    for (t, _) in &expected {
        if *t < 0x8000 && !is_understood(AttrType(*t)) && !want.contains(t) {
            want.push(*t);
        }
    }
    for cap in [0usize, 1, 3, 64] {
        let mut out = vec![0u16; cap];
        let n = m.unknown_required(is_understood, &mut out);
        assert_eq!(&out[..n], &want[..want.len().min(cap)]);
    }
    exercise(&m);
}

/// The stun crate's view of attribute types (it renames the pre-RFC 0x8020 to 0x0020).
fn webrtc_type(t: u16) -> u16 {
    if t == 0x8020 {
        0x0020
    } else {
        t
    }
}

/// Decodes our message with the `stun` crate and checks it sees the same thing.
fn check_with_webrtc(spec: &Spec, built: &[u8]) {
    let mut w = WMessage::new();
    w.unmarshal_binary(built)
        .expect("stun crate decodes our message");
    assert_eq!(w.typ.value(), spec.message_type().to_u16());
    assert_eq!(w.transaction_id.0, spec.txid);
    assert_eq!(w.length as usize, built.len() - HEADER_LEN);
    let got: Vec<(u16, Vec<u8>)> = w
        .attributes
        .0
        .iter()
        .map(|a| (a.typ.value(), a.value.clone()))
        .collect();
    let mut want: Vec<(u16, Vec<u8>)> = spec
        .expected_attrs(built)
        .into_iter()
        .map(|(t, v)| (webrtc_type(t), v))
        .collect();
    if spec.fingerprint {
        want.push((0x8028, built[built.len() - 4..].to_vec()));
    }
    assert_eq!(got, want);

    match &spec.key {
        Some(key) => {
            MessageIntegrity(key.clone())
                .check(&mut w)
                .expect("stun crate: integrity");
            assert!(MessageIntegrity(other_key(key)).check(&mut w).is_err());
        }
        None => assert!(MessageIntegrity(b"k".to_vec()).check(&mut w).is_err()),
    }
    if spec.fingerprint {
        FINGERPRINT.check(&w).expect("stun crate: fingerprint");
    } else {
        assert!(FINGERPRINT.check(&w).is_err());
    }

    // Typed decoding of the first attribute of each type, when it is a typed one.
    let first_of = |t: u16| {
        spec.attrs
            .iter()
            .find(|a| webrtc_type(a.expected(&spec.txid).0) == t)
    };
    for t in [0x0020u16, 0x0012, 0x0016] {
        if let Some(Attr::Xor(_, a)) = first_of(t) {
            let mut x = XorMappedAddress::default();
            x.get_from_as(&w, WAttrType(t)).unwrap();
            assert_eq!(SocketAddr::new(x.ip, x.port), *a);
        }
    }
    if let Some(Attr::ErrorCode(c, r)) = first_of(0x0009) {
        let mut e = ErrorCodeAttribute::default();
        e.get_from(&w).unwrap();
        assert_eq!((e.code.0, &e.reason[..]), (*c, r.as_bytes()));
    }
    for t in [ATTR_USERNAME, ATTR_REALM, ATTR_NONCE, ATTR_SOFTWARE] {
        if let Some(Attr::Text(_, s)) = first_of(t.value()) {
            assert_eq!(&TextAttribute::get_from_as(&w, t).unwrap().text, s);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Build -> parse gives back the same values; integrity and fingerprint verify.
    #[test]
    fn round_trip(spec in arb_spec()) {
        let built = spec.build();
        prop_assert_eq!(built.len() % 4, 0);
        prop_assert_eq!(u16::from_be_bytes([built[2], built[3]]) as usize, built.len() - HEADER_LEN);
        for (i, pad) in padding_mask(&built).into_iter().enumerate() {
            prop_assert!(!pad || built[i] == 0, "padding byte {} is not zero", i);
        }
        check_parsed(&spec, &built);
    }

    /// Differential (b): what our builder writes, the `stun` crate decodes identically and
    /// its MESSAGE-INTEGRITY and FINGERPRINT checks accept.
    #[test]
    fn ours_decoded_by_stun_crate(spec in arb_spec()) {
        let built = spec.build();
        check_with_webrtc(&spec, &built);
    }

    /// `Message::parse` never panics on arbitrary bytes.
    #[test]
    fn parse_arbitrary_bytes_never_panics(bytes in vec(any::<u8>(), 0..600)) {
        if let Ok(m) = Message::parse(&bytes) {
            exercise(&m);
        }
        let _ = looks_like_stun(&bytes);
    }

    /// Arbitrary attribute area behind a valid header, so the attribute walk is exercised.
    #[test]
    fn parse_arbitrary_body_never_panics(
        ty in 0u16..0x4000,
        txid in any::<[u8; 12]>(),
        words in vec(any::<[u8; 4]>(), 0..100),
        // Bias attribute lengths towards small values so many walks reach the end.
        small in vec((0usize..100, 0u16..40), 0..8),
    ) {
        let mut body: Vec<u8> = words.concat();
        for (pos, len) in small {
            let i = (pos * 4).min(body.len().saturating_sub(4));
            if body.len() >= i + 4 {
                body[i + 2..i + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
        let msg = frame(ty, txid, &body);
        if let Ok(m) = Message::parse(&msg) {
            exercise(&m);
        }
    }

    /// A valid message with any single byte changed never panics the parser. A change to
    /// bytes covered by FINGERPRINT leaves no valid FINGERPRINT; a change to bytes covered by
    /// MESSAGE-INTEGRITY makes the integrity check fail; a change after MESSAGE-INTEGRITY
    /// (i.e. in FINGERPRINT) does not.
    #[test]
    fn single_byte_corruption(spec in arb_spec(), pos in any::<prop::sample::Index>(), x in 1u8..=255) {
        let original = spec.build();
        let mut built = original.clone();
        let i = pos.index(built.len());
        built[i] ^= x;
        let parsed = Message::parse(&built);
        if let Ok(m) = &parsed {
            exercise(m);
            if spec.fingerprint {
                prop_assert!(!m.has_fingerprint(), "corruption at {} kept a valid FINGERPRINT", i);
            }
            if let Some(key) = &spec.key {
                let mi_end = tlvs(&original).iter().find(|t| t.ty == 0x0008).unwrap().at + 24;
                prop_assert_eq!(m.verify_integrity(key), i >= mi_end, "corruption at {}", i);
            }
        }
    }

    /// `ChannelData::parse` never panics, and accepts exactly what its framing says.
    #[test]
    fn channel_data_arbitrary_bytes(bytes in vec(any::<u8>(), 0..300)) {
        match ChannelData::parse(&bytes) {
            Ok(cd) => {
                prop_assert!(channel_data::is_valid_channel(cd.channel));
                prop_assert!(ChannelData::is_channel_data(&bytes));
                let len = u16::from_be_bytes([bytes[2], bytes[3]]) as usize;
                prop_assert_eq!(cd.data, &bytes[4..4 + len]);
            }
            Err(e) => prop_assert!(matches!(
                e,
                ParseError::Truncated | ParseError::BadChannelNumber | ParseError::BadLength
            )),
        }
    }

    /// ChannelData framing round-trips, with and without the stream padding.
    #[test]
    fn channel_data_round_trip(channel in 0x4000u16..=0x7FFF, data in vec(any::<u8>(), 0..300), pad in any::<bool>()) {
        let mut buf = vec![0u8; 4 + data.len()];
        channel_data::write_header(&mut buf, channel, data.len() as u16);
        buf[4..].copy_from_slice(&data);
        let frame_len = ChannelData::stream_frame_len(buf[..4].try_into().unwrap());
        prop_assert_eq!(frame_len % 4, 0);
        prop_assert!(frame_len >= buf.len() && frame_len < buf.len() + 4);
        if pad {
            buf.resize(frame_len, 0);
        }
        let cd = ChannelData::parse(&buf).unwrap();
        prop_assert_eq!(cd.channel, channel);
        prop_assert_eq!(cd.data, &data[..]);
        prop_assert!(ChannelData::is_channel_data(&buf));
        prop_assert!(!looks_like_stun(&buf));
        prop_assert!(Message::parse(&buf).is_err());
    }
}

#[test]
fn message_type_matches_stun_crate_for_every_value() {
    for raw in 0u16..0x4000 {
        let ours = MessageType::from_u16(raw).unwrap();
        let mut theirs = WMessageType::default();
        theirs.read_value(raw);
        assert_eq!(theirs.value(), raw);
        assert_eq!(ours.to_u16(), raw);
        let rebuilt = MessageType::new(ours.method, ours.class);
        assert_eq!(rebuilt.to_u16(), raw);
    }
    for raw in [0x4000u16, 0x8000, 0xC001, 0xFFFF] {
        assert_eq!(MessageType::from_u16(raw), None);
    }
}

/// Attribute offsets past 65535 (possible in a TCP frame: up to 20 + 65532 bytes) must be
/// read from the right place, for every attribute kind that can sit there.
#[test]
fn attributes_past_64k_offsets() {
    let txid = TransactionId(*b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c");
    let ty = MessageType::new(Method::SEND, Class::Indication);
    let peer_v4 = sock("198.51.100.7:3478");
    let mut checked_beyond = 0;
    for filler in (65_300..=65_524).step_by(4) {
        let mut buf = vec![0u8; HEADER_LEN + 65_535];
        let mut b = MessageBuilder::new(&mut buf, ty, txid).unwrap();
        b.add(AttrType(0x8050), &vec![0xEE; filler]).unwrap();
        let lifetime = b.add_u32(AttrType::LIFETIME, 0xDEAD_BEEF).is_ok();
        let peer = b
            .add_xor_address(AttrType::XOR_PEER_ADDRESS, &peer_v4)
            .is_ok();
        let data = b.add(AttrType::DATA, b"payload!").is_ok();
        let mi = b.add_message_integrity(b"secret").is_ok();
        let fp = b.add_fingerprint().is_ok();
        let n = b.finish();
        assert!(n - HEADER_LEN <= 65_535);
        let msg = &buf[..n];
        let m = Message::parse(msg).unwrap_or_else(|e| panic!("filler {filler}: {e}"));
        let layout = tlvs(msg);
        for (t, (got_t, got_v)) in layout.iter().zip(m.attributes()) {
            assert_eq!(t.ty, got_t.0);
            assert_eq!(
                got_v,
                &msg[t.at + 4..t.at + 4 + t.len],
                "filler {filler}, type {:#x}",
                t.ty
            );
            if t.at + 4 > 65_535 {
                checked_beyond += 1;
            }
        }
        assert_eq!(
            m.lifetime().map(Result::unwrap),
            lifetime.then_some(0xDEAD_BEEF)
        );
        assert_eq!(
            m.xor_peer_address().map(Result::unwrap),
            peer.then_some(peer_v4)
        );
        assert_eq!(m.data(), data.then_some(&b"payload!"[..]));
        if data {
            assert_eq!(&msg[m.data_range().unwrap()], b"payload!");
        }
        assert_eq!(m.verify_integrity(b"secret"), mi);
        assert_eq!(m.has_fingerprint(), fp);
        exercise(&m);
    }
    assert!(
        checked_beyond > 0,
        "some attribute value must start past offset 65535"
    );
}

#[test]
fn builder_limits() {
    let ty = MessageType::new(Method::BINDING, Class::Request);
    let mut small = [0u8; 19];
    assert_eq!(
        MessageBuilder::new(&mut small, ty, TransactionId::default()).err(),
        Some(BuildError::BufferTooSmall)
    );
    let mut buf = [0u8; 40];
    let mut b = MessageBuilder::new(&mut buf, ty, TransactionId::default()).unwrap();
    assert!(b.is_empty());
    assert_eq!(
        b.add(AttrType::DATA, &[0; 17]),
        Err(BuildError::BufferTooSmall)
    );
    assert_eq!(
        b.len(),
        HEADER_LEN,
        "a failed add leaves the message as it was"
    );
    assert_eq!(
        b.add_message_integrity(b"k"),
        Err(BuildError::BufferTooSmall)
    );
    b.add(AttrType::DATA, &[7; 16]).unwrap();
    assert_eq!(b.add_fingerprint(), Err(BuildError::BufferTooSmall));
    let n = b.finish();
    assert_eq!(n, 40);
    assert_eq!(
        Message::parse(&buf[..n]).unwrap().data(),
        Some(&[7u8; 16][..])
    );

    let mut big = vec![0u8; 70_000 * 2];
    let mut b = MessageBuilder::new(&mut big, ty, TransactionId::default()).unwrap();
    assert_eq!(
        b.add(AttrType::DATA, &vec![0; 65_536]),
        Err(BuildError::ValueTooLong)
    );
    // A value the length field can say, but whose attribute would overflow the 16-bit
    // message length.
    assert_eq!(
        b.add(AttrType::DATA, &vec![0; 65_535]),
        Err(BuildError::BufferTooSmall)
    );
    b.add(AttrType::DATA, &vec![0; 65_528]).unwrap();
    assert_eq!(
        b.add_u32(AttrType::LIFETIME, 1),
        Err(BuildError::BufferTooSmall)
    );
    let n = b.finish();
    assert_eq!(n, HEADER_LEN + 65_532);
    assert!(Message::parse(&big[..n]).is_ok());
}

// ---------------------------------------------------------------------------------------------
// 3. Differential tests against the `stun` crate (direction a: theirs -> ours)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Integrity {
    None,
    Short(String),
    Long {
        username: String,
        realm: String,
        password: String,
    },
}

impl Integrity {
    fn key(&self) -> Option<Vec<u8>> {
        match self {
            Integrity::None => None,
            Integrity::Short(p) => Some(p.as_bytes().to_vec()),
            Integrity::Long {
                username,
                realm,
                password,
            } => Some(long_term_key(username, realm, password).to_vec()),
        }
    }

    fn setter(&self) -> Option<Box<dyn Setter>> {
        match self {
            Integrity::None => None,
            Integrity::Short(p) => Some(Box::new(MessageIntegrity::new_short_term_integrity(
                p.clone(),
            ))),
            Integrity::Long {
                username,
                realm,
                password,
            } => Some(Box::new(MessageIntegrity::new_long_term_integrity(
                username.clone(),
                realm.clone(),
                password.clone(),
            ))),
        }
    }
}

#[derive(Clone, Debug)]
struct WSpec {
    ty: u16,
    txid: [u8; 12],
    xor: Option<SocketAddr>,
    username: Option<String>,
    realm: Option<String>,
    nonce: Option<String>,
    software: Option<String>,
    error: Option<(u16, String)>,
    integrity: Integrity,
    fingerprint: bool,
}

impl WSpec {
    fn build(&self) -> Vec<u8> {
        let mut t = WMessageType::default();
        t.read_value(self.ty);
        let mut setters: Vec<Box<dyn Setter>> =
            vec![Box::new(t), Box::new(WTransactionId(self.txid))];
        // SOFTWARE first, then XOR-MAPPED-ADDRESS: the order of RFC 5769 §2.2 and §2.3.
        if let Some(s) = &self.software {
            setters.push(Box::new(TextAttribute::new(ATTR_SOFTWARE, s.clone())));
        }
        if let Some(a) = self.xor {
            setters.push(Box::new(XorMappedAddress {
                ip: a.ip(),
                port: a.port(),
            }));
        }
        for (attr, text) in [
            (ATTR_USERNAME, &self.username),
            (ATTR_REALM, &self.realm),
            (ATTR_NONCE, &self.nonce),
        ] {
            if let Some(s) = text {
                setters.push(Box::new(TextAttribute::new(attr, s.clone())));
            }
        }
        if let Some((code, reason)) = &self.error {
            setters.push(Box::new(ErrorCodeAttribute {
                code: WErrorCode(*code),
                reason: reason.as_bytes().to_vec(),
            }));
        }
        if let Some(s) = self.integrity.setter() {
            setters.push(s);
        }
        if self.fingerprint {
            setters.push(Box::new(FINGERPRINT));
        }
        let mut w = WMessage::new();
        w.build(&setters).expect("stun crate builds");
        w.raw.clone()
    }

    fn check_ours(&self, bytes: &[u8]) {
        let m = Message::parse(bytes).expect("our parser accepts the stun crate's message");
        assert_eq!(m.message_type().to_u16(), self.ty);
        assert_eq!(m.transaction_id(), TransactionId(self.txid));
        assert_eq!(m.xor_mapped_address(), self.xor.map(Ok));
        assert_eq!(m.username(), self.username.as_deref().map(Ok));
        assert_eq!(m.realm(), self.realm.as_deref().map(Ok));
        assert_eq!(m.nonce(), self.nonce.as_deref().map(|s| Ok(s.as_bytes())));
        assert_eq!(m.software(), self.software.as_deref().map(Ok));
        assert_eq!(
            m.error_code(),
            self.error.as_ref().map(|(c, r)| Ok((*c, r.as_str())))
        );
        match self.integrity.key() {
            Some(key) => {
                assert!(m.has_integrity());
                assert!(
                    m.verify_integrity(&key),
                    "our check of the stun crate's MESSAGE-INTEGRITY"
                );
                assert!(!m.verify_integrity(&other_key(&key)));
            }
            None => assert!(!m.has_integrity()),
        }
        assert_eq!(m.has_fingerprint(), self.fingerprint);
        exercise(&m);
    }
}

fn arb_wspec() -> impl Strategy<Value = WSpec> {
    let text = || option::of("\\PC{0,40}");
    let integrity = prop_oneof![
        Just(Integrity::None),
        "\\PC{0,30}".prop_map(Integrity::Short),
        ("\\PC{0,20}", "\\PC{0,20}", "\\PC{0,20}").prop_map(|(username, realm, password)| {
            Integrity::Long {
                username,
                realm,
                password,
            }
        }),
    ];
    (
        (0u16..0x4000, any::<[u8; 12]>(), option::of(arb_addr())),
        (text(), text(), text(), text()),
        option::of((300u16..700, "\\PC{0,40}")),
        integrity,
        any::<bool>(),
    )
        .prop_map(
            |(
                (ty, txid, xor),
                (username, realm, nonce, software),
                error,
                integrity,
                fingerprint,
            )| {
                WSpec {
                    ty,
                    txid,
                    xor,
                    username,
                    realm,
                    nonce,
                    software,
                    error,
                    integrity,
                    fingerprint,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Differential (a): what the `stun` crate builds, we parse with identical values and our
    /// integrity check passes with the same key.
    #[test]
    fn stun_crate_decoded_by_ours(spec in arb_wspec()) {
        let bytes = spec.build();
        spec.check_ours(&bytes);
    }
}

#[test]
fn stun_crate_to_ours_examples() {
    // A Binding success response with an IPv6 XOR-MAPPED-ADDRESS, short-term integrity and
    // FINGERPRINT.
    let spec = WSpec {
        ty: 0x0101,
        txid: RFC5769_TXID,
        xor: Some(sock("[2001:db8:1234:5678:11:2233:4455:6677]:32853")),
        username: None,
        realm: None,
        nonce: None,
        software: Some("test vector".into()),
        error: None,
        integrity: Integrity::Short("VOkJxbRl1RmTxUk/WvJxBt".into()),
        fingerprint: true,
    };
    let bytes = spec.build();
    spec.check_ours(&bytes);
    // The stun crate pads with zeros; RFC 5769 §2.3 pads with spaces. Otherwise identical.
    let mut repadded = bytes.clone();
    repad(&mut repadded, 0x20);
    reseal(&mut repadded, RFC5769_PASSWORD);
    assert_eq!(repadded, RFC5769_SAMPLE_IPV6_RESPONSE);

    // An Allocate 401 with REALM, NONCE, SOFTWARE, long-term integrity and FINGERPRINT.
    let spec = WSpec {
        ty: 0x0113,
        txid: [0x42; 12],
        xor: Some(sock("203.0.113.9:49152")),
        username: Some("alice".into()),
        realm: Some("example.org".into()),
        nonce: Some("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA".into()),
        software: Some("turnd test".into()),
        error: Some((401, "Unauthorized".into())),
        integrity: Integrity::Long {
            username: "alice".into(),
            realm: "example.org".into(),
            password: "hunter2".into(),
        },
        fingerprint: true,
    };
    let bytes = spec.build();
    spec.check_ours(&bytes);
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(
        (m.method(), m.class()),
        (Method::ALLOCATE, Class::ErrorResponse)
    );
}

#[test]
fn ours_to_stun_crate_examples() {
    // An Allocate success response as turnd would send it.
    let txid = [0x5a; 12];
    let relayed = sock("[2001:db8::1:2]:50000");
    let mapped = sock("192.0.2.1:32853");
    let key = long_term_key("alice", "example.org", "hunter2");
    let mut buf = [0u8; 512];
    let ty = MessageType::new(Method::ALLOCATE, Class::SuccessResponse);
    let mut b = MessageBuilder::new(&mut buf, ty, TransactionId(txid)).unwrap();
    b.add_xor_address(AttrType::XOR_RELAYED_ADDRESS, &relayed)
        .unwrap();
    b.add_xor_address(AttrType::XOR_MAPPED_ADDRESS, &mapped)
        .unwrap();
    b.add_u32(AttrType::LIFETIME, 600).unwrap();
    b.add(AttrType::SOFTWARE, b"turnd").unwrap();
    b.add_message_integrity(&key).unwrap();
    b.add_fingerprint().unwrap();
    let n = b.finish();

    let mut w = WMessage::new();
    w.unmarshal_binary(&buf[..n]).unwrap();
    assert_eq!(w.typ.value(), 0x0103);
    assert_eq!(w.transaction_id.0, txid);
    let mut x = XorMappedAddress::default();
    x.get_from_as(&w, ATTR_XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(SocketAddr::new(x.ip, x.port), relayed);
    x.get_from_as(&w, ATTR_XORMAPPED_ADDRESS).unwrap();
    assert_eq!(SocketAddr::new(x.ip, x.port), mapped);
    assert!(x.get_from_as(&w, ATTR_XOR_PEER_ADDRESS).is_err());
    assert_eq!(
        TextAttribute::get_from_as(&w, ATTR_SOFTWARE).unwrap().text,
        "turnd"
    );
    let integrity = MessageIntegrity::new_long_term_integrity(
        "alice".into(),
        "example.org".into(),
        "hunter2".into(),
    );
    integrity.check(&mut w).unwrap();
    FINGERPRINT.check(&w).unwrap();

    // An error response with ERROR-CODE and UNKNOWN-ATTRIBUTES, short-term integrity.
    let mut buf = [0u8; 512];
    let ty = MessageType::new(Method::BINDING, Class::ErrorResponse);
    let mut b = MessageBuilder::new(&mut buf, ty, TransactionId(txid)).unwrap();
    b.add_error_code(420, "Unknown Attribute").unwrap();
    b.add_unknown_attributes(&[0x0003, 0x7FFF, 0x0031]).unwrap();
    b.add_message_integrity(b"pass").unwrap();
    b.add_fingerprint().unwrap();
    let n = b.finish();
    let mut w = WMessage::new();
    w.unmarshal_binary(&buf[..n]).unwrap();
    assert_eq!(w.typ.value(), 0x0111);
    let mut e = ErrorCodeAttribute::default();
    e.get_from(&w).unwrap();
    assert_eq!((e.code.0, &e.reason[..]), (420, &b"Unknown Attribute"[..]));
    MessageIntegrity::new_short_term_integrity("pass".into())
        .check(&mut w)
        .unwrap();
    FINGERPRINT.check(&w).unwrap();
    // UNKNOWN-ATTRIBUTES is three 16-bit types, padded.
    let ours = Message::parse(&buf[..n]).unwrap();
    assert_eq!(
        ours.unknown_attributes().collect::<Vec<_>>(),
        [0x0003, 0x7FFF, 0x0031]
    );
    assert_eq!(
        w.get(stun::attributes::ATTR_UNKNOWN_ATTRIBUTES).unwrap(),
        [0x00, 0x03, 0x7F, 0xFF, 0x00, 0x31]
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Malformed input
// ---------------------------------------------------------------------------------------------

const TXID: [u8; 12] = [0x11; 12];
const BINDING_REQUEST: u16 = 0x0001;

/// `n` distinct harmless attributes (SOFTWARE-range types, 4-byte values).
fn n_attrs(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| tlv(0x8100 + i as u16, &(i as u32).to_be_bytes()))
        .collect()
}

/// A message whose body is `body` plus a FINGERPRINT, with a valid CRC.
fn with_fingerprint(body: &[u8]) -> Vec<u8> {
    let mut full = body.to_vec();
    full.extend_from_slice(&tlv(0x8028, &[0; 4]));
    let mut m = frame(BINDING_REQUEST, TXID, &full);
    reseal(&mut m, b"");
    m
}

#[test]
fn malformed_inputs_table() {
    let valid = frame(BINDING_REQUEST, TXID, &tlv(0x8022, b"ok"));
    assert!(Message::parse(&valid).is_ok());

    let cases: Vec<(&str, Vec<u8>, ParseError)> = vec![
        ("empty datagram", vec![], ParseError::Truncated),
        (
            "19-byte header",
            valid[..19].to_vec(),
            ParseError::Truncated,
        ),
        (
            "top bits 0b10",
            {
                let mut m = valid.clone();
                m[0] = 0x80;
                m
            },
            ParseError::NotStun,
        ),
        (
            "top bits 0b01 (ChannelData)",
            {
                let mut m = valid.clone();
                m[0] = 0x40;
                m
            },
            ParseError::NotStun,
        ),
        (
            "top bits 0b11",
            {
                let mut m = valid.clone();
                m[0] = 0xC0;
                m
            },
            ParseError::NotStun,
        ),
        (
            "RFC 3489 (no cookie)",
            {
                let mut m = valid.clone();
                m[4..8].fill(0);
                m
            },
            ParseError::BadMagicCookie,
        ),
        (
            "cookie off by one bit",
            {
                let mut m = valid.clone();
                m[7] ^= 1;
                m
            },
            ParseError::BadMagicCookie,
        ),
        (
            "length not multiple of 4",
            {
                let mut m = frame(BINDING_REQUEST, TXID, &[0x80, 0x22, 0x00, 0x00, 0xAA, 0xBB]);
                m[3] = 6;
                m
            },
            ParseError::BadLength,
        ),
        (
            "length 2, datagram body 2",
            {
                let mut m = frame(BINDING_REQUEST, TXID, &[0, 0]);
                m[3] = 2;
                m
            },
            ParseError::BadLength,
        ),
        (
            "length larger than datagram",
            {
                let mut m = valid.clone();
                m[3] += 4;
                m
            },
            ParseError::BadLength,
        ),
        (
            "length smaller than datagram",
            {
                let mut m = valid.clone();
                m[3] -= 4;
                m
            },
            ParseError::BadLength,
        ),
        (
            "length 0 with trailing bytes",
            {
                let mut m = valid.clone();
                m[3] = 0;
                m
            },
            ParseError::BadLength,
        ),
        (
            "datagram cut mid-attribute",
            valid[..valid.len() - 4].to_vec(),
            ParseError::BadLength,
        ),
        (
            "attribute length past the end",
            frame(BINDING_REQUEST, TXID, &[0x80, 0x22, 0x00, 0x08, 1, 2, 3, 4]),
            ParseError::AttributeOverflow,
        ),
        (
            "attribute padding past the end",
            frame(BINDING_REQUEST, TXID, &[0x80, 0x22, 0x00, 0x05, 1, 2, 3, 4]),
            ParseError::AttributeOverflow,
        ),
        (
            "attribute length 0xFFFF",
            frame(BINDING_REQUEST, TXID, &[0x00, 0x06, 0xFF, 0xFF, 1, 2, 3, 4]),
            ParseError::AttributeOverflow,
        ),
        (
            "second attribute overflows",
            {
                let mut body = tlv(0x0006, b"user");
                body.extend_from_slice(&[0x00, 0x14, 0x00, 0x10, b'r', b'e', b'a', b'l']);
                frame(BINDING_REQUEST, TXID, &body)
            },
            ParseError::AttributeOverflow,
        ),
        (
            "FINGERPRINT not last (CRC valid for the whole message)",
            {
                // The CRC is computed as if FINGERPRINT ended the message, so only the
                // "must be last" rule can reject this.
                let mut body = tlv(0x8028, &[0; 4]);
                body.extend_from_slice(&tlv(0x8022, b"after"));
                let mut m = frame(BINDING_REQUEST, TXID, &body);
                let crc = crc32fast::hash(&m[..HEADER_LEN]) ^ 0x5354_554e;
                m[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&crc.to_be_bytes());
                m
            },
            ParseError::BadFingerprint,
        ),
        (
            "FINGERPRINT followed by FINGERPRINT",
            {
                let mut m = with_fingerprint(&tlv(0x8022, b"x"));
                let second = m[m.len() - 8..].to_vec();
                m.extend_from_slice(&second);
                let body = (m.len() - HEADER_LEN) as u16;
                m[2..4].copy_from_slice(&body.to_be_bytes());
                m
            },
            ParseError::BadFingerprint,
        ),
        (
            "FINGERPRINT before MESSAGE-INTEGRITY",
            {
                let mut m = with_fingerprint(&tlv(0x8022, b"x"));
                m.extend_from_slice(&tlv(0x0008, &[0; 20]));
                let body = (m.len() - HEADER_LEN) as u16;
                m[2..4].copy_from_slice(&body.to_be_bytes());
                m
            },
            ParseError::BadFingerprint,
        ),
        (
            "FINGERPRINT with a bad CRC",
            {
                let mut m = with_fingerprint(&tlv(0x8022, b"x"));
                let last = m.len() - 1;
                m[last] ^= 0xFF;
                m
            },
            ParseError::BadFingerprint,
        ),
        (
            "FINGERPRINT without the XOR constant",
            {
                let mut m = with_fingerprint(&tlv(0x8022, b"x"));
                let at = m.len() - 4;
                let v = u32::from_be_bytes(m[at..].try_into().unwrap()) ^ 0x5354_554e;
                m[at..].copy_from_slice(&v.to_be_bytes());
                m
            },
            ParseError::BadFingerprint,
        ),
        (
            "FINGERPRINT of 8 bytes",
            frame(BINDING_REQUEST, TXID, &tlv(0x8028, &[0; 8])),
            ParseError::BadFingerprint,
        ),
        (
            "FINGERPRINT of 0 bytes",
            frame(BINDING_REQUEST, TXID, &tlv(0x8028, &[])),
            ParseError::BadFingerprint,
        ),
        (
            "MESSAGE-INTEGRITY of 16 bytes",
            frame(BINDING_REQUEST, TXID, &tlv(0x0008, &[0; 16])),
            ParseError::BadAttribute(0x0008),
        ),
        (
            "MESSAGE-INTEGRITY of 32 bytes",
            frame(BINDING_REQUEST, TXID, &tlv(0x0008, &[0; 32])),
            ParseError::BadAttribute(0x0008),
        ),
        (
            "MESSAGE-INTEGRITY of 0 bytes",
            frame(BINDING_REQUEST, TXID, &tlv(0x0008, &[])),
            ParseError::BadAttribute(0x0008),
        ),
        (
            "MAX_ATTRIBUTES + 1 attributes",
            frame(BINDING_REQUEST, TXID, &n_attrs(MAX_ATTRIBUTES + 1)),
            ParseError::TooManyAttributes,
        ),
        (
            "MAX_ATTRIBUTES attributes, then MESSAGE-INTEGRITY",
            {
                let mut body = n_attrs(MAX_ATTRIBUTES);
                body.extend_from_slice(&tlv(0x0008, &[0; 20]));
                frame(BINDING_REQUEST, TXID, &body)
            },
            ParseError::TooManyAttributes,
        ),
        (
            "1000 attributes",
            frame(BINDING_REQUEST, TXID, &n_attrs(1000)),
            ParseError::TooManyAttributes,
        ),
        // An overflowing attribute after MESSAGE-INTEGRITY is still a framing error.
        (
            "overflow after MESSAGE-INTEGRITY",
            {
                let mut body = tlv(0x0008, &[0; 20]);
                body.extend_from_slice(&[0x80, 0x22, 0x00, 0x09, 1, 2, 3, 4]);
                frame(BINDING_REQUEST, TXID, &body)
            },
            ParseError::AttributeOverflow,
        ),
    ];

    for (name, bytes, want) in &cases {
        assert_eq!(Message::parse(bytes).err(), Some(*want), "{name}");
    }
}

#[test]
fn attribute_count_limits() {
    // Exactly MAX_ATTRIBUTES is fine, MESSAGE-INTEGRITY included.
    let m = frame(BINDING_REQUEST, TXID, &n_attrs(MAX_ATTRIBUTES));
    assert_eq!(
        Message::parse(&m).unwrap().attributes().count(),
        MAX_ATTRIBUTES
    );
    let mut body = n_attrs(MAX_ATTRIBUTES - 1);
    body.extend_from_slice(&tlv(0x0008, &[0; 20]));
    let m = frame(BINDING_REQUEST, TXID, &body);
    assert!(Message::parse(&m).unwrap().has_integrity());
    // FINGERPRINT is not counted.
    let m = with_fingerprint(&n_attrs(MAX_ATTRIBUTES));
    let p = Message::parse(&m).unwrap();
    assert!(p.has_fingerprint());
    assert_eq!(p.attributes().count(), MAX_ATTRIBUTES);
    // Attributes after MESSAGE-INTEGRITY are ignored, so they do not count either.
    let mut body = tlv(0x0008, &[0; 20]);
    body.extend_from_slice(&n_attrs(100));
    let m = frame(BINDING_REQUEST, TXID, &body);
    assert_eq!(Message::parse(&m).unwrap().attributes().count(), 1);
}

#[test]
fn duplicate_attributes_first_wins() {
    let txid = [3; 12];
    let a = sock("192.0.2.1:1000");
    let b2 = sock("[2001:db8::2]:2000");
    let mut buf = [0u8; 512];
    let ty = MessageType::new(Method::CREATE_PERMISSION, Class::Request);
    let mut b = MessageBuilder::new(&mut buf, ty, TransactionId(txid)).unwrap();
    b.add(AttrType::USERNAME, b"first").unwrap();
    b.add(AttrType::USERNAME, b"second").unwrap();
    b.add_u32(AttrType::LIFETIME, 1).unwrap();
    b.add_u32(AttrType::LIFETIME, 2).unwrap();
    b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &a).unwrap();
    b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &b2).unwrap();
    b.add(AttrType::DATA, b"one").unwrap();
    b.add(AttrType::DATA, b"two").unwrap();
    b.add_error_code(438, "Stale Nonce").unwrap();
    b.add_error_code(401, "Unauthorized").unwrap();
    let n = b.finish();
    let m = Message::parse(&buf[..n]).unwrap();
    assert_eq!(m.username(), Some(Ok("first")));
    assert_eq!(m.lifetime(), Some(Ok(1)));
    assert_eq!(m.xor_peer_address(), Some(Ok(a)));
    assert_eq!(m.xor_peer_addresses().collect::<Vec<_>>(), [Ok(a), Ok(b2)]);
    assert_eq!(m.data(), Some(&b"one"[..]));
    assert_eq!(&buf[m.data_range().unwrap()], b"one");
    assert_eq!(m.error_code(), Some(Ok((438, "Stale Nonce"))));
    assert_eq!(m.attributes().count(), 10, "duplicates are still listed");
}

#[test]
fn attributes_after_message_integrity_are_ignored_except_fingerprint() {
    let key = b"key";
    let mut buf = [0u8; 512];
    let ty = MessageType::new(Method::REFRESH, Class::Request);
    let mut b = MessageBuilder::new(&mut buf, ty, TransactionId(TXID)).unwrap();
    b.add(AttrType::USERNAME, b"alice").unwrap();
    b.add_message_integrity(key).unwrap();
    // Not covered by the HMAC: an attacker could have appended these.
    b.add_u32(AttrType::LIFETIME, 0).unwrap();
    b.add(AttrType::SOFTWARE, b"evil").unwrap();
    b.add(AttrType::USERNAME, b"mallory").unwrap();
    b.add(AttrType(0x0003), &[0; 4]).unwrap();
    b.add(AttrType::MESSAGE_INTEGRITY, &[0; 20]).unwrap();
    b.add_fingerprint().unwrap();
    let n = b.finish();
    let m = Message::parse(&buf[..n]).unwrap();
    assert_eq!(m.username(), Some(Ok("alice")));
    assert_eq!(m.lifetime(), None);
    assert_eq!(m.software(), None);
    assert!(!m.has(AttrType(0x0003)));
    let mut out = [0u16; 4];
    assert_eq!(m.unknown_required(is_understood, &mut out), 0);
    assert_eq!(attr_list(&m).len(), 2);
    assert!(m.verify_integrity(key));
    assert!(m.has_fingerprint());

    // FINGERPRINT after ignored attributes is still checked.
    let mut bad = buf[..n].to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(Message::parse(&bad).err(), Some(ParseError::BadFingerprint));
    // And the ignored attributes are covered by it.
    let mut bad = buf[..n].to_vec();
    let i = n - 20;
    bad[i] ^= 1;
    assert_eq!(Message::parse(&bad).err(), Some(ParseError::BadFingerprint));
}

#[test]
fn unknown_comprehension_required_attributes() {
    let mut body = Vec::new();
    for (t, v) in [
        (0x0006u16, &b"user"[..]),
        (0x0003, &[0, 0, 0, 4][..]), // CHANGE-REQUEST: not understood
        (0x8030, &[1, 2][..]),       // comprehension-optional: never reported
        (0x7FFF, &[][..]),           // unknown, required
        (0x0003, &[0, 0, 0, 0][..]), // duplicate: reported once
        (0x001E, &[0; 32][..]),      // USERHASH: understood
        (0x0024, &[0, 0, 0, 1][..]), // PRIORITY: understood
        (0x0005, &[][..]),           // unknown, required
        (0xFFFF, &[][..]),           // optional
    ] {
        body.extend_from_slice(&tlv(t, v));
    }
    let msg = frame(BINDING_REQUEST, TXID, &body);
    let m = Message::parse(&msg).unwrap();
    let mut out = [0u16; 8];
    let n = m.unknown_required(is_understood, &mut out);
    assert_eq!(&out[..n], &[0x0003, 0x7FFF, 0x0005]);
    let mut small = [0u16; 2];
    let n = m.unknown_required(is_understood, &mut small);
    assert_eq!(&small[..n], &[0x0003, 0x7FFF]);
    let n = m.unknown_required(|_| true, &mut out);
    assert_eq!(n, 0);
    let n = m.unknown_required(|_| false, &mut out);
    assert_eq!(&out[..n], &[0x0006, 0x0003, 0x7FFF, 0x001E, 0x0024, 0x0005]);
}

#[test]
fn malformed_attribute_values_table() {
    type Check = fn(&Message<'_>) -> Option<ParseError>;
    fn err<T>(r: Option<Result<T, ParseError>>) -> Option<ParseError> {
        r.and_then(Result::err)
    }
    let cases: Vec<(&str, u16, Vec<u8>, Check)> = vec![
        (
            "XOR address family 3",
            0x0020,
            vec![0, 3, 0, 1, 1, 2, 3, 4],
            |m| err(m.xor_mapped_address()),
        ),
        (
            "XOR IPv4 with 20 bytes",
            0x0020,
            [&[0u8, 1, 0, 1][..], &[0u8; 16][..]].concat(),
            |m| err(m.xor_mapped_address()),
        ),
        (
            "XOR IPv6 with 8 bytes",
            0x0016,
            vec![0, 2, 0, 1, 1, 2, 3, 4],
            |m| err(m.xor_relayed_address()),
        ),
        ("XOR peer address of 3 bytes", 0x0012, vec![0, 1, 0], |m| {
            err(m.xor_peer_address())
        }),
        (
            "MAPPED-ADDRESS family 0",
            0x0001,
            vec![0, 0, 0, 1, 1, 2, 3, 4],
            |m| err(m.mapped_address()),
        ),
        ("LIFETIME of 3 bytes", 0x000D, vec![0, 0, 1], |m| {
            err(m.lifetime())
        }),
        ("LIFETIME of 8 bytes", 0x000D, vec![0; 8], |m| {
            err(m.lifetime())
        }),
        ("CHANNEL-NUMBER of 2 bytes", 0x000C, vec![0x40, 0], |m| {
            err(m.channel_number())
        }),
        ("REQUESTED-TRANSPORT of 1 byte", 0x0019, vec![17], |m| {
            err(m.requested_transport())
        }),
        ("EVEN-PORT of 2 bytes", 0x0018, vec![0x80, 0], |m| {
            err(m.even_port())
        }),
        ("RESERVATION-TOKEN of 7 bytes", 0x0022, vec![0; 7], |m| {
            err(m.reservation_token())
        }),
        (
            "REQUESTED-ADDRESS-FAMILY 3",
            0x0017,
            vec![3, 0, 0, 0],
            |m| err(m.requested_address_family()),
        ),
        (
            "ADDITIONAL-ADDRESS-FAMILY of 2 bytes",
            0x8000,
            vec![2, 0],
            |m| err(m.additional_address_family()),
        ),
        ("ERROR-CODE of 3 bytes", 0x0009, vec![0, 0, 4], |m| {
            err(m.error_code())
        }),
        ("ERROR-CODE class 7", 0x0009, vec![0, 0, 7, 0], |m| {
            err(m.error_code())
        }),
        ("ERROR-CODE class 2", 0x0009, vec![0, 0, 2, 0], |m| {
            err(m.error_code())
        }),
        ("ERROR-CODE number 100", 0x0009, vec![0, 0, 4, 100], |m| {
            err(m.error_code())
        }),
        (
            "ERROR-CODE reason not UTF-8",
            0x0009,
            vec![0, 0, 4, 1, 0xFF, 0xFE],
            |m| err(m.error_code()),
        ),
        ("USERNAME not UTF-8", 0x0006, vec![0xC3, 0x28], |m| {
            err(m.username())
        }),
        ("USERNAME of 509 bytes", 0x0006, vec![b'u'; 509], |m| {
            err(m.username())
        }),
        ("REALM of 764 bytes", 0x0014, vec![b'r'; 764], |m| {
            err(m.realm())
        }),
        ("NONCE of 764 bytes", 0x0015, vec![b'n'; 764], |m| {
            err(m.nonce())
        }),
        ("SOFTWARE not UTF-8", 0x8022, vec![0x80], |m| {
            err(m.software())
        }),
    ];
    for (name, ty, value, getter) in cases {
        let msg = frame(BINDING_REQUEST, TXID, &tlv(ty, &value));
        let m = Message::parse(&msg).unwrap_or_else(|e| panic!("{name}: framing is fine, got {e}"));
        assert_eq!(getter(&m), Some(ParseError::BadAttribute(ty)), "{name}");
    }

    // The boundaries on the valid side.
    let ok = |ty: u16, value: &[u8]| frame(BINDING_REQUEST, TXID, &tlv(ty, value));
    let msg = ok(0x0006, &[b'u'; 508]);
    assert!(matches!(Message::parse(&msg).unwrap().username(), Some(Ok(s)) if s.len() == 508));
    let msg = ok(0x0014, &[b'r'; 763]);
    assert!(matches!(Message::parse(&msg).unwrap().realm(), Some(Ok(s)) if s.len() == 763));
    let msg = ok(0x0009, &[0xFF, 0xFF, 0xFE, 99, b'x']);
    assert_eq!(
        Message::parse(&msg).unwrap().error_code(),
        Some(Ok((699, "x"))),
        "reserved bits are ignored"
    );
    let msg = ok(0x0009, &[0, 0, 3, 0]);
    assert_eq!(
        Message::parse(&msg).unwrap().error_code(),
        Some(Ok((300, "")))
    );
    let msg = ok(0x0018, &[0x80]);
    assert_eq!(Message::parse(&msg).unwrap().even_port(), Some(Ok(true)));
    let msg = ok(0x0019, &[17, 0, 0, 0]);
    assert_eq!(
        Message::parse(&msg).unwrap().requested_transport(),
        Some(Ok(17))
    );
    let msg = ok(0x0017, &[2, 0, 0, 0]);
    assert_eq!(
        Message::parse(&msg).unwrap().requested_address_family(),
        Some(Ok(AddressFamily::V6))
    );
    let msg = ok(0x0022, &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        Message::parse(&msg).unwrap().reservation_token(),
        Some(Ok([1, 2, 3, 4, 5, 6, 7, 8]))
    );
    let msg = ok(0x001A, &[]);
    assert!(Message::parse(&msg).unwrap().dont_fragment());
    let msg = ok(0x0001, &[0, 1, 0x0d, 0x96, 192, 0, 2, 1]);
    assert_eq!(
        Message::parse(&msg).unwrap().mapped_address(),
        Some(Ok(sock("192.0.2.1:3478")))
    );
}

#[test]
fn malformed_channel_data_table() {
    let cases: Vec<(&str, Vec<u8>, ParseError)> = vec![
        ("empty", vec![], ParseError::Truncated),
        ("3 bytes", vec![0x40, 0x00, 0x00], ParseError::Truncated),
        (
            "channel 0x3FFF",
            vec![0x3F, 0xFF, 0, 0],
            ParseError::BadChannelNumber,
        ),
        (
            "channel 0x8000",
            vec![0x80, 0x00, 0, 0],
            ParseError::BadChannelNumber,
        ),
        (
            "STUN header",
            RFC5769_SAMPLE_REQUEST.to_vec(),
            ParseError::BadChannelNumber,
        ),
        (
            "length past the datagram",
            vec![0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4],
            ParseError::BadLength,
        ),
        (
            "length 0xFFFF",
            vec![0x7F, 0xFF, 0xFF, 0xFF],
            ParseError::BadLength,
        ),
    ];
    for (name, bytes, want) in cases {
        assert_eq!(ChannelData::parse(&bytes).err(), Some(want), "{name}");
    }
    // Extra bytes after the data (UDP padding) are ignored.
    let cd = ChannelData::parse(&[0x4F, 0xFF, 0x00, 0x01, 0xAB, 0, 0, 0]).unwrap();
    assert_eq!((cd.channel, cd.data), (0x4FFF, &[0xAB][..]));
}
