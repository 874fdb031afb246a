//! [`Config::to_toml`]: the effective configuration as a TOML file, the output
//! of `turnd check-config`. Every key is written, defaults included, so an
//! operator sees exactly what the server will use. Secrets are replaced by
//! `"<redacted>"` so the output can be pasted into a bug report.

use std::fmt::{Display, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::core::auth::UserSecret;
use crate::core::rate_limit::Rate;

use super::keys::{KEYS, SECTIONS};
use super::types::{Amplification, LogFormat, PortRange, User, XdpMode};
use super::Config;

/// What replaces every password, key and shared secret in the output.
pub const REDACTED: &str = "<redacted>";

impl Config {
    /// The effective configuration as TOML, secrets redacted, grouped by section; a value
    /// that is not the default is followed by the default as a comment.
    ///
    /// It parses as TOML, and loads again as the same configuration apart from
    /// the secrets: a password user keeps a password (`"<redacted>"`), while a
    /// `key` user's `key = "<redacted>"` is refused on load, on purpose, since
    /// the real key is gone.
    pub fn to_toml(&self) -> String {
        let defaults = Config::default();
        let mut out = String::new();
        // Writing to a String cannot fail; `let _` keeps the lines short.
        let w = &mut out;
        let _ = writeln!(
            w,
            "# turnd effective configuration: defaults < file < env < flags."
        );
        let _ = writeln!(
            w,
            "# Secrets are shown as \"{REDACTED}\"; a value other than the default has it after."
        );
        if self.workers == 0 {
            let _ = writeln!(
                w,
                "# workers = 0: one per CPU core, {} here.",
                self.effective_workers()
            );
        }
        for section in SECTIONS {
            let _ = writeln!(w, "\n# {}", section.title);
            for key in KEYS.iter().filter(|k| k.section == section.title) {
                let value = (key.render)(self);
                let default = (key.render)(&defaults);
                match &value {
                    Some(v) => {
                        let _ = write!(w, "{} = {v}", key.name);
                    }
                    None => {
                        let _ = write!(w, "# {} is not set", key.name);
                    }
                }
                if value != default {
                    let shown = default.as_deref().unwrap_or("not set");
                    let _ = write!(w, " # default: {}", shown.replace('\n', " "));
                }
                let _ = writeln!(w);
            }
        }
        out
    }

    /// The keys whose value differs between `self` (running) and `new` (just loaded) but that a
    /// reload does not apply, so the operator can be told a restart is needed for them rather
    /// than believe the change took effect. Compared as [`Config::to_toml`] shows them (secrets
    /// are redacted there, and secrets are all reloadable).
    pub fn changed_needing_restart(&self, new: &Config) -> Vec<String> {
        KEYS.iter()
            .filter(|k| !k.reload && (k.render)(self) != (k.render)(new))
            .map(|k| k.name.to_string())
            .collect()
    }
}

/// A config value written as TOML, for `check-config`, the reference and `Debug`. `None`
/// means an optional value is unset (TOML has no null).
pub(crate) trait TomlValue {
    fn toml_value(&self) -> Option<String>;
}

/// Types written bare, as their `Display` form (numbers, booleans).
macro_rules! bare_display {
    ($($t:ty),*) => {$(
        impl TomlValue for $t {
            fn toml_value(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}

bare_display!(u32, usize, bool);

impl TomlValue for String {
    fn toml_value(&self) -> Option<String> {
        Some(quote(self))
    }
}

/// An optional text where "" means none (`software`).
impl TomlValue for Option<String> {
    fn toml_value(&self) -> Option<String> {
        Some(quote(self.as_deref().unwrap_or("")))
    }
}

impl TomlValue for Option<PathBuf> {
    fn toml_value(&self) -> Option<String> {
        self.as_ref().map(|p| quote(&p.display().to_string()))
    }
}

impl TomlValue for Rate {
    fn toml_value(&self) -> Option<String> {
        Some(quote(&format!("{}/{}", self.per_second, self.burst)))
    }
}

/// Types written as a string of their `Display` form.
macro_rules! quoted_display {
    ($($t:ty),*) => {$(
        impl TomlValue for $t {
            fn toml_value(&self) -> Option<String> {
                Some(quote(&self.to_string()))
            }
        }
    )*};
}

quoted_display!(PortRange, SocketAddr, LogFormat, Amplification, XdpMode);

impl TomlValue for crate::core::auth::RestUsernameOrder {
    fn toml_value(&self) -> Option<String> {
        Some(quote(self.as_str()))
    }
}

impl<T: Display> TomlValue for Vec<T> {
    fn toml_value(&self) -> Option<String> {
        let quoted: Vec<String> = self.iter().map(|i| quote(&i.to_string())).collect();
        Some(format!("[{}]", quoted.join(", ")))
    }
}

/// Users as an array of inline tables, one per line, secrets redacted.
impl TomlValue for Vec<User> {
    fn toml_value(&self) -> Option<String> {
        if self.is_empty() {
            return Some("[]".to_string());
        }
        let mut out = String::from("[\n");
        for user in self {
            let field = match user.secret {
                UserSecret::Password(_) => "password",
                UserSecret::Key(_) | UserSecret::Keys { .. } => "key",
            };
            let name = quote(&user.name);
            let _ = writeln!(out, "  {{ name = {name}, {field} = {} }},", quote(REDACTED));
        }
        out.push(']');
        Some(out)
    }
}

/// A list of secrets, each redacted.
pub(crate) fn redacted_list(secrets: &[String]) -> String {
    vec![REDACTED; secrets.len()]
        .toml_value()
        .unwrap_or_default()
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
