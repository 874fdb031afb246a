//! RFC 6062 TCP allocations: Allocate with REQUESTED-TRANSPORT TCP, Connect (success, 446,
//! 447 by failure and by timeout, 403, 400, 437), ConnectionAttempt for peers that connect
//! in, ConnectionBind (success on another worker sharing the same `Shared`, unknown id, wrong
//! user, the 30-second bind timeout, UDP), and cleanup when the allocation ends.

use super::*;
use crate::core::tcp_relay::{ConnState, TcpRelayOutput, MAX_PEER_CONNECTIONS, TCP};

pub(super) fn control() -> FiveTuple {
    tcp("192.0.2.100:40000")
}

pub(super) fn data_ft(port: u16) -> FiveTuple {
    tcp(&format!("192.0.2.100:{port}"))
}

fn connection_id(cid: u32) -> Attr {
    Attr::Raw(AttrType::CONNECTION_ID, cid.to_be_bytes().to_vec())
}

/// A TCP allocation over TCP with a permission for `peer_a`: the client, its allocation id.
pub(super) fn tcp_allocation(h: &mut Harness) -> (Client, AllocationId) {
    let mut c = Client::alice(control());
    let resp = c.request(h, Method::ALLOCATE, &[transport(TCP)]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    let id = h.id_of(control()).expect("allocation");
    c.permit(h, &[peer_a()]);
    h.tcp.clear();
    (c, id)
}

/// The last `Connect` output: its connection id.
fn connect_output(h: &Harness, id: AllocationId, peer: SocketAddr) -> u32 {
    match h.tcp.last() {
        Some(TcpRelayOutput::Connect {
            id: oid,
            connection_id,
            bind,
            peer: p,
        }) => {
            assert_eq!((*oid, *p), (id, peer));
            assert_eq!(
                *bind,
                h.alloc(control()).relay,
                "connects from the relayed address"
            );
            *connection_id
        }
        other => panic!("expected Connect, got {other:?}"),
    }
}

/// Connect to `peer` and report the connection made: returns the CONNECTION-ID.
/// Sends a Connect to `peer`, which the core leaves unanswered while the shell connects;
/// returns the CONNECTION-ID of the `Connect` output.
fn start_connect(h: &mut Harness, c: &mut Client, id: AllocationId, peer: SocketAddr) -> u32 {
    assert!(c
        .try_request(h, Method::CONNECT, &[Attr::Peer(peer)])
        .is_none());
    connect_output(h, id, peer)
}

pub(super) fn connect(h: &mut Harness, c: &mut Client, id: AllocationId, peer: SocketAddr) -> u32 {
    let cid = start_connect(h, c, id, peer);
    assert!(h.server.handle_peer_connected(h.now, cid));
    h.drain();
    let resp = h.take_one(control());
    resp.assert_success(Method::CONNECT, &c.key);
    assert_eq!(
        resp.msg().get(AttrType::CONNECTION_ID),
        Some(&cid.to_be_bytes()[..])
    );
    cid
}

pub(super) fn connection_bind(h: &mut Harness, c: &mut Client, cid: u32) -> Resp {
    c.request(h, Method::CONNECTION_BIND, &[connection_id(cid)])
}

#[test]
fn allocate_tcp_over_tcp_opens_a_listener() {
    let mut h = Harness::new();
    let mut c = Client::alice(control());
    let resp = c.request(&mut h, Method::ALLOCATE, &[transport(TCP)]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    let id = h.id_of(control()).unwrap();
    assert!(h.server.is_tcp_allocation(id));
    let relay = h.alloc(control()).relay;
    assert_eq!(h.tcp, vec![TcpRelayOutput::Listen { id, bind: relay }]);
    assert_eq!(resp.relayed().port(), relay.port());
}

#[test]
fn allocate_tcp_over_tls_is_allowed_too() {
    let mut h = Harness::new();
    let ft = FiveTuple {
        transport: Transport::Tls,
        ..control()
    };
    let mut c = Client::alice(ft);
    let resp = c.request(&mut h, Method::ALLOCATE, &[transport(TCP)]);
    resp.assert_success(Method::ALLOCATE, &c.key);
}

#[test]
fn allocate_tcp_over_udp_is_a_bad_request() {
    let mut h = Harness::new();
    let mut c = Client::alice(udp("192.0.2.100:40000"));
    let resp = c.request(&mut h, Method::ALLOCATE, &[transport(TCP)]);
    resp.assert_error(Method::ALLOCATE, 400, Some(&c.key));
    assert_eq!(h.allocation_count(), 0);
    assert!(h.tcp.is_empty());
}

#[test]
fn allocate_tcp_refuses_udp_only_attributes() {
    let mut h = Harness::new();
    for extra in [dont_fragment(), even_port(false), token([1; 8])] {
        let mut c = Client::alice(control());
        let resp = c.request(&mut h, Method::ALLOCATE, &[transport(TCP), extra.clone()]);
        resp.assert_error(Method::ALLOCATE, 400, Some(&c.key));
    }
    assert_eq!(h.allocation_count(), 0);
    assert_eq!(h.ports_in_use(relay_v4()), 0);
}

#[test]
fn allocate_tcp_retries_a_port_in_use_with_another_listener() {
    let mut h = Harness::new();
    h.open_results.push_back(Err(RelayOpenError::AddrInUse));
    let mut c = Client::alice(control());
    let resp = c.request(&mut h, Method::ALLOCATE, &[transport(TCP)]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    let listens = h
        .tcp
        .iter()
        .filter(|o| matches!(o, TcpRelayOutput::Listen { .. }))
        .count();
    assert_eq!(listens, 2);
    assert!(h.opened.len() == 2 && h.opened[0].bind != h.opened[1].bind);
}

#[test]
fn connect_succeeds_with_a_connection_id() {
    let mut h = Harness::new();
    let (mut c, id) = tcp_allocation(&mut h);
    let cid = connect(&mut h, &mut c, id, peer_a());
    assert_ne!(cid, 0);
    let entry = h.shared.tcp_connections.get(cid).unwrap();
    assert_eq!((entry.alloc, entry.peer), (id, peer_a()));
    assert!(matches!(entry.state, ConnState::Pending { .. }));
}

#[test]
fn connect_to_a_peer_already_connecting_or_connected_is_446() {
    let mut h = Harness::new();
    let (mut c, id) = tcp_allocation(&mut h);
    let txid = c.txid();
    let req = c.signed(Method::CONNECT, txid, &[Attr::Peer(peer_a())]);
    assert!(c.send_raw(&mut h, &req).is_none());
    let cid = connect_output(&h, id, peer_a());
    // A retransmission while connecting waits for the same answer.
    assert!(c.send_raw(&mut h, &req).is_none());
    // A new Connect to the same peer while connecting: 446.
    c.request(&mut h, Method::CONNECT, &[Attr::Peer(peer_a())])
        .assert_error(Method::CONNECT, 446, Some(&c.key));
    assert!(h.server.handle_peer_connected(h.now, cid));
    h.drain();
    let resp = h.take_one(control());
    assert_eq!(resp.txid(), txid);
    // Still 446 while it waits for its ConnectionBind, and while it is bound.
    c.request(&mut h, Method::CONNECT, &[Attr::Peer(peer_a())])
        .assert_error(Method::CONNECT, 446, Some(&c.key));
    let mut d = Client::alice(data_ft(40001));
    connection_bind(&mut h, &mut d, cid).assert_success(Method::CONNECTION_BIND, &d.key);
    c.request(&mut h, Method::CONNECT, &[Attr::Peer(peer_a())])
        .assert_error(Method::CONNECT, 446, Some(&c.key));
    // Once the data connection is gone, the peer may be connected again.
    h.server.handle_data_connection_closed(cid);
    connect(&mut h, &mut c, id, peer_a());
}

#[test]
fn connect_failure_is_447() {
    let mut h = Harness::new();
    let (mut c, id) = tcp_allocation(&mut h);
    let cid = start_connect(&mut h, &mut c, id, peer_a());
    h.server.handle_peer_connect_failed(h.now, cid);
    h.drain();
    h.take_one(control())
        .assert_error(Method::CONNECT, 447, Some(&c.key));
    assert!(h.shared.tcp_connections.get(cid).is_none());
    // A late success report for it is refused: the shell closes the stream.
    assert!(!h.server.handle_peer_connected(h.now, cid));
    // And the peer may be tried again.
    connect(&mut h, &mut c, id, peer_a());
}

#[test]
fn connect_timeout_is_447_after_30_seconds() {
    let mut h = Harness::new();
    let (mut c, id) = tcp_allocation(&mut h);
    let cid = start_connect(&mut h, &mut c, id, peer_a());
    h.advance(secs(29));
    h.assert_silent();
    h.advance(secs(1));
    h.take_one(control())
        .assert_error(Method::CONNECT, 447, Some(&c.key));
    assert_eq!(
        h.tcp.last(),
        Some(&TcpRelayOutput::CloseConnection {
            id,
            connection_id: cid
        })
    );
    assert!(!h.server.handle_peer_connected(h.now, cid));
}

#[test]
fn connect_to_a_denied_or_unpermitted_peer_is_403() {
    let mut h = Harness::new();
    let (mut c, _) = tcp_allocation(&mut h);
    c.request(&mut h, Method::CONNECT, &[Attr::Peer(sa("10.0.0.1:80"))])
        .assert_error(Method::CONNECT, 403, Some(&c.key));
    assert_eq!(h.server.counters().peers_denied, 1);
    // Allowed by the filter, but no permission installed.
    c.request(&mut h, Method::CONNECT, &[Attr::Peer(peer_b())])
        .assert_error(Method::CONNECT, 403, Some(&c.key));
    // The permission expires after 5 minutes (refresh keeps the allocation).
    c.refresh(&mut h, Some(3600));
    h.advance(secs(301));
    c.request(&mut h, Method::CONNECT, &[Attr::Peer(peer_a())])
        .assert_error(Method::CONNECT, 403, Some(&c.key));
    assert!(h.tcp.is_empty());
}

#[test]
fn connect_needs_a_tcp_allocation_and_a_peer() {
    let mut h = Harness::new();
    let mut none = Client::alice(control());
    none.request(&mut h, Method::CONNECT, &[Attr::Peer(peer_a())])
        .assert_error(Method::CONNECT, 437, Some(&none.key));
    let mut u = Client::alice(udp("192.0.2.100:40000"));
    u.allocate(&mut h);
    u.permit(&mut h, &[peer_a()]);
    u.request(&mut h, Method::CONNECT, &[Attr::Peer(peer_a())])
        .assert_error(Method::CONNECT, 400, Some(&u.key));
    let (mut c, _) = tcp_allocation(&mut h);
    c.request(&mut h, Method::CONNECT, &[])
        .assert_error(Method::CONNECT, 400, Some(&c.key));
    c.request(&mut h, Method::CONNECT, &[Attr::Peer(peer_v6())])
        .assert_error(Method::CONNECT, 443, Some(&c.key));
    let mut bob = Client::bob(control());
    bob.request(&mut h, Method::CONNECT, &[Attr::Peer(peer_a())])
        .assert_error(Method::CONNECT, 441, Some(&bob.key));
}

#[test]
fn inbound_peer_with_permission_gets_a_connection_attempt() {
    let mut h = Harness::new();
    let (_c, id) = tcp_allocation(&mut h);
    let peer = sa("198.51.100.1:33333");
    let cid = h.server.handle_peer_inbound(h.now, id, peer).expect("kept");
    h.drain();
    let ind = h.take_one(control());
    let m = ind.msg();
    assert_eq!(
        (m.method(), m.class()),
        (Method::CONNECTION_ATTEMPT, Class::Indication)
    );
    assert_eq!(m.get(AttrType::CONNECTION_ID), Some(&cid.to_be_bytes()[..]));
    assert_eq!(m.xor_peer_address().unwrap().unwrap(), peer);
    let entry = h.shared.tcp_connections.get(cid).unwrap();
    assert!(matches!(entry.state, ConnState::Pending { .. }));
}

#[test]
fn inbound_peer_without_permission_is_closed_silently() {
    let mut h = Harness::new();
    let (_c, id) = tcp_allocation(&mut h);
    assert!(h
        .server
        .handle_peer_inbound(h.now, id, sa("198.51.100.2:33333"))
        .is_none());
    h.drain();
    h.assert_silent();
    assert!(h.shared.tcp_connections.is_empty());
    // Nor on a UDP allocation, or one that is gone.
    let mut u = Client::bob(udp("192.0.2.100:40000"));
    let (uid, _) = u.allocate(&mut h);
    u.permit(&mut h, &[peer_a()]);
    assert!(h.server.handle_peer_inbound(h.now, uid, peer_a()).is_none());
}

#[test]
fn connection_bind_on_another_worker_splices() {
    let mut h = Harness::new();
    let (mut c, id) = tcp_allocation(&mut h);
    let cid = connect(&mut h, &mut c, id, peer_a());
    // The data connection lands on another worker: another core sharing `Shared`.
    let mut other = Harness::from_shared(h.shared.clone(), 0xbeef);
    let data = data_ft(40001);
    let mut d = Client::alice(data);
    connection_bind(&mut other, &mut d, cid).assert_success(Method::CONNECTION_BIND, &d.key);
    assert_eq!(
        other.tcp,
        vec![TcpRelayOutput::Splice {
            data,
            connection_id: cid
        }]
    );
    assert_eq!(
        h.shared.tcp_connections.get(cid).unwrap().state,
        ConnState::Bound
    );
    // Bound: the owner's 30-second bind deadline leaves it alone.
    h.advance(secs(31));
    assert!(h
        .tcp
        .iter()
        .all(|o| !matches!(o, TcpRelayOutput::CloseConnection { .. })));
    // A second bind of the same id is refused.
    let mut d2 = Client::alice(data_ft(40002));
    connection_bind(&mut other, &mut d2, cid).assert_error(
        Method::CONNECTION_BIND,
        400,
        Some(&d2.key),
    );
    // The splice ends on the other worker: the id is forgotten.
    other.server.handle_data_connection_closed(cid);
    assert!(h.shared.tcp_connections.get(cid).is_none());
}

#[test]
fn connection_bind_from_an_inbound_peer() {
    let mut h = Harness::new();
    let (_c, id) = tcp_allocation(&mut h);
    let cid = h.server.handle_peer_inbound(h.now, id, peer_a()).unwrap();
    h.drain();
    let mut d = Client::alice(data_ft(40001));
    connection_bind(&mut h, &mut d, cid).assert_success(Method::CONNECTION_BIND, &d.key);
}

#[test]
fn connection_bind_with_a_bad_or_missing_id_is_400() {
    let mut h = Harness::new();
    let (mut c, id) = tcp_allocation(&mut h);
    let cid = connect(&mut h, &mut c, id, peer_a());
    let mut d = Client::alice(data_ft(40001));
    connection_bind(&mut h, &mut d, cid.wrapping_add(1)).assert_error(
        Method::CONNECTION_BIND,
        400,
        Some(&d.key),
    );
    d.request(&mut h, Method::CONNECTION_BIND, &[])
        .assert_error(Method::CONNECTION_BIND, 400, Some(&d.key));
    d.request(
        &mut h,
        Method::CONNECTION_BIND,
        &[Attr::Raw(AttrType::CONNECTION_ID, vec![1, 2])],
    )
    .assert_error(Method::CONNECTION_BIND, 400, Some(&d.key));
    // On the control connection (it holds an allocation): 400.
    connection_bind(&mut h, &mut c, cid).assert_error(Method::CONNECTION_BIND, 400, Some(&c.key));
    // Over UDP: 400.
    let mut u = Client::alice(udp("192.0.2.100:40005"));
    connection_bind(&mut h, &mut u, cid).assert_error(Method::CONNECTION_BIND, 400, Some(&u.key));
    // Unauthenticated: 401, like any request.
    let txid = d.txid();
    let req = d.unsigned(Method::CONNECTION_BIND, txid, &[connection_id(cid)]);
    d.send_raw(&mut h, &req)
        .unwrap()
        .assert_error(Method::CONNECTION_BIND, 401, None);
    // The id is still good for its owner's user.
    connection_bind(&mut h, &mut d, cid).assert_success(Method::CONNECTION_BIND, &d.key);
}

#[test]
fn connection_bind_by_another_user_is_441() {
    let mut h = Harness::new();
    let (mut c, id) = tcp_allocation(&mut h);
    let cid = connect(&mut h, &mut c, id, peer_a());
    let mut bob = Client::bob(data_ft(40001));
    connection_bind(&mut h, &mut bob, cid).assert_error(
        Method::CONNECTION_BIND,
        441,
        Some(&bob.key),
    );
    assert!(h
        .tcp
        .iter()
        .all(|o| !matches!(o, TcpRelayOutput::Splice { .. })));
}

#[test]
fn connection_without_bind_closes_after_30_seconds() {
    let mut h = Harness::new();
    let (mut c, id) = tcp_allocation(&mut h);
    let cid = connect(&mut h, &mut c, id, peer_a());
    let inbound = h.server.handle_peer_inbound(h.now, id, peer_a()).unwrap();
    h.drain();
    h.take_to(control());
    h.advance(secs(29));
    assert!(h
        .tcp
        .iter()
        .all(|o| !matches!(o, TcpRelayOutput::CloseConnection { .. })));
    h.advance(secs(1));
    for cid in [cid, inbound] {
        assert!(h.tcp.contains(&TcpRelayOutput::CloseConnection {
            id,
            connection_id: cid
        }));
    }
    assert!(h.shared.tcp_connections.is_empty());
    let mut d = Client::alice(data_ft(40001));
    connection_bind(&mut h, &mut d, cid).assert_error(Method::CONNECTION_BIND, 400, Some(&d.key));
    // The allocation itself lives on, and the peer may be connected again.
    connect(&mut h, &mut c, id, peer_a());
}

#[test]
fn allocation_end_closes_every_connection() {
    let mut h = Harness::new();
    let (mut c, id) = tcp_allocation(&mut h);
    let bound = connect(&mut h, &mut c, id, peer_a());
    let mut d = Client::alice(data_ft(40001));
    connection_bind(&mut h, &mut d, bound).assert_success(Method::CONNECTION_BIND, &d.key);
    let pending = h.server.handle_peer_inbound(h.now, id, peer_a()).unwrap();
    h.drain();
    h.take_to(control());
    c.permit(&mut h, &[peer_b()]);
    assert!(c
        .try_request(&mut h, Method::CONNECT, &[Attr::Peer(peer_b())])
        .is_none());
    let connecting = connect_output(&h, id, peer_b());
    assert_eq!(h.shared.tcp_connections.len(), 3);
    h.tcp.clear();

    h.server.handle_connection_closed(h.now, control());
    h.drain();
    assert_eq!(h.tcp, vec![TcpRelayOutput::Close { id }]);
    assert!(h.shared.tcp_connections.is_empty());
    assert!(!h.server.is_tcp_allocation(id));
    // Late reports about its connections change nothing.
    assert!(!h.server.handle_peer_connected(h.now, connecting));
    h.server.handle_peer_connect_failed(h.now, connecting);
    h.drain();
    h.assert_silent();
    let mut d2 = Client::alice(data_ft(40002));
    connection_bind(&mut h, &mut d2, pending).assert_error(
        Method::CONNECTION_BIND,
        400,
        Some(&d2.key),
    );
    // Its timers fire harmlessly.
    h.advance(secs(60));
    assert!(h
        .tcp
        .iter()
        .all(|o| !matches!(o, TcpRelayOutput::CloseConnection { .. })));
}

#[test]
fn allocation_expiry_closes_its_tcp_relay_too() {
    let mut h = Harness::new();
    let (_c, id) = tcp_allocation(&mut h);
    h.advance(secs(601));
    assert!(h.tcp.contains(&TcpRelayOutput::Close { id }));
    assert_eq!(h.allocation_count(), 0);
}

#[test]
fn a_failed_listener_answers_508_and_leaves_nothing() {
    let mut h = Harness::new();
    h.open_results.push_back(Err(RelayOpenError::Other));
    let mut c = Client::alice(control());
    c.request(&mut h, Method::ALLOCATE, &[transport(TCP)])
        .assert_error(Method::ALLOCATE, 508, Some(&c.key));
    assert_eq!(h.allocation_count(), 0);
    assert_eq!(h.ports_in_use(relay_v4()), 0);
    let id = h.opened[0].id;
    assert!(!h.server.is_tcp_allocation(id));
}

#[test]
fn stream_relayed_bytes_are_counted_by_transport() {
    let mut h = Harness::new();
    h.server.count_stream_relayed(Transport::Tls, 100, 7);
    let r = h.server.counters().relayed[Transport::Tls];
    assert_eq!((r.to_peer_bytes, r.to_client_bytes), (100, 7));
    assert_eq!((r.to_peer_packets, r.to_client_packets), (0, 0));
}

#[test]
fn peer_connections_per_allocation_are_bounded() {
    let mut h = Harness::new();
    let (mut c, id) = tcp_allocation(&mut h);
    let mut ids = Vec::new();
    for i in 0..MAX_PEER_CONNECTIONS {
        let peer = SocketAddr::new(peer_a().ip(), 10_000 + i as u16);
        ids.push(connect(&mut h, &mut c, id, peer));
    }
    let one_more = SocketAddr::new(peer_a().ip(), 9_999);
    c.request(&mut h, Method::CONNECT, &[Attr::Peer(one_more)])
        .assert_error(Method::CONNECT, 508, Some(&c.key));
    assert!(h.server.handle_peer_inbound(h.now, id, one_more).is_none());
    // At the bound: the shared map and the deadlines hold no more than the 64.
    assert_eq!(h.shared.tcp_connections.len(), MAX_PEER_CONNECTIONS);
    assert!(h.server.pending_timers() <= h.server.pending_timers_bound());
    assert_eq!(
        h.server.pending_timers(),
        MAX_PEER_CONNECTIONS + 2,
        "a bind deadline each, the expiry and the sweep"
    );
    // One ends (bound, then its splice closes on whatever worker): room for one more.
    let mut d = Client::alice(data_ft(40001));
    connection_bind(&mut h, &mut d, ids[0]).assert_success(Method::CONNECTION_BIND, &d.key);
    h.server.handle_data_connection_closed(ids[0]);
    assert!(h.server.handle_peer_inbound(h.now, id, one_more).is_some());
    // Ending the allocation takes every connection and deadline with it.
    h.drain();
    h.transmits.clear();
    c.refresh(&mut h, Some(0))
        .assert_success(Method::REFRESH, &c.key);
    assert!(h.shared.tcp_connections.is_empty());
    assert_eq!(h.server.pending_timers(), 0);
}

#[test]
fn connection_bind_may_carry_the_control_connections_nonce() {
    let mut h = Harness::new();
    let (mut c, id) = tcp_allocation(&mut h);
    let cid = connect(&mut h, &mut c, id, peer_a());
    // A new connection, signed with the nonce issued to the control connection: accepted
    // at once (no 438 round trip), as coturn's client expects.
    let mut d = Client::alice(data_ft(40001));
    d.nonce = c.nonce.clone();
    let txid = d.txid();
    let req = d.signed(Method::CONNECTION_BIND, txid, &[connection_id(cid)]);
    d.send_raw(&mut h, &req)
        .unwrap()
        .assert_success(Method::CONNECTION_BIND, &d.key);
    // Not for another request on that connection, nor for an id that does not exist.
    let mut e = Client::alice(data_ft(40002));
    e.nonce = c.nonce.clone();
    let txid = e.txid();
    let req = e.signed(Method::CONNECTION_BIND, txid, &[connection_id(cid ^ 1)]);
    e.send_raw(&mut h, &req)
        .unwrap()
        .assert_error(Method::CONNECTION_BIND, 438, None);
    let txid = e.txid();
    let req = e.signed(Method::REFRESH, txid, &[]);
    e.send_raw(&mut h, &req)
        .unwrap()
        .assert_error(Method::REFRESH, 438, None);
}
