//! Turning the winning raw settings into a typed [`Config`]: each key's declaration
//! (`keys.rs`) parses its own setting, then the rules that span keys are checked here. Every
//! problem is collected rather than stopping at the first, so one `check-config` run shows them
//! all.

use std::collections::HashSet;
use std::fmt::Display;

use crate::core::auth::UserSecret;

use super::error::{Origin, Problem};
use super::keys::KEYS;
use super::sources::{Raw, RawUser, Settings};
use super::types::User;
use super::Config;

pub(crate) fn build(settings: &Settings, problems: &mut Vec<Problem>) -> Config {
    let config = each_key(settings, problems);
    Builder { settings, problems }.cross_checks(&config);
    config
}

/// The defaults, with each key that has a valid setting replaced by its value.
pub(crate) fn each_key(settings: &Settings, problems: &mut Vec<Problem>) -> Config {
    let mut config = Config::default();
    let mut b = Builder { settings, problems };
    for key in KEYS {
        (key.build)(&mut b, &mut config);
    }
    config
}

/// Records problems while the keys' declarations parse their settings.
pub(crate) struct Builder<'a> {
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

    /// A single value, if set and valid (else the problem is recorded).
    pub(crate) fn one<T>(
        &mut self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        // `sources` makes only scalars for one-value keys.
        let Some(Raw::Scalar(text)) = self.settings.get(key).map(|s| &s.raw) else {
            return None;
        };
        match parse(text) {
            Ok(value) => Some(value),
            Err(reason) => {
                self.invalid(key, reason);
                None
            }
        }
    }

    /// A single value that the file may give as a boolean: `sources` has already made it text.
    pub(crate) fn switch<T>(
        &mut self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        self.one(key, parse)
    }

    /// A list, if set; invalid items are recorded and dropped.
    pub(crate) fn list<T>(
        &mut self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        let Some(Raw::List(items)) = self.settings.get(key).map(|s| &s.raw) else {
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match parse(item) {
                Ok(value) => out.push(value),
                Err(reason) => self.invalid(key, reason),
            }
        }
        Some(out)
    }

    /// The users, if set; invalid ones are recorded and dropped.
    pub(crate) fn users(&mut self, key: &str) -> Option<Vec<User>> {
        let Some(Raw::Users(raws)) = self.settings.get(key).map(|s| &s.raw) else {
            return None;
        };
        let mut users = Vec::with_capacity(raws.len());
        for (i, raw) in raws.iter().enumerate() {
            if let Some(user) = self.user(i, raw) {
                users.push(user);
            }
        }
        Some(users)
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
        // The store's TLS files: mutual TLS needs both halves, and a CA for a plain
        // `redis://` store would be a promise of TLS that is not kept.
        for (key, other, file, pair) in [
            (
                "store_cert_file",
                "store_key_file",
                &c.store_cert_file,
                &c.store_key_file,
            ),
            (
                "store_key_file",
                "store_cert_file",
                &c.store_key_file,
                &c.store_cert_file,
            ),
        ] {
            if file.is_some() && pair.is_none() && !self.has_problem(other) {
                self.invalid(other, format!("{key} is set: mutual TLS needs both"));
            }
        }
        if c.store
            .as_deref()
            .is_some_and(|u| !u.starts_with("rediss://"))
        {
            for (key, file) in [
                ("store_ca_file", &c.store_ca_file),
                ("store_cert_file", &c.store_cert_file),
                ("store_key_file", &c.store_key_file),
            ] {
                if file.is_some() && !self.has_problem(key) {
                    self.invalid(key, "`store` is a plain redis:// URL: TLS needs rediss://");
                }
            }
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
