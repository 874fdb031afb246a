//! Turning the winning raw settings into a typed [`Config`], checking each
//! value and then the rules that span keys. Every problem is collected rather
//! than stopping at the first, so one `check-config` run shows them all.

use std::collections::HashSet;
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};

use crate::core::auth::UserSecret;
use crate::core::peer_filter::Cidr;

use super::error::{Origin, Problem};
use super::sources::{Raw, RawUser, Settings};
use super::types::{ExternalIp, PortRange, User};
use super::{Config, LogFormat, Rate, RestUsernameOrder};

/// RFC 8489 §14.9 (REALM) and §14.14 (SOFTWARE): fewer than 128 characters.
const MAX_TEXT_CHARS: usize = 127;
/// More workers than this is a typo, not a machine.
const MAX_WORKERS: usize = 1024;

pub(crate) fn build(settings: &Settings, problems: &mut Vec<Problem>) -> Config {
    let defaults = Config::default();
    let mut b = Builder { settings, problems };
    let config = Config {
        listen: b.list("listen", defaults.listen, parse_listen),
        relay_ips: b.list("relay_ips", defaults.relay_ips, parse_relay_ip),
        relay_ports: b.one("relay_ports", defaults.relay_ports, |s| {
            s.trim().parse::<PortRange>().map_err(|e| e.to_string())
        }),
        external_ips: b.list("external_ips", defaults.external_ips, |s| {
            s.parse::<ExternalIp>().map_err(|e| e.to_string())
        }),
        realm: b.one("realm", defaults.realm, parse_realm),
        users: b.users(defaults.users),
        auth_secrets: b.list("auth_secrets", defaults.auth_secrets, parse_secret),
        rest_username_order: b.one(
            "rest_username_order",
            defaults.rest_username_order,
            parse_rest_username_order,
        ),
        rest_max_ttl: b.one("rest_max_ttl", defaults.rest_max_ttl, parse_max_ttl),
        allow_peers: b.list("allow_peers", defaults.allow_peers, parse_cidr),
        deny_peers: b.list("deny_peers", defaults.deny_peers, parse_cidr),
        workers: b.one("workers", defaults.workers, parse_workers),
        log_level: b.one("log_level", defaults.log_level, parse_log_level),
        log_format: b.one("log_format", defaults.log_format, parse_log_format),
        default_lifetime: b.one("default_lifetime", defaults.default_lifetime, parse_seconds),
        max_lifetime: b.one("max_lifetime", defaults.max_lifetime, parse_seconds),
        nonce_lifetime: b.one("nonce_lifetime", defaults.nonce_lifetime, parse_seconds),
        software: b.one("software", defaults.software, parse_software),
        user_quota: b.one("user_quota", defaults.user_quota, parse_count),
        total_quota: b.one("total_quota", defaults.total_quota, parse_count),
        allocation_bandwidth: b.one(
            "allocation_bandwidth",
            defaults.allocation_bandwidth,
            parse_count,
        ),
        user_bandwidth: b.one("user_bandwidth", defaults.user_bandwidth, parse_count),
        max_connections: b.one("max_connections", defaults.max_connections, parse_count),
        refuse_amplification: b.one(
            "amplification",
            defaults.refuse_amplification,
            parse_amplification,
        ),
        unauthenticated_rate: b.one(
            "unauthenticated_rate",
            defaults.unauthenticated_rate,
            parse_rate,
        ),
        binding_rate: b.one("binding_rate", defaults.binding_rate, parse_rate),
        userhash: b.one("userhash", defaults.userhash, parse_bool),
        max_permissions: b.one(
            "max_permissions",
            defaults.max_permissions,
            parse_per_allocation,
        ),
        max_channels: b.one("max_channels", defaults.max_channels, parse_per_allocation),
        unauthenticated_timeout: b.one(
            "unauthenticated_timeout",
            defaults.unauthenticated_timeout,
            parse_seconds,
        ),
        max_frame_size: b.one("max_frame_size", defaults.max_frame_size, parse_frame_size),
        udp_recv_buffer: b.one("udp_recv_buffer", defaults.udp_recv_buffer, parse_buffer),
        udp_send_buffer: b.one("udp_send_buffer", defaults.udp_send_buffer, parse_buffer),
        udp_coalesce: b.one("udp_coalesce", defaults.udp_coalesce, parse_coalesce),
        tls_listen: b.list("tls_listen", defaults.tls_listen, parse_listen),
        alternate_servers: b.list(
            "alternate_servers",
            defaults.alternate_servers,
            parse_listen,
        ),
        nat_discovery_listen: b.list(
            "nat_discovery_listen",
            defaults.nat_discovery_listen,
            parse_listen,
        ),
        tls_cert: b.one("tls_cert", defaults.tls_cert, parse_path),
        tls_key: b.one("tls_key", defaults.tls_key, parse_path),
        metrics_listen: b.one("metrics_listen", defaults.metrics_listen, parse_listen),
        drain_timeout: b.one("drain_timeout", defaults.drain_timeout, parse_seconds),
        admin_token: b.one("admin_token", defaults.admin_token, parse_admin_token),
    };
    b.cross_checks(&config);
    config
}

struct Builder<'a> {
    settings: &'a Settings,
    problems: &'a mut Vec<Problem>,
}

impl Builder<'_> {
    fn origin(&self, key: &str) -> Origin {
        self.settings
            .get(key)
            .map_or(Origin::Default, |s| s.origin.clone())
    }

    fn invalid(&mut self, key: impl Into<String>, reason: impl Display) {
        let key = key.into();
        // Sub-keys such as `users[1].key` take the origin of `users`.
        let top = key.split(['[', '.']).next().unwrap_or(&key).to_string();
        let origin = self.origin(&top);
        self.problems.push(Problem::invalid(key, reason, &origin));
    }

    /// A single value; the default if unset or invalid (the problem is recorded).
    fn one<T>(&mut self, key: &str, default: T, parse: impl Fn(&str) -> Result<T, String>) -> T {
        let text = match self.settings.get(key).map(|s| &s.raw) {
            None => return default,
            Some(Raw::Scalar(text)) => text,
            // `sources` only makes scalars for scalar keys.
            Some(_) => return default,
        };
        match parse(text) {
            Ok(value) => value,
            Err(reason) => {
                self.invalid(key, reason);
                default
            }
        }
    }

    /// A list; invalid items are recorded and dropped.
    fn list<T>(
        &mut self,
        key: &str,
        default: Vec<T>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let items = match self.settings.get(key).map(|s| &s.raw) {
            None => return default,
            Some(Raw::List(items)) => items,
            Some(_) => return default,
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match parse(item) {
                Ok(value) => out.push(value),
                Err(reason) => self.invalid(key, reason),
            }
        }
        out
    }

    fn users(&mut self, default: Vec<User>) -> Vec<User> {
        let raws = match self.settings.get("users").map(|s| &s.raw) {
            None => return default,
            Some(Raw::Users(raws)) => raws,
            Some(_) => return default,
        };
        let mut users = Vec::with_capacity(raws.len());
        for (i, raw) in raws.iter().enumerate() {
            if let Some(user) = self.user(i, raw) {
                users.push(user);
            }
        }
        users
    }

    fn user(&mut self, i: usize, raw: &RawUser) -> Option<User> {
        let here = format!("users[{i}]");
        let user = match raw {
            RawUser::Text(text) => match text.parse::<User>() {
                Ok(user) => user,
                Err(e) => {
                    self.invalid(here, e);
                    return None;
                }
            },
            RawUser::Table {
                name,
                password,
                key,
            } => {
                let name = name.clone().unwrap_or_default();
                let who = if name.is_empty() {
                    String::from("a user")
                } else {
                    format!("user `{name}`")
                };
                let secret = match (password, key) {
                    (Some(_), Some(_)) => {
                        let why = format!("{who} has both `password` and `key`; give exactly one");
                        self.invalid(here.clone(), why);
                        None
                    }
                    (None, None) => {
                        let why =
                            format!("{who} has neither `password` nor `key`; give exactly one");
                        self.invalid(here.clone(), why);
                        None
                    }
                    (Some(password), None) => Some(UserSecret::Password(password.clone())),
                    (None, Some(key)) => match UserSecret::parse_key_hex(key.trim()) {
                        Some(bytes) => Some(UserSecret::Key(bytes)),
                        None => {
                            // The text is not echoed: it may be a real key with a typo.
                            let why = format!(
                                "the key of {who} is not 32 hex digits (got {} characters); \
                                 it is MD5(name:realm:password) in hex, optionally 0x-prefixed",
                                key.chars().count()
                            );
                            self.invalid(format!("{here}.key"), why);
                            None
                        }
                    },
                };
                User {
                    name,
                    secret: secret?,
                }
            }
        };
        if user.name.is_empty() {
            self.invalid(format!("{here}.name"), "every user needs a non-empty name");
            return None;
        }
        if user.name.len() > User::MAX_NAME_BYTES || user.name.chars().any(char::is_control) {
            let why = format!(
                "user name `{}` must be at most {} bytes without control characters",
                user.name.escape_debug(),
                User::MAX_NAME_BYTES
            );
            self.invalid(format!("{here}.name"), why);
            return None;
        }
        if let UserSecret::Password(p) = &user.secret {
            if p.is_empty() {
                let why = format!("the password of user `{}` is empty", user.name);
                self.invalid(format!("{here}.password"), why);
                return None;
            }
        }
        Some(user)
    }

    /// Whether a problem was already recorded for `key` or one of its items.
    /// Cross-key rules skip such keys: a value replaced by its default, or a
    /// list short of a bad item, would only give a confusing second message.
    fn has_problem(&self, key: &str) -> bool {
        self.problems.iter().filter_map(Problem::key).any(|k| {
            k == key
                || k.strip_prefix(key)
                    .is_some_and(|rest| rest.starts_with(['[', '.']))
        })
    }

    /// Rules that involve several values or several keys.
    fn cross_checks(&mut self, c: &Config) {
        if c.listen.is_empty() && !self.has_problem("listen") {
            self.invalid(
                "listen",
                "no address to listen on; give at least one IP:PORT",
            );
        }
        if let Some(dup) = first_duplicate(&c.listen) {
            self.invalid("listen", format!("{dup} is listed twice"));
        }
        if let Some(dup) = first_duplicate(&c.tls_listen) {
            self.invalid("tls_listen", format!("{dup} is listed twice"));
        }
        if !c.tls_listen.is_empty() {
            for (key, file) in [("tls_cert", &c.tls_cert), ("tls_key", &c.tls_key)] {
                if file.is_none() && !self.has_problem(key) {
                    self.invalid(
                        key,
                        "tls_listen is set, so TLS needs a certificate and its key",
                    );
                }
            }
        }
        if !self.has_problem("nat_discovery_listen") && !self.has_problem("listen") {
            if let Err(e) = super::nat_discovery_pairs(c) {
                self.invalid("nat_discovery_listen", e);
            }
        }
        if let Some(a) = c
            .alternate_servers
            .iter()
            .find(|a| a.port() == 0 || a.ip().is_unspecified())
        {
            self.invalid(
                "alternate_servers",
                format!("{a}: a client must be able to reach it: give a real IP and port"),
            );
        }
        if let Some(dup) = first_duplicate(&c.relay_ips) {
            self.invalid("relay_ips", format!("{dup} is listed twice"));
        }
        if !self.has_problem("external_ips") && !self.has_problem("relay_ips") {
            self.check_external_ips(c);
        }
        let names: Vec<&str> = c.users.iter().map(|u| u.name.as_str()).collect();
        if let Some(dup) = first_duplicate(&names) {
            self.invalid("users", format!("user `{dup}` is defined twice"));
        }
        let lifetimes_ok =
            !self.has_problem("default_lifetime") && !self.has_problem("max_lifetime");
        if lifetimes_ok && c.default_lifetime > c.max_lifetime {
            let why = format!(
                "{} s is longer than max_lifetime ({} s, from {}); \
                 lower default_lifetime or raise max_lifetime",
                c.default_lifetime,
                c.max_lifetime,
                self.origin("max_lifetime")
            );
            self.invalid("default_lifetime", why);
        }
    }

    fn check_external_ips(&mut self, c: &Config) {
        let mut privates = HashSet::new();
        let (mut bare_v4, mut bare_v6) = (0, 0);
        for ext in &c.external_ips {
            match ext.private {
                None if ext.public.is_ipv4() => bare_v4 += 1,
                None => bare_v6 += 1,
                Some(private) => {
                    if !privates.insert(private) {
                        let why = format!("relay IP {private} is mapped more than once");
                        self.invalid("external_ips", why);
                    }
                    if !c.relay_ips.is_empty() && !c.relay_ips.contains(&private) {
                        let why = format!(
                            "`{ext}` maps {private}, which is not one of relay_ips ({})",
                            join(&c.relay_ips)
                        );
                        self.invalid("external_ips", why);
                    }
                }
            }
        }
        for (count, family) in [(bare_v4, "IPv4"), (bare_v6, "IPv6")] {
            if count > 1 {
                let why = format!(
                    "{count} bare {family} addresses; a bare PUBLIC applies to every relay IP \
                     of its family, so give one, or map each relay IP as PUBLIC/PRIVATE"
                );
                self.invalid("external_ips", why);
            }
        }
    }
}

fn first_duplicate<T: PartialEq + Display>(items: &[T]) -> Option<String> {
    items
        .iter()
        .enumerate()
        .find(|(i, item)| items[..*i].contains(item))
        .map(|(_, item)| item.to_string())
}

fn join<T: Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("`{s}` is not a socket address IP:PORT (IPv6 in brackets, like [::1]:3478)")
    })
}

fn parse_path(s: &str) -> Result<Option<std::path::PathBuf>, String> {
    if s.trim().is_empty() {
        return Err("the file name is empty".into());
    }
    Ok(Some(s.into()))
}

fn parse_relay_ip(s: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not an IP address"))?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(format!(
            "{ip} cannot be a relay IP: clients are told to send to it, so it must be a \
             unicast address of this host (use external_ips to advertise a public one)"
        ));
    }
    Ok(ip)
}

fn parse_realm(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the realm is empty".into());
    }
    if s.chars().count() > MAX_TEXT_CHARS
        || s.chars().any(|c| c.is_control() || c == '"' || c == '\\')
    {
        return Err(format!(
            "`{}` is not a realm: at most {MAX_TEXT_CHARS} characters, without `\"`, `\\` \
             or control characters (RFC 8489 §14.9)",
            s.escape_debug()
        ));
    }
    Ok(s.to_string())
}

fn parse_admin_token(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the admin token must not hold spaces or control characters".into());
    }
    Ok(Some(s.to_string()))
}

fn parse_secret(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("a shared secret is empty".into());
    }
    Ok(s.to_string())
}

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    // `Cidr::Err` is the core's type; only its failure matters here.
    s.trim().parse::<Cidr>().map_err(|_| {
        format!("`{s}` is not an IP network ADDR/PREFIX (like 10.0.0.0/8 or ::1/128) or an IP")
    })
}

fn parse_workers(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n <= MAX_WORKERS => Ok(n),
        Ok(n) => Err(format!(
            "{n} workers is more than {MAX_WORKERS}; 0 means one per CPU core"
        )),
        Err(_) => Err(format!(
            "`{s}` is not a whole number ≥ 0 (0 means one per CPU core)"
        )),
    }
}

fn parse_amplification(s: &str) -> Result<bool, String> {
    match s.trim() {
        "allow" => Ok(false),
        "refuse" => Ok(true),
        _ => Err(format!("`{s}` is neither `allow` nor `refuse`")),
    }
}

/// `RATE` or `RATE/BURST`, per second; the burst defaults to twice the rate; 0 = no limit.
fn parse_rate(s: &str) -> Result<Rate, String> {
    let bad = || format!("`{s}` is not `RATE` or `RATE/BURST` (whole numbers; 0 = no limit)");
    let (rate, burst) = match s.trim().split_once('/') {
        Some((r, b)) => (r.trim(), Some(b.trim())),
        None => (s.trim(), None),
    };
    let per_second = rate.parse::<u32>().map_err(|_| bad())?;
    let burst = match burst {
        Some(b) => b.parse::<u32>().map_err(|_| bad())?,
        None => per_second.saturating_mul(2),
    };
    if per_second > 0 && burst == 0 {
        return Err(format!(
            "`{s}`: a burst of 0 would refuse everything; use 0 for no limit"
        ));
    }
    Ok(Rate { per_second, burst })
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" | "on" | "yes" => Ok(true),
        "false" | "off" | "no" => Ok(false),
        _ => Err(format!("`{s}` is neither `true` nor `false`")),
    }
}

fn parse_rest_username_order(s: &str) -> Result<RestUsernameOrder, String> {
    RestUsernameOrder::parse(s.trim()).ok_or_else(|| {
        format!(
            "`{s}` is neither `expiry-first` (EXPIRY:USER, the default) nor `user-first` \
             (USER:EXPIRY)"
        )
    })
}

/// Seconds, 0 = no cap; at most `u32::MAX` (136 years) like every duration here, which also
/// keeps it a TOML integer when printed.
fn parse_max_ttl(s: &str) -> Result<u32, String> {
    s.trim().parse::<u32>().map_err(|_| {
        format!(
            "`{s}` is not a number of seconds from 0 (no cap) to {}",
            u32::MAX
        )
    })
}

/// `max_permissions`, `max_channels`: 0 (the ceiling) to the ceiling, 4096 for both.
fn parse_per_allocation(s: &str) -> Result<u32, String> {
    const CEILING: u32 = crate::core::permission::MAX_PERMISSIONS;
    const _: () = assert!(CEILING == crate::core::channel::MAX_CHANNELS);
    s.trim()
        .parse::<u32>()
        .ok()
        .filter(|&n| n <= CEILING)
        .ok_or_else(|| {
            format!("`{s}` is not a whole number from 1 to {CEILING} (0 = {CEILING}, the most)")
        })
}

fn parse_count(s: &str) -> Result<u32, String> {
    s.trim().parse::<u32>().map_err(|_| {
        format!(
            "`{s}` is not a whole number from 0 (no limit) to {}",
            u32::MAX
        )
    })
}

/// A socket buffer size: the kernel takes an `int`.
fn parse_buffer(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .ok()
        .filter(|&n| n <= i32::MAX as u32)
        .ok_or_else(|| {
            format!(
                "`{s}` is not a size in bytes from 0 (the kernel's default) to {}",
                i32::MAX
            )
        })
}

/// The longest coalescing window: beyond a few milliseconds the added delay would show in
/// calls (and a worker would sit idle with datagrams queued).
const MAX_COALESCE_US: u32 = 5_000;

fn parse_coalesce(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .ok()
        .filter(|&n| n <= MAX_COALESCE_US)
        .ok_or_else(|| {
            format!("`{s}` is not a window in microseconds from 0 (off) to {MAX_COALESCE_US}")
        })
}

/// The smallest useful frame limit: a STUN Allocate with long-term credentials is a few
/// hundred bytes.
const MIN_FRAME_SIZE: u32 = 512;

fn parse_frame_size(s: &str) -> Result<u32, String> {
    let max = crate::stun::framing::MAX_FRAME_LEN as u32;
    match s.trim().parse::<u32>() {
        Ok(n) if (MIN_FRAME_SIZE..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a number of bytes from {MIN_FRAME_SIZE} to {max} (the largest STUN message)"
        )),
    }
}

fn parse_seconds(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err("0 s is too short; the lowest is 1 s".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "`{s}` is not a number of seconds from 1 to {}",
            u32::MAX
        )),
    }
}

/// The levels `tracing`'s `LevelFilter` accepts, case-insensitively.
const LEVELS: [&str; 12] = [
    "trace", "debug", "info", "warn", "error", "off", "0", "1", "2", "3", "4", "5",
];

fn is_level(s: &str) -> bool {
    LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s.trim()))
}

/// A plain level is checked exactly. A directive list (`turnd=debug,info`) is
/// left to `EnvFilter`, except that a `target=LEVEL` part's level is checked.
fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s.trim() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("`{s}` is not a log format: text or json")),
    }
}

fn parse_log_level(s: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "`{s}` is not a log level (trace, debug, info, warn, error, off) \
             nor a directive list like `turnd=debug,info`"
        )
    };
    let s = s.trim();
    if s.is_empty() {
        return Err("the log level is empty; use info if unsure".into());
    }
    let is_directive = s.contains(['=', ',', '[']);
    if !is_directive {
        return if is_level(s) {
            Ok(s.to_string())
        } else {
            Err(bad())
        };
    }
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(bad());
        }
        if part.contains(['[', '{']) {
            continue; // span filters: EnvFilter's own grammar
        }
        if let Some((target, level)) = part.split_once('=') {
            if target.trim().is_empty() || !is_level(level) {
                return Err(bad());
            }
        }
    }
    Ok(s.to_string())
}

fn parse_software(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    if s.chars().count() > MAX_TEXT_CHARS || s.chars().any(char::is_control) {
        return Err(format!(
            "`{}` is not a SOFTWARE text: at most {MAX_TEXT_CHARS} characters without control \
             characters (RFC 8489 §14.14); \"\" sends none",
            s.escape_debug()
        ));
    }
    Ok(Some(s.to_string()))
}
