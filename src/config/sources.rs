//! Gathering raw settings from the three sources — file, `TURND_*` variables,
//! flags — and keeping, per key, the one with the highest precedence
//! (flags > env > file). Nothing is parsed into its final type here; that is
//! [`super::build`]'s job, so every source goes through the same checks.
//!
//! A later source *replaces* a list, it never appends to it: `--listen X`
//! means "listen on X only", whatever the file said.

use std::collections::HashMap;

use config::{Map, Value, ValueKind};

use super::cli::ConfigArgs;
use super::error::{Origin, Problem};

/// How a key's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One value; in the file a string or a number.
    Scalar,
    /// Several values; in the file an array of strings (a lone string is a list
    /// of one), in env comma-separated, as a flag repeated.
    List,
    /// `[[users]]` tables in the file; `NAME:PASSWORD` items elsewhere.
    Users,
}

/// One config key and its flag. The env var is `TURND_` + the key uppercased.
pub(crate) struct Key {
    pub name: &'static str,
    pub flag: &'static str,
    pub shape: Shape,
}

const fn key(name: &'static str, flag: &'static str, shape: Shape) -> Key {
    Key { name, flag, shape }
}

/// Every config key, in the order they are documented and printed.
pub(crate) const KEYS: [Key; 42] = [
    key("listen", "--listen", Shape::List),
    key("relay_ips", "--relay-ip", Shape::List),
    key("relay_ports", "--relay-ports", Shape::Scalar),
    key("external_ips", "--external-ip", Shape::List),
    key("realm", "--realm", Shape::Scalar),
    key("users", "--user", Shape::Users),
    key("auth_secrets", "--auth-secret", Shape::List),
    key(
        "rest_username_order",
        "--rest-username-order",
        Shape::Scalar,
    ),
    key("rest_max_ttl", "--rest-max-ttl", Shape::Scalar),
    key("allow_peers", "--allow-peer", Shape::List),
    key("deny_peers", "--deny-peer", Shape::List),
    key("workers", "--workers", Shape::Scalar),
    key("log_level", "--log-level", Shape::Scalar),
    key("log_format", "--log-format", Shape::Scalar),
    key("default_lifetime", "--default-lifetime", Shape::Scalar),
    key("max_lifetime", "--max-lifetime", Shape::Scalar),
    key("nonce_lifetime", "--nonce-lifetime", Shape::Scalar),
    key("software", "--software", Shape::Scalar),
    key("user_quota", "--user-quota", Shape::Scalar),
    key("total_quota", "--total-quota", Shape::Scalar),
    key(
        "allocation_bandwidth",
        "--allocation-bandwidth",
        Shape::Scalar,
    ),
    key("user_bandwidth", "--user-bandwidth", Shape::Scalar),
    key("max_connections", "--max-connections", Shape::Scalar),
    key("amplification", "--amplification", Shape::Scalar),
    key(
        "unauthenticated_rate",
        "--unauthenticated-rate",
        Shape::Scalar,
    ),
    key("binding_rate", "--binding-rate", Shape::Scalar),
    key("userhash", "--userhash", Shape::Scalar),
    key("max_permissions", "--max-permissions", Shape::Scalar),
    key("max_channels", "--max-channels", Shape::Scalar),
    key(
        "unauthenticated_timeout",
        "--unauthenticated-timeout",
        Shape::Scalar,
    ),
    key("max_frame_size", "--max-frame-size", Shape::Scalar),
    key("udp_recv_buffer", "--udp-recv-buffer", Shape::Scalar),
    key("udp_send_buffer", "--udp-send-buffer", Shape::Scalar),
    key("udp_coalesce", "--udp-coalesce", Shape::Scalar),
    key("tls_listen", "--tls-listen", Shape::List),
    key("alternate_servers", "--alternate-server", Shape::List),
    key(
        "nat_discovery_listen",
        "--nat-discovery-listen",
        Shape::List,
    ),
    key("tls_cert", "--tls-cert", Shape::Scalar),
    key("tls_key", "--tls-key", Shape::Scalar),
    key("metrics_listen", "--metrics-listen", Shape::Scalar),
    key("drain_timeout", "--drain-timeout", Shape::Scalar),
    key("admin_token", "--admin-token", Shape::Scalar),
];

/// Keys that are switches: the file may give them as TOML booleans.
const BOOLEAN_KEYS: [&str; 1] = ["userhash"];

/// The variable naming the config file; read by clap for `--config`, and by
/// [`super::load_from`] from its env map when `--config` is absent.
pub(crate) const CONFIG_ENV: &str = "TURND_CONFIG";
const ENV_PREFIX: &str = "TURND_";

pub(crate) fn env_var(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

fn key_names() -> Vec<&'static str> {
    KEYS.iter().map(|k| k.name).collect()
}

/// A value as written, before parsing.
#[derive(Debug, Clone)]
pub(crate) enum Raw {
    Scalar(String),
    List(Vec<String>),
    Users(Vec<RawUser>),
}

/// One user as written: `NAME:PASSWORD` text, or a `[[users]]` table.
#[derive(Debug, Clone)]
pub(crate) enum RawUser {
    Text(String),
    Table {
        name: Option<String>,
        password: Option<String>,
        key: Option<String>,
    },
}

/// A value and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Setting {
    pub raw: Raw,
    pub origin: Origin,
}

/// The winning setting for each key that any source set.
pub(crate) type Settings = HashMap<&'static str, Setting>;

/// Layers file, env and flags. `file` is (path as shown to the user, contents).
pub(crate) fn gather(
    args: &ConfigArgs,
    env: &HashMap<String, String>,
    file: Option<(&str, &str)>,
    problems: &mut Vec<Problem>,
) -> Settings {
    let mut settings = Settings::new();
    if let Some((path, text)) = file {
        from_file(path, text, &mut settings, problems);
    }
    from_env(env, &mut settings, problems);
    from_flags(args, &mut settings);
    settings
}

fn from_file(path: &str, text: &str, settings: &mut Settings, problems: &mut Vec<Problem>) {
    let table = match config::Format::parse(&config::FileFormat::Toml, None, text) {
        Ok(table) => table,
        Err(e) => {
            // toml's message reads "TOML parse error at line N, column M" and
            // then quotes the line; its trailing newline is dropped.
            let why = e.to_string();
            problems.push(Problem::file(path, why.trim_end()));
            return;
        }
    };
    let origin = Origin::File(path.to_string());
    // The map is a HashMap: sort so problems come out in a stable order.
    let mut entries: Vec<(String, Value)> = table.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in entries {
        let Some(key) = KEYS.iter().find(|k| k.name == name) else {
            problems.push(Problem::unknown_key(name, &key_names(), &origin));
            continue;
        };
        let raw = match key.shape {
            Shape::Scalar => file_scalar(key.name, value).map(Raw::Scalar),
            Shape::List => file_list(key.name, value).map(Raw::List),
            Shape::Users => file_users(value, &origin, problems).map(Raw::Users),
        };
        match raw {
            Ok(raw) => {
                let origin = origin.clone();
                settings.insert(key.name, Setting { raw, origin });
            }
            Err(reason) => problems.push(Problem::invalid(key.name, reason, &origin)),
        }
    }
}

/// What a TOML value is, for "expected X, found Y" messages.
fn kind_name(kind: &ValueKind) -> &'static str {
    match kind {
        ValueKind::Nil => "nothing",
        ValueKind::Boolean(_) => "a boolean",
        ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_) => {
            "a whole number"
        }
        ValueKind::Float(_) => "a decimal number",
        ValueKind::String(_) => "a string",
        ValueKind::Table(_) => "a table",
        ValueKind::Array(_) => "a list",
    }
}

/// Strings and whole numbers are taken as text (and booleans, for the keys that
/// are switches); parsing comes later, the same way for every source.
fn file_scalar(key: &str, value: Value) -> Result<String, String> {
    match value.kind {
        ValueKind::String(s) => Ok(s),
        ValueKind::Boolean(b) if BOOLEAN_KEYS.contains(&key) => Ok(b.to_string()),
        ValueKind::I64(n) => Ok(n.to_string()),
        ValueKind::I128(n) => Ok(n.to_string()),
        ValueKind::U64(n) => Ok(n.to_string()),
        ValueKind::U128(n) => Ok(n.to_string()),
        other => Err(format!(
            "expected a single string or number, found {}{}",
            kind_name(&other),
            if matches!(other, ValueKind::Array(_)) {
                format!(" (`{key}` takes one value)")
            } else {
                String::new()
            }
        )),
    }
}

fn file_list(key: &str, value: Value) -> Result<Vec<String>, String> {
    match value.kind {
        ValueKind::String(s) => Ok(vec![s]),
        ValueKind::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item.kind {
                ValueKind::String(s) => Ok(s),
                other => Err(format!(
                    "item {i} of the list is {}, expected a string",
                    kind_name(&other)
                )),
            })
            .collect(),
        other => Err(format!(
            "expected a list of strings like {key} = [\"…\"], found {}",
            kind_name(&other)
        )),
    }
}

fn file_users(
    value: Value,
    origin: &Origin,
    problems: &mut Vec<Problem>,
) -> Result<Vec<RawUser>, String> {
    let items = match value.kind {
        ValueKind::Array(items) => items,
        other => {
            return Err(format!(
                "expected [[users]] tables (name = \"…\", password = \"…\"), found {}",
                kind_name(&other)
            ))
        }
    };
    let mut users = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match item.kind {
            ValueKind::String(s) => users.push(RawUser::Text(s)),
            ValueKind::Table(table) => users.push(user_table(i, table, origin, problems)),
            other => problems.push(Problem::invalid(
                format!("users[{i}]"),
                format_args!(
                    "expected a table with name and password or key, found {}",
                    kind_name(&other)
                ),
                origin,
            )),
        }
    }
    Ok(users)
}

fn user_table(
    i: usize,
    table: Map<String, Value>,
    origin: &Origin,
    problems: &mut Vec<Problem>,
) -> RawUser {
    const FIELDS: [&str; 3] = ["name", "password", "key"];
    let mut fields: Vec<(String, Value)> = table.into_iter().collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    let (mut name, mut password, mut key) = (None, None, None);
    for (field, value) in fields {
        let slot = match field.as_str() {
            "name" => &mut name,
            "password" => &mut password,
            "key" => &mut key,
            _ => {
                let path = format!("users[{i}].{field}");
                problems.push(Problem::unknown_key(path, &FIELDS, origin));
                continue;
            }
        };
        match value.kind {
            ValueKind::String(s) => *slot = Some(s),
            other => problems.push(Problem::invalid(
                format!("users[{i}].{field}"),
                format_args!("expected a string, found {}", kind_name(&other)),
                origin,
            )),
        }
    }
    RawUser::Table {
        name,
        password,
        key,
    }
}

/// Comma-separated; items trimmed, empty items dropped, so `TURND_LISTEN=`
/// sets an empty list (which validation then rejects for `listen`).
fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn from_env(env: &HashMap<String, String>, settings: &mut Settings, problems: &mut Vec<Problem>) {
    let known: Vec<String> = KEYS.iter().map(|k| env_var(k.name)).collect();
    let mut vars: Vec<(&String, &String)> = env
        .iter()
        .filter(|(var, _)| {
            var.starts_with(ENV_PREFIX)
                && var.as_str() != CONFIG_ENV
                // A hidden switch for tests, not a config key (see shell::udp).
                && var.as_str() != crate::shell::udp::GSO_ENV
        })
        .collect();
    vars.sort();
    for (var, value) in vars {
        let Some(key) = KEYS.iter().find(|k| env_var(k.name) == *var) else {
            // A typo such as TURND_RELAY_PORT would otherwise be silently ignored.
            problems.push(Problem::unknown_env(var, &known));
            continue;
        };
        let raw = match key.shape {
            Shape::Scalar => Raw::Scalar(value.clone()),
            Shape::List => Raw::List(split_list(value)),
            Shape::Users => Raw::Users(split_list(value).into_iter().map(RawUser::Text).collect()),
        };
        let origin = Origin::Env(var.clone());
        settings.insert(key.name, Setting { raw, origin });
    }
}

fn from_flags(args: &ConfigArgs, settings: &mut Settings) {
    let lists: [(&str, &Vec<String>); 10] = [
        ("listen", &args.listen),
        ("relay_ips", &args.relay_ip),
        ("external_ips", &args.external_ip),
        ("auth_secrets", &args.auth_secret),
        ("allow_peers", &args.allow_peer),
        ("deny_peers", &args.deny_peer),
        ("users", &args.user),
        ("tls_listen", &args.tls_listen),
        ("nat_discovery_listen", &args.nat_discovery_listen),
        ("alternate_servers", &args.alternate_servers),
    ];
    let scalars: [(&str, &Option<String>); 32] = [
        ("relay_ports", &args.relay_ports),
        ("realm", &args.realm),
        ("rest_username_order", &args.rest_username_order),
        ("rest_max_ttl", &args.rest_max_ttl),
        ("workers", &args.workers),
        ("log_level", &args.log_level),
        ("log_format", &args.log_format),
        ("default_lifetime", &args.default_lifetime),
        ("max_lifetime", &args.max_lifetime),
        ("nonce_lifetime", &args.nonce_lifetime),
        ("software", &args.software),
        ("user_quota", &args.user_quota),
        ("total_quota", &args.total_quota),
        ("allocation_bandwidth", &args.allocation_bandwidth),
        ("user_bandwidth", &args.user_bandwidth),
        ("max_connections", &args.max_connections),
        ("amplification", &args.amplification),
        ("unauthenticated_rate", &args.unauthenticated_rate),
        ("binding_rate", &args.binding_rate),
        ("userhash", &args.userhash),
        ("max_permissions", &args.max_permissions),
        ("max_channels", &args.max_channels),
        ("unauthenticated_timeout", &args.unauthenticated_timeout),
        ("max_frame_size", &args.max_frame_size),
        ("udp_recv_buffer", &args.udp_recv_buffer),
        ("udp_send_buffer", &args.udp_send_buffer),
        ("udp_coalesce", &args.udp_coalesce),
        ("tls_cert", &args.tls_cert),
        ("tls_key", &args.tls_key),
        ("metrics_listen", &args.metrics_listen),
        ("drain_timeout", &args.drain_timeout),
        ("admin_token", &args.admin_token),
    ];
    let raws = lists
        .into_iter()
        .filter(|(_, items)| !items.is_empty())
        .map(|(name, items)| {
            let raw = if name == "users" {
                Raw::Users(items.iter().cloned().map(RawUser::Text).collect())
            } else {
                Raw::List(items.clone())
            };
            (name, raw)
        })
        .chain(
            scalars
                .into_iter()
                .filter_map(|(name, value)| Some((name, Raw::Scalar(value.clone()?)))),
        );
    for (name, raw) in raws {
        // Every name above is in KEYS; a test checks the two lists agree.
        let Some(key) = KEYS.iter().find(|k| k.name == name) else {
            continue;
        };
        let origin = Origin::Flag(key.flag);
        settings.insert(key.name, Setting { raw, origin });
    }
}
