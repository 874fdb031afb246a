//! aiortc relay-only through the kernel fast path (issue #18): two `RTCPeerConnection`s with
//! turnd as their only ICE server and `iceTransportPolicy: relay` exchange 1,000 data-channel
//! messages each way over the relay ↔ relay pair, which on one server is the hairpin. The
//! checks of the exchange and the counting live in `tests/aiortc/xdp_datachannel.py`; this
//! file builds the namespaces, starts turnd with its XDP program, runs the script and asserts
//! the accounting it prints.
//!
//! Placement: peer A's TURN socket in `cli`, peer B's either in `cli` too (both clients on one
//! veth: the program answers the hairpin with `XDP_TX`) or in `peer` (on the relay's other
//! veth, reaching the listen address through a route via the relay: the hairpin leaves with
//! `bpf_redirect`, both ways). Generic and native mode each.
//!
//! What is exact, in the data phase (from the open data channel to the last echo, snapshots
//! taken with nothing in flight, see the script):
//! - zero loss per direction at the datagram level: what A's TURN client sent (DTLS records and
//!   STUN consent checks, datagrams and payload bytes) is what B's received, and the reverse —
//!   SCTP retransmits, so delivered messages alone would not show this;
//! - each peer's DTLS transport (aiortc's RTCTransportStats) sent and received exactly the DTLS
//!   datagrams and bytes its TURN client counted;
//! - `turnd_xdp_relayed_{datagrams,bytes}_total{direction}` moved by exactly what both peers
//!   sent (client → peer) and received (peer → client): a hairpin is one datagram counted once
//!   in each direction, as user space would count it (src/metrics/xdp.rs); the totals
//!   `turnd_relayed_*{transport="udp"}` moved by the same, so user space relayed nothing, and
//!   no ChannelData was passed up (`turnd_xdp_passed_total` for every reason a ChannelData can
//!   have did not move).
//!
//! Over the whole run (from turnd's start to both allocations deleted): every ChannelData both
//! peers sent was relayed (`turnd_relayed_datagrams_total{client_to_peer}` equals it, bytes
//! too), and what user space relayed is only what came before both channels' entries existed
//! (the first ICE checks). Towards the clients it is a bound, not an equality: a datagram
//! relayed to a client whose peer connection had just closed is counted by turnd and by no
//! client, and ICE checks that reached a relayed address before its channel back existed are
//! dropped there for want of a permission (RFC 8656 §9), which ICE retransmits.

use super::{relaying_topology, relaying_turnd};
use crate::common::netns::ip;
use crate::common::{require_tool, run_tool, ScratchDir, PASSWORD, USER};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// Messages A → B (and echoes B → A).
const COUNT: u64 = 1000;
/// The script's own limit; the process gets a margin on top.
const SCRIPT_TIMEOUT_SECS: u64 = 60;

/// The reasons a ChannelData to a listen port can be passed up for.
const CHANNELDATA_PASSED: [&str; 6] = [
    "not_channeldata",
    "bad_length",
    "no_entry",
    "expired",
    "fib",
    "unsupported",
];

/// What the script printed, and one place to read it.
struct Run {
    result: Value,
}

impl Run {
    /// A peer's count `key` in snapshot `snap` (`dtls_stats.bytesSent` reaches into the stats).
    fn peer(&self, snap: &str, peer: &str, key: &str) -> u64 {
        let mut v = &self.result[snap]["peers"][peer];
        for part in key.split('.') {
            v = &v[part];
        }
        v.as_u64()
            .unwrap_or_else(|| panic!("no {snap}.{peer}.{key} in {}", self.result))
    }

    /// A peer's change in `key` over the data phase.
    fn peer_delta(&self, peer: &str, key: &str) -> u64 {
        self.peer("done", peer, key) - self.peer("open", peer, key)
    }

    /// What `peer` sent (`way` = "sent") or received over the data phase, in `unit`.
    fn data_phase(&self, peer: &str, way: &str, unit: &str) -> u64 {
        ["dtls", "stun", "other"]
            .iter()
            .map(|kind| self.peer_delta(peer, &format!("{way}_{kind}_{unit}")))
            .sum()
    }

    /// Every ChannelData `peer` sent or received up to snapshot `snap`, in `unit`.
    fn total(&self, snap: &str, peer: &str, way: &str, unit: &str) -> u64 {
        ["dtls", "stun", "other"]
            .iter()
            .map(|kind| self.peer(snap, peer, &format!("{way}_{kind}_{unit}")))
            .sum()
    }

    /// A turnd series in snapshot `snap` (0 when turnd has not shown it yet).
    fn metric(&self, snap: &str, series: &str) -> u64 {
        self.result[snap]["metrics"][series].as_u64().unwrap_or(0)
    }

    fn metric_delta(&self, series: &str) -> u64 {
        self.metric("done", series) - self.metric("open", series)
    }

    /// turnd's series of snapshot `snap`, for failure messages.
    fn metrics(&self, snap: &str) -> String {
        serde_json::to_string_pretty(&self.result[snap]["metrics"]).unwrap_or_default()
    }
}

fn xdp_relayed(unit: &str, direction: &str) -> String {
    format!("turnd_xdp_relayed_{unit}_total{{direction=\"{direction}\"}}")
}

fn all_relayed(unit: &str, direction: &str) -> String {
    format!("turnd_relayed_{unit}_total{{direction=\"{direction}\",transport=\"udp\"}}")
}

/// UDP `RcvbufErrors` in namespace `ns` (`/proc/net/snmp`): datagrams a full socket buffer
/// dropped at the receiver.
fn udp_rcvbuf_errors(ns: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
        .output()
        .expect("run ip netns exec cat");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find_map(|(n, v)| (n == "RcvbufErrors").then(|| v.parse().ok())?)
        .unwrap_or_else(|| panic!("no Udp RcvbufErrors in {ns}'s /proc/net/snmp:\n{text}"))
}

/// A number after `key=` in a log line.
fn field(line: &str, key: &str) -> u64 {
    let pat = format!(" {key}=");
    line.split_once(&pat)
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

fn aiortc_through_the_kernel(mode: &str, two_veths: bool) {
    let t = relaying_topology(mode);
    let b_ns = if two_veths {
        // B on the peer side reaches the listen address through the relay.
        ip(&t.peer, "route add 10.78.1.0/24 via 10.78.2.1");
        t.peer.clone()
    } else {
        t.cli.clone()
    };
    let scratch = ScratchDir::new("xdp-aiortc");
    let (turnd, admin) = relaying_turnd(&t, mode, &scratch.path().join("turnd.toml"), &[]);
    let python = require_tool("python3");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/aiortc/xdp_datachannel.py"
    );
    let mut cmd = Command::new(&python);
    cmd.arg(script)
        .args(["--host", "10.78.1.1", "--port", "3478"])
        .args(["--netns-a", &t.cli, "--netns-b", &b_ns])
        .args(["--metrics-netns", &t.relay])
        .args(["--metrics", &format!("http://{admin}/metrics")])
        .args(["--user", USER, "--password", PASSWORD])
        .args(["--count", &COUNT.to_string()])
        .args(["--timeout", &SCRIPT_TIMEOUT_SECS.to_string()]);
    let (status, out) = run_tool(
        "xdp_datachannel.py",
        cmd,
        Duration::from_secs(SCRIPT_TIMEOUT_SECS + 60),
    );
    assert!(
        status.success(),
        "aiortc through the kernel path failed ({status}); python3 needs \
         tests/aiortc/requirements.txt (.ci/run installs it):\n{out}\n--- turnd:\n{}",
        turnd.output()
    );
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line:\n{out}"));
    let run = Run {
        result: serde_json::from_str(line).expect("the RESULT line is JSON"),
    };
    println!("{out}");
    // Nothing dropped at the receiving sockets (the script gives them 8 MB).
    for ns in [&t.cli, &t.peer] {
        assert_eq!(udp_rcvbuf_errors(ns), 0, "UDP RcvbufErrors in {ns}\n{out}");
    }

    // The data phase, zero loss per direction: A's sends are B's receipts and the reverse, in
    // datagrams and bytes, kind by kind.
    for (from, to) in [("A", "B"), ("B", "A")] {
        for kind in ["dtls", "stun", "other"] {
            for unit in ["datagrams", "bytes"] {
                assert_eq!(
                    run.peer_delta(from, &format!("sent_{kind}_{unit}")),
                    run.peer_delta(to, &format!("received_{kind}_{unit}")),
                    "{from} → {to}, {kind} {unit}: lost on the way\n{out}"
                );
            }
        }
        assert_eq!(run.peer_delta(from, "sent_other_datagrams"), 0, "{out}");
        // No STUN with the server (Refresh, ChannelBind) while the data flowed.
        assert_eq!(run.peer_delta(from, "sent_stun_to_server"), 0, "{out}");
    }
    // Each peer's DTLS transport: exactly the DTLS records its TURN client carried.
    for peer in ["A", "B"] {
        for (stat, key) in [
            ("dtls_stats.packetsSent", "sent_dtls_datagrams"),
            ("dtls_stats.bytesSent", "sent_dtls_bytes"),
            ("dtls_stats.packetsReceived", "received_dtls_datagrams"),
            ("dtls_stats.bytesReceived", "received_dtls_bytes"),
        ] {
            assert_eq!(
                run.peer_delta(peer, stat),
                run.peer_delta(peer, key),
                "{peer}: {stat} vs the TURN client's {key}\n{out}"
            );
        }
    }
    // A's messages (and B's echoes) were in it: DTLS bytes hold at least their payload.
    let message_bytes: u64 = (0..COUNT).map(|i| 5 + 1 + (i * 97) % 1200).sum();
    for peer in ["A", "B"] {
        let sent = run.peer_delta(peer, "sent_dtls_bytes");
        assert!(
            sent > message_bytes,
            "{peer} sent {sent} DTLS bytes for {message_bytes} bytes of messages\n{out}"
        );
    }
    // The kernel carried all of it, counted once in each direction; user space nothing.
    for unit in ["datagrams", "bytes"] {
        let sent = run.data_phase("A", "sent", unit) + run.data_phase("B", "sent", unit);
        let received =
            run.data_phase("A", "received", unit) + run.data_phase("B", "received", unit);
        assert_eq!(
            run.metric_delta(&xdp_relayed(unit, "client_to_peer")),
            sent,
            "kernel {unit} client → peer\n{}",
            run.metrics("done")
        );
        assert_eq!(
            run.metric_delta(&xdp_relayed(unit, "peer_to_client")),
            received,
            "kernel {unit} peer → client\n{}",
            run.metrics("done")
        );
        for direction in ["client_to_peer", "peer_to_client"] {
            assert_eq!(
                run.metric_delta(&all_relayed(unit, direction)),
                run.metric_delta(&xdp_relayed(unit, direction)),
                "{unit} {direction}: user space relayed some of the data phase\n{}",
                run.metrics("done")
            );
        }
    }
    for reason in CHANNELDATA_PASSED {
        let series = format!("turnd_xdp_passed_total{{reason=\"{reason}\"}}");
        assert_eq!(
            run.metric_delta(&series),
            0,
            "{series} moved in the data phase\n{}",
            run.metrics("done")
        );
    }

    // The whole run: every ChannelData sent was relayed once; user space only had what came
    // before the channels' entries (the first checks, before the data channel opened).
    for unit in ["datagrams", "bytes"] {
        let sent = run.total("closed", "A", "sent", unit) + run.total("closed", "B", "sent", unit);
        let received =
            run.total("closed", "A", "received", unit) + run.total("closed", "B", "received", unit);
        let to_peer = run.metric("closed", &all_relayed(unit, "client_to_peer"));
        let to_client = run.metric("closed", &all_relayed(unit, "peer_to_client"));
        assert_eq!(to_peer, sent, "{unit} relayed client → peer\n{out}");
        assert!(
            received <= to_client && to_client <= to_peer,
            "{unit}: received {received}, relayed to clients {to_client}, from clients {to_peer}\n{out}"
        );
        let before_open =
            run.total("open", "A", "sent", unit) + run.total("open", "B", "sent", unit);
        for direction in ["client_to_peer", "peer_to_client"] {
            let user = run.metric("closed", &all_relayed(unit, direction))
                - run.metric("closed", &xdp_relayed(unit, direction));
            let user_at_open = run.metric("open", &all_relayed(unit, direction))
                - run.metric("open", &xdp_relayed(unit, direction));
            assert!(
                user_at_open <= before_open,
                "{unit} {direction}: user space relayed {user_at_open} before the channel \
                 opened, more than the {before_open} sent\n{out}"
            );
            println!(
                "{mode} {}: {unit} {direction}: {user} by user space ({user_at_open} before \
                 the data channel opened), {} by the kernel",
                if two_veths { "two veths" } else { "one veth" },
                run.metric("closed", &xdp_relayed(unit, direction)),
            );
        }
    }

    // Each allocation's own counts, logged at its end (src/shell/worker.rs): towards its peer
    // exactly what its client sent; towards its client at least what the client received
    // and at most what the other peer sent (see the doc comment).
    let log = turnd.output();
    for (peer, other) in [("A", "B"), ("B", "A")] {
        let relay = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{peer}: selected pair relay ")))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no selected pair for {peer}:\n{out}"));
        let ended = log
            .lines()
            .find(|l| l.contains("allocation ended") && l.contains(&format!(" relay={relay} ")))
            .unwrap_or_else(|| panic!("no end of {peer}'s allocation {relay}:\n{log}"));
        for (unit, log_unit) in [("datagrams", "packets"), ("bytes", "bytes")] {
            assert_eq!(
                field(ended, &format!("to_peer_{log_unit}")),
                run.total("closed", peer, "sent", unit),
                "{peer}'s allocation, {unit} to its peer: {ended}\n{out}"
            );
            let to_client = field(ended, &format!("to_client_{log_unit}"));
            assert!(
                run.total("closed", peer, "received", unit) <= to_client
                    && to_client <= run.total("closed", other, "sent", unit),
                "{peer}'s allocation, {unit} to its client: {ended}\n{out}"
            );
        }
        println!("{peer}: {ended}");
    }
    drop(turnd);
    drop(t);
}

/// Both peers on the client's veth: the hairpin goes back out where it came in (`XDP_TX`).
#[test]
fn generic_mode_aiortc_relay_only_one_veth() {
    aiortc_through_the_kernel("generic", false);
}

#[test]
fn native_mode_aiortc_relay_only_one_veth() {
    aiortc_through_the_kernel("native", false);
}

/// Peer A on the client's veth, peer B on the peer's: the hairpin crosses the relay
/// (`bpf_redirect`), both ways.
#[test]
fn generic_mode_aiortc_relay_only_two_veths() {
    aiortc_through_the_kernel("generic", true);
}

#[test]
fn native_mode_aiortc_relay_only_two_veths() {
    aiortc_through_the_kernel("native", true);
}
