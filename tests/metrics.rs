//! The admin listener against a running server: relay a known number of datagrams and bytes
//! with a raw client, scrape `/metrics`, and see the exact counts while the allocation is
//! alive (counters are live, not settled at the end of a session); end it and see the gauge
//! drop and the duration histogram count it; health, readiness, both exposition formats, and
//! the admin API. In tier 2 (`mod external`, feature `external`; tests/README.md),
//! `promtool check metrics` (Debian package `prometheus`) must accept what is scraped, and a
//! real Prometheus server must scrape it.

mod raw;

use raw::stream::*;
use raw::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
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
    http(addr, "GET", path, accept)
}

fn http(addr: SocketAddr, method: &str, path: &str, accept: Option<&str>) -> HttpResponse {
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    http_with_headers(addr, method, path, &accept)
}

/// An HTTP/1.1 request with `headers` (each ending in CRLF) added after Host.
fn http_with_headers(addr: SocketAddr, method: &str, path: &str, headers: &str) -> HttpResponse {
    let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).expect("connect to metrics");
    s.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(HTTP_TIMEOUT)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n"
    )
    .unwrap();
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
    relay_and_count(|_| {});
}

/// Relays a known load through one allocation and checks the exact counts while it is alive
/// and after it ends; `exposition` is given the `/metrics` text scraped at each stage (idle,
/// relaying, ended) for checks of its own.
fn relay_and_count(exposition: impl Fn(&str)) {
    let server = TestServer::start(ConfigArgs {
        allow_peer: vec!["127.0.0.1/32".into()],
        workers: Some("2".into()),
        ..base_args()
    });
    let m = server.metrics_addr();
    assert!(m.ip().is_loopback() && m.port() != 0, "metrics on {m}");
    let text = expect_series(
        m,
        &[(ACTIVE, 0.0), (TO_PEER_DATAGRAMS, 0.0), (DURATIONS, 0.0)],
    );
    exposition(&text);

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
    exposition(&text);

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
    exposition(&text);
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
fn quota_refusals_are_counted_as_a_drop_reason() {
    let server = TestServer::start(ConfigArgs {
        user_quota: Some("1".into()),
        ..base_args()
    });
    let m = server.metrics_addr();
    let mut a = server.client();
    a.allocate();
    let mut b = server.client();
    assert_error(&b.allocate_with(&[udp()]), ALLOCATE, 486);
    expect_series(
        m,
        &[
            ("turnd_datagrams_dropped_total{reason=\"quota\"}", 1.0),
            (
                "turnd_datagrams_dropped_total{reason=\"write_queue_full\"}",
                0.0,
            ),
            (
                "turnd_requests_total{method=\"allocate\",result=\"486\"}",
                1.0,
            ),
        ],
    );
}

/// docs/metrics.md is the operator's reference: every metric family turnd exposes, and every
/// `reason` label value, must be in it (so a new counter cannot ship undocumented).
#[test]
fn every_metric_and_reason_is_in_the_metrics_reference() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("docs/metrics.md");
    let server = TestServer::start(base_args());
    let (text, _) = scrape(server.metrics_addr());
    let mut missing = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let family = rest.split_whitespace().next().unwrap_or_default();
            if family.starts_with("turnd_") && !docs.contains(family) {
                missing.push(family.to_string());
            }
        }
        if line.starts_with("turnd_") {
            if let Some(i) = line.find("reason=\"") {
                let value = line[i + 8..].split('"').next().unwrap_or_default();
                if !docs.contains(&format!("`{value}`")) {
                    missing.push(format!("reason=\"{value}\" ({line})"));
                }
            }
        }
    }
    missing.dedup();
    assert!(missing.is_empty(), "not in docs/metrics.md: {missing:#?}");
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

#[test]
fn tcp_clients_are_counted_under_their_transport() {
    let server = TestServer::start(ConfigArgs {
        allow_peer: vec!["127.0.0.1/32".into()],
        ..base_args()
    });
    let m = server.metrics_addr();
    let peer = Peer::v4();
    let mut c = StreamClient::connect(server.tcp_addr);
    let relay = c.allocate();
    c.bind_channel(0x4000, peer.addr());

    // Client → peer: 5 + 6 + 7 payload bytes (padding is framing, not payload).
    for size in [5, 6, 7] {
        let payload = pseudo_random(size as u64, size);
        c.stream
            .write_all(&channel_data(0x4000, &payload, true))
            .unwrap();
        assert_eq!(peer.recv().expect("relayed to the peer").0, payload);
    }
    // Peer → client: two datagrams of 10 bytes.
    for i in 0..2 {
        let payload = pseudo_random(50 + i, 10);
        peer.send_to(relay, &payload);
        let frame = c.recv_frame();
        assert_eq!(parse_channel_data(&frame[..14]), (0x4000, payload));
    }
    let tcp = |name: &str, direction: &str| {
        format!("turnd_relayed_{name}_total{{direction=\"{direction}\",transport=\"tcp\"}}")
    };
    let active_tcp = "turnd_allocations_active{transport=\"tcp\",family=\"ipv4\"}";
    expect_series(
        m,
        &[
            (&tcp("datagrams", "client_to_peer"), 3.0),
            (&tcp("bytes", "client_to_peer"), 18.0),
            (&tcp("datagrams", "peer_to_client"), 2.0),
            (&tcp("bytes", "peer_to_client"), 20.0),
            (active_tcp, 1.0),
            (ACTIVE, 0.0),
            (TO_PEER_DATAGRAMS, 0.0),
        ],
    );

    // Closing the connection ends its allocation.
    drop(c);
    expect_series(m, &[(active_tcp, 0.0), (DURATIONS, 1.0)]);
}

#[test]
fn admin_api_lists_and_deletes_allocations() {
    let server = TestServer::start(ConfigArgs {
        allow_peer: vec!["127.0.0.1/32".into()],
        workers: Some("2".into()),
        ..base_args()
    });
    let m = server.metrics_addr();
    let empty = get(m, "/allocations", None);
    assert_eq!(
        (empty.status, empty.body.as_str()),
        (200, "{\"allocations\":[]}\n")
    );

    let peer = Peer::v4();
    let mut c = server.client();
    let relay = c.allocate();
    c.bind_channel(0x4000, peer.addr());
    c.send_channel_data(0x4000, &[1; 30], false);
    assert_eq!(peer.recv().expect("relayed").0.len(), 30);

    let list = get(m, "/allocations", None);
    assert_eq!(list.status, 200);
    assert_eq!(list.content_type, "application/json");
    let body = &list.body;
    for field in [
        "\"user\":\"alice\"".to_string(),
        "\"transport\":\"udp\"".to_string(),
        format!("\"client\":\"{}\"", c.local()),
        format!("\"server\":\"{}\"", server.addr),
        format!("\"relay\":\"{relay}\""),
        "\"client_to_peer_bytes\":30".to_string(),
        "\"client_to_peer_datagrams\":1".to_string(),
        "\"peer_to_client_bytes\":0".to_string(),
        "\"permissions\":[\"127.0.0.1\"]".to_string(),
        format!(
            "\"channels\":[{{\"number\":16384,\"peer\":\"{}\"}}]",
            peer.addr()
        ),
    ] {
        assert!(body.contains(&field), "no {field} in {body}");
    }
    let id = body
        .split("\"id\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no id in {body}"))
        .to_string();
    assert_eq!(body.matches("\"id\":").count(), 1, "{body}");

    assert_eq!(
        http(m, "GET", &format!("/allocations/{id}"), None).status,
        405
    );
    assert_eq!(
        http(m, "DELETE", &format!("/allocations/{id}"), None).status,
        200
    );
    assert_eq!(
        http(m, "DELETE", &format!("/allocations/{id}"), None).status,
        404
    );
    assert_eq!(
        http(m, "DELETE", "/allocations/not-an-id", None).status,
        404
    );
    assert_eq!(http(m, "DELETE", "/allocations/99-0-0", None).status, 404);
    assert_eq!(http(m, "POST", "/allocations", None).status, 405);

    // It is gone: the client's next request finds no allocation, and the gauge drops.
    assert_error(&c.refresh(Some(600)), REFRESH, 437);
    assert_eq!(get(m, "/allocations", None).body, "{\"allocations\":[]}\n");
    expect_series(m, &[(ACTIVE, 0.0), (DURATIONS, 1.0)]);
}

#[test]
fn admin_token_guards_the_admin_api_but_not_metrics_or_health() {
    let server = TestServer::start(ConfigArgs {
        admin_token: Some("s3cret-token".into()),
        ..base_args()
    });
    let m = server.metrics_addr();
    let list = |headers: &str| http_with_headers(m, "GET", "/allocations", headers).status;
    assert_eq!(list(""), 401, "no token");
    assert_eq!(list("Authorization: Bearer wrong\r\n"), 401, "wrong token");
    assert_eq!(
        list("Authorization: Basic s3cret-token\r\n"),
        401,
        "wrong scheme"
    );
    assert_eq!(
        list("Authorization: Bearer s3cret-token\r\n"),
        200,
        "right token"
    );
    let delete = http_with_headers(m, "DELETE", "/allocations/0.0", "").status;
    assert_eq!(delete, 401, "DELETE needs the token too");
    // Scrapers and probes need no token.
    assert_eq!(get(m, "/metrics", None).status, 200);
    assert_eq!(get(m, "/healthz", None).status, 200);
    assert_eq!(get(m, "/readyz", None).status, 200);
}

/// Tier 2 (`cargo test --features external`; `.ci/run` runs it): Prometheus's own tools
/// (Debian package `prometheus`) read what turnd exposes — `promtool check metrics` accepts the
/// exposition, and a real Prometheus server scrapes it. A missing tool fails the test with the
/// way to get it.
#[cfg(feature = "external")]
mod external {
    use super::*;
    use std::process::{Command, Stdio};

    /// `promtool check metrics` accepts the exposition of an idle server, of a live
    /// allocation that relayed both ways, and after the allocation ended (a dropped datagram
    /// counted, its duration in the histogram).
    #[test]
    fn promtool_accepts_the_exposition_idle_relaying_and_after_the_allocation_ends() {
        relay_and_count(promtool_check);
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

    /// Percent-encodes a PromQL query for a URL.
    fn url_encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    /// The value of the first sample in a Prometheus instant-query answer, if any.
    fn first_value(json: &str) -> Option<f64> {
        let rest = &json[json.find("\"value\":[")? + "\"value\":[".len()..];
        let rest = &rest[rest.find(",\"")? + 2..];
        rest[..rest.find('"')?].parse().ok()
    }

    /// Kills and reaps the Prometheus server the test started, however the test ends.
    struct Child(std::process::Child);

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A real Prometheus server (Debian package `prometheus`), started on loopback with a 1 s
    /// scrape interval, scrapes turnd; its HTTP API then returns the relayed-bytes series.
    #[test]
    fn a_real_prometheus_scrapes_the_relayed_bytes() {
        let server = TestServer::start(ConfigArgs {
            allow_peer: vec!["127.0.0.1/32".into()],
            ..base_args()
        });
        let m = server.metrics_addr();
        let peer = Peer::v4();
        let mut c = server.client();
        c.allocate();
        c.bind_channel(0x4000, peer.addr());
        for _ in 0..3 {
            c.send_channel_data(0x4000, &[0xAB; 111], false);
            assert_eq!(peer.recv().expect("relayed").0.len(), 111);
        }

        let dir = std::env::temp_dir().join(format!(
            "turnd-prometheus-{}-{}",
            std::process::id(),
            m.port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: turnd\n    static_configs:\n      - targets: [\"{m}\"]\n"
            ),
        )
        .unwrap();
        let web = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let prometheus = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run prometheus ({e}): install the Debian package `prometheus`")
            });
        let _prometheus = Child(prometheus);

        let query = url_encode(
            "turnd_relayed_bytes_total{direction=\"client_to_peer\",transport=\"udp\",job=\"turnd\"}",
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        // Bounded: one query every 250 ms until the deadline.
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            let Ok(mut s) = TcpStream::connect_timeout(&web, HTTP_TIMEOUT) else {
                continue; // not listening yet
            };
            let _ = s.set_read_timeout(Some(HTTP_TIMEOUT));
            let req = format!(
                "GET /api/v1/query?query={query} HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n"
            );
            if s.write_all(req.as_bytes()).is_err() {
                continue;
            }
            let mut body = String::new();
            if s.read_to_string(&mut body).is_err() {
                continue;
            }
            if first_value(&body) == Some(333.0) {
                let _ = std::fs::remove_dir_all(&dir);
                return;
            }
            last = body;
        }
        let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        panic!(
            "Prometheus never returned 333 relayed bytes; last answer:\n{last}\nits log:\n{log}"
        );
    }
}
