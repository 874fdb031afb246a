//! Binding (RFC 8489 §7.3): no authentication, XOR-MAPPED-ADDRESS is the client's address.

use super::*;

fn binding(h: &mut Harness, ft: FiveTuple, fingerprint: bool) -> Resp {
    let req = build(
        Method::BINDING,
        Class::Request,
        TransactionId([9; 12]),
        &[],
        None,
        fingerprint,
    );
    assert!(h.input(ft, &req).is_none());
    h.take_one(ft)
}

#[test]
fn binding_v4_returns_client_address() {
    let mut h = Harness::new();
    let ft = udp("192.0.2.100:40000");
    let resp = binding(&mut h, ft, false);
    let m = resp.msg();
    assert_eq!(
        (m.method(), m.class()),
        (Method::BINDING, Class::SuccessResponse)
    );
    assert_eq!(m.transaction_id(), TransactionId([9; 12]));
    assert_eq!(resp.mapped(), ft.client);
    resp.assert_unsigned();
    assert!(!m.has_fingerprint());
}

#[test]
fn binding_v6_returns_client_address() {
    let mut h = Harness::new();
    let ft = udp("[2001:db8:2::100]:40000");
    let resp = binding(&mut h, ft, false);
    assert_eq!(resp.class(), Class::SuccessResponse);
    assert_eq!(resp.mapped(), ft.client);
}

#[test]
fn binding_echoes_fingerprint_when_requested() {
    let mut h = Harness::new();
    let ft = udp("192.0.2.100:40000");
    // Message::parse verifies FINGERPRINT, so a present one is also a correct one.
    assert!(binding(&mut h, ft, true).msg().has_fingerprint());
    assert!(!binding(&mut h, ft, false).msg().has_fingerprint());
}

#[test]
fn binding_needs_no_auth_and_keeps_no_state() {
    let mut h = Harness::new();
    for port in 40000..40010 {
        let ft = udp(&format!("192.0.2.100:{port}"));
        assert_eq!(binding(&mut h, ft, false).class(), Class::SuccessResponse);
    }
    assert_eq!(h.allocation_count(), 0);
    assert_eq!(h.server.poll_timeout(), None);
    let c = h.server.counters();
    assert_eq!((c.requests, c.auth_failures), (10, 0));
}

#[test]
fn binding_with_unknown_required_attribute_gets_420() {
    let mut h = Harness::new();
    let ft = udp("192.0.2.100:40000");
    let attrs = [Attr::Raw(AttrType(0x7F01), vec![1, 2, 3, 4])];
    let req = build(
        Method::BINDING,
        Class::Request,
        TransactionId([3; 12]),
        &attrs,
        None,
        false,
    );
    h.input(ft, &req);
    let resp = h.take_one(ft);
    resp.assert_error(Method::BINDING, 420, None);
    assert_eq!(
        resp.msg().unknown_attributes().collect::<Vec<_>>(),
        vec![0x7F01]
    );
}

#[test]
fn binding_ignores_unknown_optional_attribute() {
    let mut h = Harness::new();
    let ft = udp("192.0.2.100:40000");
    let attrs = [Attr::Raw(AttrType(0xC001), vec![1, 2, 3])];
    let req = build(
        Method::BINDING,
        Class::Request,
        TransactionId([3; 12]),
        &attrs,
        None,
        false,
    );
    h.input(ft, &req);
    assert_eq!(h.take_one(ft).class(), Class::SuccessResponse);
}

#[test]
fn garbage_responses_and_other_indications_are_dropped() {
    let mut h = Harness::new();
    let ft = udp("192.0.2.100:40000");
    let txid = TransactionId([1; 12]);
    let inputs: Vec<Vec<u8>> = vec![
        vec![],
        vec![0, 1, 0, 0],
        vec![0xFF; 40],
        // A success response and a Data indication: not for a server.
        build(
            Method::BINDING,
            Class::SuccessResponse,
            txid,
            &[],
            None,
            false,
        ),
        build(
            Method::DATA,
            Class::Indication,
            txid,
            &[data(b"x")],
            None,
            false,
        ),
        // A Binding request with a bad magic cookie.
        {
            let mut m = build(Method::BINDING, Class::Request, txid, &[], None, false);
            m[4] ^= 1;
            m
        },
    ];
    for i in &inputs {
        assert!(h.input(ft, i).is_none());
    }
    h.assert_silent();
    assert_eq!(h.server.counters().dropped[DropReason::Malformed], 4);
}

/// RFC 8489 §6.3: the receiver "checks ... that the method value is a supported method. It
/// checks that the message class is allowed for the particular method. ... If any errors are
/// detected, the message is silently discarded." So a request of an unknown method gets no
/// answer (not a 400), and is counted as malformed; nor do requests of the methods that are
/// only ever indications (Send, Data, ConnectionAttempt: RFC 8656 §17, RFC 6062 §6.1).
#[test]
fn unknown_method_request_is_discarded() {
    let mut h = Harness::new();
    let ft = udp("192.0.2.100:40000");
    let methods = [
        // No method 0x050 or 0xfff exists.
        Method(0x050),
        Method(0xfff),
        Method::SEND,
        Method::DATA,
        Method::CONNECTION_ATTEMPT,
    ];
    for (i, method) in methods.into_iter().enumerate() {
        let txid = TransactionId([i as u8 + 2; 12]);
        h.input(ft, &build(method, Class::Request, txid, &[], None, false));
    }
    h.assert_silent();
    let c = h.server.counters();
    assert_eq!(c.dropped[DropReason::Malformed], methods.len() as u64);
    assert_eq!(c.requests, 0, "not a request the server serves");
    let answered: u64 = c.responses.values().iter().flat_map(|r| r.values()).sum();
    assert_eq!(answered, 0);
}

/// Not even a signed request of an unknown method is answered, on an allocation's 5-tuple:
/// the method is checked before authentication, so no 401 and no 437 either.
#[test]
fn unknown_method_on_an_allocation_is_discarded() {
    let mut h = Harness::new();
    let mut c = Client::alice(udp("192.0.2.100:40000"));
    c.allocate(&mut h);
    let txid = c.txid();
    let req = c.signed(Method(0x050), txid, &[]);
    assert!(c.send_raw(&mut h, &req).is_none());
    h.assert_silent();
    assert_eq!(h.allocation_count(), 1, "the allocation is untouched");
}

/// RFC 8489 §6.3.2: an indication gets no response, and one of an unknown method, or of a
/// method only a server sends (Data, ConnectionAttempt), is dropped — with no effect on the
/// allocation and nothing relayed.
#[test]
fn unknown_and_server_only_indications_are_dropped() {
    let mut h = Harness::new();
    let ft = udp("192.0.2.100:40000");
    let mut c = Client::alice(ft);
    c.allocate(&mut h);
    c.permit(&mut h, &[peer_a()]);
    for method in [Method(0x050), Method::DATA, Method::CONNECTION_ATTEMPT] {
        let txid = c.txid();
        let ind = build(
            method,
            Class::Indication,
            txid,
            &[Attr::Peer(peer_a()), data(b"x")],
            None,
            false,
        );
        assert!(h.input(ft, &ind).is_none(), "{method:?}: nothing relayed");
    }
    h.assert_silent();
    assert_eq!(h.allocation_count(), 1);
}
