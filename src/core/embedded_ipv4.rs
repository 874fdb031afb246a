//! The IPv4 addresses an IPv6 address embeds: where a datagram sent to it may really end up.
//!
//! The peer filter checks every one of them as IPv4 (CVE-2026-27624: `::ffff:10.0.0.1` must
//! not slip past the IPv4 deny list). The forms:
//!
//! - IPv4-mapped `::ffff:a.b.c.d` (RFC 4291 §2.5.5.2): dual-stack sockets send these as plain
//!   IPv4.
//! - IPv4-translated `::ffff:0:a.b.c.d` (RFC 2765 §2.1, SIIT).
//! - IPv4-compatible `::a.b.c.d` (RFC 4291 §2.5.5.1, deprecated), except `::` and `::1`, which
//!   are the unspecified and loopback addresses and are on the IPv6 list themselves.
//! - NAT64 (RFC 6052): a NAT64 gateway forwards to the IPv4 address it reads out of the
//!   destination. Where that address sits depends on the length of the gateway's prefix
//!   (RFC 6052 §2.2, [`rfc6052_ipv4`]), which the relay cannot know, so every reading the
//!   prefix allows is taken:
//!   - the well-known prefix `64:ff9b::/96` is defined at /96 only (RFC 6052 §2.1): one
//!     reading, the last 32 bits. Reading an address under it at /32../64 would only find the
//!     prefix's own zero bits, not a destination;
//!   - the local-use prefix `64:ff9b:1::/48` (RFC 8215) is carved into network-specific
//!     prefixes of any length from /48 to /96, so an address under it has four readings: /48,
//!     /56, /64 and /96. (/32 and /40 cannot occur: such a prefix would be wider than the
//!     block.) All four are checked, and all must be allowed. That refuses the common
//!     `64:ff9b:1::a.b.c.d` spelling (its /48 reading is `0.0.0.0`), which is the safe side:
//!     the relay does not know which length the operator's NAT64 uses.
//! - 6to4 `2002:AABB:CCDD::/48` (RFC 3056): bits 16..48, the tunnel end point.
//! - Teredo `2001:0::/32` (RFC 4380 §4): the server IPv4 (bits 32..64) and the client's public
//!   IPv4, stored inverted in the last 32 bits.
//!
//! Each prefix is matched exactly, so one address falls under one form. Nothing allocates:
//! the readings come back in a fixed array of [`MAX_EMBEDDED`].

use std::net::{Ipv4Addr, Ipv6Addr};

/// The most IPv4 readings one IPv6 address has: the four of the local-use NAT64 prefix.
pub const MAX_EMBEDDED: usize = 4;

/// The prefix lengths RFC 6052 §2.2 defines for an IPv4-embedded IPv6 address.
pub const RFC6052_LENGTHS: [u8; 6] = [32, 40, 48, 56, 64, 96];

/// The readings under the local-use prefix `64:ff9b:1::/48` (RFC 8215): every RFC 6052
/// length that fits inside a /48.
pub const LOCAL_USE_LENGTHS: [u8; 4] = [48, 56, 64, 96];

/// The IPv4 address RFC 6052 §2.2 places in `ip` for a NAT64 prefix of `prefix_len` bits, or
/// `None` for a length the RFC does not define. For /32 to /64 the 32 bits follow the prefix
/// but skip bits 64..71 (the "u" octet, kept zero for the host identifier format); for /96
/// they are the last 32 bits.
#[must_use]
pub fn rfc6052_ipv4(ip: Ipv6Addr, prefix_len: u8) -> Option<Ipv4Addr> {
    let x = u128::from(ip);
    if prefix_len == 96 {
        return Some(Ipv4Addr::from(x as u32));
    }
    if !RFC6052_LENGTHS.contains(&prefix_len) {
        return None;
    }
    // The address without its u octet: bits 0..63, then bits 72..127, as one 120-bit number.
    let without_u = ((x >> 64) << 56) | (x & ((1u128 << 56) - 1));
    // The 32 bits right after the prefix, counted from the top of those 120 bits.
    let shift = 120 - u32::from(prefix_len) - 32;
    Some(Ipv4Addr::from((without_u >> shift) as u32))
}

/// The IPv4 addresses `ip` embeds (see the module docs), at most [`MAX_EMBEDDED`]; none for an
/// address of no embedding form.
pub fn embedded_ipv4(ip: Ipv6Addr) -> impl Iterator<Item = Ipv4Addr> {
    let s = ip.segments();
    let join = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    let last = join(s[6], s[7]);
    let one = |a: Ipv4Addr| [Some(a), None, None, None];
    let found: [Option<Ipv4Addr>; MAX_EMBEDDED] = match s {
        // ::ffff:a.b.c.d (mapped) and ::ffff:0:a.b.c.d (translated)
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => one(last),
        // :: and ::1 are not IPv4-compatible addresses.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => [None; MAX_EMBEDDED],
        // ::a.b.c.d (compatible)
        [0, 0, 0, 0, 0, 0, _, _] => one(last),
        // 64:ff9b::/96 (NAT64 well-known prefix): /96 only.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => one(last),
        // 64:ff9b:1::/48 (NAT64 local use): every length a prefix inside it may have.
        [0x64, 0xff9b, 1, _, _, _, _, _] => LOCAL_USE_LENGTHS.map(|l| rfc6052_ipv4(ip, l)),
        // 2002::/16 (6to4)
        [0x2002, hi, lo, _, _, _, _, _] => one(join(hi, lo)),
        // 2001:0::/32 (Teredo): server, then inverted client address
        [0x2001, 0, hi, lo, _, _, _, _] => [
            Some(join(hi, lo)),
            Some(Ipv4Addr::from(!u32::from(last))),
            None,
            None,
        ],
        _ => [None; MAX_EMBEDDED],
    };
    found.into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn embedded(s: &str) -> Vec<Ipv4Addr> {
        embedded_ipv4(v6(s)).collect()
    }

    /// RFC 6052 §2.4, Table 2: 192.0.2.33 embedded under a prefix of each length.
    const RFC6052_EXAMPLES: [(u8, &str); 7] = [
        (32, "2001:db8:c000:221::"),
        (40, "2001:db8:1c0:2:21::"),
        (48, "2001:db8:122:c000:2:2100::"),
        (56, "2001:db8:122:3c0:0:221::"),
        (64, "2001:db8:122:344:c0:2:2100:0"),
        (96, "2001:db8:122:344::192.0.2.33"),
        (96, "64:ff9b::192.0.2.33"),
    ];

    #[test]
    fn rfc6052_table_2_reads_back_at_every_length() {
        for (len, addr) in RFC6052_EXAMPLES {
            assert_eq!(
                rfc6052_ipv4(v6(addr), len),
                Some(v4("192.0.2.33")),
                "/{len} {addr}"
            );
        }
        for len in [0, 33, 65, 95, 97, 128] {
            assert_eq!(rfc6052_ipv4(v6("64:ff9b::1"), len), None, "/{len}");
        }
    }

    #[test]
    fn rfc6052_skips_the_u_octet() {
        // Bits 64..71 set: no reading at /32../64 contains them.
        let ip = v6("64:ff9b:1:0:ff00::");
        for len in [32, 40, 48, 56, 64] {
            let got = rfc6052_ipv4(ip, len).unwrap();
            assert_eq!(u32::from(got) & 0xff, 0, "/{len} {got}");
        }
        assert_eq!(rfc6052_ipv4(ip, 64), Some(v4("0.0.0.0")));
    }

    #[test]
    fn local_use_prefix_yields_every_reading() {
        // One address whose four readings differ: /48 10.10.11.11, /56 10.11.11.12,
        // /64 11.11.12.12, /96 12.12.13.13 — built byte by byte after the /48 prefix.
        let ip = v6("64:ff9b:1:a0a:b:b0c:c0c:d0d");
        assert_eq!(rfc6052_ipv4(ip, 48), Some(v4("10.10.11.11")));
        assert_eq!(rfc6052_ipv4(ip, 56), Some(v4("10.11.11.12")));
        assert_eq!(rfc6052_ipv4(ip, 64), Some(v4("11.11.12.12")));
        assert_eq!(rfc6052_ipv4(ip, 96), Some(v4("12.12.13.13")));
        assert_eq!(
            embedded("64:ff9b:1:a0a:b:b0c:c0c:d0d"),
            [
                v4("10.10.11.11"),
                v4("10.11.11.12"),
                v4("11.11.12.12"),
                v4("12.12.13.13")
            ]
        );
        // The usual /96 spelling reads as 0.0.0.0 at /48 and /56, and 0.0.0.10 at /64.
        assert_eq!(
            embedded("64:ff9b:1::a00:1"),
            [v4("0.0.0.0"), v4("0.0.0.0"), v4("0.0.0.10"), v4("10.0.0.1")]
        );
        // Whatever the bits between, the /96 reading is always last.
        assert_eq!(
            embedded("64:ff9b:1:ffff:ffff:ffff:a00:1").last(),
            Some(&v4("10.0.0.1"))
        );
        // A /48 NAT64 gateway's spelling of 10.0.0.1.
        assert!(embedded("64:ff9b:1:a00:0:100::").contains(&v4("10.0.0.1")));
        // A /56 gateway (prefix 64:ff9b:1:ab00::/56).
        assert!(embedded("64:ff9b:1:ab0a:0:1::").contains(&v4("10.0.0.1")));
        // A /64 gateway (prefix 64:ff9b:1:abcd::/64).
        assert!(embedded("64:ff9b:1:abcd:a:0:100:0").contains(&v4("10.0.0.1")));
    }

    #[test]
    fn well_known_prefix_is_read_at_96_only() {
        assert_eq!(embedded("64:ff9b::c000:221"), [v4("192.0.2.33")]);
        assert_eq!(embedded("64:ff9b::a00:1"), [v4("10.0.0.1")]);
        // Outside 64:ff9b::/96 but inside 64:ff9b::/32: not NAT64 at all.
        assert!(embedded("64:ff9b:0:0:1::a00:1").is_empty());
        assert!(embedded("64:ff9b:a00:1::").is_empty());
    }

    #[test]
    fn other_forms() {
        assert_eq!(embedded("::ffff:10.0.0.1"), [v4("10.0.0.1")]);
        assert_eq!(embedded("::ffff:0:10.0.0.1"), [v4("10.0.0.1")]);
        assert_eq!(embedded("::10.0.0.1"), [v4("10.0.0.1")]);
        assert_eq!(embedded("::2"), [v4("0.0.0.2")]);
        assert!(embedded("::").is_empty());
        assert!(embedded("::1").is_empty());
        assert_eq!(embedded("2002:a00:1::"), [v4("10.0.0.1")]);
        assert_eq!(embedded("2002:c000:204:1::1"), [v4("192.0.2.4")]);
        // The well-known Teredo example: server 65.54.227.120, client 192.0.2.45.
        assert_eq!(
            embedded("2001:0:4136:e378:8000:63bf:3fff:fdd2"),
            [v4("65.54.227.120"), v4("192.0.2.45")]
        );
        for s in [
            "2607:f8b0::1",
            "64:ff9b:2::a00:1",
            "2001:1::a00:1",
            "2001:db8::a00:1",
            "2003::",
            "::1:0:0:a00:1",
            "::fffe:a00:1",
            "fe80::ffff:a00:1",
        ] {
            assert!(embedded(s).is_empty(), "{s}");
        }
    }
}
