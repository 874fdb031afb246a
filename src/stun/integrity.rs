//! MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5), MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256,
//! §14.6) and FINGERPRINT (CRC-32, §14.7).
//!
//! Both cover the message "as if it ended" with the attribute: the header's length field is
//! rewritten to include the attribute before hashing, which is why they are computed over a
//! header copy plus the body rather than over a plain slice.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Length of the MESSAGE-INTEGRITY value (an HMAC-SHA1).
pub const INTEGRITY_LEN: usize = 20;
/// Length of a full MESSAGE-INTEGRITY-SHA256 value (an HMAC-SHA256); what we send.
pub const INTEGRITY_SHA256_MAX: usize = 32;
/// The shortest truncation of MESSAGE-INTEGRITY-SHA256 a receiver accepts (RFC 8489 §14.6).
pub const INTEGRITY_SHA256_MIN: usize = 16;
/// XORed into the CRC so a FINGERPRINT cannot be confused with a CRC of other protocols
/// that share the port (RFC 8489 §14.7).
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// HMAC-SHA1 over `msg` (header and attributes preceding MESSAGE-INTEGRITY), with the header's
/// length field replaced by `length_field`.
pub fn hmac_sha1(key: &[u8], msg: &[u8], length_field: u16) -> [u8; INTEGRITY_LEN] {
    // Invariant: HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&msg[..2]);
    mac.update(&length_field.to_be_bytes());
    mac.update(&msg[4..]);
    mac.finalize().into_bytes().into()
}

/// Constant-time check of a MESSAGE-INTEGRITY value, so a forger learns nothing from timing.
pub fn verify_hmac_sha1(key: &[u8], msg: &[u8], length_field: u16, expected: &[u8]) -> bool {
    expected.len() == INTEGRITY_LEN && hmac_sha1(key, msg, length_field).ct_eq(expected).into()
}

/// The FINGERPRINT value for `msg` (everything before the FINGERPRINT attribute), with the
/// header's length field replaced by `length_field`.
pub fn fingerprint(msg: &[u8], length_field: u16) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&msg[..2]);
    h.update(&length_field.to_be_bytes());
    h.update(&msg[4..]);
    h.finalize() ^ FINGERPRINT_XOR
}

/// HMAC-SHA256 over `msg` (everything before MESSAGE-INTEGRITY-SHA256), with the header's
/// length field replaced by `length_field` (RFC 8489 §14.6).
pub fn hmac_sha256(key: &[u8], msg: &[u8], length_field: u16) -> [u8; INTEGRITY_SHA256_MAX] {
    // Invariant: HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&msg[..2]);
    mac.update(&length_field.to_be_bytes());
    mac.update(&msg[4..]);
    mac.finalize().into_bytes().into()
}

/// Constant-time check of a MESSAGE-INTEGRITY-SHA256 value, which a sender may truncate to
/// 16–32 bytes in steps of 4 (RFC 8489 §14.6): the leading bytes of the HMAC are compared.
pub fn verify_hmac_sha256(key: &[u8], msg: &[u8], length_field: u16, expected: &[u8]) -> bool {
    let n = expected.len();
    (INTEGRITY_SHA256_MIN..=INTEGRITY_SHA256_MAX).contains(&n)
        && n % 4 == 0
        && hmac_sha256(key, msg, length_field)[..n]
            .ct_eq(expected)
            .into()
}
