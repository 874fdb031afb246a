//! Every structure a client's requests grow is held to a stated bound, driven to it here:
//! the deadlines (one per owner and purpose, whatever the number of Refreshes) and the
//! retransmission cache (a fixed number of responses, oldest forgotten first). Reservations
//! are in `reservation.rs`; permissions, channels and RFC 6062 connections where their
//! requests are tested (`rfc8489.rs`, `tcp_relay.rs`); the rate limiters in `rate_limit.rs`.

use super::*;

fn ft() -> FiveTuple {
    udp("192.0.2.100:40000")
}

/// ADDITIONAL-ADDRESS-FAMILY: IPv6.
fn additional_v6() -> Attr {
    Attr::Raw(AttrType::ADDITIONAL_ADDRESS_FAMILY, vec![2, 0, 0, 0])
}

/// Sends one signed request and returns its response, cheaply (no nonce dance: the client
/// has one).
fn send(h: &mut Harness, c: &mut Client, method: Method, attrs: &[Attr]) -> Resp {
    let txid = c.txid();
    let req = c.signed(method, txid, attrs);
    assert!(h.input(c.ft, &req).is_none());
    let (to, payload) = h.transmits.pop_back().expect("a response");
    assert!(h.transmits.is_empty());
    assert_eq!(to, c.ft);
    Resp(payload)
}

/// 300,000 signed Refreshes of one dual allocation, alternating between both families and
/// each family alone, one millisecond apart: the allocation holds one expiry deadline (and
/// its permissions one sweep) the whole time, and once it is deleted nothing is left — so
/// ending it costs the same however often it was refreshed.
#[test]
fn hundreds_of_thousands_of_refreshes_hold_one_expiry_deadline() {
    const REFRESHES: u32 = 300_000;
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate_with(&mut h, &[additional_v6()])
        .assert_success(Method::ALLOCATE, &c.key);
    c.permit(&mut h, &[peer_a(), peer_v6()]);
    assert_eq!(h.server.pending_timers(), 2, "expiry + sweep");
    let capacity = h.server.cached_responses_capacity();
    let mut most_cached = 0;
    for i in 0..REFRESHES {
        h.advance(Duration::from_millis(1));
        let attrs = match i % 3 {
            0 => vec![lifetime(600)],
            1 => vec![lifetime(600), family(1)],
            _ => vec![lifetime(900), family(2)],
        };
        let resp = send(&mut h, &mut c, Method::REFRESH, &attrs);
        if i % 10_000 == 0 {
            resp.assert_success(Method::REFRESH, &c.key);
        } else {
            assert_eq!(resp.class(), Class::SuccessResponse, "refresh {i}");
        }
        let timers = h.server.pending_timers();
        assert!(timers <= 2, "refresh {i}: {timers} deadlines");
        assert!(timers <= h.server.pending_timers_bound());
        most_cached = most_cached.max(h.server.cached_responses());
    }
    // 300 s passed: the permissions lapsed and their sweep ran; one expiry is left.
    assert_eq!(h.server.pending_timers(), 1);
    assert_eq!(h.alloc(ft()).permissions.len(), 0);
    // 40 s of Refreshes a millisecond apart is more than the cache holds: it stayed full.
    assert_eq!(most_cached, capacity);
    let id = h.id_of(ft()).unwrap();
    send(&mut h, &mut c, Method::REFRESH, &[lifetime(0)]).assert_success(Method::REFRESH, &c.key);
    assert!(h.server.allocation(id).is_none());
    assert_eq!(h.server.pending_timers(), 0);
    assert_eq!(h.server.poll_timeout(), None);
    assert_eq!(h.ports_in_use(relay_v4()) + h.ports_in_use(relay_v6()), 0);
}

/// The deadline follows the family refreshed last only as far as the earlier family allows:
/// each family still ends at its own time, with one deadline.
#[test]
fn the_one_deadline_ends_each_family_at_its_own_time() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate_with(&mut h, &[additional_v6()])
        .assert_success(Method::ALLOCATE, &c.key);
    let id = h.id_of(ft()).unwrap();
    h.advance_to(100);
    // IPv6 until 100 + 3600, IPv4 still until 600.
    c.refresh(&mut h, Some(3600))
        .assert_success(Method::REFRESH, &c.key);
    c.request(&mut h, Method::REFRESH, &[lifetime(600), family(1)])
        .assert_success(Method::REFRESH, &c.key);
    h.advance_to(150);
    c.request(&mut h, Method::REFRESH, &[lifetime(3600), family(2)])
        .assert_success(Method::REFRESH, &c.key);
    assert_eq!(h.server.pending_timers(), 1);
    assert_eq!(h.server.poll_timeout(), Some(h.at(700)));
    h.advance_to(701);
    assert_eq!(h.closed_families.len(), 1, "IPv4 ended at 700");
    assert!(h.server.allocation(id).is_some());
    assert_eq!(h.server.poll_timeout(), Some(h.at(3750)));
    h.advance_to(3751);
    assert!(h.server.allocation(id).is_none());
    assert_eq!(h.server.pending_timers(), 0);
}

/// Churn of many allocations, each refreshed, permitted and bound many times, some deleted,
/// some left to expire: at every step the deadlines held are within three per allocation.
#[test]
fn deadlines_stay_within_three_per_allocation_under_churn() {
    let mut h = Harness::with(Setup {
        ports: (20000, 21000),
        ..Setup::default()
    });
    let mut clients: Vec<Client> = (0..40)
        .map(|i| Client::alice(udp(&format!("192.0.2.100:{}", 41000 + i))))
        .collect();
    for round in 0..60u32 {
        for (i, c) in clients.iter_mut().enumerate() {
            h.advance(Duration::from_millis(250));
            if h.id_of(c.ft).is_none() {
                let extra = if i % 4 == 0 {
                    vec![even_port(true)]
                } else {
                    vec![]
                };
                c.allocate_with(&mut h, &extra);
                continue;
            }
            match (round as usize + i) % 5 {
                0 => {
                    c.refresh(&mut h, Some(700));
                }
                1 => c.permit(&mut h, &[peer_a(), peer_b()]),
                2 => {
                    c.channel_bind(&mut h, 0x4000, peer_a());
                }
                3 if i % 3 == 0 => {
                    c.refresh(&mut h, Some(0));
                }
                _ => {}
            }
            assert!(
                h.server.pending_timers() <= h.server.pending_timers_bound(),
                "round {round}: {} deadlines, {} allocations",
                h.server.pending_timers(),
                h.allocation_count()
            );
        }
    }
    h.advance(secs(4000));
    assert_eq!(h.allocation_count(), 0);
    assert_eq!(h.server.pending_timers(), 0);
    assert!(h.shared.reservations.is_empty());
}

/// The retransmission cache holds at most its capacity: past it the oldest response is
/// forgotten (a retransmission of that request runs again), the newest are kept.
#[test]
fn the_retransmission_cache_forgets_the_oldest_past_its_capacity() {
    let mut h = Harness::new();
    let capacity = h.server.cached_responses_capacity();
    // X deletes its allocation: the first response to be pushed out.
    let mut x = Client::alice(ft());
    x.allocate(&mut h);
    let txid = x.txid();
    let delete_x = x.signed(Method::REFRESH, txid, &[lifetime(0)]);
    x.send_raw(&mut h, &delete_x)
        .unwrap()
        .assert_success(Method::REFRESH, &x.key);
    // Y fills the cache and more.
    let mut y = Client::bob(udp("192.0.2.100:40001"));
    y.allocate(&mut h);
    for _ in 0..capacity + 10 {
        send(&mut h, &mut y, Method::REFRESH, &[]);
        assert!(h.server.cached_responses() <= capacity);
    }
    let txid = y.txid();
    let delete_y = y.signed(Method::REFRESH, txid, &[lifetime(0)]);
    y.send_raw(&mut h, &delete_y)
        .unwrap()
        .assert_success(Method::REFRESH, &y.key);
    assert_eq!(h.server.cached_responses(), capacity);
    // The newest is still remembered: its retransmission gets the same success, although the
    // allocation is gone.
    y.send_raw(&mut h, &delete_y)
        .unwrap()
        .assert_success(Method::REFRESH, &y.key);
    // The oldest was forgotten: X's retransmission runs again and finds no allocation.
    x.send_raw(&mut h, &delete_x)
        .unwrap()
        .assert_error(Method::REFRESH, 437, Some(&x.key));
    assert_eq!(h.server.cached_responses(), capacity);
}

/// The permissions and channel bindings of one allocation at the ceiling the shell never
/// exceeds (4096 each, what `max_permissions = 0` and `max_channels = 0` mean): one more of
/// either is a 508, and the lists stay at the ceiling.
#[test]
fn permissions_and_channels_stop_at_their_ceiling() {
    use crate::core::channel::MAX_CHANNELS;
    use crate::core::permission::MAX_PERMISSIONS;
    // 0, "no limit of the operator's own", is the ceiling in the core itself: whatever an
    // embedder passes, every allocation's lists are bounded.
    let mut h = Harness::with(Setup {
        per_allocation: (0, 0),
        ..Setup::default()
    });
    let config = &h.server.shared().config;
    assert_eq!(config.permission_limit(), MAX_PERMISSIONS as usize);
    assert_eq!(config.channel_limit(), MAX_CHANNELS as usize);
    let mut c = Client::alice(ft());
    c.allocate_with(&mut h, &[additional_v6()])
        .assert_success(Method::ALLOCATE, &c.key);
    let peer = |i: u32| {
        SocketAddr::new(
            IpAddr::V6(
                0x2001_0db8_0001_u128
                    .wrapping_shl(80)
                    .wrapping_add(u128::from(i))
                    .into(),
            ),
            5000,
        )
    };
    let peers: Vec<SocketAddr> = (1..=MAX_PERMISSIONS).map(peer).collect();
    for chunk in peers.chunks(20) {
        c.permit(&mut h, chunk);
    }
    assert_eq!(h.alloc(ft()).permissions.len(), MAX_PERMISSIONS as usize);
    let one_more = peer(MAX_PERMISSIONS + 1);
    c.create_permission(&mut h, &[one_more]).assert_error(
        Method::CREATE_PERMISSION,
        508,
        Some(&c.key),
    );
    for (i, p) in peers.iter().enumerate() {
        c.bind(&mut h, 0x4000 + i as u16, *p);
    }
    assert_eq!(h.alloc(ft()).channels.len(), MAX_CHANNELS as usize);
    c.channel_bind(&mut h, 0x4000 + MAX_CHANNELS as u16, peers[0])
        .assert_error(Method::CHANNEL_BIND, 508, Some(&c.key));
    assert_eq!(h.alloc(ft()).permissions.len(), MAX_PERMISSIONS as usize);
    assert_eq!(h.alloc(ft()).channels.len(), MAX_CHANNELS as usize);
    // Data still flows on the last of them.
    let last = *peers.last().unwrap();
    let id = h.id_of(ft()).unwrap();
    assert!(h.peer(id, last, b"x").is_some());
    assert_eq!(h.server.pending_timers(), 2, "one expiry, one sweep");
}
