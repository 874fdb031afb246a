//! The client on its own: schedules, the credential dance and data, against responses built
//! here with the crate's codec. `tests_core.rs` drives it against the real core.

use super::*;
use crate::core::auth::long_term_key;
use crate::stun::{AttrType, MessageBuilder, MessageType};
use std::time::Duration;

fn creds() -> Credentials {
    Credentials::new("alice", "alice-pw")
}

fn client(transport: Transport, creds: Option<Credentials>) -> Client {
    Client::new(Config::new(transport), creds, [9; 32])
}

/// Starts an Allocate, answers it 401 (realm "r", nonce "n") and returns the first request and
/// the signed one the client sent again.
fn challenged_allocate(c: &mut Client, t0: Instant) -> (Vec<u8>, Vec<u8>) {
    c.allocate(t0, vec![]).unwrap();
    let first = c.poll_transmit().unwrap();
    c.handle_input(t0, &error(&first, 401, Some("r"), Some(b"n")));
    let signed = c.poll_transmit().unwrap();
    (first, signed)
}

fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

/// What the server would answer to `req`: `class` with `attrs`, signed with `key`.
fn answer(
    req: &[u8],
    class: Class,
    attrs: impl FnOnce(&mut MessageBuilder<'_>),
    key: Option<&Key>,
) -> Vec<u8> {
    let m = Message::parse(req).unwrap();
    let mut buf = vec![0u8; 512];
    let mut b = MessageBuilder::new(
        &mut buf,
        MessageType::new(m.method(), class),
        m.transaction_id(),
    )
    .unwrap();
    attrs(&mut b);
    if let Some(k) = key {
        b.add_message_integrity(k).unwrap();
    }
    let n = b.finish();
    buf.truncate(n);
    buf
}

fn error(req: &[u8], code: u16, realm: Option<&str>, nonce: Option<&[u8]>) -> Vec<u8> {
    answer(
        req,
        Class::ErrorResponse,
        |b| {
            b.add_error_code(code, "x").unwrap();
            if let Some(r) = realm {
                b.add(AttrType::REALM, r.as_bytes()).unwrap();
            }
            if let Some(n) = nonce {
                b.add(AttrType::NONCE, n).unwrap();
            }
        },
        None,
    )
}

fn relayed_ok(req: &[u8], key: &Key) -> Vec<u8> {
    answer(
        req,
        Class::SuccessResponse,
        |b| {
            b.add_xor_address(
                AttrType::XOR_RELAYED_ADDRESS,
                &"192.0.2.10:50000".parse().unwrap(),
            )
            .unwrap();
            b.add_u32(AttrType::LIFETIME, 600).unwrap();
        },
        Some(key),
    )
}

fn drain(c: &mut Client) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

#[test]
fn udp_requests_are_retransmitted_on_the_rfc_schedule_then_time_out() {
    let t0 = Instant::now();
    let mut c = client(Transport::Udp, Some(creds()));
    let r = c.allocate(t0, vec![]).unwrap();
    let first = c.poll_transmit().unwrap();
    let mut at = vec![0];
    // Bounded: the schedule has 7 transmissions.
    while let Some(wake) = c.poll_timeout() {
        c.handle_timeout(wake);
        for tx in drain(&mut c) {
            assert_eq!(tx, first, "a retransmission is the same bytes");
            at.push((wake - t0).as_millis());
        }
        assert!(at.len() <= 7);
    }
    assert_eq!(at, [0, 500, 1500, 3500, 7500, 15500, 31500]);
    match c.poll_event() {
        Some(Event::Failed {
            request,
            method: Method::ALLOCATE,
            error: Failure::TimedOut { sent: 7 },
            reply: None,
        }) => assert_eq!(request, r),
        e => panic!("{e:?}"),
    }
    assert_eq!(c.in_flight(), 0);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn stream_requests_are_sent_once() {
    let t0 = Instant::now();
    let mut c = client(Transport::Stream, Some(creds()));
    c.binding(t0, vec![]).unwrap();
    assert_eq!(drain(&mut c).len(), 1);
    assert_eq!(c.poll_timeout(), Some(ms(t0, 39_500)));
    c.handle_timeout(ms(t0, 39_499));
    assert!(!c.has_output());
    c.handle_timeout(ms(t0, 39_500));
    assert!(drain(&mut c).is_empty());
    assert!(matches!(
        c.poll_event(),
        Some(Event::Failed {
            error: Failure::TimedOut { sent: 1 },
            ..
        })
    ));
}

#[test]
fn the_401_challenge_is_answered_with_a_signed_request_under_a_new_transaction_id() {
    let t0 = Instant::now();
    let mut c = client(Transport::Udp, Some(creds()));
    let r = c.allocate(t0, vec![Attr::Lifetime(300)]).unwrap();
    let first = c.poll_transmit().unwrap();
    let m = Message::parse(&first).unwrap();
    assert!(!m.has_integrity() && !m.has(AttrType::USERNAME));
    assert_eq!(m.requested_transport(), Some(Ok(PROTOCOL_UDP)));
    assert_eq!(
        c.handle_input(ms(t0, 10), &error(&first, 401, Some("r"), Some(b"n1"))),
        None
    );
    assert!(
        c.poll_event().is_none(),
        "the dance is the client's business"
    );
    let signed = c.poll_transmit().unwrap();
    let s = Message::parse(&signed).unwrap();
    assert_ne!(s.transaction_id(), m.transaction_id());
    assert_eq!(s.username(), Some(Ok("alice")));
    assert_eq!(s.realm(), Some(Ok("r")));
    assert_eq!(s.nonce(), Some(Ok(&b"n1"[..])));
    assert_eq!(s.lifetime(), Some(Ok(300)));
    let key = long_term_key("alice", "r", "alice-pw");
    assert!(s.verify_integrity(&key));
    assert_eq!(c.auth().unwrap().key, key);
    // The old transaction is over: its retransmission time passes silently.
    c.handle_timeout(ms(t0, 500));
    assert!(drain(&mut c).is_empty());
    c.handle_input(ms(t0, 20), &relayed_ok(&signed, &key));
    match c.poll_event().unwrap() {
        Event::Succeeded {
            request,
            outcome: Outcome::Allocated { relayed, lifetime },
            reply,
            ..
        } => {
            assert_eq!(request, r);
            assert_eq!(relayed, ["192.0.2.10:50000".parse().unwrap()]);
            assert_eq!(lifetime, 600);
            assert_eq!(reply.raw, relayed_ok(&signed, &key));
        }
        e => panic!("{e:?}"),
    }
    // Later requests are signed from the start.
    c.create_permission(ms(t0, 30), &["198.51.100.1:1".parse().unwrap()])
        .unwrap();
    let p = c.poll_transmit().unwrap();
    assert!(Message::parse(&p).unwrap().verify_integrity(&key));
}

#[test]
fn a_configured_realm_keys_the_request_but_the_servers_realm_is_sent() {
    let t0 = Instant::now();
    let mut c = client(Transport::Udp, Some(creds().with_realm("mine")));
    c.refresh(t0, Some(0)).unwrap();
    let first = c.poll_transmit().unwrap();
    c.handle_input(t0, &error(&first, 401, Some("theirs"), Some(b"n")));
    let s = c.poll_transmit().unwrap();
    let s = Message::parse(&s).unwrap();
    assert_eq!(s.realm(), Some(Ok("theirs")));
    assert!(s.verify_integrity(&long_term_key("alice", "mine", "alice-pw")));
}

#[test]
fn stale_nonces_are_retried_a_bounded_number_of_times() {
    let t0 = Instant::now();
    let mut c = client(Transport::Udp, Some(creds()));
    c.refresh(t0, None).unwrap();
    let mut req = c.poll_transmit().unwrap();
    req = {
        c.handle_input(t0, &error(&req, 401, Some("r"), Some(b"n0")));
        c.poll_transmit().unwrap()
    };
    for n in 1..=MAX_STALE_NONCE_RETRIES {
        // 438 may leave REALM out: the old one stands.
        let nonce = format!("n{n}");
        c.handle_input(t0, &error(&req, 438, None, Some(nonce.as_bytes())));
        req = c.poll_transmit().expect("sent again");
        let m = Message::parse(&req).unwrap();
        assert_eq!(m.nonce(), Some(Ok(nonce.as_bytes())));
        assert_eq!(m.realm(), Some(Ok("r")));
        assert!(c.poll_event().is_none());
    }
    c.handle_input(t0, &error(&req, 438, None, Some(b"again")));
    assert!(c.poll_transmit().is_none());
    assert!(matches!(
        c.poll_event(),
        Some(Event::Failed { error: Failure::Malformed(m), reply: Some(_), .. }) if m.contains("438")
    ));
}

#[test]
fn a_401_to_a_signed_request_rejects_the_credentials() {
    let t0 = Instant::now();
    let mut c = client(Transport::Udp, Some(creds()));
    let (_, signed) = challenged_allocate(&mut c, t0);
    c.handle_input(t0, &error(&signed, 401, Some("r"), Some(b"n2")));
    assert!(c.poll_transmit().is_none(), "not retried (RFC 8489 §9.2.5)");
    assert!(matches!(
        c.poll_event(),
        Some(Event::Failed { error: Failure::Rejected { realm }, .. }) if realm == "r"
    ));
}

#[test]
fn without_credentials_a_challenge_is_a_failure_and_binding_works() {
    let t0 = Instant::now();
    let mut c = client(Transport::Udp, None);
    c.allocate(t0, vec![]).unwrap();
    let first = c.poll_transmit().unwrap();
    c.handle_input(t0, &error(&first, 401, Some("r"), Some(b"n")));
    assert!(matches!(
        c.poll_event(),
        Some(Event::Failed {
            error: Failure::NeedCredentials,
            ..
        })
    ));
    c.binding(t0, vec![]).unwrap();
    let b = c.poll_transmit().unwrap();
    let mapped: SocketAddr = "203.0.113.5:4000".parse().unwrap();
    let ok = answer(
        &b,
        Class::SuccessResponse,
        |b| {
            b.add_xor_address(AttrType::XOR_MAPPED_ADDRESS, &mapped)
                .unwrap()
        },
        None,
    );
    c.handle_input(t0, &ok);
    assert!(matches!(
        c.poll_event(),
        Some(Event::Succeeded { outcome: Outcome::Mapped(m), .. }) if m == mapped
    ));
}

#[test]
fn error_responses_and_malformed_successes_are_failures() {
    let t0 = Instant::now();
    let mut c = client(Transport::Udp, Some(creds()));
    c.channel_bind(t0, 0x4000, "198.51.100.1:1".parse().unwrap())
        .unwrap();
    let req = c.poll_transmit().unwrap();
    c.handle_input(t0, &error(&req, 403, None, None));
    match c.poll_event() {
        Some(Event::Failed {
            method: Method::CHANNEL_BIND,
            error:
                Failure::Error {
                    code: 403,
                    authenticated: false,
                    ..
                },
            reply: Some(r),
            ..
        }) => assert_eq!(r.error, Some((403, "x".into()))),
        e => panic!("{e:?}"),
    }
    c.allocate(t0, vec![]).unwrap();
    let req = c.poll_transmit().unwrap();
    c.handle_input(t0, &answer(&req, Class::SuccessResponse, |_| {}, None));
    assert!(matches!(
        c.poll_event(),
        Some(Event::Failed { error: Failure::Malformed(m), .. }) if m.contains("XOR-RELAYED-ADDRESS")
    ));
}

#[test]
fn forged_late_and_foreign_responses_end_nothing() {
    let t0 = Instant::now();
    let mut c = client(Transport::Udp, Some(creds()));
    let (first, signed) = challenged_allocate(&mut c, t0);
    let key = long_term_key("alice", "r", "alice-pw");
    // Signed with another key: dropped as if never received (RFC 8489 §9.2.5).
    c.handle_input(t0, &relayed_ok(&signed, &[0; 16]));
    // The late second answer to the first transaction, and one to nothing.
    c.handle_input(t0, &error(&first, 401, Some("r"), Some(b"n")));
    let mut other = first.clone();
    other[8] ^= 0xFF;
    c.handle_input(t0, &relayed_ok(&other, &key));
    // A request, not a response; garbage.
    c.handle_input(t0, &signed);
    c.handle_input(t0, &[0xFF; 40]);
    assert!(!c.has_output());
    assert_eq!(c.in_flight(), 1);
    c.handle_input(t0, &relayed_ok(&signed, &key));
    assert!(matches!(c.poll_event(), Some(Event::Succeeded { .. })));
}

#[test]
fn relayed_data_and_connection_attempts_come_out_of_handle_input() {
    let t0 = Instant::now();
    let mut c = client(Transport::Stream, Some(creds()));
    let peer: SocketAddr = "198.51.100.1:5000".parse().unwrap();
    let mut buf = [0u8; 64];
    let n = c.channel_data(&mut buf, 0x4000, b"abc").unwrap();
    assert_eq!(n, 8, "padded over a stream");
    assert_eq!(
        c.handle_input(t0, &buf[..n]),
        Some(Relayed {
            via: Via::Channel(0x4000),
            data: b"abc"
        })
    );
    let n = c.send_indication(&mut buf, peer, b"hey").unwrap();
    let ty = MessageType::new(Method::DATA, Class::Indication).to_u16();
    buf[..2].copy_from_slice(&ty.to_be_bytes());
    assert_eq!(
        c.handle_input(t0, &buf[..n]),
        Some(Relayed {
            via: Via::Peer(peer),
            data: b"hey"
        })
    );
    let mut b = MessageBuilder::new(
        &mut buf,
        MessageType::new(Method::CONNECTION_ATTEMPT, Class::Indication),
        TransactionId([1; 12]),
    )
    .unwrap();
    b.add_u32(AttrType::CONNECTION_ID, 77).unwrap();
    b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &peer)
        .unwrap();
    let n = b.finish();
    assert_eq!(c.handle_input(t0, &buf[..n]), None);
    assert_eq!(
        c.poll_event(),
        Some(Event::ConnectionAttempt {
            connection_id: 77,
            peer
        })
    );
}

#[test]
fn requests_in_flight_are_bounded() {
    let t0 = Instant::now();
    let mut c = client(Transport::Udp, Some(creds()));
    for _ in 0..MAX_TRANSACTIONS {
        c.refresh(t0, None).unwrap();
    }
    assert_eq!(c.refresh(t0, None), Err(CommandError::TooManyTransactions));
    assert_eq!(drain(&mut c).len(), MAX_TRANSACTIONS);
}

#[test]
fn software_and_fingerprint_are_added_when_configured() {
    let t0 = Instant::now();
    let config = Config {
        software: Some("x/1".into()),
        fingerprint: true,
        ..Config::new(Transport::Udp)
    };
    let mut c = Client::new(config, None, [1; 32]);
    c.binding(t0, vec![Attr::ChangeRequest(6)]).unwrap();
    let req = c.poll_transmit().unwrap();
    let m = Message::parse(&req).unwrap();
    assert!(m.has_fingerprint());
    assert_eq!(m.software(), Some(Ok("x/1")));
    assert_eq!(
        m.get(AttrType::CHANGE_REQUEST),
        Some(&6u32.to_be_bytes()[..])
    );
}

#[test]
fn connection_attempts_the_caller_does_not_collect_are_bounded() {
    let t0 = Instant::now();
    let mut c = client(Transport::Stream, Some(creds()));
    let peer: SocketAddr = "198.51.100.1:5000".parse().unwrap();
    let mut buf = [0u8; 64];
    for id in 0..MAX_EVENTS as u32 + 10 {
        let mut b = MessageBuilder::new(
            &mut buf,
            MessageType::new(Method::CONNECTION_ATTEMPT, Class::Indication),
            TransactionId([2; 12]),
        )
        .unwrap();
        b.add_u32(AttrType::CONNECTION_ID, id).unwrap();
        b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &peer)
            .unwrap();
        let n = b.finish();
        c.handle_input(t0, &buf[..n]);
    }
    assert_eq!(std::iter::from_fn(|| c.poll_event()).count(), MAX_EVENTS);
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the server sends — garbage, or the client's own requests answered with
        /// bytes flipped — the client does not panic, ends each request with at most one
        /// event, and keeps its table within bounds.
        #[test]
        fn any_input_is_survived(
            garbage in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..8),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            code in prop_oneof![Just(401u16), Just(438), Just(403), Just(500)],
        ) {
            let t0 = Instant::now();
            let mut c = client(Transport::Udp, Some(creds()));
            c.allocate(t0, vec![]).unwrap();
            c.channel_bind(t0, 0x4000, "198.51.100.1:1".parse().unwrap()).unwrap();
            for g in &garbage {
                c.handle_input(t0, g);
            }
            // Bounded: each pass answers one transmitted request; a challenge and two stale
            // nonces at most per request.
            for _ in 0..16 {
                let Some(req) = c.poll_transmit() else { break };
                let mut resp = error(&req, code, Some("r"), Some(b"n"));
                for (at, x) in &flips {
                    let i = at % resp.len();
                    resp[i] ^= x;
                }
                c.handle_input(t0, &resp);
                c.handle_input(t0, &error(&req, code, Some("r"), Some(b"n")));
            }
            prop_assert!(c.in_flight() <= 2);
            c.handle_timeout(t0 + Duration::from_secs(3600));
            prop_assert_eq!(c.in_flight(), 0);
            let events: Vec<Event> = std::iter::from_fn(|| c.poll_event()).collect();
            prop_assert_eq!(events.len(), 2);
        }
    }
}
