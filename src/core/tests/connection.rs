//! Stream transports (RFC 8656 §3.1): an allocation made over TCP or TLS lives only as long
//! as its control connection.

use super::*;

fn ft() -> FiveTuple {
    tcp("192.0.2.100:40000")
}

#[test]
fn closing_the_connection_ends_its_allocation() {
    let mut h = Harness::with(Setup {
        quotas: (1, 0),
        ..Setup::default()
    });
    let mut c = Client::alice(ft());
    let (id, relayed) = c.allocate(&mut h);
    c.bind(&mut h, 0x4000, peer_a());
    assert!(h.server.has_allocation(&ft()));
    h.advance_to(7);

    h.server.handle_connection_closed(h.now, ft());
    h.drain();
    assert_eq!(h.closed, vec![id]);
    assert_eq!(h.allocation_count(), 0);
    assert_eq!(h.ports_in_use(relay_v4()), 0);
    assert!(!h.server.has_allocation(&ft()));
    match h.events.last() {
        Some(Event::AllocationEnded {
            id: eid,
            five_tuple,
            relay,
            reason,
            duration,
            ..
        }) => {
            assert_eq!((*eid, *five_tuple, *relay), (id, ft(), relayed));
            assert_eq!((*reason, *duration), (EndReason::ConnectionClosed, secs(7)));
        }
        other => panic!("{other:?}"),
    }
    // Nothing relays any more, no response goes to the closed connection, and the user's
    // quota was given back: a new connection may allocate.
    assert!(h.peer(id, peer_a(), b"late").is_none());
    h.assert_silent();
    let mut again = Client::alice(tcp("192.0.2.100:40001"));
    let (id2, _) = again.allocate(&mut h);
    assert_ne!(id2, id);
}

#[test]
fn closing_is_idempotent_and_ignores_other_five_tuples() {
    let mut h = Harness::new();
    let mut over_tcp = Client::alice(ft());
    let mut over_udp = Client::bob(udp("192.0.2.100:40000"));
    let (tcp_id, _) = over_tcp.allocate(&mut h);
    let (udp_id, _) = over_udp.allocate(&mut h);

    // A UDP 5-tuple has no connection to close.
    h.server
        .handle_connection_closed(h.now, udp("192.0.2.100:40000"));
    // Another TCP connection of the same client holds nothing.
    h.server
        .handle_connection_closed(h.now, tcp("192.0.2.100:40001"));
    h.drain();
    assert!(h.closed.is_empty() && h.ended().is_empty());

    h.server.handle_connection_closed(h.now, ft());
    h.server.handle_connection_closed(h.now, ft());
    h.drain();
    assert_eq!(h.closed, vec![tcp_id]);
    assert_eq!(h.ended().len(), 1);
    assert!(h.server.allocation(udp_id).is_some());
}

#[test]
fn closing_while_the_relay_socket_opens_frees_it_without_a_created_event() {
    let mut h = Harness::new();
    h.auto_open = false;
    let mut c = Client::alice(ft());
    let resp = c.try_request(&mut h, Method::ALLOCATE, &[transport_udp()]);
    assert!(resp.is_none(), "the answer waits for the relay socket");
    let id = h.pending_open[0];
    assert!(h.server.has_allocation(&ft()));

    h.server.handle_connection_closed(h.now, ft());
    h.drain();
    assert_eq!(h.closed, vec![id]);
    assert_eq!(h.ports_in_use(relay_v4()), 0);
    // The late result of the open finds nothing: no response, no event.
    h.open(id, Ok(()));
    h.assert_silent();
    assert!(h.created().is_empty() && h.ended().is_empty());
}

#[test]
fn peer_data_to_a_tcp_client_is_padded() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (id, _) = c.allocate(&mut h);
    c.bind(&mut h, 0x4001, peer_a());
    let (to, framed) = h.peer(id, peer_a(), b"abcde").expect("relayed");
    assert_eq!(to, ft());
    assert_eq!(framed, channel_data_msg(0x4001, b"abcde", true));
    assert_eq!(framed.len() % 4, 0);
}
