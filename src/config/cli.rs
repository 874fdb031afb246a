//! The command line: `turnd [FLAGS]` runs the server, `turnd check-config
//! [FLAGS]` validates and prints the effective configuration. Both take the
//! same flags, one per config key.
//!
//! Flag values are kept as text here and parsed by [`super::load`], so a bad
//! `--relay-ports` gets the same message (naming the key) as a bad value in
//! the file or in `TURND_RELAY_PORTS`. Config keys deliberately have no clap
//! `env = …` (not even `--config`): that would make env and flags
//! indistinguishable, and the precedence flags > env > file must stay explicit.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The whole command line: an optional subcommand and the config flags.
/// Use [`Cli::config_args`] rather than `args` directly, so flags written
/// after `check-config` are not missed.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "turnd",
    version,
    about = "turnd: a STUN/TURN relay server (RFC 8489, RFC 8656)",
    long_about = "turnd: a STUN/TURN relay server (RFC 8489, RFC 8656).\n\n\
        Settings come from, lowest precedence first: built-in defaults, the TOML file \
        given by --config, TURND_<KEY> environment variables (lists comma-separated), \
        and flags."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub args: ConfigArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Validate the configuration, print the effective configuration
    /// (secrets redacted), and exit: 0 if valid, non-zero if not.
    CheckConfig(Box<ConfigArgs>),
    /// Mint time-limited TURN REST API credentials and print them with a
    /// ready-to-paste `iceServers` snippet.
    Credentials(crate::credentials::CredentialsArgs),
    /// Probe a TURN server from the client's side: Binding, Allocate,
    /// permissions, channels and data through the relay, each step timed, with
    /// a diagnosis on failure; or RFC 5780 NAT behaviour with --nat-behaviour.
    Probe(Box<crate::probe::ProbeArgs>),
    /// Exit 0 if turnd's /healthz answers 200 (for container HEALTHCHECKs
    /// in images without a shell), 1 otherwise.
    Healthcheck(crate::healthcheck::HealthcheckArgs),
}

impl Cli {
    /// The config flags in force, wherever they were written:
    /// `turnd --config F check-config` and `turnd check-config --config F`
    /// mean the same. Flags after the subcommand win over flags before it.
    pub fn config_args(&self) -> ConfigArgs {
        match &self.command {
            None => self.args.clone(),
            Some(Command::CheckConfig(sub)) => self.args.clone().overridden_by(sub),
            Some(Command::Credentials(_))
            | Some(Command::Probe(_))
            | Some(Command::Healthcheck(_)) => self.args.clone(),
        }
    }

    /// Whether the command is `check-config`.
    pub fn is_check_config(&self) -> bool {
        matches!(self.command, Some(Command::CheckConfig(_)))
    }
}

/// One flag per config key, plus `--config`. Each list flag may be repeated;
/// a flag replaces (never extends) the env or file value of its key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct ConfigArgs {
    /// TOML config file [env: TURND_CONFIG]. Without one: defaults, env, flags.
    // TURND_CONFIG is read by `load`, not by clap: with clap's `env` the
    // variable would fill both `turnd --config A check-config`'s copies of
    // this field and hide which one the user typed.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to serve STUN/TURN on, UDP and TCP; repeatable [key: listen]
    #[arg(long, value_name = "IP:PORT", value_delimiter = ',')]
    pub listen: Vec<String>,

    /// IP to allocate relayed addresses on; repeatable [key: relay_ips]
    #[arg(long, value_name = "IP", value_delimiter = ',')]
    pub relay_ip: Vec<String>,

    /// UDP ports for relayed addresses [key: relay_ports]
    #[arg(long, value_name = "LOW-HIGH")]
    pub relay_ports: Option<String>,

    /// Public address to advertise (for all relay IPs of its family, or for
    /// relay IP PRIVATE); repeatable [key: external_ips]
    #[arg(long, value_name = "PUBLIC[/PRIVATE]", value_delimiter = ',')]
    pub external_ip: Vec<String>,

    /// Realm for long-term credentials [key: realm]
    #[arg(long, value_name = "REALM")]
    pub realm: Option<String>,

    /// Static user; repeatable. Visible in `ps`: prefer the file for real
    /// passwords [key: users]
    #[arg(long, value_name = "NAME:PASSWORD")]
    pub user: Vec<String>,

    /// Shared secret for TURN REST API (time-limited) credentials;
    /// repeatable [key: auth_secrets]
    #[arg(long, value_name = "SECRET")]
    pub auth_secret: Vec<String>,

    /// Where a TURN REST API username carries its expiry: `expiry-first`
    /// (EXPIRY:USER, the default, as the draft and coturn) or `user-first`
    /// (USER:EXPIRY) [key: rest_username_order]
    #[arg(long, value_name = "expiry-first|user-first")]
    pub rest_username_order: Option<String>,

    /// Furthest ahead of now a TURN REST API username's expiry may lie, seconds;
    /// further is refused like an expired one; 0 = no cap [key: rest_max_ttl]
    #[arg(long, value_name = "SECONDS")]
    pub rest_max_ttl: Option<String>,

    /// Peer network to allow even if denied by default; repeatable
    /// [key: allow_peers]
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub allow_peer: Vec<String>,

    /// Peer network to deny; repeatable [key: deny_peers]
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub deny_peer: Vec<String>,

    /// Worker threads; 0 = one per CPU core [key: workers]
    #[arg(long, value_name = "N")]
    pub workers: Option<String>,

    /// Log filter: trace|debug|info|warn|error, or a tracing directive
    /// like `turnd=debug,info` [key: log_level]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Log lines as text or as JSON objects, one per line [key: log_format]
    #[arg(long, value_name = "text|json")]
    pub log_format: Option<String>,

    /// Allocation lifetime when the client asks for none, seconds
    /// [key: default_lifetime]
    #[arg(long, value_name = "SECONDS")]
    pub default_lifetime: Option<String>,

    /// Longest allocation lifetime granted, seconds [key: max_lifetime]
    #[arg(long, value_name = "SECONDS")]
    pub max_lifetime: Option<String>,

    /// How long a NONCE stays valid, seconds [key: nonce_lifetime]
    #[arg(long, value_name = "SECONDS")]
    pub nonce_lifetime: Option<String>,

    /// SOFTWARE attribute sent in responses; "" sends none [key: software]
    #[arg(long, value_name = "TEXT")]
    pub software: Option<String>,

    /// Most allocations one user may hold at once (486 beyond); 0 = no limit
    /// [key: user_quota]
    #[arg(long, value_name = "N")]
    pub user_quota: Option<String>,

    /// Most allocations the server holds at once (486 beyond); 0 = no limit
    /// [key: total_quota]
    #[arg(long, value_name = "N")]
    pub total_quota: Option<String>,

    /// Relayed bytes per second one allocation may carry, both directions together (more
    /// is dropped; TCP relay data is paced instead); 0 = no cap [key: allocation_bandwidth]
    #[arg(long, value_name = "BYTES_PER_S")]
    pub allocation_bandwidth: Option<String>,

    /// Relayed bytes per second all of one user's allocations may carry together, across
    /// workers, UDP and TCP relay alike (more is dropped or paced); 0 = no cap
    /// [key: user_bandwidth]
    #[arg(long, value_name = "BYTES_PER_S")]
    pub user_bandwidth: Option<String>,

    /// Most TCP connections the server holds at once; more are closed at accept;
    /// 0 = no limit [key: max_connections]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<String>,

    /// `allow` (default) answers unauthenticated TURN requests with their 401/438/400/420
    /// even when the answer is larger than the request; `refuse` drops such requests, so the
    /// server never amplifies [key: amplification]
    #[arg(long, value_name = "allow|refuse")]
    pub amplification: Option<String>,

    /// Per source address (IPv4, or IPv6 /64), the most error answers to unauthenticated
    /// requests (401/438/400/420) a second, and the burst: `RATE` or `RATE/BURST` (burst
    /// defaults to twice the rate); over it, requests are dropped; 0 = no limit
    /// [key: unauthenticated_rate]
    #[arg(long, value_name = "RATE[/BURST]")]
    pub unauthenticated_rate: Option<String>,

    /// Per source address, the most Binding answers a second, and the burst
    /// (`RATE` or `RATE/BURST`); 0 = no limit [key: binding_rate]
    #[arg(long, value_name = "RATE[/BURST]")]
    pub binding_rate: Option<String>,

    /// `true` sets RFC 8489's "Username anonymity" bit: RFC 8489 clients then send USERHASH
    /// instead of USERNAME (static users only; TURN REST usernames cannot be hashed)
    /// [key: userhash]
    #[arg(long, value_name = "true|false")]
    pub userhash: Option<String>,

    /// Most permissions one allocation holds (508 beyond); at most 4096,
    /// 0 = 4096 [key: max_permissions]
    #[arg(long, value_name = "N")]
    pub max_permissions: Option<String>,

    /// Most channel bindings one allocation holds (508 beyond); at most 4096,
    /// 0 = 4096 [key: max_channels]
    #[arg(long, value_name = "N")]
    pub max_channels: Option<String>,

    /// Seconds a TCP connection may stay open without an allocation
    /// [key: unauthenticated_timeout]
    #[arg(long, value_name = "SECONDS")]
    pub unauthenticated_timeout: Option<String>,

    /// Largest frame accepted on a TCP connection, bytes [key: max_frame_size]
    #[arg(long, value_name = "BYTES")]
    pub max_frame_size: Option<String>,

    /// SO_RCVBUF of UDP listening and relay sockets, bytes; 0 = kernel default
    /// (capped by the sysctl net.core.rmem_max) [key: udp_recv_buffer]
    #[arg(long, value_name = "BYTES")]
    pub udp_recv_buffer: Option<String>,

    /// SO_SNDBUF of UDP listening and relay sockets, bytes; 0 = kernel default
    /// (capped by the sysctl net.core.wmem_max) [key: udp_send_buffer]
    #[arg(long, value_name = "BYTES")]
    pub udp_send_buffer: Option<String>,

    /// Microseconds a busy worker waits before blocking, so datagrams arriving meanwhile
    /// share one wake-up and one batch (0 = off; at most 5000) [key: udp_coalesce]
    #[arg(long, value_name = "MICROSECONDS")]
    pub udp_coalesce: Option<String>,

    /// Address serving TURN over TLS, IP:PORT (repeatable; 5349, 443)
    /// [key: tls_listen]
    #[arg(long, value_name = "IP:PORT")]
    pub tls_listen: Vec<String>,

    /// RFC 5780 NAT behaviour discovery: the alternate IP:PORT paired with the first `listen`
    /// address of its family (repeatable, one per family) [key: nat_discovery_listen]
    #[arg(long, value_name = "IP:PORT")]
    pub nat_discovery_listen: Vec<String>,

    /// Another TURN server, IP:PORT, a new allocation is sent to (300 Try Alternate) when
    /// this one is draining or full (repeatable) [key: alternate_servers]
    #[arg(long = "alternate-server", value_name = "IP:PORT")]
    pub alternate_servers: Vec<String>,

    /// PEM certificate chain for TLS, leaf first [key: tls_cert]
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<String>,

    /// PEM private key for TLS [key: tls_key]
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<String>,
    /// HTTP address serving /metrics, /healthz and /readyz; port 0 picks a free port
    /// [key: metrics_listen]
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_listen: Option<String>,

    /// Seconds allocations may keep relaying after SIGTERM/SIGINT before turnd exits
    /// [key: drain_timeout]
    #[arg(long, value_name = "SECONDS")]
    pub drain_timeout: Option<String>,

    /// Bearer token the admin API (/allocations) requires; "" = none [key: admin_token]
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<String>,
}

impl ConfigArgs {
    /// `self` with every flag that `later` set replaced by `later`'s value.
    pub fn overridden_by(mut self, later: &ConfigArgs) -> ConfigArgs {
        fn list(slot: &mut Vec<String>, later: &[String]) {
            if !later.is_empty() {
                *slot = later.to_vec();
            }
        }
        fn one<T: Clone>(slot: &mut Option<T>, later: &Option<T>) {
            if later.is_some() {
                slot.clone_from(later);
            }
        }
        one(&mut self.config, &later.config);
        list(&mut self.listen, &later.listen);
        list(&mut self.relay_ip, &later.relay_ip);
        one(&mut self.relay_ports, &later.relay_ports);
        list(&mut self.external_ip, &later.external_ip);
        one(&mut self.realm, &later.realm);
        list(&mut self.user, &later.user);
        list(&mut self.auth_secret, &later.auth_secret);
        one(&mut self.rest_username_order, &later.rest_username_order);
        one(&mut self.rest_max_ttl, &later.rest_max_ttl);
        list(&mut self.allow_peer, &later.allow_peer);
        list(&mut self.deny_peer, &later.deny_peer);
        one(&mut self.workers, &later.workers);
        one(&mut self.log_level, &later.log_level);
        one(&mut self.log_format, &later.log_format);
        one(&mut self.default_lifetime, &later.default_lifetime);
        one(&mut self.max_lifetime, &later.max_lifetime);
        one(&mut self.nonce_lifetime, &later.nonce_lifetime);
        one(&mut self.software, &later.software);
        one(&mut self.user_quota, &later.user_quota);
        one(&mut self.total_quota, &later.total_quota);
        one(&mut self.allocation_bandwidth, &later.allocation_bandwidth);
        one(&mut self.user_bandwidth, &later.user_bandwidth);
        one(&mut self.max_connections, &later.max_connections);
        one(&mut self.amplification, &later.amplification);
        one(&mut self.unauthenticated_rate, &later.unauthenticated_rate);
        one(&mut self.binding_rate, &later.binding_rate);
        one(&mut self.userhash, &later.userhash);
        one(&mut self.max_permissions, &later.max_permissions);
        one(&mut self.max_channels, &later.max_channels);
        one(
            &mut self.unauthenticated_timeout,
            &later.unauthenticated_timeout,
        );
        one(&mut self.max_frame_size, &later.max_frame_size);
        one(&mut self.udp_recv_buffer, &later.udp_recv_buffer);
        one(&mut self.udp_send_buffer, &later.udp_send_buffer);
        one(&mut self.udp_coalesce, &later.udp_coalesce);
        list(&mut self.tls_listen, &later.tls_listen);
        list(&mut self.nat_discovery_listen, &later.nat_discovery_listen);
        list(&mut self.alternate_servers, &later.alternate_servers);
        one(&mut self.tls_cert, &later.tls_cert);
        one(&mut self.tls_key, &later.tls_key);
        one(&mut self.metrics_listen, &later.metrics_listen);
        one(&mut self.drain_timeout, &later.drain_timeout);
        one(&mut self.admin_token, &later.admin_token);
        self
    }
}
