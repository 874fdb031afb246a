//! Allocate (RFC 8656 §7.2): checks, relay address choice, lifetimes, EVEN-PORT and
//! reservations, and the shell's answers to `OpenRelay`.

use super::*;

fn ft(port: u16) -> FiveTuple {
    udp(&format!("192.0.2.100:{port}"))
}

fn in_range(port: u16) -> bool {
    (PORT_LOW..=PORT_HIGH).contains(&port)
}

#[test]
fn allocate_success() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft(40000));
    let resp = c.allocate_with(&mut h, &[]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    let relayed = resp.relayed();
    assert_eq!(
        relayed.ip(),
        advertised_v4(),
        "clients are told the advertised address"
    );
    assert!(in_range(relayed.port()));
    assert_eq!(resp.lifetime(), 600);
    assert_eq!(resp.mapped(), c.ft.client);
    assert!(!resp.has(AttrType::RESERVATION_TOKEN));

    let id = h.id_of(c.ft).unwrap();
    assert_eq!(
        h.opened,
        vec![Opened {
            id,
            bind: SocketAddr::new(relay_v4(), relayed.port()),
            dont_fragment: false
        }]
    );
    let a = h.alloc(c.ft);
    assert_eq!(a.relay, SocketAddr::new(relay_v4(), relayed.port()));
    assert_eq!(a.advertised, relayed);
    assert_eq!(a.expires, h.now + secs(600));
    assert_eq!(&*a.username, "alice");
    assert_eq!(h.ports_in_use(relay_v4()), 1);
    match &h.events[..] {
        [Event::AllocationCreated {
            id: eid,
            five_tuple,
            username,
            relay,
            additional: None,
            lifetime,
        }] => {
            assert_eq!(
                (*eid, *five_tuple, &**username, *relay, *lifetime),
                (id, c.ft, "alice", relayed, secs(600))
            );
        }
        other => panic!("events: {other:?}"),
    }
    assert_eq!(h.server.poll_timeout(), Some(h.now + secs(600)));
}

#[test]
fn lifetime_is_clamped_between_default_and_max() {
    let mut h = Harness::new();
    for (i, (asked, got)) in [
        (30, 600),
        (0, 600),
        (600, 600),
        (1800, 1800),
        (3600, 3600),
        (100_000, 3600),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = Client::alice(ft(40000 + i as u16));
        let resp = c.allocate_with(&mut h, &[lifetime(asked)]);
        resp.assert_success(Method::ALLOCATE, &c.key);
        assert_eq!(resp.lifetime(), got, "asked {asked}");
        assert_eq!(h.alloc(c.ft).expires, h.now + secs(got.into()));
    }
}

#[test]
fn missing_requested_transport_gets_400() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft(40000));
    c.request(&mut h, Method::ALLOCATE, &[])
        .assert_error(Method::ALLOCATE, 400, Some(&c.key));
    // Malformed (wrong length) counts as missing.
    let bad = Attr::Raw(AttrType::REQUESTED_TRANSPORT, vec![17]);
    c.request(&mut h, Method::ALLOCATE, &[bad])
        .assert_error(Method::ALLOCATE, 400, Some(&c.key));
    assert_eq!(h.allocation_count(), 0);
}

#[test]
fn transport_other_than_udp_or_tcp_gets_442() {
    // TCP (6) is RFC 6062's: see tests/tcp_relay.rs. SCTP (132) is offered by no one.
    let mut h = Harness::new();
    let mut c = Client::alice(ft(40000));
    c.request(&mut h, Method::ALLOCATE, &[transport(132)])
        .assert_error(Method::ALLOCATE, 442, Some(&c.key));
    assert_eq!(h.allocation_count(), 0);
    assert_eq!(h.ports_in_use(relay_v4()), 0);
}

#[test]
fn second_allocate_on_same_five_tuple_gets_437() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft(40000));
    let (id, relayed) = c.allocate(&mut h);
    c.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 437, Some(&c.key));
    // Even for another user on that 5-tuple.
    let mut b = Client::bob(c.ft);
    b.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 437, Some(&b.key));
    assert_eq!(h.allocation_count(), 1);
    assert_eq!(h.alloc(c.ft).id, id);
    assert_eq!(h.alloc(c.ft).advertised, relayed);
    assert_eq!(h.opened.len(), 1);
}

#[test]
fn retransmitted_allocate_gets_identical_bytes() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft(40000));
    c.challenge(&mut h);
    let txid = c.txid();
    let req = c.signed(Method::ALLOCATE, txid, &[transport_udp()]);
    let first = c.send_raw(&mut h, &req).unwrap();
    first.assert_success(Method::ALLOCATE, &c.key);
    h.advance(secs(2));
    let again = c.send_raw(&mut h, &req).unwrap();
    assert_eq!(again.0, first.0);
    assert_eq!(h.opened.len(), 1, "no second relay socket");
    assert_eq!(h.allocation_count(), 1);
}

#[test]
fn requested_family_ipv6_gets_ipv6_relay() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft(40000));
    let resp = c.allocate_with(&mut h, &[family(2)]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    assert_eq!(resp.relayed().ip(), relay_v6());
    assert!(in_range(resp.relayed().port()));
    // XOR-MAPPED-ADDRESS is still the (IPv4) client.
    assert_eq!(resp.mapped(), c.ft.client);
    assert_eq!(h.opened[0].bind, resp.relayed());
    assert_eq!(h.ports_in_use(relay_v6()), 1);
    assert_eq!(h.ports_in_use(relay_v4()), 0);
}

#[test]
fn requested_family_ipv4_gets_ipv4_relay() {
    let mut h = Harness::new();
    let mut c = Client::alice(udp("[2001:db8:2::100]:40000"));
    let resp = c.allocate_with(&mut h, &[family(1)]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    assert_eq!(resp.relayed().ip(), advertised_v4());
    assert_eq!(resp.mapped(), c.ft.client);
}

#[test]
fn default_family_is_ipv4_even_for_ipv6_clients() {
    let mut h = Harness::new();
    let mut c = Client::alice(udp("[2001:db8:2::100]:40000"));
    let (_, relayed) = c.allocate(&mut h);
    assert_eq!(relayed.ip(), advertised_v4());
}

#[test]
fn family_not_configured_gets_440() {
    let mut h = Harness::with(Setup {
        v6: false,
        ..Setup::default()
    });
    let mut c = Client::alice(ft(40000));
    c.allocate_with(&mut h, &[family(2)])
        .assert_error(Method::ALLOCATE, 440, Some(&c.key));
    assert_eq!(h.allocation_count(), 0);

    // No IPv4 relay and no REQUESTED-ADDRESS-FAMILY: 440 too (RFC 8656 §7.2 step 7).
    let mut h = Harness::with(Setup {
        v4: false,
        ..Setup::default()
    });
    let mut c = Client::alice(ft(40000));
    c.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 440, Some(&c.key));
    c.allocate_with(&mut h, &[family(2)])
        .assert_success(Method::ALLOCATE, &c.key);
}

#[test]
fn invalid_family_value_gets_440() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft(40000));
    c.allocate_with(&mut h, &[family(3)])
        .assert_error(Method::ALLOCATE, 440, Some(&c.key));
}

#[test]
fn even_port_gets_an_even_port() {
    let mut h = Harness::new();
    for i in 0..5 {
        let mut c = Client::alice(ft(40000 + i));
        let resp = c.allocate_with(&mut h, &[even_port(false)]);
        resp.assert_success(Method::ALLOCATE, &c.key);
        assert_eq!(resp.relayed().port() % 2, 0);
        assert!(!resp.has(AttrType::RESERVATION_TOKEN));
    }
    // The five even ports of 50000..=50009 are taken: no even port is left.
    let mut c = Client::alice(ft(40010));
    c.allocate_with(&mut h, &[even_port(false)])
        .assert_error(Method::ALLOCATE, 508, Some(&c.key));
    // Odd ones still are.
    c.allocate(&mut h);
}

#[test]
fn even_port_with_r_reserves_the_next_port_for_a_token() {
    let mut h = Harness::new();
    let mut rtp = Client::alice(ft(40000));
    let resp = rtp.allocate_with(&mut h, &[even_port(true)]);
    resp.assert_success(Method::ALLOCATE, &rtp.key);
    let port = resp.relayed().port();
    assert_eq!(port % 2, 0);
    let tok = resp.token();
    assert_eq!(
        h.ports_in_use(relay_v4()),
        2,
        "port+1 is held for the token"
    );
    assert_eq!(h.shared.reservations.len(), 1);

    // Another user cannot redeem it: the answer an unknown token gets, and the reservation
    // stays where it is.
    let mut other = Client::bob(ft(40003));
    other.allocate_with(&mut h, &[token(tok)]).assert_error(
        Method::ALLOCATE,
        508,
        Some(&other.key),
    );
    assert_eq!(h.shared.reservations.len(), 1);
    assert_eq!(h.ports_in_use(relay_v4()), 2);

    // Another 5-tuple of the same user claims it.
    let mut rtcp = Client::alice(ft(40001));
    let resp = rtcp.allocate_with(&mut h, &[token(tok)]);
    resp.assert_success(Method::ALLOCATE, &rtcp.key);
    assert_eq!(resp.relayed(), SocketAddr::new(advertised_v4(), port + 1));
    assert!(!resp.has(AttrType::RESERVATION_TOKEN));
    assert_eq!(h.ports_in_use(relay_v4()), 2);
    assert!(h.shared.reservations.is_empty());

    // A token works once.
    let mut third = Client::alice(ft(40002));
    third.allocate_with(&mut h, &[token(tok)]).assert_error(
        Method::ALLOCATE,
        508,
        Some(&third.key),
    );

    // The reservation timer firing later must not free the claimed port.
    h.advance(secs(31));
    assert_eq!(h.ports_in_use(relay_v4()), 2);
}

#[test]
fn token_with_even_port_or_family_gets_400() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft(40000));
    let tok = c.allocate_with(&mut h, &[even_port(true)]).token();
    let mut d = Client::alice(ft(40001));
    d.allocate_with(&mut h, &[token(tok), even_port(false)])
        .assert_error(Method::ALLOCATE, 400, Some(&d.key));
    d.allocate_with(&mut h, &[token(tok), family(1)])
        .assert_error(Method::ALLOCATE, 400, Some(&d.key));
    // The token is untouched by the rejected requests.
    d.allocate_with(&mut h, &[token(tok)])
        .assert_success(Method::ALLOCATE, &d.key);
}

#[test]
fn unknown_token_gets_508() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft(40000));
    c.allocate_with(&mut h, &[token(*b"nosuchtk")])
        .assert_error(Method::ALLOCATE, 508, Some(&c.key));
    // Malformed token (wrong length): 400.
    let bad = Attr::Raw(AttrType::RESERVATION_TOKEN, vec![1, 2, 3]);
    c.allocate_with(&mut h, &[bad])
        .assert_error(Method::ALLOCATE, 400, Some(&c.key));
    assert_eq!(h.allocation_count(), 0);
}

#[test]
fn expired_token_gets_508_and_the_port_is_freed() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft(40000));
    let tok = c.allocate_with(&mut h, &[even_port(true)]).token();
    assert_eq!(h.ports_in_use(relay_v4()), 2);
    h.advance(secs(30));
    assert_eq!(
        h.ports_in_use(relay_v4()),
        1,
        "reservation lapsed after 30 s"
    );
    let mut d = Client::alice(ft(40001));
    d.allocate_with(&mut h, &[token(tok)])
        .assert_error(Method::ALLOCATE, 508, Some(&d.key));
    assert_eq!(h.ports_in_use(relay_v4()), 1);
}

#[test]
fn expired_token_claimed_before_its_timer_fires_gets_508_and_frees_the_port() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft(40000));
    let tok = c.allocate_with(&mut h, &[even_port(true)]).token();
    h.jump(secs(31));
    let mut d = Client::alice(ft(40001));
    d.allocate_with(&mut h, &[token(tok)])
        .assert_error(Method::ALLOCATE, 508, Some(&d.key));
    assert_eq!(h.ports_in_use(relay_v4()), 1);
    h.advance(secs(0));
    assert_eq!(h.ports_in_use(relay_v4()), 1);
}

#[test]
fn port_exhaustion_gets_508_and_delete_frees_a_port() {
    let mut h = Harness::new();
    let mut clients: Vec<Client> = (0..PORT_COUNT as u16)
        .map(|i| Client::alice(ft(40000 + i)))
        .collect();
    let ports: Vec<u16> = clients
        .iter_mut()
        .map(|c| c.allocate(&mut h).1.port())
        .collect();
    let mut sorted = ports.clone();
    sorted.sort();
    assert_eq!(sorted, (PORT_LOW..=PORT_HIGH).collect::<Vec<_>>());

    let mut late = Client::bob(ft(41000));
    late.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 508, Some(&late.key));
    assert_eq!(h.allocation_count(), PORT_COUNT);
    // IPv6 relay ports are a separate pool.
    late.allocate_with(&mut h, &[family(2)])
        .assert_success(Method::ALLOCATE, &late.key);

    let mut late4 = Client::bob(ft(41001));
    let c = &mut clients[3];
    let freed = c.refresh(&mut h, Some(0));
    freed.assert_success(Method::REFRESH, &c.key);
    let resp = late4.allocate_with(&mut h, &[]);
    resp.assert_success(Method::ALLOCATE, &late4.key);
    assert_eq!(
        resp.relayed().port(),
        ports[3],
        "the freed port is the only one left"
    );
}

#[test]
fn addr_in_use_is_retried_on_another_port() {
    let mut h = Harness::new();
    h.open_results.extend([
        Err(RelayOpenError::AddrInUse),
        Err(RelayOpenError::AddrInUse),
    ]);
    let mut c = Client::alice(ft(40000));
    let (id, relayed) = c.allocate(&mut h);
    assert_eq!(h.opened.len(), 3);
    assert!(h.opened.iter().all(|o| o.id == id));
    let binds: Vec<SocketAddr> = h.opened.iter().map(|o| o.bind).collect();
    assert_ne!(binds[0], binds[1]);
    assert_ne!(binds[1], binds[2]);
    assert_eq!(relayed, SocketAddr::new(advertised_v4(), binds[2].port()));
    assert_eq!(
        h.ports_in_use(relay_v4()),
        1,
        "the ports that were in use are given back"
    );
    assert_eq!(h.created(), vec![id]);
}

#[test]
fn addr_in_use_gives_up_with_508_after_eight_ports() {
    let mut h = Harness::new();
    h.open_results
        .extend(std::iter::repeat_n(Err(RelayOpenError::AddrInUse), 8));
    let mut c = Client::alice(ft(40000));
    c.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 508, Some(&c.key));
    assert_eq!(h.opened.len(), 8);
    assert_eq!(h.allocation_count(), 0);
    assert_eq!(h.ports_in_use(relay_v4()), 0);
    assert!(h.events.is_empty());
    // The 5-tuple is free again.
    c.allocate(&mut h);
}

#[test]
fn addr_in_use_with_no_port_left_gets_508() {
    let mut h = Harness::with(Setup {
        ports: (PORT_LOW, PORT_LOW),
        ..Setup::default()
    });
    h.open_results.push_back(Err(RelayOpenError::AddrInUse));
    let mut c = Client::alice(ft(40000));
    c.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 508, Some(&c.key));
    assert_eq!(h.ports_in_use(relay_v4()), 0);
    assert_eq!(h.allocation_count(), 0);
}

#[test]
fn other_open_error_gets_508() {
    let mut h = Harness::new();
    h.open_results.push_back(Err(RelayOpenError::Other));
    let mut c = Client::alice(ft(40000));
    c.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 508, Some(&c.key));
    assert_eq!(h.opened.len(), 1);
    assert_eq!(h.allocation_count(), 0);
    assert_eq!(h.ports_in_use(relay_v4()), 0);
    assert!(h.events.is_empty() && h.closed.is_empty());
    assert_eq!(h.server.poll_timeout(), None);
}

#[test]
fn even_port_addr_in_use_is_retried_on_another_even_port() {
    // The range may be shared with another program: an even port it holds is no reason to
    // refuse, another even port does as well.
    let mut h = Harness::new();
    h.open_results.push_back(Err(RelayOpenError::AddrInUse));
    let mut c = Client::alice(ft(40000));
    let resp = c.allocate_with(&mut h, &[even_port(false)]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    let binds: Vec<u16> = h.opened.iter().map(|o| o.bind.port()).collect();
    assert_eq!(binds.len(), 2);
    assert_ne!(binds[0], binds[1]);
    assert!(binds.iter().all(|p| p % 2 == 0), "{binds:?}");
    assert_eq!(resp.relayed().port(), binds[1]);
    assert_eq!(h.ports_in_use(relay_v4()), 1);
}

#[test]
fn even_port_pair_addr_in_use_moves_the_reservation_with_the_port() {
    let mut h = Harness::new();
    h.open_results.push_back(Err(RelayOpenError::AddrInUse));
    let mut c = Client::alice(ft(40000));
    let resp = c.allocate_with(&mut h, &[even_port(true)]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    let binds: Vec<u16> = h.opened.iter().map(|o| o.bind.port()).collect();
    assert_eq!(binds.len(), 2);
    assert!(binds.iter().all(|p| p % 2 == 0), "{binds:?}");
    assert_eq!(resp.relayed().port(), binds[1]);
    // The new pair is held (the old one given back), and the token names the new neighbour.
    assert_eq!(h.ports_in_use(relay_v4()), 2);
    let tok = resp.token();
    let mut d = Client::alice(ft(40001));
    let resp = d.allocate_with(&mut h, &[token(tok)]);
    resp.assert_success(Method::ALLOCATE, &d.key);
    assert_eq!(resp.relayed().port(), binds[1] + 1);
    assert_eq!(h.opened.last().map(|o| o.bind.port()), Some(binds[1] + 1));
    assert_eq!(h.ports_in_use(relay_v4()), 2);
}

#[test]
fn even_port_pair_that_never_binds_gets_508_and_holds_nothing() {
    let mut h = Harness::new();
    h.open_results
        .extend(std::iter::repeat_n(Err(RelayOpenError::AddrInUse), 8));
    let mut c = Client::alice(ft(40000));
    c.allocate_with(&mut h, &[even_port(true)])
        .assert_error(Method::ALLOCATE, 508, Some(&c.key));
    assert_eq!(h.opened.len(), 8);
    assert_eq!(h.ports_in_use(relay_v4()), 0);
    assert!(h.shared.reservations.is_empty());
    assert_eq!(h.allocation_count(), 0);
}

#[test]
fn even_port_pair_with_no_other_pair_left_gets_508_and_holds_nothing() {
    let mut h = Harness::with(Setup {
        ports: (PORT_LOW, PORT_LOW + 1),
        ..Setup::default()
    });
    h.open_results.push_back(Err(RelayOpenError::AddrInUse));
    let mut c = Client::alice(ft(40000));
    c.allocate_with(&mut h, &[even_port(true)])
        .assert_error(Method::ALLOCATE, 508, Some(&c.key));
    assert_eq!(h.opened.len(), 1);
    assert_eq!(h.ports_in_use(relay_v4()), 0);
    assert!(h.shared.reservations.is_empty());
}

#[test]
fn token_claim_that_fails_to_open_releases_the_port() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft(40000));
    let tok = c.allocate_with(&mut h, &[even_port(true)]).token();
    h.open_results.push_back(Err(RelayOpenError::AddrInUse));
    let mut d = Client::alice(ft(40001));
    d.allocate_with(&mut h, &[token(tok)])
        .assert_error(Method::ALLOCATE, 508, Some(&d.key));
    assert_eq!(h.ports_in_use(relay_v4()), 1);
}

#[test]
fn unknown_comprehension_required_attribute_gets_420_listing_it() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft(40000));
    let unknown = [
        Attr::Raw(AttrType(0x7F01), vec![0; 4]),
        Attr::Raw(AttrType(0x0030), vec![]),
        transport_udp(),
    ];
    let resp = c.request(&mut h, Method::ALLOCATE, &unknown);
    // RFC 8489 §6.3: checked once the request has authenticated, so the 420 is signed.
    resp.assert_error(Method::ALLOCATE, 420, Some(&c.key));
    let mut listed: Vec<u16> = resp.msg().unknown_attributes().collect();
    listed.sort();
    assert_eq!(listed, vec![0x0030, 0x7F01]);
    assert_eq!(h.allocation_count(), 0);
    // Unknown comprehension-optional attributes are ignored.
    let optional = [transport_udp(), Attr::Raw(AttrType(0xC0DE), vec![1])];
    c.request(&mut h, Method::ALLOCATE, &optional)
        .assert_success(Method::ALLOCATE, &c.key);
}

#[test]
fn unknown_attribute_in_unauthenticated_request_gets_401_first() {
    let mut h = Harness::new();
    let c = Client::alice(ft(40000));
    let req = c.unsigned(
        Method::ALLOCATE,
        TransactionId([4; 12]),
        &[Attr::Raw(AttrType(0x7F01), vec![]), transport_udp()],
    );
    h.input(c.ft, &req);
    h.take_one(c.ft).assert_error(Method::ALLOCATE, 401, None);
}

#[test]
fn dont_fragment_is_passed_to_open_relay() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft(40000));
    let (id, _) = {
        let resp = c.allocate_with(&mut h, &[dont_fragment()]);
        resp.assert_success(Method::ALLOCATE, &c.key);
        (h.id_of(c.ft).unwrap(), resp.relayed())
    };
    assert_eq!(h.opened.len(), 1);
    assert!(h.opened[0].dont_fragment);
    assert_eq!(h.opened[0].id, id);
    assert!(h.alloc(c.ft).dont_fragment);
}

#[test]
fn dont_fragment_survives_a_port_retry() {
    let mut h = Harness::new();
    h.open_results.push_back(Err(RelayOpenError::AddrInUse));
    let mut c = Client::alice(ft(40000));
    c.allocate_with(&mut h, &[dont_fragment()])
        .assert_success(Method::ALLOCATE, &c.key);
    assert_eq!(h.opened.len(), 2);
    assert!(h.opened.iter().all(|o| o.dont_fragment));
}

#[test]
fn allocate_waits_for_the_relay_socket() {
    let mut h = Harness::new();
    h.auto_open = false;
    let mut c = Client::alice(ft(40000));
    c.fingerprint = true;
    assert!(c
        .try_request(&mut h, Method::ALLOCATE, &[transport_udp()])
        .is_none());
    let id = h.pending_open[0];
    assert_eq!(h.server.allocation(id).unwrap().five_tuple, c.ft);
    // Requests for the allocation wait for it to be active.
    c.refresh(&mut h, None)
        .assert_error(Method::REFRESH, 437, Some(&c.key));
    c.create_permission(&mut h, &[peer_a()]).assert_error(
        Method::CREATE_PERMISSION,
        437,
        Some(&c.key),
    );
    // A new Allocate on that 5-tuple (new transaction): 437.
    c.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 437, Some(&c.key));
    assert!(h.events.is_empty());

    h.advance(secs(1));
    h.open(id, Ok(()));
    let resp = h.take_one(c.ft);
    resp.assert_success(Method::ALLOCATE, &c.key);
    assert!(
        resp.msg().has_fingerprint(),
        "the deferred answer keeps the request's FINGERPRINT"
    );
    assert_eq!(h.created(), vec![id]);
    // A second answer for the same socket is ignored.
    h.open(id, Ok(()));
    h.open(id, Err(RelayOpenError::Other));
    h.assert_silent();
    assert!(h.server.allocation(id).is_some());
}

#[test]
fn relay_opened_for_an_unknown_allocation_is_ignored() {
    let mut h = Harness::new();
    h.open(
        AllocationId {
            index: 3,
            generation: 7,
        },
        Ok(()),
    );
    h.assert_silent();
    assert!(h.events.is_empty());
}

#[test]
fn ipv6_client_and_relay() {
    let mut h = Harness::new();
    let mut c = Client::alice(udp("[2001:db8:2::100]:40000"));
    let resp = c.allocate_with(&mut h, &[family(2)]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    assert_eq!(resp.relayed().ip(), relay_v6());
    assert_eq!(resp.mapped(), c.ft.client);
}

#[test]
fn relay_addresses_of_a_family_are_used_round_robin() {
    let shared = {
        let mut s = Setup::default().shared();
        let inner = Arc::get_mut(&mut s).unwrap();
        let second = RelayAddr {
            bind: ip("192.0.2.11"),
            advertised: ip("203.0.113.11"),
        };
        inner.config.relays.push(second);
        inner.ports = Mutex::new(PortPool::new(
            &[relay_v4(), relay_v6(), second.bind],
            PORT_LOW,
            PORT_HIGH,
        ));
        s
    };
    let mut h = Harness::from_shared(shared, 1);
    let mut seen = std::collections::HashSet::new();
    for i in 0..4 {
        let mut c = Client::alice(ft(40000 + i));
        seen.insert(c.allocate(&mut h).1.ip());
    }
    assert_eq!(
        seen,
        [ip("203.0.113.10"), ip("203.0.113.11")]
            .into_iter()
            .collect()
    );
}

#[test]
fn user_quota_gets_486_and_recovers_when_an_allocation_ends() {
    let mut h = Harness::with(Setup {
        quotas: (2, 0),
        ..Setup::default()
    });
    let mut a1 = Client::alice(ft(40001));
    let mut a2 = Client::alice(ft(40002));
    let mut a3 = Client::alice(ft(40003));
    a1.allocate(&mut h);
    a2.allocate(&mut h);
    a3.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 486, Some(&a3.key));
    assert_eq!(
        h.server.counters().dropped[DropReason::Quota],
        1,
        "the refusal is counted"
    );
    // The refused request holds no port.
    assert_eq!(h.ports_in_use(relay_v4()), 2);
    // Another user is not affected by alice's quota.
    let mut b = Client::bob(ft(40004));
    b.allocate(&mut h);
    // Freeing one of alice's allocations lets her allocate again.
    a1.refresh(&mut h, Some(0))
        .assert_success(Method::REFRESH, &a1.key.clone());
    a3.allocate(&mut h);
}

/// `user_quota` counts a REST user id, not each credential: minting more credentials (other
/// expiries) for one user buys no more allocations, and another user id is unaffected.
#[test]
fn user_quota_counts_a_rest_user_id_across_its_credentials() {
    let mut h = Harness::with(Setup {
        quotas: (2, 0),
        ..Setup::default()
    });
    let mut c1 = Client::rest(ft(40001), UNIX_T0 + 600, "carol", REST_SECRET);
    let mut c2 = Client::rest(ft(40002), UNIX_T0 + 700, "carol", REST_SECRET);
    let mut c3 = Client::rest(ft(40003), UNIX_T0 + 800, "carol", REST_SECRET);
    c1.allocate(&mut h);
    c2.allocate(&mut h);
    c3.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 486, Some(&c3.key));
    assert_eq!(
        h.shared.quotas.of_user("carol"),
        2,
        "counted under the user id"
    );
    let mut dave = Client::rest(ft(40004), UNIX_T0 + 600, "dave", REST_SECRET);
    dave.allocate(&mut h);
    // The unit comes back under the user id when a credential's allocation ends.
    c1.refresh(&mut h, Some(0))
        .assert_success(Method::REFRESH, &c1.key.clone());
    assert_eq!(h.shared.quotas.of_user("carol"), 1);
    c3.allocate(&mut h);
}

#[test]
fn total_quota_gets_486_and_expiry_frees_it() {
    let mut h = Harness::with(Setup {
        quotas: (0, 1),
        ..Setup::default()
    });
    let mut a = Client::alice(ft(40001));
    let mut b = Client::bob(ft(40002));
    a.allocate(&mut h);
    b.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 486, Some(&b.key));
    h.advance(secs(601));
    assert_eq!(h.allocation_count(), 0);
    b.allocate(&mut h);
}

#[test]
fn draining_refuses_new_allocations_with_508_and_keeps_existing_ones() {
    let mut h = Harness::new();
    let mut a = Client::alice(ft(40000));
    let (id, _) = a.allocate(&mut h);
    a.permit(&mut h, &[peer_a()]);
    h.server.shared().quotas.set_draining(true);

    let mut b = Client::bob(ft(40001));
    let key = b.key;
    b.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 508, Some(&key));
    assert!(h.id_of(ft(40001)).is_none());
    // The existing allocation still relays, refreshes and answers.
    assert!(a.send_indication(&mut h, peer_a(), b"still").0.is_some());
    assert!(h.peer(id, peer_a(), b"back").is_some());
    let key = a.key;
    a.refresh(&mut h, Some(600))
        .assert_success(Method::REFRESH, &key);

    h.server.shared().quotas.set_draining(false);
    b.allocate(&mut h);
}

/// With several relay addresses of a family, one whose ports are all taken never refuses an
/// allocation another can carry: the round robin moves on to the next address, and 508 comes
/// only when every address is full.
#[test]
fn a_full_relay_address_hands_over_to_the_next() {
    let second = ip("192.0.2.11");
    let mut shared = Setup {
        v6: false,
        ports: (50000, 50001),
        ..Setup::default()
    }
    .shared();
    {
        let s = Arc::get_mut(&mut shared).expect("not shared yet");
        s.config.relays.push(RelayAddr {
            bind: second,
            advertised: second,
        });
        s.ports = Mutex::new(PortPool::new(&[relay_v4(), second], 50000, 50001));
    }
    let mut h = Harness::from_shared(shared, 3);
    // Fill the first address directly, as if its other ports were long taken.
    {
        let mut ports = h.shared.ports.lock().unwrap();
        assert!(ports.take(relay_v4(), 0, false, false).is_some());
        assert!(ports.take(relay_v4(), 0, false, false).is_some());
    }
    // Whichever address the round robin starts at, both allocations land on the second.
    for i in 0..2 {
        let mut c = Client::alice(ft(40000 + i));
        let (_, relayed) = c.allocate(&mut h);
        assert_eq!(relayed.ip(), second, "allocation {i}");
    }
    let mut c = Client::alice(ft(40002));
    c.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 508, Some(&c.key));
}

/// A fleet's quota (docs/cluster.md, Fleet-wide quotas): the other nodes' counts, as the store
/// task last read them, add to this node's own. alice holds one allocation elsewhere, so with
/// `user_quota = 2` this node admits one; a new snapshot where the other node let go admits
/// the next, and a user the snapshot does not name is untouched.
#[test]
fn user_quota_counts_the_other_nodes_snapshot() {
    use crate::core::quota::Others;
    let mut h = Harness::with(Setup {
        quotas: (2, 0),
        ..Setup::default()
    });
    let quotas = &h.server.shared().quotas;
    quotas.set_others(Others {
        per_user: [("alice".into(), 1)].into_iter().collect(),
        total: 1,
    });
    let g0 = h.server.shared().quotas.generation();
    let mut a1 = Client::alice(ft(40001));
    let mut a2 = Client::alice(ft(40002));
    a1.allocate(&mut h);
    assert_ne!(
        h.server.shared().quotas.generation(),
        g0,
        "the change is signalled"
    );
    a2.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 486, Some(&a2.key));
    assert_eq!(h.server.counters().dropped[DropReason::Quota], 1);
    let mut b = Client::bob(ft(40003));
    b.allocate(&mut h);
    // The other node ended its allocation: the next snapshot says so.
    h.server.shared().quotas.set_others(Others::default());
    a2.allocate(&mut h);
    assert_eq!(
        h.server.shared().quotas.of_user("alice"),
        2,
        "own count only"
    );
}

/// `total_quota` likewise: the others' total counts, and a cleared snapshot (the store was not
/// read for a lease: the node counts alone) admits again.
#[test]
fn total_quota_counts_the_other_nodes_snapshot_and_a_cleared_one_counts_alone() {
    use crate::core::quota::Others;
    let mut h = Harness::with(Setup {
        quotas: (0, 3),
        ..Setup::default()
    });
    h.server.shared().quotas.set_others(Others {
        per_user: [("carol".into(), 2)].into_iter().collect(),
        total: 2,
    });
    let mut a = Client::alice(ft(40001));
    let mut b = Client::bob(ft(40002));
    a.allocate(&mut h);
    b.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 486, Some(&b.key));
    h.server.shared().quotas.set_others(Others::default());
    b.allocate(&mut h);
    assert_eq!(h.server.shared().quotas.total(), 2);
}

/// An EVEN-PORT with R takes two units; with the others' snapshot leaving one, it is refused
/// whole and holds nothing.
#[test]
fn a_reservation_needing_two_units_is_refused_whole_against_the_snapshot() {
    use crate::core::quota::Others;
    let mut h = Harness::with(Setup {
        quotas: (2, 0),
        ..Setup::default()
    });
    h.server.shared().quotas.set_others(Others {
        per_user: [("alice".into(), 1)].into_iter().collect(),
        total: 1,
    });
    let mut a = Client::alice(ft(40001));
    a.allocate_with(&mut h, &[even_port(true)]).assert_error(
        Method::ALLOCATE,
        486,
        Some(&a.key.clone()),
    );
    assert_eq!(h.server.shared().quotas.of_user("alice"), 0);
    assert_eq!(h.ports_in_use(relay_v4()), 0);
}
