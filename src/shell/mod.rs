//! The thin I/O shell: binds sockets, starts one worker thread per core (each a poll loop
//! that owns its sockets, `worker/`), and stops them.
//!
//! Like mini-redis's `server::run`, [`Server::start`] takes ready [`ShellOptions`] and returns a
//! handle with the bound addresses, so tests can run a real server on port 0.

mod coalesce;
mod credential_sink;
mod discover;
#[cfg(test)]
mod imports;
mod limits;
mod nat_discovery;
mod options;
mod poller;
mod relays;
mod reload;
mod rlimit;
mod setup;
mod socket;
mod splice;
mod stream;
mod tcp;
mod tcp_relay;
mod timers;
mod tls;
mod token;
pub mod udp;
mod worker;
mod write_queue;
pub mod xdp;

pub use credential_sink::CredentialSink;
pub use options::{Access, ShellOptions};
pub use rlimit::raise_nofile_limit;

use anyhow::Context;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Checks what only start-up would otherwise find wrong in a loaded config.
pub fn check(config: &ShellOptions) -> anyhow::Result<()> {
    setup::relay_addrs(config)?;
    tls::check(config)
}

/// How long a reload waits for every worker to apply a new peer filter.
const RELOAD_WAIT: Duration = Duration::from_secs(2);

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

/// Installs `filter` for every worker. The own-host set it refuses is in the start-up summary
/// ([`Server::own_host`]) and, on a reload, in the reload's log line; every address at debug.
fn store_peer_filter(shared: &crate::core::Shared, filter: crate::core::peer_filter::PeerFilter) {
    let addrs: Vec<String> = filter.own_host().addrs().map(ToString::to_string).collect();
    tracing::debug!(addresses = %addrs.join(","), "own host addresses");
    shared.peer_filter.store(filter);
}

/// A running server.
pub struct Server {
    udp_addrs: Vec<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
    tls: tls::Listeners,
    /// Stops the metrics listener.
    shutdown: watch::Sender<bool>,
    workers: Vec<worker::WorkerHandle>,
    metrics: crate::metrics::Endpoint,
    shared: std::sync::Arc<crate::core::Shared>,
    /// The listeners and relay addresses the own-host set is rebuilt from on reload.
    host: crate::core::own_host::HostAddrs,
    /// Tells every worker a reload stored a new peer filter, so each applies it to its
    /// permissions, channels and TCP connections at once.
    reloads: reload::Reloads,
    /// The TOML's and the fleet store's credentials, merged into `shared.credentials`.
    credentials: std::sync::Arc<CredentialSink>,
    /// Each worker's admin channel, for the store's tasks (ending a revoked user's
    /// allocations; the report task's lists).
    admin: Vec<crate::metrics::admin::AdminSender>,
    /// What the admin listener and the metrics know of the store task.
    store: std::sync::Arc<crate::store::Link>,
    /// The store's report task's metrics, with a store.
    store_stats: Option<std::sync::Arc<crate::store::stats::StoreStats>>,
    /// The XDP program, attached while this lives (docs/xdp.md).
    xdp: Option<xdp::Attached>,
}

/// What the store task (`crate::store::spawn`) needs of a running server.
pub struct StoreParts {
    pub credentials: std::sync::Arc<CredentialSink>,
    pub admin: Vec<crate::metrics::admin::AdminSender>,
    pub link: std::sync::Arc<crate::store::Link>,
}

impl Server {
    /// Binds every listener and starts the workers. Returns once all sockets are bound, so
    /// a bind failure is reported here rather than in a log line.
    pub fn start(config: ShellOptions) -> anyhow::Result<Server> {
        let workers = config.workers.max(1);
        let udp_opts = udp::Options {
            gso: config.udp.gso && udp::gso_supported(),
            ..config.udp
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
        let nat = nat_discovery::bind(&config.nat_discovery, &udp_addrs, workers, &udp_opts)?;
        for (w, socks) in nat.per_worker.into_iter().enumerate() {
            per_worker[w].extend(socks);
        }
        // The relay addresses, and a warning when clients are told a private one, are part of
        // the start-up summary (`crate::summary`), from `Server::relays`.
        // The kernel fast path, before the core's settings are fixed (it relays established
        // channels only when the program is attached) and before the admin listener, which
        // reads its counters.
        let xdp_ips: Vec<std::net::IpAddr> = setup::relay_addrs(&config)?
            .iter()
            .map(|r| r.bind)
            .chain(udp_addrs.iter().map(SocketAddr::ip))
            .collect();
        let xdp_ports: Vec<u16> = udp_addrs.iter().map(SocketAddr::port).collect();
        let xdp = xdp::start(&config.xdp, &xdp_ports, &xdp_ips)?;
        if xdp.is_some() {
            // A wildcard socket's replies leave from the source address of the route to the
            // client; the fast path answers from that address too (`maps::answer_address`),
            // which is the one the client sent to unless the host has several on the way.
            for a in udp_addrs.iter().filter(|a| a.ip().is_unspecified()) {
                tracing::info!(
                    listen = %a,
                    "xdp: a wildcard listen address: the kernel fast path answers each client \
                     from the address of the route to it; a client that sent to another \
                     address of this host is relayed in user space (listen on specific \
                     addresses to choose)"
                );
            }
        }
        let mut config = config;
        config.core.fast_path = xdp.is_some();
        let shared = setup::shared_state(&config, nat.pairs)?;
        let mut tls = tls::Listeners::bind(&config, workers)?;
        let limits = tcp::Limits {
            max_connections: config.max_connections,
            open: Default::default(),
            per_source: std::sync::Arc::new(limits::PerSource::new(
                config.max_connections_per_source,
            )),
            unauthenticated_timeout: config.unauthenticated_timeout,
            max_frame: config.max_frame,
            parked: Default::default(),
        };

        let notifiers = (0..workers)
            .map(|_| poller::Notifier::new().map(std::sync::Arc::new))
            .collect::<std::io::Result<Vec<_>>>()
            .context("cannot create the workers' wake-up eventfds")?;
        let (reloads, mut reload_links) = reload::Reloads::new(notifiers.clone());
        let (tx, rx) = watch::channel(false);
        let worker_metrics: Vec<std::sync::Arc<crate::metrics::WorkerMetrics>> =
            (0..workers).map(|_| Default::default()).collect();
        let (admin_tx, mut admin_rx): (Vec<_>, Vec<_>) = (0..workers)
            .map(|_| tokio::sync::mpsc::unbounded_channel())
            .unzip();
        let store = std::sync::Arc::new(crate::store::Link::default());
        let store_stats = config.store.as_ref().map(|_| std::sync::Arc::default());
        // The fleet view's client (docs/cluster.md); the URL was checked when loaded.
        let store_client = match &config.store {
            Some(url) => Some(
                crate::store::connect::client(url, &config.store_files)
                    .map_err(|e| anyhow::anyhow!("config key `store`: {e}"))?,
            ),
            None => None,
        };
        let metrics = crate::metrics::Endpoint::start(
            config.metrics_listen,
            worker_metrics.clone(),
            shared.clone(),
            admin_tx.clone(),
            config.admin_token.clone(),
            crate::metrics::Hooks {
                link: store.clone(),
                fleet: store_client.zip(store_stats.clone()),
                xdp: xdp.as_ref().map(xdp::Attached::source),
            },
            rx.clone(),
        )?;
        // The own-host set needs every bound listener: TURN, TLS, RFC 5780, admin.
        let host = setup::host_addrs(
            &config,
            &shared,
            udp_addrs
                .iter()
                .chain(&tcp_addrs)
                .copied()
                .chain(tls.addrs())
                .chain([metrics.addr()]),
        );
        store_peer_filter(&shared, setup::peer_filter_for_host(&config.access, &host));
        // One list for every node of a cluster is the usual deployment: say which entry is us.
        for a in &config.core.alternate_servers {
            if shared.peer_filter.load().own_host().is_own_listener(*a) {
                tracing::info!(alternate = %a, "alternate server is this server: never a redirect target here");
            }
        }
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
            let handle = worker::spawn(worker::Start {
                index,
                core,
                udp: listeners,
                tcp: tcp_listeners,
                tls: tls_listeners,
                limits: limits.clone(),
                reload: reload_links.remove(0),
                metrics: worker_metrics[index].clone(),
                admin: admin_rx.remove(0),
                udp_options: udp_opts,
                notifier: notifiers[index].clone(),
                ended_log: match config.store {
                    Some(_) => crate::metrics::admin::EndedLog::CAPACITY,
                    None => 0,
                },
                fast_path: match &xdp {
                    Some(x) => Some(
                        x.worker(index, workers)
                            .map_err(|e| anyhow::anyhow!("xdp: worker {index}: {e}"))?,
                    ),
                    None => None,
                },
            })
            .context("cannot start worker thread")?;
            handles.push(handle);
        }
        metrics.set_ready(true);
        if let Some(i) = config.panic_worker {
            if let Some(w) = handles.get(i) {
                w.send(worker::Command::Panic);
            }
        }
        let credentials = std::sync::Arc::new(CredentialSink::new(shared.clone()));
        Ok(Server {
            udp_addrs,
            tcp_addrs,
            tls,
            shutdown: tx,
            workers: handles,
            metrics,
            shared,
            host,
            reloads,
            credentials,
            admin: admin_tx,
            store,
            store_stats,
            xdp,
        })
    }

    /// What the store's report task works with: the shared control plane (quotas,
    /// credentials), every worker's admin channel and the task's metrics (`None` without a
    /// store).
    pub fn store_link(&self) -> Option<crate::store::report::Link> {
        Some(crate::store::report::Link {
            shared: self.shared.clone(),
            workers: self.admin.clone(),
            stats: self.store_stats.clone()?,
            udp: self.udp_addrs.clone(),
            metrics: self.metrics.addr(),
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

    /// Where relay sockets bind, and the address each tells clients (`external_ips`).
    pub fn relays(&self) -> Vec<crate::core::RelayAddr> {
        self.shared.config.relays.clone()
    }

    /// The own-host set the peer filter refuses, for the start-up summary: its networks first
    /// (all of loopback under a wildcard listener: the broadest), then its addresses.
    pub fn own_host(&self) -> Vec<String> {
        let filter = self.shared.peer_filter.load();
        let own = filter.own_host();
        own.nets()
            .iter()
            .map(ToString::to_string)
            .chain(own.addrs().map(ToString::to_string))
            .collect()
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
    /// are read: `rest_username_order`, `rest_max_ttl`) and peer filter, and reads the host's
    /// interface addresses again for the own-host set. Existing allocations keep relaying;
    /// their next request is checked against the new credentials, and every worker drops at
    /// once the permissions, channels and TCP peer connections the new filter denies. Other
    /// keys take effect at the next start.
    pub fn reload(&self, access: &Access) {
        // Merged with the store's users, secrets and revocations, which a reload keeps.
        self.credentials.update(|layers| {
            layers.set_base(access.credentials.clone());
            true
        });
        store_peer_filter(
            &self.shared,
            setup::peer_filter_for_host(access, &self.host),
        );
        tracing::info!(
            own_host = self.own_host().len(),
            "reload: peer filter and own-host set replaced"
        );
        if !self.reloads.announce(RELOAD_WAIT) {
            tracing::warn!(
                "reload: a worker did not re-check its permissions in time; its timer will"
            );
        }
    }

    /// What the store task needs: where credentials go in, the workers' admin channels and
    /// the link the admin listener and metrics read.
    pub fn store_parts(&self) -> StoreParts {
        StoreParts {
            credentials: self.credentials.clone(),
            admin: self.admin.clone(),
            link: self.store.clone(),
        }
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
        for w in &self.workers {
            w.send(worker::Command::Stop);
        }
        for w in self.workers {
            let _ = w.thread.join();
        }
        self.metrics.join();
        // Detaches the program (its links close with it); a no-op without the feature.
        self.xdp = None;
    }

    /// Whether the XDP program is attached (docs/xdp.md).
    pub fn xdp_attached(&self) -> bool {
        self.xdp.is_some()
    }

    /// The panic policy's check (docs/architecture.md#panics): the index of a worker whose
    /// thread ended while the server runs — it can only have panicked. `/readyz` turns 503 at
    /// once; the caller (`main`) logs it and exits with a non-zero status, never running on
    /// with a silently dead worker.
    pub fn dead_worker(&self) -> Option<usize> {
        let dead = self.workers.iter().position(|w| w.thread.is_finished());
        if dead.is_some() {
            self.metrics.set_ready(false);
        }
        dead
    }

    /// Makes worker `index` panic: the hidden hook that tests the panic policy. Only the
    /// library API reaches it (no flag, key, signal or request does), so nothing from the
    /// network can.
    #[doc(hidden)]
    pub fn panic_worker(&self, index: usize) {
        if let Some(w) = self.workers.get(index) {
            w.send(worker::Command::Panic);
        }
    }
}
