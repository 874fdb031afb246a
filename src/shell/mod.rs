//! The thin tokio shell: binds sockets, starts one worker thread per core, and stops them.
//!
//! Like mini-redis's `server::run`, [`Server::start`] takes a ready [`Config`] and returns a
//! handle with the bound addresses, so tests can run a real server on port 0.

mod coalesce;
mod discover;
mod nat_discovery;
mod rlimit;
mod setup;
mod socket;
mod tcp;
mod tcp_relay;
mod tls;
pub mod udp;
mod worker;

pub use rlimit::raise_nofile_limit;

use crate::config::Config;
use anyhow::Context;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Checks what only start-up would otherwise find wrong in a loaded config.
pub fn check(config: &Config) -> anyhow::Result<()> {
    setup::relay_addrs(config)?;
    tls::check(config)
}

/// Tries for a port free in both UDP and TCP when the operator asks for port 0.
const PORT_ATTEMPTS: usize = 16;

/// Binds one `listen` address for every worker, UDP and TCP on the same port. With port 0,
/// UDP picks the port and TCP must get the same one; if another program holds that TCP port,
/// both are dropped and another port is tried.
fn bind_listen_addr(
    addr: SocketAddr,
    workers: usize,
    opts: &udp::Options,
) -> anyhow::Result<(Vec<std::net::UdpSocket>, Vec<std::net::TcpListener>)> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let udp = socket::bind_reuseport_group(addr, workers, opts)
            .with_context(|| format!("cannot listen on udp {addr}"))?;
        let bound = udp[0].local_addr()?;
        match socket::bind_tcp_reuseport_group(bound, workers, addr.port() == 0) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e)
                if addr.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && attempts < PORT_ATTEMPTS => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot listen on tcp {bound}"));
            }
        }
    }
}

/// A running server.
pub struct Server {
    udp_addrs: Vec<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
    tls: tls::Listeners,
    shutdown: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    metrics: crate::metrics::Endpoint,
    shared: std::sync::Arc<crate::core::Shared>,
}

impl Server {
    /// Binds every listener and starts the workers. Returns once all sockets are bound, so
    /// a bind failure is reported here rather than in a log line.
    pub fn start(config: Config) -> anyhow::Result<Server> {
        let workers = config.effective_workers().max(1);
        let udp_opts = udp::Options {
            recv_buffer: config.udp_recv_buffer,
            send_buffer: config.udp_send_buffer,
            gso: udp::gso_enabled(),
            coalesce: (config.udp_coalesce > 0)
                .then(|| std::time::Duration::from_micros(config.udp_coalesce.into())),
        };
        tracing::debug!(gso = udp_opts.gso, "udp batching: recvmmsg/sendmmsg");

        // Per listening address, one SO_REUSEPORT UDP socket and one TCP listener per worker.
        let mut per_worker: Vec<Vec<std::net::UdpSocket>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut tcp_per_worker: Vec<Vec<std::net::TcpListener>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut udp_addrs = Vec::new();
        let mut tcp_addrs = Vec::new();
        for addr in &config.listen {
            let (udp, tcp) = bind_listen_addr(*addr, workers, &udp_opts)?;
            udp_addrs.push(udp[0].local_addr()?);
            tcp_addrs.push(tcp[0].local_addr()?);
            for (w, s) in udp.into_iter().enumerate() {
                per_worker[w].push(s);
            }
            for (w, s) in tcp.into_iter().enumerate() {
                tcp_per_worker[w].push(s);
            }
        }
        // RFC 5780's extra addresses are more UDP listeners of each worker.
        let pairs = crate::config::nat_discovery_pairs(&config).map_err(anyhow::Error::msg)?;
        let nat = nat_discovery::bind(&pairs, &udp_addrs, workers, &udp_opts)?;
        for (w, socks) in nat.per_worker.into_iter().enumerate() {
            per_worker[w].extend(socks);
        }
        let shared = setup::shared_state(&config, nat.pairs)?;
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
        let mut tls = tls::Listeners::bind(&config, workers)?;
        let limits = tcp::Limits {
            max_connections: config.max_connections as usize,
            open: Default::default(),
            unauthenticated_timeout: Duration::from_secs(config.unauthenticated_timeout.into()),
            max_frame: config.max_frame_size as usize,
            parked: Default::default(),
        };

        let (tx, rx) = watch::channel(false);
        let worker_metrics: Vec<std::sync::Arc<crate::metrics::WorkerMetrics>> =
            (0..workers).map(|_| Default::default()).collect();
        let (admin_tx, mut admin_rx): (Vec<_>, Vec<_>) = (0..workers)
            .map(|_| tokio::sync::mpsc::unbounded_channel())
            .unzip();
        let metrics = crate::metrics::Endpoint::start(
            config.metrics_listen,
            worker_metrics.clone(),
            shared.clone(),
            admin_tx,
            config.admin_token.clone(),
            rx.clone(),
        )?;
        let now = Instant::now();
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut handles = Vec::new();
        let mut tls_per_worker = tls.per_worker(workers).into_iter();
        for (index, (listeners, tcp_listeners)) in
            per_worker.into_iter().zip(tcp_per_worker).enumerate()
        {
            let tls_listeners = tls_per_worker.next().unwrap_or_default();
            // Each worker's CSPRNG is seeded straight from the operating system (the core
            // never reads OS randomness itself).
            let mut seed = [0u8; 32];
            rand::RngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut seed)
                .context("cannot read random bytes from the operating system")?;
            let core = crate::core::Server::new(shared.clone(), seed, now, unix_now);
            let rx = rx.clone();
            let link = crate::metrics::WorkerLink {
                metrics: worker_metrics[index].clone(),
                admin: admin_rx.remove(0),
            };
            let limits = limits.clone();
            let handle = std::thread::Builder::new()
                .name(format!("turnd-worker-{index}"))
                .spawn(move || {
                    worker::run(
                        index,
                        core,
                        listeners,
                        tcp_listeners,
                        tls_listeners,
                        limits,
                        rx,
                        link,
                        udp_opts,
                    )
                })
                .context("cannot start worker thread")?;
            handles.push(handle);
        }
        metrics.set_ready(true);
        Ok(Server {
            udp_addrs,
            tcp_addrs,
            tls,
            shutdown: tx,
            workers: handles,
            metrics,
            shared,
        })
    }

    /// The bound UDP listening addresses (with real ports when port 0 was asked for).
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp_addrs.clone()
    }

    /// The bound TCP listening addresses: the same IPs and ports as [`Server::udp_addrs`].
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.tcp_addrs.clone()
    }

    /// The bound TLS listening addresses (`tls_listen`, with real ports for port 0).
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.tls.addrs()
    }

    /// Loads the TLS certificate and key again (SIGHUP); new handshakes use them, open
    /// connections keep theirs. A certificate that does not load is logged and the old one
    /// stays. False when it did not load, or there is no TLS.
    pub fn reload_tls(&self) -> bool {
        self.tls.reload("SIGHUP")
    }

    /// The bound address of the metrics and health listener.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.addr()
    }

    /// Starts draining: `/readyz` answers 503 and new Allocate requests get 508, while
    /// existing allocations keep relaying until they end or [`Server::shutdown`].
    pub fn drain(&self) {
        self.metrics.set_ready(false);
        self.shared.quotas.set_draining(true);
    }

    /// Applies a reloaded configuration's realm, users, REST secrets (and how REST usernames
    /// are read: `rest_username_order`, `rest_max_ttl`) and peer filter. Existing
    /// allocations keep relaying; their next request is checked against the new credentials.
    /// Other keys take effect at the next start.
    pub fn reload(&self, config: &Config) {
        self.shared.credentials.store(setup::credentials(config));
        self.shared.peer_filter.store(setup::peer_filter(config));
    }

    /// Allocations held across all workers (including those still opening their socket), and
    /// port reservations (EVEN-PORT with the R bit) not yet redeemed: each counts like one.
    pub fn allocations(&self) -> u32 {
        self.shared.quotas.total()
    }

    /// Ends every allocation and stops the workers.
    pub fn shutdown(mut self) {
        self.metrics.set_ready(false);
        self.tls.stop();
        let _ = self.shutdown.send(true);
        for h in self.workers {
            let _ = h.join();
        }
        self.metrics.join();
    }
}
