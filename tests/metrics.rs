//! The admin listener against a running server: relay a known number of datagrams and bytes
//! with a raw client, scrape `/metrics`, and see the exact counts while the allocation is
//! alive (counters are live, not settled at the end of a session); end it and see the gauge
//! drop and the duration histogram count it. `promtool check metrics` (Debian package
//! `prometheus`) must accept what is scraped.

mod raw;

use raw::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use turnd::config::ConfigArgs;

/// How long a counter may take to reach its value: workers publish after each batch, so this
/// is only the gap between a datagram's send and the end of its batch.
const SETTLE: Duration = Duration::from_secs(5);
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

struct HttpResponse {
    status: u16,
    content_type: String,
    body: String,
}

/// One HTTP/1.1 GET with `Connection: close`, bounded by [`HTTP_TIMEOUT`].
fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> HttpResponse {
    let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).expect("connect to metrics");
    s.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(HTTP_TIMEOUT)).unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the whole response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or("")
        .to_string();
    HttpResponse {
        status,
        content_type,
        body: body.to_string(),
    }
}

/// Every sample of a text exposition: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn scrape(addr: SocketAddr) -> (String, HashMap<String, f64>) {
    let r = get(addr, "/metrics", None);
    assert_eq!(r.status, 200, "GET /metrics: {}", r.body);
    let s = samples(&r.body);
    (r.body, s)
}

/// Scrapes until every `expected` series has its value (bounded by [`SETTLE`]), then checks
/// they are exactly that; returns the last exposition.
#[track_caller]
fn expect_series(addr: SocketAddr, expected: &[(&str, f64)]) -> String {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (text, s) = scrape(addr);
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(k, v)| s.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: expected {v}, got {:?}", s.get(*k)))
            .collect();
        if wrong.is_empty() {
            return text;
        }
        if Instant::now() >= deadline {
            panic!(
                "after {SETTLE:?}:\n  {}\nexposition:\n{text}",
                wrong.join("\n  ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install the Debian package `prometheus`")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    // promtool reads stdin to its end and answers at once; the wait is bounded by that.
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics rejected the exposition:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const TO_PEER_DATAGRAMS: &str =
    "turnd_relayed_datagrams_total{direction=\"client_to_peer\",transport=\"udp\"}";
const TO_PEER_BYTES: &str =
    "turnd_relayed_bytes_total{direction=\"client_to_peer\",transport=\"udp\"}";
const TO_CLIENT_DATAGRAMS: &str =
    "turnd_relayed_datagrams_total{direction=\"peer_to_client\",transport=\"udp\"}";
const TO_CLIENT_BYTES: &str =
    "turnd_relayed_bytes_total{direction=\"peer_to_client\",transport=\"udp\"}";
const ACTIVE: &str = "turnd_allocations_active{transport=\"udp\",family=\"ipv4\"}";
const CREATED: &str = "turnd_allocations_created_total{transport=\"udp\",family=\"ipv4\"}";
const DURATIONS: &str = "turnd_allocation_duration_seconds_count";

#[test]
fn relayed_traffic_is_counted_live_and_exactly() {
    let server = TestServer::start(ConfigArgs {
        allow_peer: vec!["127.0.0.1/32".into()],
        workers: Some("2".into()),
        ..base_args()
    });
    let m = server.metrics_addr();
    assert!(m.ip().is_loopback() && m.port() != 0, "metrics on {m}");
    expect_series(
        m,
        &[(ACTIVE, 0.0), (TO_PEER_DATAGRAMS, 0.0), (DURATIONS, 0.0)],
    );

    let peer = Peer::v4();
    let mut c = server.client();
    let relay = c.allocate();
    c.bind_channel(0x4000, peer.addr());
    c.permit(peer.addr());

    // Client → peer: five ChannelData (10+20+30+40+50 bytes) and two Send indications (7
    // bytes each), each seen by the peer before the next goes.
    let mut to_peer_bytes = 0;
    for size in [10, 20, 30, 40, 50] {
        let payload = pseudo_random(size as u64, size);
        c.send_channel_data(0x4000, &payload, size % 4 != 0);
        assert_eq!(peer.recv().expect("peer gets ChannelData").0, payload);
        to_peer_bytes += size;
    }
    for i in 0..2 {
        let payload = pseudo_random(100 + i, 7);
        c.send_indication(peer.addr(), &payload);
        assert_eq!(peer.recv().expect("peer gets Send data").0, payload);
        to_peer_bytes += 7;
    }
    // Peer → client: four datagrams of 100 bytes, framed as ChannelData.
    for i in 0..4 {
        let payload = pseudo_random(200 + i, 100);
        peer.send_to(relay, &payload);
        assert_eq!(c.recv_channel_data(), (0x4000, payload));
    }

    // The allocation is still alive: the counters have moved already.
    let text = expect_series(
        m,
        &[
            (TO_PEER_DATAGRAMS, 7.0),
            (TO_PEER_BYTES, to_peer_bytes as f64),
            (TO_CLIENT_DATAGRAMS, 4.0),
            (TO_CLIENT_BYTES, 400.0),
            (ACTIVE, 1.0),
            (CREATED, 1.0),
            (DURATIONS, 0.0),
            ("turnd_permissions_active", 1.0),
            ("turnd_channels_active", 1.0),
            ("turnd_channels_created_total", 1.0),
            ("turnd_relay_ports_in_use", 1.0),
            (
                "turnd_requests_total{method=\"allocate\",result=\"success\"}",
                1.0,
            ),
            (
                "turnd_requests_total{method=\"channel_bind\",result=\"success\"}",
                1.0,
            ),
            (
                "turnd_requests_total{method=\"create_permission\",result=\"success\"}",
                1.0,
            ),
            // The client's first request, unauthenticated, got its nonce from a 401.
            (
                "turnd_requests_total{method=\"refresh\",result=\"401\"}",
                1.0,
            ),
            ("turnd_workers", 2.0),
        ],
    );
    promtool_check(&text);

    // A ChannelData on a channel never bound is dropped and counted as such.
    c.send_channel_data(0x4001, b"nowhere", false);
    expect_series(
        m,
        &[
            ("turnd_datagrams_dropped_total{reason=\"no_channel\"}", 1.0),
            (TO_PEER_DATAGRAMS, 7.0),
        ],
    );

    // End it: the gauge drops and the histogram observes one duration.
    assert_success(&c.refresh(Some(0)), REFRESH);
    let text = expect_series(
        m,
        &[
            (ACTIVE, 0.0),
            (CREATED, 1.0),
            (DURATIONS, 1.0),
            ("turnd_allocation_duration_seconds_bucket{le=\"+Inf\"}", 1.0),
            ("turnd_permissions_active", 0.0),
            ("turnd_channels_active", 0.0),
            ("turnd_relay_ports_in_use", 0.0),
            (TO_PEER_BYTES, to_peer_bytes as f64),
            (TO_CLIENT_BYTES, 400.0),
        ],
    );
    promtool_check(&text);
}

#[test]
fn auth_failures_and_denied_peers_are_counted_by_reason() {
    let server = TestServer::start(base_args());
    let m = server.metrics_addr();
    let mut wrong = server.client().with_user(ALICE.0, "not-alice-pw");
    assert_error(&wrong.allocate_with(&[udp()]), ALLOCATE, 401);
    let mut stranger = server.client().with_user("mallory", "x");
    assert_error(&stranger.allocate_with(&[udp()]), ALLOCATE, 401);
    // Loopback peers are denied by default.
    let mut c = server.client();
    c.allocate();
    let denied: SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert_error(&c.create_permission(&[denied]), CREATE_PERMISSION, 403);
    expect_series(
        m,
        &[
            ("turnd_auth_failures_total{reason=\"bad_integrity\"}", 1.0),
            ("turnd_auth_failures_total{reason=\"unknown_user\"}", 1.0),
            ("turnd_peers_denied_total", 1.0),
            (
                "turnd_requests_total{method=\"allocate\",result=\"401\"}",
                2.0,
            ),
            (
                "turnd_requests_total{method=\"refresh\",result=\"401\"}",
                3.0,
            ),
            (
                "turnd_requests_total{method=\"create_permission\",result=\"403\"}",
                1.0,
            ),
        ],
    );
}

#[test]
fn health_readiness_and_formats() {
    let server = TestServer::start(base_args());
    let m = server.metrics_addr();
    assert_eq!(get(m, "/healthz", None).status, 200);
    assert_eq!(get(m, "/readyz", None).status, 200);
    assert_eq!(get(m, "/nothing-here", None).status, 404);

    let text = get(m, "/metrics", Some("text/plain"));
    assert!(
        text.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        text.content_type
    );
    assert!(!text.body.contains("# EOF"));
    promtool_check(&text.body);
    for name in [
        "turnd_build_info",
        "turnd_relay_ports_free",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(
            text.body.lines().any(|l| l.starts_with(name)),
            "no {name} in:\n{}",
            text.body
        );
    }
    let om = get(
        m,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert!(
        om.content_type
            .starts_with("application/openmetrics-text; version=1.0.0"),
        "{}",
        om.content_type
    );
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
    assert!(om.body.contains("# TYPE turnd_relayed_bytes counter\n"));
}
