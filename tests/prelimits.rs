//! Pre-authentication limits on the real binary: a flood of unauthenticated Allocates from
//! many source ports on loopback (all one source address, as a spoofed flood aimed at one
//! victim looks) leaves turnd's memory flat, is answered at the configured per-source rate
//! only, and — with `amplification = refuse` — never gets more bytes back than it sent; the
//! Binding rate limit likewise. Counts come from the datagrams received and from the server's
//! own counters (`turnd_requests_total`, `turnd_datagrams_dropped_total`): the floods never run
//! more than a few dozen requests ahead of the server, so the kernel drops none and every
//! request sent is accounted for. The only time used is the interval from the first send to
//! the last answer read, which encloses everything the server answered: a slow machine only
//! loosens the rate bound it gives.
//! Also the per-allocation limits on the wire: `max_permissions` and `max_channels` (508).

mod common;
mod raw;

use common::readings::{metrics_text, rss_kib, sample};
use common::TurnServer;
use std::net::{SocketAddr, UdpSocket};
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

/// The count `series` (name and labels, as printed) in `text`; 0 when the series has not
/// appeared yet (a method/result pair is printed once it has happened).
fn count(text: &str, series: &str) -> u64 {
    sample(text, series).map_or(0, |v| v as u64)
}

/// Requests the server has dealt with so far: answered with `result` to `method`, or dropped
/// unanswered (over the rate, or refused for amplification).
#[derive(Debug, Clone, Copy)]
struct Handled {
    answered: u64,
    rate_limited: u64,
    amplification: u64,
}

impl Handled {
    fn of(addr: SocketAddr, method: &str, result: &str) -> Handled {
        let text = metrics_text(addr);
        Handled {
            answered: count(
                &text,
                &format!("turnd_requests_total{{method=\"{method}\",result=\"{result}\"}}"),
            ),
            rate_limited: count(
                &text,
                "turnd_datagrams_dropped_total{reason=\"rate_limited\"}",
            ),
            amplification: count(
                &text,
                "turnd_datagrams_dropped_total{reason=\"amplification\"}",
            ),
        }
    }

    fn total(&self) -> u64 {
        self.answered + self.rate_limited + self.amplification
    }

    fn since(&self, before: Handled) -> Handled {
        Handled {
            answered: self.answered - before.answered,
            rate_limited: self.rate_limited - before.rate_limited,
            amplification: self.amplification - before.amplification,
        }
    }
}

/// Most requests sent and not yet dealt with by the server before a flood waits for it: far
/// below what a default 208 KB socket buffer holds, so the kernel drops none and the server's
/// counts add up to what was sent, however slow the machine.
const AHEAD: u64 = 100;

/// Waits (bounded: 10 s) until the server has dealt with `n` requests since `base`.
fn wait_handled(addr: SocketAddr, method: &str, result: &str, base: u64, n: u64) -> Handled {
    let deadline = Instant::now() + Duration::from_secs(10);
    // Bounded: one scrape per 5 ms until the deadline.
    loop {
        let h = Handled::of(addr, method, result);
        if h.total() - base >= n {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "the server dealt with {} of {n} requests in 10 s: {h:?}",
            h.total() - base
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a flood received back: datagrams and bytes.
struct Answers {
    datagrams: u64,
    bytes: u64,
}

/// What a flood got: bytes sent, the answers received, what the server did with the
/// requests (from its counters), and the seconds from the first send to the end of the
/// collection (every answer counted was sent by the server within them).
struct Flood {
    sent: u64,
    answers: Answers,
    handled: Handled,
    secs: f64,
}

/// Sends `FLOOD` unauthenticated Allocates made by `make` from `SOCKETS` ports, round robin,
/// never more than [`AHEAD`] ahead of the server, then collects every answer.
fn flood(server: SocketAddr, metrics: SocketAddr, make: impl Fn(u32) -> Vec<u8>) -> Flood {
    let before = Handled::of(metrics, "allocate", "401");
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
            // Flow control, not a measurement: a stalled server is waited for.
            let n = (i + 1) as u64;
            wait_handled(
                metrics,
                "allocate",
                "401",
                before.total(),
                n.saturating_sub(AHEAD),
            );
        }
    }
    let handled =
        wait_handled(metrics, "allocate", "401", before.total(), FLOOD as u64).since(before);
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
    Flood {
        sent,
        answers,
        handled,
        secs: start.elapsed().as_secs_f64(),
    }
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
    let metrics = s.metrics_addr();
    // Warm up (lazy allocations on the request path), then measure.
    let _ = flood(s.addr(), metrics, |n| allocate(n, 0));
    let before = rss_kib(s.pid());
    let f = flood(s.addr(), metrics, |n| allocate(1_000_000 + n, 0));
    let after = rss_kib(s.pid());
    let (answers, h) = (&f.answers, f.handled);
    eprintln!(
        "flood: {FLOOD} Allocates ({} bytes) in {:.2} s from {SOCKETS} ports; {} answers ({} \
         bytes); server: {h:?}; RSS {before} → {after} KiB",
        f.sent, f.secs, answers.datagrams, answers.bytes
    );
    // Every request reached turnd (the flood never ran ahead of it) and was answered or
    // counted as rate-limited; the client got every answer.
    assert_eq!(h.answered + h.rate_limited, FLOOD as u64, "{h:?}");
    assert_eq!(h.amplification, 0, "{h:?}");
    assert_eq!(answers.datagrams, h.answered, "{h:?}");
    assert!(
        answers.datagrams <= allowed(20, 40, f.secs),
        "{} answers to a flood from one address in {:.2} s",
        answers.datagrams,
        f.secs
    );
    assert!(answers.datagrams > 0, "not even the burst was answered");
    // With the default `amplification = "allow"`, a single 401 is larger than the 28-byte
    // Allocate it answers, but the rate limit keeps the flood as a whole from amplifying.
    assert!(
        answers.bytes <= f.sent,
        "{} bytes out > {} in over the flood",
        answers.bytes,
        f.sent
    );
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
    let metrics = s.metrics_addr();
    // Half bare (28 bytes: the 401 would be larger, so nothing is sent), half padded past
    // the 401's size (answered, within the rate).
    let f = flood(s.addr(), metrics, |n| {
        allocate(n, if n % 2 == 0 { 0 } else { 120 })
    });
    let (answers, h) = (&f.answers, f.handled);
    eprintln!(
        "refuse: {} bytes in, {} answers ({} bytes) out in {:.2} s; server: {h:?}",
        f.sent, answers.datagrams, answers.bytes, f.secs
    );
    assert!(
        answers.bytes <= f.sent,
        "{} bytes out > {} in",
        answers.bytes,
        f.sent
    );
    // Every bare request is refused for amplification; the padded half is answered within
    // the rate, the rest rate-limited.
    assert_eq!(h.amplification, FLOOD as u64 / 2, "{h:?}");
    assert_eq!(h.answered + h.rate_limited, FLOOD as u64 / 2, "{h:?}");
    assert_eq!(answers.datagrams, h.answered, "{h:?}");
    assert!(answers.datagrams > 0 && answers.datagrams <= allowed(20, 40, f.secs));
}

#[test]
fn binding_is_rate_limited_per_source() {
    let s = TurnServer::spawn_turnd(&["--binding-rate", "5/10"]);
    let metrics = s.metrics_addr();
    // One 5-tuple: one worker, one bucket.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    const N: u64 = 300;
    let start = Instant::now();
    for n in 0..N {
        sock.send_to(&binding(n as u32), s.addr()).unwrap();
        if n % 50 == 49 {
            // Flow control, not a measurement: never more than 50 ahead of the server.
            wait_handled(metrics, "binding", "success", 0, n + 1 - 50);
        }
    }
    let h = wait_handled(metrics, "binding", "success", 0, N);
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
    eprintln!("binding: {N} sent, {answered} answered in {secs:.3} s; server: {h:?}");
    // Every request reached turnd and was answered or counted as rate-limited.
    assert_eq!(h.answered + h.rate_limited, N, "{h:?}");
    assert_eq!(answered, h.answered, "{h:?}");
    assert!(
        answered >= 10,
        "the burst of 10 was not answered: {answered}"
    );
    // One 5-tuple is one worker's bucket: its burst plus its rate over the interval.
    assert!(answered <= 10 + (5.0 * secs).ceil() as u64);
}

#[test]
fn permissions_and_channels_per_allocation_are_limited_with_508() {
    use raw::*;
    let s = TestServer::start(turnd::config::ConfigArgs {
        // 127.0.0.1 is the relay's own address: only an exact entry opens it.
        allow_peer: vec!["127.0.0.0/8".into(), "127.0.0.1".into()],
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
    let text = metrics_text(s.metrics_addr());
    assert_eq!(
        count(
            &text,
            "turnd_datagrams_dropped_total{reason=\"permission_quota\"}"
        ),
        2
    );
    assert_eq!(
        count(
            &text,
            "turnd_datagrams_dropped_total{reason=\"channel_quota\"}"
        ),
        1
    );
    assert_eq!(
        count(
            &text,
            "turnd_requests_total{method=\"create_permission\",result=\"508\"}"
        ),
        2
    );
}
