//! `refuse_amplification`: an unauthenticated request whose error answer would be larger than
//! the request gets no answer; one at least as large as its answer gets it; Binding is exempt.

use super::*;

fn refusing() -> Harness {
    Harness::with(Setup {
        refuse_amplification: true,
        ..Setup::default()
    })
}

#[test]
fn small_unauthenticated_requests_get_no_larger_answer() {
    let mut h = refusing();
    let mut c = Client::alice(udp("192.0.2.100:40000"));
    // A bare Allocate (28 bytes) would earn a larger 401: dropped, and no state kept.
    let txid = c.txid();
    let req = c.unsigned(Method::ALLOCATE, txid, &[transport_udp()]);
    assert!(
        c.send_raw(&mut h, &req).is_none(),
        "401 larger than the request"
    );
    // A Binding with an unknown comprehension-required attribute (28 bytes) would earn a
    // 52-byte 420: dropped.
    let unknown = Attr::Raw(AttrType(0x0031), vec![0; 4]);
    let req = build(
        Method::BINDING,
        Class::Request,
        c.txid(),
        &[unknown],
        None,
        false,
    );
    assert!(
        c.send_raw(&mut h, &req).is_none(),
        "420 larger than the request"
    );
    assert_eq!(h.allocation_count(), 0);
    // Each refusal is counted (turnd_datagrams_dropped_total{reason="amplification"}).
    assert_eq!(h.server.counters().dropped[DropReason::Amplification], 2);
}

#[test]
fn a_401_is_120_bytes_with_a_one_letter_realm() {
    // The figure the README quotes: header 20, ERROR-CODE 20, REALM 8, NONCE (53 characters
    // with its RFC 8489 cookie) 60, PASSWORD-ALGORITHMS 12.
    let shared = Setup::default().shared();
    shared.credentials.store(Credentials::new("R", [], []));
    let mut h = Harness::from_shared(shared, 1);
    let mut c = Client::alice(udp("192.0.2.100:40000"));
    let txid = c.txid();
    let req = c.unsigned(Method::ALLOCATE, txid, &[transport_udp()]);
    let resp = c.send_raw(&mut h, &req).expect("401");
    assert_eq!((req.len(), resp.0.len()), (28, 120));
}

#[test]
fn padded_requests_are_answered_and_binding_is_exempt() {
    let mut h = refusing();
    let mut c = Client::alice(udp("192.0.2.100:40000"));
    let pad = Attr::Raw(AttrType::SOFTWARE, vec![b'p'; 200]);
    let txid = c.txid();
    let req = c.unsigned(Method::ALLOCATE, txid, &[transport_udp(), pad]);
    let resp = c
        .send_raw(&mut h, &req)
        .expect("a padded Allocate gets its 401");
    resp.assert_error(Method::ALLOCATE, 401, None);
    assert!(resp.0.len() <= req.len());
    c.nonce = Some(resp.nonce());
    c.allocate(&mut h);
    // Binding: answered although 12 bytes larger than a bare request.
    let req = build(Method::BINDING, Class::Request, c.txid(), &[], None, false);
    let resp = c.send_raw(&mut h, &req).expect("Binding answered");
    assert_eq!(resp.0.len(), req.len() + 12);
}
