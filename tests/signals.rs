//! Draining on SIGTERM/SIGINT, against the turnd binary: `/readyz` turns 503 and new
//! allocations are refused (508) while a live allocation keeps relaying both ways; turnd exits
//! 0 when the last allocation ends, when `drain_timeout` passes, or at once on a second signal.
//! SIGHUP reloads users, REST secrets and the peer filter from the configuration file without
//! touching live allocations, and keeps the running configuration when the new one is bad.
//! And the lifecycle log lines of such a run as JSON (`log_format = "json"`).

mod common;
mod raw;

use common::Proc;
use raw::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const STARTUP: Duration = Duration::from_secs(10);
/// How long a state change the server must make may take to be seen.
const SETTLE: Duration = Duration::from_secs(5);

struct Turnd {
    proc: Proc,
    udp: SocketAddr,
    metrics: SocketAddr,
}

impl Turnd {
    fn start(drain_timeout: u32) -> Turnd {
        Turnd::start_with(&["--drain-timeout", &drain_timeout.to_string()])
    }

    fn start_with(extra: &[&str]) -> Turnd {
        let alice = format!("{}:{}", ALICE.0, ALICE.1);
        let bob = format!("{}:{}", BOB.0, BOB.1);
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--relay-ip",
            "127.0.0.1",
            "--realm",
            REALM,
            "--allow-peer",
            "127.0.0.1/32",
            "--user",
            &alice,
            "--user",
            &bob,
            "--workers",
            "2",
            "--metrics-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        Turnd::spawn(&args)
    }

    /// turnd with exactly `args`.
    fn spawn(args: &[&str]) -> Turnd {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnd"));
        cmd.args(args);
        common::without_turnd_env(&mut cmd);
        let (proc, udp, metrics) = common::spawn_turnd(cmd, STARTUP);
        Turnd { proc, udp, metrics }
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.proc.id()).expect("pid fits");
        // SAFETY: kill(2) on our own child, which has not been reaped (we hold its handle).
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    fn readyz(&self) -> u16 {
        let mut s = TcpStream::connect_timeout(&self.metrics, SETTLE).expect("connect /readyz");
        s.set_read_timeout(Some(SETTLE)).unwrap();
        write!(s, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read /readyz");
        text.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {text:?}"))
    }

    #[track_caller]
    fn wait_not_ready(&self) {
        let deadline = Instant::now() + SETTLE;
        // Bounded: every 20 ms until the deadline.
        while self.readyz() != 503 {
            assert!(
                Instant::now() < deadline,
                "/readyz still 200 after {SETTLE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) until turnd has printed `text`.
    #[track_caller]
    fn wait_for_output(&self, text: &str) {
        let deadline = Instant::now() + SETTLE;
        // Bounded: every 20 ms until the deadline.
        while !self.proc.output().contains(text) {
            assert!(
                Instant::now() < deadline,
                "turnd did not print `{text}` within {SETTLE:?}:\n{}",
                self.proc.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[track_caller]
    fn expect_exit_0_within(&mut self, timeout: Duration) {
        let status = self.proc.wait_timeout(timeout).unwrap_or_else(|| {
            panic!(
                "turnd still running after {timeout:?}:\n{}",
                self.proc.output()
            )
        });
        assert!(
            status.success(),
            "turnd exited with {status}:\n{}",
            self.proc.output()
        );
    }
}

/// A client with an allocation and a channel to `peer`; checks one round trip.
fn relaying(server: SocketAddr, peer: &Peer) -> (Client, SocketAddr) {
    let mut c = Client::new(server);
    let relay = c.allocate();
    c.bind_channel(0x4000, peer.addr());
    round_trip(&c, peer, relay, b"before");
    (c, relay)
}

#[track_caller]
fn round_trip(c: &Client, peer: &Peer, relay: SocketAddr, payload: &[u8]) {
    round_trip_on(c, 0x4000, peer, relay, payload);
}

#[track_caller]
fn round_trip_on(c: &Client, channel: u16, peer: &Peer, relay: SocketAddr, payload: &[u8]) {
    c.send_channel_data(channel, payload, false);
    assert_eq!(peer.recv().expect("relayed to the peer").0, payload);
    peer.send_to(relay, payload);
    assert_eq!(c.recv_channel_data(), (channel, payload.to_vec()));
}

#[test]
fn sigterm_drains_and_exits_0_when_the_last_allocation_ends() {
    let mut t = Turnd::start(60);
    assert_eq!(t.readyz(), 200);
    let peer = Peer::v4();
    let (mut c, relay) = relaying(t.udp, &peer);

    t.signal(libc::SIGTERM);
    t.wait_not_ready();
    // The live allocation keeps relaying, both ways, and can be refreshed.
    for i in 0..10u8 {
        round_trip(&c, &peer, relay, &[i; 100]);
    }
    assert_success(&c.refresh(Some(600)), REFRESH);
    // A new allocation is refused.
    let mut late = Client::new(t.udp).with_user(BOB.0, BOB.1);
    assert_error(&late.allocate_with(&[udp()]), ALLOCATE, 508);
    assert!(t.proc.try_wait().is_none(), "turnd exited while draining");

    // The last allocation ends: turnd exits 0, and says why.
    assert_success(&c.refresh(Some(0)), REFRESH);
    t.expect_exit_0_within(SETTLE);
    let out = t.proc.output();
    assert!(out.contains("drained: no allocation left"), "{out}");
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut t = Turnd::start(60);
    let peer = Peer::v4();
    let (_c, _relay) = relaying(t.udp, &peer);
    t.signal(libc::SIGINT);
    t.wait_not_ready();
    t.signal(libc::SIGTERM);
    // Within SETTLE of a 60 s drain with an allocation live: the second signal ended it.
    t.expect_exit_0_within(SETTLE);
    let out = t.proc.output();
    assert!(out.contains("second signal: exiting at once"), "{out}");
}

/// A live allocation keeps relaying during the drain, and turnd exits 0 because the 1 s
/// `drain_timeout` passed with the allocation still there: its log says so (`drain timeout`
/// with `allocations=1`), not that the drain ended because nothing was left. The reason is
/// read from the log, not inferred from how long the exit took.
#[test]
fn the_drain_timeout_ends_live_allocations() {
    let mut t = Turnd::start(1);
    let peer = Peer::v4();
    let (c, relay) = relaying(t.udp, &peer);
    t.signal(libc::SIGTERM);
    t.wait_not_ready();
    round_trip(&c, &peer, relay, b"during the drain");
    t.expect_exit_0_within(SETTLE);
    let out = t.proc.output();
    assert!(
        out.lines()
            .any(|l| l.contains("drain timeout") && l.contains("allocations=1")),
        "no `drain timeout` line with allocations=1:\n{out}"
    );
    assert!(
        !out.contains("drained: no allocation left"),
        "the drain ended for want of allocations, not by the timeout:\n{out}"
    );
}

#[test]
fn with_no_allocation_a_signal_exits_at_once() {
    let mut t = Turnd::start(60);
    t.signal(libc::SIGTERM);
    t.expect_exit_0_within(SETTLE);
}

#[test]
fn json_logs_one_object_per_line_with_the_allocation_lifecycle() {
    let mut t = Turnd::start_with(&["--log-format", "json"]);
    let peer = Peer::v4();
    let (mut c, relay) = relaying(t.udp, &peer);
    round_trip(&c, &peer, relay, &[7; 50]);
    assert_success(&c.refresh(Some(0)), REFRESH);
    t.signal(libc::SIGTERM);
    t.expect_exit_0_within(SETTLE);

    let out = t.proc.output();
    let logs: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("[stderr] "))
        .collect();
    assert!(!logs.is_empty(), "no log line:\n{out}");
    for l in &logs {
        assert!(
            l.starts_with('{') && l.ends_with('}') && l.contains("\"level\":"),
            "not a JSON log object: {l}"
        );
    }
    let line = |message: &str| {
        logs.iter()
            .find(|l| l.contains(&format!("\"message\":\"{message}\"")))
            .unwrap_or_else(|| panic!("no `{message}` line in:\n{out}"))
    };
    let created = line("allocation created");
    assert!(created.contains("\"user\":\"alice\""), "{created}");
    let ended = line("allocation ended");
    // "before" (6 bytes) and 50 bytes, each way.
    for field in [
        "\"to_peer_bytes\":56",
        "\"to_client_bytes\":56",
        "\"reason\":\"deleted\"",
    ] {
        assert!(ended.contains(field), "no {field} in {ended}");
    }
}

fn config_file(alice_password: &str, secret: &str, allow: &str) -> String {
    config_with(alice_password, secret, allow, "")
}

/// A configuration file; `extra` holds more top-level keys.
fn config_with(alice_password: &str, secret: &str, allow: &str, extra: &str) -> String {
    format!(
        "{extra}\nlisten = [\"127.0.0.1:0\"]\nrelay_ips = [\"127.0.0.1\"]\nrealm = \"{REALM}\"\n\
         allow_peers = [{allow}]\nauth_secrets = [\"{secret}\"]\nworkers = 2\n\
         metrics_listen = \"127.0.0.1:0\"\n\n[[users]]\nname = \"{}\"\npassword = \"{alice_password}\"\n",
        ALICE.0
    )
}

/// A REST API client (`<expiry>:carol`) of `secret`; the allocation's result code.
fn rest_allocate(server: SocketAddr, secret: &str) -> Option<u16> {
    let username = format!("{}:carol", unix_now() + 3600);
    let password = rest_password(secret, &username);
    let mut c = Client::new(server).with_user(&username, &password);
    let r = c.allocate_with(&[udp()]);
    r.error_code().map(|(code, _)| code)
}

fn alice_allocate(server: SocketAddr, password: &str) -> Option<u16> {
    let mut c = Client::new(server).with_user(ALICE.0, password);
    let r = c.allocate_with(&[udp()]);
    r.error_code().map(|(code, _)| code)
}

#[test]
fn sighup_reloads_users_and_secrets_and_keeps_allocations() {
    let dir = std::env::temp_dir().join(format!("turnd-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("turnd.toml");
    // Two loopback peers: 127.0.0.2 stays allowed, 127.0.0.1 (also the relay's own address,
    // so only an exact entry opens it) is dropped by the reload.
    let both = "\"127.0.0.1/32\", \"127.0.0.2/32\"";
    let kept_only = "\"127.0.0.2/32\"";
    std::fs::write(&file, config_file(ALICE.1, "secret-1", both)).unwrap();
    let path = file.to_string_lossy().to_string();
    let mut t = Turnd::spawn(&["--config", &path]);

    let peer = Peer {
        sock: std::net::UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2 (loopback /8)"),
    };
    let denied = Peer::v4();
    let (mut c, relay) = relaying(t.udp, &peer);
    c.bind_channel(0x4001, denied.addr());
    round_trip_on(&c, 0x4001, &denied, relay, b"before");
    assert_eq!(rest_allocate(t.udp, "secret-1"), None);

    // New password and secret, and 127.0.0.1 no longer allowed: SIGHUP applies them, to the
    // existing allocation too.
    std::fs::write(&file, config_file("alice-new-pw", "secret-2", kept_only)).unwrap();
    t.signal(libc::SIGHUP);
    t.wait_for_output("configuration reloaded");
    round_trip(&c, &peer, relay, b"after the reload");
    // The denied peer's channel and permission stopped with the reload, both ways.
    c.send_channel_data(0x4001, b"to a denied peer", false);
    c.send_indication(denied.addr(), b"to a denied peer");
    denied.expect_silence("data to a peer the reload denied");
    denied.send_to(relay, b"from a denied peer");
    c.expect_silence("data from a peer the reload denied");
    assert_eq!(alice_allocate(t.udp, ALICE.1), Some(401), "old password");
    assert_eq!(alice_allocate(t.udp, "alice-new-pw"), None, "new password");
    assert_eq!(rest_allocate(t.udp, "secret-1"), Some(401), "old secret");
    assert_eq!(rest_allocate(t.udp, "secret-2"), None, "new secret");
    let mut fresh = Client::new(t.udp).with_user(ALICE.0, "alice-new-pw");
    fresh.allocate();
    assert_error(
        &fresh.create_permission(&[denied.addr()]),
        CREATE_PERMISSION,
        403,
    );

    // A key only a restart applies: the reload says so, naming it, and applies the rest.
    std::fs::write(
        &file,
        config_with("alice-new-pw", "secret-2", kept_only, "user_quota = 5"),
    )
    .unwrap();
    t.signal(libc::SIGHUP);
    t.wait_for_output("take effect only at the next start");
    t.wait_for_output("keys=user_quota");

    // A bad file is refused and the running configuration stays.
    std::fs::write(&file, "workers = \"many\"\n").unwrap();
    t.signal(libc::SIGHUP);
    t.wait_for_output("reload refused");
    assert_eq!(
        alice_allocate(t.udp, "alice-new-pw"),
        None,
        "after a refused reload"
    );
    round_trip(&c, &peer, relay, b"still relaying");
    assert!(t.proc.try_wait().is_none(), "turnd exited on a bad reload");

    t.signal(libc::SIGTERM);
    t.wait_not_ready();
    t.signal(libc::SIGTERM);
    t.expect_exit_0_within(SETTLE);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_changes_the_log_level() {
    let dir = std::env::temp_dir().join(format!("turnd-loglevel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("turnd.toml");
    let allow = "\"127.0.0.1/32\"";
    std::fs::write(
        &file,
        config_with(ALICE.1, "s", allow, "log_level = \"warn\""),
    )
    .unwrap();
    let path = file.to_string_lossy().to_string();
    let mut t = Turnd::spawn(&["--config", &path]);
    assert_eq!(alice_allocate(t.udp, ALICE.1), None);

    std::fs::write(
        &file,
        config_with(ALICE.1, "s", allow, "log_level = \"info\""),
    )
    .unwrap();
    t.signal(libc::SIGHUP);
    t.wait_for_output("configuration reloaded");
    assert_eq!(alice_allocate(t.udp, ALICE.1), None);
    t.wait_for_output("allocation created");
    let out = t.proc.output();
    assert_eq!(
        out.matches("allocation created").count(),
        1,
        "only the allocation after the reload is logged:\n{out}"
    );
    t.signal(libc::SIGTERM);
    t.wait_not_ready();
    t.signal(libc::SIGTERM);
    t.expect_exit_0_within(SETTLE);
    let _ = std::fs::remove_dir_all(&dir);
}
