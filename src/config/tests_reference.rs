//! The generated files match the declarations, and what they show is true: every example
//! value loads, every flag's help is its key's doc.

use std::collections::HashMap;
use std::path::Path;

use clap::CommandFactory;

use super::declare::paragraphs;
use super::keys::KEYS;
use super::reference::{example_toml, markdown, REGENERATE};
use super::*;

/// The variable [`REGENERATE`] sets: rewrite the files instead of comparing them.
const UPDATE_VAR: &str = "UPDATE_CONFIG_DOCS";

#[test]
fn generated_files_are_up_to_date() {
    let files = [
        ("docs/configuration.md", markdown()),
        ("config/turnd.toml", example_toml()),
    ];
    let update = std::env::var_os(UPDATE_VAR).is_some();
    let mut stale = Vec::new();
    for (path, want) in files {
        let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        if update {
            std::fs::write(&full, &want).expect("the checkout is writable");
            continue;
        }
        let have = std::fs::read_to_string(&full).unwrap_or_default();
        if have != want {
            let line = have
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| have.lines().count().min(want.lines().count()));
            let shown = want.lines().nth(line).unwrap_or("(end of file)");
            stale.push(format!(
                "{path} differs from src/config/keys.rs from line {}; it should read:\n  {shown}",
                line + 1
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "{}\nRegenerate with:\n    {REGENERATE}",
        stale.join("\n")
    );
}

#[test]
fn every_key_is_in_the_reference_and_the_example() {
    let reference = markdown();
    let example = example_toml();
    for key in KEYS {
        assert!(
            reference.contains(&format!("### `{}`", key.name)),
            "{}",
            key.name
        );
        let set = example
            .lines()
            .any(|l| l.starts_with(&format!("{} = ", key.name)));
        let shown = example
            .lines()
            .any(|l| l.starts_with(&format!("# {} = ", key.name)));
        assert!(set || shown, "{} is not in config/turnd.toml", key.name);
    }
}

/// Each commented-out line of the example, uncommented on its own, is a valid value for its
/// key (rules between keys aside: `tls_listen` alone lacks a certificate).
#[test]
fn every_commented_example_value_parses() {
    let example = example_toml();
    for key in KEYS {
        let Some(line) = example
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# {} = ", key.name)))
        else {
            continue;
        };
        let text = format!("{} = {line}", key.name);
        let mut problems = Vec::new();
        let settings = sources::gather(
            &ConfigArgs::default(),
            &HashMap::new(),
            Some(("turnd.toml", &text)),
            &mut problems,
        );
        assert!(settings.contains_key(key.name), "{text}: {problems:?}");
        build::each_key(&settings, &mut problems);
        assert!(problems.is_empty(), "{text}: {problems:?}");
    }
}

#[test]
fn flag_help_is_the_key_doc() {
    let mut cli = Cli::command();
    let help = cli.render_long_help().to_string();
    for key in KEYS {
        assert!(help.contains(&key.flag()), "{} not in --help", key.flag());
        let summary = paragraphs(key.doc).remove(0);
        // clap drops the full stop of a one-sentence summary; compare the first words.
        let start: String = summary
            .split_whitespace()
            .take(4)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            help.contains(&start),
            "{}: `{start}` not in --help",
            key.name
        );
        assert!(
            help.contains(&format!("[key: {};", key.name)),
            "{}",
            key.name
        );
    }
}

#[test]
fn a_reload_applies_exactly_the_keys_marked_applied() {
    let applied: Vec<&str> = KEYS.iter().filter(|k| k.reload).map(|k| k.name).collect();
    // What `Server::reload` and main.rs's reload replace: credentials (with how REST usernames
    // are read), the peer filter, the log level. A key marked applied must be among them.
    assert_eq!(
        applied,
        [
            "realm",
            "users",
            "auth_secrets",
            "rest_username_order",
            "rest_max_ttl",
            "allow_peers",
            "deny_peers",
            "log_level"
        ]
    );
}
