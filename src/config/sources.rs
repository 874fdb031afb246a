//! Gathering raw settings from the three sources — file, `TURND_*` variables,
//! flags — and keeping, per key, the one with the highest precedence
//! (flags > env > file). Nothing is parsed into its final type here; that is
//! [`super::build`]'s job, so every source goes through the same checks.
//!
//! A later source *replaces* a list, it never appends to it: `--listen X`
//! means "listen on X only", whatever the file said.

use std::collections::HashMap;

use config::{Map, Value, ValueKind};

use super::declare::{Key, Shape, ENV_PREFIX};
use super::error::{Origin, Problem};
use super::keys::KEYS;
use super::ConfigArgs;

/// The variable naming the config file; read by clap for `--config`, and by
/// [`super::load_from`] from its env map when `--config` is absent.
pub(crate) const CONFIG_ENV: &str = "TURND_CONFIG";

fn key_names() -> Vec<&'static str> {
    KEYS.iter().map(|k| k.name).collect()
}

fn find_key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
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
        let Some(key) = find_key(&name) else {
            problems.push(Problem::unknown_key(name, &key_names(), &origin));
            continue;
        };
        let raw = match key.shape {
            Shape::One => file_scalar(key.name, value, false).map(Raw::Scalar),
            Shape::Switch => file_scalar(key.name, value, true).map(Raw::Scalar),
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
fn file_scalar(key: &str, value: Value, switch: bool) -> Result<String, String> {
    match value.kind {
        ValueKind::String(s) => Ok(s),
        ValueKind::Boolean(b) if switch => Ok(b.to_string()),
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
    let known: Vec<String> = KEYS.iter().map(Key::env_var).collect();
    let mut vars: Vec<(&String, &String)> = env
        .iter()
        .filter(|(var, _)| {
            var.starts_with(ENV_PREFIX)
                && var.as_str() != CONFIG_ENV
                // A hidden switch for tests, not a config key (`shell_options`).
                && var.as_str() != super::GSO_ENV
                && var.as_str() != super::PANIC_ENV
                && var.as_str() != super::CHANNEL_LIFETIME_ENV
                // The store's password: read by `crate::store`, never a config value.
                && var.as_str() != super::STORE_PASSWORD_ENV
        })
        .collect();
    vars.sort();
    for (var, value) in vars {
        let Some(key) = KEYS.iter().find(|k| k.env_var() == *var) else {
            // A typo such as TURND_RELAY_PORT would otherwise be silently ignored.
            problems.push(Problem::unknown_env(var, &known));
            continue;
        };
        let raw = match key.shape {
            Shape::One | Shape::Switch => Raw::Scalar(value.clone()),
            Shape::List => Raw::List(split_list(value)),
            Shape::Users => Raw::Users(split_list(value).into_iter().map(RawUser::Text).collect()),
        };
        let origin = Origin::Env(var.clone());
        settings.insert(key.name, Setting { raw, origin });
    }
}

fn from_flags(args: &ConfigArgs, settings: &mut Settings) {
    for key in KEYS {
        if let Some(raw) = (key.flag_value)(args) {
            let origin = Origin::Flag(key.flag());
            settings.insert(key.name, Setting { raw, origin });
        }
    }
}
