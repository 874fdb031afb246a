//! The long-term credential mechanism (RFC 8489 §9.2.4) and TURN REST credentials.

use super::*;
use crate::core::auth::RestUsernameOrder;
use crate::core::AuthFailure;

fn ft() -> FiveTuple {
    udp("192.0.2.100:40000")
}

#[test]
fn request_without_integrity_gets_401_with_realm_and_nonce() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let resp = c.challenge(&mut h);
    assert_eq!(resp.realm(), REALM);
    assert_eq!(resp.nonce().len(), crate::core::nonce::NONCE_LEN);
    assert!(
        !resp.has(AttrType::SOFTWARE),
        "unauthenticated answers stay small"
    );
    assert_eq!(h.allocation_count(), 0);
    assert!(h.opened.is_empty());
}

#[test]
fn challenge_echoes_fingerprint() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.fingerprint = true;
    assert!(c.challenge(&mut h).msg().has_fingerprint());
}

#[test]
fn integrity_without_username_realm_or_nonce_gets_400() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.challenge(&mut h);
    let strip: [fn(&mut Sign); 3] = [
        |s| s.username = None,
        |s| s.realm = None,
        |s| s.nonce = None,
    ];
    for (i, f) in strip.iter().enumerate() {
        let mut sign = c.sign();
        f(&mut sign);
        let txid = c.txid();
        let req = build(
            Method::ALLOCATE,
            Class::Request,
            txid,
            &[transport_udp()],
            Some(&sign),
            false,
        );
        let resp = c.send_raw(&mut h, &req).unwrap();
        resp.assert_error(Method::ALLOCATE, 400, None);
        assert_eq!(h.server.counters().auth_failures, i as u64 + 1);
    }
    assert_eq!(h.allocation_count(), 0);
}

#[test]
fn nonce_is_valid_for_its_lifetime_then_stale_438_with_a_new_one() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.challenge(&mut h);
    let first = c.nonce.clone().unwrap();

    // Still valid at exactly the lifetime (600 s)...
    h.jump(secs(600));
    let txid = c.txid();
    let resp = c
        .send_raw(
            &mut h,
            &c.signed(Method::ALLOCATE, txid, &[transport_udp()]),
        )
        .unwrap();
    resp.assert_success(Method::ALLOCATE, &c.key);

    // ...stale one second later.
    h.jump(secs(1));
    let txid = c.txid();
    let resp = c
        .send_raw(&mut h, &c.signed(Method::REFRESH, txid, &[]))
        .unwrap();
    resp.assert_error(Method::REFRESH, 438, None);
    assert_eq!(resp.realm(), REALM);
    let fresh = resp.nonce();
    assert_ne!(fresh, first);

    // The new nonce works at once.
    c.nonce = Some(fresh);
    let txid = c.txid();
    let resp = c
        .send_raw(&mut h, &c.signed(Method::REFRESH, txid, &[]))
        .unwrap();
    resp.assert_success(Method::REFRESH, &c.key);
}

#[test]
fn nonce_issued_to_another_client_address_gets_438() {
    let mut h = Harness::new();
    let mut a = Client::alice(ft());
    a.challenge(&mut h);
    // Same IP, other port: the nonce is bound to the transport address.
    let mut thief = Client::alice(udp("192.0.2.100:40001"));
    thief.nonce = a.nonce.clone();
    let txid = thief.txid();
    let resp = thief
        .send_raw(
            &mut h,
            &thief.signed(Method::ALLOCATE, txid, &[transport_udp()]),
        )
        .unwrap();
    resp.assert_error(Method::ALLOCATE, 438, None);
    assert_ne!(resp.nonce(), a.nonce.clone().unwrap());
    assert_eq!(h.allocation_count(), 0);
}

#[test]
fn forged_nonce_gets_438() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    for nonce in [
        b"not-a-nonce".to_vec(),
        vec![b'0'; crate::core::nonce::NONCE_LEN],
        vec![0xFF; 40],
    ] {
        c.nonce = Some(nonce);
        let txid = c.txid();
        let resp = c
            .send_raw(
                &mut h,
                &c.signed(Method::ALLOCATE, txid, &[transport_udp()]),
            )
            .unwrap();
        resp.assert_error(Method::ALLOCATE, 438, None);
    }
}

#[test]
fn wrong_password_gets_401() {
    let mut h = Harness::new();
    let mut c = Client::new(ft(), "alice", "not-alices-pw");
    c.challenge(&mut h);
    let txid = c.txid();
    let resp = c
        .send_raw(
            &mut h,
            &c.signed(Method::ALLOCATE, txid, &[transport_udp()]),
        )
        .unwrap();
    resp.assert_error(Method::ALLOCATE, 401, None);
    assert_eq!(resp.realm(), REALM);
    assert!(resp.has(AttrType::NONCE));
    assert_eq!(h.server.counters().auth_failures, 1);
    assert_eq!(h.allocation_count(), 0);
}

#[test]
fn other_users_password_gets_401() {
    let mut h = Harness::new();
    // bob's name with alice's password.
    let mut c = Client::new(ft(), "bob", "alice-pw");
    c.challenge(&mut h);
    let txid = c.txid();
    let resp = c
        .send_raw(
            &mut h,
            &c.signed(Method::ALLOCATE, txid, &[transport_udp()]),
        )
        .unwrap();
    resp.assert_error(Method::ALLOCATE, 401, None);
}

#[test]
fn unknown_user_gets_401() {
    let mut h = Harness::new();
    let mut c = Client::new(ft(), "mallory", "whatever");
    c.challenge(&mut h);
    let txid = c.txid();
    let resp = c
        .send_raw(
            &mut h,
            &c.signed(Method::ALLOCATE, txid, &[transport_udp()]),
        )
        .unwrap();
    resp.assert_error(Method::ALLOCATE, 401, None);
}

#[test]
fn key_for_another_realm_gets_401() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.challenge(&mut h);
    c.key = long_term_key("alice", "elsewhere", "alice-pw");
    let txid = c.txid();
    let resp = c
        .send_raw(
            &mut h,
            &c.signed(Method::ALLOCATE, txid, &[transport_udp()]),
        )
        .unwrap();
    resp.assert_error(Method::ALLOCATE, 401, None);
}

#[test]
fn rest_credentials_valid() {
    let mut h = Harness::new();
    let mut c = Client::rest(ft(), UNIX_T0 + 3600, "carol", REST_SECRET);
    let (id, _) = c.allocate(&mut h);
    let Some(Event::AllocationCreated { username, .. }) = h.events.first() else {
        panic!("no AllocationCreated");
    };
    assert_eq!(&**username, c.username);
    assert_eq!(&*h.server.allocation(id).unwrap().username, c.username);
    c.refresh(&mut h, None)
        .assert_success(Method::REFRESH, &c.key);
}

#[test]
fn rest_username_with_id_first_only_when_configured() {
    let username = format!("carol:{}", UNIX_T0 + 3600);
    let password = rest_api_password(REST_SECRET.as_bytes(), &username);
    // The default order reads the expiry first: this name is no REST username.
    let mut h = Harness::new();
    let mut c = Client::new(ft(), &username, &password);
    c.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 401, None);
    assert_eq!(
        h.server.counters().auth_failure_reasons[AuthFailure::UnknownUser],
        1,
        "unknown_user"
    );
    let mut h = Harness::with(Setup {
        rest: RestPolicy {
            order: RestUsernameOrder::UserFirst,
            ..RestPolicy::default()
        },
        ..Setup::default()
    });
    let mut c = Client::new(ft(), &username, &password);
    c.allocate(&mut h);
}

#[test]
fn rest_expiry_beyond_the_max_ttl_gets_401_counted_apart() {
    let mut h = Harness::with(Setup {
        rest: RestPolicy {
            max_ttl: 3600,
            ..RestPolicy::default()
        },
        ..Setup::default()
    });
    let mut far = Client::rest(ft(), UNIX_T0 + 3601, "carol", REST_SECRET);
    far.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 401, None);
    let reasons = &h.server.counters().auth_failure_reasons;
    assert_eq!(reasons[AuthFailure::ExpiryTooFar], 1);
    assert_eq!(h.allocation_count(), 0);
    let mut near = Client::rest(
        udp("192.0.2.100:40001"),
        UNIX_T0 + 3600,
        "carol",
        REST_SECRET,
    );
    near.allocate(&mut h);
}

#[test]
fn rest_policy_is_reloaded_with_the_credentials() {
    let mut h = Harness::new();
    let username = format!("carol:{}", UNIX_T0 + 3600);
    let password = rest_api_password(REST_SECRET.as_bytes(), &username);
    let mut c = Client::new(ft(), &username, &password);
    c.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 401, None);
    // SIGHUP: the same users and secrets, read user-first from now on.
    let users = [("alice".to_string(), UserSecret::Password("alice-pw".into()))];
    h.shared.credentials.store(
        Credentials::new(REALM, users, [REST_SECRET.to_string()]).with_rest_policy(RestPolicy {
            order: RestUsernameOrder::UserFirst,
            max_ttl: 0,
        }),
    );
    c.allocate(&mut h);
}

#[test]
fn rest_credentials_expired_get_401() {
    let mut h = Harness::new();
    let mut c = Client::rest(ft(), UNIX_T0 - 1, "carol", REST_SECRET);
    c.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 401, None);
    assert_eq!(h.allocation_count(), 0);
}

#[test]
fn rest_credentials_stop_working_when_they_expire() {
    let mut h = Harness::new();
    let mut c = Client::rest(ft(), UNIX_T0 + 100, "carol", REST_SECRET);
    c.allocate(&mut h);
    c.refresh(&mut h, None)
        .assert_success(Method::REFRESH, &c.key);
    h.advance(secs(101));
    c.refresh(&mut h, None)
        .assert_error(Method::REFRESH, 401, None);
}

#[test]
fn rest_credentials_from_an_unknown_secret_get_401() {
    let mut h = Harness::new();
    let mut c = Client::rest(ft(), UNIX_T0 + 3600, "carol", "some-other-secret");
    c.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 401, None);
}

#[test]
fn rest_credentials_during_secret_rotation() {
    let setup = Setup {
        secrets: vec!["new-secret", "old-secret"],
        ..Setup::default()
    };
    let mut h = Harness::with(setup);
    let mut new = Client::rest(
        udp("192.0.2.100:40000"),
        UNIX_T0 + 3600,
        "carol",
        "new-secret",
    );
    let mut old = Client::rest(
        udp("192.0.2.100:40001"),
        UNIX_T0 + 3600,
        "dave",
        "old-secret",
    );
    let mut gone = Client::rest(
        udp("192.0.2.100:40002"),
        UNIX_T0 + 3600,
        "erin",
        REST_SECRET,
    );
    new.allocate(&mut h);
    // The response is signed with the key derived from the secret that matched.
    old.allocate(&mut h);
    gone.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 401, None);
    assert_eq!(h.allocation_count(), 2);
}

#[test]
fn rest_credentials_without_configured_secret_get_401() {
    let mut h = Harness::with(Setup {
        secrets: vec![],
        ..Setup::default()
    });
    let mut c = Client::rest(ft(), UNIX_T0 + 3600, "carol", REST_SECRET);
    c.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 401, None);
}

#[test]
fn responses_to_authenticated_requests_are_signed() {
    let mut h = Harness::with(Setup {
        software: Some("turnd-test"),
        ..Setup::default()
    });
    let mut c = Client::alice(ft());
    // An error before any allocation exists...
    let resp = c.refresh(&mut h, None);
    resp.assert_error(Method::REFRESH, 437, Some(&c.key));
    // ...successes of every method...
    c.allocate(&mut h);
    c.create_permission(&mut h, &[peer_a()])
        .assert_success(Method::CREATE_PERMISSION, &c.key);
    c.channel_bind(&mut h, 0x4000, peer_a())
        .assert_success(Method::CHANNEL_BIND, &c.key);
    let resp = c.refresh(&mut h, None);
    resp.assert_success(Method::REFRESH, &c.key);
    // ...carry SOFTWARE when configured...
    assert_eq!(resp.msg().software().unwrap().unwrap(), "turnd-test");
    // ...and errors after authentication.
    c.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 437, Some(&c.key));
    c.create_permission(&mut h, &[sa("10.0.0.1:1")])
        .assert_error(Method::CREATE_PERMISSION, 403, Some(&c.key));
    c.channel_bind(&mut h, 0x3FFF, peer_a())
        .assert_error(Method::CHANNEL_BIND, 400, Some(&c.key));
}

#[test]
fn signed_responses_keep_fingerprint_after_integrity() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.fingerprint = true;
    let resp = c.allocate_with(&mut h, &[]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    assert!(resp.msg().has_fingerprint());
    let resp = c.refresh(&mut h, Some(0));
    resp.assert_success(Method::REFRESH, &c.key);
    assert!(resp.msg().has_fingerprint());
}
