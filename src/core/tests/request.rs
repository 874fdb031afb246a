//! What every TURN request shares runs once, in `handlers/dispatch.rs`: a request on an
//! allocation needs the 5-tuple's allocation (437 without one) and the user who created it
//! (441 for another user, RFC 8656 §5), whatever its method; the refusal is signed.

use super::*;

/// Each method that acts on an existing allocation, with attributes that would be valid.
fn on_an_allocation() -> Vec<(Method, Vec<Attr>)> {
    vec![
        (Method::REFRESH, vec![]),
        (Method::CREATE_PERMISSION, vec![Attr::Peer(peer_a())]),
        (
            Method::CHANNEL_BIND,
            vec![channel(0x4000), Attr::Peer(peer_a())],
        ),
        (Method::CONNECT, vec![Attr::Peer(peer_a())]),
    ]
}

#[test]
fn every_method_on_an_allocation_needs_it_and_its_owner() {
    let ft = udp("192.0.2.100:40000");
    let mut h = Harness::new();
    let mut alice = Client::alice(ft);
    alice.challenge(&mut h);
    for (method, attrs) in on_an_allocation() {
        let txid = alice.txid();
        let req = alice.signed(method, txid, &attrs);
        let resp = alice.send_raw(&mut h, &req).expect("answered");
        resp.assert_error(method, 437, Some(&alice.key));
    }
    alice.allocate(&mut h);
    let mut bob = Client::bob(ft);
    bob.challenge(&mut h);
    for (method, attrs) in on_an_allocation() {
        let txid = bob.txid();
        let req = bob.signed(method, txid, &attrs);
        let resp = bob.send_raw(&mut h, &req).expect("answered");
        resp.assert_error(method, 441, Some(&bob.key));
    }
    assert_eq!(h.allocation_count(), 1, "alice's allocation is untouched");
}
