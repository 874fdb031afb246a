//! Metrics and health: the admin HTTP listener (`metrics_listen`).
//!
//! Workers publish their counters into per-worker [`WorkerMetrics`] (single-writer atomics,
//! one cache-line-aligned block each); a scrape sums them ([`collect`]) and encodes the result
//! with `prometheus-client`. The listener runs on its own thread and runtime, so a slow scraper
//! never delays a worker.
//!
//! - `GET /metrics`: OpenMetrics text when the `Accept` header asks for
//!   `application/openmetrics-text`, else the Prometheus text format 0.0.4.
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 once every listener is bound and the server is not draining, else 503.

pub mod admin;
pub mod collect;
pub mod http;
pub mod process;
pub mod revocations;
pub mod store;
pub mod worker;
pub mod xdp;

pub use worker::WorkerMetrics;

use crate::core::Shared;
use anyhow::Context;
use collect::TurndCollector;
use http::{Request, Response};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::watch;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What one worker holds of the admin listener: where it publishes its counters, and where
/// admin API requests reach it.
pub struct WorkerLink {
    pub metrics: Arc<WorkerMetrics>,
    pub admin: admin::AdminReceiver,
}

/// What the admin listener serves beyond the workers' own counters: the fleet store's sync
/// task link (`/revocations` and its metrics; empty without a store), with a store the fleet
/// view's client and the report task's metrics, and the XDP program's counters when attached.
pub struct Hooks {
    pub link: Arc<crate::store::Link>,
    pub fleet: Option<(redis::Client, Arc<crate::store::stats::StoreStats>)>,
    pub xdp: Option<Arc<dyn xdp::XdpSource>>,
}

/// The running admin listener.
pub struct Endpoint {
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Endpoint {
    /// Binds `addr` (so a bind failure is reported at start-up) and serves it on a thread of
    /// its own until `shutdown` turns true or its sender is dropped.
    pub fn start(
        addr: SocketAddr,
        workers: Vec<Arc<WorkerMetrics>>,
        shared: Arc<Shared>,
        admin: Vec<admin::AdminSender>,
        admin_token: Option<String>,
        hooks: Hooks,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Endpoint> {
        let Hooks {
            link: store,
            fleet,
            xdp,
        } = hooks;
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on metrics http {addr} (metrics_listen)"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let ready = Arc::new(AtomicBool::new(false));
        let mut registry = collect::registry(TurndCollector {
            workers,
            shared: Some(shared),
            xdp,
        });
        registry.register_collector(Box::new(self::store::StoreCollector(store.clone())));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the metrics runtime")?;
        let mut router =
            Router::new(Registry::default(), ready.clone(), admin, admin_token).with_store(store);
        // With a store: its report task's metrics, and the fleet view (`/fleet/…`) on a
        // connection of this runtime's own, made lazily.
        if let Some((client, stats)) = fleet {
            registry.register_collector(Box::new(crate::store::stats::StoreCollector(stats)));
            let _enter = rt.enter();
            router.fleet = Some(crate::store::fleet::FleetApi::new(client)?);
        }
        router.registry = registry;
        let route = Arc::new(router);
        let thread = std::thread::Builder::new()
            .name("turnd-metrics".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot register the metrics listener");
                            return;
                        }
                    };
                    let stop = async move {
                        while !*shutdown.borrow() {
                            if shutdown.changed().await.is_err() {
                                break;
                            }
                        }
                    };
                    http::serve(listener, route, stop, http::Limits::ADMIN).await;
                });
            })
            .context("cannot start the metrics thread")?;
        Ok(Endpoint {
            addr,
            ready,
            thread: Some(thread),
        })
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What `/readyz` answers: true = 200, false = 503.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Waits for the listener's thread (after the shutdown signal).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The admin listener's routes.
pub struct Router {
    registry: Registry,
    ready: Arc<AtomicBool>,
    workers: Vec<admin::AdminSender>,
    /// `Bearer TOKEN` when `admin_token` is set.
    expected: Option<String>,
    /// The store task, for `/revocations` (empty without a store).
    store: Arc<crate::store::Link>,
    /// The fleet view (`/fleet/allocations`), with a store.
    fleet: Option<crate::store::fleet::FleetApi>,
}

impl Router {
    pub fn new(
        registry: Registry,
        ready: Arc<AtomicBool>,
        workers: Vec<admin::AdminSender>,
        token: Option<String>,
    ) -> Router {
        Router {
            registry,
            ready,
            workers,
            expected: token.map(|t| format!("Bearer {t}")),
            store: Default::default(),
            fleet: None,
        }
    }

    /// The router answering `/revocations` through `store`.
    pub fn with_store(mut self, store: Arc<crate::store::Link>) -> Router {
        self.store = store;
        self
    }

    /// Answers one request. Only the admin API waits (for the workers, asynchronously);
    /// every other path answers at once.
    pub async fn answer(&self, req: &Request) -> Response {
        let get = matches!(req.method.as_str(), "GET" | "HEAD");
        let admin_path = req.path == "/allocations"
            || req.path.starts_with("/allocations/")
            || req.path == "/revocations"
            || req.path.starts_with("/revocations/")
            || req.path.starts_with("/fleet/");
        if let (true, Some(expected)) = (admin_path, &self.expected) {
            // Constant time, so the token cannot be guessed byte by byte from timings.
            let ok: bool =
                subtle::ConstantTimeEq::ct_eq(req.authorization.as_bytes(), expected.as_bytes())
                    .into();
            if !ok {
                return Response::text(401, "the admin API needs Authorization: Bearer TOKEN\n");
            }
        }
        match req.path.as_str() {
            "/metrics" | "/healthz" | "/readyz" | "/allocations" if !get => {
                Response::method_not_allowed("GET, HEAD")
            }
            "/metrics" => scrape(&self.registry, &req.accept),
            "/healthz" => Response::text(200, "ok\n"),
            "/readyz" if self.ready.load(Ordering::Relaxed) => Response::text(200, "ready\n"),
            "/readyz" => Response::text(503, "not ready\n"),
            p if p == "/revocations" || p.starts_with("/revocations/") => {
                revocations::answer(&self.store, req).await
            }
            "/fleet/allocations" => match &self.fleet {
                Some(fleet) => fleet.answer(req).await,
                None => Response::text(404, "no store: the fleet view needs `store`\n"),
            },
            "/allocations" => match admin::list(&self.workers).await {
                Some(list) => Response {
                    content_type: "application/json",
                    ..Response::text(200, admin::to_json(&list))
                },
                None => Response::text(504, "a worker did not answer\n"),
            },
            path => match path.strip_prefix("/allocations/") {
                Some(id) if req.method == "DELETE" => match admin::close(&self.workers, id).await {
                    Some(true) => Response::text(200, "deleted\n"),
                    Some(false) => Response::text(404, "no such allocation\n"),
                    None => Response::text(504, "the worker did not answer\n"),
                },
                Some(_) => Response::method_not_allowed("DELETE"),
                None => Response::text(
                    404,
                    "not found; try /metrics, /healthz, /readyz or /allocations\n",
                ),
            },
        }
    }
}

impl http::Route for Router {
    async fn route(&self, req: Request) -> Response {
        self.answer(&req).await
    }
}

/// Encodes the registry in the format the `Accept` header asks for.
pub fn scrape(registry: &Registry, accept: &str) -> Response {
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, registry).is_err() {
        return Response::text(500, "cannot encode metrics\n");
    }
    if wants_openmetrics(accept) {
        Response {
            content_type: OPENMETRICS,
            ..Response::text(200, body)
        }
    } else {
        Response {
            content_type: PROMETHEUS_TEXT,
            ..Response::text(200, openmetrics_to_prometheus(&body))
        }
    }
}

/// True when `accept` lists `application/openmetrics-text` with a non-zero quality.
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut params = range.split(';').map(str::trim);
        let is_om = params
            .next()
            .is_some_and(|t| t.eq_ignore_ascii_case("application/openmetrics-text"));
        let refused = params.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f64>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        is_om && !refused
    })
}

/// Rewrites `prometheus-client`'s OpenMetrics text as the Prometheus text format 0.0.4, which
/// scrapers that do not ask for OpenMetrics (and `promtool check metrics`) read: a counter's
/// HELP and TYPE name the `_total` series, an info metric becomes a gauge named `_info`, and
/// the `# UNIT` and `# EOF` lines go.
pub fn openmetrics_to_prometheus(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut help: Option<(&str, &str)> = None;
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // Held until the TYPE line says which name to print.
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "histogram" | "gauge" => (name.to_string(), kind),
                _ => (name.to_string(), "untyped"),
            };
            if let Some((_, text)) = help.take() {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_listener;
