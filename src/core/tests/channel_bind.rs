//! ChannelBind (RFC 8656 §11): numbers, conflicts, refresh, cool-down, and the permission a
//! binding installs.

use super::*;
use crate::core::channel::{CHANNEL_COOLDOWN, CHANNEL_LIFETIME};

fn ft() -> FiveTuple {
    udp("192.0.2.100:40000")
}

fn allocated(h: &mut Harness) -> (Client, AllocationId) {
    let mut c = Client::alice(ft());
    let (id, _) = c.allocate(h);
    (c, id)
}

#[test]
fn channel_bind_success_and_data_both_ways() {
    let mut h = Harness::new();
    let (mut c, id) = allocated(&mut h);
    c.bind(&mut h, 0x4000, peer_a());
    let a = h.alloc(ft());
    let b: Vec<_> = a.channels.active(h.now).copied().collect();
    assert_eq!(b.len(), 1);
    assert_eq!(
        (b[0].number, b[0].peer, b[0].expires),
        (0x4000, peer_a(), h.now + CHANNEL_LIFETIME)
    );
    let (fwd, msg) = c.channel_data(&mut h, 0x4000, b"ping");
    assert_forward(fwd, &msg, id, peer_a(), b"ping");
    let (to, framed) = h.peer(id, peer_a(), b"pong").unwrap();
    assert_eq!(to, c.ft);
    assert_eq!(framed, [0x40, 0x00, 0x00, 0x04, b'p', b'o', b'n', b'g']);
}

#[test]
fn channel_bind_installs_a_permission() {
    let mut h = Harness::new();
    let (mut c, id) = allocated(&mut h);
    h.advance_to(7);
    c.bind(&mut h, 0x4001, peer_a());
    let perms: Vec<_> = h.alloc(ft()).permissions.iter().copied().collect();
    assert_eq!(perms.len(), 1);
    assert_eq!((perms[0].ip, perms[0].expires), (peer_a().ip(), h.at(307)));
    // Send indications and peer datagrams from other ports of that IP work too.
    let (fwd, dgram) = c.send_indication(&mut h, peer_a(), b"via send");
    assert_forward(fwd, &dgram, id, peer_a(), b"via send");
    let other_port = SocketAddr::new(peer_a().ip(), 1);
    let (_, framed) = h.peer(id, other_port, b"data").unwrap();
    let m = Message::parse(&framed).unwrap();
    assert_eq!((m.method(), m.class()), (Method::DATA, Class::Indication));
}

#[test]
fn invalid_channel_numbers_get_400() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    for n in [0x0000, 0x3FFF, 0x8000, 0xFFFF] {
        c.channel_bind(&mut h, n, peer_a())
            .assert_error(Method::CHANNEL_BIND, 400, Some(&c.key));
    }
    assert_eq!(h.alloc(ft()).channels.len(), 0);
    assert_eq!(
        h.alloc(ft()).permissions.len(),
        0,
        "a rejected bind installs no permission"
    );
}

#[test]
fn whole_channel_range_is_accepted() {
    let mut h = Harness::new();
    let (mut c, id) = allocated(&mut h);
    c.bind(&mut h, 0x4000, peer_a());
    c.bind(&mut h, 0x4FFF, peer_b());
    // RFC 5766 clients use up to 0x7FFF.
    c.bind(&mut h, 0x7FFF, sa("198.51.100.3:3"));
    let (fwd, msg) = c.channel_data(&mut h, 0x7FFF, b"top");
    assert_forward(fwd, &msg, id, sa("198.51.100.3:3"), b"top");
}

#[test]
fn missing_attributes_get_400() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    c.request(&mut h, Method::CHANNEL_BIND, &[channel(0x4000)])
        .assert_error(Method::CHANNEL_BIND, 400, Some(&c.key));
    c.request(&mut h, Method::CHANNEL_BIND, &[Attr::Peer(peer_a())])
        .assert_error(Method::CHANNEL_BIND, 400, Some(&c.key));
    let short = Attr::Raw(AttrType::CHANNEL_NUMBER, vec![0x40, 0]);
    c.request(&mut h, Method::CHANNEL_BIND, &[short, Attr::Peer(peer_a())])
        .assert_error(Method::CHANNEL_BIND, 400, Some(&c.key));
}

#[test]
fn number_bound_to_another_peer_gets_400() {
    let mut h = Harness::new();
    let (mut c, id) = allocated(&mut h);
    c.bind(&mut h, 0x4000, peer_a());
    c.channel_bind(&mut h, 0x4000, peer_b())
        .assert_error(Method::CHANNEL_BIND, 400, Some(&c.key));
    // Same IP, other port is another peer too.
    c.channel_bind(&mut h, 0x4000, sa("198.51.100.1:5001"))
        .assert_error(Method::CHANNEL_BIND, 400, Some(&c.key));
    assert!(!h
        .alloc(ft())
        .permissions
        .iter()
        .any(|p| p.ip == peer_b().ip()));
    let (fwd, msg) = c.channel_data(&mut h, 0x4000, b"x");
    assert_forward(fwd, &msg, id, peer_a(), b"x");
}

#[test]
fn peer_bound_to_another_number_gets_400() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    c.bind(&mut h, 0x4000, peer_a());
    c.channel_bind(&mut h, 0x4001, peer_a())
        .assert_error(Method::CHANNEL_BIND, 400, Some(&c.key));
    assert_eq!(h.alloc(ft()).channels.len(), 1);
}

#[test]
fn rebinding_the_same_pair_refreshes_it() {
    let mut h = Harness::new();
    let (mut c, id) = allocated(&mut h);
    c.bind(&mut h, 0x4000, peer_a());
    h.advance_to(500);
    c.bind(&mut h, 0x4000, peer_a());
    let b = *h.alloc(ft()).channels.by_number(0x4000, h.now).unwrap();
    assert_eq!(b.expires, h.at(1100));
    // Keep the allocation and the permission alive past the first binding's expiry.
    c.refresh(&mut h, None);
    h.advance_to(700);
    c.permit(&mut h, &[peer_a()]);
    let (fwd, msg) = c.channel_data(&mut h, 0x4000, b"still");
    assert_forward(fwd, &msg, id, peer_a(), b"still");
}

#[test]
fn cool_down_after_expiry() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    c.bind(&mut h, 0x4000, peer_a());
    // Keep the allocation alive.
    c.refresh(&mut h, Some(3600));
    let expired = CHANNEL_LIFETIME.as_secs();
    h.advance_to(expired);
    assert_eq!(h.alloc(ft()).channels.active(h.now).count(), 0);
    // During the cool-down neither the number nor the peer may be bound elsewhere...
    c.channel_bind(&mut h, 0x4000, peer_b())
        .assert_error(Method::CHANNEL_BIND, 400, Some(&c.key));
    c.channel_bind(&mut h, 0x4001, peer_a())
        .assert_error(Method::CHANNEL_BIND, 400, Some(&c.key));
    h.advance_to(expired + CHANNEL_COOLDOWN.as_secs() - 1);
    c.channel_bind(&mut h, 0x4000, peer_b())
        .assert_error(Method::CHANNEL_BIND, 400, Some(&c.key));
    // ...and once it is over, both are free.
    h.advance_to(expired + CHANNEL_COOLDOWN.as_secs());
    c.bind(&mut h, 0x4000, peer_b());
    c.bind(&mut h, 0x4001, peer_a());
}

#[test]
fn same_pair_may_be_rebound_during_cool_down() {
    let mut h = Harness::new();
    let (mut c, id) = allocated(&mut h);
    c.bind(&mut h, 0x4000, peer_a());
    c.refresh(&mut h, Some(3600));
    h.advance_to(CHANNEL_LIFETIME.as_secs() + 10);
    assert!(c.channel_data(&mut h, 0x4000, b"x").0.is_none());
    c.bind(&mut h, 0x4000, peer_a());
    let (fwd, msg) = c.channel_data(&mut h, 0x4000, b"back");
    assert_forward(fwd, &msg, id, peer_a(), b"back");
}

#[test]
fn denied_peer_gets_403() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    for d in ["10.0.0.1:1", "127.0.0.1:3478", "203.0.113.10:50000"] {
        c.channel_bind(&mut h, 0x4000, sa(d))
            .assert_error(Method::CHANNEL_BIND, 403, Some(&c.key));
    }
    assert_eq!(h.alloc(ft()).channels.len(), 0);
    assert_eq!(h.alloc(ft()).permissions.len(), 0);
    assert_eq!(h.server.counters().peers_denied, 3);

    let mut v6 = Client::alice(udp("192.0.2.100:40001"));
    v6.allocate_with(&mut h, &[family(2)]);
    v6.channel_bind(&mut h, 0x4000, sa("[::ffff:127.0.0.1]:1"))
        .assert_error(Method::CHANNEL_BIND, 403, Some(&v6.key));
    v6.bind(&mut h, 0x4000, peer_v6());
}

#[test]
fn family_mismatch_gets_443() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    c.channel_bind(&mut h, 0x4000, peer_v6())
        .assert_error(Method::CHANNEL_BIND, 443, Some(&c.key));
}

#[test]
fn without_allocation_437_other_user_441() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.channel_bind(&mut h, 0x4000, peer_a())
        .assert_error(Method::CHANNEL_BIND, 437, Some(&c.key));
    c.allocate(&mut h);
    let mut bob = Client::bob(ft());
    bob.channel_bind(&mut h, 0x4000, peer_a()).assert_error(
        Method::CHANNEL_BIND,
        441,
        Some(&bob.key),
    );
}

#[test]
fn bindings_are_per_allocation() {
    let mut h = Harness::new();
    let (mut c, id) = allocated(&mut h);
    let mut d = Client::bob(udp("192.0.2.100:40001"));
    let (id2, _) = d.allocate(&mut h);
    c.bind(&mut h, 0x4000, peer_a());
    d.bind(&mut h, 0x4000, peer_b());
    let (fwd, msg) = c.channel_data(&mut h, 0x4000, b"c");
    assert_forward(fwd, &msg, id, peer_a(), b"c");
    let (fwd, msg) = d.channel_data(&mut h, 0x4000, b"d");
    assert_forward(fwd, &msg, id2, peer_b(), b"d");
}
