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
//!   nothing to the listen port was passed up (`turnd_xdp_passed_total` did not move for STUN
//!   nor for any reason a ChannelData can have).
//!
//! Over the whole run (from turnd's start to both allocations deleted): every ChannelData both
//! peers sent was relayed (`turnd_relayed_*_total{client_to_peer}` equals it, datagrams and
//! bytes, and so does each allocation's `to_peer_*` in its end log line). What went up to user
//! space is accounted for exactly: `turnd_xdp_passed_total{reason="not_channeldata"}` is the
//! STUN the clients sent the server (Allocate, ChannelBind, Refresh), and the ChannelData
//! relayed by user space is the ChannelData passed up (the first ICE checks, before both
//! channels' entries existed). Towards the clients it is a bound, not an equality: ICE checks
//! that reached a relayed address before its channel back existed are dropped there for want
//! of a permission (RFC 8656 §9; ICE retransmits them), and a datagram relayed to a client
//! whose peer connection had just closed is counted by turnd and by no client.
//!
//! The clients' sockets get 8 MB receive buffers (see the script): with aioice's 256 kB, 1,024
//! datagrams of SCTP's bursts were dropped at the receiving sockets in generic mode (UDP
//! RcvbufErrors in the client's namespace; checked to stay 0 here), which says nothing about
//! the relay.

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

/// The reasons the program passes up what comes to a listen port: STUN, and ChannelData it
/// has no way through for.
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

    for (from, to) in [("A", "B"), ("B", "A")] {
        println!(
            "{mode} {}: data phase {from} → {to}: {} datagrams, {} bytes ({} DTLS, {} STUN) sent \
             and received",
            if two_veths { "two veths" } else { "one veth" },
            run.data_phase(from, "sent", "datagrams"),
            run.data_phase(from, "sent", "bytes"),
            run.peer_delta(from, "sent_dtls_datagrams"),
            run.peer_delta(from, "sent_stun_datagrams"),
        );
    }

    // The whole run: every ChannelData sent was relayed once. What went up to user space is
    // accounted for: on the listen port, STUN with the server (Allocate, ChannelBind, Refresh)
    // and ChannelData the program had no way through for yet (the first checks, before both
    // channels' entries existed), each of which user space relayed; nothing in the data
    // phase (above); at the close, at most what was sent then.
    let stun_to_server = run.peer("closed", "A", "sent_stun_to_server")
        + run.peer("closed", "B", "sent_stun_to_server");
    let passed = |snap: &str, reason: &str| {
        run.metric(
            snap,
            &format!("turnd_xdp_passed_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(
        passed("closed", "not_channeldata"),
        stun_to_server,
        "STUN to the listen port vs what the clients sent the server\n{}",
        run.metrics("closed")
    );
    let user_relayed = |snap: &str, unit: &str, direction: &str| {
        run.metric(snap, &all_relayed(unit, direction))
            - run.metric(snap, &xdp_relayed(unit, direction))
    };
    let channeldata_passed: u64 = ["no_entry", "fib", "expired", "unsupported", "bad_length"]
        .iter()
        .map(|reason| passed("closed", reason))
        .sum();
    assert_eq!(
        user_relayed("closed", "datagrams", "client_to_peer"),
        channeldata_passed,
        "ChannelData relayed by user space vs passed up by the program\n{}",
        run.metrics("closed")
    );
    for unit in ["datagrams", "bytes"] {
        let sent =
            |snap: &str| run.total(snap, "A", "sent", unit) + run.total(snap, "B", "sent", unit);
        let received =
            run.total("closed", "A", "received", unit) + run.total("closed", "B", "received", unit);
        let to_peer = run.metric("closed", &all_relayed(unit, "client_to_peer"));
        let to_client = run.metric("closed", &all_relayed(unit, "peer_to_client"));
        assert_eq!(
            to_peer,
            sent("closed"),
            "{unit} relayed client → peer\n{out}"
        );
        assert!(
            received <= to_client && to_client <= to_peer,
            "{unit}: received {received}, relayed to clients {to_client}, from clients {to_peer}\n{out}"
        );
        for direction in ["client_to_peer", "peer_to_client"] {
            let (at_open, at_close) = (
                user_relayed("open", unit, direction),
                user_relayed("closed", unit, direction) - user_relayed("done", unit, direction),
            );
            assert!(
                at_open <= sent("open") && at_close <= sent("closed") - sent("done"),
                "{unit} {direction}: user space relayed {at_open} before the data channel \
                 opened ({} sent), {at_close} at the close ({} sent)\n{out}",
                sent("open"),
                sent("closed") - sent("done"),
            );
            println!(
                "{mode} {}: {unit} {direction}: {} by the kernel, {} by user space ({at_open} \
                 before the data channel opened, {at_close} at the close)",
                if two_veths { "two veths" } else { "one veth" },
                run.metric("closed", &xdp_relayed(unit, direction)),
                user_relayed("closed", unit, direction),
            );
        }
    }
    println!(
        "{mode}: STUN with the server {stun_to_server}, ChannelData passed up {channeldata_passed}"
    );

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
        // Where B's client is decides the hairpin's way out (XDP_TX or a redirect).
        let client_net = if peer == "B" && two_veths {
            "client=10.78.2.2:"
        } else {
            "client=10.78.1.2:"
        };
        assert!(ended.contains(client_net), "{peer}: {ended}");
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
