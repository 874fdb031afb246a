//! The client against the real core, in memory: the core tests' [`Harness`] plays the shell,
//! and datagrams go from one to the other by hand. Nothing here knows how either side builds
//! its messages; what passes is what the RFCs say.

use super::*;
use crate::core::auth::RestUsernameOrder;
use crate::core::tests::{peer_a, peer_b, secs, udp, Harness, REALM, REST_SECRET, UNIX_T0};
use crate::core::FiveTuple;
use std::time::Duration;

/// Carries every datagram the client has to send to the core, and every answer back, until
/// neither side has anything more to say. Returns the events it produced.
fn exchange(h: &mut Harness, ft: FiveTuple, c: &mut Client) -> Vec<Event> {
    // Bounded: each request takes at most a challenge and two stale-nonce retries.
    for _ in 0..16 {
        let Some(tx) = c.poll_transmit() else { break };
        assert!(h.input(ft, &tx).is_none(), "a request was relayed");
        for resp in h.take_to(ft) {
            assert_eq!(c.handle_input(h.now, &resp), None);
        }
    }
    assert!(c.poll_transmit().is_none(), "the exchange did not settle");
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn one(h: &mut Harness, ft: FiveTuple, c: &mut Client, r: RequestId) -> Outcome {
    match exchange(h, ft, c).as_slice() {
        [Event::Succeeded {
            request, outcome, ..
        }] if *request == r => outcome.clone(),
        e => panic!("{e:?}"),
    }
}

fn alice() -> Client {
    Client::new(
        Config::new(Transport::Udp),
        Some(Credentials::new("alice", "alice-pw")),
        [5; 32],
    )
}

#[test]
fn a_whole_session_against_the_core() {
    let mut h = Harness::new();
    let ft = udp("192.0.2.100:40000");
    let mut c = alice();

    let r = c.allocate(h.now, vec![]).unwrap();
    let Outcome::Allocated { relayed, lifetime } = one(&mut h, ft, &mut c, r) else {
        panic!("not allocated")
    };
    assert_eq!(relayed.len(), 1);
    assert_eq!(lifetime, 600);
    assert_eq!(c.realm(), Some(REALM));
    let id = h.id_of(ft).expect("the core has the allocation");

    let r = c.create_permission(h.now, &[peer_a(), peer_b()]).unwrap();
    assert_eq!(
        one(&mut h, ft, &mut c, r),
        Outcome::PermissionInstalled {
            peers: vec![peer_a(), peer_b()]
        }
    );
    let r = c.channel_bind(h.now, 0x4000, peer_a()).unwrap();
    assert_eq!(
        one(&mut h, ft, &mut c, r),
        Outcome::ChannelBound {
            channel: 0x4000,
            peer: peer_a()
        }
    );

    // Out: a Send indication to peer B, ChannelData to peer A; the core relays each payload.
    let mut buf = [0u8; 256];
    let n = c.send_indication(&mut buf, peer_b(), b"to b").unwrap();
    let fwd = h.input(ft, &buf[..n]).expect("relayed");
    assert_eq!((fwd.peer, &buf[fwd.payload]), (peer_b(), &b"to b"[..]));
    let n = c.channel_data(&mut buf, 0x4000, b"to a").unwrap();
    let fwd = h.input(ft, &buf[..n]).expect("relayed");
    assert_eq!((fwd.peer, &buf[fwd.payload]), (peer_a(), &b"to a"[..]));

    // In: from A on its channel, from B in a Data indication.
    let (to, d) = h
        .peer(id, peer_a(), b"from a")
        .expect("relayed to the client");
    assert_eq!(to, ft);
    assert_eq!(
        c.handle_input(h.now, &d),
        Some(Relayed {
            via: Via::Channel(0x4000),
            data: b"from a"
        })
    );
    let (_, d) = h
        .peer(id, peer_b(), b"from b")
        .expect("relayed to the client");
    assert_eq!(
        c.handle_input(h.now, &d),
        Some(Relayed {
            via: Via::Peer(peer_b()),
            data: b"from b"
        })
    );

    let r = c.refresh(h.now, Some(0)).unwrap();
    assert_eq!(
        one(&mut h, ft, &mut c, r),
        Outcome::Refreshed { lifetime: 0 }
    );
    assert_eq!(h.allocation_count(), 0);
}

#[test]
fn a_stale_nonce_is_renewed_without_the_caller_seeing_it() {
    let mut h = Harness::new();
    let ft = udp("192.0.2.100:40001");
    let mut c = alice();
    let r = c.allocate(h.now, vec![Attr::Lifetime(3600)]).unwrap();
    assert!(matches!(
        one(&mut h, ft, &mut c, r),
        Outcome::Allocated { .. }
    ));
    let nonce = c.auth().unwrap().nonce.clone();
    // The core's nonces live 600 s.
    h.advance(secs(601));
    let r = c.refresh(h.now, Some(3600)).unwrap();
    assert!(matches!(
        one(&mut h, ft, &mut c, r),
        Outcome::Refreshed { lifetime: 3600 }
    ));
    assert_ne!(c.auth().unwrap().nonce, nonce);
}

#[test]
fn rest_credentials_work_and_a_wrong_password_is_rejected() {
    let mut h = Harness::new();
    let ft = udp("192.0.2.100:40002");
    let creds = Credentials::rest(
        REST_SECRET,
        "probe",
        Duration::from_secs(3600),
        UNIX_T0,
        RestUsernameOrder::ExpiryFirst,
    );
    let mut c = Client::new(Config::new(Transport::Udp), Some(creds), [6; 32]);
    let r = c.allocate(h.now, vec![]).unwrap();
    assert!(matches!(
        one(&mut h, ft, &mut c, r),
        Outcome::Allocated { .. }
    ));

    let ft = udp("192.0.2.100:40003");
    let wrong = Credentials::new("alice", "not-alice-pw");
    let mut c = Client::new(Config::new(Transport::Udp), Some(wrong), [7; 32]);
    c.allocate(h.now, vec![]).unwrap();
    match exchange(&mut h, ft, &mut c).as_slice() {
        [Event::Failed {
            error: Failure::Rejected { realm },
            ..
        }] => assert_eq!(realm, REALM),
        e => panic!("{e:?}"),
    }
    assert_eq!(h.allocation_count(), 1);
}

#[test]
fn a_lost_request_is_retransmitted_and_the_core_answers_the_copy() {
    let mut h = Harness::new();
    let ft = udp("192.0.2.100:40004");
    let mut c = alice();
    let r = c.binding(h.now, vec![]).unwrap();
    let lost = c.poll_transmit().unwrap();
    let wake = c.poll_timeout().unwrap();
    assert_eq!(wake - h.now, Duration::from_millis(500));
    h.jump(wake - h.now);
    c.handle_timeout(h.now);
    let copy = c.poll_transmit().unwrap();
    assert_eq!(copy, lost);
    h.input(ft, &copy);
    for resp in h.take_to(ft) {
        c.handle_input(h.now, &resp);
    }
    match c.poll_event() {
        Some(Event::Succeeded {
            request,
            outcome: Outcome::Mapped(m),
            ..
        }) => {
            assert_eq!(request, r);
            assert_eq!(m, ft.client);
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn an_error_from_the_core_names_its_code() {
    let mut h = Harness::new();
    let ft = udp("192.0.2.100:40005");
    let mut c = alice();
    let r = c.allocate(h.now, vec![]).unwrap();
    one(&mut h, ft, &mut c, r);
    // A second Allocate on the same 5-tuple: 437 Allocation Mismatch (RFC 8656 §7.2).
    c.allocate(h.now, vec![]).unwrap();
    match exchange(&mut h, ft, &mut c).as_slice() {
        [Event::Failed {
            error:
                Failure::Error {
                    code: 437,
                    authenticated: true,
                    ..
                },
            reply: Some(_),
            ..
        }] => {}
        e => panic!("{e:?}"),
    }
}

#[test]
fn rfc6062_over_a_stream_connect_then_bind_a_data_connection() {
    use crate::core::tcp_relay::TcpRelayOutput;
    use crate::core::tests::tcp;
    let mut h = Harness::new();
    let control = tcp("192.0.2.100:40010");
    let stream = || {
        Client::new(
            Config::new(Transport::Stream),
            Some(Credentials::new("alice", "alice-pw")),
            [8; 32],
        )
    };
    let mut c = stream();
    let r = c
        .allocate(h.now, vec![Attr::RequestedTransport(PROTOCOL_TCP)])
        .unwrap();
    assert!(matches!(
        one(&mut h, control, &mut c, r),
        Outcome::Allocated { .. }
    ));
    let r = c.create_permission(h.now, &[peer_a()]).unwrap();
    one(&mut h, control, &mut c, r);
    // Over a stream nothing is retransmitted: the only deadline is Ti.
    let r = c.connect(h.now, peer_a()).unwrap();
    let early = exchange(&mut h, control, &mut c);
    assert!(early.is_empty(), "the core connects first: {early:?}");
    assert_eq!(
        c.poll_timeout(),
        Some(h.now + Duration::from_millis(39_500))
    );
    let cid = match h.tcp.last() {
        Some(TcpRelayOutput::Connect { connection_id, .. }) => *connection_id,
        o => panic!("{o:?}"),
    };
    assert!(h.server.handle_peer_connected(h.now, cid));
    h.drain();
    for resp in h.take_to(control) {
        c.handle_input(h.now, &resp);
    }
    assert_eq!(
        c.poll_event()
            .map(|e| (e.request(), e.into_result().is_ok())),
        Some((Some(r), true))
    );

    // A second connection binds it, with its own challenge.
    let data = tcp("192.0.2.100:40011");
    let mut d = stream();
    let r = d.connection_bind(h.now, cid).unwrap();
    assert_eq!(
        one(&mut h, data, &mut d, r),
        Outcome::ConnectionBound { connection_id: cid }
    );
}
