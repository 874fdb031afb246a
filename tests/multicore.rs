//! The workers share the load (issue 5, "multi-core"): many clients on one listening address
//! are spread by the kernel's `SO_REUSEPORT` hash over every worker's socket, and each worker
//! relays the traffic of the allocations it holds, on their relay sockets. Driven by
//! `turnd-bench` (24 clients with channels, a light fixed load); what each worker holds and
//! relays is read from the admin API while the load runs. Counts only, no timing asserted.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

/// Per worker (the first part of an allocation id, `WORKER-INDEX-GENERATION`): allocations
/// held, and the least datagrams any of them relayed in each direction.
fn per_worker(admin: SocketAddr) -> BTreeMap<String, (usize, u64, u64)> {
    let raw = http_get(admin, "/allocations");
    let v: serde_json::Value = match serde_json::from_str(http_body(&raw)) {
        Ok(v) => v,
        Err(_) => return BTreeMap::new(),
    };
    let mut out: BTreeMap<String, (usize, u64, u64)> = BTreeMap::new();
    for a in v["allocations"].as_array().into_iter().flatten() {
        let id = a["id"].as_str().unwrap_or_default();
        let worker = id.split('-').next().unwrap_or_default().to_string();
        let up = a["client_to_peer_datagrams"].as_u64().unwrap_or(0);
        let down = a["peer_to_client_datagrams"].as_u64().unwrap_or(0);
        let e = out.entry(worker).or_insert((0, u64::MAX, u64::MAX));
        e.0 += 1;
        e.1 = e.1.min(up);
        e.2 = e.2.min(down);
    }
    out
}

#[test]
fn clients_spread_over_every_worker_and_each_relays_its_own() {
    let server = TurnServer::spawn_turnd(&[]);
    let admin = server.metrics_addr();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnd-bench"));
    cmd.args(["--server", &server.addr().to_string()])
        .args(["--user", USER, "--password", PASSWORD, "--json"])
        .args(["--mode", "channel", "--clients", "24", "--rate", "1200"])
        .args(["--duration", "4"]);
    let mut load = Proc::spawn("turnd-bench", cmd);

    // While the load runs: every worker holds allocations, and every allocation has relayed
    // both ways. Bounded: 100 looks, 50 ms apart.
    let mut seen = BTreeMap::new();
    for _ in 0..100 {
        seen = per_worker(admin);
        let total: usize = seen.values().map(|w| w.0).sum();
        if total == 24 && seen.len() == 2 && seen.values().all(|w| w.1 > 0 && w.2 > 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["0", "1"],
        "allocations per worker: {seen:?}"
    );
    assert_eq!(seen.values().map(|w| w.0).sum::<usize>(), 24, "{seen:?}");
    for (worker, (held, up, down)) in &seen {
        assert!(
            *held > 0 && *up > 0 && *down > 0,
            "worker {worker}: {seen:?}"
        );
    }

    let status = load.wait_timeout(Duration::from_secs(60));
    let out = load.output();
    assert!(status.is_some_and(|s| s.success()), "turnd-bench:\n{out}");
    let line = out.lines().find(|l| l.starts_with('{')).expect("JSON");
    let r: serde_json::Value = serde_json::from_str(line).expect("JSON report");
    // Loss is 0 on a quiet machine; allow a few percent for a stalled CI runner.
    assert!(r["loss_pct"].as_f64().is_some_and(|l| l < 5.0), "{r}");
}
