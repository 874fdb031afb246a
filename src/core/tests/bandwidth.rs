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
    assert_eq!(h.server.counters().bandwidth, 2);
    let s = h.alloc(ft()).stats;
    assert_eq!(s.to_peer_bytes + s.to_client_bytes, 65_000);
    // 10 ms later, 1,000 bytes more fit: one datagram, not two.
    h.advance(Duration::from_millis(10));
    assert!(h.peer(id, peer_a(), &payload).is_some());
    assert!(h.peer(id, peer_a(), &payload).is_none());
    assert_eq!(h.server.counters().bandwidth, 3);
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
    assert_eq!(h.server.counters().bandwidth, 0);
    assert!(h.alloc(ft()).bandwidth.is_none());
}
