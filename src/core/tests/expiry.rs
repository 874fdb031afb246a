//! Timers: allocation expiry, permission and channel lifetimes, reservations, and what
//! `poll_timeout` reports.

use super::*;

fn ft() -> FiveTuple {
    udp("192.0.2.100:40000")
}

#[test]
fn allocation_expires_at_its_lifetime() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (id, relayed) = c.allocate(&mut h);
    assert_eq!(h.server.poll_timeout(), Some(h.at(600)));
    h.advance_to(599);
    assert!(h.server.allocation(id).is_some());
    assert!(h.closed.is_empty());
    h.advance_to(600);
    assert!(h.server.allocation(id).is_none());
    assert_eq!(h.closed, vec![id]);
    match h.events.last() {
        Some(Event::AllocationEnded {
            id: eid,
            five_tuple,
            relay,
            reason,
            duration,
            ..
        }) => {
            assert_eq!((*eid, *five_tuple, *relay), (id, c.ft, relayed));
            assert_eq!((*reason, *duration), (EndReason::Expired, secs(600)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.ports_in_use(relay_v4()), 0);
    assert_eq!(h.server.poll_timeout(), None);
    // The 5-tuple starts over.
    c.refresh(&mut h, None)
        .assert_error(Method::REFRESH, 437, Some(&c.key));
}

#[test]
fn refresh_postpones_expiry() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (id, _) = c.allocate(&mut h);
    h.advance_to(500);
    c.refresh(&mut h, None)
        .assert_success(Method::REFRESH, &c.key);
    // The deadline moved: nothing is due at 600 any more.
    assert_eq!(h.server.poll_timeout(), Some(h.at(1100)));
    assert_eq!(h.server.pending_timers(), 1);
    h.advance_to(600);
    assert!(h.server.allocation(id).is_some());
    assert!(h.closed.is_empty());
    assert_eq!(h.server.poll_timeout(), Some(h.at(1100)));
    h.advance_to(1100);
    assert!(h.server.allocation(id).is_none());
    assert_eq!(h.ended().len(), 1);
}

#[test]
fn longer_lifetime_expires_later() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate_with(&mut h, &[lifetime(3600)]);
    let id = h.id_of(ft()).unwrap();
    h.advance_to(3599);
    assert!(h.server.allocation(id).is_some());
    h.advance_to(3600);
    assert!(h.server.allocation(id).is_none());
}

#[test]
fn shortened_lifetime_is_honoured() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate_with(&mut h, &[lifetime(3600)]);
    let id = h.id_of(ft()).unwrap();
    h.advance_to(100);
    c.refresh(&mut h, Some(600))
        .assert_success(Method::REFRESH, &c.key);
    h.advance_to(700);
    assert!(
        h.server.allocation(id).is_none(),
        "expired at the refreshed (shorter) lifetime"
    );
}

#[test]
fn permissions_expire_after_300_seconds() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (id, _) = c.allocate(&mut h);
    c.permit(&mut h, &[peer_a()]);
    h.advance_to(299);
    assert!(c.send_indication(&mut h, peer_a(), b"x").0.is_some());
    assert!(h.peer(id, peer_a(), b"y").is_some());
    h.advance_to(300);
    assert!(c.send_indication(&mut h, peer_a(), b"x").0.is_none());
    assert!(h.peer(id, peer_a(), b"y").is_none());
    assert_eq!(h.server.counters().dropped[DropReason::NoPermission], 2);
    // The sweep removed it.
    assert_eq!(h.alloc(ft()).permissions.len(), 0);
}

#[test]
fn refreshed_permissions_live_on() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (id, _) = c.allocate(&mut h);
    c.permit(&mut h, &[peer_a(), peer_b()]);
    h.advance_to(200);
    c.permit(&mut h, &[peer_a()]);
    h.advance_to(300);
    assert!(c.send_indication(&mut h, peer_a(), b"x").0.is_some());
    assert!(c.send_indication(&mut h, peer_b(), b"x").0.is_none());
    assert_eq!(h.alloc(ft()).permissions.len(), 1);
    h.advance_to(499);
    assert!(h.peer(id, peer_a(), b"y").is_some());
    h.advance_to(500);
    assert!(h.peer(id, peer_a(), b"y").is_none());
}

#[test]
fn channels_expire_after_600_seconds() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (id, _) = c.allocate(&mut h);
    c.refresh(&mut h, Some(3600));
    c.bind(&mut h, 0x4000, peer_a());
    // The binding's permission lasts 300 s: refresh it, as a client must.
    h.advance_to(250);
    c.permit(&mut h, &[peer_a()]);
    h.advance_to(500);
    c.permit(&mut h, &[peer_a()]);
    h.advance_to(599);
    assert!(c.channel_data(&mut h, 0x4000, b"x").0.is_some());
    let (_, framed) = h.peer(id, peer_a(), b"y").unwrap();
    assert_eq!(&framed[..2], &[0x40, 0x00]);
    h.advance_to(600);
    assert!(c.channel_data(&mut h, 0x4000, b"x").0.is_none());
    assert_eq!(h.server.counters().dropped[DropReason::NoChannel], 1);
    // The permission is still there: peer data now comes as a Data indication.
    let (_, framed) = h.peer(id, peer_a(), b"y").unwrap();
    assert_eq!(Message::parse(&framed).unwrap().method(), Method::DATA);
}

#[test]
fn channel_without_permission_refresh_stops_relaying_at_300_seconds() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (id, _) = c.allocate(&mut h);
    c.bind(&mut h, 0x4000, peer_a());
    h.advance_to(300);
    assert!(c.channel_data(&mut h, 0x4000, b"x").0.is_none());
    assert!(h.peer(id, peer_a(), b"y").is_none());
    assert_eq!(h.server.counters().dropped[DropReason::NoPermission], 2);
    // Rebinding refreshes both.
    c.bind(&mut h, 0x4000, peer_a());
    assert!(c.channel_data(&mut h, 0x4000, b"x").0.is_some());
}

#[test]
fn poll_timeout_reports_the_earliest_deadline() {
    let mut h = Harness::new();
    assert_eq!(h.server.poll_timeout(), None);
    let mut c = Client::alice(ft());
    c.allocate(&mut h);
    assert_eq!(h.server.poll_timeout(), Some(h.at(600)));
    h.advance_to(10);
    c.permit(&mut h, &[peer_a()]);
    assert_eq!(h.server.poll_timeout(), Some(h.at(310)));
    let mut d = Client::bob(udp("192.0.2.100:40001"));
    h.advance_to(20);
    d.allocate_with(&mut h, &[even_port(true)]);
    assert_eq!(
        h.server.poll_timeout(),
        Some(h.at(50)),
        "the reservation lapses first"
    );
    h.advance_to(50);
    assert_eq!(h.server.poll_timeout(), Some(h.at(310)));
    h.advance_to(310);
    assert_eq!(h.server.poll_timeout(), Some(h.at(600)));
    h.advance_to(600);
    assert_eq!(h.server.poll_timeout(), Some(h.at(620)));
    h.advance_to(620);
    assert_eq!(h.server.poll_timeout(), None);
    assert_eq!(h.allocation_count(), 0);
}

#[test]
fn deadlines_never_lie_in_the_past_after_handle_timeout() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate(&mut h);
    c.bind(&mut h, 0x4000, peer_a());
    for t in (0..2000).step_by(37) {
        h.advance_to(t);
        if let Some(next) = h.server.poll_timeout() {
            assert!(
                next > h.now,
                "at {t}: deadline {:?} already due",
                next - h.t0
            );
        }
        if t % 370 == 0 && h.id_of(ft()).is_some() {
            c.bind(&mut h, 0x4000, peer_a());
        }
    }
}

#[test]
fn late_timer_fires_everything_due() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (id, _) = c.allocate(&mut h);
    c.bind(&mut h, 0x4000, peer_a());
    let mut d = Client::bob(udp("192.0.2.100:40001"));
    d.allocate_with(&mut h, &[even_port(true)]);
    // The shell wakes up very late, once.
    h.jump(secs(5000));
    h.server.handle_timeout(h.now);
    h.drain();
    assert_eq!(h.allocation_count(), 0);
    assert_eq!(h.server.poll_timeout(), None);
    assert_eq!(h.ports_in_use(relay_v4()), 0);
    assert!(h.shared.reservations.is_empty());
    assert!(h.closed.contains(&id));
}

#[test]
fn stale_generation_is_dropped() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (old, _) = c.allocate(&mut h);
    c.permit(&mut h, &[peer_a()]);
    c.refresh(&mut h, Some(0));
    // The next allocation reuses the slot with a new generation.
    let mut d = Client::bob(udp("192.0.2.100:40001"));
    let (new, _) = d.allocate(&mut h);
    assert_eq!(new.index, old.index);
    assert_ne!(new.generation, old.generation);
    d.permit(&mut h, &[peer_a()]);
    assert!(
        h.peer(old, peer_a(), b"late").is_none(),
        "a late datagram for the freed allocation"
    );
    assert_eq!(h.server.counters().dropped[DropReason::NoAllocation], 1);
    assert_eq!(h.server.allocation(new).unwrap().stats.to_client_packets, 0);
    let (to, _) = h.peer(new, peer_a(), b"current").unwrap();
    assert_eq!(to, d.ft);
    // Answers for the old id are ignored too.
    h.open(old, Ok(()));
    h.assert_silent();
}

#[test]
fn timers_of_a_freed_allocation_do_not_touch_its_successor() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    let (old, _) = c.allocate(&mut h);
    c.permit(&mut h, &[peer_a()]);
    h.advance_to(100);
    c.refresh(&mut h, Some(0));
    let mut d = Client::bob(udp("192.0.2.100:40001"));
    let (new, _) = d.allocate(&mut h);
    assert_eq!(new.index, old.index);
    // The old allocation's deadlines (sweep at 300, expiry at 600) pass harmlessly.
    h.advance_to(650);
    assert!(h.server.allocation(new).is_some());
    h.advance_to(700);
    assert!(h.server.allocation(new).is_none());
    assert_eq!(h.ended().iter().filter(|e| e.0 == new).count(), 1);
}

#[test]
fn close_all_ends_every_allocation() {
    let mut h = Harness::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut c = Client::alice(udp(&format!("192.0.2.100:{}", 40000 + i)));
        ids.push(c.allocate(&mut h).0);
    }
    h.advance_to(5);
    h.server.close_all(h.now);
    h.drain();
    let mut closed = h.closed.clone();
    closed.sort();
    assert_eq!(closed, ids);
    assert!(h
        .ended()
        .iter()
        .all(|e| e.1 == EndReason::Shutdown && e.3 == secs(5)));
    assert_eq!(h.ended().len(), 3);
    assert_eq!(h.allocation_count(), 0);
    assert_eq!(h.ports_in_use(relay_v4()), 0);
}

/// Churn like the soak test's (created, refreshed, deleted, abandoned to expiry), with client
/// ports reused as an OS would reuse them: every abandoned allocation must have expired before
/// its 5-tuple comes back, so a new Allocate from it must never meet 437. Deleted allocations
/// take their deadlines with them: the deadlines held never exceed those of the live ones.
#[test]
fn long_churn_with_reused_client_ports_never_meets_a_stale_allocation() {
    const LIFETIME: u64 = 2;
    const PORTS: u16 = 2000;
    let mut shared = Setup {
        ports: (20000, 60000),
        ..Setup::default()
    }
    .shared();
    {
        let s = Arc::get_mut(&mut shared).expect("not shared yet");
        s.config.default_lifetime = secs(LIFETIME);
    }
    let mut h = Harness::from_shared(shared, 1);
    // When each client port is free again (its abandoned allocation surely expired).
    let mut free_at = vec![h.now; PORTS as usize];
    let mut port = 0u16;
    let mut abandoned = 0usize;
    let mut most_timers = 0;
    for cycle in 0..40_000u64 {
        h.advance(Duration::from_millis(7));
        // The next port that is free, round robin (an OS picks any free one).
        let mut tries = 0;
        while free_at[port as usize] > h.now {
            port = (port + 1) % PORTS;
            tries += 1;
            assert!(tries <= PORTS, "no free client port at cycle {cycle}");
        }
        let ft = udp(&format!("192.0.2.100:{}", 30000 + port));
        let mut c = Client::alice(ft);
        let resp = c.allocate_with(&mut h, &[]);
        assert_eq!(
            resp.code(),
            None,
            "cycle {cycle}: Allocate from reused port {} refused; {} allocations live, {} timers",
            30000 + port,
            h.allocation_count(),
            h.server.pending_timers(),
        );
        match cycle % 3 {
            0 => {
                c.refresh(&mut h, Some(0))
                    .assert_success(Method::REFRESH, &c.key);
            }
            1 => {
                c.refresh(&mut h, Some(60))
                    .assert_success(Method::REFRESH, &c.key);
                c.refresh(&mut h, Some(0))
                    .assert_success(Method::REFRESH, &c.key);
            }
            _ => {
                abandoned += 1;
                free_at[port as usize] = h.now + secs(LIFETIME + 10);
            }
        }
        port = (port + 1) % PORTS;
        let timers = h.server.pending_timers();
        assert!(
            timers <= h.server.pending_timers_bound(),
            "cycle {cycle}: {timers} deadlines for {} allocations",
            h.allocation_count()
        );
        // No permissions, channels or reservations here: one expiry each.
        assert_eq!(timers, h.allocation_count(), "cycle {cycle}");
        most_timers = most_timers.max(timers);
    }
    assert!(most_timers > 0);
    h.advance(secs(LIFETIME + 1));
    assert_eq!(h.allocation_count(), 0, "{abandoned} abandoned");
}
