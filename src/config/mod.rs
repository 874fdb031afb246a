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
//! Layout: `keys` declares every key once (see there to add one), and `declare`
//! turns that into [`Config`], [`ConfigArgs`] and the key table the rest loops
//! over: `sources` gathers text from file, env and flags; `build` parses
//! (with `parse`) and validates it into [`Config`]; `render` prints it back
//! (`check-config`); `reference` writes `docs/configuration.md` and
//! `config/turnd.toml`.

mod build;
mod cli;
mod declare;
mod error;
mod keys;
mod parse;
mod render;
mod shell_options;
mod sources;
mod types;

// Writes docs/configuration.md and config/turnd.toml; only its test runs it.
#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cli;
#[cfg(test)]
mod tests_errors;
#[cfg(test)]
mod tests_reference;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

pub use crate::core::auth::RestUsernameOrder;
pub use crate::core::rate_limit::Rate;

pub use cli::{Cli, Command};
pub use error::{ConfigError, Problem};
pub use keys::{Config, ConfigArgs, DEFAULT_UDP_COALESCE_US};
pub use render::REDACTED;
pub use shell_options::{access, shell_options, CHANNEL_LIFETIME_ENV, GSO_ENV, PANIC_ENV};

/// The store's password (`docs/cluster.md`), read by `crate::store` when neither the `store`
/// URL nor `store_password_file` gives one. Not a config key: it never enters `Config`, so
/// nothing prints it.
pub const STORE_PASSWORD_ENV: &str = "TURND_STORE_PASSWORD";

/// Checks a store URL as the `store` key does (for `turnd users --store URL`); the message
/// never repeats a password.
pub fn parse_store_url(url: &str) -> Result<(), String> {
    parse::store_url(url).map(|_| ())
}
pub use types::{Amplification, ExternalIp, LogFormat, PortRange, User, ValueError, XdpMode};

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

/// Secrets are redacted (each key as `check-config` shows it), so the config can be logged.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Config");
        for key in keys::KEYS {
            let value = (key.render)(self).unwrap_or_else(|| "not set".to_string());
            s.field(key.name, &format_args!("{value}"));
        }
        s.finish()
    }
}
