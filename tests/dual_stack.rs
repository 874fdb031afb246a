//! Dual-stack allocations on the wire (RFC 8656 §7.2 step 9): a client on IPv4 loopback asks
//! with ADDITIONAL-ADDRESS-FAMILY for an IPv4 and an IPv6 relayed address, and relays to an
//! IPv4 peer on 127.0.0.1 and an IPv6 peer on ::1, both ways, with Send/Data and ChannelData;
//! one family is deleted while the other keeps relaying; the IPv6-only allocation over an IPv6
//! listener; and a server without an IPv6 relay address answering with ADDRESS-ERROR-CODE 440.
//!
//! The server runs in-process on loopback (`tests/raw`); every wait is bounded.

mod common;
mod raw;

use common::http_get;
use raw::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use turnd::config::ConfigArgs;

/// A server listening on 127.0.0.1, relaying on `relay_ips`, with loopback peers allowed.
fn server(relay_ips: &[&str]) -> TestServer {
    require_ipv6_loopback();
    TestServer::start(ConfigArgs {
        relay_ip: relay_ips.iter().map(|s| s.to_string()).collect(),
        allow_peer: vec!["127.0.0.1/32".into(), "::1/128".into()],
        ..base_args()
    })
}

/// A dual Allocate that must succeed with both families: (IPv4 relayed, IPv6 relayed).
#[track_caller]
fn allocate_dual(c: &mut Client) -> (SocketAddr, SocketAddr) {
    let r = c.allocate_with(&[udp(), additional_family(FAMILY_V6)]);
    assert_success(&r, ALLOCATE);
    assert_eq!(r.address_error_code(), None, "{}", describe(&r));
    let relayed = r.xor_addresses(A_XOR_RELAYED_ADDRESS);
    assert_eq!(
        relayed.len(),
        2,
        "two XOR-RELAYED-ADDRESS: {}",
        describe(&r)
    );
    assert!(r.lifetime().is_some());
    (relayed[0], relayed[1])
}

/// The client relays `up` to `peer` through `relayed` (with a Send indication, or on
/// `channel`), and `peer`'s answer comes back the same way.
#[track_caller]
fn round_trip(c: &Client, peer: &Peer, relayed: SocketAddr, channel: Option<u16>, up: &[u8]) {
    match channel {
        Some(n) => c.send_channel_data(n, up, true),
        None => c.send_indication(peer.addr(), up),
    }
    let (got, from) = peer.recv().expect("the peer receives the relayed datagram");
    assert_eq!(
        (got.as_slice(), from),
        (up, relayed),
        "from the relayed address of the peer's family"
    );
    let down: Vec<u8> = up.iter().rev().copied().collect();
    peer.send_to(relayed, &down);
    match channel {
        Some(n) => assert_eq!(c.recv_channel_data(), (n, down)),
        None => assert_eq!(c.recv_data_indication(), (peer.addr(), down)),
    }
}

#[test]
fn dual_allocation_relays_to_ipv4_and_ipv6_peers_both_ways() {
    let s = server(&["127.0.0.1", "::1"]);
    let mut c = s.client();
    let (v4, v6) = allocate_dual(&mut c);
    assert_eq!(v4.ip().to_string(), "127.0.0.1");
    assert_eq!(v6.ip().to_string(), "::1");
    let (p4, p6) = (Peer::v4(), Peer::v6());
    // One CreatePermission naming a peer of each family (RFC 8656 §10.1).
    let r = c.create_permission(&[p4.addr(), p6.addr()]);
    assert_success(&r, CREATE_PERMISSION);
    round_trip(&c, &p4, v4, None, b"send/data over IPv4");
    round_trip(&c, &p6, v6, None, b"send/data over IPv6");
    c.bind_channel(0x4000, p4.addr());
    c.bind_channel(0x4001, p6.addr());
    round_trip(&c, &p4, v4, Some(0x4000), b"channel over IPv4");
    round_trip(&c, &p6, v6, Some(0x4001), b"channel over IPv6");
    // Permissions are per IP: a stranger on 127.0.0.2 is not relayed, on either socket.
    let stranger = std::net::UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    stranger.send_to(b"no permission", v4).unwrap();
    c.expect_silence("a datagram from an IPv4 address without a permission");
}

#[test]
fn deleting_the_ipv4_family_keeps_the_ipv6_one_relaying() {
    let s = server(&["127.0.0.1", "::1"]);
    let mut c = s.client();
    let (v4, v6) = allocate_dual(&mut c);
    let (p4, p6) = (Peer::v4(), Peer::v6());
    assert_success(
        &c.create_permission(&[p4.addr(), p6.addr()]),
        CREATE_PERMISSION,
    );
    c.bind_channel(0x4001, p6.addr());
    let r = c.request(REFRESH, &[address_family(FAMILY_V4), lifetime(0)]);
    assert_success(&r, REFRESH);
    assert_eq!(r.lifetime(), Some(0));
    // The IPv4 side is gone: nothing is relayed to or from it, and naming it is 443.
    c.send_indication(p4.addr(), b"to a deleted family");
    p4.expect_silence("a Send indication for a deleted family");
    let _ = p4.sock.send_to(b"to a closed socket", v4);
    c.expect_silence("a datagram to the deleted family's relayed address");
    let r = c.request(REFRESH, &[address_family(FAMILY_V4)]);
    assert_error(&r, REFRESH, 443);
    let r = c.create_permission(&[p4.addr()]);
    assert_error(&r, CREATE_PERMISSION, 443);
    // The IPv6 side carries on, channel and all.
    round_trip(&c, &p6, v6, Some(0x4001), b"still here");
    let r = c.request(REFRESH, &[address_family(FAMILY_V6), lifetime(1200)]);
    assert_success(&r, REFRESH);
    // Another port of the permitted IPv6 address, without a channel: Send/Data.
    round_trip(&c, &Peer::v6(), v6, None, b"after a refresh");
}

#[test]
fn dual_allocation_is_counted_as_dual_in_metrics_and_listed_with_both_relays() {
    let s = server(&["127.0.0.1", "::1"]);
    let mut c = s.client();
    let (v4, v6) = allocate_dual(&mut c);
    let list = http_get(s.metrics_addr(), "/allocations");
    let relays = format!("\"relay\":\"{v4}\",\"relays\":[\"{v4}\",\"{v6}\"]");
    assert!(list.contains(&relays), "no `{relays}` in {list}");
    let series = "turnd_allocations_active{transport=\"udp\",family=\"dual\"} 1";
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = String::new();
    for _ in 0..50 {
        last = http_get(s.metrics_addr(), "/metrics");
        if last.lines().any(|l| l == series) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        last.lines().any(|l| l == series),
        "no `{series}` in:\n{last}"
    );
    assert!(last
        .lines()
        .any(|l| l == "turnd_allocations_active{transport=\"udp\",family=\"ipv4\"} 0"));
}

#[test]
fn without_an_ipv6_relay_address_the_allocation_is_ipv4_only_with_440() {
    let s = server(&["127.0.0.1"]);
    let mut c = s.client();
    let r = c.allocate_with(&[udp(), additional_family(FAMILY_V6)]);
    assert_success(&r, ALLOCATE);
    let relayed = r.xor_addresses(A_XOR_RELAYED_ADDRESS);
    assert_eq!(relayed.len(), 1, "{}", describe(&r));
    assert!(relayed[0].is_ipv4());
    let (family, code, _) = r.address_error_code().expect("ADDRESS-ERROR-CODE");
    assert_eq!((family, code), (FAMILY_V6, 440));
    let p6 = Peer::v6();
    assert_error(&c.create_permission(&[p6.addr()]), CREATE_PERMISSION, 443);
    let p4 = Peer::v4();
    c.permit(p4.addr());
    round_trip(&c, &p4, relayed[0], None, b"ipv4 still works");
}

#[test]
fn bad_family_combinations_get_400_on_the_wire() {
    let s = server(&["127.0.0.1", "::1"]);
    let mut c = s.client();
    for attrs in [
        vec![udp(), additional_family(FAMILY_V4)],
        vec![
            udp(),
            additional_family(FAMILY_V6),
            address_family(FAMILY_V6),
        ],
        vec![udp(), additional_family(FAMILY_V6), even_port(true)],
    ] {
        let r = c.allocate_with(&attrs);
        assert_error(&r, ALLOCATE, 400);
    }
}

#[test]
fn ipv6_only_allocation_over_an_ipv6_listener() {
    let s = TestServer::start(ConfigArgs {
        allow_peer: vec!["::1/128".into()],
        ..base_args_v6()
    });
    let mut c = s.client();
    let relayed = c.allocate_v6();
    assert_eq!(relayed.ip().to_string(), "::1");
    let p6 = Peer::v6();
    c.permit(p6.addr());
    round_trip(&c, &p6, relayed, None, b"v6 send/data");
    c.bind_channel(0x4000, p6.addr());
    round_trip(&c, &p6, relayed, Some(0x4000), b"v6 channel");
    // An IPv4 peer is another family: 443.
    assert_error(
        &c.create_permission(&["127.0.0.1:9".parse().unwrap()]),
        CREATE_PERMISSION,
        443,
    );
}
