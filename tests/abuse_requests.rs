//! Authenticated abuse of the real binary: a client holding valid credentials is still an
//! adversary, and whatever it repeats must not grow turnd's memory.
//!
//! - 200,000 signed Refreshes of one allocation, sent in windows of 32 (each Refresh used to
//!   leave a deadline behind until the allocation's end);
//! - thousands of EVEN-PORT (R bit) Allocate + delete cycles by a user with `user_quota = 1`
//!   (a reservation used to count against no quota and outlive its allocation), and by one with
//!   `user_quota = 2` on a pool of 16 relay ports (which leaked reservations would exhaust
//!   after eight cycles).
//!
//! Each measures resident memory (`/proc/PID/status`) and `turnd_heap_bytes` (exact live heap
//! bytes, from `/metrics`) before and after, prints them (`--nocapture`), and bounds the growth
//! by state size; meanwhile a second client (bob) keeps allocating and relaying through the
//! same server. Every loop is bounded in count, every wait in time; nothing asserts a duration.

mod common;
mod raw;

use common::readings::{metrics_text, rss_kib, sample};
use common::TurnServer;
use raw::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

/// Refreshes in the flood (after the warm-up).
const REFRESHES: usize = 200_000;
/// Refreshes before measuring: enough to fill the 16,384-response retransmission cache.
const WARM_UP: usize = 20_000;
/// Requests in flight at once.
const WINDOW: usize = 32;
/// EVEN-PORT cycles measured, and run before measuring.
const CYCLES: usize = 3_000;
const WARM_UP_CYCLES: usize = 8_500;

/// Live heap growth allowed across a loop: state size, not time. A leaked deadline per
/// Refresh was 32 bytes of heap each, 6 MiB for the flood; a leaked reservation per cycle
/// would have refused the cycle outright after the pool ran dry.
const HEAP_SLACK: i64 = 1 << 20;
/// Resident memory growth allowed (the allocator's caching and the kernel's accounting are
/// coarser than the heap's).
const RSS_SLACK_KIB: i64 = 4 * 1024;

/// Memory as measured at one moment.
#[derive(Clone, Copy, Debug)]
struct Memory {
    rss_kib: i64,
    heap: i64,
}

fn memory(s: &TurnServer) -> Memory {
    Memory {
        rss_kib: rss_kib(s.pid()) as i64,
        heap: sample(&metrics_text(s.metrics_addr()), "turnd_heap_bytes")
            .expect("turnd_heap_bytes in /metrics") as i64,
    }
}

fn report(what: &str, before: Memory, after: Memory) {
    eprintln!(
        "{what}: RSS {} → {} KiB ({:+} KiB); turnd_heap_bytes {} → {} ({:+} bytes)",
        before.rss_kib,
        after.rss_kib,
        after.rss_kib - before.rss_kib,
        before.heap,
        after.heap,
        after.heap - before.heap
    );
}

#[track_caller]
fn assert_flat(what: &str, before: Memory, after: Memory) {
    assert!(
        after.heap - before.heap <= HEAP_SLACK,
        "{what}: live heap grew from {} to {} bytes",
        before.heap,
        after.heap
    );
    assert!(
        after.rss_kib - before.rss_kib <= RSS_SLACK_KIB,
        "{what}: RSS grew from {} to {} KiB",
        before.rss_kib,
        after.rss_kib
    );
}

/// A second source: bob with his own allocation and a peer, relaying both ways.
struct Bystander {
    client: Client,
    peer: Peer,
    relayed: SocketAddr,
}

impl Bystander {
    fn new(server: SocketAddr) -> Bystander {
        let mut client = Client::new(server).with_user(BOB.0, BOB.1);
        let relayed = client.allocate();
        let peer = Peer::v4();
        client.permit(peer.addr());
        Bystander {
            client,
            peer,
            relayed,
        }
    }

    /// One datagram each way through bob's allocation.
    #[track_caller]
    fn relays(&mut self, n: usize) {
        let ping = format!("ping {n}");
        self.client
            .send_indication(self.peer.addr(), ping.as_bytes());
        let (got, from) = self.peer.recv().expect("the peer hears bob");
        assert_eq!((got.as_slice(), from), (ping.as_bytes(), self.relayed));
        let pong = format!("pong {n}");
        self.peer.send_to(self.relayed, pong.as_bytes());
        let (from, got) = self.client.recv_data_indication();
        assert_eq!((from, got.as_slice()), (self.peer.addr(), pong.as_bytes()));
    }
}

/// Sends `n` signed Refreshes (LIFETIME 600) of `c`'s allocation, `WINDOW` at a time, each
/// window's answers collected before the next is sent. Returns (successes, answers).
fn refresh_flood(c: &mut Client, n: usize) -> (usize, usize) {
    flood(c, n, REFRESH, &[lifetime(600)], None)
}

/// Sends `n` signed requests of `method` with `attrs`, `WINDOW` at a time, each window's
/// answers collected before the next is sent. Every answer must be a success (`expect`
/// None) or the error `expect`; a 438 (the nonce aged out) renews the nonce. Returns (answers
/// as expected, answers).
fn flood(
    c: &mut Client,
    n: usize,
    method: u16,
    attrs: &[Attr],
    expect: Option<u16>,
) -> (usize, usize) {
    c.ensure_nonce();
    let (mut ok, mut answered) = (0, 0);
    let mut buf = vec![0u8; 2048];
    let mut sent = 0;
    while sent < n {
        let batch = WINDOW.min(n - sent);
        let mut txids = Vec::with_capacity(batch);
        for _ in 0..batch {
            let txid = new_txid();
            let auth = c.auth();
            let req = encode(msg_type(method, REQUEST), txid, attrs, Some(&auth), false);
            c.send(&req);
            txids.push(txid);
        }
        sent += batch;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut got = 0;
        // Bounded: at most `batch` answers (plus strays), each read bounded by the deadline.
        for _ in 0..batch * 2 {
            if got == batch {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            c.sock.set_read_timeout(Some(left)).unwrap();
            let Ok((len, from)) = c.sock.recv_from(&mut buf) else {
                break;
            };
            if from != c.server {
                continue;
            }
            let Some(p) = Parsed::parse(&buf[..len]) else {
                continue;
            };
            if !txids.contains(&p.txid) {
                continue;
            }
            got += 1;
            let code = p.error_code().map(|e| e.0);
            match (p.class(), code) {
                (SUCCESS, _) if expect.is_none() => ok += 1,
                (ERROR, Some(c)) if Some(c) == expect => ok += 1,
                (ERROR, Some(438)) => c.nonce = p.nonce(),
                _ => panic!("method {method:#05x} got {}", describe(&p)),
            }
        }
        answered += got;
    }
    (ok, answered)
}

#[test]
fn two_hundred_thousand_signed_refreshes_leave_memory_flat() {
    let mut s = TurnServer::spawn_turnd(&["--user", "bob:bob-pw"]);
    let mut bob = Bystander::new(s.addr());
    let mut alice = Client::new(s.addr());
    alice.allocate();
    let (ok, answered) = refresh_flood(&mut alice, WARM_UP);
    assert!(
        ok >= WARM_UP * 99 / 100,
        "{ok} of {WARM_UP} warm-up Refreshes"
    );
    bob.relays(0);
    let before = memory(&s);
    let (mut ok, mut answered_total) = (0, answered);
    for round in 0..10 {
        let (o, a) = refresh_flood(&mut alice, REFRESHES / 10);
        ok += o;
        answered_total += a;
        // Served meanwhile.
        bob.relays(round + 1);
        let m = memory(&s);
        eprintln!(
            "  after {} more: heap {} bytes, RSS {} KiB",
            (round + 1) * REFRESHES / 10,
            m.heap,
            m.rss_kib
        );
    }
    let after = memory(&s);
    report(
        &format!("{REFRESHES} Refreshes ({ok} answered with success)"),
        before,
        after,
    );
    // UDP on loopback loses next to nothing; a few lost answers do not matter here.
    assert!(
        ok >= REFRESHES * 99 / 100,
        "only {ok} of {REFRESHES} Refreshes succeeded"
    );
    assert!(answered_total <= WARM_UP + REFRESHES);
    assert_flat("Refresh flood", before, after);
    // The allocation still works, and a newcomer is still served.
    let r = alice.refresh(Some(0));
    assert_success(&r, REFRESH);
    let mut carol = Client::new(s.addr());
    carol.allocate();
    bob.relays(99);
    s.assert_running();
}

#[test]
fn even_port_reservation_cycles_leave_quota_ports_and_memory_flat() {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for quota in [1u32, 2] {
        // 16 relay ports: eight even/odd pairs. A reservation outliving its allocation would
        // use them up within eight cycles.
        let (low, high) = free_ports(ip, 16);
        let ports = format!("{low}-{high}");
        let quota_flag = quota.to_string();
        let mut s = TurnServer::spawn_turnd(&[
            "--user",
            "bob:bob-pw",
            "--user-quota",
            &quota_flag,
            "--relay-ports",
            &ports,
        ]);
        let mut bob = Bystander::new(s.addr());
        let mut alice = Client::new(s.addr());
        // Alice from a second port (one nonce dance only: unauthenticated answers are
        // rate-limited per source address, and every client here is 127.0.0.1).
        let mut extra = Client::new(s.addr());
        // Warm up: fill the retransmission caches of both of alice's ports' workers (a cache
        // holds 16,384 answers, and is per worker) with answers like the cycles' (the table's
        // bytes follow the answers' sizes), run cycles, then measure.
        alice.allocate();
        let (ok, _) = refresh_flood(&mut alice, WARM_UP);
        assert!(
            ok >= WARM_UP * 99 / 100,
            "{ok} of {WARM_UP} warm-up Refreshes"
        );
        assert_success(&alice.refresh(Some(0)), REFRESH);
        // Alice at her quota (with a reservation when it has room for one): every Allocate
        // from her second port is a 486.
        let r = alice.allocate_with(&[udp(), even_port(quota == 2)]);
        assert_success(&r, ALLOCATE);
        let (ok, _) = flood(&mut extra, WARM_UP, ALLOCATE, &[udp()], Some(486));
        assert!(ok >= WARM_UP * 99 / 100, "{ok} of {WARM_UP} warm-up 486s");
        assert_success(&alice.refresh(Some(0)), REFRESH);
        let mut cycle = |alice: &mut Client, i: usize| {
            let r = alice.allocate_with(&[udp(), even_port(true)]);
            if quota == 1 {
                // The reservation would be a second unit: refused, nothing held.
                assert_error(&r, ALLOCATE, 486);
                let r = alice.allocate_with(&[udp(), even_port(false)]);
                assert_success(&r, ALLOCATE);
            } else {
                assert_success(&r, ALLOCATE);
                assert!(r.has(A_RESERVATION_TOKEN), "cycle {i}: no token");
                // Over the quota: the allocation and its reservation are two.
                let r = extra.allocate_with(&[udp()]);
                assert_error(&r, ALLOCATE, 486);
            }
            let r = alice.refresh(Some(0));
            assert_success(&r, REFRESH);
        };
        for i in 0..WARM_UP_CYCLES {
            cycle(&mut alice, i);
        }
        let before = memory(&s);
        for i in 0..CYCLES {
            cycle(&mut alice, i);
            if i % 500 == 0 {
                bob.relays(i);
            }
        }
        let after = memory(&s);
        report(
            &format!("{CYCLES} EVEN-PORT(R) + delete cycles, user_quota = {quota}"),
            before,
            after,
        );
        assert_flat("EVEN-PORT cycles", before, after);
        // Nothing of alice's is left: bob and a newcomer still get ports from the 16.
        bob.relays(CYCLES);
        let mut carol = Client::new(s.addr());
        carol.allocate();
        s.assert_running();
    }
}
