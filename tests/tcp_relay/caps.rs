//! `allocation_bandwidth` and `user_bandwidth` on spliced TCP relay data, and the spliced
//! bytes in the admin API's per-allocation statistics.
//!
//! A sender (the peer, or the client's data connection) writes a fixed number of bytes — a
//! pattern that depends on each byte's position — as fast as the splice takes them, far more
//! than the cap lets through at once. Everything is checked by counting:
//!
//! - nothing is lost: the receiver gets every byte sent, each the one the pattern says (TCP
//!   relay data is paced by back-pressure, never dropped), and no bandwidth drop is counted;
//! - the bytes stay within the token bucket's budget: burst + cap × the time from before the
//!   allocation to the last byte's arrival, an interval that encloses all of the server's
//!   relaying, so a slow machine only loosens the bound, and the cap shows as
//!   `turnd_tcp_relay_throttled_total`.
//!
//! The exact pacing (how long a paced sender waits, the half-burst, the shares of paced and
//! dropped traffic) is checked against the core's fake clock in
//! `src/core/tests/tcp_relay_caps.rs`.

use super::*;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Bytes per second.
const CAP: u64 = 200_000;
/// The bucket's size: a tenth of a second of the cap, but at least 65,536 bytes
/// (`src/core/bandwidth.rs`).
const BURST: u64 = 65_536;
/// Bytes one transfer sends: three times what the cap lets through in a second, so the
/// bucket's budget needs more than 2.6 s for them where an unpaced splice takes milliseconds.
const TRANSFER: usize = 3 * CAP as usize;

fn capped_server(flag: &str) -> TestServer {
    let cap = Some(CAP.to_string());
    let mut args = ConfigArgs {
        // The peers listen on 127.0.0.1, the relay's own address: named exactly.
        allow_peer: vec!["127.0.0.0/8".into(), "127.0.0.1".into()],
        workers: Some("2".into()),
        ..base_args()
    };
    match flag {
        "allocation" => args.allocation_bandwidth = cap,
        "user" => args.user_bandwidth = cap,
        _ => unreachable!("a test passes allocation or user"),
    }
    TestServer::start(args)
}

/// A spliced pair: the client's data connection and the peer's end, on a new TCP allocation
/// of alice (the control connection is returned too: dropping it ends the allocation).
fn spliced(server: &TestServer) -> (StreamClient, TcpStream, TcpStream) {
    let mut control = StreamClient::connect(server.tcp_addr);
    control.allocate_tcp();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer_addr = listener.local_addr().unwrap();
    control.permit(peer_addr);
    let cid = control.connect_peer(peer_addr);
    // The server connected before it answered the Connect: the connection is queued.
    let (peer, _) = listener.accept().expect("the relay connected to the peer");
    let data = StreamClient::connect(server.tcp_addr).bind(cid);
    (control, data, peer)
}

/// Byte `i` of transfer `seed`: position-dependent (251 is prime, so no chunk size lines up
/// with it), so a lost, repeated or reordered chunk shows.
fn pattern(seed: u8, i: usize) -> u8 {
    (i % 251) as u8 ^ seed
}

/// Writes [`TRANSFER`] pattern bytes to `stream` from a thread, as fast as it takes them
/// (blocking writes: the splice's back-pressure paces them).
fn send_transfer(mut stream: TcpStream, seed: u8) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let bytes: Vec<u8> = (0..TRANSFER).map(|i| pattern(seed, i)).collect();
        stream
            .set_write_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        stream
            .write_all(&bytes)
            .expect("the splice took every byte");
    })
}

/// Reads [`TRANSFER`] bytes from `stream` and checks each against the pattern. Bounded: every
/// read waits at most [`WAIT`], and 60 s in all. Returns when the last byte arrived.
fn receive_transfer(mut stream: &TcpStream, seed: u8, what: &str) -> Instant {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 65536];
    let mut got = 0usize;
    // Bounded: by the deadline, by WAIT of silence, and by TRANSFER bytes.
    while got < TRANSFER {
        assert!(
            Instant::now() < deadline,
            "{what}: {got} of {TRANSFER} bytes after 60 s"
        );
        let n = match stream.read(&mut buf[..(TRANSFER - got).min(65536)]) {
            Ok(0) => panic!("{what}: closed after {got} of {TRANSFER} bytes"),
            Ok(n) => n,
            Err(e) => panic!("{what}: {e} after {got} of {TRANSFER} bytes"),
        };
        if let Some(k) = (0..n).find(|&k| buf[k] != pattern(seed, got + k)) {
            panic!("{what}: byte {} differs from what was sent", got + k);
        }
        got += n;
    }
    Instant::now()
}

/// `bytes` passed between `start` and `end` within the bucket's budget.
#[track_caller]
fn assert_within_budget(what: &str, bytes: u64, start: Instant, end: Instant) {
    let secs = end.duration_since(start).as_secs_f64();
    let budget = BURST + (CAP as f64 * secs).ceil() as u64;
    eprintln!("{what}: {bytes} bytes in {secs:.2} s; budget {budget} bytes");
    assert!(
        bytes <= budget,
        "{what}: {bytes} bytes passed, over the budget of {budget} (burst {BURST} + {CAP} B/s × \
         {secs:.2} s)"
    );
}

/// The value of `series` in `/metrics`, which must be there.
fn metric(addr: SocketAddr, series: &str) -> f64 {
    let text = metrics_text(addr);
    sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Each direction on an allocation of its own (the first one's buffered bytes would otherwise
/// still be charged to the second transfer): every byte arrives, in order, within the budget,
/// throttling is counted and nothing is dropped.
#[test]
fn allocation_cap_paces_each_direction_within_the_budget_and_loses_nothing() {
    let server = capped_server("allocation");
    let start = Instant::now();
    let (_control, data, peer) = spliced(&server);
    let writer = send_transfer(peer, 1);
    let end = receive_transfer(&data, 1, "peer to client");
    writer.join().unwrap();
    assert_within_budget(
        "allocation_bandwidth, peer to client",
        TRANSFER as u64,
        start,
        end,
    );

    let start = Instant::now();
    let (_control2, data2, peer2) = spliced(&server);
    let writer = send_transfer(data2, 2);
    let end = receive_transfer(&peer2, 2, "client to peer");
    writer.join().unwrap();
    assert_within_budget(
        "allocation_bandwidth, client to peer",
        TRANSFER as u64,
        start,
        end,
    );

    let throttled = metric(server.metrics_addr(), "turnd_tcp_relay_throttled_total");
    assert!(throttled > 0.0, "no throttling counted");
    // Paced, not dropped: nothing counts as a bandwidth drop.
    let drops = metric(
        server.metrics_addr(),
        "turnd_datagrams_dropped_total{reason=\"bandwidth\"}",
    );
    assert_eq!(drops, 0.0);
}

/// Two of a user's TCP relay connections, both sending at once: each gets every byte, and
/// together they stay within one bucket's budget, which two buckets would exceed.
#[test]
fn user_cap_is_shared_by_a_users_tcp_relay_connections() {
    let server = capped_server("user");
    let start = Instant::now();
    let (_c1, data1, peer1) = spliced(&server);
    let (_c2, data2, peer2) = spliced(&server);
    let w1 = send_transfer(peer1, 3);
    let w2 = send_transfer(peer2, 4);
    // Each data connection is read on its own thread.
    let r2 = thread::spawn(move || receive_transfer(&data2, 4, "connection 2"));
    let end1 = receive_transfer(&data1, 3, "connection 1");
    let end2 = r2.join().unwrap();
    w1.join().unwrap();
    w2.join().unwrap();
    assert_within_budget(
        "user_bandwidth, two connections",
        2 * TRANSFER as u64,
        start,
        end1.max(end2),
    );
}

#[test]
fn admin_api_counts_spliced_bytes_per_allocation() {
    let server = server();
    let mut control = StreamClient::connect(server.tcp_addr);
    let relayed = control.allocate_tcp();
    let echo = EchoPeer::spawn();
    control.permit(echo.addr);
    let cid = control.connect_peer(echo.addr);
    let data = StreamClient::connect(server.tcp_addr).bind(cid);
    let sent = payload(5);
    assert!(round_trip(&data, &sent) == sent);
    // Both directions, on whichever worker the splice ran (bounded by WAIT).
    let want = [
        format!("\"client_to_peer_bytes\":{PAYLOAD},"),
        format!("\"peer_to_client_bytes\":{PAYLOAD},"),
    ];
    let deadline = Instant::now() + WAIT;
    loop {
        let body = common::http_get(server.metrics_addr(), "/allocations");
        let ours = body
            .split("{\"id\":")
            .find(|a| a.contains(&format!("\"relay\":\"{relayed}\"")))
            .unwrap_or_else(|| panic!("no allocation {relayed} in:\n{body}"));
        if want.iter().all(|w| ours.contains(w.as_str())) {
            break;
        }
        assert!(Instant::now() < deadline, "expected {want:?} in:\n{ours}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A user's UDP allocation flooding ChannelData at three times the cap while a peer sends a
/// transfer into her TCP allocation's splice: the transfer arrives whole, datagrams get
/// through too (a paced splice spends only half the burst, so it never starves them), and
/// both together stay within one budget.
#[test]
fn user_cap_is_shared_by_a_users_udp_and_tcp_relay_allocations() {
    let server = capped_server("user");
    let start = Instant::now();
    let udp_peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut u = server.client();
    u.allocate();
    u.bind_channel(0x4000, udp_peer.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let udp_counter = thread::spawn(move || {
        udp_peer
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let (mut bytes, mut last) = (0u64, None);
        let mut buf = [0u8; 2048];
        // Bounded: ends at the first 500 ms of silence (after the flood stops), and by count.
        for _ in 0..100_000 {
            match udp_peer.recv_from(&mut buf) {
                Ok((n, _)) => {
                    bytes += n as u64;
                    last = Some(Instant::now());
                }
                Err(_) => break,
            }
        }
        (bytes, last)
    });
    let udp_flood = {
        let stop = stop.clone();
        thread::spawn(move || {
            let payload = [0x5Au8; 1000];
            // 6 datagrams every 10 ms; bounded by `stop` and by count.
            for _ in 0..6_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                for _ in 0..6 {
                    u.send_channel_data(0x4000, &payload, false);
                }
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let (_control, data, peer) = spliced(&server);
    let writer = send_transfer(peer, 5);
    let tcp_end = receive_transfer(&data, 5, "tcp relay");
    writer.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    udp_flood.join().unwrap();
    let (udp_bytes, udp_end) = udp_counter.join().unwrap();
    eprintln!("tcp relay: {TRANSFER} bytes, udp: {udp_bytes} bytes");
    assert!(udp_bytes > 0, "the datagrams were starved");
    assert_within_budget(
        "user_bandwidth, udp and tcp relay",
        TRANSFER as u64 + udp_bytes,
        start,
        udp_end.map_or(tcp_end, |u| u.max(tcp_end)),
    );
}

#[test]
fn channel_bind_on_a_tcp_allocation_is_400() {
    let server = server();
    let mut control = StreamClient::connect(server.tcp_addr);
    control.allocate_tcp();
    let p: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let r = control.request(CHANNEL_BIND, &[channel_number(0x4000), peer(p)]);
    assert_error(&r, CHANNEL_BIND, 400);
}
