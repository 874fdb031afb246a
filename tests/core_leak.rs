//! No leak in the sans-IO core: a global allocator that keeps the test thread's live heap
//! bytes watches the core churn thousands of allocations — Allocate, ChannelBind, relay both
//! ways, then a Refresh 0 or expiry — round after round, with the fake clock moved past every
//! lifetime and the 40 s retransmission cache between rounds. After the first round has sized
//! the tables, each later round must leave the live bytes where the first left them: a leak of
//! a few bytes per allocation would show as kilobytes. (The soak test, `tests/soak.rs`, watches
//! the whole process's RSS, which the system allocator blurs; this one is exact.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use turnd::core::nonce::{SecurityFeatures, NONCE_LEN};
use turnd::core::{
    CoreConfig, FiveTuple, Output, RelayAddr, Server, Shared, PEER_HEADROOM, PEER_TAILROOM,
};
mod core_fixture;

use core_fixture::{request, shared, UNIX};
use turnd::stun::{AttrType, Method};

/// Tracks the live heap bytes of threads whose `TRACKING` flag is set (libtest's own threads
/// allocate now and then and must not count).
struct Live;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
}
static LIVE: AtomicI64 = AtomicI64::new(0);

fn tracking() -> bool {
    TRACKING.try_with(Cell::get).unwrap_or(false)
}

unsafe impl GlobalAlloc for Live {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if tracking() {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if tracking() {
            LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if tracking() {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Live = Live;

/// Allocations per round.
const PER_ROUND: u16 = 2_000;
const ROUNDS: usize = 4;

/// Runs every output, opening relay sockets as the shell would.
fn drain(s: &mut Server, now: Instant) {
    while let Some(o) = s.poll_output() {
        if let Output::OpenRelay { id, .. } = o {
            s.handle_relay_opened(now, id, Ok(()));
        }
    }
}

/// One allocation's life on client port `port`: Allocate, ChannelBind, a datagram each way,
/// then a Refresh 0 on even ports (odd ones are left to expire).
fn one_allocation(s: &mut Server, shared: &Shared, now: Instant, unix: u64, port: u16) {
    let client = FiveTuple::udp(
        SocketAddr::new("203.0.113.5".parse().unwrap(), port),
        "192.0.2.1:3478".parse().unwrap(),
    );
    let peer: SocketAddr = "198.51.100.7:5000".parse().unwrap();
    let mut nonce = [0u8; NONCE_LEN];
    let nonce = shared
        .nonce_key
        .issue(SecurityFeatures::default(), unix, client.client, &mut nonce)
        .as_bytes()
        .to_vec();
    let alloc = request(Method::ALLOCATE, &nonce, 1, |b| {
        b.add_u32(AttrType::REQUESTED_TRANSPORT, 17 << 24).unwrap()
    });
    s.handle_client_datagram(now, client, &alloc);
    drain(s, now);
    let bind = request(Method::CHANNEL_BIND, &nonce, 2, |b| {
        b.add_u32(AttrType::CHANNEL_NUMBER, 0x4000 << 16).unwrap();
        b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &peer)
            .unwrap();
    });
    s.handle_client_datagram(now, client, &bind);
    drain(s, now);
    let id = s
        .allocations()
        .find(|a| a.five_tuple == client)
        .expect("allocated")
        .id;
    let payload = [0x5Au8; 100];
    let mut channel_data = vec![0x40, 0x00, 0x00, payload.len() as u8];
    channel_data.extend_from_slice(&payload);
    assert!(s
        .handle_client_datagram(now, client, &channel_data)
        .is_some());
    let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
    let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
    buf[range.clone()].copy_from_slice(&payload);
    assert!(s
        .handle_peer_datagram(now, id, peer, &mut buf, range)
        .is_some());
    if port % 2 == 0 {
        let delete = request(Method::REFRESH, &nonce, 3, |b| {
            b.add_u32(AttrType::LIFETIME, 0).unwrap()
        });
        s.handle_client_datagram(now, client, &delete);
        drain(s, now);
    }
}

#[test]
fn allocation_churn_leaves_no_live_heap_behind() {
    TRACKING.with(|t| t.set(true));
    let relay = "192.0.2.10".parse().unwrap();
    let shared = shared(
        CoreConfig {
            relays: vec![RelayAddr {
                bind: relay,
                advertised: relay,
            }],
            default_lifetime: Duration::from_secs(10),
            ..Default::default()
        },
        &["198.51.100.0/24"],
        (40000, 49999),
    );
    let t0 = Instant::now();
    let mut s = Server::new(shared.clone(), [11; 32], t0, UNIX);
    let mut live = Vec::new();
    for round in 0..ROUNDS {
        // Each round starts a minute after the last: every allocation and cached response
        // of the previous one is gone by then.
        let secs = 60 * round as u64;
        let now = t0 + Duration::from_secs(secs);
        for k in 0..PER_ROUND {
            one_allocation(&mut s, &shared, now, UNIX + secs, 10_000 + k);
        }
        let idle = now + Duration::from_secs(59);
        s.handle_timeout(idle);
        drain(&mut s, idle);
        assert_eq!(
            s.allocations().count(),
            0,
            "round {round}: allocations left"
        );
        live.push(LIVE.load(Ordering::Relaxed));
    }
    TRACKING.with(|t| t.set(false));
    eprintln!("live heap bytes after each round of {PER_ROUND} allocations: {live:?}");
    for (round, bytes) in live.iter().enumerate().skip(1) {
        assert!(
            *bytes <= live[0] + 1024,
            "round {round}: {bytes} live bytes, {} after the first round: {:?}",
            live[0],
            live
        );
    }
}
