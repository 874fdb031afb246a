//! The scrape: summing workers, the encodings, and content negotiation.

use super::collect::{registry, TurndCollector};
use super::worker::{sum, WorkerMetrics};
use super::*;
use crate::core::{
    AllocationId, AuthFailure, Counters, DropReason, EndReason, Event, FiveTuple, Relayed,
    RequestMethod, ResponseResult, Transport,
};
use crate::stun::ErrorCode;
use std::time::Duration;

fn tuple(v6: bool) -> (FiveTuple, SocketAddr) {
    let client: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let server: SocketAddr = "192.0.2.2:3478".parse().unwrap();
    let relay: SocketAddr = if v6 {
        "[2001:db8::1]:50000".parse().unwrap()
    } else {
        "192.0.2.2:50000".parse().unwrap()
    };
    (FiveTuple::udp(client, server), relay)
}

fn created(v6: bool) -> Event {
    let (five_tuple, relay) = tuple(v6);
    Event::AllocationCreated {
        id: AllocationId {
            index: 0,
            generation: 0,
        },
        five_tuple,
        username: "alice".into(),
        relay,
        additional: None,
        lifetime: Duration::from_secs(600),
    }
}

fn ended(v6: bool, secs: u64) -> Event {
    let (five_tuple, relay) = tuple(v6);
    Event::AllocationEnded {
        id: AllocationId {
            index: 0,
            generation: 0,
        },
        five_tuple,
        username: "alice".into(),
        relay,
        additional: None,
        reason: EndReason::Deleted,
        duration: Duration::from_secs(secs),
        stats: Relayed::default(),
    }
}

/// Two workers with known counters and lifecycle events.
fn two_workers() -> Vec<Arc<WorkerMetrics>> {
    let a = Arc::new(WorkerMetrics::default());
    let b = Arc::new(WorkerMetrics::default());
    let mut c = Counters::default();
    c.relayed[Transport::Udp].to_peer_packets = 3;
    c.relayed[Transport::Udp].to_peer_bytes = 300;
    c.relayed[Transport::Udp].to_client_packets = 2;
    c.relayed[Transport::Udp].to_client_bytes = 20;
    c.dropped[DropReason::NoPermission] = 1;
    let allocate = Some(RequestMethod::Allocate);
    c.responses[allocate][ResponseResult::Success] = 1;
    c.responses[allocate][ResponseResult::Error(ErrorCode::Unauthenticated)] = 1;
    c.auth_failure_reasons[AuthFailure::UnknownUser] = 4;
    c.permissions = 2;
    a.publish(&c);
    b.publish(&c);
    let mut hot = c;
    hot.relayed[Transport::Udp].to_peer_packets = 10;
    b.publish_relay(&hot);
    a.on_event(&created(false));
    b.on_event(&created(false));
    b.on_event(&created(true));
    b.on_event(&ended(false, 42));
    a.send_error();
    vec![a, b]
}

fn render(workers: Vec<Arc<WorkerMetrics>>, accept: &str) -> Response {
    let r = registry(TurndCollector {
        workers,
        shared: None,
        xdp: None,
    });
    scrape(&r, accept)
}

fn has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line `{line}` in:\n{text}"
    );
}

#[test]
fn sums_every_worker() {
    let workers = two_workers();
    let s = sum(workers.iter().map(|w| &**w));
    assert_eq!(s.core.relayed[Transport::Udp].to_peer_packets, 13);
    assert_eq!(s.core.relayed[Transport::Udp].to_peer_bytes, 600);
    assert_eq!(s.core.dropped[DropReason::NoPermission], 2);
    assert_eq!(s.core.permissions, 4);
    assert_eq!(s.allocations_active(0, 0), 1);
    assert_eq!(s.allocations_active(0, 1), 1);
    assert_eq!(s.allocations_created[0][0], 2);
    assert_eq!(s.durations.iter().sum::<u64>(), 1);
    assert_eq!(s.duration_sum, Duration::from_secs(42));
    assert_eq!(s.send_errors, 1);
}

#[test]
fn prometheus_text_names_every_series() {
    let r = render(two_workers(), "text/plain");
    assert_eq!(r.content_type, PROMETHEUS_TEXT);
    let t = &r.body;
    has(t, "# TYPE turnd_relayed_bytes_total counter");
    has(
        t,
        "turnd_relayed_bytes_total{direction=\"client_to_peer\",transport=\"udp\"} 600",
    );
    has(
        t,
        "turnd_relayed_datagrams_total{direction=\"client_to_peer\",transport=\"udp\"} 13",
    );
    has(
        t,
        "turnd_relayed_datagrams_total{direction=\"peer_to_client\",transport=\"udp\"} 4",
    );
    has(
        t,
        "turnd_allocations_active{transport=\"udp\",family=\"ipv4\"} 1",
    );
    has(
        t,
        "turnd_allocations_active{transport=\"udp\",family=\"ipv6\"} 1",
    );
    has(
        t,
        "turnd_allocations_created_total{transport=\"udp\",family=\"ipv4\"} 2",
    );
    has(t, "# TYPE turnd_allocation_duration_seconds histogram");
    has(t, "turnd_allocation_duration_seconds_count 1");
    has(t, "turnd_allocation_duration_seconds_sum 42.0");
    has(t, "turnd_allocation_duration_seconds_bucket{le=\"30.0\"} 0");
    has(t, "turnd_allocation_duration_seconds_bucket{le=\"60.0\"} 1");
    has(t, "turnd_allocation_duration_seconds_bucket{le=\"+Inf\"} 1");
    has(
        t,
        "turnd_requests_total{method=\"allocate\",result=\"401\"} 2",
    );
    has(
        t,
        "turnd_requests_total{method=\"allocate\",result=\"success\"} 2",
    );
    has(t, "turnd_auth_failures_total{reason=\"unknown_user\"} 8");
    has(
        t,
        "turnd_datagrams_dropped_total{reason=\"no_permission\"} 2",
    );
    has(t, "turnd_datagrams_dropped_total{reason=\"send_error\"} 1");
    has(t, "turnd_permissions_active 4");
    has(t, "# TYPE turnd_build_info gauge");
    has(
        t,
        &format!(
            "turnd_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
    );
    has(t, "turnd_workers 2");
    assert!(!t.contains("# EOF") && !t.contains("# UNIT"));
    #[cfg(target_os = "linux")]
    has(t, "# TYPE process_cpu_seconds_total counter");
}

#[test]
fn openmetrics_when_asked() {
    let r = render(
        two_workers(),
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    );
    assert_eq!(r.content_type, OPENMETRICS);
    has(&r.body, "# TYPE turnd_relayed_bytes counter");
    has(&r.body, "# UNIT turnd_relayed_bytes bytes");
    has(&r.body, "# TYPE turnd_build info");
    assert!(r.body.ends_with("# EOF\n"));
}

#[test]
fn content_negotiation() {
    assert!(wants_openmetrics("application/openmetrics-text"));
    assert!(wants_openmetrics(
        "text/plain;q=0.5, Application/OpenMetrics-Text; version=1.0.0; q=0.9"
    ));
    assert!(!wants_openmetrics(""));
    assert!(!wants_openmetrics("*/*"));
    assert!(!wants_openmetrics("text/plain; version=0.0.4"));
    assert!(!wants_openmetrics("application/openmetrics-text; q=0"));
}

#[test]
fn conversion_renames_counters_and_drops_openmetrics_lines() {
    let om = "# HELP x_bytes Bytes.\n# TYPE x_bytes counter\n# UNIT x_bytes bytes\n\
              x_bytes_total 5\n# HELP b Build.\n# TYPE b info\nb_info{v=\"1\"} 1\n# EOF\n";
    assert_eq!(
        openmetrics_to_prometheus(om),
        "# HELP x_bytes_total Bytes.\n# TYPE x_bytes_total counter\nx_bytes_total 5\n\
         # HELP b_info Build.\n# TYPE b_info gauge\nb_info{v=\"1\"} 1\n"
    );
}

/// Runs one request through `router` to its answer.
pub(super) fn answer(router: &Router, method: &str, path: &str, authorization: &str) -> Response {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(router.answer(&Request {
        method: method.into(),
        path: path.into(),
        query: String::new(),
        accept: String::new(),
        authorization: authorization.into(),
    }))
}

#[test]
fn routes() {
    let workers = vec![Arc::new(WorkerMetrics::default())];
    let ready = Arc::new(AtomicBool::new(false));
    let route = Router::new(
        registry(TurndCollector {
            workers,
            shared: None,
            xdp: None,
        }),
        ready.clone(),
        Vec::new(),
        None,
    );
    let get = |path: &str| answer(&route, "GET", path, "").status;
    assert_eq!(get("/healthz"), 200);
    assert_eq!(get("/readyz"), 503);
    ready.store(true, Ordering::Relaxed);
    assert_eq!(get("/readyz"), 200);
    assert_eq!(get("/metrics"), 200);
    assert_eq!(get("/nope"), 404);
    assert_eq!(get("/allocations"), 200, "no worker, no allocation");
    assert_eq!(get("/allocations/0-0-0"), 405);
    let delete = |path: &str| answer(&route, "DELETE", path, "").status;
    assert_eq!(delete("/allocations/0-0-0"), 404);
    assert_eq!(delete("/metrics"), 405);
    // The fleet view needs a store; without one it is not there.
    assert_eq!(get("/fleet/allocations"), 404);
    assert_eq!(delete("/fleet/allocations"), 404);
}

#[test]
fn admin_token_guards_allocations_only() {
    let route = Router::new(
        registry(TurndCollector {
            workers: vec![Arc::new(WorkerMetrics::default())],
            shared: None,
            xdp: None,
        }),
        Arc::new(AtomicBool::new(true)),
        Vec::new(),
        Some("s3cret".into()),
    );
    let get = |path: &str, authorization: &str| answer(&route, "GET", path, authorization).status;
    assert_eq!(get("/allocations", ""), 401);
    assert_eq!(get("/allocations", "Bearer wrong"), 401);
    assert_eq!(get("/allocations", "Bearer s3cret"), 200);
    assert_eq!(get("/allocations/0-0-0", ""), 401);
    assert_eq!(get("/revocations", ""), 401);
    assert_eq!(answer(&route, "POST", "/revocations", "").status, 401);
    assert_eq!(answer(&route, "DELETE", "/revocations/a", "").status, 401);
    assert_eq!(get("/revocations", "Bearer s3cret"), 404, "no store");
    assert_eq!(get("/fleet/allocations", ""), 401);
    assert_eq!(get("/metrics", ""), 200);
    assert_eq!(get("/readyz", ""), 200);
    let r = Response::text(401, "");
    assert!(String::from_utf8(r.encode(false))
        .unwrap()
        .contains("WWW-Authenticate: Bearer\r\n"));
}
