//! Pre-authentication limits on the real binary: a flood of unauthenticated Allocates from
//! many source ports on loopback (all one source address, as a spoofed flood aimed at one
//! victim looks) leaves turnd's memory flat, is answered at the configured per-source rate
//! only, and — with `amplification = refuse` — never gets more bytes back than it sent; the
//! Binding rate limit likewise. Counts come from the datagrams received and from
//! `turnd_datagrams_dropped_total`; nothing here asserts how long anything took.
//! Also the per-allocation limits on the wire: `max_permissions` and `max_channels` (508).

mod common;
mod raw;

use common::TurnServer;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Requests in the flood.
const FLOOD: usize = 20_000;
/// Source ports the flood comes from.
const SOCKETS: usize = 200;
/// turnd's workers in [`TurnServer::spawn_turnd`]: each has its own limiter.
const WORKERS: u64 = 2;

fn txid(n: u32) -> [u8; 12] {
    let mut t = [0x5au8; 12];
    t[8..].copy_from_slice(&n.to_be_bytes());
    t
}

/// An unauthenticated Allocate (REQUESTED-TRANSPORT UDP), with a SOFTWARE attribute of
/// `pad` bytes when non-zero (as a client that pads its first request would send).
fn allocate(n: u32, pad: usize) -> Vec<u8> {
    let mut m = vec![0x00, 0x03, 0, 0, 0x21, 0x12, 0xA4, 0x42];
    m.extend_from_slice(&txid(n));
    m.extend_from_slice(&[0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0]);
    if pad > 0 {
        m.extend_from_slice(&[0x80, 0x22]);
        m.extend_from_slice(&(pad as u16).to_be_bytes());
        m.extend(std::iter::repeat_n(b'x', pad));
        while m.len() % 4 != 0 {
            m.push(0);
        }
    }
    let body = (m.len() - 20) as u16;
    m[2..4].copy_from_slice(&body.to_be_bytes());
    m
}

fn binding(n: u32) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
    m.extend_from_slice(&txid(n));
    m
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The admin listener's address, from turnd's `turnd metrics http://ADDR` line.
fn metrics_addr(s: &TurnServer) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    // Bounded: one look per 20 ms until the deadline.
    loop {
        let out = s.output();
        if let Some(a) = out
            .lines()
            .find_map(|l| l.strip_prefix("turnd metrics http://"))
        {
            return a.trim().parse().expect("metrics address");
        }
        assert!(Instant::now() < deadline, "no metrics line:\n{out}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `turnd_datagrams_dropped_total{reason="REASON"}` from `/metrics`.
fn dropped(addr: SocketAddr, reason: &str) -> u64 {
    scrape(
        addr,
        &format!("turnd_datagrams_dropped_total{{reason=\"{reason}\"}}"),
    )
}

/// The value of the sample `series` (name and labels, as printed) from `/metrics`.
fn scrape(addr: SocketAddr, series: &str) -> u64 {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).expect("metrics body");
    let want = format!("{series} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&want))
        .unwrap_or_else(|| panic!("no {want} in /metrics"))
        .trim()
        .parse()
        .expect("a count")
}

/// What a flood received back: datagrams and bytes.
struct Answers {
    datagrams: u64,
    bytes: u64,
}

/// Sends `FLOOD` requests made by `make` from `SOCKETS` ports, round robin, then collects
/// every answer. Returns (bytes sent, answers, seconds from the first send to the end of the
/// collection: every answer counted was sent by the server within them).
fn flood(server: SocketAddr, make: impl Fn(u32) -> Vec<u8>) -> (u64, Answers, f64) {
    let socks: Vec<UdpSocket> = (0..SOCKETS)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let mut sent = 0u64;
    let mut answers = Answers {
        datagrams: 0,
        bytes: 0,
    };
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    for i in 0..FLOOD {
        let req = make(i as u32);
        let sock = &socks[i % SOCKETS];
        sock.send_to(&req, server).expect("send");
        sent += req.len() as u64;
        // Drain now and then so no socket buffer overflows (answers are few anyway).
        if i % SOCKETS == SOCKETS - 1 {
            for s in &socks {
                s.set_nonblocking(true).unwrap();
                // Bounded by the socket's queue, and by the count.
                for _ in 0..1000 {
                    match s.recv(&mut buf) {
                        Ok(n) => {
                            answers.datagrams += 1;
                            answers.bytes += n as u64;
                        }
                        Err(_) => break,
                    }
                }
            }
        }
    }
    // Late answers.
    for s in &socks {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        for _ in 0..1000 {
            match s.recv(&mut buf) {
                Ok(n) => {
                    answers.datagrams += 1;
                    answers.bytes += n as u64;
                }
                Err(_) => break,
            }
        }
    }
    (sent, answers, start.elapsed().as_secs_f64())
}

/// The most answers `rate`/`burst` per worker allow over `secs`: a bucket grants at most its
/// burst plus `rate` a second in any interval. `secs` encloses every answer counted, so a
/// slow machine only loosens this bound, never breaks it.
fn allowed(rate: u64, burst: u64, secs: f64) -> u64 {
    WORKERS * (burst + (rate as f64 * secs).ceil() as u64)
}

#[test]
fn unauthenticated_flood_is_rate_limited_and_memory_stays_flat() {
    let s = TurnServer::spawn_turnd(&["--unauthenticated-rate", "20/40"]);
    let metrics = metrics_addr(&s);
    // Warm up (lazy allocations on the request path), then measure.
    let _ = flood(s.addr(), |n| allocate(n, 0));
    let before = rss_kib(s.pid());
    let dropped_before = dropped(metrics, "rate_limited");
    let (sent, answers, secs) = flood(s.addr(), |n| allocate(1_000_000 + n, 0));
    let after = rss_kib(s.pid());
    let limited = dropped(metrics, "rate_limited") - dropped_before;
    eprintln!(
        "flood: {FLOOD} Allocates ({sent} bytes) in {secs:.2} s from {SOCKETS} ports; \
         {} answers ({} bytes); {limited} rate-limited; RSS {before} → {after} KiB",
        answers.datagrams, answers.bytes
    );
    assert!(
        answers.datagrams <= allowed(20, 40, secs),
        "{} answers to a flood from one address",
        answers.datagrams
    );
    assert!(answers.datagrams > 0, "not even the burst was answered");
    // With the default `amplification = "allow"`, a single 401 is larger than the 28-byte
    // Allocate it answers, but the rate limit keeps the flood as a whole from amplifying.
    assert!(
        answers.bytes <= sent,
        "{} bytes out > {sent} in over the flood",
        answers.bytes
    );
    // Every request that reached turnd was answered or counted as rate-limited.
    assert!(limited + answers.datagrams <= FLOOD as u64);
    assert!(limited >= FLOOD as u64 / 4, "only {limited} rate-limited");
    // No per-source state: memory stays flat (1 MiB of slack for the allocator's moods).
    assert!(
        after <= before + 1024,
        "RSS grew from {before} KiB to {after} KiB under a flood"
    );
}

#[test]
fn with_refuse_amplification_bytes_out_never_exceed_bytes_in() {
    let s = TurnServer::spawn_turnd(&[
        "--unauthenticated-rate",
        "20/40",
        "--amplification",
        "refuse",
    ]);
    let metrics = metrics_addr(&s);
    // Half bare (28 bytes: the 401 would be larger, so nothing is sent), half padded past
    // the 401's size (answered, within the rate).
    let (sent, answers, secs) = flood(s.addr(), |n| allocate(n, if n % 2 == 0 { 0 } else { 120 }));
    let refused = dropped(metrics, "amplification");
    eprintln!(
        "refuse: {sent} bytes in, {} answers ({} bytes) out in {secs:.2} s; \
         {refused} dropped for amplification",
        answers.datagrams, answers.bytes
    );
    assert!(
        answers.bytes <= sent,
        "{} bytes out > {sent} in",
        answers.bytes
    );
    assert!(answers.datagrams > 0 && answers.datagrams <= allowed(20, 40, secs));
    assert!(refused > 0, "no answer was refused for amplification");
}

#[test]
fn binding_is_rate_limited_per_source() {
    let s = TurnServer::spawn_turnd(&["--binding-rate", "5/10"]);
    let metrics = metrics_addr(&s);
    // One 5-tuple: one worker, one bucket.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    const N: u32 = 300;
    let start = Instant::now();
    for n in 0..N {
        sock.send_to(&binding(n), s.addr()).unwrap();
    }
    let mut answered = 0u64;
    let mut buf = [0u8; 256];
    for _ in 0..N {
        if sock.recv(&mut buf).is_err() {
            break;
        }
        answered += 1;
    }
    // From the first send to the last read: every answer counted was sent within it.
    let secs = start.elapsed().as_secs_f64();
    let limited = dropped(metrics, "rate_limited");
    eprintln!("binding: {N} sent in {secs:.3} s, {answered} answered, {limited} rate-limited");
    assert!(
        answered >= 10,
        "the burst of 10 was not answered: {answered}"
    );
    // One 5-tuple is one worker's bucket: its burst plus its rate over the interval.
    assert!(answered <= 10 + (5.0 * secs).ceil() as u64);
    // Every request that reached turnd (the kernel may drop some of a burst this fast) was
    // answered or counted.
    assert!(answered + limited <= u64::from(N));
    assert!(limited >= u64::from(N) / 3, "only {limited} rate-limited");
}

#[test]
fn permissions_and_channels_per_allocation_are_limited_with_508() {
    use raw::*;
    let s = TestServer::start(turnd::config::ConfigArgs {
        allow_peer: vec!["127.0.0.0/8".into()],
        max_permissions: Some("2".into()),
        max_channels: Some("1".into()),
        ..base_args()
    });
    let mut c = s.client();
    c.allocate();
    let peers: Vec<SocketAddr> = (1..=3)
        .map(|i| SocketAddr::from(([127, 0, 0, i], 4000)))
        .collect();
    // Three peers at once do not fit in two permissions: 508, all or nothing.
    let r = c.create_permission(&peers);
    assert_error(&r, CREATE_PERMISSION, 508);
    c.permit(peers[0]);
    c.permit(peers[1]);
    let r = c.create_permission(&peers[2..]);
    assert_error(&r, CREATE_PERMISSION, 508);
    // One channel: a second binding is refused, refreshing the first is not.
    c.bind_channel(0x4000, peers[0]);
    let r = c.channel_bind(0x4001, peers[1]);
    assert_error(&r, CHANNEL_BIND, 508);
    c.bind_channel(0x4000, peers[0]);
    let metrics = s.metrics_addr();
    assert_eq!(
        scrape(
            metrics,
            "turnd_datagrams_dropped_total{reason=\"permission_quota\"}"
        ),
        2
    );
    assert_eq!(
        scrape(
            metrics,
            "turnd_datagrams_dropped_total{reason=\"channel_quota\"}"
        ),
        1
    );
    assert_eq!(
        scrape(
            metrics,
            "turnd_requests_total{method=\"create_permission\",result=\"508\"}"
        ),
        2
    );
}
