//! The counters the metrics endpoint publishes: relayed traffic by direction and transport,
//! responses by method and result, authentication failures by reason, and the permission and
//! channel gauges.

use super::*;
use crate::core::{AuthFailure, CounterKey, Relayed, RequestMethod, ResponseResult};

fn ft() -> FiveTuple {
    udp("192.0.2.100:40000")
}

/// The key whose metric label is `label`.
fn labelled<K: CounterKey>(label: &str) -> K {
    *K::ALL.iter().find(|k| k.label() == label).unwrap()
}

fn result(label: &str) -> ResponseResult {
    labelled(label)
}

fn method(label: &str) -> Option<RequestMethod> {
    labelled(label)
}

fn reason(label: &str) -> AuthFailure {
    labelled(label)
}

#[test]
fn relayed_traffic_by_direction_and_transport() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (id, _) = c.allocate(&mut h);
    c.permit(&mut h, &[peer_a()]);
    c.bind(&mut h, 0x4000, peer_a());
    assert!(c.send_indication(&mut h, peer_a(), b"12345").0.is_some());
    assert!(c.channel_data(&mut h, 0x4000, &[7; 10]).0.is_some());
    assert!(h.peer(id, peer_a(), &[1; 7]).is_some());
    // Dropped datagrams move no relay counter.
    assert!(c.send_indication(&mut h, peer_b(), b"x").0.is_none());
    assert!(h.peer(id, peer_b(), b"y").is_none());

    let r = h.server.counters().relayed[Transport::Udp];
    assert_eq!(
        (r.to_peer_packets, r.to_peer_bytes),
        (2, 15),
        "client → peer"
    );
    assert_eq!(
        (r.to_client_packets, r.to_client_bytes),
        (1, 7),
        "peer → client"
    );
    assert_eq!(
        h.server.counters().relayed[Transport::Tcp],
        Relayed::default(),
        "tcp"
    );
    assert_eq!(h.server.counters().dropped[DropReason::NoPermission], 2);
}

#[test]
fn responses_by_method_and_result() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate(&mut h);
    let denied = sa("10.0.0.1:1");
    c.create_permission(&mut h, &[denied]).assert_error(
        Method::CREATE_PERMISSION,
        403,
        Some(&c.key.clone()),
    );
    c.permit(&mut h, &[peer_a()]);
    let counters = h.server.counters();
    let r = &counters.responses;
    assert_eq!(r[method("allocate")][result("401")], 1, "the challenge");
    assert_eq!(r[method("allocate")][result("success")], 1);
    assert_eq!(r[method("create_permission")][result("403")], 1);
    assert_eq!(r[method("create_permission")][result("success")], 1);
    assert_eq!(counters.peers_denied, 1);
    let total: u64 = r.values().iter().flat_map(|row| row.values()).sum();
    assert_eq!(total, 4, "every response counted once");
    // The challenge is not an authentication failure.
    assert_eq!(counters.auth_failures, 0);
}

#[test]
fn auth_failures_by_reason() {
    let mut h = Harness::new();
    let mut wrong = Client::new(ft(), "alice", "not-her-password");
    wrong
        .allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 401, None);
    let mut stranger = Client::new(udp("192.0.2.101:40000"), "mallory", "x");
    stranger
        .allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 401, None);
    let c = h.server.counters();
    assert_eq!(c.auth_failure_reasons[reason("bad_integrity")], 1);
    assert_eq!(c.auth_failure_reasons[reason("unknown_user")], 1);
    assert_eq!(c.auth_failures, 2);
}

#[test]
fn permission_and_channel_gauges_follow_install_sweep_and_teardown() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate(&mut h);
    c.permit(&mut h, &[peer_a(), peer_b()]);
    c.permit(&mut h, &[peer_a()]);
    let k = h.server.counters();
    assert_eq!((k.permissions, k.permissions_created), (2, 2));
    c.bind(&mut h, 0x4000, peer_a());
    c.bind(&mut h, 0x4000, peer_a());
    let k = h.server.counters();
    assert_eq!((k.channels, k.channels_created), (1, 1));
    assert_eq!(k.permissions, 2);

    // Permissions last 300 s; the channel (600 s) keeps peer_a's alive only until then too,
    // as the refresh above installed both at once.
    h.advance(secs(301));
    let k = h.server.counters();
    assert_eq!(k.permissions, 0);
    assert_eq!(k.channels, 1);

    c.refresh(&mut h, Some(0));
    let k = h.server.counters();
    assert_eq!((k.permissions, k.channels), (0, 0));
    assert_eq!((k.permissions_created, k.channels_created), (2, 1));
}
