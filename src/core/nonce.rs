//! Stateless, self-validating NONCEs for the long-term credential mechanism (RFC 8489 §9.2).
//!
//! RFC 8489 §9.2 makes every authenticated request carry a NONCE the server handed out in a
//! 401 (or 438) response, and lets the server decide when a nonce stops being valid
//! (§9.2.4: "If the NONCE is no longer valid" → 438 Stale Nonce). The usual implementation keeps
//! a table of issued nonces — but then any unauthenticated packet from a spoofed address makes
//! the server allocate state, which is exactly what a relay exposed to the Internet must not do.
//! The same holds for TURN REST API deployments (draft-uberti-behave-turn-rest-00), where the
//! server knows nothing about a client until its credentials check out.
//!
//! So the nonce carries its own proof: the issue time and a MAC over (issue time, client
//! address) under a server secret ([`NonceKey`]). Checking one needs no lookup and no memory:
//! the MAC shows *we* issued it, *to this transport address*, and the time shows how old it is.
//! Binding the client address means a nonce sniffed on one 5-tuple cannot be replayed from
//! another, and a NAT rebinding simply costs the client one 438 round trip.
//!
//! # Format
//!
//! [`NONCE_LEN`] = 53 ASCII characters:
//!
//! ```text
//! 13 chars: the "nonce cookie" of RFC 8489 §9.2: "obMatJos2" + base64 of the 24 security
//!           feature bits (§18.1): "gAAA" (Password algorithms) or "wAAA" (and Username
//!           anonymity)
//! 16 hex:   issue time, u64 big-endian, seconds since the Unix epoch
//! 24 hex:   HMAC-SHA1(key, ts_be || features (3 bytes) || client IP octets (4 or 16) ||
//!           client port_be)[..12]
//! ```
//!
//! The cookie tells an RFC 8489 client that this server offers PASSWORD-ALGORITHMS (and, when
//! configured, USERHASH); an RFC 5389 client treats the whole nonce as opaque and echoes it.
//! The feature bits are under the MAC, so an on-path attacker who rewrites them (to bid the
//! client down to MD5, or to make it reveal its username) turns the nonce invalid: the server
//! answers the client's next request with 438, never with a weaker exchange (§9.2.1).
//! Everything is inside RFC 8489's NONCE grammar (qdtext, fewer than 128 characters, §14.10).
//! A 96-bit truncated MAC is far beyond what an online forger can search within a nonce
//! lifetime.
//!
//! # Status mapping
//!
//! [`NonceStatus::Stale`] and [`NonceStatus::Invalid`] are both "no longer valid" in RFC 8489
//! §9.2.4 terms, answered with 438 (Stale Nonce) and a fresh nonce; the distinction (an expired
//! nonce of ours vs. one we never issued to this address) is for logs and metrics.
//!
//! Sans-IO: the caller passes `unix_now` and fills the key from the OS RNG; nothing here reads
//! a clock, allocates, or panics on what a client sends.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// Number of hex characters encoding the issue time (a `u64`).
const TS_HEX: usize = 16;
/// Bytes of the HMAC-SHA1 tag kept in the nonce (96 bits).
const MAC_BYTES: usize = 12;

/// "obMatJos2": the start of RFC 8489's nonce cookie (§9.2).
pub const COOKIE_MAGIC: &[u8; 9] = b"obMatJos2";
/// The whole nonce cookie: the magic and 4 base64 characters of security feature bits.
pub const COOKIE_LEN: usize = 13;

/// Length of every nonce this module issues: the 13-character cookie, 16 hex chars of time
/// and 24 hex chars of MAC. Fixed length and ASCII only, well under RFC 8489's 128-character
/// NONCE limit (§14.10).
pub const NONCE_LEN: usize = COOKIE_LEN + TS_HEX + 2 * MAC_BYTES;
const _: () = assert!(NONCE_LEN < 128, "RFC 8489 §14.10: NONCE < 128 characters");

/// How far in the future (seconds) an issue time may lie before the nonce is rejected as
/// [`NonceStatus::Invalid`]: tolerates small clock steps between the shards that issue and
/// check, but not a nonce minted with a bogus time.
const MAX_FUTURE_SKEW: u64 = 60;

/// The STUN Security Features of RFC 8489 §18.1 that this server uses: bit 0 (the most
/// significant bit of the first byte) "Password algorithms", bit 1 "Username anonymity".
/// Only these two are defined; the other 22 bits are always zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecurityFeatures {
    /// The server lists PASSWORD-ALGORITHMS in its 401/438 and checks it (§9.2.4).
    pub password_algorithms: bool,
    /// The server accepts USERHASH, and RFC 8489 clients must send it (§9.2.5).
    pub username_anonymity: bool,
}

impl SecurityFeatures {
    fn to_bytes(self) -> [u8; 3] {
        [
            (u8::from(self.password_algorithms) << 7) | (u8::from(self.username_anonymity) << 6),
            0,
            0,
        ]
    }

    fn from_bytes(b: [u8; 3]) -> Option<SecurityFeatures> {
        if b[0] & 0x3f != 0 || b[1] != 0 || b[2] != 0 {
            return None;
        }
        Some(SecurityFeatures {
            password_algorithms: b[0] & 0x80 != 0,
            username_anonymity: b[0] & 0x40 != 0,
        })
    }

    /// The feature bits a nonce's cookie claims, `None` without a well-formed cookie. Not
    /// authenticated: trust them only once [`NonceKey::check`] says the nonce is ours.
    pub fn of_nonce(nonce: &[u8]) -> Option<SecurityFeatures> {
        let cookie = nonce.get(..COOKIE_LEN)?;
        if &cookie[..COOKIE_MAGIC.len()] != COOKIE_MAGIC {
            return None;
        }
        let mut bits = [0u8; 3];
        let n = base64::engine::general_purpose::STANDARD
            .decode_slice(&cookie[COOKIE_MAGIC.len()..], &mut bits)
            .ok()?;
        if n != 3 {
            return None;
        }
        let features = SecurityFeatures::from_bytes(bits)?;
        // Only the canonical encoding is ours (base64 is not unique in its last character).
        (features.cookie_b64() == cookie[COOKIE_MAGIC.len()..]).then_some(features)
    }

    fn cookie_b64(self) -> [u8; 4] {
        let mut out = [0u8; 4];
        // Invariant: 3 bytes encode to exactly 4 base64 characters.
        base64::engine::general_purpose::STANDARD
            .encode_slice(self.to_bytes(), &mut out)
            .expect("4 bytes hold base64 of 3");
        out
    }
}

/// The server secret that MACs nonces. Every worker that may check a nonce must hold the same
/// key; replacing it invalidates all outstanding nonces (clients recover with one 438).
#[derive(Clone)]
pub struct NonceKey {
    /// HMAC-SHA1 already keyed with the 32-byte secret: cloning it per nonce skips re-deriving
    /// the inner/outer pads.
    mac: Hmac<Sha1>,
}

impl fmt::Debug for NonceKey {
    /// Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// Result of [`NonceKey::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceStatus {
    /// Issued by us, to this client address, within the lifetime.
    Valid,
    /// Issued by us to this client address, but older than the lifetime: answer 438 with a
    /// fresh nonce (RFC 8489 §9.2.4).
    Stale,
    /// Not a nonce we issued to this address: wrong length, not lowercase hex, MAC mismatch
    /// (other client address, other server key, forged or tampered), or an issue time more
    /// than 60 s in the future.
    Invalid,
}

impl NonceKey {
    /// Creates the key from a 32-byte secret. The shell fills it from the OS RNG at startup;
    /// the core never generates randomness itself.
    pub fn new(secret: [u8; 32]) -> NonceKey {
        NonceKey {
            // HMAC accepts any key length, so this cannot fail.
            mac: <Hmac<Sha1> as Mac>::new_from_slice(&secret).expect("HMAC takes any key length"),
        }
    }

    /// A secret value derived from the key for another use (`context` names it), e.g. the
    /// hash key of the pre-authentication rate limiter: unknown to clients, unlike anything
    /// derived from a seed whose generator's outputs they see.
    pub fn derive_u64(&self, context: &[u8]) -> u64 {
        let mut mac = self.mac.clone();
        mac.update(b"turnd derive\0");
        mac.update(context);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 8];
        out.copy_from_slice(&full[..8]);
        u64::from_be_bytes(out)
    }

    /// The truncated MAC binding `issued` to `client`.
    fn tag(&self, issued: u64, features: SecurityFeatures, client: SocketAddr) -> [u8; MAC_BYTES] {
        let mut mac = self.mac.clone();
        mac.update(&issued.to_be_bytes());
        mac.update(&features.to_bytes());
        match client.ip() {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&client.port().to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; MAC_BYTES];
        tag.copy_from_slice(&full[..MAC_BYTES]);
        tag
    }

    /// Writes a fresh nonce for `client` issued at `unix_now` into `out` and returns it as
    /// `&str`. No heap: the caller owns the buffer (typically on the stack while building the
    /// 401/438 response).
    pub fn issue<'a>(
        &self,
        features: SecurityFeatures,
        unix_now: u64,
        client: SocketAddr,
        out: &'a mut [u8; NONCE_LEN],
    ) -> &'a str {
        let (cookie, rest) = out.split_at_mut(COOKIE_LEN);
        cookie[..COOKIE_MAGIC.len()].copy_from_slice(COOKIE_MAGIC);
        cookie[COOKIE_MAGIC.len()..].copy_from_slice(&features.cookie_b64());
        let (ts, mac) = rest.split_at_mut(TS_HEX);
        encode_hex(&unix_now.to_be_bytes(), ts);
        encode_hex(&self.tag(unix_now, features, client), mac);
        let out: &'a [u8; NONCE_LEN] = out;
        // Only ASCII (the cookie, base64, lowercase hex) was written: always valid UTF-8.
        std::str::from_utf8(out).expect("the nonce is ASCII")
    }

    /// Checks a nonce the client echoed in its NONCE attribute (raw attribute bytes: any
    /// content, including non-UTF-8, just yields [`NonceStatus::Invalid`]).
    ///
    /// The MAC is compared in constant time, and checked before the time fields are trusted, so
    /// `Stale` is only reported for nonces we really issued to `client`. A nonce is stale once
    /// `unix_now > issued + lifetime_secs`.
    pub fn check(
        &self,
        nonce: &[u8],
        unix_now: u64,
        client: SocketAddr,
        lifetime_secs: u64,
    ) -> NonceStatus {
        if nonce.len() != NONCE_LEN {
            return NonceStatus::Invalid;
        }
        let Some(features) = SecurityFeatures::of_nonce(nonce) else {
            return NonceStatus::Invalid;
        };
        let (ts_hex, mac_hex) = nonce[COOKIE_LEN..].split_at(TS_HEX);
        let mut ts = [0u8; 8];
        let mut mac = [0u8; MAC_BYTES];
        if decode_hex(ts_hex, &mut ts).is_none() || decode_hex(mac_hex, &mut mac).is_none() {
            return NonceStatus::Invalid;
        }
        let issued = u64::from_be_bytes(ts);
        if !bool::from(self.tag(issued, features, client).ct_eq(&mac)) {
            return NonceStatus::Invalid;
        }
        if issued > unix_now.saturating_add(MAX_FUTURE_SKEW) {
            return NonceStatus::Invalid;
        }
        if unix_now > issued.saturating_add(lifetime_secs) {
            return NonceStatus::Stale;
        }
        NonceStatus::Valid
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes` into `out` (`out.len() == 2 * bytes.len()`).
fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0x0f)];
    }
}

/// Strict lowercase hex decode (we only issue lowercase, so anything else is not ours).
/// `None` unless `hex.len() == 2 * out.len()` and every character is `[0-9a-f]`.
fn decode_hex(hex: &[u8], out: &mut [u8]) -> Option<()> {
    if hex.len() != 2 * out.len() {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(())
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const NOW: u64 = 1_700_000_000;
    const LIFETIME: u64 = 600;

    fn key() -> NonceKey {
        NonceKey::new([7u8; 32])
    }

    fn v4(a: u8, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, a)), port)
    }

    const PA: SecurityFeatures = SecurityFeatures {
        password_algorithms: true,
        username_anonymity: false,
    };
    const TS: std::ops::Range<usize> = COOKIE_LEN..COOKIE_LEN + TS_HEX;

    fn issue(key: &NonceKey, now: u64, client: SocketAddr) -> [u8; NONCE_LEN] {
        let mut buf = [0u8; NONCE_LEN];
        key.issue(PA, now, client, &mut buf);
        buf
    }

    #[test]
    fn issue_format() {
        let mut buf = [0u8; NONCE_LEN];
        let s = key().issue(PA, NOW, v4(1, 5000), &mut buf);
        assert_eq!(s.len(), NONCE_LEN);
        assert!(s.starts_with("obMatJos2gAAA"), "{s}");
        assert!(s[COOKIE_LEN..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(&s[TS], format!("{NOW:016x}"));
        let both = SecurityFeatures {
            password_algorithms: true,
            username_anonymity: true,
        };
        let s = key().issue(both, NOW, v4(1, 5000), &mut buf);
        assert!(s.starts_with("obMatJos2wAAA"), "{s}");
        assert_eq!(SecurityFeatures::of_nonce(s.as_bytes()), Some(both));
        let s = key().issue(SecurityFeatures::default(), NOW, v4(1, 5000), &mut buf);
        assert!(s.starts_with("obMatJos2AAAA"), "{s}");
    }

    #[test]
    fn feature_bits_are_under_the_mac() {
        // A bid-down attacker flips the cookie's bits: the nonce is no longer ours.
        let k = key();
        let c = v4(1, 5000);
        let n = issue(&k, NOW, c);
        assert_eq!(SecurityFeatures::of_nonce(&n), Some(PA));
        for cookie in [&b"obMatJos2AAAA"[..], b"obMatJos2wAAA", b"obMatJos2gAAB"] {
            let mut t = n;
            t[..COOKIE_LEN].copy_from_slice(cookie);
            assert_eq!(k.check(&t, NOW, c, LIFETIME), NonceStatus::Invalid);
        }
        assert_eq!(SecurityFeatures::of_nonce(b"obMatJos2gAA"), None);
        assert_eq!(SecurityFeatures::of_nonce(b"obMatJos2g==="), None);
        assert_eq!(SecurityFeatures::of_nonce(b"0123456789abcdef"), None);
    }

    #[test]
    fn issue_is_deterministic_and_key_dependent() {
        let c = v4(1, 5000);
        assert_eq!(issue(&key(), NOW, c), issue(&key(), NOW, c));
        assert_ne!(
            issue(&key(), NOW, c),
            issue(&NonceKey::new([8u8; 32]), NOW, c)
        );
        assert_ne!(issue(&key(), NOW, c), issue(&key(), NOW + 1, c));
    }

    #[test]
    fn issue_then_check_valid() {
        let k = key();
        let c = v4(1, 5000);
        let n = issue(&k, NOW, c);
        assert_eq!(k.check(&n, NOW, c, LIFETIME), NonceStatus::Valid);
        assert_eq!(k.check(&n, NOW + LIFETIME, c, LIFETIME), NonceStatus::Valid);
        // Clock stepped back a little between issue and check: still fine.
        assert_eq!(k.check(&n, NOW - 30, c, LIFETIME), NonceStatus::Valid);
    }

    #[test]
    fn stale_after_lifetime() {
        let k = key();
        let c = v4(1, 5000);
        let n = issue(&k, NOW, c);
        assert_eq!(
            k.check(&n, NOW + LIFETIME + 1, c, LIFETIME),
            NonceStatus::Stale
        );
        assert_eq!(k.check(&n, u64::MAX, c, LIFETIME), NonceStatus::Stale);
        assert_eq!(k.check(&n, NOW + 1, c, 0), NonceStatus::Stale);
        // A huge lifetime must not overflow.
        assert_eq!(k.check(&n, u64::MAX, c, u64::MAX), NonceStatus::Valid);
    }

    #[test]
    fn far_future_issue_time_is_invalid() {
        let k = key();
        let c = v4(1, 5000);
        let n = issue(&k, NOW + 61, c);
        assert_eq!(k.check(&n, NOW, c, LIFETIME), NonceStatus::Invalid);
        let n = issue(&k, NOW + 60, c);
        assert_eq!(k.check(&n, NOW, c, LIFETIME), NonceStatus::Valid);
        let n = issue(&k, u64::MAX, c);
        assert_eq!(k.check(&n, u64::MAX - 1, c, LIFETIME), NonceStatus::Valid);
        assert_eq!(k.check(&n, 0, c, LIFETIME), NonceStatus::Invalid);
    }

    #[test]
    fn other_client_address_is_invalid() {
        let k = key();
        let n = issue(&k, NOW, v4(1, 5000));
        assert_eq!(
            k.check(&n, NOW, v4(1, 5001), LIFETIME),
            NonceStatus::Invalid
        );
        assert_eq!(
            k.check(&n, NOW, v4(2, 5000), LIFETIME),
            NonceStatus::Invalid
        );
        let mapped = SocketAddr::new(
            IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()),
            5000,
        );
        assert_eq!(k.check(&n, NOW, mapped, LIFETIME), NonceStatus::Invalid);
        // A different server key does not accept it either.
        let other = NonceKey::new([8u8; 32]);
        assert_eq!(
            other.check(&n, NOW, v4(1, 5000), LIFETIME),
            NonceStatus::Invalid
        );
    }

    #[test]
    fn ipv6_client() {
        let k = key();
        let c = SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            3478,
        );
        let n = issue(&k, NOW, c);
        assert_eq!(k.check(&n, NOW, c, LIFETIME), NonceStatus::Valid);
        assert_eq!(
            k.check(&n, NOW + LIFETIME + 1, c, LIFETIME),
            NonceStatus::Stale
        );
        let c2 = SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
            3478,
        );
        assert_eq!(k.check(&n, NOW, c2, LIFETIME), NonceStatus::Invalid);
        // Scope id / flow info are not part of the binding.
        let scoped = SocketAddr::V6(std::net::SocketAddrV6::new(
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
            3478,
            9,
            3,
        ));
        assert_eq!(k.check(&n, NOW, scoped, LIFETIME), NonceStatus::Valid);
    }

    #[test]
    fn tampered_byte_is_invalid() {
        let k = key();
        let c = v4(1, 5000);
        let n = issue(&k, NOW, c);
        for i in 0..NONCE_LEN {
            for replacement in [b'0', b'f', b'A', b'g', 0xff] {
                if n[i] == replacement {
                    continue;
                }
                let mut t = n;
                t[i] = replacement;
                assert_eq!(k.check(&t, NOW, c, LIFETIME), NonceStatus::Invalid, "{i}");
            }
        }
        // Moving the timestamp (e.g. to extend the lifetime) breaks the MAC.
        let mut t = n;
        t[TS].copy_from_slice(format!("{:016x}", NOW + 100).as_bytes());
        assert_eq!(
            k.check(&t, NOW + LIFETIME + 50, c, LIFETIME),
            NonceStatus::Invalid
        );
    }

    #[test]
    fn uppercase_is_invalid() {
        let k = key();
        let c = v4(1, 5000);
        let mut n = issue(&k, NOW, c);
        n.make_ascii_uppercase();
        assert!(n.iter().any(|b| b.is_ascii_uppercase()));
        assert_eq!(k.check(&n, NOW, c, LIFETIME), NonceStatus::Invalid);
    }

    #[test]
    fn garbage_never_panics() {
        let k = key();
        let c = v4(1, 5000);
        let n = issue(&k, NOW, c);
        let mut long = n.to_vec();
        long.push(b'0');
        let multibyte = "é".repeat(NONCE_LEN / 2) + "0";
        assert_eq!(multibyte.len(), NONCE_LEN);
        let inputs: [&[u8]; 8] = [
            b"",
            &n[..NONCE_LEN - 1],
            &long,
            &[0xffu8; NONCE_LEN],
            &[0u8; NONCE_LEN],
            multibyte.as_bytes(),
            b"obMatJos2gAAAadl7W7PeDU4hKE72jda",
            b"0000000000000000 00000000000000000000000",
        ];
        for input in inputs {
            assert_eq!(k.check(input, NOW, c, LIFETIME), NonceStatus::Invalid);
        }
        // Every byte value in every position, and every length up to 2 * NONCE_LEN.
        for len in 0..=2 * NONCE_LEN {
            for b in 0..=255u8 {
                let v = [b; 2 * NONCE_LEN];
                assert_eq!(k.check(&v[..len], NOW, c, LIFETIME), NonceStatus::Invalid);
            }
        }
    }

    #[test]
    fn derived_values_depend_on_key_and_context() {
        let a = key().derive_u64(b"binding");
        assert_eq!(a, key().derive_u64(b"binding"));
        assert_ne!(a, key().derive_u64(b"unauthenticated"));
        assert_ne!(a, NonceKey::new([8u8; 32]).derive_u64(b"binding"));
    }

    #[test]
    fn debug_hides_secret() {
        assert_eq!(format!("{:?}", key()), "NonceKey(..)");
    }
}
