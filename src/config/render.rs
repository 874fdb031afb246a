//! [`Config::to_toml`]: the effective configuration as a TOML file, the output
//! of `turnd check-config`. Every key is written, defaults included, so an
//! operator sees exactly what the server will use. Secrets are replaced by
//! `"<redacted>"` so the output can be pasted into a bug report.

use std::fmt::{Display, Write};

use crate::core::auth::UserSecret;

use super::{Config, Rate};

/// What replaces every password, key and shared secret in the output.
pub const REDACTED: &str = "<redacted>";

impl Config {
    /// The effective configuration as TOML, secrets redacted.
    ///
    /// It parses as TOML, and loads again as the same configuration apart from
    /// the secrets: a password user keeps a password (`"<redacted>"`), while a
    /// `key` user's `key = "<redacted>"` is refused on load, on purpose, since
    /// the real key is gone.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; `let _` keeps the lines short.
        let w = &mut out;
        let _ = writeln!(
            w,
            "# turnd effective configuration: defaults < file < env < flags."
        );
        let _ = writeln!(w, "# Secrets are shown as \"{REDACTED}\".");
        let _ = writeln!(w, "listen = {}", list(&self.listen));
        let _ = writeln!(w, "relay_ips = {}", list(&self.relay_ips));
        let _ = writeln!(w, "relay_ports = {}", quote(&self.relay_ports.to_string()));
        let _ = writeln!(w, "external_ips = {}", list(&self.external_ips));
        let _ = writeln!(w, "realm = {}", quote(&self.realm));
        let secrets = vec![REDACTED; self.auth_secrets.len()];
        let _ = writeln!(w, "auth_secrets = {}", list(&secrets));
        let _ = writeln!(
            w,
            "rest_username_order = {} # expiry-first or user-first",
            quote(self.rest_username_order.as_str())
        );
        let _ = writeln!(
            w,
            "rest_max_ttl = {} # seconds; 0 = no cap",
            self.rest_max_ttl
        );
        let _ = writeln!(w, "allow_peers = {}", list(&self.allow_peers));
        let _ = writeln!(w, "deny_peers = {}", list(&self.deny_peers));
        let _ = writeln!(
            w,
            "workers = {} # 0 = one per CPU core: {} here",
            self.workers,
            self.effective_workers()
        );
        let _ = writeln!(w, "log_level = {}", quote(&self.log_level));
        let _ = writeln!(w, "log_format = {}", quote(self.log_format.as_str()));
        let _ = writeln!(w, "default_lifetime = {}", self.default_lifetime);
        let _ = writeln!(w, "max_lifetime = {}", self.max_lifetime);
        let _ = writeln!(w, "nonce_lifetime = {}", self.nonce_lifetime);
        let software = self.software.as_deref().unwrap_or("");
        let _ = writeln!(w, "software = {}", quote(software));
        let _ = writeln!(w, "user_quota = {} # 0 = no limit", self.user_quota);
        let _ = writeln!(w, "total_quota = {} # 0 = no limit", self.total_quota);
        let _ = writeln!(
            w,
            "allocation_bandwidth = {} # bytes/s, 0 = no cap",
            self.allocation_bandwidth
        );
        let _ = writeln!(
            w,
            "user_bandwidth = {} # bytes/s, 0 = no cap",
            self.user_bandwidth
        );
        let _ = writeln!(
            w,
            "max_connections = {} # 0 = no limit",
            self.max_connections
        );
        let _ = writeln!(
            w,
            "amplification = {} # allow or refuse",
            quote(if self.refuse_amplification {
                "refuse"
            } else {
                "allow"
            })
        );
        let rate = |r: &Rate| quote(&format!("{}/{}", r.per_second, r.burst));
        let _ = writeln!(
            w,
            "unauthenticated_rate = {} # per second/burst; 0 = no limit",
            rate(&self.unauthenticated_rate)
        );
        let _ = writeln!(
            w,
            "binding_rate = {} # per second/burst; 0 = no limit",
            rate(&self.binding_rate)
        );
        let _ = writeln!(w, "userhash = {}", self.userhash);
        let _ = writeln!(
            w,
            "max_permissions = {} # 0 = 4096, the most",
            self.max_permissions
        );
        let _ = writeln!(
            w,
            "max_channels = {} # 0 = 4096, the most",
            self.max_channels
        );
        let _ = writeln!(
            w,
            "unauthenticated_timeout = {}",
            self.unauthenticated_timeout
        );
        let _ = writeln!(w, "max_frame_size = {}", self.max_frame_size);
        let _ = writeln!(
            w,
            "udp_recv_buffer = {} # 0 = the kernel's default",
            self.udp_recv_buffer
        );
        let _ = writeln!(
            w,
            "udp_send_buffer = {} # 0 = the kernel's default",
            self.udp_send_buffer
        );
        let _ = writeln!(
            w,
            "udp_coalesce = {} # microseconds; 0 = off",
            self.udp_coalesce
        );
        let _ = writeln!(w, "tls_listen = {}", list(&self.tls_listen));
        let _ = writeln!(
            w,
            "nat_discovery_listen = {}",
            list(&self.nat_discovery_listen)
        );
        let _ = writeln!(w, "alternate_servers = {}", list(&self.alternate_servers));
        for (key, file) in [("tls_cert", &self.tls_cert), ("tls_key", &self.tls_key)] {
            match file {
                Some(f) => {
                    let _ = writeln!(w, "{key} = {}", quote(&f.display().to_string()));
                }
                None => {
                    let _ = writeln!(w, "# {key} is not set");
                }
            }
        }
        let _ = writeln!(
            w,
            "metrics_listen = {}",
            quote(&self.metrics_listen.to_string())
        );
        let _ = writeln!(w, "drain_timeout = {}", self.drain_timeout);
        let token = self.admin_token.as_ref().map_or("", |_| REDACTED);
        let _ = writeln!(w, "admin_token = {} # \"\" = none", quote(token));
        // Array-of-tables must follow every top-level key.
        for user in &self.users {
            let field = match user.secret {
                UserSecret::Password(_) => "password",
                UserSecret::Key(_) => "key",
            };
            let _ = writeln!(w, "\n[[users]]");
            let _ = writeln!(w, "name = {}", quote(&user.name));
            let _ = writeln!(w, "{field} = {}", quote(REDACTED));
        }
        out
    }
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list<T: Display>(items: &[T]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| quote(&i.to_string())).collect();
    format!("[{}]", quoted.join(", "))
}

/// The keys SIGHUP applies to the running server; every other key waits for a restart.
pub const RELOADABLE: [&str; 8] = [
    "realm",
    "users",
    "auth_secrets",
    "rest_username_order",
    "rest_max_ttl",
    "allow_peers",
    "deny_peers",
    "log_level",
];

impl Config {
    /// The keys whose value differs between `self` (running) and `new` (just loaded) but that a
    /// reload does not apply, so the operator can be told a restart is needed for them rather
    /// than believe the change took effect. Compared through [`Config::to_toml`], one line per
    /// key (secrets are redacted there, and secrets are all reloadable).
    pub fn changed_needing_restart(&self, new: &Config) -> Vec<String> {
        let old = self.to_toml();
        let new = new.to_toml();
        let old = top_level_lines(&old);
        let new = top_level_lines(&new);
        let mut changed: Vec<String> = old
            .iter()
            .filter(|(key, line)| new.iter().all(|(k, l)| k != key || l != line))
            .map(|(key, _)| key.to_string())
            .filter(|key| !RELOADABLE.contains(&key.as_str()))
            .collect();
        changed.dedup();
        changed
    }
}

/// `(key, line)` for each `key = value` line of a rendered configuration before its first
/// table (`[[users]]`).
fn top_level_lines(toml: &str) -> Vec<(&str, &str)> {
    toml.lines()
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| Some((l.split_once(" = ")?.0, l)))
        .collect()
}
