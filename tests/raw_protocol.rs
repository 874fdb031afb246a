//! The TURN protocol on the wire: a raw client (tests/raw) against a real server over real
//! UDP sockets on 127.0.0.1. Each test starts its own in-process server on free ports.

mod raw;

use raw::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use turnd::config::ConfigArgs;

/// A server that lets clients relay to 127.0.0.1 (denied by default).
fn loopback_server() -> TestServer {
    TestServer::allowing(&["127.0.0.1/32"])
}

/// A client with an allocation and a permission for `peer`.
fn allocated_with_peer(server: &TestServer, peer: &Peer) -> (Client, SocketAddr) {
    let mut c = server.client();
    let relay = c.allocate();
    c.permit(peer.addr());
    (c, relay)
}

// ---------------------------------------------------------------------------------------------
// Binding and the authentication dance
// ---------------------------------------------------------------------------------------------

#[test]
fn binding_reports_the_client_address() {
    let server = TestServer::start(base_args());
    let c = server.client();
    assert_eq!(c.binding(), c.local());

    // With FINGERPRINT on the request, the answer carries a valid one too (RFC 8489 §7.3).
    let req = encode(msg_type(BINDING, REQUEST), new_txid(), &[], None, true);
    let r = c.transact(&req);
    assert_success(&r, BINDING);
    assert!(r.verify_fingerprint(), "Binding response FINGERPRINT");
    assert_eq!(r.xor_address(A_XOR_MAPPED_ADDRESS), Some(c.local()));
    assert!(
        !r.has(A_MESSAGE_INTEGRITY),
        "unauthenticated Binding is unsigned"
    );
}

#[test]
fn allocate_nonce_dance_then_success() {
    let server = TestServer::start(base_args());
    let mut c = server.client();

    let r = c.request_plain(ALLOCATE, &[udp()]);
    assert_error(&r, ALLOCATE, 401);
    assert_eq!(r.realm().as_deref(), Some(REALM));
    let nonce = r.nonce().expect("401 carries NONCE");
    assert!(!nonce.is_empty() && nonce.len() < 128, "NONCE length");
    assert!(!r.has(A_MESSAGE_INTEGRITY), "a 401 cannot be signed");

    c.nonce = Some(nonce);
    let r = c.allocate_with(&[udp()]);
    assert_success(&r, ALLOCATE);
    let relay = r.xor_address(A_XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(relay.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_ne!(relay.port(), 0);
    assert_eq!(r.xor_address(A_XOR_MAPPED_ADDRESS), Some(c.local()));
    assert_eq!(r.lifetime(), Some(600), "default lifetime");
    assert!(r.verify_integrity(&c.key()));
}

#[test]
fn refresh_extends_and_clamps_to_max_lifetime() {
    let server = TestServer::start(ConfigArgs {
        default_lifetime: Some("120".into()),
        max_lifetime: Some("900".into()),
        ..base_args()
    });
    let mut c = server.client();
    let r = c.allocate_with(&[udp()]);
    assert_success(&r, ALLOCATE);
    assert_eq!(r.lifetime(), Some(120), "no LIFETIME: --default-lifetime");
    // Between the default and the maximum: granted as asked.
    let r = c.refresh(Some(300));
    assert_success(&r, REFRESH);
    assert_eq!(r.lifetime(), Some(300));
    let r = c.refresh(Some(100_000));
    assert_success(&r, REFRESH);
    assert_eq!(r.lifetime(), Some(900), "clamped to --max-lifetime");
    let r = c.refresh(None);
    assert_success(&r, REFRESH);
    assert_eq!(r.lifetime(), Some(120), "no LIFETIME: --default-lifetime");
    let r = c.refresh(Some(0));
    assert_success(&r, REFRESH);
    assert_eq!(r.lifetime(), Some(0));
    let r = c.refresh(Some(600));
    assert_error(&r, REFRESH, 437);
}

// ---------------------------------------------------------------------------------------------
// Relaying
// ---------------------------------------------------------------------------------------------

#[test]
fn send_and_data_indications_carry_exact_bytes() {
    let server = loopback_server();
    let peer = Peer::v4();
    let (c, relay) = allocated_with_peer(&server, &peer);

    let payload = pseudo_random(1, 777);
    c.send_indication(peer.addr(), &payload);
    let (got, from) = peer.recv().expect("peer got the Send indication's data");
    assert_eq!(got, payload);
    assert_eq!(from, relay, "data comes from the relayed address");

    let back = pseudo_random(2, 333);
    peer.send_to(relay, &back);
    let (from, got) = c.recv_data_indication();
    assert_eq!(from, peer.addr(), "XOR-PEER-ADDRESS is the peer");
    assert_eq!(got, back, "DATA is the peer's datagram");
}

#[test]
fn channel_data_both_ways_all_sizes() {
    let server = loopback_server();
    let peer = Peer::v4();
    let mut c = server.client();
    let relay = c.allocate();
    c.bind_channel(0x4000, peer.addr());

    for (i, size) in [0usize, 1, 3, 4, 1000, 8000].into_iter().enumerate() {
        for pad in [false, true] {
            let payload = pseudo_random(10 + i as u64, size);
            c.send_channel_data(0x4000, &payload, pad);
            let (got, from) = peer
                .recv()
                .unwrap_or_else(|| panic!("peer got no ChannelData of {size} bytes (pad {pad})"));
            assert_eq!(got, payload, "client→peer {size} bytes (pad {pad})");
            assert_eq!(from, relay);
        }

        let payload = pseudo_random(100 + i as u64, size);
        peer.send_to(relay, &payload);
        let (channel, got) = c.recv_channel_data();
        assert_eq!(
            channel, 0x4000,
            "peer→client {size} bytes on the bound channel"
        );
        assert_eq!(got, payload, "peer→client {size} bytes");
    }
}

#[test]
fn channel_bind_at_top_of_range() {
    let server = loopback_server();
    let peer = Peer::v4();
    let mut c = server.client();
    let relay = c.allocate();
    c.bind_channel(0x7FFF, peer.addr());
    c.send_channel_data(0x7FFF, b"top", false);
    assert_eq!(peer.recv().unwrap().0, b"top");
    peer.send_to(relay, b"back");
    assert_eq!(c.recv_channel_data(), (0x7FFF, b"back".to_vec()));
}

#[test]
fn failed_send_to_closed_port_keeps_allocation() {
    let server = loopback_server();
    let live = Peer::v4();
    let closed = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let mut c = server.client();
    let relay = c.allocate();
    c.permit(live.addr());
    c.bind_channel(0x4001, closed);

    // Each of these draws an ICMP port unreachable on loopback.
    for i in 0..5u8 {
        c.send_indication(closed, &[i; 16]);
        c.send_channel_data(0x4001, &[i; 8], false);
    }
    // Give the ICMP errors time to land on the relay socket before using it again.
    c.expect_silence("sends to a closed port");

    c.send_indication(live.addr(), b"still here");
    let (got, from) = live.recv().expect("live peer still reachable");
    assert_eq!((got.as_slice(), from), (&b"still here"[..], relay));
    live.send_to(relay, b"and back");
    assert_eq!(
        c.recv_data_indication(),
        (live.addr(), b"and back".to_vec())
    );
    let r = c.refresh(Some(600));
    assert_success(&r, REFRESH);
}

// ---------------------------------------------------------------------------------------------
// Error responses
// ---------------------------------------------------------------------------------------------

#[test]
fn e400_bad_request() {
    let server = TestServer::start(base_args());
    let mut c = server.client();

    // Allocate without REQUESTED-TRANSPORT.
    let r = c.allocate_with(&[]);
    assert_error(&r, ALLOCATE, 400);
    // RESERVATION-TOKEN together with EVEN-PORT.
    let r = c.allocate_with(&[udp(), even_port(false), reservation_token([1; 8])]);
    assert_error(&r, ALLOCATE, 400);

    c.allocate();
    // A channel number below 0x4000, and one above 0x7FFF.
    let p: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for bad in [0x3FFF, 0x8000] {
        let r = c.channel_bind(bad, p);
        assert_error(&r, CHANNEL_BIND, 400);
    }
    // ChannelBind without XOR-PEER-ADDRESS; CreatePermission without one.
    let r = c.request(CHANNEL_BIND, &[channel_number(0x4000)]);
    assert_error(&r, CHANNEL_BIND, 400);
    let r = c.request(CREATE_PERMISSION, &[]);
    assert_error(&r, CREATE_PERMISSION, 400);
}

#[test]
fn e401_without_integrity_wrong_password_and_unknown_user() {
    let server = TestServer::start(base_args());

    let c = server.client();
    for method in [ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND] {
        let r = c.request_plain(method, &[udp()]);
        assert_error(&r, method, 401);
        assert_eq!(r.realm().as_deref(), Some(REALM));
        assert!(r.nonce().is_some());
    }

    let mut wrong = server.client().with_user(ALICE.0, "not-the-password");
    let r = wrong.allocate_with(&[udp()]);
    assert_error(&r, ALLOCATE, 401);
    assert!(r.nonce().is_some(), "a 401 offers a fresh NONCE");
    assert!(!r.has(A_MESSAGE_INTEGRITY));

    let mut nobody = server.client().with_user("mallory", "pw");
    let r = nobody.allocate_with(&[udp()]);
    assert_error(&r, ALLOCATE, 401);

    // The failures left no state behind: the right password now works from the same socket.
    let mut right = wrong.with_user(ALICE.0, ALICE.1);
    right.allocate();
}

#[test]
fn e401_expired_rest_username() {
    let server = TestServer::start(ConfigArgs {
        auth_secret: vec!["S".into()],
        ..base_args()
    });

    let expired = format!("{}:carol", unix_now() - 3600);
    let mut c = server
        .client()
        .with_user(&expired, &rest_password("S", &expired));
    let r = c.allocate_with(&[udp()]);
    assert_error(&r, ALLOCATE, 401);
    assert!(r.nonce().is_some());

    // Control: the same recipe with a future expiry authenticates.
    let valid = format!("{}:carol", unix_now() + 3600);
    let mut c = server
        .client()
        .with_user(&valid, &rest_password("S", &valid));
    let r = c.allocate_with(&[udp()]);
    assert_success(&r, ALLOCATE);
    assert!(r.verify_integrity(&c.key()));

    // And a wrong secret does not.
    let mut c = server
        .client()
        .with_user(&valid, &rest_password("not-S", &valid));
    let r = c.allocate_with(&[udp()]);
    assert_error(&r, ALLOCATE, 401);
}

#[test]
fn e403_denied_peers() {
    let server = TestServer::start(base_args());
    let mut c = server.client();
    c.allocate();
    for ip in ["10.0.0.1", "169.254.169.254"] {
        let p = SocketAddr::new(ip.parse().unwrap(), 80);
        let r = c.create_permission(&[p]);
        assert_error(&r, CREATE_PERMISSION, 403);
        assert!(r.verify_integrity(&c.key()), "403 is signed");
        let r = c.channel_bind(0x4000, p);
        assert_error(&r, CHANNEL_BIND, 403);
    }
}

#[test]
fn e420_unknown_comprehension_required_attribute() {
    let server = TestServer::start(base_args());
    let mut c = server.client();

    let unknown = Attr::Raw(0x7FF0, vec![1, 2, 3, 4]);
    let r = c.request_plain(BINDING, std::slice::from_ref(&unknown));
    assert_error(&r, BINDING, 420);
    assert_eq!(r.unknown_attributes(), vec![0x7FF0]);

    let r = c.allocate_with(&[udp(), unknown]);
    assert_error(&r, ALLOCATE, 420);
    assert_eq!(r.unknown_attributes(), vec![0x7FF0]);

    // A comprehension-optional unknown attribute is ignored.
    let r = c.request_plain(BINDING, &[Attr::Raw(0x8FF0, vec![9; 4])]);
    assert_success(&r, BINDING);
}

#[test]
fn e437_allocation_mismatch() {
    let server = TestServer::start(base_args());
    let mut c = server.client();

    let r = c.refresh(Some(600));
    assert_error(&r, REFRESH, 437);
    let r = c.create_permission(&["127.0.0.1:9".parse().unwrap()]);
    assert_error(&r, CREATE_PERMISSION, 437);

    c.allocate();
    let r = c.allocate_with(&[udp()]);
    assert_error(&r, ALLOCATE, 437);
    assert!(r.verify_integrity(&c.key()));
}

#[test]
fn e438_tampered_and_foreign_nonce() {
    let server = TestServer::start(base_args());
    let mut c = server.client();
    c.ensure_nonce();
    let good = c.nonce.clone().unwrap();

    // One character changed.
    let mut tampered = good.clone();
    tampered[good.len() - 1] = if tampered[good.len() - 1] == b'0' {
        b'1'
    } else {
        b'0'
    };
    // Issued to another client address.
    let mut other = server.client();
    other.ensure_nonce();
    let foreign = other.nonce.clone().unwrap();
    // Issued by another server.
    let elsewhere = TestServer::start(base_args());
    let mut stranger = Client::new(elsewhere.addr);
    stranger.ensure_nonce();
    let alien = stranger.nonce.clone().unwrap();

    for (what, nonce) in [
        ("tampered", tampered),
        ("foreign", foreign),
        ("other server", alien),
        (
            "made up",
            b"0123456789abcdef0123456789abcdef01234567".to_vec(),
        ),
    ] {
        let auth = Auth { nonce, ..c.auth() };
        let req = encode(
            msg_type(ALLOCATE, REQUEST),
            new_txid(),
            &[udp()],
            Some(&auth),
            false,
        );
        let r = c.transact(&req);
        assert_error(&r, ALLOCATE, 438);
        let fresh = r
            .nonce()
            .unwrap_or_else(|| panic!("438 ({what}) has no NONCE"));
        assert_eq!(r.realm().as_deref(), Some(REALM), "438 ({what}) has REALM");
        assert!(!r.has(A_MESSAGE_INTEGRITY));
        // The fresh nonce works.
        let auth = Auth {
            nonce: fresh,
            ..c.auth()
        };
        let req = encode(
            msg_type(REFRESH, REQUEST),
            new_txid(),
            &[lifetime(600)],
            Some(&auth),
            false,
        );
        let r = c.transact(&req);
        assert_error(&r, REFRESH, 437);
    }
}

#[test]
fn e440_address_family_not_supported() {
    let server = TestServer::start(base_args());
    let mut c = server.client();
    let r = c.allocate_with(&[udp(), address_family(FAMILY_V6)]);
    assert_error(&r, ALLOCATE, 440);
    let r = c.allocate_with(&[udp(), address_family(0x03)]);
    assert_error(&r, ALLOCATE, 440);
    // Nothing was allocated: an IPv4 Allocate still succeeds.
    c.allocate();
    // An IPv4 allocation on an IPv6-only server is 440 too.
    let v6 = TestServer::start(base_args_v6());
    let mut c = v6.client();
    let r = c.allocate_with(&[udp()]);
    assert_error(&r, ALLOCATE, 440);
}

#[test]
fn e441_wrong_credentials_on_same_five_tuple() {
    let server = TestServer::start(base_args());
    let mut alice = server.client();
    alice.allocate();

    // Same socket (same 5-tuple), bob's valid credentials.
    let mut bob = Client {
        sock: alice.sock.try_clone().unwrap(),
        ..Client::new(server.addr).with_user(BOB.0, BOB.1)
    };
    bob.nonce = alice.nonce.clone();
    let r = bob.refresh(Some(600));
    assert_error(&r, REFRESH, 441);
    assert!(r.verify_integrity(&bob.key()));
    let r = bob.create_permission(&["127.0.0.1:9".parse().unwrap()]);
    assert_error(&r, CREATE_PERMISSION, 441);
    let r = bob.channel_bind(0x4000, "127.0.0.1:9".parse().unwrap());
    assert_error(&r, CHANNEL_BIND, 441);
    // Alice's allocation is untouched.
    let r = alice.refresh(Some(600));
    assert_success(&r, REFRESH);
}

#[test]
fn e442_unsupported_transport() {
    let server = TestServer::start(base_args());
    let mut c = server.client();
    let r = c.allocate_with(&[requested_transport(132)]);
    assert_error(&r, ALLOCATE, 442);
    // TCP is offered (RFC 6062), but only to a TCP or TLS control connection: over UDP, 400.
    let r = c.allocate_with(&[requested_transport(TCP)]);
    assert_error(&r, ALLOCATE, 400);
    c.allocate();
}

#[test]
fn e443_peer_address_family_mismatch() {
    let server = TestServer::start(base_args());
    let mut c = server.client();
    c.allocate();
    let v6: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
    let r = c.create_permission(&[v6]);
    assert_error(&r, CREATE_PERMISSION, 443);
    let r = c.channel_bind(0x4000, v6);
    assert_error(&r, CHANNEL_BIND, 443);
    let r = c.request(REFRESH, &[address_family(FAMILY_V6)]);
    assert_error(&r, REFRESH, 443);
}

// 486 (Allocation Quota Reached) is not tested: turnd has no per-user allocation quota
// (src/core has only the reason phrase for 486; no handler produces it).

#[test]
fn e508_port_range_exhausted_then_recovers() {
    let (low, high) = free_ports(IpAddr::V4(Ipv4Addr::LOCALHOST), 2);
    let server = TestServer::start(ConfigArgs {
        relay_ports: Some(format!("{low}-{high}")),
        ..base_args()
    });
    let mut a = server.client();
    let mut b = server.client();
    let mut c = server.client();
    let ra = a.allocate();
    let rb = b.allocate();
    let mut ports = [ra.port(), rb.port()];
    ports.sort();
    assert_eq!(ports, [low, high], "both ports of the range used");

    let r = c.allocate_with(&[udp()]);
    assert_error(&r, ALLOCATE, 508);
    assert!(r.verify_integrity(&c.key()));

    let r = a.refresh(Some(0));
    assert_success(&r, REFRESH);
    let r = c.allocate_with(&[udp()]);
    assert_success(&r, ALLOCATE);
    assert_eq!(
        r.xor_address(A_XOR_RELAYED_ADDRESS),
        Some(ra),
        "freed port reused"
    );
}

#[test]
fn e486_user_quota_reached_then_recovers() {
    let server = TestServer::start(ConfigArgs {
        user_quota: Some("1".into()),
        ..base_args()
    });
    let mut a = server.client();
    let mut b = server.client();
    a.allocate();
    let r = b.allocate_with(&[udp()]);
    assert_error(&r, ALLOCATE, 486);
    assert!(r.verify_integrity(&b.key()));
    assert_success(&a.refresh(Some(0)), REFRESH);
    assert_success(&b.allocate_with(&[udp()]), ALLOCATE);
}

// ---------------------------------------------------------------------------------------------
// Retransmissions
// ---------------------------------------------------------------------------------------------

#[test]
fn retransmitted_allocate_gets_identical_success() {
    let server = TestServer::start(base_args());
    let mut c = server.client();
    let req = c.signed(ALLOCATE, &[udp()]);
    let first = c.transact(&req);
    assert_success(&first, ALLOCATE);
    let second = c.transact(&req);
    assert_success(&second, ALLOCATE);
    assert_eq!(
        first.raw, second.raw,
        "a retransmission gets the same bytes"
    );

    // A new transaction is a second Allocate: 437.
    let r = c.allocate_with(&[udp()]);
    assert_error(&r, ALLOCATE, 437);
}

#[test]
fn retransmitted_refresh_zero_succeeds_twice() {
    let server = TestServer::start(base_args());
    let mut c = server.client();
    c.allocate();
    let req = c.signed(REFRESH, &[lifetime(0)]);
    let first = c.transact(&req);
    assert_success(&first, REFRESH);
    let second = c.transact(&req);
    assert_success(&second, REFRESH);
    assert_eq!(first.raw, second.raw);
    assert_eq!(second.lifetime(), Some(0));
    // The allocation really is gone.
    let r = c.refresh(Some(0));
    assert_error(&r, REFRESH, 437);
}

// ---------------------------------------------------------------------------------------------
// EVEN-PORT and RESERVATION-TOKEN
// ---------------------------------------------------------------------------------------------

#[test]
fn even_port_and_reservation_token() {
    // Two workers: the reservation is shared state, claimed wherever the second client lands.
    let server = TestServer::start(ConfigArgs {
        workers: Some("2".into()),
        allow_peer: vec!["127.0.0.1/32".into()],
        ..base_args()
    });

    let mut c = server.client();
    let r = c.allocate_with(&[udp(), even_port(false)]);
    assert_success(&r, ALLOCATE);
    let relay = r.xor_address(A_XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(relay.port() % 2, 0, "EVEN-PORT gives an even port: {relay}");
    assert!(!r.has(A_RESERVATION_TOKEN), "no R bit, no token");

    let mut first = server.client();
    let r = first.allocate_with(&[udp(), even_port(true)]);
    assert_success(&r, ALLOCATE);
    let relay = r.xor_address(A_XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(
        relay.port() % 2,
        0,
        "EVEN-PORT R gives an even port: {relay}"
    );
    let token: [u8; 8] = r
        .get(A_RESERVATION_TOKEN)
        .expect("EVEN-PORT R answers with RESERVATION-TOKEN")
        .try_into()
        .expect("RESERVATION-TOKEN is 8 bytes");

    let mut second = server.client();
    let r = second.allocate_with(&[udp(), reservation_token(token)]);
    assert_success(&r, ALLOCATE);
    let next = r.xor_address(A_XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(next, SocketAddr::new(relay.ip(), relay.port() + 1));

    // The token is spent.
    let mut third = server.client();
    let r = third.allocate_with(&[udp(), reservation_token(token)]);
    assert_error(&r, ALLOCATE, 508);

    // The reserved port relays.
    let peer = Peer::v4();
    second.permit(peer.addr());
    peer.send_to(next, b"rtcp");
    assert_eq!(
        second.recv_data_indication(),
        (peer.addr(), b"rtcp".to_vec())
    );
}

// ---------------------------------------------------------------------------------------------
// MESSAGE-INTEGRITY on responses
// ---------------------------------------------------------------------------------------------

#[test]
fn authenticated_responses_are_signed_with_the_users_key() {
    let server = loopback_server();
    let peer = Peer::v4();
    let mut c = server.client();
    let key = c.key();
    let wrong = long_term_key(ALICE.0, REALM, "other");

    let responses = vec![
        c.allocate_with(&[udp()]),
        c.create_permission(&[peer.addr()]),
        c.channel_bind(0x4000, peer.addr()),
        c.refresh(Some(600)),
        c.allocate_with(&[udp()]),                              // 437
        c.channel_bind(0x3FFF, peer.addr()),                    // 400
        c.create_permission(&["10.0.0.1:80".parse().unwrap()]), // 403
        c.refresh(Some(0)),
    ];
    for r in &responses {
        assert!(r.verify_integrity(&key), "{} is signed", describe(r));
        assert!(
            !r.verify_integrity(&wrong),
            "{} verifies only with alice's key",
            describe(r)
        );
    }
    assert_success(&responses[0], ALLOCATE);
    assert_success(&responses[1], CREATE_PERMISSION);
    assert_success(&responses[2], CHANNEL_BIND);
    assert_success(&responses[3], REFRESH);

    // With FINGERPRINT on the request: MESSAGE-INTEGRITY still verifies, and FINGERPRINT is
    // last and correct.
    c.ensure_nonce();
    let req = encode(
        msg_type(ALLOCATE, REQUEST),
        new_txid(),
        &[udp()],
        Some(&c.auth()),
        true,
    );
    let r = c.transact(&req);
    assert_success(&r, ALLOCATE);
    assert!(r.verify_integrity(&key));
    assert!(r.verify_fingerprint());
}

// ---------------------------------------------------------------------------------------------
// Garbage
// ---------------------------------------------------------------------------------------------

#[test]
fn garbage_gets_no_response_and_server_keeps_serving() {
    let server = loopback_server();
    let peer = Peer::v4();
    let mut c = server.client();
    let relay = c.allocate();
    c.bind_channel(0x4000, peer.addr());

    let binding = encode(msg_type(BINDING, REQUEST), new_txid(), &[], None, false);
    let mut garbage: Vec<Vec<u8>> = Vec::new();
    // Random datagrams.
    for i in 0..64u64 {
        let len = 1 + (i as usize * 37) % 300;
        garbage.push(pseudo_random(1000 + i, len));
    }
    // Truncated STUN.
    for n in [1, 4, 10, 19] {
        garbage.push(binding[..n].to_vec());
    }
    let mut long = binding.clone();
    long[3] = 8; // claims 8 attribute bytes that are not there
    garbage.push(long);
    let mut torn = binding.clone();
    torn.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0, 1]); // attribute cut short
    torn[3] = 6;
    garbage.push(torn);
    // RFC 3489 (no magic cookie).
    let mut old = binding.clone();
    old[4..8].copy_from_slice(&[1, 2, 3, 4]);
    garbage.push(old);
    // A bad FINGERPRINT.
    let mut fp = encode(msg_type(BINDING, REQUEST), new_txid(), &[], None, true);
    let last = fp.len() - 1;
    fp[last] ^= 0xFF;
    garbage.push(fp);
    // Responses and non-Send indications are not for a server.
    garbage.push(encode(
        msg_type(BINDING, SUCCESS),
        new_txid(),
        &[],
        None,
        false,
    ));
    garbage.push(encode(
        msg_type(ALLOCATE, ERROR),
        new_txid(),
        &[],
        None,
        false,
    ));
    garbage.push(encode(
        msg_type(DATA, INDICATION),
        new_txid(),
        &[],
        None,
        false,
    ));
    // Send indications without DATA / without XOR-PEER-ADDRESS.
    garbage.push(encode(
        msg_type(SEND, INDICATION),
        new_txid(),
        &[raw::peer(peer.addr())],
        None,
        false,
    ));
    garbage.push(encode(
        msg_type(SEND, INDICATION),
        new_txid(),
        &[data(b"x")],
        None,
        false,
    ));
    // Bad ChannelData: too short, length past the end, unbound channel.
    garbage.push(vec![0x40]);
    garbage.push(vec![0x40, 0x00, 0x00]);
    garbage.push(vec![0x40, 0x00, 0x00, 0x10, 1, 2, 3]);
    garbage.push(channel_data(0x4ABC, b"unbound", false));

    for g in &garbage {
        c.send(g);
    }
    c.expect_silence("garbage datagrams");
    peer.expect_silence("garbage datagrams");

    // Still serving: Binding, the allocation, and both relay directions.
    assert_eq!(c.binding(), c.local());
    c.send_channel_data(0x4000, b"after", false);
    assert_eq!(peer.recv().unwrap(), (b"after".to_vec(), relay));
    peer.send_to(relay, b"reply");
    assert_eq!(c.recv_channel_data(), (0x4000, b"reply".to_vec()));

    // Garbage from a fresh address that never allocated gets no answer either.
    let stranger = server.client();
    for g in &garbage {
        stranger.send(g);
    }
    stranger.expect_silence("garbage from a stranger");
    assert_eq!(stranger.binding(), stranger.local());
}

// ---------------------------------------------------------------------------------------------
// Permissions and channel rules
// ---------------------------------------------------------------------------------------------

#[test]
fn permissions_are_required_and_per_ip() {
    // 127.0.0.1 (peer `a`) is the relay's own address: only an exact entry opens it.
    let server = TestServer::allowing(&["127.0.0.0/8", "127.0.0.1"]);
    let a = Peer::v4();
    let same_ip = Peer::v4();
    let other_ip = Peer {
        sock: UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2 (loopback /8)"),
    };
    let mut c = server.client();
    let relay = c.allocate();

    // No permission yet: dropped both ways.
    c.send_indication(a.addr(), b"too early");
    a.expect_silence("a Send indication before CreatePermission");
    a.send_to(relay, b"too early");
    c.expect_silence("peer data before CreatePermission");

    // A permission for 127.0.0.1 covers every port of that IP, and no other IP.
    c.permit(a.addr());
    same_ip.send_to(relay, b"same ip");
    assert_eq!(
        c.recv_data_indication(),
        (same_ip.addr(), b"same ip".to_vec())
    );
    c.send_indication(same_ip.addr(), b"to same ip");
    assert_eq!(same_ip.recv().unwrap(), (b"to same ip".to_vec(), relay));
    other_ip.send_to(relay, b"other ip");
    c.expect_silence("data from an IP without permission");
    c.send_indication(other_ip.addr(), b"to other ip");
    other_ip.expect_silence("a Send indication to an IP without permission");

    // A CreatePermission naming one denied peer installs none of its peers.
    let mut d = server.client();
    let relay_d = d.allocate();
    let r = d.create_permission(&[other_ip.addr(), "10.0.0.1:80".parse().unwrap()]);
    assert_error(&r, CREATE_PERMISSION, 403);
    other_ip.send_to(relay_d, b"half");
    d.expect_silence("data after a rejected CreatePermission");
    // Several peers in one request.
    d.permit(other_ip.addr());
    let r = d.create_permission(&[a.addr(), other_ip.addr()]);
    assert_success(&r, CREATE_PERMISSION);
    a.send_to(relay_d, b"one");
    assert_eq!(d.recv_data_indication(), (a.addr(), b"one".to_vec()));
    other_ip.send_to(relay_d, b"two");
    assert_eq!(d.recv_data_indication(), (other_ip.addr(), b"two".to_vec()));
}

#[test]
fn channel_bind_rules() {
    let server = loopback_server();
    let a = Peer::v4();
    let b = Peer::v4();
    let mut c = server.client();
    let relay = c.allocate();

    c.bind_channel(0x4000, a.addr());
    // Rebinding the same pair refreshes it.
    c.bind_channel(0x4000, a.addr());
    // The number to another peer, or the peer to another number: 400.
    let r = c.channel_bind(0x4000, b.addr());
    assert_error(&r, CHANNEL_BIND, 400);
    let r = c.channel_bind(0x4001, a.addr());
    assert_error(&r, CHANNEL_BIND, 400);

    // ChannelBind installed the permission for the IP: b (same IP, no channel) gets Data
    // indications while a gets ChannelData.
    b.send_to(relay, b"via data indication");
    assert_eq!(
        c.recv_data_indication(),
        (b.addr(), b"via data indication".to_vec())
    );
    a.send_to(relay, b"via channel");
    assert_eq!(c.recv_channel_data(), (0x4000, b"via channel".to_vec()));
    // ChannelData on an unbound number goes nowhere.
    c.send_channel_data(0x4002, b"nowhere", false);
    a.expect_silence("ChannelData on an unbound channel");
    b.expect_silence("ChannelData on an unbound channel");
}

#[test]
fn allocate_with_dont_fragment_relays() {
    let server = loopback_server();
    let peer = Peer::v4();
    let mut c = server.client();
    let r = c.allocate_with(&[udp(), Attr::Raw(A_DONT_FRAGMENT, vec![])]);
    assert_success(&r, ALLOCATE);
    let relay = r.xor_address(A_XOR_RELAYED_ADDRESS).unwrap();
    c.permit(peer.addr());
    c.send_indication(peer.addr(), b"df");
    assert_eq!(peer.recv().unwrap(), (b"df".to_vec(), relay));
}
