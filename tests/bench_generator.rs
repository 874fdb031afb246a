//! `turnd-bench`, the load tool of issue 5, against a real turnd: its batched generator
//! (`sendmmsg`/`recvmmsg`, UDP GSO bursts) must count exactly — every datagram a GSO send
//! splits arrives at the peer as its own datagram and comes back — and its report must carry
//! the generator's CPU and the server's user/system/wake-up split. The load is small and
//! nothing here asserts a time: only counts and the presence of the figures.

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

/// A fixed load light enough for any CI machine: 3 clients, 300 datagrams/s, 0.5 s. The
/// generator's send buffer and the server never fill at that rate, so nothing is lost unless
/// the batching miscounts; a little slack covers a CI machine stalling for the whole drain.
fn light_load_counts_exactly(extra: &[&str], mode: &str) {
    let server = TurnServer::spawn_turnd(&[]);
    let mut args = vec![
        "--mode",
        mode,
        "--clients",
        "3",
        "--rate",
        "300",
        "--duration",
        "0.5",
    ];
    args.extend_from_slice(extra);
    let r = bench(&server, &args);
    let offered = num(&r, "offered_pps") * 0.5;
    assert!(offered >= 100.0, "too little offered: {r}");
    // Loss is 0 on a quiet machine; allow a few percent for a stalled CI runner.
    assert!(num(&r, "loss_pct") < 5.0, "{r}");
    assert!(num(&r, "rtt_p50_us") > 0.0, "{r}");
    // The new figures are there and sane.
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

#[test]
fn channel_data_batched_with_gso() {
    light_load_counts_exactly(&[], "channel");
}

#[test]
fn channel_data_batched_without_gso() {
    light_load_counts_exactly(&["--no-gso"], "channel");
}

#[test]
fn channel_data_one_datagram_per_call() {
    light_load_counts_exactly(&["--batch", "1", "--no-gso"], "channel");
}

#[test]
fn channel_data_with_gso_echoes() {
    light_load_counts_exactly(&["--echo-gso"], "channel");
}

#[test]
fn send_data_batched() {
    light_load_counts_exactly(&[], "send");
}

/// A short flood: bursts of up to 64 per flow go out as GSO sends or `sendmmsg`, and the
/// peers echo with `sendmmsg`. What comes back can never exceed what was sent, and most of it
/// does come back.
#[test]
fn flood_counts_add_up() {
    let server = TurnServer::spawn_turnd(&[]);
    let r = bench(
        &server,
        &[
            "--clients",
            "2",
            "--flood",
            "--window",
            "32",
            "--duration",
            "0.3",
        ],
    );
    let to_peer = num(&r, "relayed_to_peer_pps");
    let back = num(&r, "delivered_round_trip_pps");
    let offered = num(&r, "offered_pps");
    assert!(back > 0.0, "{r}");
    assert!(back <= to_peer + 1e-6 && to_peer <= offered + 1e-6, "{r}");
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
