//! Refresh (RFC 8656 §8): extending and deleting allocations.

use super::*;

fn ft() -> FiveTuple {
    udp("192.0.2.100:40000")
}

#[test]
fn refresh_extends_the_allocation() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (id, _) = c.allocate(&mut h);
    h.advance_to(500);
    let resp = c.refresh(&mut h, None);
    resp.assert_success(Method::REFRESH, &c.key);
    assert_eq!(resp.lifetime(), 600);
    assert_eq!(h.server.allocation(id).unwrap().expires, h.at(1100));
    // Past the original expiry, the allocation lives on.
    h.advance_to(1099);
    assert!(h.server.allocation(id).is_some());
    assert!(h.ended().is_empty());
}

#[test]
fn refresh_lifetime_is_clamped_like_allocate() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (id, _) = c.allocate(&mut h);
    // RFC 8656 §8.2: the "desired lifetime" is min(requested, max), but never below the
    // default lifetime.
    for (asked, got) in [
        (100_000, 3600),
        (1800, 1800),
        (30, 600),
        (1, 600),
        (600, 600),
    ] {
        let resp = c.refresh(&mut h, Some(asked));
        resp.assert_success(Method::REFRESH, &c.key);
        assert_eq!(resp.lifetime(), got, "asked {asked}");
        assert_eq!(
            h.server.allocation(id).unwrap().expires,
            h.now + secs(got.into())
        );
    }
}

#[test]
fn refresh_with_lifetime_zero_deletes_the_allocation() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (id, relayed) = c.allocate(&mut h);
    c.permit(&mut h, &[peer_a()]);
    h.advance_to(42);
    let resp = c.refresh(&mut h, Some(0));
    resp.assert_success(Method::REFRESH, &c.key);
    assert_eq!(resp.lifetime(), 0);
    assert_eq!(h.closed, vec![id]);
    assert_eq!(h.allocation_count(), 0);
    assert_eq!(h.ports_in_use(relay_v4()), 0);
    match h.events.last() {
        Some(Event::AllocationEnded {
            id: eid,
            five_tuple,
            username,
            relay,
            reason,
            duration,
            ..
        }) => {
            assert_eq!(
                (*eid, *five_tuple, &**username, *relay),
                (id, c.ft, "alice", relayed)
            );
            assert_eq!((*reason, *duration), (EndReason::Deleted, secs(42)));
        }
        other => panic!("{other:?}"),
    }
    // Nothing is relayed any more, and the 5-tuple may allocate again.
    assert!(h.peer(id, peer_a(), b"late").is_none());
    assert!(c.send_indication(&mut h, peer_a(), b"late").0.is_none());
    let (id2, _) = c.allocate(&mut h);
    assert_ne!(id2, id);
}

#[test]
fn retransmitted_delete_gets_the_same_success_not_437() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate(&mut h);
    let txid = c.txid();
    let req = c.signed(Method::REFRESH, txid, &[lifetime(0)]);
    let first = c.send_raw(&mut h, &req).unwrap();
    first.assert_success(Method::REFRESH, &c.key);
    h.advance(secs(1));
    let again = c.send_raw(&mut h, &req).unwrap();
    assert_eq!(again.0, first.0);
    assert_eq!(h.closed.len(), 1);
    assert_eq!(h.ended().len(), 1);
    // A new delete (new transaction) finds nothing.
    c.refresh(&mut h, Some(0))
        .assert_error(Method::REFRESH, 437, Some(&c.key));
}

#[test]
fn refresh_without_allocation_gets_437() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.refresh(&mut h, None)
        .assert_error(Method::REFRESH, 437, Some(&c.key));
    c.refresh(&mut h, Some(0))
        .assert_error(Method::REFRESH, 437, Some(&c.key));
    // Another 5-tuple of the same client has no allocation either.
    c.allocate(&mut h);
    let mut other = Client::alice(udp("192.0.2.100:40001"));
    other
        .refresh(&mut h, None)
        .assert_error(Method::REFRESH, 437, Some(&other.key));
    let mut tcp_twin = Client::alice(tcp("192.0.2.100:40000"));
    tcp_twin
        .refresh(&mut h, None)
        .assert_error(Method::REFRESH, 437, Some(&tcp_twin.key));
}

#[test]
fn refresh_by_another_user_gets_441() {
    let mut h = Harness::new();
    let mut alice = Client::alice(ft());
    let (id, _) = alice.allocate(&mut h);
    let mut bob = Client::bob(ft());
    bob.refresh(&mut h, Some(0))
        .assert_error(Method::REFRESH, 441, Some(&bob.key));
    assert!(h.server.allocation(id).is_some());
    bob.create_permission(&mut h, &[peer_a()]).assert_error(
        Method::CREATE_PERMISSION,
        441,
        Some(&bob.key),
    );
    bob.channel_bind(&mut h, 0x4000, peer_a()).assert_error(
        Method::CHANNEL_BIND,
        441,
        Some(&bob.key),
    );
    assert_eq!(h.alloc(ft()).permissions.len(), 0);
}

#[test]
fn refresh_family_mismatch_gets_443() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (id, _) = c.allocate(&mut h);
    c.request(&mut h, Method::REFRESH, &[family(2)])
        .assert_error(Method::REFRESH, 443, Some(&c.key));
    c.request(&mut h, Method::REFRESH, &[family(2), lifetime(0)])
        .assert_error(Method::REFRESH, 443, Some(&c.key));
    assert!(h.server.allocation(id).is_some());
    c.request(&mut h, Method::REFRESH, &[family(1)])
        .assert_success(Method::REFRESH, &c.key);

    let mut v6 = Client::alice(udp("192.0.2.100:40001"));
    v6.allocate_with(&mut h, &[family(2)])
        .assert_success(Method::ALLOCATE, &v6.key);
    v6.request(&mut h, Method::REFRESH, &[family(1)])
        .assert_error(Method::REFRESH, 443, Some(&v6.key));
    v6.request(&mut h, Method::REFRESH, &[family(2)])
        .assert_success(Method::REFRESH, &v6.key);
}

#[test]
fn malformed_lifetime_gets_400() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate(&mut h);
    let bad = Attr::Raw(AttrType::LIFETIME, vec![0, 0]);
    c.request(&mut h, Method::REFRESH, &[bad])
        .assert_error(Method::REFRESH, 400, Some(&c.key));
}
