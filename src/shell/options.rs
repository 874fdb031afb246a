//! What the shell needs to know, and nothing else: [`ShellOptions`], built from the
//! operator's `Config` by `config::shell_options`. The shell never sees `Config` and never
//! reads the environment, so config and shell do not import each other: config depends on
//! this leaf module, the shell on nothing of config's.

use super::udp;
use crate::core::auth::Credentials;
use crate::core::peer_filter::PeerFilter;
use crate::core::CoreConfig;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Everything [`super::Server::start`] binds and runs with.
#[derive(Clone)]
pub struct ShellOptions {
    /// Worker threads (at least one is started).
    pub workers: usize,
    /// `listen`: UDP and TCP on each.
    pub listen: Vec<SocketAddr>,
    /// RFC 5780 pairs: (index in `listen` of the primary, the alternate address).
    pub nat_discovery: Vec<(usize, SocketAddr)>,
    /// `tls_listen`, and the certificate and key files (`tls_cert`, `tls_key`).
    pub tls_listen: Vec<SocketAddr>,
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub metrics_listen: SocketAddr,
    pub admin_token: Option<String>,
    /// `store`: the fleet's Redis URL (docs/cluster.md); `None` = no store, and nothing of
    /// the fleet runs.
    pub store: Option<String>,
    /// `store_password_file` (the store's password when the URL holds none, else
    /// `TURND_STORE_PASSWORD`), and `store_ca_file`, `store_cert_file`, `store_key_file` for
    /// `rediss://`.
    pub store_files: crate::store::connect::StoreFiles,
    /// UDP socket buffers, GSO (as wanted; the shell also needs the kernel to support it)
    /// and the coalescing window.
    pub udp: udp::Options,
    /// `max_connections`, `max_connections_per_source` (0: no limit).
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    /// `unauthenticated_timeout`: TLS handshakes and connections without an allocation.
    pub unauthenticated_timeout: Duration,
    /// `max_frame_size`.
    pub max_frame: usize,
    /// `relay_ips` (empty: the listening IPs, wildcards resolved by the shell).
    pub relay_ips: Vec<IpAddr>,
    /// `external_ips`, each (public, private).
    pub external_ips: Vec<(IpAddr, Option<IpAddr>)>,
    /// `relay_ports`: (low, high), inclusive.
    pub relay_ports: (u16, u16),
    /// The core's settings; `relays` and `nat_discovery` are filled in by the shell once it
    /// knows the bound addresses.
    pub core: CoreConfig,
    /// What a reload replaces.
    pub access: Access,
    /// The kernel fast path (`xdp`, `xdp_interfaces`).
    pub xdp: super::xdp::Options,
    /// The panic policy's test hook: make this worker panic once started (debug builds
    /// only; see `config::PANIC_ENV`).
    pub panic_worker: Option<usize>,
}

/// Who may use the relay and which peers they may reach: replaced whole on SIGHUP.
#[derive(Clone)]
pub struct Access {
    /// Realm, static users, REST secrets and the REST username policy.
    pub credentials: Credentials,
    /// `allow_peers`/`deny_peers`, without the own-host set (the shell adds it).
    pub peer_filter: PeerFilter,
}
