//! `allocation_bandwidth` and `user_bandwidth` on the wire, against the turnd binary: raw
//! clients offer ChannelData at three times the cap for a few seconds (one allocation; or
//! several allocations of one user, spread over both workers) and a peer socket counts what
//! arrives. Everything is checked by counting, never by a rate computed from arrival times:
//!
//! - every datagram sent is accounted for by the server: relayed, or counted in
//!   `turnd_datagrams_dropped_total{reason="bandwidth"}`;
//! - the bytes relayed stay within the token bucket's budget over the whole run:
//!   burst + cap × the time from the first send to the last count, an interval that encloses
//!   all of the server's relaying, so a slow machine only loosens the bound;
//! - the first burst (65 datagrams of 1,000 bytes fit the 65,536-byte bucket) always passes,
//!   however slowly the datagrams came.
//!
//! That the bucket refills at exactly the cap is checked against the core's fake clock
//! (`src/core/tests/bandwidth.rs`, `src/core/bandwidth.rs`), where time is exact.

mod common;
mod raw;

use common::{http_get, TurnServer, PASSWORD, USER};
use raw::Client;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Bytes per second.
const CAP: u64 = 200_000;
/// The bucket's size: a tenth of a second of the cap, but at least 65,536 bytes
/// (`src/core/bandwidth.rs`).
const BURST: u64 = 65_536;
const PAYLOAD: usize = 1_000;
/// Offered: three times the cap, in ticks of 6 datagrams every 10 ms, for 4 s.
const PER_TICK: usize = 6;
const TICK: Duration = Duration::from_millis(10);
const TICKS: usize = 400;
/// Most datagrams sent but not yet seen by the server (relayed or dropped) before the sender
/// waits for it: well under what a default 208 KB socket buffer holds, so the kernel never
/// drops one and the server's counts add up exactly.
const AHEAD: u64 = 60;

/// The server's counts: ChannelData datagrams and bytes relayed client → peer over UDP, and
/// datagrams dropped for bandwidth.
#[derive(Debug, Clone, Copy)]
struct Counts {
    relayed_datagrams: u64,
    relayed_bytes: u64,
    dropped: u64,
}

impl Counts {
    fn seen(&self) -> u64 {
        self.relayed_datagrams + self.dropped
    }
}

fn counts(admin: SocketAddr) -> Counts {
    let text = http_get(admin, "/metrics");
    // A series the server has not touched yet is absent or 0.
    let value = |series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0, |v| {
                v.trim()
                    .parse::<f64>()
                    .unwrap_or_else(|e| panic!("{series} {v}: {e}")) as u64
            })
    };
    Counts {
        relayed_datagrams: value(
            "turnd_relayed_datagrams_total{direction=\"client_to_peer\",transport=\"udp\"}",
        ),
        relayed_bytes: value(
            "turnd_relayed_bytes_total{direction=\"client_to_peer\",transport=\"udp\"}",
        ),
        dropped: value("turnd_datagrams_dropped_total{reason=\"bandwidth\"}"),
    }
}

/// Waits (bounded: 10 s) until the server has seen at least `n` datagrams; its counts.
fn wait_seen(admin: SocketAddr, n: u64) -> Counts {
    let deadline = Instant::now() + Duration::from_secs(10);
    // Bounded: one scrape per 10 ms until the deadline.
    loop {
        let c = counts(admin);
        if c.seen() >= n {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "the server saw {} of {n} datagrams after 10 s: {c:?}",
            c.seen()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The workers holding allocations, from the admin API's ids (`WORKER-INDEX-GENERATION`).
fn workers_with_allocations(addr: SocketAddr) -> std::collections::BTreeSet<String> {
    let body = http_get(addr, "/allocations");
    body.split("\"id\":\"")
        .skip(1)
        .filter_map(|rest| rest.split('-').next().map(str::to_string))
        .collect()
}

/// Floods [`TICKS`] × [`PER_TICK`] ChannelData datagrams from the clients in turn (each with
/// channel 0x4000 to `peer`), three times [`CAP`], never more than [`AHEAD`] ahead of the
/// server; then checks the accounting, the budget and the first burst (see the module
/// comment).
fn flood_and_check(what: &str, clients: &[Client], peer: UdpSocket, admin: SocketAddr) {
    let before = counts(admin);
    assert_eq!(
        before.seen(),
        0,
        "{what}: traffic before the flood: {before:?}"
    );
    peer.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let counter = std::thread::spawn(move || {
        let (mut datagrams, mut bytes) = (0u64, 0u64);
        let mut buf = [0u8; 2048];
        // Bounded: ends at the first 500 ms of silence, and by count.
        while datagrams < 100_000 {
            match peer.recv_from(&mut buf) {
                Ok((n, _)) => {
                    datagrams += 1;
                    bytes += n as u64;
                }
                Err(_) => break,
            }
        }
        (datagrams, bytes)
    });
    let payload = [0x5Au8; PAYLOAD];
    let start = Instant::now();
    let mut next = start;
    let mut sent = 0u64;
    for tick in 0..TICKS {
        for i in 0..PER_TICK {
            clients[i % clients.len()].send_channel_data(0x4000, &payload, false);
            sent += 1;
        }
        if tick % 10 == 9 {
            // Flow control, not a measurement: a stalled server is waited for.
            wait_seen(admin, sent.saturating_sub(AHEAD));
        }
        next += TICK;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let end = wait_seen(admin, sent);
    // Every relaying happened between `start` and now.
    let elapsed = start.elapsed().as_secs_f64();
    let (peer_datagrams, peer_bytes) = counter.join().unwrap();
    let budget = BURST + (CAP as f64 * elapsed).ceil() as u64;
    eprintln!(
        "{what}: sent {sent} datagrams of {PAYLOAD} bytes in {elapsed:.2} s; server relayed \
         {} ({} bytes), dropped {} for bandwidth; the peer got {peer_datagrams} \
         ({peer_bytes} bytes); budget {budget} bytes",
        end.relayed_datagrams, end.relayed_bytes, end.dropped
    );
    assert_eq!(
        end.seen(),
        sent,
        "{what}: every datagram is relayed or counted as a bandwidth drop: {end:?}"
    );
    assert_eq!(end.relayed_bytes, end.relayed_datagrams * PAYLOAD as u64);
    assert!(
        end.relayed_bytes <= budget,
        "{what}: relayed {} bytes, over the budget of {budget} (burst {BURST} + {CAP} B/s × \
         {elapsed:.2} s)",
        end.relayed_bytes
    );
    let first_burst = BURST / PAYLOAD as u64;
    assert!(
        end.relayed_datagrams >= first_burst,
        "{what}: the first burst ({first_burst} datagrams) did not pass: {end:?}"
    );
    // The peer got what the server relayed (its socket may have lost some on a stalled
    // machine, never gained any).
    assert!(
        peer_datagrams <= end.relayed_datagrams && peer_datagrams >= first_burst,
        "{what}: the peer got {peer_datagrams} of {end:?}"
    );
}

/// One allocation's cap: every datagram relayed or counted as dropped, the relayed bytes
/// within burst + cap × time, the first burst whole.
#[test]
fn allocation_cap_keeps_relayed_bytes_within_the_budget_and_counts_every_drop() {
    let cap = CAP.to_string();
    let server = TurnServer::spawn_turnd(&["--allocation-bandwidth", &cap]);
    let admin = server.metrics_addr();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut c = Client::new(server.addr()).with_user(USER, PASSWORD);
    c.allocate();
    c.bind_channel(0x4000, peer.local_addr().unwrap());
    flood_and_check("allocation_bandwidth", &[c], peer, admin);
}

/// One user's cap, over allocations on both workers: the same checks against one budget,
/// which separate per-allocation buckets (four budgets) would exceed.
#[test]
fn user_cap_keeps_a_users_allocations_on_every_worker_within_one_budget() {
    let cap = CAP.to_string();
    // Two workers; allocations of one user from new client ports (the kernel spreads them by
    // hash) until both workers hold some, at least four. Bounded: 32 clients.
    let server = TurnServer::spawn_turnd(&["--user-bandwidth", &cap]);
    let admin = server.metrics_addr();
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
    flood_and_check("user_bandwidth", &clients, peer, admin);
}
