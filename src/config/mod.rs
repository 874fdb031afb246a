//! turnd's configuration: one TOML file, and for every key a flag and a
//! `TURND_<KEY>` environment variable.
//!
//! Precedence, lowest first: built-in defaults < the file (`--config FILE` or
//! `TURND_CONFIG`) < environment < flags. A source that sets a key replaces
//! the value below it, lists included. Env lists are comma-separated
//! (`TURND_LISTEN=127.0.0.1:3478,[::1]:3478`, `TURND_USERS=alice:pw1,bob:pw2`).
//!
//! [`load`] checks everything before the server binds a socket: a typo in a
//! key, a bad address, `default_lifetime > max_lifetime` are all reported at
//! once, each naming its key and where the value came from, because the
//! alternative — a relay that starts and then silently misbehaves — is worse.
//!
//! Layout: `sources` gathers text from file, env and flags; `build` parses and
//! validates it into [`Config`]; `render` prints it back (`check-config`).

mod build;
mod cli;
mod error;
mod render;
mod sources;
mod types;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cli;
#[cfg(test)]
mod tests_errors;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

pub use crate::core::auth::RestUsernameOrder;
use crate::core::peer_filter::Cidr;
pub use crate::core::rate_limit::Rate;

pub use cli::{Cli, Command, ConfigArgs};
pub use error::{ConfigError, Problem};
pub use render::REDACTED;
pub use types::{ExternalIp, PortRange, User, ValueError};

/// The effective configuration. Build it with [`load`]; `Config::default()` is
/// what turnd runs with when nothing is configured.
#[derive(Clone)]
pub struct Config {
    /// Addresses the STUN/TURN service listens on, over UDP and TCP (same port).
    pub listen: Vec<SocketAddr>,
    /// IPs relayed transport addresses are allocated on. Empty: the shell
    /// derives them from `listen`.
    pub relay_ips: Vec<IpAddr>,
    /// Ports relayed transport addresses are allocated from.
    pub relay_ports: PortRange,
    /// Public addresses advertised in place of relay IPs (1:1 NAT); see
    /// [`Config::advertised_ip`].
    pub external_ips: Vec<ExternalIp>,
    /// REALM for long-term credentials (RFC 8489 §9.2).
    pub realm: String,
    /// Static long-term-credential users.
    pub users: Vec<User>,
    /// Shared secrets for TURN REST API (time-limited) credentials.
    pub auth_secrets: Vec<String>,
    /// Where a TURN REST API username carries its expiry: `expiry-first` (the default) or
    /// `user-first`. Only that position is read.
    pub rest_username_order: RestUsernameOrder,
    /// The furthest ahead of now, in seconds, a TURN REST API username's expiry may lie
    /// (further is refused like an expired one); 0 = no cap. Default 7 days.
    pub rest_max_ttl: u32,
    /// Peer networks allowed even though the built-in peer filter denies them.
    pub allow_peers: Vec<Cidr>,
    /// Peer networks denied in addition to the built-in ones.
    pub deny_peers: Vec<Cidr>,
    /// Worker threads; 0 = one per CPU core. Use [`Config::effective_workers`].
    pub workers: usize,
    /// A `tracing` level or `EnvFilter` directive string.
    pub log_level: String,
    /// Log lines as human-readable text or as one JSON object per line.
    pub log_format: LogFormat,
    /// Allocation lifetime (seconds) when a request has no LIFETIME.
    pub default_lifetime: u32,
    /// The longest allocation lifetime (seconds) granted.
    pub max_lifetime: u32,
    /// How long (seconds) a NONCE is accepted before a 438 Stale Nonce.
    pub nonce_lifetime: u32,
    /// SOFTWARE attribute for responses; `None` sends none.
    pub software: Option<String>,
    /// Most allocations one user may hold at once; 0 = no limit.
    pub user_quota: u32,
    /// Most allocations the whole server holds at once; 0 = no limit.
    pub total_quota: u32,
    /// Relayed bytes per second per allocation, both directions; 0 = no cap.
    pub allocation_bandwidth: u32,
    /// Relayed bytes per second per user (all allocations, all workers); 0 = no cap.
    pub user_bandwidth: u32,
    /// Most TCP connections the server holds at once (all workers); 0 = no limit.
    pub max_connections: u32,
    /// When true (`amplification = "refuse"`), an error response to an unauthenticated
    /// request that would be larger than the request is not sent: the request is dropped.
    pub refuse_amplification: bool,
    /// Per source, error answers to unauthenticated requests a second (and burst).
    pub unauthenticated_rate: Rate,
    /// Per source, Binding answers a second (and burst).
    pub binding_rate: Rate,
    /// Set RFC 8489's "Username anonymity" bit: clients send USERHASH.
    pub userhash: bool,
    /// Most permissions per allocation, at most 4096; 0 = 4096.
    pub max_permissions: u32,
    /// Most channel bindings per allocation, at most 4096; 0 = 4096.
    pub max_channels: u32,
    /// Seconds a TCP connection may stay open without an allocation (before its first one,
    /// and after its allocation ends).
    pub unauthenticated_timeout: u32,
    /// Largest frame (STUN message or padded ChannelData) accepted on a TCP connection, in
    /// bytes; it bounds the connection's read buffer.
    pub max_frame_size: u32,
    /// `SO_RCVBUF` of the UDP listening and relay sockets, in bytes; 0 = the kernel's default.
    pub udp_recv_buffer: u32,
    /// `SO_SNDBUF` of the UDP listening and relay sockets, in bytes; 0 = the kernel's default.
    pub udp_send_buffer: u32,
    /// A busy worker waits this many microseconds before blocking so that datagrams arriving
    /// meanwhile share one wake-up and one `recvmmsg`/`sendmmsg` (0 = never waits); see
    /// `shell::coalesce`.
    pub udp_coalesce: u32,
    /// Addresses serving TURN over TLS (TURNS); empty = no TLS.
    pub tls_listen: Vec<SocketAddr>,
    /// RFC 5780 alternate addresses (IP2:P2), each paired with the first `listen` address of
    /// its family (IP1:P1); empty = NAT behaviour discovery off. See [`nat_discovery_pairs`].
    pub nat_discovery_listen: Vec<SocketAddr>,
    /// TURN servers an Allocate is redirected to (300 Try Alternate) when this one is
    /// draining or full; empty = refuse with 508/486.
    pub alternate_servers: Vec<SocketAddr>,
    /// PEM certificate chain for TLS, leaf first.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the TLS certificate.
    pub tls_key: Option<PathBuf>,
    /// The admin HTTP listener: /metrics, /healthz, /readyz.
    pub metrics_listen: SocketAddr,
    /// After SIGTERM/SIGINT, seconds existing allocations may keep relaying (no new ones are
    /// admitted) before the process exits.
    pub drain_timeout: u32,
    /// The bearer token `/allocations` requires; `None` leaves it open to whoever reaches
    /// `metrics_listen`.
    pub admin_token: Option<String>,
}

/// How log lines are written (config key `log_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Default `udp_coalesce`: 200 µs. Under a steady load it halved turnd's CPU per relayed
/// datagram on the development machine (README, Performance) for at most 0.2 ms more per hop,
/// far below what a call's jitter buffer absorbs; an idle or lightly loaded worker never waits.
pub const DEFAULT_UDP_COALESCE_US: u32 = 200;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 3478)],
            relay_ips: Vec::new(),
            relay_ports: PortRange::DEFAULT,
            external_ips: Vec::new(),
            realm: "turnd".to_string(),
            users: Vec::new(),
            auth_secrets: Vec::new(),
            rest_username_order: RestUsernameOrder::ExpiryFirst,
            rest_max_ttl: crate::core::auth::DEFAULT_REST_MAX_TTL as u32,
            allow_peers: Vec::new(),
            deny_peers: Vec::new(),
            workers: 0,
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
            // RFC 8656 §3.5: 10 minutes by default.
            default_lifetime: 600,
            max_lifetime: 3600,
            nonce_lifetime: 600,
            software: Some(concat!("turnd/", env!("CARGO_PKG_VERSION")).to_string()),
            user_quota: 0,
            total_quota: 0,
            allocation_bandwidth: 0,
            user_bandwidth: 0,
            max_connections: 10_000,
            refuse_amplification: false,
            unauthenticated_rate: Rate {
                per_second: 20,
                burst: 40,
            },
            binding_rate: Rate {
                per_second: 50,
                burst: 100,
            },
            userhash: false,
            max_permissions: 256,
            max_channels: 256,
            unauthenticated_timeout: 10,
            max_frame_size: crate::stun::framing::MAX_FRAME_LEN as u32,
            udp_recv_buffer: 0,
            udp_send_buffer: 0,
            udp_coalesce: DEFAULT_UDP_COALESCE_US,
            tls_listen: Vec::new(),
            nat_discovery_listen: Vec::new(),
            alternate_servers: Vec::new(),
            tls_cert: None,
            tls_key: None,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9641)),
            drain_timeout: 30,
            admin_token: None,
        }
    }
}

impl Config {
    /// Worker threads to start: `workers`, or one per CPU core when it is 0
    /// (1 if the core count cannot be read).
    pub fn effective_workers(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The address to put in XOR-RELAYED-ADDRESS for an allocation on
    /// `relay_ip`: its `PUBLIC/PRIVATE` mapping if one names it, else the bare
    /// `PUBLIC` of its family, else `relay_ip` itself.
    pub fn advertised_ip(&self, relay_ip: IpAddr) -> IpAddr {
        let exact = self
            .external_ips
            .iter()
            .find(|e| e.private == Some(relay_ip));
        let family = || {
            self.external_ips
                .iter()
                .find(|e| e.private.is_none() && e.public.is_ipv4() == relay_ip.is_ipv4())
        };
        exact.or_else(family).map_or(relay_ip, |e| e.public)
    }
}

/// RFC 5780 address pairs: for each `nat_discovery_listen` address (IP2:P2), the index in
/// `listen` of its primary (IP1:P1), the first listen address of the same family. The server
/// then also listens on IP1:P2 and IP2:P1, so it can answer from any of the four as
/// CHANGE-REQUEST asks. The primary must name a specific IP (responses carry it in
/// RESPONSE-ORIGIN and OTHER-ADDRESS); the two IPs, and the two ports when both are fixed,
/// must differ. A port of 0 is picked at start-up.
pub fn nat_discovery_pairs(c: &Config) -> Result<Vec<(usize, SocketAddr)>, String> {
    let mut out: Vec<(usize, SocketAddr)> = Vec::new();
    for alt in &c.nat_discovery_listen {
        let Some(index) = c.listen.iter().position(|l| l.is_ipv4() == alt.is_ipv4()) else {
            return Err(format!(
                "{alt}: no `listen` address of its family to pair it with"
            ));
        };
        let primary = c.listen[index];
        if primary.ip().is_unspecified() || alt.ip().is_unspecified() {
            return Err(format!(
                "{alt}: RFC 5780 needs specific IPs, and the primary `listen` address {primary} \
                 and this one must not be wildcards"
            ));
        }
        if primary.ip() == alt.ip() {
            return Err(format!(
                "{alt}: needs an IP other than the listen address {primary}"
            ));
        }
        if alt.port() != 0 && alt.port() == primary.port() {
            return Err(format!(
                "{alt}: needs a port other than the listen address {primary}"
            ));
        }
        if out.iter().any(|(i, _)| *i == index) {
            return Err(format!("{alt}: only one alternate address per family"));
        }
        out.push((index, *alt));
    }
    Ok(out)
}

/// Loads the configuration for `args`, reading `TURND_*` from the process
/// environment. See [`load_from`].
pub fn load(args: &ConfigArgs) -> Result<Config, ConfigError> {
    // vars_os: std::env::vars() panics on a non-UTF-8 variable anywhere in the
    // environment, even one that is none of ours.
    let env: HashMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
        .collect();
    load_from(args, &env)
}

/// Loads defaults < file < `env` < flags and validates the result. `env` stands
/// in for the process environment, so tests need not touch the real one.
///
/// The file is `args.config`, else `env["TURND_CONFIG"]`, else none.
pub fn load_from(args: &ConfigArgs, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
    let path = args.config.clone().or_else(|| {
        env.get(sources::CONFIG_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    });
    let Some(path) = path else {
        return load_text(args, env, None);
    };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "not found".to_string(),
            _ => format!("cannot be read: {e}"),
        };
        ConfigError::new(vec![Problem::file(&shown, why)])
    })?;
    load_text(args, env, Some((&shown, &text)))
}

/// [`load_from`] with the file's contents given: `file` is (name, text).
pub(crate) fn load_text(
    args: &ConfigArgs,
    env: &HashMap<String, String>,
    file: Option<(&str, &str)>,
) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let settings = sources::gather(args, env, file, &mut problems);
    let config = build::build(&settings, &mut problems);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::new(problems))
    }
}

/// `Cidr` comes from the core and need not be `Debug`; print it with `Display`.
struct Shown<'a, T>(&'a [T]);

/// One item of [`Shown`].
struct ShownItem<'a, T>(&'a T);

impl<T: fmt::Display> fmt::Debug for ShownItem<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.0, f)
    }
}

impl<T: fmt::Display> fmt::Debug for Shown<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(ShownItem))
            .finish()
    }
}

/// Secrets are redacted, so the config can be logged at startup.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secrets = vec![REDACTED; self.auth_secrets.len()];
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("relay_ips", &self.relay_ips)
            .field("relay_ports", &self.relay_ports)
            .field("external_ips", &self.external_ips)
            .field("realm", &self.realm)
            .field("users", &self.users)
            .field("auth_secrets", &secrets)
            .field("rest_username_order", &self.rest_username_order)
            .field("rest_max_ttl", &self.rest_max_ttl)
            .field("allow_peers", &Shown(&self.allow_peers))
            .field("deny_peers", &Shown(&self.deny_peers))
            .field("workers", &self.workers)
            .field("log_level", &self.log_level)
            .field("log_format", &self.log_format)
            .field("default_lifetime", &self.default_lifetime)
            .field("max_lifetime", &self.max_lifetime)
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("software", &self.software)
            .field("user_quota", &self.user_quota)
            .field("total_quota", &self.total_quota)
            .field("allocation_bandwidth", &self.allocation_bandwidth)
            .field("user_bandwidth", &self.user_bandwidth)
            .field("max_connections", &self.max_connections)
            .field("refuse_amplification", &self.refuse_amplification)
            .field("unauthenticated_rate", &self.unauthenticated_rate)
            .field("binding_rate", &self.binding_rate)
            .field("userhash", &self.userhash)
            .field("max_permissions", &self.max_permissions)
            .field("max_channels", &self.max_channels)
            .field("unauthenticated_timeout", &self.unauthenticated_timeout)
            .field("max_frame_size", &self.max_frame_size)
            .field("udp_recv_buffer", &self.udp_recv_buffer)
            .field("udp_send_buffer", &self.udp_send_buffer)
            .field("udp_coalesce", &self.udp_coalesce)
            .field("tls_listen", &self.tls_listen)
            .field("nat_discovery_listen", &self.nat_discovery_listen)
            .field("alternate_servers", &self.alternate_servers)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("metrics_listen", &self.metrics_listen)
            .field("drain_timeout", &self.drain_timeout)
            .field("admin_token", &self.admin_token.as_ref().map(|_| REDACTED))
            .finish()
    }
}
