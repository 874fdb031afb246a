//! `allocation_bandwidth` and `user_bandwidth` on spliced TCP relay data, and the spliced
//! bytes in the admin API's per-allocation statistics.
//!
//! A sender (the peer, or the client's data connection) writes as fast as the splice lets it
//! for a bounded time; the receiver records when each read arrived. After the first second
//! (the bucket's initial burst), the delivered rate must be within 10 % of the cap, and
//! nothing may be lost: TCP relay data is paced by back-pressure, never dropped. The rate is
//! computed from bytes and arrival times, as in `tests/bandwidth.rs`; no other time is
//! asserted.

use super::*;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Bytes per second.
const CAP: u64 = 200_000;
/// The receiver reads for this long after the first byte arrives.
const READ_FOR: Duration = Duration::from_secs(3);
/// Arrivals in the first second include the bucket's burst; the rate is measured after it.
const SKIP: Duration = Duration::from_secs(1);

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
fn spliced(server: &TestServer) -> (StunConn, TcpStream, TcpStream) {
    let mut control = StunConn::connect(server.tcp_addr);
    control.allocate_tcp();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer_addr = listener.local_addr().unwrap();
    control.permit(peer_addr);
    let cid = control.connect_peer(peer_addr);
    // The server connected before it answered the Connect: the connection is queued.
    let (peer, _) = listener.accept().expect("the relay connected to the peer");
    let data = StunConn::connect(server.tcp_addr).bind(cid);
    (control, data, peer)
}

/// Writes a pattern to `stream` as fast as it takes it until `stop` is set (bounded by a
/// write timeout and a byte count); returns the bytes written.
fn blast(mut stream: TcpStream, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        stream
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let chunk = [0x5Au8; 8192];
        let mut sent = 0u64;
        // Bounded: by `stop`, and by 20 times what the cap lets through in the window.
        while !stop.load(Ordering::Relaxed) && sent < 20 * CAP * READ_FOR.as_secs() {
            match stream.write(&chunk) {
                Ok(n) => sent += n as u64,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        sent
    })
}

/// Reads `stream` for [`READ_FOR`] after its first byte: (arrival, bytes) of every read.
fn arrivals(mut stream: &TcpStream) -> Vec<(Instant, usize)> {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let mut end = None;
    // Bounded: by READ_FOR after the first byte, by WAIT of silence, and by count.
    while out.len() < 1_000_000 {
        let now = Instant::now();
        if end.is_some_and(|e| now >= e) {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let t = Instant::now();
                end.get_or_insert(t + READ_FOR);
                out.push((t, n));
            }
        }
    }
    out
}

/// The delivered rate (bytes per second) after [`SKIP`], over the arrivals of one or more
/// receivers that started together.
fn steady_rate(all: &[Vec<(Instant, usize)>]) -> f64 {
    let first = all
        .iter()
        .filter_map(|a| a.first())
        .map(|(t, _)| *t)
        .min()
        .expect("nothing arrived");
    let from = first + SKIP;
    let steady: Vec<&(Instant, usize)> = all.iter().flatten().filter(|(t, _)| *t > from).collect();
    let last = steady
        .iter()
        .map(|(t, _)| *t)
        .max()
        .expect("arrivals after the first second");
    let bytes: usize = steady.iter().map(|(_, n)| n).sum();
    bytes as f64 / last.duration_since(from).as_secs_f64()
}

#[track_caller]
fn assert_capped(what: &str, rate: f64) {
    eprintln!(
        "{what}: cap {CAP} B/s, delivered {rate:.0} B/s ({:+.1} %)",
        (rate / CAP as f64 - 1.0) * 100.0
    );
    assert!(
        (rate - CAP as f64).abs() <= 0.1 * CAP as f64,
        "{what}: delivered {rate:.0} B/s with a cap of {CAP} B/s"
    );
}

/// Sends from `from` to `to` for the measurement window: the receiver's arrivals.
fn transfer(from: TcpStream, to: &TcpStream) -> Vec<(Instant, usize)> {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = blast(from, stop.clone());
    let got = arrivals(to);
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().unwrap();
    let received: usize = got.iter().map(|(_, n)| n).sum();
    assert!(
        sent as f64 > 1.5 * received as f64,
        "the sender could not outrun the cap: sent {sent}, received {received}"
    );
    got
}

/// The value of an unlabelled series in `/metrics`.
fn metric(addr: SocketAddr, series: &str) -> f64 {
    let text = get(addr, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("metrics listener");
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

#[test]
fn allocation_cap_paces_each_direction_within_10_percent() {
    let server = capped_server("allocation");
    // Peer to client, then client to peer, each on an allocation of its own (the first
    // one's buffered bytes would otherwise still be charged to the second transfer).
    let (_control, data, peer) = spliced(&server);
    let rate = steady_rate(&[transfer(peer.try_clone().unwrap(), &data)]);
    assert_capped("allocation_bandwidth, peer to client", rate);
    let (_control2, data2, peer2) = spliced(&server);
    let rate = steady_rate(&[transfer(data2.try_clone().unwrap(), &peer2)]);
    assert_capped("allocation_bandwidth, client to peer", rate);
    let throttled = metric(server.metrics_addr(), "turnd_tcp_relay_throttled_total ");
    assert!(throttled > 0.0, "no throttling counted");
    // Paced, not dropped: nothing counts as a bandwidth drop.
    let drops = metric(
        server.metrics_addr(),
        "turnd_datagrams_dropped_total{reason=\"bandwidth\"} ",
    );
    assert_eq!(drops, 0.0);
}

#[test]
fn user_cap_is_shared_by_a_users_tcp_relay_connections() {
    let server = capped_server("user");
    let (_c1, data1, peer1) = spliced(&server);
    let (_c2, data2, peer2) = spliced(&server);
    // Both peers send at once; each data connection is read on its own thread.
    let stop = Arc::new(AtomicBool::new(false));
    let w1 = blast(peer1, stop.clone());
    let w2 = blast(peer2, stop.clone());
    let r2 = thread::spawn(move || arrivals(&data2));
    let a1 = arrivals(&data1);
    let a2 = r2.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    w1.join().unwrap();
    w2.join().unwrap();
    let (b1, b2): (usize, usize) = (
        a1.iter().map(|(_, n)| n).sum(),
        a2.iter().map(|(_, n)| n).sum(),
    );
    eprintln!("connection 1: {b1} bytes, connection 2: {b2} bytes");
    assert!(b1 > 0 && b2 > 0, "a connection was starved");
    assert_capped("user_bandwidth, two connections", steady_rate(&[a1, a2]));
}

#[test]
fn admin_api_counts_spliced_bytes_per_allocation() {
    let server = server();
    let mut control = StunConn::connect(server.tcp_addr);
    let relayed = control.allocate_tcp();
    let echo = EchoPeer::spawn();
    control.permit(echo.addr);
    let cid = control.connect_peer(echo.addr);
    let data = StunConn::connect(server.tcp_addr).bind(cid);
    let sent = payload(5);
    assert!(round_trip(&data, &sent) == sent);
    // Both directions, on whichever worker the splice ran (bounded by WAIT).
    let want = [
        format!("\"client_to_peer_bytes\":{PAYLOAD},"),
        format!("\"peer_to_client_bytes\":{PAYLOAD},"),
    ];
    let deadline = Instant::now() + WAIT;
    loop {
        let body = get(server.metrics_addr(), "/allocations");
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

#[test]
fn user_cap_is_shared_by_a_users_udp_and_tcp_relay_allocations() {
    let server = capped_server("user");
    // Alice's UDP allocation floods ChannelData at three times the cap...
    let udp_peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut u = server.client();
    u.allocate();
    u.bind_channel(0x4000, udp_peer.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let udp_counter = {
        let stop = stop.clone();
        thread::spawn(move || {
            udp_peer
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            // Bounded: by `stop`, and by count.
            while !stop.load(Ordering::Relaxed) && got.len() < 100_000 {
                if let Ok((n, _)) = udp_peer.recv_from(&mut buf) {
                    got.push((Instant::now(), n));
                }
            }
            got
        })
    };
    let udp_flood = {
        let stop = stop.clone();
        thread::spawn(move || {
            let payload = [0x5Au8; 1000];
            // 6 datagrams every 10 ms; bounded by `stop` and by count.
            for _ in 0..2_000 {
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
    // ... while a peer blasts into her TCP allocation's splice.
    let (_control, data, peer) = spliced(&server);
    let writer = blast(peer, stop.clone());
    let tcp = arrivals(&data);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    udp_flood.join().unwrap();
    let end = tcp.last().expect("tcp arrivals").0;
    let udp: Vec<_> = udp_counter
        .join()
        .unwrap()
        .into_iter()
        .filter(|(t, _)| *t <= end)
        .collect();
    let (tb, ub): (usize, usize) = (
        tcp.iter().map(|(_, n)| n).sum(),
        udp.iter().map(|(_, n)| n).sum(),
    );
    eprintln!("tcp relay: {tb} bytes, udp: {ub} bytes");
    // Paced bytes leave datagrams half the burst, so neither starves the other.
    let total = (tb + ub) as f64;
    assert!(tb as f64 > 0.1 * total && ub as f64 > 0.1 * total);
    // Apart, each would reach the cap; together they stay under one.
    assert_capped(
        "user_bandwidth, udp and tcp relay",
        steady_rate(&[tcp, udp]),
    );
}

#[test]
fn channel_bind_on_a_tcp_allocation_is_400() {
    let server = server();
    let mut control = StunConn::connect(server.tcp_addr);
    control.allocate_tcp();
    let p: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let r = control.request(CHANNEL_BIND, &[channel_number(0x4000), peer(p)]);
    assert_error(&r, CHANNEL_BIND, 400);
}
