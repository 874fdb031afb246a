//! aiortc (Python WebRTC) through the server under test: two `RTCPeerConnection`s in one
//! process, the server as their only ICE server and relay-only ICE, exchange 1,000 data-channel
//! messages each way, with TURN over UDP and over TCP (`turn:…?transport=tcp`); every message must arrive intact and in order over a relay ↔ relay pair.
//! The checks live in `tests/aiortc/relay_datachannel.py`; this test starts the server, runs the
//! script bounded in time and fails with its output if it exits non-zero.
//!
//! Needs python3 with the packages in `tests/aiortc/requirements.txt` (`.ci/run` installs them);
//! without them the test fails, it never skips.
//!
//! Tier 2 (tests/README.md): built and run only with `cargo test --features external`, which
//! `.ci/run` does.

mod common;
mod tls_certs;

use common::{require_tool, run_tool, ScratchDir, ServerKind, TurnServer, PASSWORD, USER};
use std::process::Command;
use std::time::Duration;
use tls_certs::{Ca, CertFiles};

/// The script's own limit for the whole exchange; the process gets a margin on top.
const SCRIPT_TIMEOUT_SECS: u64 = 60;

#[test]
fn aiortc_relay_only_datachannel_1000_messages() {
    run_relay_datachannel("udp");
}

#[test]
fn aiortc_relay_only_over_tcp_datachannel_1000_messages() {
    let output = run_relay_datachannel("tcp");
    if let ServerKind::Turnd = ServerKind::from_env() {
        // The allocations must really have been made over TCP (turnd logs each one).
        assert!(
            output
                .lines()
                .any(|l| l.contains("allocation created") && l.contains("/tcp")),
            "no allocation over TCP in the server log:\n{output}"
        );
    }
}

/// `turns:` — TURN over TLS, the browser fallback through HTTPS-only firewalls. The server's
/// certificate is signed by a CA made for this test, which Python's TLS stack (under aioice)
/// trusts through `SSL_CERT_FILE`, so the certificate is really verified, not skipped.
#[test]
fn aiortc_relay_only_over_tls_datachannel_1000_messages() {
    if let ServerKind::Coturn = ServerKind::from_env() {
        // The coturn comparison runs start coturn with --no-tls.
        return;
    }
    let dir = ScratchDir::new("aiortc-tls");
    let ca = Ca::new();
    let files = CertFiles::write(dir.path(), &ca.issue("turnd aiortc", 1));
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write CA file");
    let flags = files.flags();
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = TurnServer::spawn_turnd(&args);
    let tls = server.tls_addr();
    let output = run_script(
        server,
        tls.port(),
        &["--transport", "tcp", "--scheme", "turns"],
        &[("SSL_CERT_FILE", ca_file.as_os_str())],
    );
    assert!(
        output
            .lines()
            .any(|l| l.contains("allocation created") && l.contains("/tls")),
        "no allocation over TLS in the server log:\n{output}"
    );
}

/// Runs the script with TURN over `transport` against a fresh server; returns the server's
/// output.
fn run_relay_datachannel(transport: &str) -> String {
    let server = TurnServer::spawn(&[]);
    let port = server.port();
    run_script(server, port, &["--transport", transport], &[])
}

/// Runs the script against `server` on `port` with `extra` arguments and environment;
/// returns the server's output.
fn run_script(
    mut server: TurnServer,
    port: u16,
    extra: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> String {
    let python = require_tool("python3");
    let mut probe = Command::new(&python);
    probe.args([
        "-c",
        "import aiortc, aioice; print(aiortc.__version__, aioice.__version__)",
    ]);
    let (status, out) = run_tool(
        "python3 (aiortc import probe)",
        probe,
        Duration::from_secs(60),
    );
    assert!(
        status.success(),
        "python3 cannot import aiortc: run `python3 -m pip install -r tests/aiortc/requirements.txt` \
         (.ci/run does this)\n{out}"
    );

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/aiortc/relay_datachannel.py"
    );
    let mut cmd = Command::new(&python);
    cmd.arg(script)
        .args(["--host", &server.addr().ip().to_string()])
        .args(["--port", &port.to_string()])
        .args(extra)
        .envs(env.iter().copied())
        .args(["--user", USER, "--password", PASSWORD])
        .args(["--count", "1000"])
        .args(["--timeout", &SCRIPT_TIMEOUT_SECS.to_string()]);
    let (status, out) = run_tool(
        "relay_datachannel.py",
        cmd,
        Duration::from_secs(SCRIPT_TIMEOUT_SECS + 60),
    );
    server.assert_running();
    assert!(
        status.success(),
        "aiortc relay test failed ({status}):\n{out}\n--- server output:\n{}",
        server.output()
    );
    assert!(
        out.contains("OK: 1000 messages"),
        "script exited 0 without its OK line:\n{out}"
    );
    server.output()
}
