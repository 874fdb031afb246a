//! RFC 5780 NAT behaviour discovery against the real binary, configured with 127.0.0.1 (the
//! `listen` address, A1:P1) and 127.0.0.2 (`nat_discovery_listen`, A2:P2, port picked at
//! start-up):
//! - a raw client written here (its own encoder and decoder) sends Binding requests to each of
//!   the four addresses with each CHANGE-REQUEST flag combination, and checks that every answer
//!   arrives from the address RFC 5780 Table 1 names, that RESPONSE-ORIGIN says so, and that
//!   OTHER-ADDRESS is Ca:Cp; RESPONSE-PORT sends the answer to another socket; TURN requests
//!   on the three extra addresses get no answer while the primary answers 401;
//! - turnd's own `probe --nat-behaviour` classifies loopback as endpoint-independent mapping
//!   and filtering, as loopback has no NAT;
//! - in tier 2 (`mod external`, feature `external`; tests/README.md): coturn's
//!   `turnutils_natdiscovery` (`-m -f`, with and without `-P` padding) reports the same, and
//!   coturn's `turnutils_stunclient -f` reports the response origins and other address. The
//!   coturn tools are required there (Debian package `coturn`; `.ci/run` installs it).

mod common;

use common::{run_tool, TurnServer};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

const MAGIC_COOKIE: u32 = 0x2112_A442;
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
const QUIET: Duration = Duration::from_millis(300);
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

const CHANGE_REQUEST: u16 = 0x0003;
const RESPONSE_PORT: u16 = 0x0027;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const MAPPED_ADDRESS: u16 = 0x0001;
const RESPONSE_ORIGIN: u16 = 0x802B;
const OTHER_ADDRESS: u16 = 0x802C;

fn server() -> TurnServer {
    TurnServer::spawn_turnd(&["--nat-discovery-listen", "127.0.0.2:0"])
}

/// A request of `method` with transaction id `txid` and raw `(type, value)` attributes.
fn request(method: u16, txid: [u8; 12], attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (t, v) in attrs {
        body.extend_from_slice(&t.to_be_bytes());
        body.extend_from_slice(&(v.len() as u16).to_be_bytes());
        body.extend_from_slice(v);
        while body.len() % 4 != 0 {
            body.push(0);
        }
    }
    let mut m = Vec::new();
    m.extend_from_slice(&method.to_be_bytes());
    m.extend_from_slice(&(body.len() as u16).to_be_bytes());
    m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m.extend_from_slice(&txid);
    m.extend_from_slice(&body);
    m
}

fn change(ip: bool, port: bool) -> (u16, Vec<u8>) {
    let flags = if ip { 4 } else { 0 } | if port { 2 } else { 0 };
    (CHANGE_REQUEST, vec![0, 0, 0, flags])
}

/// A decoded answer: message type, and its IPv4 address attributes by type.
struct Answer {
    ty: u16,
    error: Option<u16>,
    addrs: Vec<(u16, SocketAddr)>,
}

impl Answer {
    fn addr(&self, t: u16) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(x, _)| *x == t)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no attribute {t:#06x}"))
    }
}

fn decode(m: &[u8], txid: [u8; 12]) -> Answer {
    assert!(m.len() >= 20, "short answer");
    assert_eq!(&m[8..20], &txid, "transaction id");
    let ty = u16::from_be_bytes([m[0], m[1]]);
    let mut addrs = Vec::new();
    let mut error = None;
    let mut at = 20;
    while at + 4 <= m.len() {
        let t = u16::from_be_bytes([m[at], m[at + 1]]);
        let l = u16::from_be_bytes([m[at + 2], m[at + 3]]) as usize;
        let v = &m[at + 4..at + 4 + l];
        match t {
            MAPPED_ADDRESS | RESPONSE_ORIGIN | OTHER_ADDRESS | XOR_MAPPED_ADDRESS => {
                assert_eq!((v[1], l), (1, 8), "IPv4 address attribute");
                let mut port = u16::from_be_bytes([v[2], v[3]]);
                let mut ip = [v[4], v[5], v[6], v[7]];
                if t == XOR_MAPPED_ADDRESS {
                    port ^= (MAGIC_COOKIE >> 16) as u16;
                    for (b, c) in ip.iter_mut().zip(MAGIC_COOKIE.to_be_bytes()) {
                        *b ^= c;
                    }
                }
                addrs.push((t, SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)));
            }
            0x0009 => error = Some(v[2] as u16 * 100 + v[3] as u16),
            _ => {}
        }
        at += 4 + ((l + 3) & !3);
    }
    Answer { ty, error, addrs }
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    s
}

/// Receives one datagram (bounded by the socket's timeout): the bytes and their source.
fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = s.recv_from(&mut buf).expect("an answer within the timeout");
    (buf[..n].to_vec(), from)
}

fn silent(s: &UdpSocket) -> bool {
    s.set_read_timeout(Some(QUIET)).unwrap();
    let mut buf = [0u8; 2048];
    let quiet = s.recv_from(&mut buf).is_err();
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    quiet
}

/// A1:P1 and, from a plain Binding's OTHER-ADDRESS, A2:P2.
fn pair(server: &TurnServer) -> (SocketAddr, SocketAddr) {
    let a1p1 = server.addr();
    let s = client();
    let txid = [1; 12];
    s.send_to(&request(0x0001, txid, &[]), a1p1).unwrap();
    let (m, from) = recv(&s);
    assert_eq!(from, a1p1);
    let a = decode(&m, txid);
    assert_eq!(a.ty, 0x0101, "Binding success");
    assert_eq!(a.addr(RESPONSE_ORIGIN), a1p1);
    let a2p2 = a.addr(OTHER_ADDRESS);
    assert_eq!(a2p2.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    assert_ne!(a2p2.port(), a1p1.port());
    (a1p1, a2p2)
}

#[test]
fn every_change_request_is_answered_from_the_table_1_address() {
    let server = server();
    let (a1p1, a2p2) = pair(&server);
    let (a1, p1, a2, p2) = (a1p1.ip(), a1p1.port(), a2p2.ip(), a2p2.port());
    let s = client();
    let me = s.local_addr().unwrap();
    let mut n = 0u8;
    for (da, dp) in [(a1, p1), (a1, p2), (a2, p1), (a2, p2)] {
        let (ca, cp) = (
            if da == a1 { a2 } else { a1 },
            if dp == p1 { p2 } else { p1 },
        );
        for (ip, port) in [(false, false), (true, false), (false, true), (true, true)] {
            n += 1;
            let txid = [n; 12];
            let to = SocketAddr::new(da, dp);
            s.send_to(&request(0x0001, txid, &[change(ip, port)]), to)
                .unwrap();
            let (m, from) = recv(&s);
            let want = SocketAddr::new(if ip { ca } else { da }, if port { cp } else { dp });
            assert_eq!(from, want, "to {to}, change ip {ip} port {port}");
            let a = decode(&m, txid);
            assert_eq!(a.ty, 0x0101);
            assert_eq!(a.addr(RESPONSE_ORIGIN), want);
            assert_eq!(a.addr(OTHER_ADDRESS), SocketAddr::new(ca, cp));
            assert_eq!(a.addr(XOR_MAPPED_ADDRESS), me);
            assert_eq!(a.addr(MAPPED_ADDRESS), me);
        }
    }
}

#[test]
fn response_port_answers_another_socket() {
    let server = server();
    let (a1p1, a2p2) = pair(&server);
    let (s, other) = (client(), client());
    let port = other.local_addr().unwrap().port().to_be_bytes();
    let txid = [7; 12];
    let attrs = [
        (RESPONSE_PORT, vec![port[0], port[1], 0, 0]),
        change(true, true),
    ];
    s.send_to(&request(0x0001, txid, &attrs), a1p1).unwrap();
    let (m, from) = recv(&other);
    assert_eq!(from, a2p2);
    assert_eq!(
        decode(&m, txid).addr(XOR_MAPPED_ADDRESS),
        s.local_addr().unwrap()
    );
    assert!(silent(&s), "the asking socket got an answer too");
}

#[test]
fn turn_is_served_only_on_the_primary_address() {
    let server = server();
    let (a1p1, a2p2) = pair(&server);
    // Allocate with REQUESTED-TRANSPORT UDP and no credentials.
    let allocate = |txid| request(0x0003, txid, &[(0x0019, vec![17, 0, 0, 0])]);
    let s = client();
    let others = [
        SocketAddr::new(a1p1.ip(), a2p2.port()),
        SocketAddr::new(a2p2.ip(), a1p1.port()),
        a2p2,
    ];
    for to in others {
        s.send_to(&allocate([9; 12]), to).unwrap();
        assert!(silent(&s), "TURN answered on {to}");
    }
    s.send_to(&allocate([10; 12]), a1p1).unwrap();
    let (m, _) = recv(&s);
    assert_eq!(decode(&m, [10; 12]).error, Some(401));
}

#[test]
fn turnd_probe_nat_behaviour_classifies_loopback() {
    let server = server();
    let (a1p1, a2p2) = pair(&server);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnd"));
    cmd.args([
        "probe",
        "--nat-behaviour",
        "--json",
        &format!("stun:{a1p1}"),
    ]);
    let (status, out) = run_tool("turnd probe", cmd, TOOL_TIMEOUT);
    assert!(status.success(), "probe failed ({status}):\n{out}");
    for field in [
        "\"mapping\":\"endpoint-independent\"".to_string(),
        "\"filtering\":\"endpoint-independent\"".to_string(),
        format!("\"other_address\":\"{a2p2}\""),
        format!("\"response_origin\":\"{a1p1}\""),
    ] {
        assert!(out.contains(&field), "no {field} in:\n{out}");
    }
}

/// Tier 2 (`cargo test --features external`; `.ci/run` runs it): coturn's own RFC 5780 clients
/// (Debian package `coturn`) against turnd. A missing tool fails the test with the way to get
/// it.
#[cfg(feature = "external")]
mod external {
    use super::*;
    use common::require_tool;

    /// `NAT with Endpoint Independent Mapping!` and `... Filtering!` from natdiscovery's output.
    fn assert_endpoint_independent(out: &str) {
        for what in ["Mapping", "Filtering"] {
            let line = format!("NAT with Endpoint Independent {what}!");
            assert!(out.contains(&line), "no `{line}` in:\n{out}");
        }
    }

    #[test]
    fn turnutils_natdiscovery_reports_endpoint_independent_mapping_and_filtering() {
        let tool = require_tool("turnutils_natdiscovery");
        let server = server();
        let (a1p1, a2p2) = pair(&server);
        for padding in [false, true] {
            let mut cmd = Command::new(&tool);
            cmd.args(["-m", "-f"]);
            if padding {
                cmd.arg("-P");
            }
            cmd.args(["-p", &a1p1.port().to_string(), "127.0.0.1"]);
            let (status, out) = run_tool("turnutils_natdiscovery", cmd, TOOL_TIMEOUT);
            assert!(status.success(), "natdiscovery failed ({status}):\n{out}");
            assert_endpoint_independent(&out);
            // Its filtering test asks for change IP and port: the answer came from A2:P2.
            let origin = format!("Response origin: : {a2p2}");
            assert!(out.contains(&origin), "no `{origin}` in:\n{out}");
        }
    }

    #[test]
    fn turnutils_stunclient_sees_the_response_origins() {
        let tool = require_tool("turnutils_stunclient");
        let server = server();
        let (a1p1, a2p2) = pair(&server);
        let mut cmd = Command::new(tool);
        cmd.args(["-f", "-p", &a1p1.port().to_string(), "127.0.0.1"]);
        let (status, out) = run_tool("turnutils_stunclient", cmd, TOOL_TIMEOUT);
        assert!(status.success(), "stunclient failed ({status}):\n{out}");
        let values = |key: &str| -> Vec<SocketAddr> {
            out.lines()
                .filter_map(|l| l.split_once(key).map(|(_, a)| a.trim()))
                .map(|a| a.parse().unwrap_or_else(|e| panic!("{a:?}: {e}\n{out}")))
                .collect()
        };
        let origins = values("Response origin: : ");
        // The plain request is answered from A1:P1, the change-IP-and-port one from A2:P2.
        assert!(origins.contains(&a1p1), "{out}");
        assert!(origins.contains(&a2p2), "{out}");
        let others = values("Other addr: : ");
        assert!(
            !others.is_empty() && others.iter().all(|o| *o == a2p2),
            "{out}"
        );
    }
}
