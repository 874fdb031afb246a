//! An RFC 8489 client for the raw tests, written independently of the crate's codec: it reads
//! the nonce cookie and PASSWORD-ALGORITHMS of the 401, echoes the list, picks an algorithm,
//! sends USERNAME or USERHASH, and signs with MESSAGE-INTEGRITY-SHA256 (RFC 8489 §9.2.5,
//! §14.6). Responses are checked with MESSAGE-INTEGRITY-SHA256 under the same key.
//!
//! Included with `#[path = "raw/rfc8489.rs"]` next to `mod raw;`.

#![allow(dead_code)]

use super::raw::{
    assert_error, encode, method_of, msg_type, new_txid, Attr, Client, Parsed, ALLOCATE, A_NONCE,
    A_REALM, A_USERNAME, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, REQUEST,
};
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

pub const A_MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
pub const A_PASSWORD_ALGORITHM: u16 = 0x001D;
pub const A_USERHASH: u16 = 0x001E;
pub const A_PASSWORD_ALGORITHMS: u16 = 0x8002;

pub const ALG_MD5: u16 = 0x0001;
pub const ALG_SHA256: u16 = 0x0002;

/// `SHA-256(username ":" realm ":" password)` (RFC 8489 §9.2.2).
pub fn sha256_key(username: &str, realm: &str, password: &str) -> Vec<u8> {
    Sha256::digest(format!("{username}:{realm}:{password}").as_bytes()).to_vec()
}

/// `MD5(username ":" realm ":" password)`.
pub fn md5_key(username: &str, realm: &str, password: &str) -> Vec<u8> {
    Md5::digest(format!("{username}:{realm}:{password}").as_bytes()).to_vec()
}

/// USERHASH: `SHA-256(username ":" realm)` (RFC 8489 §14.4).
pub fn userhash(username: &str, realm: &str) -> Vec<u8> {
    Sha256::digest(format!("{username}:{realm}").as_bytes()).to_vec()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, value: &[u8]) {
    buf.extend_from_slice(&ty.to_be_bytes());
    buf.extend_from_slice(&(value.len() as u16).to_be_bytes());
    buf.extend_from_slice(value);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

fn set_length(buf: &mut [u8], body: usize) {
    buf[2..4].copy_from_slice(&(body as u16).to_be_bytes());
}

/// Verifies MESSAGE-INTEGRITY-SHA256 (full or truncated) with `key`. False when absent.
pub fn verify_sha256(p: &Parsed, key: &[u8]) -> bool {
    let Some(mi) = p.attrs.iter().find(|a| a.ty == A_MESSAGE_INTEGRITY_SHA256) else {
        return false;
    };
    let n = mi.value.len();
    let mut head = p.raw[..mi.at].to_vec();
    set_length(&mut head, mi.at + 4 + n - 20);
    (16..=32).contains(&n) && hmac_sha256(key, &head)[..n] == mi.value[..]
}

/// The security feature bits of a nonce cookie ("obMatJos2" + 4 base64 characters), or None.
pub fn cookie_features(nonce: &[u8]) -> Option<[u8; 3]> {
    use base64::Engine as _;
    let rest = nonce.strip_prefix(b"obMatJos2")?;
    let bits = base64::engine::general_purpose::STANDARD
        .decode(rest.get(..4)?)
        .ok()?;
    bits.try_into().ok()
}

/// An RFC 8489 client over a raw [`Client`]'s socket and credentials.
pub struct ModernClient {
    pub inner: Client,
    pub algorithm: u16,
    /// Send USERHASH instead of USERNAME.
    pub hashed: bool,
    /// PASSWORD-ALGORITHMS from the last 401/438, echoed in requests.
    pub algorithms: Option<Vec<u8>>,
}

impl ModernClient {
    pub fn new(inner: Client, algorithm: u16) -> ModernClient {
        ModernClient {
            inner,
            algorithm,
            hashed: false,
            algorithms: None,
        }
    }

    pub fn key(&self) -> Vec<u8> {
        let c = &self.inner;
        match self.algorithm {
            ALG_SHA256 => sha256_key(&c.username, &c.realm, &c.password),
            _ => md5_key(&c.username, &c.realm, &c.password),
        }
    }

    /// The 401 dance's first half: REALM, NONCE and PASSWORD-ALGORITHMS.
    #[track_caller]
    pub fn challenge(&mut self) -> Parsed {
        let r = self.inner.request_plain(ALLOCATE, &[super::raw::udp()]);
        assert_error(&r, ALLOCATE, 401);
        self.take_challenge(&r);
        r
    }

    fn take_challenge(&mut self, r: &Parsed) {
        self.inner.realm = r.realm().expect("REALM");
        self.inner.nonce = Some(r.nonce().expect("NONCE"));
        self.algorithms = r.get(A_PASSWORD_ALGORITHMS).map(<[u8]>::to_vec);
    }

    /// A signed request's bytes: `attrs`, USERNAME or USERHASH, REALM, NONCE,
    /// PASSWORD-ALGORITHMS (as received), PASSWORD-ALGORITHM, MESSAGE-INTEGRITY-SHA256.
    pub fn signed(&self, method: u16, attrs: &[Attr]) -> Vec<u8> {
        self.signed_with(
            method,
            attrs,
            self.algorithms.as_deref(),
            Some(self.algorithm),
        )
    }

    /// [`ModernClient::signed`] with PASSWORD-ALGORITHMS and PASSWORD-ALGORITHM chosen by the
    /// caller (to play a bid-down attacker's victim).
    pub fn signed_with(
        &self,
        method: u16,
        attrs: &[Attr],
        algorithms: Option<&[u8]>,
        algorithm: Option<u16>,
    ) -> Vec<u8> {
        let c = &self.inner;
        let mut buf = encode(msg_type(method, REQUEST), new_txid(), attrs, None, false);
        if self.hashed {
            push_attr(&mut buf, A_USERHASH, &userhash(&c.username, &c.realm));
        } else {
            push_attr(&mut buf, A_USERNAME, c.username.as_bytes());
        }
        push_attr(&mut buf, A_REALM, c.realm.as_bytes());
        push_attr(&mut buf, A_NONCE, c.nonce.as_deref().expect("nonce"));
        if let Some(list) = algorithms {
            push_attr(&mut buf, A_PASSWORD_ALGORITHMS, list);
        }
        if let Some(a) = algorithm {
            let mut v = a.to_be_bytes().to_vec();
            v.extend_from_slice(&[0, 0]);
            push_attr(&mut buf, A_PASSWORD_ALGORITHM, &v);
        }
        let body = buf.len() - 20 + 36;
        set_length(&mut buf, body);
        let mac = hmac_sha256(&self.key(), &buf);
        push_attr(&mut buf, A_MESSAGE_INTEGRITY_SHA256, &mac);
        buf
    }

    /// A signed request; after a 438 the new nonce is taken and the request sent once more.
    #[track_caller]
    pub fn request(&mut self, method: u16, attrs: &[Attr]) -> Parsed {
        if self.inner.nonce.is_none() {
            self.challenge();
        }
        let r = self.inner.transact(&self.signed(method, attrs));
        if r.error_code().map(|(c, _)| c) == Some(438) {
            self.take_challenge(&r);
            return self.inner.transact(&self.signed(method, attrs));
        }
        r
    }

    /// A success response to `method`, signed with MESSAGE-INTEGRITY-SHA256 under our key.
    #[track_caller]
    pub fn assert_success(&self, r: &Parsed, method: u16) {
        super::raw::assert_success(r, method);
        assert!(
            verify_sha256(r, &self.key()),
            "response to {:#05x} is not signed with MESSAGE-INTEGRITY-SHA256",
            method_of(r.ty)
        );
        assert!(!r.has(super::raw::A_MESSAGE_INTEGRITY));
    }

    #[track_caller]
    pub fn allocate(&mut self) -> SocketAddr {
        let r = self.request(ALLOCATE, &[super::raw::udp()]);
        self.assert_success(&r, ALLOCATE);
        r.xor_address(super::raw::A_XOR_RELAYED_ADDRESS)
            .expect("XOR-RELAYED-ADDRESS")
    }

    #[track_caller]
    pub fn permit(&mut self, p: SocketAddr) {
        let r = self.request(CREATE_PERMISSION, &[super::raw::peer(p)]);
        self.assert_success(&r, CREATE_PERMISSION);
    }

    #[track_caller]
    pub fn bind_channel(&mut self, channel: u16, p: SocketAddr) {
        let r = self.request(
            CHANNEL_BIND,
            &[super::raw::channel_number(channel), super::raw::peer(p)],
        );
        self.assert_success(&r, CHANNEL_BIND);
    }

    #[track_caller]
    pub fn refresh(&mut self, secs: u32) -> Parsed {
        self.request(REFRESH, &[super::raw::lifetime(secs)])
    }
}
