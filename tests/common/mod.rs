//! Harness for the integration tests that drive a real server process with real third-party
//! clients (coturn's `turnutils_*`, the `turn` crate, aiortc).
//!
//! The server under test is `turnd` (the binary Cargo built for this test run). Setting
//! `TURN_TEST_SERVER=coturn` runs the same tests against coturn's `turnserver` with equivalent
//! settings instead; that mode is how these tests were validated before turnd existed, and it
//! stays useful for comparison runs ("is this a client quirk or a turnd bug?").
//!
//! Rules every helper here follows:
//! - A missing tool is a test failure with an actionable message, never a skip.
//! - Every wait is bounded in time and every loop in count.
//! - A child process is killed through its own `Child` handle when its guard drops, and its
//!   stdout/stderr are drained by threads into a buffer, so a full pipe never blocks it and the
//!   output can be shown when a test fails.

// Each test crate includes this module and uses a different subset of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub mod netns;
pub mod readings;
pub mod redis;

/// Realm, user and password every spawned server is configured with.
pub const REALM: &str = "turnd.test";
pub const USER: &str = "alice";
pub const PASSWORD: &str = "alice-pw";

/// How long a server may take to report that it listens.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The line turnd prints on stdout for each bound UDP listener.
const LISTENING_PREFIX: &str = "turnd listening udp ";

/// Which server implementation the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Turnd,
    Coturn,
}

impl ServerKind {
    /// `TURN_TEST_SERVER=coturn` selects coturn; unset or `turnd` selects turnd.
    pub fn from_env() -> ServerKind {
        match std::env::var("TURN_TEST_SERVER").as_deref() {
            Err(_) | Ok("") | Ok("turnd") => ServerKind::Turnd,
            Ok("coturn") => ServerKind::Coturn,
            Ok(other) => panic!("TURN_TEST_SERVER={other:?}: expected \"turnd\" or \"coturn\""),
        }
    }
}

/// Panics unless `name` is an executable on PATH; returns its path.
///
/// Tests that need a third-party tool call this first, so a machine without it fails loudly
/// instead of silently testing less.
pub fn require_tool(name: &str) -> PathBuf {
    if let Some(path) = find_on_path(name) {
        return path;
    }
    panic!(
        "required tool `{name}` not found on PATH: {}. This is a tier-2 test (feature \
         `external`, tests/README.md); `.ci/run` installs every tool they need, and plain \
         `cargo test` runs without them",
        install_hint(name)
    );
}

/// How to get tool `name` on Debian (the packages `.ci/run` installs).
fn install_hint(name: &str) -> &'static str {
    match name {
        n if n == "turnserver" || n.starts_with("turnutils_") => {
            "install the Debian package coturn (`apt-get install -y --no-install-recommends coturn`)"
        }
        "promtool" | "prometheus" => "install the Debian package prometheus",
        "chromium" => "install the Debian package chromium",
        "podman" | "runc" => "install the Debian packages podman and runc",
        "ip" => "install the Debian package iproute2",
        "iptables" => "install the Debian package iptables",
        "unshare" => "install the Debian package util-linux",
        "kubernetes-validate" => {
            "`python3 -m pip install -r tests/requirements-deploy.txt` (PIP_BREAK_SYSTEM_PACKAGES=1 \
             on Debian)"
        }
        "python3" => {
            "install python3 and pip (Debian packages python3 python3-pip), then \
             `python3 -m pip install -r tests/aiortc/requirements.txt -r \
             tests/requirements-deploy.txt`"
        }
        _ => "install it",
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// A free UDP port on 127.0.0.1, for tools that cannot bind port 0 themselves (coturn,
/// `turnutils_peer`). The port is released before returning, so another process could take it
/// in between; callers that can detect that (bind failure) retry a bounded number of times.
pub fn free_udp_port() -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port on 127.0.0.1");
    sock.local_addr()
        .expect("local_addr of a bound socket")
        .port()
}

/// A port `p` with `p` and `p + 1` both free on 127.0.0.1 (for a server that binds a pair).
pub fn free_udp_port_pair() -> u16 {
    // Bounded: 100 tries; another process may hold the port above any one we are given.
    for _ in 0..100 {
        let low = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port on 127.0.0.1");
        let port = low
            .local_addr()
            .expect("local_addr of a bound socket")
            .port();
        if port < u16::MAX && UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two adjacent free UDP ports on 127.0.0.1 in 100 tries");
}

/// A fresh scratch directory under the system temp dir, removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> ScratchDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("turnd-itest-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        ScratchDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process whose stdout and stderr are drained into a shared buffer by two threads.
/// Dropping it kills the child through its own handle and reaps it.
pub struct Proc {
    name: String,
    child: Child,
    output: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and both output streams captured. Each complete stdout
    /// line is also passed to `on_stdout_line` (used to spot the "listening" line).
    pub fn spawn_with(
        name: &str,
        mut cmd: Command,
        on_stdout_line: impl Fn(&str) + Send + 'static,
    ) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {name} ({cmd:?}): {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout was piped");
        let stderr = child.stderr.take().expect("stderr was piped");
        let out_buf = Arc::clone(&output);
        let err_buf = Arc::clone(&output);
        let readers = vec![
            thread::spawn(move || drain_lines(stdout, &out_buf, "", on_stdout_line)),
            thread::spawn(move || drain_lines(stderr, &err_buf, "[stderr] ", |_| {})),
        ];
        Proc {
            name: name.to_string(),
            child,
            output,
            readers,
        }
    }

    pub fn spawn(name: &str, cmd: Command) -> Proc {
        Proc::spawn_with(name, cmd, |_| {})
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process printed so far (stderr lines prefixed with `[stderr] `).
    pub fn output(&self) -> String {
        self.output.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// `Some(status)` once the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait on own child")
    }

    /// Waits for the process to exit by itself within `timeout`, then for its output to be fully
    /// drained. Returns `None` (after killing it) if it did not exit in time.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        // Bounded: one iteration per 20 ms until the deadline.
        let status = loop {
            if let Some(status) = self.try_wait() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                break None;
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.join_readers();
        status
    }

    /// Waits (bounded by `timeout`) for a line of output starting with `prefix` and returns the
    /// rest of it, trimmed. Panics, showing the output, if the process exits first or the time
    /// runs out.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        // Bounded: one look per 20 ms until the deadline.
        loop {
            let out = self.output();
            if let Some(rest) = out.lines().find_map(|l| l.strip_prefix(prefix)) {
                return rest.trim().to_string();
            }
            if let Some(status) = self.try_wait() {
                panic!(
                    "{} exited ({status}) before printing `{prefix}`:\n{out}",
                    self.name
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not print `{prefix}` within {timeout:?}:\n{out}",
                self.name
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        // The process may already have exited; both calls are then harmless.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn join_readers(&mut self) {
        // The readers end at EOF, which comes when the child (the only writer) is gone.
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        self.join_readers();
        if thread::panicking() {
            eprintln!(
                "----- output of {} (pid {}) -----\n{}",
                self.name,
                self.child.id(),
                self.output()
            );
            eprintln!("----- end of {} output -----", self.name);
        }
    }
}

fn drain_lines(stream: impl Read, buf: &Mutex<String>, prefix: &str, on_line: impl Fn(&str)) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    // Bounded by the stream: ends at EOF or on a read error.
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                on_line(text);
                if let Ok(mut b) = buf.lock() {
                    b.push_str(prefix);
                    b.push_str(text);
                    b.push('\n');
                }
            }
        }
    }
}

/// Runs a client tool to completion (bounded by `timeout`) and returns its exit status and
/// combined output. Panics, showing the output, if it does not finish in time.
pub fn run_tool(name: &str, cmd: Command, timeout: Duration) -> (ExitStatus, String) {
    let mut proc = Proc::spawn(name, cmd);
    match proc.wait_timeout(timeout) {
        Some(status) => (status, proc.output()),
        None => panic!(
            "{name} did not finish within {timeout:?}; its output:\n{}",
            proc.output()
        ),
    }
}

/// Removes every `TURND_*` variable from `cmd`'s environment. turnd reads them as config (and
/// rejects unknown ones): the flags a test gives must be the whole configuration, whatever the
/// environment running the tests holds.
pub fn without_turnd_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TURND_") {
            cmd.env_remove(key);
        }
    }
}

/// A running TURN server under test, killed when dropped.
pub struct TurnServer {
    kind: ServerKind,
    addr: SocketAddr,
    proc: Proc,
    // Holds coturn's pid file and user db; removed on drop (after `proc`, field order).
    _scratch: Option<ScratchDir>,
}

impl TurnServer {
    /// Starts the server selected by `TURN_TEST_SERVER` (turnd by default) on 127.0.0.1 with
    /// an ephemeral port, relay address 127.0.0.1, realm `turnd.test`, user `alice:alice-pw`,
    /// loopback peers allowed (127.0.0.1 by name: it is the relay's own address) and 2
    /// workers, plus `extra_args` (turnd flag syntax).
    pub fn spawn(extra_args: &[&str]) -> TurnServer {
        match ServerKind::from_env() {
            ServerKind::Turnd => TurnServer::spawn_turnd(extra_args),
            ServerKind::Coturn => TurnServer::spawn_coturn(extra_args),
        }
    }

    pub fn spawn_turnd(extra_args: &[&str]) -> TurnServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnd"));
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--relay-ip",
            "127.0.0.1",
            "--realm",
            REALM,
            "--user",
            &format!("{USER}:{PASSWORD}"),
            "--allow-peer",
            "127.0.0.0/8",
            // 127.0.0.1 is the relay's own address: only an entry naming it exactly lets the
            // tests' peers there be reached (the own-host rule), not the /8 above.
            "--allow-peer",
            "127.0.0.1",
            "--workers",
            "2",
            "--metrics-listen",
            "127.0.0.1:0",
        ]);
        cmd.args(extra_args);
        without_turnd_env(&mut cmd);
        let (tx, rx) = mpsc::channel::<String>();
        let tx = Mutex::new(tx);
        let mut proc = Proc::spawn_with("turnd", cmd, move |line| {
            if let Some(rest) = line.strip_prefix(LISTENING_PREFIX) {
                if let Ok(tx) = tx.lock() {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        });
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        // Bounded: one iteration per 50 ms until the deadline.
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(text) => {
                    let addr: SocketAddr = text.parse().unwrap_or_else(|e| {
                        panic!(
                            "turnd printed `{LISTENING_PREFIX}{text}`, not a socket address ({e}); \
                             output:\n{}",
                            proc.output()
                        )
                    });
                    assert_ne!(
                        addr.port(),
                        0,
                        "turnd reported port 0 instead of the bound port"
                    );
                    break addr;
                }
                Err(err) => {
                    if proc.try_wait().is_some() {
                        // Let the readers finish so the whole output is shown.
                        let status = proc
                            .wait_timeout(Duration::from_secs(1))
                            .map_or("still running".to_string(), |s| s.to_string());
                        panic!(
                            "turnd exited ({status}) before printing `{LISTENING_PREFIX}…`; \
                             output:\n{}",
                            proc.output()
                        );
                    }
                    if Instant::now() >= deadline {
                        panic!(
                            "turnd did not print `{LISTENING_PREFIX}…` within {STARTUP_TIMEOUT:?}; \
                             output:\n{}",
                            proc.output()
                        );
                    }
                    if err == mpsc::RecvTimeoutError::Disconnected {
                        // stdout closed but the process lives on: keep polling, slowly.
                        thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        };
        TurnServer {
            kind: ServerKind::Turnd,
            addr,
            proc,
            _scratch: None,
        }
    }

    /// coturn's `turnserver` with settings equivalent to [`TurnServer::spawn_turnd`] (see
    /// [`Coturn::start`]).
    pub fn spawn_coturn(extra_args: &[&str]) -> TurnServer {
        let mut args = vec!["--relay-threads=2".to_string(), "--no-tcp".to_string()];
        args.extend(coturn_args(extra_args));
        let coturn = Coturn::start(&args);
        TurnServer {
            kind: ServerKind::Coturn,
            addr: coturn.addr,
            proc: coturn.proc,
            _scratch: Some(coturn.scratch),
        }
    }

    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// The UDP address clients should use (from turnd's `listening` line).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The server process's own PID (to signal it).
    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// The TLS listening address from turnd's `turnd listening tls` line (printed right after
    /// the UDP one; waits a bounded time for the output reader to see it).
    pub fn tls_addr(&self) -> SocketAddr {
        self.printed_addr("turnd listening tls ")
    }

    /// The admin listener from turnd's `turnd metrics http://ADDR` line.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.printed_addr("turnd metrics http://")
    }

    /// The address on the first output line starting with `prefix`, waiting a bounded time
    /// for the output reader to see it.
    fn printed_addr(&self, prefix: &str) -> SocketAddr {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        // Bounded: one look per 20 ms until the deadline.
        loop {
            let out = self.proc.output();
            if let Some(a) = out.lines().find_map(|l| l.strip_prefix(prefix)) {
                return a.trim().parse().expect("printed address");
            }
            assert!(
                Instant::now() < deadline,
                "no `{prefix}` line; output:\n{out}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the server printed so far.
    pub fn output(&self) -> String {
        self.proc.output()
    }

    /// Panics (showing the server output) if the server has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.proc.try_wait() {
            panic!(
                "server exited unexpectedly ({status}); output:\n{}",
                self.proc.output()
            );
        }
    }
}

/// coturn's `turnserver` on a free port of 127.0.0.1, started by a test and killed by its own
/// handle when dropped.
pub struct Coturn {
    pub addr: SocketAddr,
    pub proc: Proc,
    // Holds the pid file and user db; removed on drop (after `proc`, field order).
    pub scratch: ScratchDir,
}

impl Coturn {
    /// Starts it with no config file, relay IP 127.0.0.1, the harness's realm and user,
    /// loopback peers allowed, no TLS or DTLS, plus `args`; returns once it answers STUN
    /// Binding. coturn cannot bind port 0, so a free port is picked; a lost race for it is
    /// retried a bounded number of times.
    pub fn start(args: &[String]) -> Coturn {
        let turnserver = require_tool("turnserver");
        let mut last_output = String::new();
        for _attempt in 0..3 {
            let scratch = ScratchDir::new("coturn");
            let port = free_udp_port();
            let mut cmd = Command::new(&turnserver);
            cmd.args([
                "-n", // no config file
                "--listening-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                "--relay-ip=127.0.0.1",
                &format!("--realm={REALM}"),
                "--lt-cred-mech",
                &format!("--user={USER}:{PASSWORD}"),
                "--allow-loopback-peers",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--log-file=stdout",
                "--simple-log",
                &format!(
                    "--pidfile={}",
                    scratch.path().join("turnserver.pid").display()
                ),
                &format!("--userdb={}", scratch.path().join("turndb").display()),
            ]);
            cmd.args(args);
            let mut proc = Proc::spawn("coturn turnserver", cmd);
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("valid address");
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            // Bounded: each probe waits ≤ 200 ms, until the deadline.
            while Instant::now() < deadline && proc.try_wait().is_none() {
                if stun_binding(addr, Duration::from_millis(200)).is_some() {
                    return Coturn {
                        addr,
                        proc,
                        scratch,
                    };
                }
            }
            let _ = proc.wait_timeout(Duration::from_millis(100));
            last_output = proc.output();
        }
        panic!("coturn turnserver did not answer STUN Binding within {STARTUP_TIMEOUT:?} (3 attempts); output:\n{last_output}");
    }
}

/// Translates turnd flags into coturn's spelling. Panics on a flag with no mapping here, so a
/// test that needs one fails loudly in coturn mode rather than testing something else.
fn coturn_args(extra: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = extra.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| panic!("flag {flag} needs a value"))
                .to_string()
        };
        match *flag {
            "--user" => out.push(format!("--user={}", value())),
            "--auth-secret" => {
                out.push("--use-auth-secret".to_string());
                out.push(format!("--static-auth-secret={}", value()));
            }
            "--relay-ports" => {
                let v = value();
                let (lo, hi) = v.split_once('-').expect("--relay-ports LOW-HIGH");
                out.push(format!("--min-port={lo}"));
                out.push(format!("--max-port={hi}"));
            }
            "--log-level" => {
                if matches!(value().as_str(), "debug" | "trace") {
                    out.push("--verbose".to_string());
                }
            }
            other => panic!(
                "turnd flag {other} has no coturn equivalent in tests/common/mod.rs (coturn_args)"
            ),
        }
    }
    out
}

/// A bare `GET path` over HTTP/1.1 to the admin listener at `addr` (bounded by a 5 s timeout);
/// the whole response, status line and headers included. [`http_body`] takes the body.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::Write;
    let timeout = Duration::from_secs(5);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).expect("connect");
    s.set_read_timeout(Some(timeout)).expect("set_read_timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw
}

/// The body of an HTTP response (all of it when there is no header end).
pub fn http_body(raw: &str) -> &str {
    raw.split_once("\r\n\r\n").map_or(raw, |(_, b)| b)
}

/// Sends one STUN Binding request from a fresh loopback socket and returns the
/// XOR-MAPPED-ADDRESS of a matching success response, or `None` on timeout or a malformed
/// answer. Used as the readiness probe for coturn.
pub fn stun_binding(server: SocketAddr, timeout: Duration) -> Option<SocketAddr> {
    const MAGIC: u32 = 0x2112_A442;
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(timeout)).ok()?;
    let mut req = [0u8; 20];
    req[0..2].copy_from_slice(&0x0001u16.to_be_bytes());
    req[4..8].copy_from_slice(&MAGIC.to_be_bytes());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    req[8..20].copy_from_slice(&nanos.to_be_bytes()[4..16]);
    sock.send_to(&req, server).ok()?;
    let mut buf = [0u8; 1500];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    let resp = &buf[..n];
    if n < 20 || resp[0..2] != [0x01, 0x01] || resp[8..20] != req[8..20] {
        return None;
    }
    let mut attrs = &resp[20..];
    // Bounded by the datagram length: every step consumes at least 4 bytes.
    while attrs.len() >= 4 {
        let ty = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let padded = (len + 3) & !3;
        let value = attrs.get(4..4 + len)?;
        if ty == 0x0020 && len == 8 && value[1] == 0x01 {
            let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC >> 16) as u16;
            let ip = u32::from_be_bytes([value[4], value[5], value[6], value[7]]) ^ MAGIC;
            return Some(SocketAddr::from((std::net::Ipv4Addr::from(ip), port)));
        }
        attrs = attrs.get(4 + padded..).unwrap_or(&[]);
    }
    None
}

/// coturn's `turnutils_peer` UDP echo server on 127.0.0.1, started by a test and killed by its
/// own handle when dropped.
pub struct EchoPeer {
    addr: SocketAddr,
    proc: Proc,
}

impl EchoPeer {
    /// Starts it on a free port and waits (≤ 5 s) until it echoes a probe datagram.
    pub fn spawn() -> EchoPeer {
        let peer = require_tool("turnutils_peer");
        let mut last_output = String::new();
        for _attempt in 0..3 {
            // turnutils_peer listens on the port and the one above it (RTP/RTCP pairs, where
            // turnutils_uclient sends RTCP), and only logs a failure to bind the second.
            let port = free_udp_port_pair();
            let mut cmd = Command::new(&peer);
            cmd.args(["-L", "127.0.0.1", "-p", &port.to_string()]);
            let mut proc = Proc::spawn("turnutils_peer", cmd);
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("valid address");
            let probe = UdpSocket::bind("127.0.0.1:0").expect("bind probe socket");
            probe
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("set_read_timeout");
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut buf = [0u8; 64];
            let rtcp = SocketAddr::new(addr.ip(), port + 1);
            let mut echoed = [false, false];
            // Bounded: each probe waits ≤ 100 ms, until the deadline.
            while Instant::now() < deadline && proc.try_wait().is_none() {
                for (i, to) in [addr, rtcp].into_iter().enumerate() {
                    if !echoed[i] {
                        let _ = probe.send_to(b"turnd-itest-probe", to);
                    }
                }
                if let Ok((n, from)) = probe.recv_from(&mut buf) {
                    if &buf[..n] == b"turnd-itest-probe" {
                        echoed[0] |= from == addr;
                        echoed[1] |= from == rtcp;
                    }
                }
                if echoed == [true, true] {
                    return EchoPeer { addr, proc };
                }
            }
            let _ = proc.wait_timeout(Duration::from_millis(100));
            last_output = proc.output();
        }
        panic!(
            "turnutils_peer did not echo a probe within 5 s (3 attempts); output:\n{last_output}"
        );
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn output(&self) -> String {
        self.proc.output()
    }
}

/// Starts `cmd` (a turnd) and waits up to `startup` for its start-up lines: the first UDP
/// listening address and the metrics address. Panics with its output when they do not come.
pub fn spawn_turnd(cmd: Command, startup: Duration) -> (Proc, SocketAddr, SocketAddr) {
    let (tx, rx) = std::sync::mpsc::channel::<(bool, SocketAddr)>();
    let tx = std::sync::Mutex::new(tx);
    let proc = Proc::spawn_with("turnd", cmd, move |line| {
        let parsed = if let Some(a) = line.strip_prefix("turnd listening udp ") {
            a.trim().parse().ok().map(|a| (true, a))
        } else if let Some(a) = line.strip_prefix("turnd metrics http://") {
            a.trim().parse().ok().map(|a| (false, a))
        } else {
            None
        };
        if let (Some(p), Ok(tx)) = (parsed, tx.lock()) {
            let _ = tx.send(p);
        }
    });
    let (mut udp, mut metrics) = (None, None);
    let deadline = std::time::Instant::now() + startup;
    // Bounded: two lines, each waited for until the deadline at most.
    while udp.is_none() || metrics.is_none() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((true, a)) => udp = Some(a),
            Ok((false, a)) => metrics = Some(a),
            Err(_) => panic!(
                "turnd printed no listening/metrics line within {startup:?}:\n{}",
                proc.output()
            ),
        }
    }
    // Invariant: the loop ends only once both are set.
    (proc, udp.unwrap(), metrics.unwrap())
}
