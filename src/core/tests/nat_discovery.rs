//! RFC 5780 NAT behaviour discovery on Binding: RESPONSE-ORIGIN, OTHER-ADDRESS, the source
//! address CHANGE-REQUEST selects (Table 1), RESPONSE-PORT, PADDING, and the 420 when
//! discovery is off.

use super::*;
use crate::core::nat_discovery::NatPair;

const A1P1: &str = "192.0.2.1:3478";
const A1P2: &str = "192.0.2.1:3479";
const A2P1: &str = "192.0.2.2:3478";
const A2P2: &str = "192.0.2.2:3479";
const CLIENT: &str = "192.0.2.100:40000";

fn harness() -> Harness {
    Harness::with(Setup {
        nat_discovery: vec![NatPair {
            primary: sa(A1P1),
            alternate: sa(A2P2),
        }],
        ..Setup::default()
    })
}

fn change(ip: bool, port: bool) -> Attr {
    let flags = if ip { 4 } else { 0 } | if port { 2 } else { 0 };
    Attr::Raw(AttrType::CHANGE_REQUEST, vec![0, 0, 0, flags])
}

fn response_port(p: u16) -> Attr {
    let b = p.to_be_bytes();
    Attr::Raw(AttrType::RESPONSE_PORT, vec![b[0], b[1], 0, 0])
}

fn binding(attrs: &[Attr], fingerprint: bool) -> Vec<u8> {
    build(
        Method::BINDING,
        Class::Request,
        TransactionId([5; 12]),
        attrs,
        None,
        fingerprint,
    )
}

/// Sends `req` to server address `local`; returns the one transmit, whatever its 5-tuple.
fn exchange(h: &mut Harness, local: &str, req: &[u8]) -> (FiveTuple, Resp) {
    let from = FiveTuple::udp(sa(CLIENT), sa(local));
    assert!(h.input(from, req).is_none());
    assert_eq!(h.transmits.len(), 1, "{:?}", h.transmits);
    let (to, payload) = h.transmits.pop_front().unwrap();
    (to, Resp(payload))
}

fn addr_attr(r: &Resp, t: AttrType) -> SocketAddr {
    let m = r.msg();
    crate::stun::address::decode_plain(m.get(t).expect("attribute present")).expect("address")
}

#[test]
fn table_1_every_local_address_and_flag() {
    let mut h = harness();
    let others = [(A1P1, A2P2), (A1P2, A2P1), (A2P1, A1P2), (A2P2, A1P1)];
    for (local, other) in others {
        let (da, dp) = (sa(local).ip(), sa(local).port());
        let (ca, cp) = (sa(other).ip(), sa(other).port());
        for (ip, port, source) in [
            (false, false, SocketAddr::new(da, dp)),
            (true, false, SocketAddr::new(ca, dp)),
            (false, true, SocketAddr::new(da, cp)),
            (true, true, SocketAddr::new(ca, cp)),
        ] {
            let (to, resp) = exchange(&mut h, local, &binding(&[change(ip, port)], false));
            assert_eq!(
                to,
                FiveTuple::udp(sa(CLIENT), source),
                "{local} {ip} {port}"
            );
            assert_eq!(resp.class(), Class::SuccessResponse);
            assert_eq!(resp.mapped(), sa(CLIENT));
            assert_eq!(addr_attr(&resp, AttrType::MAPPED_ADDRESS), sa(CLIENT));
            assert_eq!(addr_attr(&resp, AttrType::RESPONSE_ORIGIN), source);
            assert_eq!(addr_attr(&resp, AttrType::OTHER_ADDRESS), sa(other));
            resp.assert_unsigned();
        }
    }
}

#[test]
fn plain_binding_carries_origin_and_other_address() {
    let mut h = harness();
    let (to, resp) = exchange(&mut h, A1P1, &binding(&[], true));
    assert_eq!(to, FiveTuple::udp(sa(CLIENT), sa(A1P1)));
    assert_eq!(addr_attr(&resp, AttrType::RESPONSE_ORIGIN), sa(A1P1));
    assert_eq!(addr_attr(&resp, AttrType::OTHER_ADDRESS), sa(A2P2));
    assert!(resp.msg().has_fingerprint());
}

#[test]
fn response_port_redirects_to_that_port_of_the_source_ip() {
    let mut h = harness();
    let (to, resp) = exchange(
        &mut h,
        A1P1,
        &binding(&[response_port(50000), change(true, false)], false),
    );
    assert_eq!(to.client, sa("192.0.2.100:50000"));
    assert_eq!(to.server, sa(A2P1));
    // XOR-MAPPED-ADDRESS still reports where the request came from.
    assert_eq!(resp.mapped(), sa(CLIENT));
}

#[test]
fn padding_is_echoed_at_the_request_length() {
    let mut h = harness();
    let req = binding(&[Attr::Raw(AttrType::PADDING, vec![0xAB; 1499])], false);
    let (_, resp) = exchange(&mut h, A1P1, &req);
    let m = resp.msg();
    assert_eq!(m.get(AttrType::PADDING).map(<[u8]>::len), Some(1500));
    // Bytes out: the request plus four IPv4 address attributes (48), less its own padding
    // rounding — never a multiple of it.
    assert!(
        resp.0.len() <= req.len() + 48,
        "{} vs {}",
        resp.0.len(),
        req.len()
    );
}

#[test]
fn padding_with_response_port_gets_400_from_the_receiving_address() {
    let mut h = harness();
    let req = binding(
        &[
            Attr::Raw(AttrType::PADDING, vec![0; 64]),
            response_port(50000),
        ],
        false,
    );
    let (to, resp) = exchange(&mut h, A1P1, &req);
    assert_eq!(to, FiveTuple::udp(sa(CLIENT), sa(A1P1)));
    resp.assert_error(Method::BINDING, 400, None);
}

#[test]
fn malformed_attributes_get_400() {
    let mut h = harness();
    for bad in [
        Attr::Raw(AttrType::CHANGE_REQUEST, vec![0, 6]),
        Attr::Raw(AttrType::RESPONSE_PORT, vec![0, 0, 0, 0]),
        Attr::Raw(AttrType::RESPONSE_PORT, vec![1]),
    ] {
        let (to, resp) = exchange(&mut h, A1P1, &binding(&[bad], false));
        assert_eq!(to.server, sa(A1P1));
        resp.assert_error(Method::BINDING, 400, None);
    }
}

#[test]
fn without_discovery_change_request_gets_420() {
    let mut h = Harness::new();
    for attr in [
        change(true, true),
        Attr::Raw(AttrType::PADDING, vec![0; 8]),
        response_port(50000),
    ] {
        let ft = udp(CLIENT);
        h.input(ft, &binding(std::slice::from_ref(&attr), false));
        let resp = h.take_one(ft);
        resp.assert_error(Method::BINDING, 420, None);
        let Attr::Raw(t, _) = attr else {
            unreachable!()
        };
        assert_eq!(
            resp.msg().unknown_attributes().collect::<Vec<_>>(),
            vec![t.0]
        );
    }
    // And a plain Binding gets neither OTHER-ADDRESS nor RESPONSE-ORIGIN.
    let ft = udp(CLIENT);
    h.input(ft, &binding(&[], false));
    let resp = h.take_one(ft);
    assert!(!resp.msg().has(AttrType::OTHER_ADDRESS));
    assert!(!resp.msg().has(AttrType::RESPONSE_ORIGIN));
}

#[test]
fn other_listen_addresses_and_streams_are_not_discovery() {
    let mut h = harness();
    // A listen address outside the pair (here IPv6), and TCP to the primary address.
    let v6 = udp("[2001:db8:2::100]:40000");
    let mut tcp_primary = tcp(CLIENT);
    tcp_primary.server = sa(A1P1);
    for ft in [v6, tcp_primary] {
        h.input(ft, &binding(&[change(true, false)], false));
        h.take_one(ft).assert_error(Method::BINDING, 420, None);
        h.input(ft, &binding(&[], false));
        assert!(!h.take_one(ft).msg().has(AttrType::OTHER_ADDRESS));
    }
}

#[test]
fn turn_requests_on_secondary_addresses_are_dropped() {
    let mut h = harness();
    let allocate = build(
        Method::ALLOCATE,
        Class::Request,
        TransactionId([8; 12]),
        &[transport_udp()],
        None,
        false,
    );
    for local in [A1P2, A2P1, A2P2] {
        let ft = FiveTuple::udp(sa(CLIENT), sa(local));
        assert!(h.input(ft, &allocate).is_none());
        h.assert_silent();
    }
    // On the primary address, TURN is served as usual (a 401 challenge).
    let ft = FiveTuple::udp(sa(CLIENT), sa(A1P1));
    h.input(ft, &allocate);
    h.take_one(ft).assert_error(Method::ALLOCATE, 401, None);
    assert_eq!(h.allocation_count(), 0);
}

#[test]
fn change_request_on_allocate_is_still_unknown() {
    let mut h = harness();
    let mut c = Client::new(FiveTuple::udp(sa(CLIENT), sa(A1P1)), "alice", "alice-pw");
    let resp = c.allocate_with(&mut h, &[change(true, false)]);
    assert_eq!(resp.code(), Some(420));
}
