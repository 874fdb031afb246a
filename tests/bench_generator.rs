//! `turnd-bench`, the load tool of issue 5, against a real turnd: its batched generator
//! (`sendmmsg`/`recvmmsg`, UDP GSO bursts) must really batch — the report counts the GSO and
//! `sendmmsg` calls that carried two or more datagrams, and floods make sure there are some —
//! and what a GSO send carries must reach the peers as separate datagrams; its counts must add
//! up (echoes ≤ datagrams at the peers ≤ datagrams sent), and its report must carry the
//! generator's CPU and the server's user/system/wake-up split. The load is small and nothing
//! here asserts a time: only counts and the presence of the figures.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

/// Runs turnd-bench against `server` with `args` and returns its JSON report.
fn bench(server: &TurnServer, args: &[&str]) -> serde_json::Value {
    bench_at(&server.addr().to_string(), server.pid(), args)
}

/// Runs turnd-bench against the server at `addr` (process `pid`) with `args`; its JSON report.
fn bench_at(addr: &str, pid: u32, args: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnd-bench"));
    cmd.args([
        "--server",
        addr,
        "--user",
        USER,
        "--password",
        PASSWORD,
        "--server-pid",
        &pid.to_string(),
        "--json",
    ])
    .args(args);
    let (status, out) = run_tool("turnd-bench", cmd, Duration::from_secs(60));
    assert!(status.success(), "turnd-bench {args:?} failed:\n{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in:\n{out}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing or null in {v}"))
}

/// A fixed load light enough for any CI machine: 3 clients, 300 datagrams/s, 0.5 s. At that
/// rate a burst is one datagram (a plain `send`), so this checks the counting and the report,
/// not batching (the flood tests below check that): the echoes come back (a few percent of
/// slack covers a CI runner stalling for the whole drain), round trips are timed, and the
/// report carries the generator's CPU and the server's user/system/wake-up split.
fn light_rate_comes_back_with_the_figures(mode: &str) {
    let server = TurnServer::spawn_turnd(&[]);
    let args = [
        "--mode",
        mode,
        "--clients",
        "3",
        "--rate",
        "300",
        "--duration",
        "0.5",
    ];
    let r = bench(&server, &args);
    assert!(num(&r, "sent") >= 100.0, "too little offered: {r}");
    assert_counts_consistent(&r);
    // Loss is 0 on a quiet machine; allow a few percent for a stalled CI runner.
    assert!(num(&r, "loss_pct") < 5.0, "{r}");
    assert!(num(&r, "rtt_p50_us") > 0.0, "{r}");
    assert!(num(&r, "generator_cpu_us_per_datagram") > 0.0, "{r}");
    assert!(num(&r, "generator_cpu_pct") >= 0.0, "{r}");
    for key in [
        "server_user_us_per_datagram",
        "server_sys_us_per_datagram",
        "server_wakeups_per_datagram",
    ] {
        assert!(num(&r, key) >= 0.0, "{key}: {r}");
    }
    // A relayed datagram costs the server at least part of a wake-up's worth of switching
    // at this light load (its workers sleep between datagrams).
    assert!(num(&r, "server_wakeups_per_datagram") > 0.0, "{r}");
}

/// What came back never exceeds what reached the peers, which never exceeds what was sent.
fn assert_counts_consistent(r: &serde_json::Value) {
    let (sent, at_peer, back) = (
        num(r, "sent"),
        num(r, "peer_received"),
        num(r, "client_received"),
    );
    assert!(back <= at_peer && at_peer <= sent, "{r}");
}

#[test]
fn channel_data_at_a_light_rate_comes_back_with_the_figures() {
    light_rate_comes_back_with_the_figures("channel");
}

#[test]
fn send_data_at_a_light_rate_comes_back_with_the_figures() {
    light_rate_comes_back_with_the_figures("send");
}

/// A short flood of 2 clients with a window of 32: each flow's first burst is 32 datagrams
/// at once (nothing is in flight yet), so every run batches whatever the machine's speed.
/// Returns the report.
fn flood(extra: &[&str], mode: &str) -> serde_json::Value {
    let server = TurnServer::spawn_turnd(&[]);
    let mut args = vec![
        "--mode",
        mode,
        "--clients",
        "2",
        "--flood",
        "--window",
        "32",
        "--duration",
        "0.3",
    ];
    args.extend_from_slice(extra);
    let r = bench(&server, &args);
    assert_counts_consistent(&r);
    r
}

/// Most datagrams reached the peers one by one. A burst the kernel did not split would reach
/// a peer as one datagram (or none), so the peers would count about a 32nd of what was sent;
/// half leaves room for a stalled machine's losses and still tells the two apart.
fn assert_arrived_as_separate_datagrams(r: &serde_json::Value) {
    assert!(num(r, "peer_received") > num(r, "sent") / 2.0, "{r}");
    assert!(num(r, "client_received") > 0.0, "{r}");
}

/// With GSO (the default), the bursts go out as single GSO sends of two or more segments —
/// at least each flow's first burst of 32 — and arrive as separate datagrams.
#[test]
fn gso_bursts_are_single_sends_that_arrive_as_separate_datagrams() {
    for mode in ["channel", "send"] {
        let r = flood(&[], mode);
        assert_eq!(num(&r, "generator_gso"), 1.0, "{mode}: {r}");
        assert!(num(&r, "generator_gso_sends") >= 2.0, "{mode}: {r}");
        assert!(num(&r, "generator_gso_datagrams") >= 64.0, "{mode}: {r}");
        // GSO takes every burst of two or more; sendmmsg is left with none.
        assert_eq!(num(&r, "generator_mmsg_sends"), 0.0, "{mode}: {r}");
        assert_arrived_as_separate_datagrams(&r);
    }
}

/// `--no-gso`: the bursts go out with `sendmmsg` instead, and no GSO send is made.
#[test]
fn without_gso_bursts_go_out_with_sendmmsg() {
    let r = flood(&["--no-gso"], "channel");
    assert_eq!(num(&r, "generator_gso"), 0.0, "{r}");
    assert_eq!(num(&r, "generator_gso_sends"), 0.0, "{r}");
    assert!(num(&r, "generator_mmsg_sends") >= 2.0, "{r}");
    assert!(num(&r, "generator_mmsg_datagrams") >= 64.0, "{r}");
    assert_arrived_as_separate_datagrams(&r);
}

/// `--batch 1 --no-gso`: one datagram per system call, even in a flood.
#[test]
fn batch_1_sends_one_datagram_per_call() {
    let r = flood(&["--batch", "1", "--no-gso"], "channel");
    assert_eq!(num(&r, "generator_batch"), 1.0, "{r}");
    assert_eq!(num(&r, "generator_gso_sends"), 0.0, "{r}");
    assert_eq!(num(&r, "generator_mmsg_sends"), 0.0, "{r}");
    assert_arrived_as_separate_datagrams(&r);
}

/// `--echo-gso`: the peers echo what one `recvmmsg` brought them from their relay as GSO
/// sends. turnd relays a client's burst of 32 to the peer back to back, so over the flood some
/// echo batch holds two or more datagrams and goes out as one GSO send; the clients get the
/// echoes back as separate datagrams.
#[test]
fn peers_echo_batches_as_gso_sends() {
    let r = flood(&["--echo-gso"], "channel");
    assert_eq!(num(&r, "generator_echo_gso"), 1.0, "{r}");
    assert!(num(&r, "generator_echo_gso_sends") >= 1.0, "{r}");
    assert!(num(&r, "generator_echo_gso_datagrams") >= 2.0, "{r}");
    assert_arrived_as_separate_datagrams(&r);
    assert!(num(&r, "client_received") > num(&r, "sent") / 2.0, "{r}");
}

/// A short flood: bursts of up to 64 per flow go out as GSO sends or `sendmmsg`, and the
/// peers echo with `sendmmsg`. What comes back can never exceed what reached the peers, nor
/// that what was sent (counted exactly, not as rates), and some does come back.
#[test]
fn flood_counts_add_up() {
    // Channel mode is the default.
    let r = flood(&[], "channel");
    assert!(num(&r, "client_received") > 0.0, "{r}");
    assert_eq!(num(&r, "generator_batch"), 64.0, "{r}");
}

/// Set-up mode reports the split per allocation.
#[test]
fn setup_only_reports_the_split() {
    let server = TurnServer::spawn_turnd(&[]);
    let r = bench(&server, &["--setup-only", "50"]);
    assert_eq!(num(&r, "allocations"), 50.0, "{r}");
    for key in [
        "server_user_us_per_allocation",
        "server_sys_us_per_allocation",
        "server_wakeups_per_allocation",
    ] {
        assert!(num(&r, key) >= 0.0, "{key}: {r}");
    }
    assert!(num(&r, "server_wakeups_per_allocation") > 0.0, "{r}");
}

/// Set-up in bursts (`--setup-concurrency`): waves of 25, 25 and 10 clients, every one of
/// which must end with an allocation that its release then finds.
#[test]
fn setup_in_bursts_sets_up_every_allocation() {
    let server = TurnServer::spawn_turnd(&[]);
    let r = bench(
        &server,
        &["--setup-only", "60", "--setup-concurrency", "25"],
    );
    assert_eq!(num(&r, "allocations"), 60.0, "{r}");
    assert_eq!(num(&r, "setup_concurrency"), 25.0, "{r}");
    assert_eq!(num(&r, "released"), 60.0, "{r}");
}

/// The null server (the kernel floor of `benches/compare.sh`) answers a whole set-up, one
/// client after another and in bursts, relays ChannelData and Send/Data both ways, and its CPU
/// is measured like any server's.
#[test]
fn null_server_sets_up_and_relays() {
    let port = free_udp_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnd-bench"));
    cmd.args(["--user", USER, "--password", PASSWORD, "--null-server"])
        .arg(format!("127.0.0.1:{port}"));
    let null = Proc::spawn("null server", cmd);
    // Bounded wait for its start-up line.
    for _ in 0..100 {
        if null.output().contains("null server on") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        null.output().contains("null server on"),
        "{}",
        null.output()
    );
    let addr = format!("127.0.0.1:{port}");
    let run = |args: &[&str]| bench_at(&addr, null.id(), args);
    for concurrency in ["1", "8"] {
        let r = run(&["--setup-only", "20", "--setup-concurrency", concurrency]);
        assert_eq!(num(&r, "released"), 20.0, "{r}");
        assert!(num(&r, "server_cpu_us_per_allocation") > 0.0, "{r}");
    }
    for mode in ["channel", "send"] {
        let r = run(&[
            "--mode",
            mode,
            "--clients",
            "2",
            "--rate",
            "200",
            "--duration",
            "0.5",
        ]);
        // Loss is 0 on a quiet machine; allow a few percent for a stalled CI runner.
        assert!(num(&r, "offered_pps") * 0.5 >= 50.0, "{r}");
        assert!(num(&r, "loss_pct") < 5.0, "{mode}: {r}");
        assert!(num(&r, "server_cpu_us_per_datagram") > 0.0, "{r}");
    }
}
