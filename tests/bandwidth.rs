//! `allocation_bandwidth` and `user_bandwidth` measured on the wire, against the turnd binary:
//! raw clients offer ChannelData at three times the cap for a few seconds (one allocation; or
//! several allocations of one user, spread over both workers); a peer socket counts what
//! arrives.
//! After the first second (the bucket's initial burst), the delivered rate must be within
//! 10 % of the cap, and `turnd_datagrams_dropped_total{reason="bandwidth"}` must count the
//! rest. The rate is computed from bytes and arrival times, not asserted on a clock.

mod common;
mod raw;

use common::{http_get, TurnServer, PASSWORD, USER};
use raw::Client;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Bytes per second.
const CAP: u64 = 200_000;
const PAYLOAD: usize = 1_000;
/// Offered: three times the cap, in bursts of 6 datagrams every 10 ms.
const PER_TICK: usize = 6;
const TICK: Duration = Duration::from_millis(10);
const SEND_FOR: Duration = Duration::from_secs(4);
/// Arrivals in the first second include the bucket's burst; the rate is measured after it.
const SKIP: Duration = Duration::from_secs(1);

fn metrics_addr(server: &TurnServer) -> SocketAddr {
    // turnd prints this line just after its `listening` lines. Bounded: 100 polls, 50 ms apart.
    for _ in 0..100 {
        let out = server.output();
        if let Some(line) = out
            .lines()
            .find_map(|l| l.strip_prefix("turnd metrics http://"))
        {
            return line.trim().parse().expect("metrics address");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no metrics line in:\n{}", server.output());
}

fn scrape(addr: SocketAddr) -> String {
    http_get(addr, "/metrics")
}

/// The workers holding allocations, from the admin API's ids (`WORKER-INDEX-GENERATION`).
fn workers_with_allocations(addr: SocketAddr) -> std::collections::BTreeSet<String> {
    let body = http_get(addr, "/allocations");
    body.split("\"id\":\"")
        .skip(1)
        .filter_map(|rest| rest.split('-').next().map(str::to_string))
        .collect()
}

/// Floods ChannelData from the clients in turn (each with channel 0x4000 to `peer`), three
/// times [`CAP`] in total; returns the offered and the delivered
/// rate after [`SKIP`], in bytes per second.
fn flood(clients: &[Client], peer: UdpSocket) -> (f64, f64) {
    peer.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let counter = std::thread::spawn(move || {
        let mut arrivals: Vec<(Instant, usize)> = Vec::new();
        let mut buf = [0u8; 2048];
        // Bounded: ends at the first 500 ms of silence, and by count.
        while arrivals.len() < 100_000 {
            match peer.recv_from(&mut buf) {
                Ok((n, _)) => arrivals.push((Instant::now(), n)),
                Err(_) => break,
            }
        }
        arrivals
    });
    let payload = [0x5Au8; PAYLOAD];
    let start = Instant::now();
    let mut next = start;
    let mut sent = 0u64;
    while start.elapsed() < SEND_FOR {
        for i in 0..PER_TICK {
            clients[i % clients.len()].send_channel_data(0x4000, &payload, false);
            sent += PAYLOAD as u64;
        }
        next += TICK;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let offered = sent as f64 / start.elapsed().as_secs_f64();
    let arrivals = counter.join().unwrap();
    let first = arrivals.first().expect("nothing arrived").0;
    let from = first + SKIP;
    let steady: Vec<_> = arrivals.iter().filter(|(t, _)| *t >= from).collect();
    let last = steady.last().expect("arrivals after the first second").0;
    let bytes: usize = steady.iter().map(|(_, n)| n).sum();
    (
        offered,
        bytes as f64 / last.duration_since(from).as_secs_f64(),
    )
}

fn assert_capped(what: &str, offered: f64, rate: f64, server: &TurnServer) {
    eprintln!(
        "{what}: cap {CAP} B/s, offered {offered:.0} B/s, delivered {rate:.0} B/s ({:+.1} %)",
        (rate / CAP as f64 - 1.0) * 100.0
    );
    assert!(
        offered > 1.5 * CAP as f64,
        "the sender could not outrun the cap"
    );
    assert!(
        (rate - CAP as f64).abs() <= 0.1 * CAP as f64,
        "delivered {rate:.0} B/s with a cap of {CAP} B/s"
    );
    let text = scrape(metrics_addr(server));
    let drops: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("turnd_datagrams_dropped_total{reason=\"bandwidth\"} "))
        .unwrap_or_else(|| panic!("no bandwidth drop series in:\n{text}"))
        .trim()
        .parse()
        .unwrap();
    assert!(drops > 0.0, "no drop counted");
}

#[test]
fn allocation_cap_holds_within_10_percent() {
    let cap = CAP.to_string();
    let server = TurnServer::spawn_turnd(&["--allocation-bandwidth", &cap]);
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut c = Client::new(server.addr()).with_user(USER, PASSWORD);
    c.allocate();
    c.bind_channel(0x4000, peer.local_addr().unwrap());
    let (offered, rate) = flood(&[c], peer);
    assert_capped("allocation_bandwidth", offered, rate, &server);
}

#[test]
fn user_cap_holds_across_allocations_and_workers() {
    let cap = CAP.to_string();
    // Two workers; allocations of one user from new client ports (the kernel spreads them by
    // hash) until both workers hold some, at least four. Bounded: 32 clients.
    let server = TurnServer::spawn_turnd(&["--user-bandwidth", &cap]);
    let admin = metrics_addr(&server);
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut clients: Vec<Client> = Vec::new();
    while clients.len() < 4 || workers_with_allocations(admin).len() < 2 {
        assert!(clients.len() < 32, "every allocation landed on one worker");
        let mut c = Client::new(server.addr()).with_user(USER, PASSWORD);
        c.allocate();
        c.bind_channel(0x4000, peer.local_addr().unwrap());
        clients.push(c);
    }
    eprintln!(
        "{} allocations on workers {:?}",
        clients.len(),
        workers_with_allocations(admin)
    );
    let (offered, rate) = flood(&clients, peer);
    assert_capped("user_bandwidth", offered, rate, &server);
}
