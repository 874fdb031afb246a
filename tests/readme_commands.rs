//! The commands a newcomer types first, run exactly as written.
//!
//! - README.md's quick start: the run command is read from the fenced block under the
//!   "Quick start" heading and run with `sh -c` from the repository root — so a fresh checkout's
//!   `cargo run --release -- --config config/turnd.toml` must build and start the server. Once
//!   it answers a STUN Binding, `turnd probe` relays through it with the demo user of
//!   `config/turnd.toml` over UDP and TCP and must report data echoed both ways (Send/Data and
//!   ChannelData); then the command's whole process group is stopped by its id.
//! - README.md names the test command, `.ci/run`, and that file exists and is executable.
//! - `config/turnd.toml`'s header comment: every `turnd …` command it shows is run the same way
//!   with the built binary as `turnd` on PATH — the server command relays like the above,
//!   `check-config` prints the effective configuration with secrets redacted.
//!
//! The demo configuration listens on 127.0.0.1:3478 (and its admin listener on
//! 127.0.0.1:9641), fixed ports: the tests here take turns, no other test in the suite uses
//! those ports on the host's loopback, and if something else holds them the test fails saying
//! what to stop — it never skips. The run command builds in release: minutes on a fresh
//! checkout (`.ci/run` builds in release before the tests, so in CI it is a no-op).

mod common;

use common::{run_tool, stun_binding, Proc, ScratchDir};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// Where `config/turnd.toml` serves TURN and its admin listener; checked against the file.
const DEMO_LISTEN: &str = "127.0.0.1:3478";
const DEMO_ADMIN: &str = "127.0.0.1:9641";
/// The demo user of `config/turnd.toml`; checked against the file.
const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "demo-password";

/// A release build of the whole crate on a loaded 2-core machine takes minutes; in CI the
/// build was done before the tests and this is seconds.
const BUILD_AND_START: Duration = Duration::from_secs(30 * 60);
/// How long a started server may take to exit after SIGTERM (no allocation left: at once).
const STOP: Duration = Duration::from_secs(30);

/// The tests of this file share the demo's fixed ports, so they run one at a time.
static DEMO_PORTS: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The lines of the section under the heading `## {title}` (to the next `## ` heading).
fn section<'a>(markdown: &'a str, title: &str) -> Vec<&'a str> {
    let heading = format!("## {title}");
    let mut lines = markdown.lines();
    lines
        .by_ref()
        .find(|l| l.trim_end() == heading)
        .unwrap_or_else(|| panic!("README.md has no `{heading}` heading"));
    lines.take_while(|l| !l.starts_with("## ")).collect()
}

/// The fenced code blocks (```) of `lines`, each as its text. An unclosed fence is an error.
fn fenced_blocks(lines: &[&str]) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut open: Option<Vec<&str>> = None;
    for l in lines {
        match (&mut open, l.trim_start().starts_with("```")) {
            (None, true) => open = Some(Vec::new()),
            (Some(b), true) => {
                blocks.push(b.join("\n"));
                open = None;
            }
            (Some(b), false) => b.push(l),
            (None, false) => {}
        }
    }
    assert!(
        open.is_none(),
        "an unclosed ``` fence in:\n{}",
        lines.join("\n")
    );
    blocks
}

/// The one fenced block under "Quick start" that contains `needle`.
fn quick_start_block(needle: &str) -> String {
    let readme = read("README.md");
    let blocks = fenced_blocks(&section(&readme, "Quick start"));
    let found: Vec<&String> = blocks.iter().filter(|b| b.contains(needle)).collect();
    assert_eq!(
        found.len(),
        1,
        "README.md's quick start must have exactly one fenced block with `{needle}`; blocks:\n{blocks:#?}"
    );
    found[0].clone()
}

/// Fails, naming what to stop, unless the demo's fixed ports are free.
fn assert_demo_ports_free() {
    let hint = "the demo configuration (config/turnd.toml) listens there: stop whatever holds \
                it (`ss -lntup | grep -E ':3478|:9641'`; a coturn installed from Debian packages \
                may run turnserver on 3478) and run the test again";
    if let Err(e) = UdpSocket::bind(DEMO_LISTEN) {
        panic!("udp {DEMO_LISTEN} is not free ({e}): {hint}");
    }
    for addr in [DEMO_LISTEN, DEMO_ADMIN] {
        if let Err(e) = TcpListener::bind(addr) {
            panic!("tcp {addr} is not free ({e}): {hint}");
        }
    }
}

/// The demo's address, admin address, user and peer filter, as the tests assume them, are what
/// `config/turnd.toml` says — read with turnd's own loader, so the check follows the file
/// whatever its layout.
fn assert_demo_config() {
    let args = turnd::config::ConfigArgs {
        config: Some(repo().join("config/turnd.toml")),
        ..Default::default()
    };
    let c = turnd::config::load_from(&args, &Default::default())
        .unwrap_or_else(|e| panic!("config/turnd.toml does not load: {e}"));
    let listen: SocketAddr = DEMO_LISTEN.parse().unwrap();
    let admin: SocketAddr = DEMO_ADMIN.parse().unwrap();
    assert_eq!(
        c.listen,
        [listen],
        "the demo's listen: update this test with the demo"
    );
    assert_eq!(
        c.metrics_listen, admin,
        "the demo's metrics_listen: update DEMO_ADMIN"
    );
    assert_eq!(
        c.users,
        [turnd::config::User::with_password(DEMO_USER, DEMO_PASSWORD)],
        "the demo user: update this test with the demo"
    );
    let allow: Vec<String> = c.allow_peers.iter().map(|p| p.to_string()).collect();
    assert_eq!(allow, ["127.0.0.0/8"], "the demo's allow_peers");
}

/// `sh -c SCRIPT` from the repository root, in a process group of its own so that everything
/// it starts (cargo, then turnd) can be signalled at once. Stopped by the group's id on drop.
struct Group {
    proc: Proc,
    pgid: libc::pid_t,
}

impl Group {
    fn start(script: &str, path: Option<&Path>) -> Group {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .current_dir(repo())
            .process_group(0);
        // A fresh machine sets no TURND_* variable; one in the test's environment would
        // change the demo's configuration.
        common::without_turnd_env(&mut cmd);
        if let Some(dir) = path {
            cmd.env("PATH", with_path(dir));
        }
        let proc = Proc::spawn(script, cmd);
        let pgid = libc::pid_t::try_from(proc.id()).expect("pid fits pid_t");
        Group { proc, pgid }
    }

    /// Waits (bounded) until the server answers a Binding on `addr`; fails if the command
    /// exits first.
    fn wait_until_answering(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + BUILD_AND_START;
        // Bounded: each round is at most 200 ms of Binding timeout plus 300 ms of sleep.
        loop {
            if stun_binding(addr, Duration::from_millis(200)).is_some() {
                return;
            }
            if let Some(status) = self.proc.try_wait() {
                panic!(
                    "the command exited ({status}) before the server answered on {addr}:\n{}",
                    self.proc.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no Binding answer on {addr} within {BUILD_AND_START:?}:\n{}",
                self.proc.output()
            );
            thread::sleep(Duration::from_millis(300));
        }
    }

    /// SIGTERM to the whole group (SIGKILL if it outlives [`STOP`]), then waits for the shell.
    fn stop(&mut self) {
        self.signal_group(libc::SIGTERM);
        if self.proc.wait_timeout(STOP).is_none() {
            self.signal_group(libc::SIGKILL);
        }
    }

    fn signal_group(&self, sig: libc::c_int) {
        // SAFETY: kill(2) with a negative pid signals the process group we created for this
        // command (`process_group(0)` made the shell its leader); ESRCH once all are gone.
        unsafe { libc::kill(-self.pgid, sig) };
    }

    fn output(&self) -> String {
        self.proc.output()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // The shell's own handle is killed by `Proc`'s drop; cargo and turnd with the group.
        self.signal_group(libc::SIGKILL);
    }
}

/// `dir` in front of the inherited PATH.
fn with_path(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).expect("PATH entries without ':'")
}

/// `turnd probe` through the running demo server with the demo user, over `transport`; it must
/// report every payload echoed through the relays with Send/Data and with ChannelData.
fn assert_probe_relays(transport: &str) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnd"));
    cmd.args([
        "probe",
        &format!("turn:{DEMO_LISTEN}?transport={transport}"),
        "--user",
        DEMO_USER,
        "--password",
        DEMO_PASSWORD,
        "--json",
    ]);
    let (status, out) = run_tool("turnd probe", cmd, Duration::from_secs(60));
    assert!(status.success(), "probe over {transport} failed:\n{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON object in the probe's output:\n{out}"));
    let j: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{line}"));
    assert_eq!(j["success"], true, "{out}");
    for echo in ["send_data", "channel_data"] {
        let sent = j[echo]["sent"].as_u64().unwrap_or(0);
        assert!(sent > 0, "no {echo} payload sent:\n{out}");
        assert_eq!(
            j[echo]["received"].as_u64(),
            Some(sent),
            "{echo}: not every payload came back through the relays:\n{out}"
        );
    }
}

/// What the server's start-up output must say, each once: where it listens, the admin
/// listener, what clients are told, the addresses of this host it never relays to, and the
/// loopback warning with its fix.
fn assert_startup_summary(out: &str) {
    for want in [
        format!("turnd listening udp {DEMO_LISTEN}"),
        format!("turnd listening tcp {DEMO_LISTEN}"),
        format!("turnd metrics http://{DEMO_ADMIN}"),
        "turnd relay 127.0.0.1 ports 49152-65535: clients are told 127.0.0.1".to_string(),
    ] {
        let n = out.lines().filter(|l| l.trim_end() == want).count();
        assert_eq!(n, 1, "`{want}` printed {n} times:\n{out}");
    }
    let own: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("turnd own host, never a peer but for the relay ports:"))
        .collect();
    assert_eq!(own.len(), 1, "the own-host line once:\n{out}");
    assert!(
        own[0].contains(" 127.0.0.1"),
        "the listen IP is own:\n{out}"
    );
    let listening = out.lines().filter(|l| l.contains("listening")).count();
    assert_eq!(listening, 2, "a listener announced twice:\n{out}");
    let warning: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("relay address 127.0.0.1 is not public"))
        .collect();
    assert_eq!(warning.len(), 1, "{out}");
    assert!(warning[0].contains("external_ips"), "{out}");
}

/// Runs `script` (a command that starts the demo server), probes it, runs `also` while it
/// serves, stops it, and checks that nothing of it is left on the demo's ports.
fn run_demo_server(script: &str, path: Option<&Path>, also: impl FnOnce()) {
    let _turn = DEMO_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    assert_demo_config();
    assert_demo_ports_free();
    let listen: SocketAddr = DEMO_LISTEN.parse().expect("demo address");
    let mut group = Group::start(script, path);
    group.wait_until_answering(listen);
    assert_probe_relays("udp");
    assert_probe_relays("tcp");
    also();
    assert_startup_summary(&group.output());
    group.stop();
    // Nothing the command started still holds the ports (bounded: 5 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    while UdpSocket::bind(DEMO_LISTEN).is_err() {
        assert!(
            Instant::now() < deadline,
            "udp {DEMO_LISTEN} still held after the group stopped:\n{}",
            group.output()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn readme_run_command_starts_a_server_that_relays() {
    let block = quick_start_block("-- --config ");
    let commands: Vec<&str> = block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        commands,
        ["cargo run --release -- --config config/turnd.toml"],
        "the quick start's run block changed: keep it one command that starts the demo"
    );
    // The quick start's own check, also exactly as written, while the server runs.
    let probe = quick_start_block("-- probe ");
    run_demo_server(&block, None, || {
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(&probe).current_dir(repo());
        let (status, out) = run_tool(&probe, sh, Duration::from_secs(10 * 60));
        assert!(status.success(), "`{probe}` failed:\n{out}");
        assert!(
            out.contains("OK: data went through the relay and came back"),
            "`{probe}` did not report the round trip:\n{out}"
        );
    });
}

#[test]
fn readme_names_the_test_command_and_it_is_executable() {
    use std::os::unix::fs::PermissionsExt;
    let block = quick_start_block(".ci/run");
    assert_eq!(block.trim(), ".ci/run", "the quick start's test block");
    let meta = std::fs::metadata(repo().join(".ci/run")).expect(".ci/run exists");
    assert!(meta.is_file(), ".ci/run is not a file");
    assert_ne!(
        meta.permissions().mode() & 0o111,
        0,
        ".ci/run is not executable"
    );
}

/// The `turnd …` commands of `config/turnd.toml`'s header comment (`# what:   turnd ARGS`),
/// with the placeholder `FILE` as the file itself.
fn config_header_commands() -> Vec<String> {
    let toml = read("config/turnd.toml");
    let commands: Vec<String> = toml
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| {
            let (_, rest) = l.split_once(":  ")?;
            let cmd = rest.trim();
            cmd.starts_with("turnd ").then(|| cmd.to_string())
        })
        .collect();
    assert!(
        commands.len() >= 2,
        "config/turnd.toml's header shows fewer than two `turnd …` commands \
         (`# what:   turnd ARGS` lines): {commands:?}"
    );
    commands
        .into_iter()
        .map(|c| {
            c.split(' ')
                .map(|w| if w == "FILE" { "config/turnd.toml" } else { w })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// A directory with `turnd` (the binary under test) in it, for PATH.
fn turnd_on_path() -> ScratchDir {
    let dir = ScratchDir::new("readme-path");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_turnd"), dir.path().join("turnd"))
        .expect("symlink turnd");
    dir
}

#[test]
fn config_header_commands_work_as_written() {
    let commands = config_header_commands();
    let bin = turnd_on_path();
    let mut seen = Vec::new();
    for cmd in &commands {
        let sub = cmd.split_whitespace().nth(1).unwrap_or_default();
        if sub.starts_with('-') {
            // No subcommand: the server itself.
            run_demo_server(cmd, Some(bin.path()), || {});
            seen.push("server");
        } else if sub == "check-config" {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(cmd)
                .current_dir(repo())
                .env("PATH", with_path(bin.path()));
            common::without_turnd_env(&mut sh);
            let (status, out) = run_tool(cmd, sh, Duration::from_secs(60));
            assert!(status.success(), "`{cmd}` failed:\n{out}");
            // The effective configuration, secrets redacted.
            for want in [
                "realm = \"turnd.local\"",
                "name = \"demo\"",
                &format!("\"{DEMO_LISTEN}\""),
            ] {
                assert!(out.contains(want), "`{cmd}` printed no `{want}`:\n{out}");
            }
            assert!(
                !out.contains(DEMO_PASSWORD),
                "`{cmd}` printed the password:\n{out}"
            );
            seen.push("check-config");
        } else {
            panic!("config/turnd.toml's header shows `{cmd}`: teach this test to run it");
        }
    }
    assert!(
        seen.contains(&"server") && seen.contains(&"check-config"),
        "{commands:?}"
    );
}

#[test]
fn check_config_names_the_key_at_fault() {
    // The header's promise for a broken file: every problem found, each naming its key.
    let bin = turnd_on_path();
    let dir = ScratchDir::new("readme-bad-config");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "listen = [\"127.0.0.1:3478\"]\nrelay_portz = \"1-2\"\n",
    )
    .expect("write bad.toml");
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("turnd check-config --config {}", bad.display()))
        .current_dir(repo())
        .env("PATH", with_path(bin.path()));
    let (status, out) = run_tool("turnd check-config", sh, Duration::from_secs(60));
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains("relay_portz"),
        "the error names no key:\n{out}"
    );
}
