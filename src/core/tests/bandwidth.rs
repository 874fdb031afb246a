//! `allocation_bandwidth`: one token bucket per allocation over both relay directions;
//! datagrams beyond it are dropped and counted, and time refills it.

use super::*;

fn ft() -> FiveTuple {
    udp("192.0.2.100:40000")
}

/// 100 kB/s: a burst of 65,536 bytes (the floor), refilled at 100 bytes per millisecond.
const RATE: u64 = 100_000;

#[test]
fn both_directions_share_the_bucket_and_drops_are_counted() {
    let mut h = Harness::with(Setup {
        allocation_bandwidth: RATE,
        ..Setup::default()
    });
    let mut c = Client::alice(ft());
    let (id, _) = c.allocate(&mut h);
    c.permit(&mut h, &[peer_a()]);
    let payload = [0x5A; 1000];
    // 65 datagrams of 1,000 bytes fit the 65,536-byte burst, half each way.
    for i in 0..65 {
        if i % 2 == 0 {
            assert!(
                c.send_indication(&mut h, peer_a(), &payload).0.is_some(),
                "{i}"
            );
        } else {
            assert!(h.peer(id, peer_a(), &payload).is_some(), "{i}");
        }
    }
    assert!(c.send_indication(&mut h, peer_a(), &payload).0.is_none());
    assert!(h.peer(id, peer_a(), &payload).is_none());
    assert_eq!(h.server.counters().dropped[DropReason::Bandwidth], 2);
    let s = h.alloc(ft()).stats;
    assert_eq!(s.to_peer_bytes + s.to_client_bytes, 65_000);
    // 10 ms later, 1,000 bytes more fit: one datagram, not two.
    h.advance(Duration::from_millis(10));
    assert!(h.peer(id, peer_a(), &payload).is_some());
    assert!(h.peer(id, peer_a(), &payload).is_none());
    assert_eq!(h.server.counters().dropped[DropReason::Bandwidth], 3);
}

#[test]
fn no_cap_by_default() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    c.allocate(&mut h);
    c.permit(&mut h, &[peer_a()]);
    for _ in 0..200 {
        assert!(c.send_indication(&mut h, peer_a(), &[0; 1000]).0.is_some());
    }
    assert_eq!(h.server.counters().dropped[DropReason::Bandwidth], 0);
    assert!(h.alloc(ft()).bandwidth.is_none());
}

#[test]
fn a_users_allocations_share_the_user_cap_on_every_worker() {
    let setup = Setup {
        user_bandwidth: RATE,
        ..Setup::default()
    };
    let shared = setup.shared();
    // Two workers (two cores over one shared state), one alice allocation on each.
    let mut w1 = Harness::from_shared(shared.clone(), 1);
    let mut w2 = Harness::from_shared(shared.clone(), 2);
    let mut a1 = Client::alice(ft());
    let mut a2 = Client::alice(udp("192.0.2.100:40001"));
    a1.allocate(&mut w1);
    a2.allocate(&mut w2);
    a1.permit(&mut w1, &[peer_a()]);
    a2.permit(&mut w2, &[peer_a()]);
    let payload = [0x5A; 1000];
    let mut passed = 0;
    for _ in 0..50 {
        passed += a1.send_indication(&mut w1, peer_a(), &payload).0.is_some() as u32;
        passed += a2.send_indication(&mut w2, peer_a(), &payload).0.is_some() as u32;
    }
    assert_eq!(passed, 65, "the 65,536-byte burst, shared");
    let drops = w1.server.counters().dropped[DropReason::Bandwidth]
        + w2.server.counters().dropped[DropReason::Bandwidth];
    assert_eq!(drops, 35);
    // Bob has a bucket of his own.
    let mut b = Client::bob(udp("192.0.2.100:40002"));
    b.allocate(&mut w1);
    b.permit(&mut w1, &[peer_a()]);
    assert!(b.send_indication(&mut w1, peer_a(), &payload).0.is_some());
    // When alice's allocations end, her bucket goes with her quota entry.
    a1.refresh(&mut w1, Some(0));
    a2.refresh(&mut w2, Some(0));
    assert_eq!(shared.quotas.of_user("alice"), 0);
    let mut a3 = Client::alice(udp("192.0.2.100:40003"));
    a3.allocate(&mut w1);
    a3.permit(&mut w1, &[peer_a()]);
    assert!(
        a3.send_indication(&mut w1, peer_a(), &payload).0.is_some(),
        "a fresh bucket"
    );
}
