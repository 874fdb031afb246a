//! Micro-benchmarks of the per-packet work: STUN parse and build, MESSAGE-INTEGRITY check,
//! and the core's relay decisions (ChannelData client → peer, peer datagram framed for the
//! client as ChannelData or as a Data indication); and of an allocation's life in the core: creation (a signed Allocate, its relay
//! opened) and expiry (the timer firing, the relay closed, the end event).
//!
//! Run: `cargo bench --bench relay_path`. These measure turnd alone; the comparison with
//! coturn lives with the load tool (issue 5).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use turnd::core::auth::{long_term_key, Credentials, UserSecret};
use turnd::core::nonce::{NonceKey, SecurityFeatures};
use turnd::core::peer_filter::PeerFilter;
use turnd::core::ports::PortPool;
use turnd::core::{
    CoreConfig, FiveTuple, Output, RelayAddr, Server, Shared, PEER_HEADROOM, PEER_TAILROOM,
};
use turnd::stun::{AttrType, Class, Message, MessageBuilder, MessageType, Method, TransactionId};

const REALM: &str = "bench";

fn shared() -> Arc<Shared> {
    let relay = "192.0.2.10".parse().unwrap();
    Arc::new(Shared {
        config: CoreConfig {
            relays: vec![RelayAddr {
                bind: relay,
                advertised: relay,
            }],
            ..Default::default()
        },
        credentials: Credentials::new(
            REALM,
            [("u".to_string(), UserSecret::Password("p".into()))],
            [],
        )
        .into(),
        nonce_key: NonceKey::new([7; 32]),
        peer_filter: PeerFilter::new(vec!["198.51.100.0/24".parse().unwrap()], vec![]).into(),
        ports: Mutex::new(PortPool::new(&[relay], 50000, 60000)),
        reservations: Default::default(),
        tcp_connections: Default::default(),
        quotas: Default::default(),
    })
}

/// Builds a signed request with whatever attributes `f` adds.
fn request(method: Method, nonce: &[u8], txid: u8, f: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
    let key = long_term_key("u", REALM, "p");
    let mut buf = [0u8; 512];
    let mut b = MessageBuilder::new(
        &mut buf,
        MessageType::new(method, Class::Request),
        TransactionId([txid; 12]),
    )
    .unwrap();
    f(&mut b);
    b.add(AttrType::USERNAME, b"u").unwrap();
    b.add(AttrType::REALM, REALM.as_bytes()).unwrap();
    b.add(AttrType::NONCE, nonce).unwrap();
    b.add_message_integrity(&key).unwrap();
    let n = b.finish();
    buf[..n].to_vec()
}

/// A server with one allocation, a permission and channel 0x4000 bound to the peer.
fn bound_server(client: FiveTuple, peer: SocketAddr) -> (Server, Instant) {
    let now = Instant::now();
    let mut s = Server::new(shared(), [1; 32], now, 1_700_000_000);
    let mut nonce = [0u8; turnd::core::nonce::NONCE_LEN];
    let nonce = s
        .shared()
        .nonce_key
        .issue(
            SecurityFeatures::default(),
            1_700_000_000,
            client.client,
            &mut nonce,
        )
        .as_bytes()
        .to_vec();
    let alloc = request(Method::ALLOCATE, &nonce, 1, |b| {
        b.add_u32(AttrType::REQUESTED_TRANSPORT, 17 << 24).unwrap()
    });
    s.handle_client_datagram(now, client, &alloc);
    while let Some(o) = s.poll_output() {
        if let Output::OpenRelay { id, .. } = o {
            s.handle_relay_opened(now, id, Ok(()));
        }
    }
    let bind = request(Method::CHANNEL_BIND, &nonce, 2, |b| {
        b.add_u32(AttrType::CHANNEL_NUMBER, 0x4000 << 16).unwrap();
        b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &peer)
            .unwrap();
    });
    s.handle_client_datagram(now, client, &bind);
    while s.poll_output().is_some() {}
    // A second peer with a permission and no channel: its datagrams reach the client as Data
    // indications.
    let permit = request(Method::CREATE_PERMISSION, &nonce, 3, |b| {
        b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &data_peer())
            .unwrap();
    });
    s.handle_client_datagram(now, client, &permit);
    while s.poll_output().is_some() {}
    (s, now + Duration::from_secs(1))
}

/// The peer [`bound_server`] permits without a channel.
fn data_peer() -> SocketAddr {
    "198.51.100.8:5000".parse().unwrap()
}

fn benches(c: &mut Criterion) {
    let client = FiveTuple::udp(
        "203.0.113.5:40000".parse().unwrap(),
        "192.0.2.1:3478".parse().unwrap(),
    );
    let peer: SocketAddr = "198.51.100.7:5000".parse().unwrap();
    let signed = request(
        Method::REFRESH,
        b"0123456789abcdef0123456789abcdef01234567",
        3,
        |_| {},
    );
    let key = long_term_key("u", REALM, "p");

    c.bench_function("stun_parse_signed_request", |b| {
        b.iter(|| Message::parse(black_box(&signed)).unwrap().method())
    });
    c.bench_function("stun_verify_integrity", |b| {
        let m = Message::parse(&signed).unwrap();
        b.iter(|| m.verify_integrity(black_box(&key)))
    });
    // The answer to an Allocate: what every set-up builds once.
    c.bench_function("stun_build_signed_allocate_response", |b| {
        let mut out = [0u8; 256];
        let relayed: SocketAddr = "192.0.2.10:50000".parse().unwrap();
        b.iter(|| {
            let mut m = MessageBuilder::new(
                &mut out,
                MessageType::new(Method::ALLOCATE, Class::SuccessResponse),
                TransactionId([7; 12]),
            )
            .unwrap();
            m.add_xor_address(AttrType::XOR_RELAYED_ADDRESS, black_box(&relayed))
                .unwrap();
            m.add_xor_address(AttrType::XOR_MAPPED_ADDRESS, black_box(&client.client))
                .unwrap();
            m.add_u32(AttrType::LIFETIME, 600).unwrap();
            m.add_message_integrity(&key).unwrap();
            m.add_fingerprint().unwrap();
            m.finish()
        })
    });

    let (mut server, now) = bound_server(client, peer);
    let mut cd = vec![0x40, 0x00, 0x00, 0xA0];
    cd.extend_from_slice(&[0xAB; 160]);
    c.bench_function("core_channel_data_to_peer", |b| {
        b.iter(|| {
            server
                .handle_client_datagram(now, client, black_box(&cd))
                .unwrap()
        })
    });
    let id = server.allocations().next().unwrap().id;
    let mut buf = vec![0u8; PEER_HEADROOM + 160 + PEER_TAILROOM];
    c.bench_function("core_peer_datagram_to_channel_data", |b| {
        b.iter(|| {
            server
                .handle_peer_datagram(
                    now,
                    id,
                    peer,
                    black_box(&mut buf),
                    PEER_HEADROOM..PEER_HEADROOM + 160,
                )
                .unwrap()
        })
    });
    // The same without a channel: a Data indication, framed in place, with a fresh
    // transaction id per datagram.
    c.bench_function("core_peer_datagram_to_data_indication", |b| {
        b.iter(|| {
            server
                .handle_peer_datagram(
                    now,
                    id,
                    data_peer(),
                    black_box(&mut buf),
                    PEER_HEADROOM..PEER_HEADROOM + 160,
                )
                .unwrap()
        })
    });
}

/// Signed Allocate requests from `n` distinct clients (ports from 10,000), each with a nonce
/// issued for its own address.
fn allocate_requests(s: &Server, n: usize) -> Vec<(FiveTuple, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let client = FiveTuple::udp(
                SocketAddr::new("203.0.113.5".parse().unwrap(), 10_000 + i as u16),
                "192.0.2.1:3478".parse().unwrap(),
            );
            let mut nonce = [0u8; turnd::core::nonce::NONCE_LEN];
            let nonce = s
                .shared()
                .nonce_key
                .issue(
                    SecurityFeatures::default(),
                    1_700_000_000,
                    client.client,
                    &mut nonce,
                )
                .as_bytes()
                .to_vec();
            let req = request(Method::ALLOCATE, &nonce, 1, |b| {
                b.add_u32(AttrType::REQUESTED_TRANSPORT, 17 << 24).unwrap()
            });
            (client, req)
        })
        .collect()
}

/// Creates an allocation for every request, as the shell would: the Allocate, then the relay
/// socket reported open, then the success response and event polled.
fn create_all(s: &mut Server, now: Instant, reqs: &[(FiveTuple, Vec<u8>)]) {
    for (client, req) in reqs {
        s.handle_client_datagram(now, *client, req);
        while let Some(o) = s.poll_output() {
            if let Output::OpenRelay { id, .. } = o {
                s.handle_relay_opened(now, id, Ok(()));
            }
        }
    }
}

/// Allocations per timed chunk: well inside the port pool (10,000 ports).
const CHUNK: u64 = 2_000;

fn allocation_benches(c: &mut Criterion) {
    c.bench_function("core_allocation_create", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                left -= n;
                let now = Instant::now();
                let mut s = Server::new(shared(), [1; 32], now, 1_700_000_000);
                let reqs = allocate_requests(&s, n as usize);
                let t = Instant::now();
                create_all(&mut s, now, black_box(&reqs));
                total += t.elapsed();
            }
            total
        })
    });
    c.bench_function("core_allocation_expire", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                left -= n;
                let now = Instant::now();
                let mut s = Server::new(shared(), [1; 32], now, 1_700_000_000);
                let reqs = allocate_requests(&s, n as usize);
                create_all(&mut s, now, &reqs);
                // Past the default lifetime (600 s): every allocation expires at once.
                let later = now + Duration::from_secs(601);
                let t = Instant::now();
                s.handle_timeout(later);
                let mut ended = 0u64;
                while let Some(o) = s.poll_output() {
                    ended += matches!(o, Output::CloseRelay { .. }) as u64;
                }
                total += t.elapsed();
                assert_eq!(ended, n, "every allocation expired");
            }
            total
        })
    });
}

criterion_group!(relay, benches, allocation_benches);
criterion_main!(relay);
