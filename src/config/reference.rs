//! The two files written from the key declarations (`keys.rs`): the reference,
//! `docs/configuration.md`, and the laptop demo, `config/turnd.toml`. A test
//! (`tests_reference`) fails when either file on disk differs from what is
//! generated here, and rewrites both when run with [`REGENERATE`]'s variable.

use std::fmt::Write;

use super::declare::{paragraphs, Key, Shape};
use super::keys::{INTRO, KEYS, SECTIONS};
use super::Config;

/// The command that rewrites both generated files.
pub(crate) const REGENERATE: &str = "UPDATE_CONFIG_DOCS=1 cargo test --lib config::";

/// The keys `config/turnd.toml` sets for the laptop demo: (key, TOML value, why); every other
/// key is shown commented out.
const DEMO: [(&str, &str, &str); 5] = [
    (
        "listen",
        r#"["127.0.0.1:3478"]"#,
        "This demo keeps to loopback, so nothing outside the laptop can reach it.",
    ),
    (
        "relay_ips",
        r#"["127.0.0.1"]"#,
        "The demo relays on loopback too.",
    ),
    ("realm", r#""turnd.local""#, ""),
    (
        "users",
        "[\n  { name = \"demo\", password = \"demo-password\" },\n  \
         # { name = \"alice\", key = \"9e8e6291efc51ba131cc7622b2281887\" },\n]",
        "The demo user is for trying turnd out: remove it before going live. alice, commented \
         out, has the key of the password alice-password.",
    ),
    (
        "allow_peers",
        r#"["127.0.0.0/8"]"#,
        "127.0.0.0/8 is here ONLY for the laptop demo (client, relay and peer all on one \
         machine; `turnd probe` relays between two allocations' relayed addresses, which needs \
         loopback allowed but not 127.0.0.1 by name). Remove it in production.",
    ),
];

/// The top of `config/turnd.toml`. Its two commands are what a newcomer types first.
const EXAMPLE_HEADER: &str = "\
# turnd example configuration.
#
# This file runs as-is on a laptop:   turnd --config config/turnd.toml
# Check a config without starting:    turnd check-config --config FILE
#   (prints the effective configuration, secrets redacted, or every problem
#   found, each naming its key)
#
# Every key can also be set by an environment variable TURND_<KEY> (lists
# comma-separated, e.g. TURND_LISTEN=127.0.0.1:3478,[::1]:3478) or by a flag
# (--listen, --relay-ip, --user, ...; see turnd --help). Precedence, lowest
# first: built-in defaults < this file < environment < flags. A variable or
# flag replaces a list from this file; it does not add to it.
#
# Unknown keys are an error, not ignored, so a typo cannot silently leave a
# setting at its default.
#
# The keys set below are the demo's; the others are commented out at their
# default, or at an example with the default after it. docs/configuration.md
# has the same text with each key's flag and variable.
";

/// Width of the comment text in `config/turnd.toml` and of the prose in the reference.
const TOML_WIDTH: usize = 78;
const MARKDOWN_WIDTH: usize = 100;

/// `docs/configuration.md`.
pub(crate) fn markdown() -> String {
    let defaults = Config::default();
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "<!-- Generated from src/config/keys.rs: edit the declarations there and run\n     \
         {REGENERATE}\n     to rewrite this file and config/turnd.toml. -->\n"
    );
    let _ = writeln!(w, "# Configuration reference\n");
    for paragraph in INTRO.split("\n\n") {
        let _ = writeln!(w, "{}\n", markdown_wrap(paragraph));
    }
    let _ = writeln!(w, "| key | default | on SIGHUP | what it sets |");
    let _ = writeln!(w, "|---|---|---|---|");
    for key in KEYS {
        let _ = writeln!(
            w,
            "| [`{0}`](#{0}) | {1} | {2} | {3} |",
            key.name,
            cell(&shown_default(key, &defaults)),
            if key.reload { "applied" } else { "restart" },
            cell(&paragraphs(key.doc)[0]),
        );
    }
    for section in SECTIONS {
        let _ = writeln!(w, "\n## {}\n", section.title);
        for paragraph in paragraphs(section.doc) {
            let _ = writeln!(w, "{}\n", markdown_wrap(&paragraph));
        }
        for key in KEYS.iter().filter(|k| k.section == section.title) {
            let _ = writeln!(w, "### `{}`\n", key.name);
            for paragraph in paragraphs(key.doc) {
                let _ = writeln!(w, "{}\n", markdown_wrap(&paragraph));
            }
            let _ = write!(w, "{}", facts(key, &defaults));
        }
    }
    // One trailing newline, not a blank line.
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

/// The list under each key in the reference.
fn facts(key: &Key, defaults: &Config) -> String {
    let value = key.value;
    let (kind, flag, var) = match key.shape {
        Shape::One | Shape::Switch => (format!("`{value}`"), "", ""),
        Shape::List => (
            format!("list of `{value}`"),
            ", repeatable",
            ", comma-separated",
        ),
        Shape::Users => (
            format!("list of users: tables in the file, `{value}` elsewhere"),
            ", repeatable",
            ", comma-separated",
        ),
    };
    let mut out = String::new();
    let _ = writeln!(out, "- Type: {kind}");
    let _ = writeln!(out, "- Default: {}", shown_default(key, defaults));
    if !key.example.is_empty() {
        let _ = writeln!(out, "- Example: `{} = {}`", key.name, key.example);
    }
    let _ = writeln!(out, "- Flag: `{} {value}`{flag}", key.flag());
    let _ = writeln!(out, "- Variable: `{}`{var}", key.env_var());
    let sighup = if key.reload {
        "applied"
    } else {
        "not applied; a new value takes effect at the next start"
    };
    let _ = writeln!(out, "- SIGHUP: {sighup}\n");
    out
}

/// The default as the reference shows it: as TOML in code, or the declaration's words.
fn shown_default(key: &Key, defaults: &Config) -> String {
    if !key.shown_default.is_empty() {
        return key.shown_default.to_string();
    }
    match (key.render)(defaults) {
        Some(v) => format!("`{v}`"),
        None => "not set".to_string(),
    }
}

/// Text for a table cell: no line breaks, no column separators.
fn cell(text: &str) -> String {
    text.replace('\n', " ").replace('|', "\\|")
}

/// `config/turnd.toml`: the demo's keys set, every other key commented out.
pub(crate) fn example_toml() -> String {
    let defaults = Config::default();
    let mut out = String::from(EXAMPLE_HEADER);
    let w = &mut out;
    for section in SECTIONS {
        let rule = "=".repeat(TOML_WIDTH.saturating_sub(section.title.len() + 4));
        let _ = writeln!(w, "\n# {} {rule}", section.title);
        let intro: Vec<String> = paragraphs(section.doc).iter().map(|p| comment(p)).collect();
        let _ = write!(w, "{}", intro.join("#\n"));
        for key in KEYS.iter().filter(|k| k.section == section.title) {
            let demo = DEMO.iter().find(|(name, _, _)| *name == key.name);
            let mut text = paragraphs(key.doc).join(" ");
            if let Some((_, _, why)) = demo.filter(|(_, _, why)| !why.is_empty()) {
                text = format!("{text} {why}");
            }
            let _ = write!(w, "\n{}", comment(&text));
            let default = (key.render)(&defaults);
            match demo {
                Some((_, value, _)) => {
                    let _ = writeln!(w, "{} = {value}", key.name);
                }
                None if !key.example.is_empty() => {
                    let default = match key.shown_default {
                        "" => default.unwrap_or_else(|| "not set".to_string()),
                        shown => shown.to_string(),
                    };
                    let example = key.example;
                    let _ = writeln!(w, "# {} = {example}  # default: {default}", key.name);
                }
                None => {
                    let default = default.unwrap_or_default();
                    let _ = writeln!(w, "# {} = {default}", key.name);
                }
            }
        }
    }
    out
}

/// `text` as `# ` comment lines of at most [`TOML_WIDTH`] characters of text.
fn comment(text: &str) -> String {
    let mut out = String::new();
    for line in wrap(text, TOML_WIDTH, |_| true) {
        let _ = writeln!(out, "# {line}");
    }
    out
}

/// `text` wrapped for Markdown: a line never starts with a word that would make it a list item,
/// a heading or a quote.
fn markdown_wrap(text: &str) -> String {
    let starts_block = |word: &str| {
        matches!(word, "-" | "+" | "*" | ">")
            || word.starts_with('#')
            || word
                .strip_suffix('.')
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    };
    wrap(text, MARKDOWN_WIDTH, |word| !starts_block(word)).join("\n")
}

/// Greedy word wrap; a word may begin a line only if `may_start` says so.
fn wrap(text: &str, width: usize, may_start: impl Fn(&str) -> bool) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let fits = line.chars().count() + 1 + word.chars().count() <= width;
        if line.is_empty() || fits || !may_start(word) {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        } else {
            lines.push(std::mem::take(&mut line));
            line.push_str(word);
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}
