//! The relay never reaches its own host: CreatePermission, ChannelBind, Send, ChannelData,
//! Connect and inbound datagrams and connections toward or from an own address are refused,
//! except the relay ports of the relay IPs (two clients of one relay reach each other's
//! relayed addresses, both ways); an exact `allow_peers` entry reopens an own address and a
//! broader one does not; a reload that denies a peer stops its permissions, channels and TCP
//! connections at once; an ALTERNATE-SERVER list naming this node is recognised behind a
//! wildcard listener.
//!
//! The harness's addresses are documentation ranges, which the built-in list denies; here
//! `allow_peers` opens them so they stand in for a public host: listening on 192.0.2.1:3478
//! (and [2001:db8::1]:3478, admin 192.0.2.1:9641), relaying on 192.0.2.10 advertised as
//! 203.0.113.10 (and 2001:db8::10), relay ports 50000–50009, and 192.0.2.77 another address
//! on its interface (an SSH server, say).

use super::tcp_relay::{connect, connection_bind, control, data_ft, tcp_allocation};
use super::*;
use crate::core::own_host::{HostAddrs, InterfaceAddr, OwnHost};
use crate::core::tcp_relay::TcpRelayOutput;

const ADMIN: &str = "192.0.2.1:9641";
/// Another address of the host, listed nowhere in the configuration.
const HOST_OTHER: &str = "192.0.2.77";

/// Ranges opened so the harness's addresses count as public, and loopback (the laptop demo's
/// entry, to show an own address stays shut under a same-length allow).
const PUBLIC: [&str; 5] = [
    "192.0.2.0/24",
    "203.0.113.0/24",
    "2001:db8::/64",
    "127.0.0.0/8",
    "198.51.100.0/24",
];

fn interfaces() -> Vec<InterfaceAddr> {
    let i = |a: &str, prefix, loopback| InterfaceAddr {
        ip: ip(a),
        prefix,
        loopback,
    };
    vec![
        i("127.0.0.1", 8, true),
        i("::1", 128, true),
        i("192.0.2.1", 24, false),
        i("192.0.2.10", 24, false),
        i(HOST_OTHER, 24, false),
        i("2001:db8::1", 64, false),
        i("2001:db8::10", 64, false),
    ]
}

/// The filter of `shared` with `allow` (plus the harness's peers) and `deny`, refusing the
/// host of `listeners`.
fn filter(shared: &Shared, listeners: &[SocketAddr], allow: &[&str], deny: &[&str]) -> PeerFilter {
    let own = OwnHost::new(&HostAddrs {
        listeners: listeners.to_vec(),
        relays: shared.config.relays.clone(),
        relay_ports: (PORT_LOW, PORT_HIGH),
        interfaces: interfaces(),
    });
    let parse = |l: &[&str]| -> Vec<Cidr> { l.iter().map(|s| s.parse().unwrap()).collect() };
    let mut allow = parse(allow);
    allow.push("2001:db8:1::/48".parse().unwrap());
    PeerFilter::new(allow, parse(deny)).with_own_host(own)
}

fn listeners() -> Vec<SocketAddr> {
    vec![server_v4(), server_v6(), sa(ADMIN)]
}

fn harness_with(setup: Setup, listeners: &[SocketAddr], allow: &[&str]) -> Harness {
    let shared = setup.shared();
    shared
        .peer_filter
        .store(filter(&shared, listeners, allow, &[]));
    Harness::from_shared(shared, 0x5eed)
}

/// The public-host harness, with `extra` allow entries.
fn harness(extra: &[&str]) -> Harness {
    let mut allow = PUBLIC.to_vec();
    allow.extend_from_slice(extra);
    harness_with(Setup::default(), &listeners(), &allow)
}

fn relay_port(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(self::ip(ip), port)
}

/// Ports of the host that must never be reached: TURN, admin, SSH, and one just below the
/// relay range.
const HOST_PORTS: [u16; 4] = [3478, 9641, 22, PORT_LOW - 1];

#[test]
fn create_permission_and_channel_bind_refuse_own_addresses() {
    let mut h = harness(&[]);
    let mut c = Client::alice(udp("198.51.100.50:40000"));
    c.allocate(&mut h);
    let mut c6 = Client::bob(udp("[2001:db8:1::50]:40000"));
    c6.allocate_with(&mut h, &[family(2)])
        .assert_success(Method::ALLOCATE, &c6.key.clone());
    let v4 = ["192.0.2.1", HOST_OTHER, "127.0.0.1", "0.0.0.0"];
    let v6 = [
        "2001:db8::1",
        "::1",
        "::",
        "::ffff:192.0.2.77",
        "::ffff:192.0.2.1",
        "64:ff9b::c000:24d",
    ];
    let mut denied = 0;
    for (client, targets) in [(&mut c, &v4[..]), (&mut c6, &v6[..])] {
        for t in targets {
            let peer = SocketAddr::new(ip(t), 50005);
            let key = client.key;
            client.create_permission(&mut h, &[peer]).assert_error(
                Method::CREATE_PERMISSION,
                403,
                Some(&key),
            );
            client.channel_bind(&mut h, 0x4000, peer).assert_error(
                Method::CHANNEL_BIND,
                403,
                Some(&key),
            );
            denied += 2;
            // One own address among allowed ones refuses the whole request.
            let other = if peer.is_ipv4() { peer_a() } else { peer_v6() };
            client
                .create_permission(&mut h, &[other, peer])
                .assert_error(Method::CREATE_PERMISSION, 403, Some(&key));
            denied += 1;
        }
    }
    assert_eq!(h.server.counters().peers_denied, denied);
    assert_eq!(h.server.counters().permissions, 0);
    // The laptop demo's 127.0.0.0/8 still opens the rest of loopback (no wildcard listener).
    c.permit(&mut h, &[sa("127.0.0.2:7")]);
}

#[test]
fn a_relay_ip_permission_carries_data_to_relay_ports_only() {
    let mut h = harness(&[]);
    let mut c = Client::alice(udp("198.51.100.50:40000"));
    let (id, _) = c.allocate(&mut h);
    for relay_ip in ["203.0.113.10", "192.0.2.10"] {
        c.permit(&mut h, &[relay_port(relay_ip, 0)]);
        let ok = relay_port(relay_ip, 50005);
        let (fwd, dgram) = c.send_indication(&mut h, ok, b"to a relayed address");
        assert_forward(fwd, &dgram, id, ok, b"to a relayed address");
        assert!(h.peer(id, ok, b"back").is_some());
        for port in HOST_PORTS {
            let p = relay_port(relay_ip, port);
            let before = h.server.counters().dropped[DropReason::NoPermission];
            assert_eq!(c.send_indication(&mut h, p, b"x").0, None, "Send to {p}");
            assert!(h.peer(id, p, b"x").is_none(), "datagram from {p}");
            assert_eq!(
                h.server.counters().dropped[DropReason::NoPermission],
                before + 2,
                "{p}"
            );
            let key = c.key;
            c.channel_bind(&mut h, 0x4000, p)
                .assert_error(Method::CHANNEL_BIND, 403, Some(&key));
        }
    }
    // A channel to a relay port relays both ways.
    let ok = relay_port("203.0.113.10", 50007);
    c.bind(&mut h, 0x4001, ok);
    let (fwd, msg) = c.channel_data(&mut h, 0x4001, b"cd");
    assert_forward(fwd, &msg, id, ok, b"cd");
    let (_, framed) = h.peer(id, ok, b"cd back").expect("relayed to the client");
    assert_eq!(&framed[..2], &0x4001u16.to_be_bytes());
}

#[test]
fn two_clients_relay_to_each_other_both_ways() {
    let mut h = harness(&[]);
    let mut a = Client::alice(udp("198.51.100.50:40000"));
    let mut b = Client::bob(udp("198.51.100.60:40000"));
    let (ida, relayed_a) = a.allocate(&mut h);
    let (idb, relayed_b) = b.allocate(&mut h);
    assert_eq!(relayed_a.ip(), advertised_v4());
    a.permit(&mut h, &[relayed_b]);
    b.permit(&mut h, &[relayed_a]);
    // Send → Data indication, A to B, then B to A.
    let (fwd, dgram) = a.send_indication(&mut h, relayed_b, b"a to b");
    assert_forward(fwd, &dgram, ida, relayed_b, b"a to b");
    let (to, framed) = h.peer(idb, relayed_a, b"a to b").expect("reaches B");
    assert_eq!(to, b.ft);
    assert_eq!(Message::parse(&framed).unwrap().data().unwrap(), b"a to b");
    let (fwd, dgram) = b.send_indication(&mut h, relayed_a, b"b to a");
    assert_forward(fwd, &dgram, idb, relayed_a, b"b to a");
    let (to, _) = h.peer(ida, relayed_b, b"b to a").expect("reaches A");
    assert_eq!(to, a.ft);
    // Channels, both ways.
    a.bind(&mut h, 0x4000, relayed_b);
    b.bind(&mut h, 0x4000, relayed_a);
    let (fwd, msg) = a.channel_data(&mut h, 0x4000, b"cd a to b");
    assert_forward(fwd, &msg, ida, relayed_b, b"cd a to b");
    let (to, framed) = h.peer(idb, relayed_a, b"cd a to b").expect("reaches B");
    assert_eq!((to, &framed[4..]), (b.ft, &b"cd a to b"[..]));
    let (fwd, msg) = b.channel_data(&mut h, 0x4000, b"cd b to a");
    assert_forward(fwd, &msg, idb, relayed_a, b"cd b to a");
    let (to, framed) = h.peer(ida, relayed_b, b"cd b to a").expect("reaches A");
    assert_eq!((to, &framed[4..]), (a.ft, &b"cd b to a"[..]));
    // Over IPv6 as well.
    let mut a6 = Client::alice(udp("[2001:db8:1::50]:40000"));
    let mut b6 = Client::bob(udp("[2001:db8:1::60]:40000"));
    let r = a6.allocate_with(&mut h, &[family(2)]);
    let relayed_a6 = r.relayed();
    let r = b6.allocate_with(&mut h, &[family(2)]);
    let relayed_b6 = r.relayed();
    let (ida6, idb6) = (h.id_of(a6.ft).unwrap(), h.id_of(b6.ft).unwrap());
    a6.permit(&mut h, &[relayed_b6]);
    b6.permit(&mut h, &[relayed_a6]);
    let (fwd, dgram) = a6.send_indication(&mut h, relayed_b6, b"v6");
    assert_forward(fwd, &dgram, ida6, relayed_b6, b"v6");
    assert!(h.peer(idb6, relayed_a6, b"v6").is_some());
    assert!(h.peer(ida6, relayed_b6, b"v6").is_some());
}

#[test]
fn only_an_exact_allow_reopens_an_own_address() {
    // The harness's broader 192.0.2.0/24 and 127.0.0.0/8 open nothing own (see above); a
    // host route does.
    let mut h = harness(&[HOST_OTHER, "203.0.113.10/32"]);
    let mut c = Client::alice(udp("198.51.100.50:40000"));
    let (id, _) = c.allocate(&mut h);
    let ssh = relay_port(HOST_OTHER, 22);
    c.permit(&mut h, &[ssh, relay_port("203.0.113.10", 0)]);
    let (fwd, dgram) = c.send_indication(&mut h, ssh, b"ssh");
    assert_forward(fwd, &dgram, id, ssh, b"ssh");
    let turn = relay_port("203.0.113.10", 3478);
    let (fwd, dgram) = c.send_indication(&mut h, turn, b"turn");
    assert_forward(fwd, &dgram, id, turn, b"turn");
    c.bind(&mut h, 0x4000, ssh);
    // Not the addresses next to them.
    let key = c.key;
    c.create_permission(&mut h, &[relay_port("192.0.2.1", 0)])
        .assert_error(Method::CREATE_PERMISSION, 403, Some(&key));
}

#[test]
fn connect_and_inbound_connections_respect_the_own_host() {
    let mut h = harness(&[]);
    let (mut c, id) = tcp_allocation(&mut h);
    let key = c.key;
    c.permit(&mut h, &[relay_port("203.0.113.10", 0)]);
    c.create_permission(&mut h, &[relay_port(HOST_OTHER, 0)])
        .assert_error(Method::CREATE_PERMISSION, 403, Some(&key));
    for peer in [
        relay_port(HOST_OTHER, 22),
        relay_port("192.0.2.1", 3478),
        relay_port("127.0.0.1", 6379),
    ]
    .into_iter()
    .chain(HOST_PORTS.map(|p| relay_port("203.0.113.10", p)))
    {
        c.request(&mut h, Method::CONNECT, &[Attr::Peer(peer)])
            .assert_error(Method::CONNECT, 403, Some(&key));
        assert!(
            h.server.handle_peer_inbound(h.now, id, peer).is_none(),
            "{peer}"
        );
    }
    assert!(h.tcp.is_empty(), "no connection attempted: {:?}", h.tcp);
    // Another TCP allocation's relayed address: connect out, and accept it connecting in.
    let other = relay_port("203.0.113.10", 50006);
    connect(&mut h, &mut c, id, other);
    assert!(h
        .server
        .handle_peer_inbound(h.now, id, relay_port("203.0.113.10", 50007))
        .is_some());
}

/// The harness filter with `deny` added, stored as a reload would.
fn reload(h: &mut Harness, allow: &[&str], deny: &[&str]) {
    let f = filter(&h.shared, &listeners(), allow, deny);
    h.shared.peer_filter.store(f);
}

#[test]
fn reload_that_denies_a_peer_stops_its_permissions_and_channels_at_once() {
    let mut h = harness(&[]);
    let mut c = Client::alice(udp("192.0.2.100:40000"));
    let (id, _) = c.allocate(&mut h);
    c.permit(&mut h, &[peer_a(), peer_b()]);
    c.bind(&mut h, 0x4000, peer_a());
    assert!(c.channel_data(&mut h, 0x4000, b"x").0.is_some());
    assert_eq!(
        (
            h.server.counters().permissions,
            h.server.counters().channels
        ),
        (2, 1)
    );
    reload(&mut h, &PUBLIC, &["198.51.100.1/32"]);
    h.server.handle_peer_filter_changed(h.now);
    h.drain();
    // peer_a: nothing, either way, by any framing.
    assert_eq!(c.channel_data(&mut h, 0x4000, b"x").0, None);
    assert_eq!(c.send_indication(&mut h, peer_a(), b"x").0, None);
    assert!(h.peer(id, peer_a(), b"x").is_none());
    // peer_b is untouched.
    let (fwd, d) = c.send_indication(&mut h, peer_b(), b"b");
    assert_forward(fwd, &d, id, peer_b(), b"b");
    assert!(h.peer(id, peer_b(), b"b").is_some());
    // Counted right: the permission is gone; the channel cools down, then goes.
    assert_eq!(h.server.counters().permissions, 1);
    assert_eq!(h.server.counters().channels, 1);
    let key = c.key;
    c.create_permission(&mut h, &[peer_a()]).assert_error(
        Method::CREATE_PERMISSION,
        403,
        Some(&key),
    );
    c.channel_bind(&mut h, 0x4000, peer_a())
        .assert_error(Method::CHANNEL_BIND, 403, Some(&key));
    // The number stays taken for its cool-down (RFC 8656 §12).
    c.channel_bind(&mut h, 0x4000, peer_b())
        .assert_error(Method::CHANNEL_BIND, 400, Some(&key));
    c.permit(&mut h, &[peer_b()]);
    h.advance(crate::core::channel::CHANNEL_COOLDOWN);
    assert_eq!(h.server.counters().channels, 0);
    c.bind(&mut h, 0x4000, peer_b());
    // Applying the same filter again changes nothing.
    h.server.handle_peer_filter_changed(h.now);
    assert!(c.channel_data(&mut h, 0x4000, b"x").0.is_some());
}

#[test]
fn a_reload_is_noticed_by_the_timer_when_the_shell_does_not_report_it() {
    let mut h = harness(&[]);
    let mut c = Client::alice(udp("192.0.2.100:40000"));
    c.allocate(&mut h);
    c.permit(&mut h, &[peer_a()]);
    reload(&mut h, &PUBLIC, &["198.51.100.0/24"]);
    h.advance(secs(1));
    assert_eq!(c.send_indication(&mut h, peer_a(), b"x").0, None);
    assert_eq!(h.server.counters().permissions, 0);
}

#[test]
fn reload_that_drops_an_exact_allow_holds_a_relay_ip_to_relay_ports() {
    let mut h = harness(&["203.0.113.10"]);
    let mut c = Client::alice(udp("192.0.2.100:40000"));
    let (id, _) = c.allocate(&mut h);
    c.permit(&mut h, &[relay_port("203.0.113.10", 0)]);
    let ssh = relay_port("203.0.113.10", 22);
    c.bind(&mut h, 0x4000, ssh);
    assert!(c.send_indication(&mut h, ssh, b"x").0.is_some());
    reload(&mut h, &PUBLIC, &[]);
    h.server.handle_peer_filter_changed(h.now);
    assert_eq!(c.send_indication(&mut h, ssh, b"x").0, None);
    assert_eq!(c.channel_data(&mut h, 0x4000, b"x").0, None);
    assert!(h.peer(id, ssh, b"x").is_none());
    // The permission stays for the relay ports.
    let ok = relay_port("203.0.113.10", 50003);
    assert!(c.send_indication(&mut h, ok, b"x").0.is_some());
    assert!(h.peer(id, ok, b"x").is_some());
    assert_eq!(h.server.counters().permissions, 1);
}

#[test]
fn reload_closes_tcp_connections_to_a_denied_peer() {
    let mut h = harness(&[]);
    let (mut c, id) = tcp_allocation(&mut h);
    // One bound (spliced), one waiting for its bind, one still connecting: all to peer_a.
    let bound = connect(&mut h, &mut c, id, peer_a());
    let mut data = Client::alice(data_ft(40100));
    connection_bind(&mut h, &mut data, bound).assert_success(Method::CONNECTION_BIND, &data.key);
    let pending = h
        .server
        .handle_peer_inbound(h.now, id, sa("198.51.100.1:7000"))
        .expect("accepted");
    h.drain();
    h.transmits.clear(); // the ConnectionAttempt
    let connecting_peer = sa("198.51.100.1:7001");
    assert!(c
        .try_request(&mut h, Method::CONNECT, &[Attr::Peer(connecting_peer)])
        .is_none());
    h.tcp.clear();
    h.transmits.clear();
    reload(&mut h, &PUBLIC, &["198.51.100.1/32"]);
    h.server.handle_peer_filter_changed(h.now);
    h.drain();
    // The Connect in progress is answered 403, and the pending connection closed...
    h.take_one(control())
        .assert_error(Method::CONNECT, 403, Some(&c.key));
    assert!(h.tcp.contains(&TcpRelayOutput::CloseConnection {
        id,
        connection_id: pending
    }));
    // ...and the spliced one cannot be cut alone: the allocation ends.
    assert!(h.tcp.contains(&TcpRelayOutput::Close { id }));
    assert_eq!(h.ended()[0].1, EndReason::PeerDenied);
    assert!(h.shared.tcp_connections.is_empty());
    assert_eq!(h.allocation_count(), 0);
}

#[test]
fn reload_keeps_tcp_connections_to_allowed_peers() {
    let mut h = harness(&[]);
    let (mut c, id) = tcp_allocation(&mut h);
    let cid = connect(&mut h, &mut c, id, peer_a());
    reload(&mut h, &PUBLIC, &["198.51.100.2/32"]);
    h.server.handle_peer_filter_changed(h.now);
    h.drain();
    assert!(h.shared.tcp_connections.get(cid).is_some());
    assert_eq!(h.allocation_count(), 1);
}

/// A node behind a wildcard listener, full, with one config file listing every node.
fn wildcard_node(alternates: &[&str]) -> Harness {
    let setup = Setup {
        quotas: (0, 1),
        alternate_servers: alternates.iter().map(|a| sa(a)).collect(),
        ..Setup::default()
    };
    harness_with(setup, &[sa("0.0.0.0:3478"), sa(ADMIN)], &PUBLIC)
}

fn wildcard_ft(client: &str) -> FiveTuple {
    FiveTuple::udp(sa(client), sa("0.0.0.0:3478"))
}

#[test]
fn alternate_list_naming_this_node_is_recognised_behind_a_wildcard() {
    // Its interface address, its advertised address and a loopback spelling are all this
    // node; 198.51.100.9 is the other one.
    let mut h = wildcard_node(&[
        "192.0.2.1:3478",
        "203.0.113.10:3478",
        "127.0.0.5:3478",
        "198.51.100.9:3478",
    ]);
    Client::alice(wildcard_ft("198.51.100.50:40000")).allocate(&mut h);
    for port in 40001..40033 {
        let mut b = Client::bob(wildcard_ft(&format!("198.51.100.50:{port}")));
        let resp = b.allocate_with(&mut h, &[]);
        resp.assert_error(Method::ALLOCATE, 300, Some(&b.key));
        let alt = resp
            .msg()
            .attributes()
            .find(|(t, _)| *t == AttrType::ALTERNATE_SERVER)
            .map(|(_, v)| crate::stun::address::decode_plain(v).unwrap());
        assert_eq!(alt, Some(sa("198.51.100.9:3478")));
    }
    // A list naming only this node: no redirect at all.
    let mut h = wildcard_node(&["192.0.2.1:3478", "203.0.113.10:3478"]);
    Client::alice(wildcard_ft("198.51.100.50:40000")).allocate(&mut h);
    let mut b = Client::bob(wildcard_ft("198.51.100.50:40001"));
    b.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 486, Some(&b.key));
    // Another port of this host is another server.
    let mut h = wildcard_node(&["192.0.2.1:3479"]);
    Client::alice(wildcard_ft("198.51.100.50:40000")).allocate(&mut h);
    let mut b = Client::bob(wildcard_ft("198.51.100.50:40001"));
    b.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 300, Some(&b.key));
}
