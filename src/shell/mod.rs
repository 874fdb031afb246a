//! The thin tokio shell: binds sockets, starts one worker thread per core, and stops them.
//!
//! Like mini-redis's `server::run`, [`Server::start`] takes a ready [`Config`] and returns a
//! handle with the bound addresses, so tests can run a real server on port 0.

mod discover;
mod setup;
mod socket;
mod worker;

use crate::config::Config;
use anyhow::Context;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Checks what only start-up would otherwise find wrong in a loaded config.
pub fn check(config: &Config) -> anyhow::Result<()> {
    setup::relay_addrs(config).map(|_| ())
}

/// A running server.
pub struct Server {
    udp_addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    metrics: crate::metrics::Endpoint,
}

impl Server {
    /// Binds every listener and starts the workers. Returns once all sockets are bound, so
    /// a bind failure is reported here rather than in a log line.
    pub fn start(config: Config) -> anyhow::Result<Server> {
        let shared = setup::shared_state(&config)?;
        for r in &shared.config.relays {
            tracing::info!(bind = %r.bind, advertised = %r.advertised, "relay address");
            // Clients told a private address cannot reach the relay from outside.
            if !crate::core::peer_filter::PeerFilter::default().is_allowed(r.advertised) {
                tracing::warn!(
                    advertised = %r.advertised,
                    "relay address is not publicly routable; clients on other networks cannot reach \
                     it: set external_ips (--external-ip PUBLIC) if this host is behind NAT or Docker"
                );
            }
        }
        let workers = config.effective_workers().max(1);

        // Per listening address, one SO_REUSEPORT socket per worker.
        let mut per_worker: Vec<Vec<std::net::UdpSocket>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut udp_addrs = Vec::new();
        for addr in &config.listen {
            let group = socket::bind_reuseport_group(*addr, workers)
                .with_context(|| format!("cannot listen on udp {addr}"))?;
            udp_addrs.push(group[0].local_addr()?);
            for (w, s) in group.into_iter().enumerate() {
                per_worker[w].push(s);
            }
        }

        let (tx, rx) = watch::channel(false);
        let worker_metrics: Vec<std::sync::Arc<crate::metrics::WorkerMetrics>> =
            (0..workers).map(|_| Default::default()).collect();
        let metrics = crate::metrics::Endpoint::start(
            config.metrics_listen,
            worker_metrics.clone(),
            shared.clone(),
            rx.clone(),
        )?;
        let now = Instant::now();
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut handles = Vec::new();
        for (index, listeners) in per_worker.into_iter().enumerate() {
            let seed: u64 = rand::random();
            let core = crate::core::Server::new(shared.clone(), seed, now, unix_now);
            let (rx, m) = (rx.clone(), worker_metrics[index].clone());
            let handle = std::thread::Builder::new()
                .name(format!("turnd-worker-{index}"))
                .spawn(move || worker::run(index, core, listeners, rx, m))
                .context("cannot start worker thread")?;
            handles.push(handle);
        }
        metrics.set_ready(true);
        Ok(Server {
            udp_addrs,
            shutdown: tx,
            workers: handles,
            metrics,
        })
    }

    /// The bound UDP listening addresses (with real ports when port 0 was asked for).
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp_addrs.clone()
    }

    /// The bound address of the metrics and health listener.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.addr()
    }

    /// Ends every allocation and stops the workers.
    pub fn shutdown(self) {
        self.metrics.set_ready(false);
        let _ = self.shutdown.send(true);
        for h in self.workers {
            let _ = h.join();
        }
        self.metrics.join();
    }
}
