//! The relay path allocates nothing: a counting global allocator watches the core relay
//! thousands of ChannelData messages and Send/Data indications in both directions.
//!
//! The first test is the sans-IO half of the proof (the core's decisions and in-place
//! framing); the second is the shell's half: the batched receive (`recvmmsg` into the
//! worker's ring) and send (`sendmmsg`, with GSO) over real loopback sockets.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use turnd::core::nonce::{SecurityFeatures, NONCE_LEN};
use turnd::core::{CoreConfig, FiveTuple, Output, RelayAddr, Server, PEER_HEADROOM, PEER_TAILROOM};
mod core_fixture;

use core_fixture::{request, shared, UNIX};
use turnd::stun::{AttrType, Class, MessageBuilder, MessageType, Method, TransactionId};

/// Counts allocations made by the test's thread while its `COUNTING` flag is set. The flag is
/// per thread: libtest's main thread allocates now and then while it waits for the test (under
/// CPU load it did so inside the counted loop, failing the test for allocations that were not
/// the relay path's).
struct Counting;

thread_local! {
    // `const` and without a destructor: reading it never allocates.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn send_indication(peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let ty = MessageType::new(Method::SEND, Class::Indication);
    let mut b = MessageBuilder::new(&mut buf, ty, TransactionId([9; 12])).unwrap();
    b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &peer)
        .unwrap();
    b.add(AttrType::DATA, payload).unwrap();
    let n = b.finish();
    buf.truncate(n);
    buf
}

#[test]
fn relay_path_allocates_nothing() {
    let relay = "192.0.2.10".parse().unwrap();
    let shared = shared(
        CoreConfig {
            relays: vec![RelayAddr {
                bind: relay,
                advertised: relay,
            }],
            // Both bandwidth caps on (high enough never to drop): their buckets sit on the
            // relay path, and must not allocate either.
            allocation_bandwidth: 10_000_000_000,
            user_bandwidth: 10_000_000_000,
            ..Default::default()
        },
        &["198.51.100.0/24"],
        (50000, 50100),
    );
    let t0 = Instant::now();
    let mut s = Server::new(shared.clone(), [7; 32], t0, UNIX);
    let client = FiveTuple::udp(
        "203.0.113.5:40000".parse().unwrap(),
        "192.0.2.1:3478".parse().unwrap(),
    );
    let chan_peer: SocketAddr = "198.51.100.7:5000".parse().unwrap();
    let ind_peer: SocketAddr = "198.51.100.8:6000".parse().unwrap();

    // Control path (allocates freely): allocation, a channel to one peer, a permission for another.
    let mut nonce = [0u8; NONCE_LEN];
    let nonce = shared
        .nonce_key
        .issue(SecurityFeatures::default(), UNIX, client.client, &mut nonce)
        .as_bytes()
        .to_vec();
    let alloc = request(Method::ALLOCATE, &nonce, 1, |b| {
        b.add_u32(AttrType::REQUESTED_TRANSPORT, 17 << 24).unwrap()
    });
    s.handle_client_datagram(t0, client, &alloc);
    while let Some(o) = s.poll_output() {
        if let Output::OpenRelay { id, .. } = o {
            s.handle_relay_opened(t0, id, Ok(()));
        }
    }
    let bind = request(Method::CHANNEL_BIND, &nonce, 2, |b| {
        b.add_u32(AttrType::CHANNEL_NUMBER, 0x4000 << 16).unwrap();
        b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &chan_peer)
            .unwrap();
    });
    s.handle_client_datagram(t0, client, &bind);
    let perm = request(Method::CREATE_PERMISSION, &nonce, 3, |b| {
        b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &ind_peer)
            .unwrap();
    });
    s.handle_client_datagram(t0, client, &perm);
    while s.poll_output().is_some() {}
    let id = s.allocations().next().expect("allocated").id;

    // Inputs prepared before counting starts.
    let payload = [0x5Au8; 160];
    let mut channel_data = vec![0x40, 0x00, 0x00, payload.len() as u8];
    channel_data.extend_from_slice(&payload);
    let send = send_indication(ind_peer, &payload);
    let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
    let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
    let now = t0 + Duration::from_secs(1);

    const ROUNDS: usize = 5_000;
    let mut relayed = 0usize;
    COUNTING.with(|c| c.set(true));
    for _ in 0..ROUNDS {
        relayed += s
            .handle_client_datagram(now, client, &channel_data)
            .is_some() as usize;
        relayed += s.handle_client_datagram(now, client, &send).is_some() as usize;
        buf[range.clone()].copy_from_slice(&payload);
        relayed += s
            .handle_peer_datagram(now, id, chan_peer, &mut buf, range.clone())
            .is_some() as usize;
        buf[range.clone()].copy_from_slice(&payload);
        relayed += s
            .handle_peer_datagram(now, id, ind_peer, &mut buf, range.clone())
            .is_some() as usize;
    }
    COUNTING.with(|c| c.set(false));

    assert_eq!(relayed, 4 * ROUNDS, "every datagram was relayed");
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "heap allocations on the relay path"
    );
    assert!(s.poll_output().is_none(), "the relay path queues no output");
}

/// The same for a dual allocation (ADDITIONAL-ADDRESS-FAMILY): ChannelData, Send indications
/// and peer datagrams for an IPv4 and an IPv6 peer, each family checked against its own
/// lifetime on the way.
#[test]
fn dual_allocation_relay_path_allocates_nothing() {
    let v4 = "192.0.2.10".parse().unwrap();
    let v6 = "2001:db8::10".parse().unwrap();
    let shared = shared(
        CoreConfig {
            relays: vec![
                RelayAddr {
                    bind: v4,
                    advertised: v4,
                },
                RelayAddr {
                    bind: v6,
                    advertised: v6,
                },
            ],
            ..Default::default()
        },
        &["198.51.100.0/24", "2001:db8:1::/48"],
        (50000, 50100),
    );
    let t0 = Instant::now();
    let mut s = Server::new(shared.clone(), [7; 32], t0, UNIX);
    let client = FiveTuple::udp(
        "203.0.113.5:40000".parse().unwrap(),
        "192.0.2.1:3478".parse().unwrap(),
    );
    let peers: [SocketAddr; 2] = [
        "198.51.100.7:5000".parse().unwrap(),
        "[2001:db8:1::7]:5000".parse().unwrap(),
    ];
    let mut nonce = [0u8; NONCE_LEN];
    let nonce = shared
        .nonce_key
        .issue(SecurityFeatures::default(), UNIX, client.client, &mut nonce)
        .as_bytes()
        .to_vec();
    let alloc = request(Method::ALLOCATE, &nonce, 1, |b| {
        b.add_u32(AttrType::REQUESTED_TRANSPORT, 17 << 24).unwrap();
        b.add(AttrType::ADDITIONAL_ADDRESS_FAMILY, &[2, 0, 0, 0])
            .unwrap();
    });
    s.handle_client_datagram(t0, client, &alloc);
    let mut opened = 0;
    while let Some(o) = s.poll_output() {
        if let Output::OpenRelay { id, .. } = o {
            opened += 1;
            s.handle_relay_opened(t0, id, Ok(()));
        }
    }
    assert_eq!(opened, 2, "one relay socket per family");
    for (i, peer) in peers.iter().enumerate() {
        let bind = request(Method::CHANNEL_BIND, &nonce, 2 + i as u8, |b| {
            b.add_u32(AttrType::CHANNEL_NUMBER, (0x4000 + i as u32) << 16)
                .unwrap();
            b.add_xor_address(AttrType::XOR_PEER_ADDRESS, peer).unwrap();
        });
        s.handle_client_datagram(t0, client, &bind);
    }
    while s.poll_output().is_some() {}
    let id = s.allocations().next().expect("allocated").id;
    assert!(
        s.allocation(id).unwrap().dual.is_some(),
        "a dual allocation"
    );

    let payload = [0x5Au8; 160];
    let channel_data: Vec<Vec<u8>> = (0..2u8)
        .map(|i| {
            let mut m = vec![0x40, i, 0x00, payload.len() as u8];
            m.extend_from_slice(&payload);
            m
        })
        .collect();
    let sends: Vec<Vec<u8>> = peers
        .iter()
        .map(|p| send_indication(*p, &payload))
        .collect();
    let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
    let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
    let now = t0 + Duration::from_secs(1);

    const ROUNDS: usize = 2_500;
    let mut relayed = 0usize;
    COUNTING.with(|c| c.set(true));
    for _ in 0..ROUNDS {
        for i in 0..2 {
            relayed += s
                .handle_client_datagram(now, client, &channel_data[i])
                .is_some() as usize;
            relayed += s.handle_client_datagram(now, client, &sends[i]).is_some() as usize;
            buf[range.clone()].copy_from_slice(&payload);
            relayed += s
                .handle_peer_datagram(now, id, peers[i], &mut buf, range.clone())
                .is_some() as usize;
        }
    }
    COUNTING.with(|c| c.set(false));

    assert_eq!(relayed, 6 * ROUNDS, "every datagram was relayed");
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "heap allocations on the relay path"
    );
    assert!(s.poll_output().is_none(), "the relay path queues no output");
}

#[test]
fn batched_socket_path_allocates_nothing() {
    use turnd::shell::udp::{gso_supported, RecvBatch, SendBatch, RING};
    let bind = || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        s
    };
    let (client, listener, sink) = (bind(), bind(), bind());
    let to = sink.local_addr().unwrap();
    // Made before counting, as the worker makes them once at start-up.
    let mut ring = RecvBatch::new();
    let mut tx = SendBatch::new(gso_supported());
    let datagram = [0xA5u8; 160];
    let mut drain = [0u8; 2048];

    const ROUNDS: usize = 50;
    let mut relayed = 0usize;
    for _ in 0..ROUNDS {
        for _ in 0..RING / 2 {
            client
                .send_to(&datagram, listener.local_addr().unwrap())
                .unwrap();
        }
        COUNTING.with(|c| c.set(true));
        // Bounded: the datagrams were sent before; loopback delivers them at once.
        for _ in 0..1000 {
            if let Ok(n) = ring.recv(listener.as_raw_fd()) {
                for i in 0..n {
                    let (_, _, payload) = ring.get_mut(i).expect("held");
                    assert!(tx.push(listener.as_raw_fd(), to, i, payload));
                }
                relayed += n;
                assert_eq!(tx.flush(&ring), 0, "nothing refused");
                if ring.len() < RING {
                    break;
                }
            }
        }
        COUNTING.with(|c| c.set(false));
        while sink.recv_from(&mut drain).is_ok() {}
    }

    assert_eq!(
        relayed,
        ROUNDS * RING / 2,
        "every datagram went through the batch"
    );
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "heap allocations on the batched socket path"
    );
}
