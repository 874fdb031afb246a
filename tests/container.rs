//! The container image, built from the repository's `Dockerfile` and run with podman the way
//! docs/deployment.md tells an operator to run it: host networking, configuration from a mounted file
//! (`TURND_CONFIG`) plus `TURND_*` variables, a read-only root, no capabilities.
//!
//! No registry is reachable in CI, so nothing is pulled: the Dockerfile's runtime stage is
//! `FROM scratch`, and its `binary` stage is replaced with `--build-context binary=DIR`, a
//! directory holding a turnd this test builds statically (`-C target-feature=+crt-static`,
//! glibc) — the same binary the Dockerfile's builder stage makes, in the debug profile. The
//! image therefore proves that the binary runs with nothing else in the image.
//!
//! One test, in order: the image's metadata (non-root user, exposed ports, the health check);
//! turnd starts and `/healthz` answers; `podman healthcheck run` (the image's
//! `turnd healthcheck`) passes; coturn's `turnutils_uclient` relays through it with zero loss;
//! `/metrics` counts the relayed bytes both ways; the admin API ends uclient's allocations;
//! `podman stop` sends SIGTERM, turnd drains (`/readyz` 503, `turnd_draining 1`) while one
//! allocation is open, and exits 0 once it ends.
//! The container and the image are removed at the end, whatever happened.
//!
//! podman is required (Debian packages `podman` and `runc`; `.ci/run` installs them): without
//! it this test fails. Where the hard `nofile` limit is below podman's default ulimits, podman
//! cannot start a container; the test gives podman a containers.conf of its own (through
//! `CONTAINERS_CONF`, never touching the machine's) with `default_ulimits = []`.
//!
//! Tier 2 (tests/README.md): built and run only with `cargo test --features external`, which
//! `.ci/run` does.

mod common;
mod raw;

use common::{require_tool, run_tool, EchoPeer, Proc, ScratchDir};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// Building the static turnd from nothing takes minutes on a busy 2-core machine.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const PODMAN_TIMEOUT: Duration = Duration::from_secs(120);
const STARTUP: Duration = Duration::from_secs(30);
const UCLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// turnd's drain_timeout in the container; `podman stop` waits longer before SIGKILL.
const DRAIN_TIMEOUT_S: u32 = 20;
const STOP_TIMEOUT_S: u32 = 60;

#[test]
fn image_builds_relays_reports_metrics_and_drains_on_sigterm() {
    let podman = require_tool("podman");
    let uclient = require_tool("turnutils_uclient");
    let scratch = ScratchDir::new("container");
    let pm = Podman::new(podman, scratch.path());

    // --- the image, from the Dockerfile, with the binary built here ---
    let bin_dir = scratch.path().join("binary");
    std::fs::create_dir_all(&bin_dir).expect("create binary dir");
    let turnd = build_static_turnd();
    assert!(
        !has_elf_interpreter(&turnd),
        "{} is dynamically linked: it would not run in a FROM scratch image",
        turnd.display()
    );
    std::fs::copy(&turnd, bin_dir.join("turnd")).expect("copy turnd into the build context");
    let empty_ctx = scratch.path().join("context");
    std::fs::create_dir_all(&empty_ctx).expect("create empty build context");
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile");
    let tag = format!("localhost/turnd-itest:{}", std::process::id());
    let name = format!("turnd-itest-{}", std::process::id());
    let _cleanup = Cleanup {
        pm: &pm,
        container: name.clone(),
        image: tag.clone(),
    };
    // --format docker: the OCI image format has no HEALTHCHECK, and podman drops it.
    pm.ok(&[
        "build",
        "--format",
        "docker",
        "--layers=false",
        "--build-context",
        &format!("binary={}", bin_dir.display()),
        "-f",
        &dockerfile.display().to_string(),
        "-t",
        &tag,
        &empty_ctx.display().to_string(),
    ]);
    let meta = pm.ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}}|{{json .Config.ExposedPorts}}|{{json .Config.Healthcheck}}",
        &tag,
    ]);
    assert!(
        meta.starts_with("65532:65532|"),
        "not the non-root user: {meta}"
    );
    for port in ["3478/udp", "3478/tcp", "5349/tcp", "9641/tcp"] {
        assert!(meta.contains(port), "{port} not exposed: {meta}");
    }
    assert!(meta.contains("healthcheck"), "no turnd healthcheck: {meta}");

    // --- run it: host network, config file + TURND_* variables, unusual ports ---
    let port = free_port_pair();
    let metrics_port = free_tcp_port();
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().expect("addr");
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let config = scratch.path().join("turnd.toml");
    std::fs::write(
        &config,
        format!(
            "realm = \"{realm}\"\nallow_peers = [\"127.0.0.0/8\", \"127.0.0.1\"]\ndrain_timeout = {DRAIN_TIMEOUT_S}\n\
             [[users]]\nname = \"{user}\"\npassword = \"{pw}\"\n",
            realm = raw::REALM,
            user = raw::ALICE.0,
            pw = raw::ALICE.1,
        ),
    )
    .expect("write turnd.toml");
    pm.ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-v",
        &format!("{}:/etc/turnd/turnd.toml:ro", config.display()),
        "-e",
        "TURND_CONFIG=/etc/turnd/turnd.toml",
        "-e",
        &format!("TURND_LISTEN={server}"),
        "-e",
        "TURND_RELAY_IPS=127.0.0.1",
        "-e",
        &format!("TURND_METRICS_LISTEN={metrics}"),
        "-e",
        "TURND_WORKERS=2",
        &tag,
    ]);
    wait_healthy(&pm, &name, metrics);
    pm.ok(&["healthcheck", "run", &name]);

    // --- real traffic through it ---
    let peer = EchoPeer::spawn();
    let mut cmd = Command::new(uclient);
    cmd.args(["-v", "-c", "-u", raw::ALICE.0, "-w", raw::ALICE.1])
        .args(["-p", &port.to_string()])
        .args(["-e", &peer.addr().ip().to_string()])
        .args(["-r", &peer.addr().port().to_string()])
        .args(["-n", "50", "-m", "2", "-l", "170"])
        .arg("127.0.0.1");
    let (status, out) = run_tool("turnutils_uclient", cmd, UCLIENT_TIMEOUT);
    let context = || {
        format!(
            "uclient output:\n{out}\n--- container logs:\n{}",
            pm.logs(&name)
        )
    };
    assert!(
        status.success(),
        "uclient exited with {status}; {}",
        context()
    );
    assert_eq!(
        number_after_last(&out, "tot_recv_msgs="),
        Some(100),
        "echoes received; {}",
        context()
    );
    assert_eq!(
        number_after_last(&out, "Total lost packets "),
        Some(0),
        "lost; {}",
        context()
    );

    let text = http_get(metrics, "/metrics").1;
    for direction in ["client_to_peer", "peer_to_client"] {
        let bytes = sum_series(&text, "turnd_relayed_bytes_total", direction);
        assert!(bytes > 0.0, "no {direction} bytes counted:\n{text}");
    }
    assert_eq!(sum_series(&text, "turnd_draining", ""), 0.0, "{text}");

    // uclient leaves some allocations open; end them through the admin API, so the drain
    // below waits for exactly one allocation, ours.
    let list: serde_json::Value =
        serde_json::from_str(&http_request(metrics, "GET", "/allocations").1).expect("JSON");
    let ids: Vec<&str> = list["allocations"]
        .as_array()
        .expect("allocations")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    for id in ids {
        let (status, body) = http_request(metrics, "DELETE", &format!("/allocations/{id}"));
        assert_eq!(status, 200, "DELETE /allocations/{id}: {body}");
    }

    // --- SIGTERM drains: one allocation open keeps turnd up until it ends ---
    let mut client = raw::Client::new(server);
    client.allocate();
    let mut stop = Proc::spawn("podman stop", {
        let mut c = pm.command();
        c.args(["stop", "--time", &STOP_TIMEOUT_S.to_string(), &name]);
        c
    });
    wait_until("/readyz answers 503", STARTUP, || {
        http_get(metrics, "/readyz").0 == 503
    });
    let text = http_get(metrics, "/metrics").1;
    assert_eq!(sum_series(&text, "turnd_draining", ""), 1.0, "{text}");
    raw::assert_success(&client.refresh(Some(0)), raw::REFRESH);
    let stopped = stop.wait_timeout(Duration::from_secs(u64::from(STOP_TIMEOUT_S) + 30));
    assert!(
        stopped.is_some_and(|s| s.success()),
        "podman stop: {stopped:?}\n{}",
        stop.output()
    );
    let exit = pm.ok(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    let logs = pm.logs(&name);
    assert_eq!(exit.trim(), "0", "turnd's exit code; logs:\n{logs}");
    assert!(logs.contains("draining"), "no drain in the logs:\n{logs}");
    assert!(
        logs.contains("drained: no allocation left"),
        "turnd did not finish its drain:\n{logs}"
    );

    // --- the kernel fast path, which the release image carries ---
    #[cfg(feature = "xdp")]
    xdp_in_the_image(&pm, &tag, &name);
}

/// The image's turnd attaches its XDP program as its non-root user with only CAP_BPF and
/// CAP_NET_ADMIN added (docs/deployment.md), in a network namespace this test makes; podman's
/// default seccomp profile refuses `bpf(2)` (seen here: "Operation not permitted" at map
/// creation, as root in the container too), so it runs with `seccomp=unconfined`. Without the
/// capabilities, `xdp = "auto"` says so in one line and relays in user space.
#[cfg(feature = "xdp")]
fn xdp_in_the_image(pm: &Podman, tag: &str, base: &str) {
    use common::netns::{self, Namespaces};
    let ns = Namespaces::create("ctr", &["host", "other"]);
    let host = ns.name("host");
    netns::veth(&host, "veth-ctr", &ns.name("other"), "veth-o");
    netns::address(&host, "veth-ctr", "10.77.0.1/24");
    let network = format!("ns:/var/run/netns/{host}");
    let start = |name: &str, caps: &[&str], xdp: &str| {
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            &network,
            "--read-only",
            "--cap-drop",
            "ALL",
        ];
        args.extend_from_slice(caps);
        args.extend_from_slice(&[
            "--security-opt",
            "no-new-privileges",
            "--security-opt",
            "seccomp=unconfined",
            tag,
            "--listen",
            "10.77.0.1:3478",
            "--user",
            "a:b",
            "--metrics-listen",
            "127.0.0.1:0",
            "--xdp",
            xdp,
            "--xdp-interface",
            "veth-ctr",
        ]);
        pm.ok(&args);
        let mut logs = String::new();
        wait_until("turnd listening in the container", STARTUP, || {
            logs = pm.logs(name);
            logs.contains("turnd listening udp 10.77.0.1:3478")
        });
        let _ = pm.run(&["rm", "-f", "--time", "0", name]);
        logs
    };
    let (with, without) = (format!("{base}-xdp"), format!("{base}-noxdp"));
    let _cleanup = [&with, &without].map(|c| Cleanup {
        pm,
        container: c.clone(),
        image: tag.to_string(),
    });
    let logs = start(
        &with,
        &["--cap-add", "BPF", "--cap-add", "NET_ADMIN"],
        "generic",
    );
    assert!(
        logs.contains("xdp: attached") && logs.contains("interface=veth-ctr"),
        "the program was not attached:\n{logs}"
    );
    let logs = start(&without, &[], "auto");
    assert!(
        logs.contains("relaying in user space only") && logs.contains("CAP_BPF"),
        "no one-line reason for the fallback:\n{logs}"
    );
}

/// podman with this test's containers.conf.
struct Podman {
    bin: PathBuf,
    conf: PathBuf,
}

impl Podman {
    fn new(bin: PathBuf, dir: &Path) -> Podman {
        let conf = dir.join("containers.conf");
        // The defaults ask for nofile=1048576, which a container cannot get where the hard
        // limit is lower (this CI machine's is): start containers with podman's own limits.
        std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n")
            .expect("write containers.conf");
        Podman { bin, conf }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("CONTAINERS_CONF", &self.conf);
        c
    }

    fn run(&self, args: &[&str]) -> (ExitStatus, String) {
        let mut c = self.command();
        c.args(args);
        run_tool("podman", c, PODMAN_TIMEOUT)
    }

    /// Runs podman; panics with its output unless it exits 0; returns its output.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let (status, out) = self.run(args);
        assert!(status.success(), "podman {args:?}: {status}\n{out}");
        out
    }

    fn logs(&self, name: &str) -> String {
        self.run(&["logs", name]).1
    }
}

/// Removes this test's container and image, whatever happened.
struct Cleanup<'a> {
    pm: &'a Podman,
    container: String,
    image: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.pm.run(&["rm", "-f", "--time", "0", &self.container]);
        let _ = self.pm.run(&["rmi", "-f", &self.image]);
    }
}

/// Builds turnd as a static executable (glibc, crt-static) in a target directory of its own
/// beside Cargo's, and returns its path. `--target` keeps crt-static off build scripts and
/// proc-macros, which cannot be static.
fn build_static_turnd() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_turnd"));
    // …/target/debug/turnd → …/target/container-static
    let target_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("CARGO_BIN_EXE_turnd is <target>/<profile>/turnd")
        .join("container-static");
    let triple = "x86_64-unknown-linux-gnu";
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--locked", "--bin", "turnd", "--target", triple])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static -C strip=debuginfo",
        )
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    // The Dockerfile's builder turns the kernel fast path on; so does this build when the tests
    // were built with it (.ci/run's tier 2), so the image carries what the release one does.
    if cfg!(feature = "xdp") {
        cmd.args(["--features", "xdp"]);
    }
    let (status, out) = run_tool("cargo build (static turnd)", cmd, BUILD_TIMEOUT);
    assert!(status.success(), "static build failed: {status}\n{out}");
    target_dir.join(triple).join("debug").join("turnd")
}

/// Whether an ELF executable names a program interpreter (PT_INTERP), i.e. needs the dynamic
/// loader — which an empty image does not have.
fn has_elf_interpreter(path: &Path) -> bool {
    let elf = std::fs::read(path).expect("read the executable");
    assert!(
        elf.len() > 64 && &elf[..4] == b"\x7fELF" && elf[4] == 2 && elf[5] == 1,
        "not a 64-bit little-endian ELF"
    );
    let u16_at = |o: usize| usize::from(u16::from_le_bytes([elf[o], elf[o + 1]]));
    let mut off = [0u8; 8];
    off.copy_from_slice(&elf[0x20..0x28]);
    let phoff = usize::try_from(u64::from_le_bytes(off)).expect("program header offset");
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        elf.get(o..o + 4) == Some(&3u32.to_le_bytes()[..]) // PT_INTERP
    })
}

/// A port free for both UDP and TCP on 127.0.0.1 (turnd serves both on its listen port).
fn free_port_pair() -> u16 {
    // Bounded: 20 tries.
    for _ in 0..20 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("bound").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP in 20 tries");
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind TCP")
        .port()
}

/// Waits for `/healthz` to answer 200, failing early (with the logs) if the container stops.
fn wait_healthy(pm: &Podman, name: &str, metrics: SocketAddr) {
    let deadline = Instant::now() + STARTUP;
    // Bounded: one try per 200 ms until the deadline.
    while Instant::now() < deadline {
        if http_get(metrics, "/healthz").0 == 200 {
            return;
        }
        let running = pm
            .run(&["inspect", "--format", "{{.State.Running}}", name])
            .1;
        if running.trim() != "true" {
            panic!(
                "the container stopped ({running}); logs:\n{}",
                pm.logs(name)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "/healthz did not answer 200 within {STARTUP:?}; logs:\n{}",
        pm.logs(name)
    );
}

#[track_caller]
fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    // Bounded: one try per 100 ms until the deadline.
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting until {what}");
}

/// `(status, body)` of an HTTP/1.0 GET; status 0 when nothing answers.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path)
}

fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
        return (0, String::new());
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Sum of the samples of `name` whose labels contain `label_part`.
fn sum_series(text: &str, name: &str, label_part: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name && series.contains(label_part)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The number after the last occurrence of `key` in `out` (uclient's closing statistics).
fn number_after_last(out: &str, key: &str) -> Option<u64> {
    let rest = &out[out.rfind(key)? + key.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}
