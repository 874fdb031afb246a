//! The kernel fast path's loader end to end (docs/xdp.md, step 1): turnd attaches its XDP
//! program in the mode asked for, the program's counters reach `/metrics`, a crashed turnd
//! leaves nothing on the interface, a mode that cannot be had is refused in one line (or, with
//! `auto`, replaced by user space), and CAP_BPF with CAP_NET_ADMIN are all it needs.
//!
//! Each test builds two namespaces joined by a veth pair:
//!
//! ```text
//!   cli 10.77.0.2, fd77::2 ── veth ── 10.77.0.1, fd77::1 relay (turnd, XDP on veth-r)
//! ```
//!
//! Needs root, `ip` and `setpriv`, and a kernel with XDP links and BTF (5.18 or later); a
//! missing one fails the test, never skips it. Built only with `--features external,xdp`
//! (`.ci/run` does): the binary under test must carry the program.

mod common;

use common::netns::{self, ip, run_in, Namespaces, COMMAND_TIMEOUT};
use common::{http_body, http_get, require_tool, Proc};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

const RELAY_V4: &str = "10.77.0.1";
const RELAY_V6: &str = "fd77::1";

struct Topology {
    ns: Namespaces,
    relay: String,
    cli: String,
}

fn topology() -> Topology {
    netns::require_root("xdp.rs", "network namespaces and XDP programs");
    let ns = Namespaces::create("xdp", &["relay", "cli"]);
    let (relay, cli) = (ns.name("relay"), ns.name("cli"));
    netns::veth(&relay, "veth-r", &cli, "veth-c");
    ip(&relay, "addr add fd77::1/64 dev veth-r nodad");
    ip(&cli, "addr add fd77::2/64 dev veth-c nodad");
    netns::address(&relay, "veth-r", "10.77.0.1/24");
    netns::address(&cli, "veth-c", "10.77.0.2/24");
    Topology { ns, relay, cli }
}

/// turnd in the relay namespace on both addresses, with `extra` flags.
fn turnd(t: &Topology, extra: &[&str]) -> (Proc, SocketAddr) {
    let mut args = vec![
        "--listen",
        "10.77.0.1:3478",
        "--listen",
        "[fd77::1]:3478",
        "--user",
        "alice:alice-pw",
        "--realm",
        "xdp.test",
    ];
    args.extend_from_slice(extra);
    netns::spawn_turnd(&t.relay, &args)
}

/// The XDP mode `ip link show veth-r` in the relay namespace reports: `generic` (the word
/// `xdpgeneric` in its first line), `native` (`xdp`), or `None`.
fn xdp_on_interface(t: &Topology) -> Option<&'static str> {
    let out = Command::new("ip")
        .args(["-n", &t.relay, "-d", "link", "show", "veth-r"])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    [("xdpgeneric", "generic"), ("xdp", "native")]
        .into_iter()
        .find(|(word, _)| first.split_whitespace().any(|w| w == *word))
        .map(|(_, mode)| mode)
}

/// One metric's value in the relay namespace's `/metrics`.
fn metric(t: &Topology, admin: SocketAddr, series: &str) -> Option<u64> {
    let raw = run_in(&t.relay, || http_get(admin, "/metrics"));
    http_body(&raw).lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// From the client namespace: `n` ChannelData messages (channel 0x4000, 5 bytes of data, one
/// padded to 8) and two STUN Binding requests, to `to`.
fn send_mix(t: &Topology, to: SocketAddr, n: usize) {
    run_in(&t.cli, || {
        let bind: SocketAddr = if to.is_ipv6() {
            "[::]:0".parse().unwrap()
        } else {
            "0.0.0.0:0".parse().unwrap()
        };
        let s = UdpSocket::bind(bind).expect("bind");
        for i in 0..n {
            let mut cd = vec![0x40, 0x00, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o'];
            if i == 0 {
                cd.extend_from_slice(&[0, 0, 0]);
            }
            s.send_to(&cd, to).expect("send ChannelData");
        }
        let mut binding = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        binding.extend_from_slice(&[7; 12]);
        for _ in 0..2 {
            s.send_to(&binding, to).expect("send Binding");
        }
    });
}

/// Waits (bounded) until `series` reads `want`; panics with the last reading otherwise.
fn wait_metric(t: &Topology, admin: SocketAddr, series: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    // Bounded: one scrape per 50 ms for 5 s.
    loop {
        let got = metric(t, admin, series);
        if got == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{series}: {got:?}, want {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Attached in `mode`, counting both families into `/metrics`; after `kill -9` the interface
/// carries no program.
fn attaches_counts_and_goes_with_the_process(mode: &str) {
    let t = topology();
    let (mut turnd, admin) = turnd(&t, &["--xdp", mode]);
    assert_eq!(xdp_on_interface(&t), Some(mode), "{}", turnd.output());
    assert_eq!(metric(&t, admin, "turnd_xdp_interfaces"), Some(1));
    send_mix(&t, format!("{RELAY_V4}:3478").parse().unwrap(), 7);
    send_mix(&t, format!("[{RELAY_V6}]:3478").parse().unwrap(), 3);
    wait_metric(&t, admin, "turnd_xdp_channeldata_total{family=\"ipv4\"}", 7);
    wait_metric(&t, admin, "turnd_xdp_channeldata_total{family=\"ipv6\"}", 3);
    wait_metric(
        &t,
        admin,
        "turnd_xdp_passed_total{reason=\"not_channeldata\"}",
        4,
    );
    // The ChannelData still reached turnd (the program passes everything so far): no
    // allocation, so each is a drop of that reason.
    wait_metric(
        &t,
        admin,
        "turnd_datagrams_dropped_total{reason=\"no_allocation\"}",
        10,
    );
    // SIGKILL by PID: no clean-up code runs, the bpf_link goes with the process.
    let pid = turnd.id().to_string();
    netns::run("kill", &["-9", &pid]);
    assert!(turnd.wait_timeout(COMMAND_TIMEOUT).is_some());
    assert_eq!(xdp_on_interface(&t), None, "left attached after kill -9");
    // And a clean stop (SIGTERM, no allocation to wait for) detaches it too.
    let (mut again, _) = crate::turnd(&t, &["--xdp", mode, "--drain-timeout", "1"]);
    assert_eq!(xdp_on_interface(&t), Some(mode));
    netns::run("kill", &["-TERM", &again.id().to_string()]);
    let status = again
        .wait_timeout(COMMAND_TIMEOUT)
        .expect("turnd exits on SIGTERM");
    assert!(status.success(), "{}", again.output());
    assert_eq!(xdp_on_interface(&t), None, "left attached after SIGTERM");
    drop(t.ns);
}

#[test]
fn generic_mode_attaches_counts_and_goes_with_the_process() {
    attaches_counts_and_goes_with_the_process("generic");
}

#[test]
fn native_mode_attaches_counts_and_goes_with_the_process() {
    attaches_counts_and_goes_with_the_process("native");
}

/// `native`/`generic` refuse to start in one line when they cannot attach; `auto` warns once
/// and relays in user space.
#[test]
fn a_mode_that_cannot_be_had_is_refused_or_replaced() {
    let t = topology();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &t.relay, env!("CARGO_BIN_EXE_turnd")])
        .args(["--listen", "10.77.0.1:3478", "--user", "a:b"])
        .args(["--xdp", "native", "--xdp-interface", "nosuch0"]);
    common::without_turnd_env(&mut cmd);
    let mut refused = Proc::spawn("turnd --xdp native", cmd);
    let status = refused.wait_timeout(COMMAND_TIMEOUT).expect("exits");
    assert!(!status.success());
    let out = refused.output();
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("xdp")).collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(
        lines[0].contains("cannot attach to nosuch0"),
        "{}",
        lines[0]
    );

    let (turnd, admin) = turnd(&t, &["--xdp", "auto", "--xdp-interface", "nosuch0"]);
    assert!(
        turnd.output().contains("relaying in user space only"),
        "{}",
        turnd.output()
    );
    assert_eq!(metric(&t, admin, "turnd_xdp_interfaces"), None);
    assert_eq!(xdp_on_interface(&t), None);
    drop(turnd);
    drop(t.ns);
}

/// As an unprivileged user with only CAP_BPF and CAP_NET_ADMIN, turnd attaches; with
/// CAP_NET_ADMIN alone it is refused, naming what it needs.
#[test]
fn cap_bpf_and_cap_net_admin_suffice() {
    require_tool("setpriv");
    let t = topology();
    let run_with = |caps: &str| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &t.relay, "setpriv"])
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(format!("--inh-caps=-all,{caps}"))
            .arg(format!("--ambient-caps=-all,{caps}"))
            .arg(format!("--bounding-set=-all,{caps}"))
            .arg(env!("CARGO_BIN_EXE_turnd"))
            .args(["--listen", "10.77.0.1:3478", "--user", "a:b"])
            .args(["--xdp", "generic", "--metrics-listen", "127.0.0.1:0"]);
        common::without_turnd_env(&mut cmd);
        Proc::spawn("turnd (setpriv)", cmd)
    };
    let mut ok = run_with("+bpf,+net_admin");
    ok.wait_for_line("turnd metrics http://", COMMAND_TIMEOUT);
    assert_eq!(xdp_on_interface(&t), Some("generic"), "{}", ok.output());
    drop(ok);

    let mut refused = run_with("+net_admin");
    let status = refused.wait_timeout(COMMAND_TIMEOUT).expect("exits");
    assert!(!status.success());
    assert!(
        refused.output().contains("needs CAP_BPF"),
        "{}",
        refused.output()
    );
    drop(t.ns);
}
