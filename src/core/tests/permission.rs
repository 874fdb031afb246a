//! CreatePermission (RFC 8656 §9): install permissions for peer IPs, all or nothing.

use super::*;

fn ft() -> FiveTuple {
    udp("192.0.2.100:40000")
}

fn permitted(h: &Harness, ft: FiveTuple) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = h.alloc(ft).permissions.iter().map(|p| p.ip).collect();
    v.sort();
    v
}

#[test]
fn one_permission() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (id, _) = c.allocate(&mut h);
    h.advance_to(10);
    c.permit(&mut h, &[peer_a()]);
    assert_eq!(permitted(&h, ft()), vec![peer_a().ip()]);
    let p = h.alloc(ft()).permissions.iter().next().copied().unwrap();
    assert_eq!(p.expires, h.at(310));
    let (fwd, dgram) = c.send_indication(&mut h, peer_a(), b"hello");
    assert_forward(fwd, &dgram, id, peer_a(), b"hello");
}

#[test]
fn several_peers_in_one_request() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate(&mut h);
    let peers = [
        peer_a(),
        peer_b(),
        sa("198.51.100.3:1"),
        sa("198.51.100.4:2"),
    ];
    c.permit(&mut h, &peers);
    assert_eq!(
        permitted(&h, ft()),
        peers.iter().map(|p| p.ip()).collect::<Vec<_>>()
    );
}

#[test]
fn permission_is_per_ip_whatever_the_port() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (id, _) = c.allocate(&mut h);
    c.permit(&mut h, &[sa("198.51.100.1:1")]);
    let other_port = sa("198.51.100.1:65000");
    let (fwd, dgram) = c.send_indication(&mut h, other_port, b"x");
    assert_forward(fwd, &dgram, id, other_port, b"x");
    assert!(h.peer(id, other_port, b"y").is_some());
    // The same peer twice installs one permission.
    c.permit(&mut h, &[peer_a(), sa("198.51.100.1:2")]);
    assert_eq!(h.alloc(ft()).permissions.len(), 1);
}

#[test]
fn denied_ipv4_peer_gets_403_and_nothing_is_installed() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate(&mut h);
    let denied = [
        "10.0.0.1:1",
        "127.0.0.1:1",
        "0.0.0.0:1",
        "192.0.2.10:50000",
        "169.254.169.254:80",
        "224.0.0.1:1",
    ];
    for (i, d) in denied.iter().enumerate() {
        // The denied peer comes last: the allowed ones before it must not be installed.
        let resp = c.create_permission(&mut h, &[peer_a(), peer_b(), sa(d)]);
        resp.assert_error(Method::CREATE_PERMISSION, 403, Some(&c.key));
        assert!(permitted(&h, ft()).is_empty(), "{d}");
        assert_eq!(h.server.counters().peers_denied, i as u64 + 1);
    }
}

#[test]
fn denied_ipv6_peer_gets_403() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate_with(&mut h, &[family(2)])
        .assert_success(Method::ALLOCATE, &c.key);
    c.permit(&mut h, &[peer_v6()]);
    for d in [
        "[::1]:1",
        "[::ffff:10.0.0.1]:1",
        "[::ffff:127.0.0.1]:1",
        "[2001:db8::5]:1",
        "[fe80::1]:1",
        "[64:ff9b::a00:1]:1",
        "[::]:1",
    ] {
        let resp = c.create_permission(&mut h, &[peer_v6(), sa(d)]);
        resp.assert_error(Method::CREATE_PERMISSION, 403, Some(&c.key));
    }
    assert_eq!(permitted(&h, ft()), vec![peer_v6().ip()]);
}

#[test]
fn family_mismatch_gets_443() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate(&mut h);
    c.create_permission(&mut h, &[peer_a(), peer_v6()])
        .assert_error(Method::CREATE_PERMISSION, 443, Some(&c.key));
    assert!(permitted(&h, ft()).is_empty());

    let mut v6 = Client::alice(udp("192.0.2.100:40001"));
    v6.allocate_with(&mut h, &[family(2)]);
    v6.create_permission(&mut h, &[peer_a()]).assert_error(
        Method::CREATE_PERMISSION,
        443,
        Some(&v6.key),
    );
}

#[test]
fn no_peer_address_gets_400() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate(&mut h);
    c.create_permission(&mut h, &[])
        .assert_error(Method::CREATE_PERMISSION, 400, Some(&c.key));
    let bad = Attr::Raw(AttrType::XOR_PEER_ADDRESS, vec![0, 1, 0]);
    c.request(&mut h, Method::CREATE_PERMISSION, &[bad])
        .assert_error(Method::CREATE_PERMISSION, 400, Some(&c.key));
}

#[test]
fn without_allocation_gets_437() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.create_permission(&mut h, &[peer_a()]).assert_error(
        Method::CREATE_PERMISSION,
        437,
        Some(&c.key),
    );
}

#[test]
fn other_user_gets_441() {
    let mut h = Harness::new();
    let mut alice = Client::alice(ft());
    alice.allocate(&mut h);
    let mut bob = Client::bob(ft());
    bob.create_permission(&mut h, &[peer_a()]).assert_error(
        Method::CREATE_PERMISSION,
        441,
        Some(&bob.key),
    );
    assert!(permitted(&h, ft()).is_empty());
}

#[test]
fn permission_refresh_moves_its_expiry() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate(&mut h);
    c.permit(&mut h, &[peer_a()]);
    h.advance_to(200);
    c.permit(&mut h, &[peer_a()]);
    assert_eq!(
        h.alloc(ft()).permissions.iter().next().unwrap().expires,
        h.at(500)
    );
    assert_eq!(h.alloc(ft()).permissions.len(), 1);
}
