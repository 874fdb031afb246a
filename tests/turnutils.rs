//! coturn's own test clients against the server under test (turnd; coturn itself with
//! `TURN_TEST_SERVER=coturn`):
//! - `turnutils_stunclient`: a Binding request must come back with our reflexive address.
//! - `turnutils_uclient`: allocations relaying to a `turnutils_peer` echo peer on loopback, in
//!   channel mode (ChannelBind + ChannelData), in Send-indication mode (CreatePermission + Send/Data
//!   indications) and in its default RTP/RTCP mode (EVEN-PORT + RESERVATION-TOKEN pairs); every
//!   packet must come back (zero loss). The channel and Send modes run over TCP (`-t`) and
//!   TLS (`-S`, against a certificate made for the test) too; and RFC 6062 TCP relay
//!   allocations (`-T`: Connect, ConnectionAttempt, ConnectionBind, client to client).
//!
//! The tools are required: a machine without them fails these tests (install Debian package
//! `coturn`; `.ci/run` does this).
//!
//! Tier 2 (tests/README.md): built and run only with `cargo test --features external`, which
//! `.ci/run` does.

mod common;
mod tls_certs;

use common::{require_tool, run_tool, EchoPeer, TurnServer, PASSWORD, USER};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use tls_certs::{Ca, CertFiles};

/// Messages per client, clients, and message length: small enough that a run takes seconds.
const MESSAGES: u32 = 50;
const CLIENTS: u32 = 2;
const MESSAGE_LEN: u32 = 170;

/// uclient spends ~3 s setting up before it sends; a healthy run finishes in under 10 s.
const UCLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Shared secret for the TURN REST API tests.
const REST_SECRET: &str = "turnd-itest-secret";

#[test]
fn stunclient_binding_returns_loopback_reflexive_address() {
    let stunclient = require_tool("turnutils_stunclient");
    let server = TurnServer::spawn(&[]);
    let mut cmd = Command::new(stunclient);
    cmd.args(["-p", &server.port().to_string(), "127.0.0.1"]);
    let (status, out) = run_tool("turnutils_stunclient", cmd, Duration::from_secs(20));
    assert!(
        status.success(),
        "turnutils_stunclient failed ({status}):\n{out}"
    );

    // It prints e.g. `0: : IPv4. UDP reflexive addr: 127.0.0.1:45340` (once per log sink).
    let reflexive: Vec<SocketAddr> = out
        .lines()
        .filter_map(|l| l.split_once("UDP reflexive addr: ").map(|(_, a)| a.trim()))
        .map(|a| {
            a.parse()
                .unwrap_or_else(|e| panic!("unparsable reflexive addr {a:?} ({e}):\n{out}"))
        })
        .collect();
    assert!(
        !reflexive.is_empty(),
        "no `UDP reflexive addr:` line in turnutils_stunclient output:\n{out}"
    );
    for addr in &reflexive {
        assert_eq!(
            addr.ip().to_string(),
            "127.0.0.1",
            "wrong reflexive IP:\n{out}"
        );
        assert_ne!(addr.port(), 0, "reflexive port 0:\n{out}");
    }
    // The tool uses one socket, so every line must report the same address.
    assert!(
        reflexive.windows(2).all(|w| w[0] == w[1]),
        "differing reflexive addresses:\n{out}"
    );
}

#[test]
fn uclient_channel_mode_zero_loss() {
    // -c: one plain allocation per client (no RTCP twin), data over ChannelBind + ChannelData.
    let out = run_uclient(&["-c"]);
    assert!(
        out.contains("channel bind sent"),
        "uclient did not bind a channel:\n{out}"
    );
    assert!(
        out.contains("cb response received"),
        "no ChannelBind response:\n{out}"
    );
}

#[test]
fn uclient_dual_allocation_zero_loss() {
    // -Z: dual allocations. uclient sends ADDITIONAL-ADDRESS-FAMILY IPv6 with the turnbis draft
    // code point 0x8032, which turnd reads as RFC 8656's 0x8000; with relay IPs of both
    // families each allocation gets an IPv4 and an IPv6 relayed address, and the echo peer on
    // 127.0.0.1 is served by the IPv4 one.
    let (status, out, context) = try_uclient(
        &["--relay-ip", "::1"],
        &["-u", USER, "-w", PASSWORD],
        &["-Z"],
    );
    assert!(
        status.success(),
        "turnutils_uclient exited with {status}; {context}"
    );
    let stats =
        UclientStats::parse(&out).unwrap_or_else(|| panic!("no final statistics; {context}"));
    let expected = u64::from(MESSAGES * CLIENTS);
    assert_eq!(
        (stats.sent, stats.received, stats.lost),
        (expected, expected, 0),
        "{context}"
    );
    if common::ServerKind::from_env() == common::ServerKind::Turnd {
        let created = context.matches("allocation created").count();
        let dual = context.matches("additional_relay=[::1]:").count();
        assert!(created >= CLIENTS as usize, "allocations; {context}");
        assert_eq!(dual, created, "every allocation is dual; {context}");
    }
}

#[test]
fn uclient_send_indication_mode_zero_loss() {
    // -s: data as Send indications (after CreatePermission), answers as Data indications.
    let out = run_uclient(&["-c", "-s"]);
    assert!(
        out.contains("create perm sent"),
        "uclient did not create a permission:\n{out}"
    );
    assert!(
        out.contains("cp response received"),
        "no CreatePermission response:\n{out}"
    );
    assert!(
        !out.contains("channel bind sent"),
        "send mode should not bind channels:\n{out}"
    );
}

#[test]
fn uclient_tcp_channel_mode_zero_loss() {
    // -t: the client talks TURN over TCP (relaying to the peer stays UDP); ChannelData on the
    // stream is padded to 4 bytes both ways.
    let out = run_uclient(&["-t", "-c"]);
    assert!(
        out.contains("channel bind sent"),
        "uclient did not bind a channel:\n{out}"
    );
    assert!(
        out.contains("cb response received"),
        "no ChannelBind response:\n{out}"
    );
}

#[test]
fn uclient_tcp_send_indication_mode_zero_loss() {
    let out = run_uclient(&["-t", "-c", "-s"]);
    assert!(
        out.contains("cp response received"),
        "no CreatePermission response:\n{out}"
    );
    assert!(
        !out.contains("channel bind sent"),
        "send mode should not bind channels:\n{out}"
    );
}

#[test]
fn uclient_tcp_relay_zero_loss() {
    // -T: RFC 6062 TCP relay allocations over TCP control connections, client to client
    // (implies -t -y -c): each client allocates a TCP relay, one Connects to the other's
    // relayed address, the other gets a ConnectionAttempt, both ConnectionBind new data
    // connections, and the messages go through the two splices.
    let out = run_uclient(&["-T"]);
    for line in [
        "tcp connect sent",
        "connection bind sent",
        "connect bind response received",
    ] {
        assert!(out.contains(line), "uclient did not log `{line}`:\n{out}");
    }
}

/// [`run_uclient`] over TLS (`-t -S`; `-S` alone would be DTLS over UDP): the server gets a TLS listener with a
/// certificate made for the test.
fn run_uclient_tls(mode_flags: &[&str]) -> String {
    let dir = common::ScratchDir::new("uclient-tls");
    let files = CertFiles::write(dir.path(), &Ca::new().issue("turnd uclient", 1));
    let flags = files.flags();
    let server_args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mode: Vec<&str> = ["-t", "-S"].iter().chain(mode_flags).copied().collect();
    run_uclient_with(&server_args, &["-u", USER, "-w", PASSWORD], &mode)
}

#[test]
fn uclient_tls_channel_mode_zero_loss() {
    let out = run_uclient_tls(&["-c"]);
    assert!(
        out.contains("cb response received"),
        "no ChannelBind response:\n{out}"
    );
}

#[test]
fn uclient_tls_tcp_relay_zero_loss() {
    // -T over TLS: control and data connections are TLS; the peer side stays plain TCP.
    let out = run_uclient_tls(&["-T"]);
    assert!(
        out.contains("connect bind response received"),
        "no ConnectionBind response:\n{out}"
    );
}

#[test]
fn uclient_tls_send_indication_mode_zero_loss() {
    let out = run_uclient_tls(&["-c", "-s"]);
    assert!(
        out.contains("cp response received"),
        "no CreatePermission response:\n{out}"
    );
    assert!(
        !out.contains("channel bind sent"),
        "send mode should not bind channels:\n{out}"
    );
}

#[test]
fn uclient_rtp_rtcp_pairs_channel_mode_zero_loss() {
    // Without -c uclient allocates RTP/RTCP relay pairs: an Allocate with EVEN-PORT (reserve
    // bit set) whose answer carries a RESERVATION-TOKEN, then an Allocate presenting that token,
    // which must get the reserved port (the even port + 1).
    let out = run_uclient(&[]);
    assert!(
        out.contains("channel bind sent"),
        "uclient did not bind a channel:\n{out}"
    );
    let ports: Vec<u16> = out
        .lines()
        .filter_map(|l| l.split_once("Received relay addr: ").map(|(_, a)| a.trim()))
        .map(|a| {
            a.parse::<SocketAddr>()
                .unwrap_or_else(|e| panic!("relay addr {a:?}: {e}\n{out}"))
        })
        .map(|a| a.port())
        .collect();
    let pair = ports
        .iter()
        .find(|&&p| p % 2 == 0 && ports.contains(&(p + 1)));
    assert!(
        pair.is_some(),
        "no even relay port with its +1 twin among {ports:?}:\n{out}"
    );
    // uclient logs the RESERVATION-TOKEN it got as `rtv=<u64>`; 0 means none.
    let tokens = out
        .lines()
        .filter_map(|l| l.split_once("clnet_allocate: rtv=").map(|(_, v)| v.trim()))
        .filter(|v| *v != "0")
        .count();
    assert!(
        tokens > 0,
        "no RESERVATION-TOKEN was returned for EVEN-PORT:\n{out}"
    );
}

#[test]
fn uclient_rest_api_credentials_zero_loss() {
    // -W: uclient mints TURN REST API credentials itself: username `<unix-expiry>:bob`,
    // password base64(HMAC-SHA1(secret, username)).
    run_uclient_with(
        &["--auth-secret", REST_SECRET],
        &["-W", REST_SECRET, "-u", "bob"],
        &["-c"],
    );
}

#[test]
fn credentials_subcommand_mints_rest_credentials_uclient_accepts() {
    // `turnd credentials` is what an operator pastes into a client; coturn's uclient, given
    // the minted username and password as plain long-term credentials, must relay with them.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args([
            "credentials",
            "--secret",
            REST_SECRET,
            "--user",
            "carol",
            "--ttl",
            "1h",
        ])
        .output()
        .expect("run turnd credentials");
    assert!(out.status.success(), "turnd credentials failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no `{name}` line in:\n{text}"))
    };
    let (username, password) = (field("username:"), field("password:"));
    assert!(username.ends_with(":carol"), "{username}");
    run_uclient_with(
        &["--auth-secret", REST_SECRET],
        &["-u", &username, "-w", &password],
        &["-c"],
    );
}

#[test]
fn uclient_wrong_credentials_are_refused() {
    for credentials in [
        &["-u", USER, "-w", "not-alice-pw"][..],
        &["-W", "not-the-secret", "-u", "bob"][..],
    ] {
        let (status, out, context) =
            try_uclient(&["--auth-secret", REST_SECRET], credentials, &["-c"]);
        assert!(
            !status.success(),
            "uclient succeeded with bad credentials; {context}"
        );
        assert!(
            out.contains("Cannot complete Allocation"),
            "expected uclient's allocation failure; {context}"
        );
    }
}

/// Runs `turnutils_uclient -v <mode_flags>` as alice against a fresh server and a fresh echo
/// peer, asserts that it exits cleanly with every message echoed, and returns its output.
fn run_uclient(mode_flags: &[&str]) -> String {
    run_uclient_with(&[], &["-u", USER, "-w", PASSWORD], mode_flags)
}

/// [`run_uclient`] with extra server flags and the client's credential flags.
fn run_uclient_with(server_args: &[&str], credentials: &[&str], mode_flags: &[&str]) -> String {
    let (status, out, context) = try_uclient(server_args, credentials, mode_flags);

    assert!(
        status.success(),
        "turnutils_uclient exited with {status}; {context}"
    );
    let stats =
        UclientStats::parse(&out).unwrap_or_else(|| panic!("no final statistics; {context}"));
    let expected = u64::from(MESSAGES * CLIENTS);
    assert_eq!(stats.sent, expected, "messages sent; {context}");
    assert_eq!(stats.received, expected, "messages echoed back; {context}");
    assert_eq!(stats.lost, 0, "lost packets; {context}");
    assert_eq!(stats.send_dropped, 0, "send dropped; {context}");
    out
}

/// Runs uclient once against a fresh server (spawned with `server_args`) and echo peer;
/// returns its exit status, its output, and a failure context with all three outputs.
fn try_uclient(
    server_args: &[&str],
    credentials: &[&str],
    mode_flags: &[&str],
) -> (std::process::ExitStatus, String, String) {
    let uclient = require_tool("turnutils_uclient");
    let mut server = TurnServer::spawn(server_args);
    let peer = EchoPeer::spawn();

    // -S: TURN over TLS, to the TLS listener.
    let port = if mode_flags.contains(&"-S") {
        server.tls_addr().port()
    } else {
        server.port()
    };
    let mut cmd = Command::new(uclient);
    cmd.arg("-v")
        .args(mode_flags)
        .args(["-p", &port.to_string()])
        .args(credentials)
        .args([
            "-e",
            &peer.addr().ip().to_string(),
            "-r",
            &peer.addr().port().to_string(),
        ])
        .args(["-n", &MESSAGES.to_string(), "-m", &CLIENTS.to_string()])
        .args(["-l", &MESSAGE_LEN.to_string()])
        .arg("127.0.0.1");
    let (status, out) = run_tool("turnutils_uclient", cmd, UCLIENT_TIMEOUT);
    server.assert_running();
    let context = format!(
        "turnutils_uclient {credentials:?} {mode_flags:?} output:\n{out}\n--- server output:\n{}\n\
         --- peer output:\n{}",
        server.output(),
        peer.output()
    );
    (status, out, context)
}

/// The closing statistics of `turnutils_uclient`:
/// ```text
/// 4: : start_mclient: tot_send_msgs=100, tot_recv_msgs=100
/// 4: : Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)
/// ```
#[derive(Debug)]
struct UclientStats {
    sent: u64,
    received: u64,
    lost: u64,
    send_dropped: u64,
}

impl UclientStats {
    fn parse(out: &str) -> Option<UclientStats> {
        // The progress lines also carry tot_send_msgs but with `msz=`; the final one does not.
        let totals = out
            .lines()
            .rev()
            .find(|l| l.contains("tot_send_msgs=") && !l.contains("msz="))?;
        let losses = out
            .lines()
            .rev()
            .find(|l| l.contains("Total lost packets"))?;
        Some(UclientStats {
            sent: number_after(totals, "tot_send_msgs=")?,
            received: number_after(totals, "tot_recv_msgs=")?,
            lost: number_after(losses, "Total lost packets ")?,
            send_dropped: number_after(losses, "total send dropped ")?,
        })
    }
}

fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[test]
fn uclient_stats_parser() {
    let sample =
        "3: : start_mclient: msz=2, tot_send_msgs=20, tot_recv_msgs=19, tot_send_bytes ~ 3400\n\
                  4: : start_mclient: tot_send_msgs=100, tot_recv_msgs=98\n\
                  4: : Total lost packets 2 (2.000000%), total send dropped 1 (0.000000%)\n";
    let s = UclientStats::parse(sample).expect("parses");
    assert_eq!(
        (s.sent, s.received, s.lost, s.send_dropped),
        (100, 98, 2, 1)
    );
    assert!(UclientStats::parse("recv: Connection refused\n").is_none());
}
