//! RFC 8489's long-term credential features: PASSWORD-ALGORITHMS negotiation (MD5, SHA-256),
//! MESSAGE-INTEGRITY-SHA256, USERHASH, the nonce cookie and its bid-down protection — next to
//! a legacy RFC 5389 client on the same server. Also the pre-authentication rate limits and
//! the per-allocation permission and channel limits.

use super::*;
use crate::core::auth::{long_term_key_sha256, userhash};
use crate::core::{AuthFailure, CounterKey};
use crate::stun::integrity::{hmac_sha256, INTEGRITY_SHA256_MAX};

const MD5: u16 = 0x0001;
const SHA256: u16 = 0x0002;
/// What the server offers: SHA-256, then MD5, no parameters.
const OFFERED: [u8; 8] = [0, 2, 0, 0, 0, 1, 0, 0];

fn reason(label: &str) -> AuthFailure {
    *AuthFailure::ALL
        .iter()
        .find(|r| r.label() == label)
        .unwrap()
}

/// An RFC 8489 client: reads the nonce cookie and PASSWORD-ALGORITHMS, signs with
/// MESSAGE-INTEGRITY-SHA256 under the key of its chosen algorithm.
struct Modern {
    /// For the 5-tuple and unique transaction ids.
    inner: Client,
    password: String,
    algorithm: u16,
    /// Send USERHASH instead of USERNAME.
    hashed: bool,
    /// PASSWORD-ALGORITHMS as echoed (None: not sent).
    algorithms: Option<Vec<u8>>,
    /// Send PASSWORD-ALGORITHM (false: leave it out, for the bid-down tests).
    send_algorithm: bool,
    /// Truncate MESSAGE-INTEGRITY-SHA256 to this many bytes.
    truncate: usize,
    /// Also put a MESSAGE-INTEGRITY (HMAC-SHA1) before MESSAGE-INTEGRITY-SHA256.
    both: bool,
}

impl Modern {
    fn new(ft: FiveTuple, user: &str, password: &str, algorithm: u16) -> Modern {
        Modern {
            inner: Client::new(ft, user, password),
            password: password.to_string(),
            algorithm,
            hashed: false,
            algorithms: None,
            send_algorithm: true,
            truncate: INTEGRITY_SHA256_MAX,
            both: false,
        }
    }

    fn alice(ft: FiveTuple) -> Modern {
        Modern::new(ft, "alice", "alice-pw", SHA256)
    }

    fn ft(&self) -> FiveTuple {
        self.inner.ft
    }

    fn key(&self) -> Vec<u8> {
        let user = &self.inner.username;
        match self.algorithm {
            SHA256 => long_term_key_sha256(user, REALM, &self.password).to_vec(),
            _ => long_term_key(user, REALM, &self.password).to_vec(),
        }
    }

    /// An unsigned Allocate; keeps the nonce and PASSWORD-ALGORITHMS of the 401.
    fn challenge(&mut self, h: &mut Harness) -> Resp {
        let resp = self.inner.challenge(h);
        let list = resp
            .msg()
            .password_algorithms()
            .expect("401 lists PASSWORD-ALGORITHMS")
            .to_vec();
        assert_eq!(list, OFFERED);
        self.algorithms = Some(list);
        resp
    }

    fn signed(&mut self, method: Method, attrs: &[Attr]) -> (TransactionId, Vec<u8>) {
        let txid = self.inner.txid();
        let mut buf = vec![0u8; 2048];
        let mut b =
            MessageBuilder::new(&mut buf, MessageType::new(method, Class::Request), txid).unwrap();
        for a in attrs {
            match a {
                Attr::Raw(t, v) => b.add(*t, v).unwrap(),
                Attr::Peer(p) => b.add_xor_address(AttrType::XOR_PEER_ADDRESS, p).unwrap(),
            }
        }
        if self.hashed {
            b.add(AttrType::USERHASH, &userhash(&self.inner.username, REALM))
                .unwrap();
        } else {
            b.add(AttrType::USERNAME, self.inner.username.as_bytes())
                .unwrap();
        }
        b.add(AttrType::REALM, REALM.as_bytes()).unwrap();
        b.add(AttrType::NONCE, self.inner.nonce.as_deref().expect("nonce"))
            .unwrap();
        if let Some(list) = &self.algorithms {
            b.add(AttrType::PASSWORD_ALGORITHMS, list).unwrap();
        }
        if self.send_algorithm {
            let mut v = self.algorithm.to_be_bytes().to_vec();
            v.extend_from_slice(&[0, 0]);
            b.add(AttrType::PASSWORD_ALGORITHM, &v).unwrap();
        }
        let key = self.key();
        if self.both {
            b.add_message_integrity(&key).unwrap();
        }
        if self.truncate == INTEGRITY_SHA256_MAX {
            b.add_message_integrity_sha256(&key).unwrap();
            let len = b.finish();
            buf.truncate(len);
        } else {
            // A sender may truncate the HMAC; it covers the length field as if the message
            // ended after the truncated attribute (RFC 8489 §14.6).
            let at = b.finish();
            let n = self.truncate;
            let length_field = (at + 4 + n - 20) as u16;
            let mac = hmac_sha256(&key, &buf[..at], length_field);
            buf.truncate(at);
            buf.extend_from_slice(&AttrType::MESSAGE_INTEGRITY_SHA256.0.to_be_bytes());
            buf.extend_from_slice(&(n as u16).to_be_bytes());
            buf.extend_from_slice(&mac[..n]);
            buf[2..4].copy_from_slice(&length_field.to_be_bytes());
        }
        (txid, buf)
    }

    /// A signed request (after a 401 if no nonce yet, again after a 438).
    fn request(&mut self, h: &mut Harness, method: Method, attrs: &[Attr]) -> Resp {
        if self.inner.nonce.is_none() {
            self.challenge(h);
        }
        let (txid, req) = self.signed(method, attrs);
        let resp = self.inner.send_raw(h, &req).expect("a response");
        assert_eq!(resp.txid(), txid);
        if resp.code() == Some(438) {
            self.inner.nonce = Some(resp.nonce());
            let (_, req) = self.signed(method, attrs);
            return self.inner.send_raw(h, &req).expect("a response");
        }
        resp
    }
}

/// Signed with MESSAGE-INTEGRITY-SHA256 under `key`, and without MESSAGE-INTEGRITY.
fn assert_sha256_signed(resp: &Resp, key: &[u8]) {
    let m = resp.msg();
    assert!(
        m.has_integrity_sha256(),
        "{resp:?} has no MESSAGE-INTEGRITY-SHA256"
    );
    assert!(
        !m.has(AttrType::MESSAGE_INTEGRITY),
        "{resp:?} has MESSAGE-INTEGRITY"
    );
    assert!(m.verify_integrity_sha256(key), "{resp:?} does not verify");
    assert!(!m.verify_integrity_sha256(&[0u8; 32]));
}

fn assert_success_sha256(resp: &Resp, method: Method, key: &[u8]) {
    assert_eq!(
        (resp.msg().method(), resp.class()),
        (method, Class::SuccessResponse),
        "{resp:?}"
    );
    assert_sha256_signed(resp, key);
}

#[test]
fn challenge_carries_the_nonce_cookie_and_password_algorithms() {
    let mut h = Harness::new();
    let mut c = Modern::alice(udp("192.0.2.1:4000"));
    let resp = c.challenge(&mut h);
    assert!(resp.nonce().starts_with(b"obMatJos2gAAA"));
    // With `userhash`, the "Username anonymity" bit too.
    let mut h = Harness::with(Setup {
        userhash: true,
        ..Setup::default()
    });
    let resp = Modern::alice(udp("192.0.2.1:4000")).challenge(&mut h);
    assert!(resp.nonce().starts_with(b"obMatJos2wAAA"));
}

#[test]
fn sha256_handshake_allocate_permission_send_refresh_channel() {
    let mut h = Harness::new();
    let mut c = Modern::alice(udp("192.0.2.1:4000"));
    let key = c.key();
    assert_eq!(key.len(), 32);
    let resp = c.request(&mut h, Method::ALLOCATE, &[transport_udp()]);
    assert_success_sha256(&resp, Method::ALLOCATE, &key);
    let id = h.id_of(c.ft()).unwrap();
    assert_eq!(&*h.alloc(c.ft()).username, "alice");

    let resp = c.request(&mut h, Method::CREATE_PERMISSION, &[Attr::Peer(peer_a())]);
    assert_success_sha256(&resp, Method::CREATE_PERMISSION, &key);
    let (fwd, ind) = c.inner.send_indication(&mut h, peer_a(), b"hello");
    assert_forward(fwd, &ind, id, peer_a(), b"hello");

    let resp = c.request(
        &mut h,
        Method::CHANNEL_BIND,
        &[channel(0x4000), Attr::Peer(peer_b())],
    );
    assert_success_sha256(&resp, Method::CHANNEL_BIND, &key);
    let (fwd, msg) = c.inner.channel_data(&mut h, 0x4000, b"via channel");
    assert_forward(fwd, &msg, id, peer_b(), b"via channel");

    let resp = c.request(&mut h, Method::REFRESH, &[lifetime(0)]);
    assert_success_sha256(&resp, Method::REFRESH, &key);
    assert_eq!(h.allocation_count(), 0);
    assert_eq!(h.server.counters().auth_failures, 0);
}

#[test]
fn md5_chosen_by_an_rfc8489_client_is_signed_with_sha256_integrity() {
    let mut h = Harness::new();
    let mut c = Modern::new(udp("192.0.2.1:4000"), "alice", "alice-pw", MD5);
    let key = c.key();
    assert_eq!(key.len(), 16);
    let resp = c.request(&mut h, Method::ALLOCATE, &[transport_udp()]);
    assert_success_sha256(&resp, Method::ALLOCATE, &key);
}

#[test]
fn rest_credentials_work_with_sha256() {
    let mut h = Harness::new();
    let rest = Client::rest(udp("192.0.2.1:4000"), UNIX_T0 + 3600, "dave", REST_SECRET);
    let password = rest_api_password(REST_SECRET.as_bytes(), &rest.username);
    let mut c = Modern::new(rest.ft, &rest.username, &password, SHA256);
    let resp = c.request(&mut h, Method::ALLOCATE, &[transport_udp()]);
    assert_success_sha256(&resp, Method::ALLOCATE, &c.key());
}

#[test]
fn truncated_sha256_integrity_and_both_integrities_are_accepted() {
    let mut h = Harness::new();
    let mut c = Modern::alice(udp("192.0.2.1:4000"));
    c.truncate = 16;
    let resp = c.request(&mut h, Method::ALLOCATE, &[transport_udp()]);
    assert_success_sha256(&resp, Method::ALLOCATE, &c.key());

    let mut c = Modern::alice(udp("192.0.2.1:4001"));
    c.both = true;
    let resp = c.request(&mut h, Method::ALLOCATE, &[transport_udp()]);
    assert_success_sha256(&resp, Method::ALLOCATE, &c.key());

    // A wrong SHA-256 HMAC fails even though the MESSAGE-INTEGRITY before it is right:
    // MESSAGE-INTEGRITY-SHA256 is the one checked.
    let mut c = Modern::alice(udp("192.0.2.1:4002"));
    c.challenge(&mut h);
    let (_, mut req) = c.signed(Method::ALLOCATE, &[transport_udp()]);
    let last = req.len() - 1;
    req[last] ^= 1;
    let resp = c.inner.send_raw(&mut h, &req).unwrap();
    resp.assert_error(Method::ALLOCATE, 401, None);
}

#[test]
fn userhash_finds_the_static_user() {
    let mut h = Harness::with(Setup {
        userhash: true,
        ..Setup::default()
    });
    let mut c = Modern::alice(udp("192.0.2.1:4000"));
    c.hashed = true;
    let resp = c.request(&mut h, Method::ALLOCATE, &[transport_udp()]);
    assert_success_sha256(&resp, Method::ALLOCATE, &c.key());
    // The allocation belongs to the configured name, so quotas and 441 work as for USERNAME.
    assert_eq!(&*h.alloc(c.ft()).username, "alice");
    let resp = c.request(&mut h, Method::REFRESH, &[lifetime(600)]);
    assert_success_sha256(&resp, Method::REFRESH, &c.key());
    c.hashed = false;
    let resp = c.request(&mut h, Method::REFRESH, &[lifetime(600)]);
    assert_success_sha256(&resp, Method::REFRESH, &c.key());

    // An unknown hash is an unknown user (401).
    let mut eve = Modern::new(udp("192.0.2.1:4001"), "eve", "eve-pw", SHA256);
    eve.hashed = true;
    let resp = eve.request(&mut h, Method::ALLOCATE, &[transport_udp()]);
    resp.assert_error(Method::ALLOCATE, 401, None);
    let c = h.server.counters();
    assert_eq!(c.auth_failure_reasons[reason("unknown_user")], 1);
}

#[test]
fn rest_usernames_cannot_be_hashed() {
    let mut h = Harness::new();
    let rest = Client::rest(udp("192.0.2.1:4000"), UNIX_T0 + 3600, "dave", REST_SECRET);
    let password = rest_api_password(REST_SECRET.as_bytes(), &rest.username);
    let mut c = Modern::new(rest.ft, &rest.username, &password, SHA256);
    c.hashed = true;
    let resp = c.request(&mut h, Method::ALLOCATE, &[transport_udp()]);
    resp.assert_error(Method::ALLOCATE, 401, None);
}

#[test]
fn key_only_user_can_do_md5_but_not_sha256() {
    let mut h = Harness::new();
    let mut c = Modern::new(udp("192.0.2.1:4000"), "carol", "carol-pw", SHA256);
    let resp = c.request(&mut h, Method::ALLOCATE, &[transport_udp()]);
    resp.assert_error(Method::ALLOCATE, 401, None);
    assert!(resp.has(AttrType::PASSWORD_ALGORITHMS) && resp.has(AttrType::NONCE));
    let counters = h.server.counters();
    assert_eq!(
        counters.auth_failure_reasons[reason("unsupported_algorithm")],
        1
    );

    let mut c = Modern::new(udp("192.0.2.1:4001"), "carol", "carol-pw", MD5);
    let resp = c.request(&mut h, Method::ALLOCATE, &[transport_udp()]);
    assert_success_sha256(&resp, Method::ALLOCATE, &c.key());
    // And as a legacy client.
    let mut legacy = Client::new(udp("192.0.2.1:4002"), "carol", "carol-pw");
    legacy.allocate(&mut h);
}

/// A user configured with both keys (what `turnd users add --password` stores in the fleet
/// store) does SHA-256, by name and by USERHASH, and MD5, without the server knowing the
/// password.
#[test]
fn both_keys_user_can_do_sha256_and_md5() {
    let mut h = Harness::new();
    let mut c = Modern::new(udp("192.0.2.1:4000"), "erin", "erin-pw", SHA256);
    let resp = c.request(&mut h, Method::ALLOCATE, &[transport_udp()]);
    assert_success_sha256(&resp, Method::ALLOCATE, &c.key());
    let mut c = Modern::new(udp("192.0.2.1:4001"), "erin", "erin-pw", SHA256);
    c.hashed = true;
    let resp = c.request(&mut h, Method::ALLOCATE, &[transport_udp()]);
    assert_success_sha256(&resp, Method::ALLOCATE, &c.key());
    assert_eq!(&*h.alloc(c.ft()).username, "erin");
    let mut c = Modern::new(udp("192.0.2.1:4002"), "erin", "erin-pw", MD5);
    let resp = c.request(&mut h, Method::ALLOCATE, &[transport_udp()]);
    assert_success_sha256(&resp, Method::ALLOCATE, &c.key());
    let mut c = Modern::new(udp("192.0.2.1:4003"), "erin", "wrong", SHA256);
    let resp = c.request(&mut h, Method::ALLOCATE, &[transport_udp()]);
    resp.assert_error(Method::ALLOCATE, 401, None);
    assert_eq!(h.server.counters().auth_failures, 1);
}

#[test]
fn bid_down_attempts_get_400() {
    let mut h = Harness::new();
    let ft = udp("192.0.2.1:4000");
    let cases: [(&str, Option<Vec<u8>>, bool, u16); 5] = [
        // An attacker removed SHA-256 from the 401's list; the client echoes what it saw.
        ("list without sha-256", Some(vec![0, 1, 0, 0]), true, MD5),
        (
            "list reordered",
            Some(vec![0, 1, 0, 0, 0, 2, 0, 0]),
            true,
            SHA256,
        ),
        ("algorithm without the list", None, true, SHA256),
        (
            "list without an algorithm",
            Some(OFFERED.to_vec()),
            false,
            SHA256,
        ),
        (
            "an algorithm not offered",
            Some(OFFERED.to_vec()),
            true,
            0x0003,
        ),
    ];
    for (i, (what, list, send_algorithm, algorithm)) in cases.into_iter().enumerate() {
        let mut c = Modern::alice(ft);
        c.challenge(&mut h);
        c.algorithms = list;
        c.send_algorithm = send_algorithm;
        c.algorithm = algorithm;
        let (_, req) = c.signed(Method::ALLOCATE, &[transport_udp()]);
        let resp = c.inner.send_raw(&mut h, &req).expect(what);
        resp.assert_error(Method::ALLOCATE, 400, None);
        assert!(!resp.has(AttrType::NONCE), "{what}");
        let counters = h.server.counters();
        assert_eq!(
            counters.auth_failure_reasons[reason("bid_down")],
            i as u64 + 1
        );
    }
    assert_eq!(h.allocation_count(), 0);
}

#[test]
fn a_nonce_with_its_feature_bits_stripped_is_refused() {
    // An attacker rewrites the cookie to "no features" so the client falls back to MD5 and
    // MESSAGE-INTEGRITY: the bits are under the nonce's MAC, so the nonce is not ours (438).
    let mut h = Harness::new();
    let mut c = Client::alice(udp("192.0.2.1:4000"));
    c.challenge(&mut h);
    let mut nonce = c.nonce.clone().unwrap();
    nonce[9..13].copy_from_slice(b"AAAA");
    c.nonce = Some(nonce);
    let txid = c.txid();
    let resp = c
        .send_raw(
            &mut h,
            &c.signed(Method::ALLOCATE, txid, &[transport_udp()]),
        )
        .unwrap();
    resp.assert_error(Method::ALLOCATE, 438, None);
    assert!(resp.nonce().starts_with(b"obMatJos2gAAA"));
    assert!(resp.has(AttrType::PASSWORD_ALGORITHMS));
}

#[test]
fn legacy_client_beside_a_modern_one() {
    let mut h = Harness::new();
    let mut modern = Modern::alice(udp("192.0.2.1:4000"));
    let resp = modern.request(&mut h, Method::ALLOCATE, &[transport_udp()]);
    assert_success_sha256(&resp, Method::ALLOCATE, &modern.key());

    // An RFC 5389 client ignores the cookie and PASSWORD-ALGORITHMS, signs with
    // MESSAGE-INTEGRITY under the MD5 key, and gets MESSAGE-INTEGRITY back (no SHA-256).
    let mut legacy = Client::bob(udp("192.0.2.2:4000"));
    let resp = legacy.allocate_with(&mut h, &[]);
    resp.assert_success(Method::ALLOCATE, &legacy.key);
    assert!(!resp.msg().has_integrity_sha256());
    legacy.permit(&mut h, &[peer_a()]);
    legacy.bind(&mut h, 0x4001, peer_b());
    assert_eq!(h.allocation_count(), 2);
}

#[test]
fn sha256_retransmission_gets_the_same_bytes() {
    let mut h = Harness::new();
    let mut c = Modern::alice(udp("192.0.2.1:4000"));
    c.challenge(&mut h);
    let (_, req) = c.signed(Method::ALLOCATE, &[transport_udp()]);
    let first = c.inner.send_raw(&mut h, &req).unwrap();
    assert_success_sha256(&first, Method::ALLOCATE, &c.key());
    let again = c.inner.send_raw(&mut h, &req).unwrap();
    assert_eq!(first, again);
    assert_eq!(h.allocation_count(), 1);
}

#[test]
fn stale_nonce_with_sha256() {
    let mut h = Harness::new();
    let mut c = Modern::alice(udp("192.0.2.1:4000"));
    let resp = c.request(&mut h, Method::ALLOCATE, &[transport_udp(), lifetime(3600)]);
    assert_success_sha256(&resp, Method::ALLOCATE, &c.key());
    h.advance(secs(601));
    let old = c.inner.nonce.clone().unwrap();
    let (_, req) = c.signed(Method::REFRESH, &[lifetime(600)]);
    let resp = c.inner.send_raw(&mut h, &req).unwrap();
    resp.assert_error(Method::REFRESH, 438, None);
    assert!(resp.has(AttrType::PASSWORD_ALGORITHMS) && resp.has(AttrType::REALM));
    assert_ne!(resp.nonce(), old);
    c.inner.nonce = Some(resp.nonce());
    let resp = c.request(&mut h, Method::REFRESH, &[lifetime(600)]);
    assert_success_sha256(&resp, Method::REFRESH, &c.key());
}

#[test]
fn malformed_rfc8489_attributes_are_refused() {
    let mut h = Harness::new();
    let ft = udp("192.0.2.1:4000");
    let mut c = Modern::alice(ft);
    c.challenge(&mut h);
    // A USERHASH that is not 32 bytes, with no USERNAME: 400.
    let mut bad = c.inner.clone();
    let txid = bad.txid();
    let sign = Sign {
        username: None,
        ..bad.sign()
    };
    let req = build(
        Method::ALLOCATE,
        Class::Request,
        txid,
        &[transport_udp(), Attr::Raw(AttrType::USERHASH, vec![1; 20])],
        Some(&sign),
        false,
    );
    bad.send_raw(&mut h, &req)
        .unwrap()
        .assert_error(Method::ALLOCATE, 400, None);
    // A PASSWORD-ALGORITHM whose parameter length lies: 400.
    let (_, req) = c.signed(
        Method::ALLOCATE,
        &[
            transport_udp(),
            Attr::Raw(AttrType::PASSWORD_ALGORITHM, vec![0, 2, 0, 9]),
        ],
    );
    c.inner
        .send_raw(&mut h, &req)
        .unwrap()
        .assert_error(Method::ALLOCATE, 400, None);
    // A MESSAGE-INTEGRITY-SHA256 of 12 bytes does not parse: dropped as malformed.
    let mut req = c.signed(Method::ALLOCATE, &[transport_udp()]).1;
    let n = req.len();
    req.truncate(n - 20);
    let at = req.len() - 16;
    req[at + 2..at + 4].copy_from_slice(&12u16.to_be_bytes());
    let body = (req.len() - 20) as u16;
    req[2..4].copy_from_slice(&body.to_be_bytes());
    assert!(c.inner.send_raw(&mut h, &req).is_none());
    assert_eq!(h.server.counters().dropped[DropReason::Malformed], 1);
}

#[test]
fn unauthenticated_answers_are_rate_limited_per_source() {
    let rate = Rate {
        per_second: 2,
        burst: 5,
    };
    let mut h = Harness::with(Setup {
        rates: (rate, Rate::UNLIMITED),
        ..Setup::default()
    });
    // 50 unsigned Allocates from one address, each from its own port (a spoofed flood).
    let mut answered = 0;
    for port in 0..50u16 {
        let mut c = Client::alice(udp(&format!("192.0.2.7:{}", 10_000 + port)));
        let txid = c.txid();
        let req = c.unsigned(Method::ALLOCATE, txid, &[transport_udp()]);
        answered += usize::from(c.send_raw(&mut h, &req).is_some());
    }
    assert_eq!(answered, 5);
    assert_eq!(h.server.counters().dropped[DropReason::RateLimited], 45);
    // Another source is not affected.
    let mut other = Client::alice(udp("192.0.2.8:4000"));
    other.allocate(&mut h);
    // Half a second later one more token (2 per second).
    h.advance(Duration::from_millis(500));
    let mut c = Client::alice(udp("192.0.2.7:9999"));
    assert!(c
        .try_request(&mut h, Method::ALLOCATE, &[transport_udp()])
        .is_some());
    // No state is kept per allocation or per source: no allocation was made for the flood.
    assert_eq!(h.allocation_count(), 2);
}

#[test]
fn authenticated_requests_are_not_rate_limited() {
    let rate = Rate {
        per_second: 1,
        burst: 1,
    };
    let mut h = Harness::with(Setup {
        rates: (rate, Rate::UNLIMITED),
        ..Setup::default()
    });
    let mut c = Client::alice(udp("192.0.2.7:4000"));
    c.allocate(&mut h);
    for _ in 0..20 {
        c.refresh(&mut h, Some(600))
            .assert_success(Method::REFRESH, &c.key.clone());
    }
    assert_eq!(h.server.counters().dropped[DropReason::RateLimited], 0);
}

#[test]
fn binding_is_rate_limited_per_source() {
    let rate = Rate {
        per_second: 10,
        burst: 3,
    };
    let mut h = Harness::with(Setup {
        rates: (Rate::UNLIMITED, rate),
        ..Setup::default()
    });
    let mut answered = 0;
    for port in 0..10u16 {
        let mut c = Client::alice(udp(&format!("192.0.2.9:{}", 20_000 + port)));
        let txid = c.txid();
        let req = c.unsigned(Method::BINDING, txid, &[]);
        answered += usize::from(c.send_raw(&mut h, &req).is_some());
    }
    assert_eq!(answered, 3);
    assert_eq!(h.server.counters().dropped[DropReason::RateLimited], 7);
    h.advance(Duration::from_millis(100));
    let mut c = Client::alice(udp("192.0.2.9:30000"));
    let txid = c.txid();
    let req = c.unsigned(Method::BINDING, txid, &[]);
    assert!(c.send_raw(&mut h, &req).is_some());
}

#[test]
fn permissions_per_allocation_are_limited_with_508() {
    let mut h = Harness::with(Setup {
        per_allocation: (2, 0),
        ..Setup::default()
    });
    let mut c = Client::alice(udp("192.0.2.1:4000"));
    c.allocate(&mut h);
    let key = c.key;
    let p3 = sa("198.51.100.3:1");
    // Three new peers at once do not fit.
    c.create_permission(&mut h, &[peer_a(), peer_b(), p3])
        .assert_error(Method::CREATE_PERMISSION, 508, Some(&key));
    assert_eq!(h.server.counters().dropped[DropReason::PermissionQuota], 1);
    c.permit(&mut h, &[peer_a(), peer_b()]);
    // Refreshing installed ones is fine; a third is not; nor via ChannelBind.
    c.permit(&mut h, &[peer_b(), peer_a()]);
    c.create_permission(&mut h, &[p3])
        .assert_error(Method::CREATE_PERMISSION, 508, Some(&key));
    c.channel_bind(&mut h, 0x4000, p3)
        .assert_error(Method::CHANNEL_BIND, 508, Some(&key));
    c.bind(&mut h, 0x4000, peer_a());
    assert_eq!(h.server.counters().dropped[DropReason::PermissionQuota], 3);
    // Once the permissions expire and are swept, there is room again.
    h.advance(secs(301));
    c.permit(&mut h, &[p3]);
}

#[test]
fn channels_per_allocation_are_limited_with_508() {
    let mut h = Harness::with(Setup {
        per_allocation: (0, 1),
        ..Setup::default()
    });
    let mut c = Client::alice(udp("192.0.2.1:4000"));
    c.allocate(&mut h);
    let key = c.key;
    c.bind(&mut h, 0x4000, peer_a());
    c.channel_bind(&mut h, 0x4001, peer_b())
        .assert_error(Method::CHANNEL_BIND, 508, Some(&key));
    assert_eq!(h.server.counters().dropped[DropReason::ChannelQuota], 1);
    // Refreshing the binding it holds is fine.
    c.bind(&mut h, 0x4000, peer_a());
    assert_eq!(h.server.counters().dropped[DropReason::ChannelQuota], 1);
}
