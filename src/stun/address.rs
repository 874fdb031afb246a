//! (XOR-)MAPPED-ADDRESS encoding (RFC 8489 §14.1–14.2), shared by XOR-PEER-ADDRESS and
//! XOR-RELAYED-ADDRESS (RFC 8656 §18.3, §18.5).
//!
//! The XOR exists because some NATs rewrote any 32-bit value that looked like their public
//! address inside payloads; XOR with the magic cookie (and, for IPv6, the transaction id)
//! hides it.

use super::{TransactionId, MAGIC_COOKIE};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Address family codes used by address attributes and REQUESTED-ADDRESS-FAMILY.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    V4,
    V6,
}

impl AddressFamily {
    pub fn from_u8(v: u8) -> Option<AddressFamily> {
        match v {
            0x01 => Some(AddressFamily::V4),
            0x02 => Some(AddressFamily::V6),
            _ => None,
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            AddressFamily::V4 => 0x01,
            AddressFamily::V6 => 0x02,
        }
    }

    pub fn of(addr: &SocketAddr) -> AddressFamily {
        match addr {
            SocketAddr::V4(_) => AddressFamily::V4,
            SocketAddr::V6(_) => AddressFamily::V6,
        }
    }
}

/// Encoded length of an address attribute's value.
pub fn encoded_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

/// Decodes a plain (non-XOR) address value, as in MAPPED-ADDRESS.
pub fn decode_plain(v: &[u8]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]);
    match (AddressFamily::from_u8(v[1])?, v.len()) {
        (AddressFamily::V4, 8) => {
            let ip = Ipv4Addr::new(v[4], v[5], v[6], v[7]);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        (AddressFamily::V6, 20) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&v[4..20]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => None,
    }
}

/// Decodes an XOR-…-ADDRESS value.
pub fn decode_xor(v: &[u8], txid: &TransactionId) -> Option<SocketAddr> {
    let plain = decode_plain(v)?;
    Some(xor(plain, txid))
}

/// Writes a plain address value into `out` (which must be `encoded_len` long).
pub fn encode_plain(addr: &SocketAddr, out: &mut [u8]) {
    out[0] = 0;
    out[1] = AddressFamily::of(addr).to_u8();
    out[2..4].copy_from_slice(&addr.port().to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => out[4..8].copy_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out[4..20].copy_from_slice(&ip.octets()),
    }
}

/// Writes an XOR address value into `out` (which must be `encoded_len` long).
pub fn encode_xor(addr: &SocketAddr, txid: &TransactionId, out: &mut [u8]) {
    encode_plain(&xor(*addr, txid), out);
}

/// XOR is its own inverse, so one function both encodes and decodes.
fn xor(addr: SocketAddr, txid: &TransactionId) -> SocketAddr {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match addr.ip() {
        IpAddr::V4(ip) => {
            let o = ip.octets();
            let x = [
                o[0] ^ cookie[0],
                o[1] ^ cookie[1],
                o[2] ^ cookie[2],
                o[3] ^ cookie[3],
            ];
            SocketAddr::new(IpAddr::V4(Ipv4Addr::from(x)), port)
        }
        IpAddr::V6(ip) => {
            let mut o = ip.octets();
            for (i, b) in o.iter_mut().enumerate() {
                *b ^= if i < 4 { cookie[i] } else { txid.0[i - 4] };
            }
            SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_round_trip_both_families() {
        let txid = TransactionId([7; 12]);
        for a in ["192.0.2.1:32853", "[2001:db8::1]:443"] {
            let a: SocketAddr = a.parse().unwrap();
            let mut buf = [0u8; 20];
            let n = encoded_len(&a);
            encode_xor(&a, &txid, &mut buf[..n]);
            assert_eq!(decode_xor(&buf[..n], &txid), Some(a));
        }
    }

    #[test]
    fn rejects_bad_family_and_length() {
        assert_eq!(decode_plain(&[0, 3, 0, 1, 1, 2, 3, 4]), None);
        assert_eq!(decode_plain(&[0, 1, 0, 1, 1, 2, 3]), None);
        assert_eq!(decode_plain(&[0, 2, 0, 1, 1, 2, 3, 4]), None);
        assert_eq!(decode_plain(&[]), None);
    }
}
