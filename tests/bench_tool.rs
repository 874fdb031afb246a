//! `turnd-bench --client-ip` against the real server: the load tool's clients and peers bind
//! the loopback address given, which is what lets `benches/scale.sh INSTANCES=k` run k
//! generators on one box (one address has only the kernel's ~28,000 ephemeral ports).
//!
//! The server denies peers in 127.0.0.0/24 (longest prefix wins over the harness's
//! 127.0.0.0/8) and 127.0.0.1 itself (a tie with the harness's exact entry for the relay's own
//! address is denied), so a bench whose peer socket stayed on 127.0.0.1 would get 403 on its
//! CreatePermission and fail: a successful run with `--client-ip 127.0.3.1` shows the peers
//! moved, and its held allocations all survive the closing refresh.

mod common;

use common::{run_tool, TurnServer, PASSWORD, USER};
use std::process::Command;
use std::time::Duration;

/// A held set and a short load take a second or two; this bounds a hung run.
const BENCH_TIMEOUT: Duration = Duration::from_secs(60);
const HELD: usize = 40;

fn bench(server: &TurnServer, client_ip: &str) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnd-bench"));
    cmd.args(["--server", &server.addr().to_string()])
        .args(["--client-ip", client_ip])
        .args(["--user", USER, "--password", PASSWORD])
        .args(["--server-pid", &server.pid().to_string()])
        .args(["--hold", &HELD.to_string()])
        .args([
            "--clients",
            "2",
            "--rate",
            "200",
            "--duration",
            "0.5",
            "--json",
        ]);
    let (status, out) = run_tool("turnd-bench", cmd, BENCH_TIMEOUT);
    (status.success(), out)
}

/// The number after `"key":` in the bench's JSON line.
fn json_number(out: &str, key: &str) -> Option<f64> {
    let rest = &out[out.find(&format!("\"{key}\":"))? + key.len() + 3..];
    let end = rest.find([',', '}'])?;
    rest[..end].parse().ok()
}

#[test]
fn clients_and_peers_bind_the_client_ip() {
    let mut server = TurnServer::spawn_turnd(&[
        "--deny-peer",
        "127.0.0.0/24",
        "--deny-peer",
        "127.0.0.1",
        "--unauthenticated-rate",
        "0",
    ]);
    let (ok, out) = bench(&server, "127.0.3.1");
    assert!(ok, "turnd-bench failed:\n{out}");
    assert_eq!(
        json_number(&out, "held_allocations"),
        Some(HELD as f64),
        "{out}"
    );
    assert_eq!(json_number(&out, "held_errors"), Some(0.0), "{out}");
    assert!(
        json_number(&out, "server_open_fds").is_some_and(|n| n >= HELD as f64),
        "the server held a relay socket per allocation:\n{out}"
    );

    // The same server refuses peers on 127.0.0.1: the default address fails here.
    let (ok, out) = bench(&server, "127.0.0.1");
    assert!(!ok, "a peer on 127.0.0.1 should have been denied:\n{out}");
    assert!(out.contains("403"), "{out}");
    server.assert_running();
}

#[test]
fn client_ip_must_be_loopback() {
    let server = TurnServer::spawn_turnd(&[]);
    let (ok, out) = bench(&server, "192.0.2.1");
    assert!(!ok && out.contains("--client-ip"), "{out}");
}

/// `--direct` (benches/xdp.sh's baseline, the generator against no server): every datagram a
/// client sends reaches its own peer and comes back, so both directions count what was sent,
/// and nothing is asked of a server (none runs here).
#[test]
fn direct_runs_the_generator_against_no_server() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnd-bench"));
    cmd.args(["--direct", "--user", USER, "--password", PASSWORD])
        .args([
            "--clients",
            "2",
            "--rate",
            "200",
            "--duration",
            "0.5",
            "--json",
        ]);
    let (status, out) = run_tool("turnd-bench", cmd, BENCH_TIMEOUT);
    assert!(status.success(), "{out}");
    let sent = json_number(&out, "sent").expect("sent");
    assert!(sent > 0.0, "{out}");
    assert_eq!(json_number(&out, "peer_received"), Some(sent), "{out}");
    assert_eq!(json_number(&out, "client_received"), Some(sent), "{out}");
    // Send indications would need a server to unwrap them.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnd-bench"));
    cmd.args([
        "--direct",
        "--mode",
        "send",
        "--user",
        USER,
        "--password",
        PASSWORD,
    ]);
    let (status, out) = run_tool("turnd-bench", cmd, BENCH_TIMEOUT);
    assert!(!status.success() && out.contains("--direct"), "{out}");
}
