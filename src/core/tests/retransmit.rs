//! Retransmissions (RFC 8489 §6.3.1): a request repeated with the same transaction id on the
//! same 5-tuple gets the same bytes back and does not run twice.

use super::*;

fn ft() -> FiveTuple {
    udp("192.0.2.100:40000")
}

/// Sends a signed request twice (one second apart) and returns both answers.
fn twice(h: &mut Harness, c: &mut Client, method: Method, attrs: &[Attr]) -> (Resp, Resp) {
    if c.nonce.is_none() {
        c.challenge(h);
    }
    let txid = c.txid();
    let req = c.signed(method, txid, attrs);
    let first = c.send_raw(h, &req).unwrap();
    h.advance(secs(1));
    let again = c.send_raw(h, &req).unwrap();
    (first, again)
}

#[test]
fn allocate_retransmission_opens_one_socket() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (first, again) = twice(&mut h, &mut c, Method::ALLOCATE, &[transport_udp()]);
    first.assert_success(Method::ALLOCATE, &c.key);
    assert_eq!(first, again);
    assert_eq!(h.opened.len(), 1);
    assert_eq!(h.created().len(), 1);
    assert_eq!(h.ports_in_use(relay_v4()), 1);
}

#[test]
fn allocate_retransmitted_while_opening_is_answered_once_opened() {
    let mut h = Harness::new();
    h.auto_open = false;
    let mut c = Client::alice(ft());
    c.challenge(&mut h);
    let txid = c.txid();
    let req = c.signed(Method::ALLOCATE, txid, &[transport_udp()]);
    assert!(c.send_raw(&mut h, &req).is_none());
    // Still opening: the retransmission is absorbed, not answered 437.
    assert!(c.send_raw(&mut h, &req).is_none());
    assert_eq!(h.pending_open.len(), 1);
    let id = h.pending_open[0];
    h.open(id, Ok(()));
    let resp = h.take_one(c.ft);
    resp.assert_success(Method::ALLOCATE, &c.key);
    assert_eq!(resp.txid(), txid);
    // Later retransmissions get the cached answer.
    assert_eq!(c.send_raw(&mut h, &req).unwrap(), resp);
}

#[test]
fn failed_allocate_retransmission_gets_the_same_508() {
    let mut h = Harness::new();
    h.open_results.push_back(Err(RelayOpenError::Other));
    let mut c = Client::alice(ft());
    let (first, again) = twice(&mut h, &mut c, Method::ALLOCATE, &[transport_udp()]);
    first.assert_error(Method::ALLOCATE, 508, Some(&c.key));
    assert_eq!(first, again);
    assert_eq!(h.opened.len(), 1, "the failed transaction is not retried");
}

#[test]
fn create_permission_retransmission() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate(&mut h);
    let (first, again) = twice(
        &mut h,
        &mut c,
        Method::CREATE_PERMISSION,
        &[Attr::Peer(peer_a())],
    );
    first.assert_success(Method::CREATE_PERMISSION, &c.key);
    assert_eq!(first, again);
    // The retransmission did not refresh the permission.
    assert_eq!(
        h.alloc(ft()).permissions.iter().next().unwrap().expires,
        h.at(300)
    );
}

#[test]
fn channel_bind_retransmission() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate(&mut h);
    let (first, again) = twice(
        &mut h,
        &mut c,
        Method::CHANNEL_BIND,
        &[channel(0x4000), Attr::Peer(peer_a())],
    );
    first.assert_success(Method::CHANNEL_BIND, &c.key);
    assert_eq!(first, again);
}

#[test]
fn error_responses_are_replayed_too() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.challenge(&mut h);
    let txid = c.txid();
    let req = c.signed(Method::REFRESH, txid, &[]);
    let first = c.send_raw(&mut h, &req).unwrap();
    first.assert_error(Method::REFRESH, 437, Some(&c.key));
    c.allocate(&mut h);
    // The retransmission belongs to the transaction that failed.
    assert_eq!(c.send_raw(&mut h, &req).unwrap(), first);
}

#[test]
fn same_transaction_id_on_another_five_tuple_is_another_transaction() {
    let mut h = Harness::new();
    let mut a = Client::alice(ft());
    a.challenge(&mut h);
    let txid = a.txid();
    let first = a
        .send_raw(
            &mut h,
            &a.signed(Method::ALLOCATE, txid, &[transport_udp()]),
        )
        .unwrap();
    first.assert_success(Method::ALLOCATE, &a.key);
    let mut b = Client::alice(udp("192.0.2.100:40001"));
    b.challenge(&mut h);
    let second = b
        .send_raw(
            &mut h,
            &b.signed(Method::ALLOCATE, txid, &[transport_udp()]),
        )
        .unwrap();
    second.assert_success(Method::ALLOCATE, &b.key);
    assert_ne!(first.relayed(), second.relayed());
    assert_eq!(h.allocation_count(), 2);
}

#[test]
fn remembered_responses_are_forgotten_after_40_seconds() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate(&mut h);
    let txid = c.txid();
    let req = c.signed(Method::REFRESH, txid, &[lifetime(0)]);
    c.send_raw(&mut h, &req)
        .unwrap()
        .assert_success(Method::REFRESH, &c.key);
    h.advance(secs(41));
    // Another stored response evicts the old one...
    let mut other = Client::bob(udp("192.0.2.100:40001"));
    other.allocate(&mut h);
    // ...so a very late retransmission runs again and finds no allocation.
    c.send_raw(&mut h, &req)
        .unwrap()
        .assert_error(Method::REFRESH, 437, Some(&c.key));
}

#[test]
fn unauthenticated_answers_are_not_remembered() {
    let mut h = Harness::new();
    let c = Client::alice(ft());
    let req = c.unsigned(Method::ALLOCATE, TransactionId([5; 12]), &[transport_udp()]);
    for _ in 0..3 {
        h.input(c.ft, &req);
        h.take_one(c.ft).assert_error(Method::ALLOCATE, 401, None);
    }
    assert_eq!(h.server.counters().requests, 3);
    assert_eq!(h.allocation_count(), 0);
}

#[test]
fn the_cache_forgets_after_40_s() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate(&mut h);
    let txid = c.txid();
    let req = c.signed(Method::REFRESH, txid, &[lifetime(0)]);
    c.send_raw(&mut h, &req)
        .unwrap()
        .assert_success(Method::REFRESH, &c.key);
    assert!(h.server.cached_responses() > 0);
    h.advance(secs(41));
    // Purged by the timer pass even though no request came since: an idle server keeps no
    // memory for the traffic it had.
    assert_eq!(h.server.cached_responses(), 0);
    // Forgotten: the same request now runs again and finds no allocation.
    c.send_raw(&mut h, &req)
        .unwrap()
        .assert_error(Method::REFRESH, 437, Some(&c.key));
}
