//! NAT simulation: why a TURN relay is needed, and that turnd is one that works.
//!
//! Each test builds its own small internet out of network namespaces (root only; names carry
//! the test's PID and a counter, and a guard deletes them all on drop, failure included):
//!
//! ```text
//!   cliA 192.168.1.2 ── 192.168.1.1 natA 198.51.100.10 ─┐
//!                                                        ├─ br0 198.51.100.1  pub (turnd)
//!   cliB 192.168.2.2 ── 192.168.2.1 natB 198.51.100.20 ─┘
//! ```
//!
//! turnd runs in `pub` and is both the STUN server (it answers Binding) and the TURN server.
//! Each NAT namespace forwards its client's traffic out of its `wan` side with one of:
//!
//! - **Symmetric NAT**: `MASQUERADE --random-fully`, so every new destination gets a fresh random
//!   public port (address- and port-dependent mapping), and only established traffic is let
//!   back in. A peer's server-reflexive candidate (the port it used towards the STUN server) is
//!   then useless to the other peer, so STUN-only ICE fails.
//! - **Cone NAT** (the control): plain `MASQUERADE`, which keeps the client's port when it can
//!   (endpoint-independent mapping) with the same established-only filter: a port-restricted
//!   cone, the usual home router. Hole punching works once both sides have sent. One detail
//!   makes it reliable: the NAT router drops everything addressed to itself on `wan` (INPUT).
//!   Without that, the first check to reach a NAT before its own client has sent creates a
//!   conntrack entry for that *inbound* flow (delivered locally, answered with ICMP); the
//!   client's outgoing flow then clashes with it and Linux gives it another port, the mapping is
//!   no longer endpoint-independent and ICE fails (seen every time while writing this test).
//!   Dropping in INPUT means the entry is never confirmed.
//!
//! Two aiortc peers (`tests/nat/peer.py`), one in each client namespace, signal through files
//! and must: with STUN only, fail under symmetric NAT (after gathering server-reflexive
//! candidates) and connect under cone NAT; with turnd as TURN — over UDP and TCP, relay-only,
//! and policy "all" — connect under symmetric NAT, move data-channel messages intact, and
//! nominate a pair with a relay candidate. The relay cases also check turnd's relayed-bytes
//! counters.
//!
//! Addresses: the "public" segment is 198.51.100.0/24 (TEST-NET-2), documentation space that
//! no real network routes, so nothing here can collide with or leak to a real host — and it
//! exists only inside the namespaces. turnd's default peer filter denies it (it denies all
//! documentation ranges), so turnd runs with `--allow-peer 198.51.100.0/24`: the relay's peers
//! are the NATs' public addresses and turnd's own relayed addresses.
//!
//! Needs root, `ip` (iproute2), `iptables`, `sh`, and python3 with aiortc (`.ci/run` installs
//! them); a missing one fails the test, never skips it.
//!
//! Tier 2 (tests/README.md): built and run only with `cargo test --features external`, which
//! `.ci/run` does.

mod common;

use common::netns::{self, in_ns, ip, Namespaces, COMMAND_TIMEOUT};
use common::{require_tool, run_tool, Proc, ScratchDir, PASSWORD, USER};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// turnd's address on the public segment (the bridge in `pub`).
const TURND_IP: &str = "198.51.100.1";
const TURND_PORT: u16 = 3478;
/// The public segment, allowed as relay peers (see the module doc).
const PUBLIC_NET: &str = "198.51.100.0/24";

/// Each peer script's own limit for its whole run; the process gets a margin on top.
const PEER_TIMEOUT_SECS: u64 = 40;
/// STUN retransmissions per transaction in aioice (default 6, about a minute before a check
/// fails): 4 makes a failed check take 0.5+1+2+4+8 s. Same value in every case.
const STUN_RETRIES: &str = "4";
/// Data-channel messages per connecting case, each echoed back.
const MESSAGES: &str = "200";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Nat {
    Symmetric,
    Cone,
}

/// `iptables WORDS…` inside `ns`.
fn iptables(ns: &str, words: &str) {
    in_ns(
        ns,
        "iptables",
        &words.split_whitespace().collect::<Vec<_>>(),
    );
}

/// One test's network: the namespaces and the turnd running in `pub`.
struct Net {
    // Field order is drop order: turnd stops before its namespace goes.
    turnd: Proc,
    _ns: Namespaces,
    pub_ns: String,
    client_a: String,
    client_b: String,
    metrics: SocketAddr,
}

impl Net {
    fn new(nat: Nat) -> Net {
        netns::require_root(
            "nat_namespaces.rs",
            "network namespaces (`ip netns add`) and NAT rules in them",
        );
        require_tool("iptables");
        let ns = Namespaces::create("nat", &["pub", "natA", "natB", "cliA", "cliB"]);
        let (pub_ns, client_a, client_b) = (ns.name("pub"), ns.name("cliA"), ns.name("cliB"));
        let p = pub_ns.as_str();
        ip(p, "link add br0 type bridge");
        ip(p, "link set br0 up");
        ip(p, &format!("addr add {TURND_IP}/24 dev br0"));
        for (i, side) in [(1, "A"), (2, "B")] {
            let (nat_ns, cli) = (
                ns.name(&format!("nat{side}")),
                ns.name(&format!("cli{side}")),
            );
            let (n, c) = (nat_ns.as_str(), cli.as_str());
            netns::veth(p, &format!("port{side}"), n, "wan");
            ip(p, &format!("link set port{side} master br0"));
            ip(p, &format!("link set port{side} up"));
            netns::address(n, "wan", &format!("198.51.100.{}/24", i * 10));
            netns::veth(n, "lan", c, "eth0");
            netns::address(n, "lan", &format!("192.168.{i}.1/24"));
            netns::address(c, "eth0", &format!("192.168.{i}.2/24"));
            ip(c, &format!("route add default via 192.168.{i}.1"));
            // ip_forward is per network namespace; writing it through /proc needs only `sh`.
            in_ns(n, "sh", &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
            match nat {
                Nat::Symmetric => iptables(
                    n,
                    "-t nat -A POSTROUTING -o wan -j MASQUERADE --random-fully",
                ),
                Nat::Cone => iptables(n, "-t nat -A POSTROUTING -o wan -j MASQUERADE"),
            }
            // Back in: only what answers a flow the client opened. Nothing to the router itself
            // (see the module doc for why that matters to the cone control).
            iptables(
                n,
                "-A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            );
            iptables(n, "-A FORWARD -i wan -j DROP");
            iptables(n, "-A INPUT -i wan -j DROP");
        }
        let user = format!("{USER}:{PASSWORD}");
        let (turnd, metrics) = netns::spawn_turnd(
            p,
            &[
                "--listen",
                &format!("{TURND_IP}:{TURND_PORT}"),
                "--relay-ip",
                TURND_IP,
                "--realm",
                common::REALM,
                "--user",
                &user,
                "--allow-peer",
                PUBLIC_NET,
                "--workers",
                "2",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
        );
        Net {
            turnd,
            _ns: ns,
            pub_ns,
            client_a,
            client_b,
            metrics,
        }
    }
}

impl Net {
    /// Sum of turnd's `turnd_relayed_bytes_total` series (both directions) for clients on
    /// `transport`, scraped from inside `pub` (the metrics listener is on that namespace's
    /// loopback) with python3's urllib.
    fn relayed_bytes(&self, transport: &str) -> f64 {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.pub_ns, "python3", "-c"])
            .arg(
                "import sys, urllib.request; \
                 sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())",
            )
            .arg(format!("http://{}/metrics", self.metrics));
        let (status, out) = run_tool("metrics scrape", cmd, COMMAND_TIMEOUT);
        assert!(status.success(), "scraping /metrics failed:\n{out}");
        let label = format!("transport=\"{transport}\"");
        common::readings::sum_samples(&out, "turnd_relayed_bytes_total", &label)
    }

    /// Runs the offerer in cliA and the answerer in cliB with the same `args`, both bounded;
    /// panics (with both outputs and turnd's) unless both exit 0. Returns their outputs.
    fn run_peers(&self, args: &[&str]) -> (String, String) {
        let python = require_tool("python3");
        let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "nat", "peer.py"]
            .iter()
            .collect();
        let signal = ScratchDir::new("nat-signal");
        let peer = |role: &str, ns: &str| {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns])
                .arg(&python)
                .arg(&script)
                .args(["--role", role])
                .arg("--signal-dir")
                .arg(signal.path())
                .args(["--user", USER, "--password", PASSWORD])
                .args(["--count", MESSAGES, "--stun-retries", STUN_RETRIES])
                .args(["--timeout", &PEER_TIMEOUT_SECS.to_string()])
                .args(args);
            cmd
        };
        let limit = Duration::from_secs(PEER_TIMEOUT_SECS + 30);
        let mut offerer = Proc::spawn("peer.py offer (cliA)", peer("offer", &self.client_a));
        let (status_b, out_b) = run_tool(
            "peer.py answer (cliB)",
            peer("answer", &self.client_b),
            limit,
        );
        let status_a = offerer.wait_timeout(limit);
        let out_a = offerer.output();
        let ok = status_a.is_some_and(|s| s.success()) && status_b.success();
        assert!(
            ok,
            "peers failed (offerer {status_a:?}, answerer {status_b}) with {args:?}\n\
             --- offerer (cliA):\n{out_a}\n--- answerer (cliB):\n{out_b}\n--- turnd:\n{}",
            self.turnd.output()
        );
        // Shown with --nocapture: what each peer gathered and which pair it nominated.
        for (name, out) in [("cliA", &out_a), ("cliB", &out_b)] {
            for line in out.lines().filter(|l| {
                l.starts_with("CANDIDATES") || l.starts_with("SELECTED") || l.starts_with("OK")
            }) {
                eprintln!("{name}: {line}");
            }
        }
        (out_a, out_b)
    }
}

/// The value of `key=` on the line starting with `tag` (`CANDIDATES srflx=1` → "1").
fn field<'a>(out: &'a str, tag: &str, key: &str) -> &'a str {
    let line = out
        .lines()
        .find(|l| l.starts_with(tag))
        .unwrap_or_else(|| panic!("no `{tag}` line in:\n{out}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no `{key}=` in `{line}`"))
}

fn count(out: &str, kind: &str) -> u32 {
    field(out, "CANDIDATES", kind)
        .parse()
        .expect("a candidate count")
}

fn stun_url() -> String {
    format!("stun:{TURND_IP}:{TURND_PORT}")
}

fn turn_url(transport: &str) -> String {
    format!("turn:{TURND_IP}:{TURND_PORT}?transport={transport}")
}

#[test]
fn stun_only_fails_under_symmetric_nat_after_gathering_srflx() {
    let net = Net::new(Nat::Symmetric);
    let url = stun_url();
    let (a, b) = net.run_peers(&["--ice-url", &url, "--require-srflx", "--expect", "fail"]);
    for out in [&a, &b] {
        assert!(count(out, "srflx") >= 1, "no srflx candidate:\n{out}");
        assert!(out.contains("OK: ICE failed as expected"), "{out}");
    }
}

#[test]
fn stun_only_connects_under_cone_nat() {
    let net = Net::new(Nat::Cone);
    let url = stun_url();
    let (a, b) = net.run_peers(&["--ice-url", &url, "--require-srflx"]);
    for out in [&a, &b] {
        assert!(count(out, "srflx") >= 1, "no srflx candidate:\n{out}");
        // Hole punching: no relay exists in this case, so the pair is host/srflx on both ends.
        assert_ne!(field(out, "SELECTED", "local"), "relay");
        assert!(out.contains("OK: 200 "), "{out}");
    }
}

/// Runs a TURN case under symmetric NAT; `relay_only` asks relay ↔ relay, otherwise the pair
/// must hold at least one relay candidate. turnd must have counted relayed bytes for clients
/// on the TURN URL's transport (so a `?transport=tcp` case really went over TCP).
fn turn_case(urls: &[String], relay_only: bool) {
    let net = Net::new(Nat::Symmetric);
    let mut args: Vec<&str> = Vec::new();
    for u in urls {
        args.extend(["--ice-url", u.as_str()]);
    }
    args.extend(["--policy", if relay_only { "relay" } else { "all" }]);
    if urls.iter().any(|u| u.starts_with("stun:")) {
        args.push("--require-srflx");
    }
    let (a, b) = net.run_peers(&args);
    for out in [&a, &b] {
        assert!(count(out, "relay") >= 1, "no relay candidate:\n{out}");
        let (local, remote) = (
            field(out, "SELECTED", "local"),
            field(out, "SELECTED", "remote"),
        );
        if relay_only {
            assert!(
                local == "relay" && remote == "relay",
                "pair {local} -> {remote}:\n{out}"
            );
        } else {
            assert!(
                local == "relay" || remote == "relay",
                "pair {local} -> {remote}:\n{out}"
            );
        }
        assert!(out.contains("OK: 200 "), "{out}");
    }
    let transport = if urls.iter().any(|u| u.ends_with("transport=tcp")) {
        "tcp"
    } else {
        "udp"
    };
    let relayed = net.relayed_bytes(transport);
    eprintln!("turnd_relayed_bytes_total{{transport={transport:?}}}, both directions: {relayed}");
    assert!(
        relayed > 0.0,
        "turnd counted no bytes relayed for {transport} clients:\n{}",
        net.turnd.output()
    );
}

#[test]
fn turn_udp_relay_only_connects_under_symmetric_nat() {
    turn_case(&[turn_url("udp")], true);
}

#[test]
fn turn_tcp_relay_only_connects_under_symmetric_nat() {
    turn_case(&[turn_url("tcp")], true);
}

// Policy "all" with STUN as well, so each peer also offers host and srflx candidates; under
// symmetric NAT only pairs with a relay candidate can work.

#[test]
fn turn_udp_policy_all_with_stun_connects_through_the_relay_under_symmetric_nat() {
    turn_case(&[stun_url(), turn_url("udp")], false);
}

#[test]
fn turn_tcp_policy_all_with_stun_connects_through_the_relay_under_symmetric_nat() {
    turn_case(&[stun_url(), turn_url("tcp")], false);
}
