//! `turnd probe` against real servers: turnd (UDP, TCP, TLS, IPv6; static and REST
//! credentials), every diagnosis on the failure that causes it, and the client's
//! retransmission and nonce handling against a scripted server. In tier 2 (`mod external`,
//! feature `external`; tests/README.md): coturn's `turnserver` (UDP, TCP, and RFC 5780 with
//! two loopback addresses, compared with coturn's own `turnutils_natdiscovery`), and a server
//! behind NAT simulated in a network namespace.

mod common;
mod tls_certs;

use common::{run_tool, ScratchDir, TurnServer, PASSWORD, REALM, USER};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};
use tls_certs::{Ca, CertFiles};

const SECRET: &str = "probe-secret";

/// What one `turnd probe` run said.
struct Outcome {
    code: i32,
    out: String,
}

impl Outcome {
    fn json(&self) -> serde_json::Value {
        let line = self
            .out
            .lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON object in the probe output:\n{}", self.out));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{line}"))
    }

    fn diagnosis(&self) -> String {
        self.json()["diagnosis"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no diagnosis:\n{}", self.out))
            .to_string()
    }
}

/// Runs `turnd probe ARGS` (bounded: 60 s) and returns its exit code and output.
fn probe(args: &[&str]) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnd"));
    cmd.arg("probe").args(args);
    let (status, out) = run_tool("turnd probe", cmd, Duration::from_secs(60));
    Outcome {
        code: status.code().unwrap_or(-1),
        out,
    }
}

fn url(scheme: &str, addr: SocketAddr, transport: &str) -> String {
    format!("{scheme}:{addr}?transport={transport}")
}

/// Asserts success: exit 0, every expected step present and ok, and every one of the 5
/// payloads of each framing echoed both ways (loopback loses none; the probe itself passes
/// with one, and warns `echo_loss` for the rest — see `judge_echo` in src/probe/steps.rs).
fn assert_success(o: &Outcome) {
    assert_eq!(o.code, 0, "probe failed:\n{}", o.out);
    let j = o.json();
    assert_eq!(j["success"], true, "{}", o.out);
    let steps: Vec<&str> = j["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            assert_eq!(s["ok"], true, "step failed: {s}");
            assert!(s["ms"].as_f64().is_some(), "step without timing: {s}");
            s["name"].as_str().expect("step name")
        })
        .collect();
    for want in [
        "resolve",
        "connect",
        "binding",
        "allocate",
        "peer_allocate",
        "create_permission",
        "send_data",
        "channel_bind",
        "channel_data",
        "refresh",
    ] {
        assert!(steps.contains(&want), "no step {want} in {steps:?}");
    }
    for echo in ["send_data", "channel_data"] {
        assert_eq!(j[echo]["sent"], 5, "{}", o.out);
        assert_eq!(j[echo]["received"], 5, "{}", o.out);
        assert_eq!(
            j[echo]["rtt_ms"].as_array().map(Vec::len),
            Some(5),
            "{}",
            o.out
        );
    }
    let warnings = j["warnings"].as_array().expect("warnings");
    assert!(
        !warnings.iter().any(|w| w["code"] == "echo_loss"),
        "{}",
        o.out
    );
    for addr in ["reflexive", "relay", "peer_relay"] {
        let a = j[addr].as_str().expect(addr);
        a.parse::<SocketAddr>().expect("an address");
    }
}

fn creds() -> [&'static str; 4] {
    ["--user", USER, "--password", PASSWORD]
}

#[test]
fn succeeds_against_turnd_over_udp_and_tcp_with_static_and_rest_credentials() {
    let server = TurnServer::spawn_turnd(&["--auth-secret", SECRET]);
    for transport in ["udp", "tcp"] {
        let u = url("turn", server.addr(), transport);
        let mut args = vec![u.as_str(), "--json"];
        args.extend(creds());
        assert_success(&probe(&args));
        assert_success(&probe(&[
            &u, "--json", "--secret", SECRET, "--user", "carol",
        ]));
    }
    // The text output names the addresses and ends with the verdict.
    let mut args = vec!["turn:".to_string() + &server.addr().to_string()];
    args.extend(creds().map(String::from));
    let o = probe(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.code, 0, "{}", o.out);
    for want in [
        "relayed address: 127.0.0.1:",
        "reflexive address: 127.0.0.1:",
        "OK: ",
    ] {
        assert!(o.out.contains(want), "no `{want}` in:\n{}", o.out);
    }
}

#[test]
fn succeeds_against_turnd_over_tls_and_names_the_certificate_fix() {
    let scratch = ScratchDir::new("probe-tls");
    let ca = Ca::new();
    let files = CertFiles::write(scratch.path(), &ca.issue("turnd probe test", 1));
    let ca_file = scratch.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write the CA file");
    let mut flags = files.flags();
    flags.extend(["--auth-secret".into(), SECRET.into()]);
    let server = TurnServer::spawn_turnd(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let u = format!("turns:{}", server.tls_addr());
    let ca_arg = ca_file.display().to_string();

    let mut args = vec![u.as_str(), "--json", "--ca", &ca_arg];
    args.extend(creds());
    assert_success(&probe(&args));
    assert_success(&probe(&[&u, "--json", "--insecure", "--secret", SECRET]));

    // Without the CA the certificate is not trusted, and the diagnosis says what to pass.
    let mut args = vec![u.as_str(), "--json"];
    args.extend(creds());
    let o = probe(&args);
    assert_ne!(o.code, 0, "{}", o.out);
    assert_eq!(o.diagnosis(), "tls_certificate");
    let msg = o.json()["diagnosis"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(msg.contains("--insecure") && msg.contains("--ca"), "{msg}");
}

#[test]
fn credential_diagnoses() {
    let server = TurnServer::spawn_turnd(&["--auth-secret", SECRET]);
    let u = url("turn", server.addr(), "udp");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--user".into(),
                USER.into(),
                "--password".into(),
                "wrong".into(),
            ],
            "bad_credentials",
        ),
        (
            vec![
                "--user".into(),
                USER.into(),
                "--password".into(),
                PASSWORD.into(),
                "--realm".into(),
                "not-the-realm".into(),
            ],
            "realm_mismatch",
        ),
        (
            vec!["--secret".into(), "not-the-secret".into()],
            "rest_rejected",
        ),
        (vec![], "no_credentials"),
    ];
    for (extra, want) in cases {
        let mut args = vec![u.clone(), "--json".into()];
        args.extend(extra);
        let o = probe(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(o.code, 1, "{want}: {}", o.out);
        assert_eq!(o.diagnosis(), want, "{}", o.out);
    }
    // A REST username that expired an hour ago (the right secret: only the time is wrong).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let m = turnd::credentials::mint(
        SECRET,
        "dave",
        Duration::from_secs(3600),
        now - 7200,
        Default::default(),
    );
    let o = probe(&[
        &u,
        "--json",
        "--user",
        &m.username,
        "--password",
        &m.password,
    ]);
    assert_eq!(o.code, 1, "{}", o.out);
    assert_eq!(o.diagnosis(), "rest_expired");
    let msg = o.json()["diagnosis"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(msg.contains("expired"), "{msg}");
}

#[test]
fn peer_denied_by_the_filter() {
    // The allocations work, but the server refuses to relay to its own loopback relay
    // addresses (the longer deny prefix wins over the harness's allow 127.0.0.0/8).
    let server = TurnServer::spawn_turnd(&["--deny-peer", "127.0.0.1/32"]);
    let u = url("turn", server.addr(), "udp");
    let mut args = vec![u.as_str(), "--json"];
    args.extend(creds());
    let o = probe(&args);
    assert_eq!(o.code, 1, "{}", o.out);
    assert_eq!(o.diagnosis(), "peer_denied");
    let j = o.json();
    let failed: Vec<&str> = j["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["ok"] == false)
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(failed, ["create_permission"], "{}", o.out);
    let msg = j["diagnosis"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("allow_peers") && msg.contains("--allow-loopback-peers"),
        "{msg}"
    );
}

#[test]
fn transport_diagnoses() {
    // UDP: a socket that never answers → retransmissions, then "try ?transport=tcp".
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let a = silent.local_addr().expect("addr");
    let u = url("turn", a, "udp");
    let mut args = vec![u.as_str(), "--json", "--timeout", "2s"];
    args.extend(creds());
    let o = probe(&args);
    assert_eq!(o.code, 1, "{}", o.out);
    assert_eq!(o.diagnosis(), "udp_blocked");
    assert!(o.out.contains("?transport=tcp"), "{}", o.out);
    drop(silent);

    // UDP: nothing bound there → ICMP port unreachable.
    let closed = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let a = closed.local_addr().expect("addr");
    drop(closed);
    let u = url("turn", a, "udp");
    let mut args = vec![u.as_str(), "--json", "--timeout", "2s"];
    args.extend(creds());
    let o = probe(&args);
    assert_eq!(o.code, 1, "{}", o.out);
    assert_eq!(o.diagnosis(), "udp_unreachable");

    // TCP: nothing listens → refused.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = listener.local_addr().expect("addr");
    drop(listener);
    let u = url("turn", a, "tcp");
    let mut args = vec![u.as_str(), "--json"];
    args.extend(creds());
    let o = probe(&args);
    assert_eq!(o.code, 1, "{}", o.out);
    assert_eq!(o.diagnosis(), "tcp_refused");

    // A malformed URL is a usage error.
    assert_eq!(probe(&["turn:[::1"]).code, 2);
}

#[test]
fn nat_behaviour_against_turnd_says_no_rfc5780() {
    let server = TurnServer::spawn_turnd(&[]);
    let u = format!("stun:{}", server.addr());
    let o = probe(&["--nat-behaviour", &u, "--json"]);
    assert_eq!(o.code, 1, "{}", o.out);
    assert_eq!(o.diagnosis(), "no_rfc5780");
    // Without --nat-behaviour a stun: URL is a Binding only, and that works.
    let o = probe(&[&u, "--json"]);
    assert_eq!(o.code, 0, "{}", o.out);
    assert!(o.json()["reflexive"]
        .as_str()
        .unwrap_or("")
        .starts_with("127.0.0.1:"));
    let text = probe(&["--nat-behaviour", &u]);
    assert!(
        text.out
            .contains("server does not support RFC 5780: no OTHER-ADDRESS"),
        "{}",
        text.out
    );
}

/// `turn:[::1]:PORT`: the probe reaches the server over IPv6 (the relayed addresses are IPv4,
/// the default family).
#[test]
fn succeeds_over_ipv6_loopback() {
    let server = TurnServer::spawn_turnd(&["--listen", "[::1]:0"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    // Bounded: one look per 20 ms until the deadline.
    let v6: SocketAddr = loop {
        if let Some(a) = server
            .output()
            .lines()
            .filter_map(|l| l.strip_prefix("turnd listening udp "))
            .filter_map(|a| a.trim().parse::<SocketAddr>().ok())
            .find(SocketAddr::is_ipv6)
        {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no IPv6 listener:\n{}",
            server.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    for transport in ["udp", "tcp"] {
        let u = url("turn", v6, transport);
        assert!(u.starts_with("turn:[::1]:"), "{u}");
        let mut args = vec![u.as_str(), "--json"];
        args.extend(creds());
        let o = probe(&args);
        assert_success(&o);
        assert!(o.json()["reflexive"]
            .as_str()
            .unwrap_or("")
            .starts_with("[::1]:"));
    }
}

/// The client's side of the credential dance and retransmission, against a scripted server:
/// the first Allocate is dropped (the client must retransmit after the RTO), the retransmission
/// gets a 401 with REALM and NONCE, the authenticated Allocate a 438 with a new NONCE (stale
/// nonce), and only an Allocate keyed with the right key and carrying the new nonce succeeds.
#[test]
fn client_retransmits_answers_the_challenge_and_retries_a_stale_nonce() {
    use turnd::probe::client::{Credentials, Session};
    use turnd::probe::transport::Conn;
    use turnd::stun::{AttrType, Class, Message, MessageBuilder, MessageType, Method};

    let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = server.local_addr().expect("addr");
    server
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let relayed: SocketAddr = "127.0.0.1:50000".parse().expect("address");
    let script = std::thread::spawn(move || {
        let key = turnd::core::auth::long_term_key(USER, REALM, PASSWORD);
        let mut seen = Vec::new();
        let mut buf = [0u8; 2048];
        // Bounded: at most 10 datagrams, each waited for at most 20 s.
        for _ in 0..10 {
            let Ok((n, from)) = server.recv_from(&mut buf) else {
                break;
            };
            let m = Message::parse(&buf[..n]).expect("the client sends valid STUN");
            let nonce = m.nonce().and_then(Result::ok).map(<[u8]>::to_vec);
            let step = seen.len();
            seen.push((nonce.clone(), m.has_integrity()));
            let mut out = [0u8; 512];
            let len = {
                let class = if step == 3 {
                    Class::SuccessResponse
                } else {
                    Class::ErrorResponse
                };
                let ty = MessageType::new(Method::ALLOCATE, class);
                let mut b = MessageBuilder::new(&mut out, ty, m.transaction_id()).expect("buf");
                match step {
                    // Dropped: the client must send it again.
                    0 => continue,
                    1 => {
                        assert!(!m.has_integrity());
                        b.add_error_code(401, "Unauthorized").unwrap();
                        b.add(AttrType::REALM, REALM.as_bytes()).unwrap();
                        b.add(AttrType::NONCE, b"nonce-one").unwrap();
                    }
                    2 => {
                        assert!(m.verify_integrity(&key), "keyed with the right key");
                        assert_eq!(nonce.as_deref(), Some(&b"nonce-one"[..]));
                        b.add_error_code(438, "Stale Nonce").unwrap();
                        b.add(AttrType::REALM, REALM.as_bytes()).unwrap();
                        b.add(AttrType::NONCE, b"nonce-two").unwrap();
                    }
                    _ => {
                        assert!(m.verify_integrity(&key), "keyed with the right key");
                        assert_eq!(nonce.as_deref(), Some(&b"nonce-two"[..]));
                        b.add_xor_address(AttrType::XOR_RELAYED_ADDRESS, &relayed)
                            .unwrap();
                        b.add_xor_address(AttrType::XOR_MAPPED_ADDRESS, &from)
                            .unwrap();
                        b.add_u32(AttrType::LIFETIME, 600).unwrap();
                        b.add_message_integrity(&key).unwrap();
                    }
                }
                b.finish()
            };
            server.send_to(&out[..len], from).expect("send");
            if step == 3 {
                break;
            }
        }
        seen
    });
    let creds = Credentials {
        username: USER.into(),
        password: PASSWORD.into(),
        realm: None,
    };
    let mut s = Session::new(
        Conn::udp(addr).expect("socket"),
        Some(creds),
        Duration::from_secs(5),
    );
    let r = s.allocate().expect("allocated after 401 and 438");
    assert_eq!(r.relayed(), Some(relayed));
    assert_eq!(s.realm.as_deref(), Some(REALM));
    let seen = script.join().expect("script thread");
    assert_eq!(seen.len(), 4, "{seen:?}");
    // The dropped request and its retransmission are the same unauthenticated Allocate.
    assert_eq!(seen[0], (None, false));
    assert_eq!(seen[1], (None, false));
}

/// Tier 2 (`cargo test --features external`; `.ci/run` runs it): the probe against coturn's
/// `turnserver` and `turnutils_natdiscovery` (Debian package `coturn`), and in a network
/// namespace of its own (`unshare` from util-linux, `ip` from iproute2, and user namespaces or
/// root). A missing tool fails the test with the way to get it.
#[cfg(feature = "external")]
mod external {
    use super::*;
    use common::{require_tool, Coturn};

    /// coturn's `turnserver` on 127.0.0.1 (and with `second_ip`, on that address too, which turns
    /// on its RFC 5780 support: the other address is `second_ip` and port + 1), UDP and TCP,
    /// realm/user as the harness's, loopback peers allowed. Stopped (by its own handle) on drop.
    fn coturn(second_ip: Option<&str>, extra: &[&str]) -> Coturn {
        let mut args: Vec<String> = second_ip
            .map(|ip| format!("--listening-ip={ip}"))
            .into_iter()
            .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        Coturn::start(&args)
    }

    #[test]
    fn succeeds_against_coturn_over_udp_and_tcp() {
        let c = coturn(None, &[]);
        for transport in ["udp", "tcp"] {
            let u = url("turn", c.addr, transport);
            let mut args = vec![u.as_str(), "--json"];
            args.extend(creds());
            let o = probe(&args);
            assert_success(&o);
            let sw = o.json()["software"].as_str().unwrap_or("").to_string();
            assert!(sw.to_lowercase().contains("coturn"), "SOFTWARE {sw:?}");
        }
        let u = url("turn", c.addr, "udp");
        let o = probe(&[&u, "--json", "--user", USER, "--password", "wrong"]);
        assert_eq!(o.code, 1, "{}", o.out);
        assert_eq!(o.diagnosis(), "bad_credentials");
    }

    #[test]
    fn rest_credentials_against_coturn() {
        let c = coturn(
            None,
            &[
                "--use-auth-secret",
                &format!("--static-auth-secret={SECRET}"),
            ],
        );
        let u = url("turn", c.addr, "udp");
        assert_success(&probe(&[&u, "--json", "--secret", SECRET]));
        let o = probe(&[&u, "--json", "--secret", "not-the-secret"]);
        assert_eq!(o.code, 1, "{}", o.out);
        assert_eq!(o.diagnosis(), "rest_rejected");
    }

    #[test]
    fn nat_behaviour_against_coturn_with_two_addresses_matches_natdiscovery() {
        let natdiscovery = require_tool("turnutils_natdiscovery");
        let c = coturn(Some("127.0.0.2"), &[]);
        let u = format!("stun:{}", c.addr);
        let o = probe(&["--nat-behaviour", &u, "--json"]);
        assert_eq!(o.code, 0, "{}", o.out);
        let j = o.json();
        assert_eq!(j["nat"], false, "{}", o.out);
        assert_eq!(j["mapping"], "endpoint-independent", "{}", o.out);
        assert_eq!(j["filtering"], "endpoint-independent", "{}", o.out);
        let other: SocketAddr = j["other_address"]
            .as_str()
            .expect("other")
            .parse()
            .expect("addr");
        assert_eq!(other.ip().to_string(), "127.0.0.2");

        // coturn's own client against the same server says the same.
        let mut cmd = Command::new(natdiscovery);
        cmd.args(["-m", "-f", "127.0.0.1", "-p", &c.addr.port().to_string()]);
        let (status, out) = run_tool("turnutils_natdiscovery", cmd, Duration::from_secs(60));
        assert!(status.success(), "turnutils_natdiscovery failed:\n{out}");
        assert!(
            out.contains("NAT with Endpoint Independent Mapping"),
            "{out}"
        );
        assert!(
            out.contains("NAT with Endpoint Independent Filtering"),
            "{out}"
        );
    }

    /// The relayed address is loopback while the client reached the server on a public address:
    /// the server is behind NAT without `external_ip`. Run in a network namespace this test makes
    /// (`unshare -rn`), where a "public" address (198.51.100.7, documentation space, so never a
    /// real host) is put on the namespace's own loopback interface for turnd to listen on.
    #[test]
    fn private_relay_address_behind_a_public_server_address_names_external_ip() {
        let unshare = require_tool("unshare");
        require_tool("ip");
        let scratch = ScratchDir::new("probe-netns");
        let script = r#"
            set -e
            ip link set lo up
            ip addr add 198.51.100.7/32 dev lo
            # Empty the log first: the previous round's "listening" line must not count for this
            # turnd, whose own redirection may truncate the file only after the wait below began.
            : >"$LOG"
            "$TURND" --listen 198.51.100.7:3478 --relay-ip 127.0.0.1 --realm turnd.test \
                --user alice:alice-pw --workers 1 --metrics-listen 127.0.0.1:0 $EXTRA >"$LOG" 2>&1 &
            pid=$!
            i=0
            until grep -q "turnd listening udp" "$LOG"; do
                i=$((i + 1))
                if [ "$i" -gt 100 ]; then cat "$LOG"; kill "$pid"; exit 3; fi
                sleep 0.1
            done
            set +e
            "$TURND" probe turn:198.51.100.7:3478 --user alice --password alice-pw --json
            rc=$?
            kill "$pid"; sleep 0.3; kill "$pid" 2>/dev/null
            exit "$rc"
        "#;
        // Default peer filter: the other allocation's loopback relay is refused (403), and the
        // diagnosis is the root cause, not the filter. With loopback peers allowed, data flows
        // between the two relays on the server itself, and the probe still warns.
        for (extra, want_code) in [("", 1), ("--allow-peer 127.0.0.0/8", 0)] {
            let mut cmd = Command::new(&unshare);
            cmd.args(["-rn", "sh", "-c", script])
                .env("TURND", env!("CARGO_BIN_EXE_turnd"))
                .env("LOG", scratch.path().join("turnd.log"))
                .env("EXTRA", extra);
            common::without_turnd_env(&mut cmd);
            let (status, out) = run_tool("unshare probe", cmd, Duration::from_secs(60));
            let o = Outcome {
                code: status.code().unwrap_or(-1),
                out,
            };
            assert_eq!(o.code, want_code, "{}", o.out);
            let j = o.json();
            assert_eq!(
                j["relay"].as_str().map(|r| r.starts_with("127.0.0.1:")),
                Some(true)
            );
            let warning = &j["warnings"][0];
            assert_eq!(warning["code"], "relay_private", "{}", o.out);
            assert!(
                warning["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("external_ip"),
                "{}",
                o.out
            );
            if want_code == 1 {
                assert_eq!(o.diagnosis(), "relay_private", "{}", o.out);
            }
        }
    }
}
