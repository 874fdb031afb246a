//! The panic policy (docs/architecture.md#panics): bad input is an error value, and a panic —
//! a bug — in a worker never leaves a silently dead worker behind: `/readyz` turns 503 and the
//! `turnd` binary exits with status 70. The panic is set off through a hidden hook that only
//! the library API (`Server::panic_worker`) and, in debug builds, the environment
//! (`TURND_TEST_PANIC_WORKER`) reach; nothing from the network does.

mod common;
mod raw;

use raw::*;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use turnd::config::ConfigArgs;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn a_dead_worker_is_seen_and_readyz_turns_503() {
    let config = turnd::config::load_from(
        &ConfigArgs {
            workers: Some("2".into()),
            ..base_args()
        },
        &HashMap::new(),
    )
    .expect("config");
    let options = turnd::config::shell_options(&config).expect("shell options");
    let server = turnd::shell::Server::start(options).expect("server starts");
    let metrics = server.metrics_addr();
    assert!(common::http_get(metrics, "/readyz").starts_with("HTTP/1.1 200"));
    assert_eq!(server.dead_worker(), None);
    server.panic_worker(1);
    let deadline = Instant::now() + WAIT;
    // Bounded: every 20 ms until the deadline.
    let dead = loop {
        if let Some(i) = server.dead_worker() {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "the panicked worker was not seen"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(dead, 1);
    let readyz = common::http_get(metrics, "/readyz");
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    server.shutdown();
}

/// The environment hook exists in debug builds only (the ones `cargo test` builds).
#[cfg(debug_assertions)]
#[test]
fn the_binary_exits_70_when_a_worker_panics() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnd"));
    common::without_turnd_env(&mut cmd);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--relay-ip",
        "127.0.0.1",
        "--workers",
        "2",
        "--metrics-listen",
        "127.0.0.1:0",
    ])
    .env("TURND_TEST_PANIC_WORKER", "1")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("turnd starts");
    let deadline = Instant::now() + WAIT;
    // Bounded: every 20 ms until the deadline, then killed.
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("turnd still runs {WAIT:?} after its worker panicked");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert_eq!(status.code(), Some(70), "{stderr}");
    assert!(stderr.contains("a worker thread died"), "{stderr}");
}
