//! Dual allocations (RFC 8656 §7.2 step 9, §8, §10.2): ADDITIONAL-ADDRESS-FAMILY gets one IPv4
//! and one IPv6 relayed address on one 5-tuple; each family refreshes, relays and ends on its
//! own.

use super::*;
use crate::stun::AddressFamily;

fn ft() -> FiveTuple {
    udp("192.0.2.100:40000")
}

/// ADDITIONAL-ADDRESS-FAMILY with family code `f` (2 = IPv6, the only valid value).
fn additional(f: u8) -> Attr {
    Attr::Raw(AttrType::ADDITIONAL_ADDRESS_FAMILY, vec![f, 0, 0, 0])
}

/// Every XOR-RELAYED-ADDRESS of a response, in order.
fn relayed_all(resp: &Resp) -> Vec<SocketAddr> {
    let m = resp.msg();
    let mut out = Vec::new();
    for (t, v) in m.attributes() {
        if t == AttrType::XOR_RELAYED_ADDRESS {
            out.push(crate::stun::address::decode_xor(v, &m.transaction_id()).unwrap());
        }
    }
    out
}

/// ADDRESS-ERROR-CODE of a response: (family code, error code, reason).
fn address_error(resp: &Resp) -> Option<(u8, u16, String)> {
    let m = resp.msg();
    let v = m.get(AttrType::ADDRESS_ERROR_CODE)?;
    let code = u16::from(v[2] & 7) * 100 + u16::from(v[3]);
    Some((v[0], code, String::from_utf8(v[4..].to_vec()).unwrap()))
}

/// A dual allocation for alice on `ft`: (client, id, IPv4 relayed, IPv6 relayed).
fn dual(h: &mut Harness, ft: FiveTuple) -> (Client, AllocationId, SocketAddr, SocketAddr) {
    let mut c = Client::alice(ft);
    let resp = c.allocate_with(h, &[additional(2)]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    let r = relayed_all(&resp);
    assert_eq!(r.len(), 2, "two XOR-RELAYED-ADDRESS");
    (c, h.id_of(ft).unwrap(), r[0], r[1])
}

#[test]
fn dual_allocate_gets_two_relayed_addresses() {
    let mut h = Harness::new();
    let (c, id, v4, v6) = dual(&mut h, ft());
    assert_eq!(v4.ip(), advertised_v4());
    assert_eq!(v6.ip(), relay_v6());
    let binds: Vec<SocketAddr> = h.opened.iter().map(|o| o.bind).collect();
    assert_eq!(
        binds,
        vec![
            SocketAddr::new(relay_v4(), v4.port()),
            SocketAddr::new(relay_v6(), v6.port())
        ],
        "the IPv4 socket first, then the IPv6 one"
    );
    assert!(h.opened.iter().all(|o| o.id == id));
    assert_eq!(h.ports_in_use(relay_v4()), 1);
    assert_eq!(h.ports_in_use(relay_v6()), 1);
    let a = h.alloc(c.ft);
    assert!(a.has_family(AddressFamily::V4) && a.has_family(AddressFamily::V6));
    match &h.events[..] {
        [Event::AllocationCreated {
            relay, additional, ..
        }] => assert_eq!((*relay, *additional), (v4, Some(v6))),
        other => panic!("events: {other:?}"),
    }
}

#[test]
fn dual_response_has_lifetime_and_no_address_error() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let resp = c.allocate_with(&mut h, &[additional(2), lifetime(1200)]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    assert_eq!(resp.lifetime(), 1200);
    assert_eq!(resp.mapped(), c.ft.client);
    assert_eq!(address_error(&resp), None);
}

#[test]
fn ipv6_not_configured_gives_ipv4_only_with_address_error_440() {
    let mut h = Harness::with(Setup {
        v6: false,
        ..Setup::default()
    });
    let mut c = Client::alice(ft());
    let resp = c.allocate_with(&mut h, &[additional(2)]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    let r = relayed_all(&resp);
    assert_eq!(r.len(), 1);
    assert!(r[0].is_ipv4());
    assert_eq!(
        address_error(&resp),
        Some((2, 440, "Address Family not Supported".into()))
    );
    let a = h.alloc(c.ft);
    assert!(a.dual.is_none());
    assert!(!a.has_family(AddressFamily::V6));
    assert_eq!(h.opened.len(), 1);
    // The IPv6 family is not there: its peers are refused.
    c.create_permission(&mut h, &[peer_v6()]).assert_error(
        Method::CREATE_PERMISSION,
        443,
        Some(&c.key),
    );
}

#[test]
fn ipv4_not_configured_gives_ipv6_only_with_address_error_440() {
    let mut h = Harness::with(Setup {
        v4: false,
        ..Setup::default()
    });
    let mut c = Client::alice(ft());
    let resp = c.allocate_with(&mut h, &[additional(2)]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    let r = relayed_all(&resp);
    assert_eq!(r.len(), 1);
    assert!(r[0].is_ipv6());
    assert_eq!(address_error(&resp).map(|e| (e.0, e.1)), Some((1, 440)));
}

#[test]
fn ipv6_socket_failing_gives_ipv4_only_with_440_and_frees_the_port() {
    let mut h = Harness::new();
    // First socket opens; the second fails for a reason other than the port (no address).
    h.open_results = [Ok(()), Err(RelayOpenError::Other)].into();
    let mut c = Client::alice(ft());
    let resp = c.allocate_with(&mut h, &[additional(2)]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    assert_eq!(relayed_all(&resp).len(), 1);
    assert_eq!(address_error(&resp).map(|e| (e.0, e.1)), Some((2, 440)));
    assert_eq!(h.ports_in_use(relay_v6()), 0);
    assert_eq!(h.ports_in_use(relay_v4()), 1);
    assert!(h.alloc(c.ft).dual.is_none());
}

#[test]
fn ipv6_port_taken_is_retried() {
    let mut h = Harness::new();
    h.open_results = [Ok(()), Err(RelayOpenError::AddrInUse)].into();
    let (_, _, _, v6) = dual(&mut h, ft());
    assert_eq!(h.opened.len(), 3);
    assert_eq!(h.opened[2].bind, SocketAddr::new(relay_v6(), v6.port()));
    assert_eq!(h.ports_in_use(relay_v6()), 1);
}

#[test]
fn ipv6_ports_exhausted_gives_address_error_508() {
    let mut h = Harness::with(Setup {
        ports: (PORT_LOW, PORT_LOW),
        ..Setup::default()
    });
    // Take the only IPv6 port.
    let mut v6 = Client::alice(udp("192.0.2.100:40001"));
    v6.allocate_with(&mut h, &[family(2)])
        .assert_success(Method::ALLOCATE, &v6.key);
    let mut c = Client::alice(ft());
    let resp = c.allocate_with(&mut h, &[additional(2)]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    assert_eq!(relayed_all(&resp).len(), 1);
    assert_eq!(address_error(&resp).map(|e| (e.0, e.1)), Some((2, 508)));
}

#[test]
fn ipv4_socket_failing_fails_the_whole_allocate_and_frees_both_ports() {
    let mut h = Harness::new();
    h.open_results = [Err(RelayOpenError::Other)].into();
    let mut c = Client::alice(ft());
    c.allocate_with(&mut h, &[additional(2)])
        .assert_error(Method::ALLOCATE, 508, Some(&c.key));
    assert_eq!(h.allocation_count(), 0);
    assert_eq!(h.ports_in_use(relay_v4()), 0);
    assert_eq!(h.ports_in_use(relay_v6()), 0);
}

#[test]
fn bad_attribute_combinations_get_400() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    // Both family attributes (§7.2 step 6).
    for f in [1, 2] {
        c.allocate_with(&mut h, &[family(f), additional(2)])
            .assert_error(Method::ALLOCATE, 400, Some(&c.key));
    }
    // IPv4 is not a valid ADDITIONAL-ADDRESS-FAMILY (§7.2 step 9), nor is garbage.
    c.allocate_with(&mut h, &[additional(1)])
        .assert_error(Method::ALLOCATE, 400, Some(&c.key));
    c.allocate_with(&mut h, &[additional(3)])
        .assert_error(Method::ALLOCATE, 400, Some(&c.key));
    let short = Attr::Raw(AttrType::ADDITIONAL_ADDRESS_FAMILY, vec![2]);
    c.allocate_with(&mut h, &[short])
        .assert_error(Method::ALLOCATE, 400, Some(&c.key));
    // A port pair reservation is single-family (§7.2 step 8); EVEN-PORT without R is fine.
    c.allocate_with(&mut h, &[even_port(true), additional(2)])
        .assert_error(Method::ALLOCATE, 400, Some(&c.key));
    // RESERVATION-TOKEN excludes it (§7.2 step 5).
    c.allocate_with(&mut h, &[token([1; 8]), additional(2)])
        .assert_error(Method::ALLOCATE, 400, Some(&c.key));
    assert_eq!(h.allocation_count(), 0);
    assert_eq!(h.ports_in_use(relay_v4()) + h.ports_in_use(relay_v6()), 0);
    let resp = c.allocate_with(&mut h, &[even_port(false), additional(2)]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    assert_eq!(relayed_all(&resp)[0].port() % 2, 0);
}

#[test]
fn quota_refusal_returns_both_ports() {
    let mut h = Harness::with(Setup {
        quotas: (1, 0),
        ..Setup::default()
    });
    dual(&mut h, ft());
    let mut c = Client::alice(udp("192.0.2.100:40001"));
    c.allocate_with(&mut h, &[additional(2)])
        .assert_error(Method::ALLOCATE, 486, Some(&c.key));
    assert_eq!(h.ports_in_use(relay_v4()), 1);
    assert_eq!(h.ports_in_use(relay_v6()), 1);
}

#[test]
fn permissions_channels_and_data_for_both_families() {
    let mut h = Harness::new();
    let (mut c, id, _, _) = dual(&mut h, ft());
    // One CreatePermission may name peers of both families (§10.1).
    c.permit(&mut h, &[peer_a(), peer_v6()]);
    for peer in [peer_a(), peer_v6()] {
        let (fwd, dgram) = c.send_indication(&mut h, peer, b"hello");
        assert_forward(fwd, &dgram, id, peer, b"hello");
        let (to, framed) = h.peer(id, peer, b"back").expect("relayed to the client");
        assert_eq!(to, c.ft);
        let m = Message::parse(&framed).unwrap();
        assert_eq!(m.xor_peer_address().unwrap().unwrap(), peer);
    }
    c.bind(&mut h, 0x4000, peer_a());
    c.bind(&mut h, 0x4001, peer_v6());
    for (n, peer) in [(0x4000, peer_a()), (0x4001, peer_v6())] {
        let (fwd, msg) = c.channel_data(&mut h, n, b"chan");
        assert_forward(fwd, &msg, id, peer, b"chan");
        let (_, framed) = h.peer(id, peer, b"back").unwrap();
        assert_eq!(framed[..2], n.to_be_bytes());
    }
}

#[test]
fn single_family_allocations_still_get_443_for_the_other_family() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate(&mut h);
    c.channel_bind(&mut h, 0x4000, peer_v6())
        .assert_error(Method::CHANNEL_BIND, 443, Some(&c.key));
    let mut r = Client::alice(udp("192.0.2.100:40001"));
    r.allocate_with(&mut h, &[family(2)]);
    r.create_permission(&mut h, &[peer_a()]).assert_error(
        Method::CREATE_PERMISSION,
        443,
        Some(&r.key),
    );
}

#[test]
fn refresh_without_family_refreshes_both() {
    let mut h = Harness::new();
    let (mut c, id, _, _) = dual(&mut h, ft());
    h.advance_to(500);
    c.refresh(&mut h, Some(1200))
        .assert_success(Method::REFRESH, &c.key);
    let a = h.server.allocation(id).unwrap();
    assert_eq!(a.expires, h.at(1700));
    assert_eq!(a.dual.unwrap().expires, [Some(h.at(1700)); 2]);
}

#[test]
fn refresh_of_one_family_leaves_the_other_to_expire() {
    let mut h = Harness::new();
    let (mut c, id, _, _) = dual(&mut h, ft());
    h.advance_to(500);
    c.permit(&mut h, &[peer_a(), peer_v6()]);
    c.request(&mut h, Method::REFRESH, &[family(2), lifetime(1200)])
        .assert_success(Method::REFRESH, &c.key);
    assert_eq!(h.server.allocation(id).unwrap().expires, h.at(1700));
    // At 600 s the IPv4 family ends on its own: socket closed, port freed, its permission
    // gone; the allocation and its IPv6 side live on.
    h.advance_to(600);
    assert_eq!(h.closed_families, vec![(id, AddressFamily::V4)]);
    assert!(h.closed.is_empty());
    assert_eq!(h.ports_in_use(relay_v4()), 0);
    assert_eq!(h.ports_in_use(relay_v6()), 1);
    let a = h.server.allocation(id).unwrap();
    assert!(!a.has_family(AddressFamily::V4));
    let permitted: Vec<IpAddr> = a.permissions.iter().map(|p| p.ip).collect();
    assert_eq!(permitted, vec![peer_v6().ip()]);
    assert!(c.send_indication(&mut h, peer_a(), b"x").0.is_none());
    assert!(c.send_indication(&mut h, peer_v6(), b"x").0.is_some());
    // IPv4 is no longer held: naming it is 443, as is a new IPv4 peer.
    c.request(&mut h, Method::REFRESH, &[family(1)])
        .assert_error(Method::REFRESH, 443, Some(&c.key));
    c.create_permission(&mut h, &[peer_b()]).assert_error(
        Method::CREATE_PERMISSION,
        443,
        Some(&c.key),
    );
    assert!(h.ended().is_empty());
    // Then the IPv6 side expires and the allocation ends whole, counted once.
    h.advance_to(1700);
    assert_eq!(h.closed, vec![id]);
    assert_eq!(h.allocation_count(), 0);
    assert_eq!(h.ports_in_use(relay_v6()), 0);
    assert_eq!(h.ended().len(), 1);
    assert_eq!(h.server.counters().permissions, 0);
}

#[test]
fn deleting_one_family_keeps_the_other_and_its_channels() {
    let mut h = Harness::new();
    let (mut c, id, _, _) = dual(&mut h, ft());
    c.bind(&mut h, 0x4000, peer_a());
    c.bind(&mut h, 0x4001, peer_v6());
    assert_eq!(h.server.counters().channels, 2);
    let resp = c.request(&mut h, Method::REFRESH, &[family(1), lifetime(0)]);
    resp.assert_success(Method::REFRESH, &c.key);
    assert_eq!(resp.lifetime(), 0);
    assert_eq!(h.closed_families, vec![(id, AddressFamily::V4)]);
    assert_eq!(h.ports_in_use(relay_v4()), 0);
    assert_eq!(h.server.counters().channels, 1);
    assert_eq!(h.server.counters().permissions, 1);
    assert!(c.channel_data(&mut h, 0x4000, b"x").0.is_none());
    let (fwd, msg) = c.channel_data(&mut h, 0x4001, b"y");
    assert_forward(fwd, &msg, id, peer_v6(), b"y");
    assert!(h.peer(id, peer_a(), b"z").is_none());
    // Deleting the last family ends the allocation.
    c.request(&mut h, Method::REFRESH, &[family(2), lifetime(0)])
        .assert_success(Method::REFRESH, &c.key);
    assert_eq!(h.closed, vec![id]);
    assert_eq!(h.allocation_count(), 0);
    assert_eq!(h.ports_in_use(relay_v6()), 0);
    match h.events.last() {
        Some(Event::AllocationEnded {
            additional, reason, ..
        }) => {
            assert!(additional.is_some(), "still counted as dual");
            assert_eq!(*reason, EndReason::Deleted);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn refresh_family_rules_on_single_family_allocations() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (id, _) = c.allocate(&mut h);
    c.request(&mut h, Method::REFRESH, &[family(2)])
        .assert_error(Method::REFRESH, 443, Some(&c.key));
    c.request(&mut h, Method::REFRESH, &[family(1), lifetime(1800)])
        .assert_success(Method::REFRESH, &c.key);
    assert_eq!(h.server.allocation(id).unwrap().expires, h.now + secs(1800));
    c.request(&mut h, Method::REFRESH, &[family(1), lifetime(0)])
        .assert_success(Method::REFRESH, &c.key);
    assert_eq!(h.closed, vec![id]);
    assert_eq!(h.allocation_count(), 0);
}

#[test]
fn expiry_frees_both_families() {
    let mut h = Harness::new();
    let (mut c, id, _, _) = dual(&mut h, ft());
    c.permit(&mut h, &[peer_a(), peer_v6()]);
    h.advance_to(600);
    assert_eq!(h.closed, vec![id]);
    assert!(h.closed_families.is_empty());
    assert_eq!(h.allocation_count(), 0);
    assert_eq!(h.ports_in_use(relay_v4()), 0);
    assert_eq!(h.ports_in_use(relay_v6()), 0);
    assert_eq!(h.server.counters().permissions, 0);
    assert_eq!(h.ended().len(), 1);
    assert_eq!(h.ended()[0].1, EndReason::Expired);
}

#[test]
fn family_past_its_expiry_relays_nothing_before_its_timer_fires() {
    let mut h = Harness::new();
    let (mut c, id, _, _) = dual(&mut h, ft());
    c.request(&mut h, Method::REFRESH, &[family(2), lifetime(1200)])
        .assert_success(Method::REFRESH, &c.key);
    h.advance_to(550);
    c.permit(&mut h, &[peer_a(), peer_v6()]);
    // A late shell: the clock passes the IPv4 expiry (600 s) without the timer firing.
    h.jump(secs(51));
    assert!(c.send_indication(&mut h, peer_a(), b"x").0.is_none());
    assert!(h.peer(id, peer_a(), b"x").is_none());
    assert!(c.send_indication(&mut h, peer_v6(), b"x").0.is_some());
}

#[test]
fn closing_a_dual_allocation_while_opening_frees_both_ports() {
    let mut h = Harness::new();
    h.auto_open = false;
    let mut c = Client::alice(ft());
    c.challenge(&mut h);
    let txid = c.txid();
    let req = c.signed(Method::ALLOCATE, txid, &[transport_udp(), additional(2)]);
    h.input(c.ft, &req);
    let id = h.pending_open[0];
    assert_eq!(h.ports_in_use(relay_v6()), 1);
    h.server.close_all(h.now);
    h.drain();
    assert_eq!(h.ports_in_use(relay_v4()), 0);
    assert_eq!(h.ports_in_use(relay_v6()), 0);
    assert_eq!(h.closed, vec![id]);
}

#[test]
fn the_turnbis_draft_code_point_0x8032_is_read_as_additional_address_family() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let draft = |f: u8| Attr::Raw(AttrType(0x8032), vec![f, 0, 0, 0]);
    c.allocate_with(&mut h, &[draft(1)])
        .assert_error(Method::ALLOCATE, 400, Some(&c.key));
    let resp = c.allocate_with(&mut h, &[draft(2)]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    assert_eq!(relayed_all(&resp).len(), 2);
}
