//! RFC 6062 TCP allocations under policy: what a TCP allocation refuses (ChannelBind, Send
//! indications), and the [`SpliceShare`](crate::core::tcp_relay::SpliceShare) its splices get
//! — the `allocation_bandwidth` and `user_bandwidth` caps that pace them, the very user
//! bucket the UDP path charges, and the byte counts that reach the allocation's statistics.

use super::tcp_relay::{connect, connection_bind, control, data_ft, tcp_allocation};
use super::*;

/// 100 kB/s: a burst of 65,536 bytes (the floor), refilled at 100 bytes per millisecond.
const RATE: u64 = 100_000;

/// A TCP allocation with one peer connection bound on a second worker: both harnesses, the
/// owner's client and the CONNECTION-ID.
fn bound(setup: Setup) -> (Harness, Harness, Client, u32) {
    let mut h = Harness::with(setup);
    let (mut c, id) = tcp_allocation(&mut h);
    let cid = connect(&mut h, &mut c, id, peer_a());
    assert!(h.server.splice_share(cid).is_none(), "not bound yet");
    let mut other = Harness::from_shared(h.shared.clone(), 0xbeef);
    let mut d = Client::alice(data_ft(40001));
    connection_bind(&mut other, &mut d, cid).assert_success(Method::CONNECTION_BIND, &d.key);
    (h, other, c, cid)
}

#[test]
fn channel_bind_on_a_tcp_allocation_is_400() {
    let mut h = Harness::new();
    let (mut c, _) = tcp_allocation(&mut h);
    let key = c.key;
    c.channel_bind(&mut h, 0x4000, peer_a())
        .assert_error(Method::CHANNEL_BIND, 400, Some(&key));
    assert!(h
        .alloc(control())
        .channels
        .by_number(0x4000, h.now)
        .is_none());
    assert_eq!(h.server.counters().channels_created, 0);
    // So ChannelData has no channel to go through either.
    let before = h.server.counters().dropped[DropReason::NoChannel];
    assert!(c.channel_data(&mut h, 0x4000, b"hello").0.is_none());
    assert_eq!(
        h.server.counters().dropped[DropReason::NoChannel],
        before + 1
    );
}

#[test]
fn channel_bind_on_a_udp_allocation_still_works() {
    let mut h = Harness::new();
    let mut c = Client::alice(udp("192.0.2.100:40000"));
    c.allocate(&mut h);
    c.bind(&mut h, 0x4000, peer_a());
}

#[test]
fn send_indication_on_a_tcp_allocation_is_discarded() {
    let mut h = Harness::new();
    let (mut c, _) = tcp_allocation(&mut h);
    let before = h.server.counters().dropped[DropReason::NoAllocation];
    // peer_a holds a permission: only the allocation's transport refuses it.
    assert!(c.send_indication(&mut h, peer_a(), b"hello").0.is_none());
    assert_eq!(
        h.server.counters().dropped[DropReason::NoAllocation],
        before + 1
    );
    assert!(
        h.take_to(control()).is_empty(),
        "an indication gets no answer"
    );
    assert_eq!(h.alloc(control()).relayed(), Relayed::default());
}

#[test]
fn the_binding_worker_gets_the_allocations_share() {
    let (h, other, _, cid) = bound(Setup {
        allocation_bandwidth: RATE,
        ..Setup::default()
    });
    let share = other.server.splice_share(cid).expect("bound");
    let own = h
        .alloc(control())
        .tcp()
        .expect("a TCP allocation")
        .splice
        .clone();
    assert!(Arc::ptr_eq(&share, &own));
    assert!(share.is_capped());
    // A UDP allocation has none.
    let mut u = Harness::new();
    let mut c = Client::alice(udp("192.0.2.100:40000"));
    c.allocate(&mut u);
    assert!(!u.alloc(udp("192.0.2.100:40000")).is_tcp());
}

#[test]
fn no_cap_by_default_costs_no_wait() {
    let (_h, other, _, cid) = bound(Setup::default());
    let share = other.server.splice_share(cid).expect("bound");
    assert!(!share.is_capped());
    assert_eq!(share.pace(other.now, 10_000_000), Duration::ZERO);
}

#[test]
fn allocation_cap_paces_both_directions_together() {
    let (_h, other, _, cid) = bound(Setup {
        allocation_bandwidth: RATE,
        ..Setup::default()
    });
    let share = other.server.splice_share(cid).expect("bound");
    let now = other.now;
    // Half the burst passes at once, split between the directions.
    assert_eq!(share.pace(now, 20_000), Duration::ZERO);
    assert_eq!(share.pace(now, 12_768), Duration::ZERO);
    // 10,000 bytes more, whichever way: 100 ms at 100 kB/s.
    assert_eq!(share.pace(now, 10_000), Duration::from_millis(100));
    // Having waited that long, the next chunk waits for its own refill only.
    let later = now + Duration::from_millis(100);
    assert_eq!(share.pace(later, 1_000), Duration::from_millis(10));
}

#[test]
fn user_cap_is_the_bucket_the_udp_path_charges() {
    let setup = Setup {
        user_bandwidth: RATE,
        ..Setup::default()
    };
    let (mut h, other, _, cid) = bound(setup);
    let share = other.server.splice_share(cid).expect("bound");
    assert!(share.is_capped());
    // Alice also has a UDP allocation, on the owner worker.
    let ft = udp("192.0.2.100:40009");
    let mut u = Client::alice(ft);
    u.allocate(&mut h);
    u.permit(&mut h, &[peer_a()]);
    // Her splice spends the half of the burst paced bytes may use.
    assert_eq!(share.pace(h.now, 32_768), Duration::ZERO);
    // The other half is her datagrams', and no more.
    let drops = h.server.counters().dropped[DropReason::Bandwidth];
    for i in 0..32 {
        assert!(
            u.send_indication(&mut h, peer_a(), &[0; 1000]).0.is_some(),
            "{i}"
        );
    }
    assert!(u.send_indication(&mut h, peer_a(), &[0; 1000]).0.is_none());
    assert_eq!(
        h.server.counters().dropped[DropReason::Bandwidth],
        drops + 1
    );
    // Her splice now waits for what her datagrams took too: 32,000 + 1,000 bytes, 330 ms.
    assert_eq!(share.pace(h.now, 1_000), Duration::from_millis(330));
    // Bob's datagrams are not under her cap.
    let mut b = Client::bob(udp("192.0.2.100:40010"));
    b.allocate(&mut h);
    b.permit(&mut h, &[peer_a()]);
    assert!(b.send_indication(&mut h, peer_a(), &[0; 1000]).0.is_some());
    // 10 ms later, 1,000 bytes of the cap are back.
    h.advance(Duration::from_millis(10));
    assert!(u.send_indication(&mut h, peer_a(), &[0; 100]).0.is_some());
}

#[test]
fn spliced_bytes_count_in_the_allocations_statistics() {
    let (mut h, other, mut c, cid) = bound(Setup::default());
    let share = other.server.splice_share(cid).expect("bound");
    share.count(true, 1_000);
    share.count(false, 500);
    share.count(false, 20);
    let s = h.alloc(control()).relayed();
    assert_eq!((s.to_peer_bytes, s.to_client_bytes), (1_000, 520));
    assert_eq!((s.to_peer_packets, s.to_client_packets), (0, 0));
    // And in its end-of-life statistics.
    c.refresh(&mut h, Some(0));
    let ended = h.ended();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].2, s);
}

#[test]
fn throttled_splices_are_counted() {
    let mut h = Harness::new();
    h.server.count_splice_throttled();
    h.server.count_splice_throttled();
    assert_eq!(h.server.counters().tcp_relay_throttled, 2);
}
