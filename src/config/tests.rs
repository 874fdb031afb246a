//! Loading, layering and printing. Validation errors are in `tests_errors`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Parser;

use crate::core::auth::UserSecret;

use super::*;

/// The example shipped with the crate, at the path it has in the repository.
pub(super) const EXAMPLE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/turnd.toml");
const EXAMPLE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config/turnd.toml"));

/// A config file in the temp dir, removed when dropped.
pub(super) struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(text: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("turnd-config-test-{}-{n}.toml", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).expect("temp dir is writable");
        TempFile(path)
    }

    pub fn args(&self) -> ConfigArgs {
        ConfigArgs {
            config: Some(self.0.clone()),
            ..ConfigArgs::default()
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub(super) fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Loads `file` text with `env` and flags given as a command line after `turnd`.
pub(super) fn load_with(
    file: Option<&str>,
    vars: &[(&str, &str)],
    argv: &[&str],
) -> Result<Config, ConfigError> {
    let cli = Cli::try_parse_from(std::iter::once("turnd").chain(argv.iter().copied()))
        .expect("test command line parses");
    let args = cli.config_args();
    load_text(&args, &env(vars), file.map(|text| ("test.toml", text)))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn strings<T: std::fmt::Display>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

#[test]
fn defaults_with_nothing_configured() {
    let c = load_from(&ConfigArgs::default(), &HashMap::new()).unwrap();
    assert_eq!(c.listen, vec![addr("0.0.0.0:3478")]);
    assert!(c.relay_ips.is_empty());
    assert_eq!(
        c.relay_ports,
        PortRange {
            low: 49152,
            high: 65535
        }
    );
    assert!(c.external_ips.is_empty());
    assert_eq!(c.realm, "turnd");
    assert!(c.users.is_empty() && c.auth_secrets.is_empty());
    assert!(c.allow_peers.is_empty() && c.deny_peers.is_empty());
    assert_eq!(c.workers, 0);
    assert!(c.effective_workers() >= 1);
    assert_eq!(c.log_level, "info");
    assert_eq!(
        (c.default_lifetime, c.max_lifetime, c.nonce_lifetime),
        (600, 3600, 600)
    );
    let software = format!("turnd/{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(c.software.as_deref(), Some(software.as_str()));
    assert_eq!(
        (
            c.max_connections,
            c.unauthenticated_timeout,
            c.max_frame_size
        ),
        (10_000, 10, 65_552)
    );
    assert_eq!(c.max_connections_per_source, 1_000);
}

#[test]
fn effective_workers_uses_the_number_when_set() {
    let c = Config {
        workers: 3,
        ..Config::default()
    };
    assert_eq!(c.effective_workers(), 3);
}

const FILE: &str = r#"
listen = ["10.1.1.1:3478", "[::1]:3479"]
relay_ips = ["10.1.1.1"]
relay_ports = "50000-50100"
external_ips = ["198.51.100.7/10.1.1.1", "2001:db8::7"]
realm = "example.org"
auth_secrets = ["s1", "s2"]
allow_peers = ["10.2.0.0/16"]
deny_peers = ["192.0.2.0/24", "::1"]
workers = 4
log_level = "turnd=debug,warn"
default_lifetime = 300
max_lifetime = 1200
nonce_lifetime = 60
software = ""

[[users]]
name = "alice"
password = "pw:with:colons"

[[users]]
name = "bob"
key = "9E8E6291EFC51BA131CC7622B2281887"
"#;

#[test]
fn file_only() {
    let file = TempFile::new(FILE);
    let c = load_from(&file.args(), &HashMap::new()).unwrap();
    assert_eq!(c.listen, vec![addr("10.1.1.1:3478"), addr("[::1]:3479")]);
    assert_eq!(c.relay_ips, vec![ip("10.1.1.1")]);
    assert_eq!(
        c.relay_ports,
        PortRange {
            low: 50000,
            high: 50100
        }
    );
    assert_eq!(
        strings(&c.external_ips),
        ["198.51.100.7/10.1.1.1", "2001:db8::7"]
    );
    assert_eq!(c.realm, "example.org");
    assert_eq!(c.auth_secrets, ["s1", "s2"]);
    assert_eq!(strings(&c.allow_peers), ["10.2.0.0/16"]);
    assert_eq!(strings(&c.deny_peers), ["192.0.2.0/24", "::1/128"]);
    assert_eq!(c.workers, 4);
    assert_eq!(c.effective_workers(), 4);
    assert_eq!(c.log_level, "turnd=debug,warn");
    assert_eq!(
        (c.default_lifetime, c.max_lifetime, c.nonce_lifetime),
        (300, 1200, 60)
    );
    assert_eq!(c.software, None, "empty software means: send no SOFTWARE");
    assert_eq!(c.users.len(), 2);
    assert_eq!(c.users[0], User::with_password("alice", "pw:with:colons"));
    let key = UserSecret::parse_key_hex("9e8e6291efc51ba131cc7622b2281887").unwrap();
    assert_eq!(c.users[1], User::with_key("bob", key));
}

#[test]
fn config_file_from_turnd_config_variable() {
    let file = TempFile::new("realm = \"from-file\"");
    let path = file.0.display().to_string();
    let c = load_from(&ConfigArgs::default(), &env(&[("TURND_CONFIG", &path)])).unwrap();
    assert_eq!(c.realm, "from-file");
}

#[test]
fn env_overrides_file() {
    let vars = [
        ("TURND_REALM", "env-realm"),
        ("TURND_RELAY_PORTS", "40000-40010"),
        ("TURND_WORKERS", "2"),
        ("TURND_SOFTWARE", "custom/1"),
        ("PATH", "/usr/bin"),
    ];
    let c = load_with(Some(FILE), &vars, &[]).unwrap();
    assert_eq!(c.realm, "env-realm");
    assert_eq!(
        c.relay_ports,
        PortRange {
            low: 40000,
            high: 40010
        }
    );
    assert_eq!(c.workers, 2);
    assert_eq!(c.software.as_deref(), Some("custom/1"));
    // Keys the environment does not set keep the file's values.
    assert_eq!(c.max_lifetime, 1200);
    assert_eq!(c.users.len(), 2);
}

#[test]
fn flag_overrides_env_and_file() {
    let vars = [("TURND_REALM", "env-realm"), ("TURND_MAX_LIFETIME", "900")];
    let argv = [
        "--realm",
        "flag-realm",
        "--max-lifetime",
        "2000",
        "--default-lifetime",
        "1000",
        "--nonce-lifetime",
        "30",
        "--software",
        "",
        "--log-level",
        "DEBUG",
    ];
    let c = load_with(Some(FILE), &vars, &argv).unwrap();
    assert_eq!(c.realm, "flag-realm");
    assert_eq!(c.max_lifetime, 2000);
    assert_eq!(c.default_lifetime, 1000);
    assert_eq!(c.nonce_lifetime, 30);
    assert_eq!(c.software, None);
    assert_eq!(c.log_level, "DEBUG");
}

#[test]
fn lists_are_replaced_not_merged() {
    let vars = [("TURND_LISTEN", "127.0.0.1:1000")];
    let c = load_with(Some(FILE), &vars, &[]).unwrap();
    assert_eq!(c.listen, vec![addr("127.0.0.1:1000")]);
    let c = load_with(Some(FILE), &vars, &["--listen", "127.0.0.1:2000"]).unwrap();
    assert_eq!(c.listen, vec![addr("127.0.0.1:2000")]);
    let c = load_with(Some(FILE), &[], &["--user", "carol:pw"]).unwrap();
    assert_eq!(c.users, vec![User::with_password("carol", "pw")]);
}

#[test]
fn repeatable_flags() {
    let argv = [
        "--listen",
        "127.0.0.1:3478",
        "--listen",
        "[::1]:3478",
        "--relay-ip",
        "127.0.0.1",
        "--relay-ip",
        "::1",
        "--external-ip",
        "203.0.113.1/127.0.0.1",
        "--external-ip",
        "2001:db8::1",
        "--user",
        "a:b",
        "--user",
        "c:d:e",
        "--auth-secret",
        "s1",
        "--auth-secret",
        "s2",
        "--allow-peer",
        "127.0.0.0/8",
        "--allow-peer",
        "::1",
        "--deny-peer",
        "10.0.0.0/8",
        "--deny-peer",
        "172.16.0.0/12,192.168.0.0/16",
        "--workers",
        "3",
        "--relay-ports",
        "5000-5009",
    ];
    let c = load_with(None, &[], &argv).unwrap();
    assert_eq!(c.listen, vec![addr("127.0.0.1:3478"), addr("[::1]:3478")]);
    assert_eq!(c.relay_ips, vec![ip("127.0.0.1"), ip("::1")]);
    assert_eq!(
        strings(&c.external_ips),
        ["203.0.113.1/127.0.0.1", "2001:db8::1"]
    );
    assert_eq!(
        c.users,
        vec![
            User::with_password("a", "b"),
            User::with_password("c", "d:e")
        ]
    );
    assert_eq!(c.auth_secrets, ["s1", "s2"]);
    assert_eq!(strings(&c.allow_peers), ["127.0.0.0/8", "::1/128"]);
    assert_eq!(
        strings(&c.deny_peers),
        ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
    );
    assert_eq!(c.workers, 3);
    assert_eq!(c.relay_ports.len(), 10);
}

#[test]
fn comma_lists_in_env() {
    let vars = [
        ("TURND_LISTEN", "127.0.0.1:3478,[::1]:3478"),
        ("TURND_RELAY_IPS", "127.0.0.1, ::1"),
        ("TURND_EXTERNAL_IPS", "203.0.113.1"),
        ("TURND_USERS", "alice:pw1,bob:pw2"),
        ("TURND_AUTH_SECRETS", "s1,s2"),
        ("TURND_ALLOW_PEERS", "127.0.0.0/8,::1/128"),
        ("TURND_DENY_PEERS", "10.0.0.0/8,"),
    ];
    let c = load_with(None, &vars, &[]).unwrap();
    assert_eq!(c.listen, vec![addr("127.0.0.1:3478"), addr("[::1]:3478")]);
    assert_eq!(c.relay_ips, vec![ip("127.0.0.1"), ip("::1")]);
    assert_eq!(strings(&c.external_ips), ["203.0.113.1"]);
    let users = vec![
        User::with_password("alice", "pw1"),
        User::with_password("bob", "pw2"),
    ];
    assert_eq!(c.users, users);
    assert_eq!(c.auth_secrets, ["s1", "s2"]);
    assert_eq!(strings(&c.allow_peers), ["127.0.0.0/8", "::1/128"]);
    assert_eq!(strings(&c.deny_peers), ["10.0.0.0/8"]);
}

#[test]
fn empty_env_list_clears_the_file_list() {
    let c = load_with(Some(FILE), &[("TURND_AUTH_SECRETS", "")], &[]).unwrap();
    assert!(c.auth_secrets.is_empty());
}

#[test]
fn file_accepts_a_lone_string_for_a_list_and_text_for_numbers() {
    let text = "listen = \"127.0.0.1:9\"\nworkers = \"2\"\nusers = [\"x:y\"]";
    let c = load_with(Some(text), &[], &[]).unwrap();
    assert_eq!(c.listen, vec![addr("127.0.0.1:9")]);
    assert_eq!(c.workers, 2);
    assert_eq!(c.users, vec![User::with_password("x", "y")]);
}

#[test]
fn rest_username_keys_from_file_env_and_flag() {
    let c = Config::default();
    assert_eq!(c.rest_username_order, RestUsernameOrder::ExpiryFirst);
    assert_eq!(c.rest_max_ttl, 604_800);
    let file = "rest_username_order = \"user-first\"\nrest_max_ttl = 3600";
    let c = load_with(Some(file), &[], &[]).unwrap();
    assert_eq!(
        (c.rest_username_order, c.rest_max_ttl),
        (RestUsernameOrder::UserFirst, 3600)
    );
    let c = load_with(
        Some(file),
        &[
            ("TURND_REST_USERNAME_ORDER", "expiry-first"),
            ("TURND_REST_MAX_TTL", "0"),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(
        (c.rest_username_order, c.rest_max_ttl),
        (RestUsernameOrder::ExpiryFirst, 0)
    );
    let c = load_with(
        Some(file),
        &[("TURND_REST_MAX_TTL", "0")],
        &["--rest-max-ttl", "4294967295"],
    )
    .unwrap();
    assert_eq!(c.rest_max_ttl, u32::MAX);
    // Printed, and read back the same.
    let toml = c.to_toml();
    assert!(
        toml.contains("rest_username_order = \"user-first\""),
        "{toml}"
    );
    let again = load_with(Some(&toml), &[], &[]).unwrap();
    assert_eq!(
        (again.rest_username_order, again.rest_max_ttl),
        (RestUsernameOrder::UserFirst, u32::MAX)
    );
}

#[test]
fn example_file_loads() {
    let c = load_text(
        &ConfigArgs::default(),
        &HashMap::new(),
        Some((EXAMPLE_PATH, EXAMPLE)),
    )
    .unwrap_or_else(|e| panic!("the example config must load: {e}"));
    assert_eq!(c.listen, vec![addr("127.0.0.1:3478")]);
    assert_eq!(c.relay_ips, vec![ip("127.0.0.1")]);
    assert_eq!(c.relay_ports, PortRange::DEFAULT);
    assert_eq!(c.realm, "turnd.local");
    assert_eq!(c.users, vec![User::with_password("demo", "demo-password")]);
    assert!(
        c.auth_secrets.is_empty(),
        "the REST secret is only an example"
    );
    assert_eq!(strings(&c.allow_peers), ["127.0.0.0/8"]);
    assert_eq!(c.workers, 0);
    assert_eq!(c.log_level, "info");
    // The REST keys are documented there, commented out at their defaults.
    for line in [
        "# rest_username_order = \"expiry-first\"",
        "# rest_max_ttl = 604800",
    ] {
        assert!(EXAMPLE.contains(line), "{line}");
        let key = line.trim_start_matches("# ");
        let set = load_with(Some(key), &[], &[]).unwrap();
        assert_eq!(set.to_toml(), Config::default().to_toml(), "{key}");
    }
    // And through the real path, as `turnd --config config/turnd.toml` would.
    let args = ConfigArgs {
        config: Some(EXAMPLE_PATH.into()),
        ..ConfigArgs::default()
    };
    assert_eq!(
        load_from(&args, &HashMap::new()).unwrap().realm,
        "turnd.local"
    );
}

#[test]
fn example_commented_key_is_the_md5_it_claims() {
    // The commented `alice` user must work if uncommented.
    let text = EXAMPLE.replace("# { name = \"alice\"", "{ name = \"alice\"");
    let c = load_text(&ConfigArgs::default(), &HashMap::new(), Some(("x", &text))).unwrap();
    assert_eq!(c.users.len(), 2);
    assert_eq!(c.users[1].name, "alice");
}

#[test]
fn to_toml_redacts_secrets_and_reparses() {
    let c = load_with(Some(FILE), &[], &["--software", "x/1"]).unwrap();
    let text = c.to_toml();
    for secret in ["pw:with:colons", "9E8E6291", "9e8e6291", "\"s1\"", "\"s2\""] {
        assert!(!text.contains(secret), "{secret} leaked into:\n{text}");
    }
    assert!(text.contains("password = \"<redacted>\""), "{text}");
    // Password users survive a round trip (with the redacted password)...
    let only_passwords = Config {
        users: c
            .users
            .iter()
            .filter(|u| u.has_password())
            .cloned()
            .collect(),
        ..c.clone()
    };
    let again = load_with(Some(&only_passwords.to_toml()), &[], &[]).unwrap();
    assert_eq!(again.to_toml(), only_passwords.to_toml());
    assert_eq!(again.listen, c.listen);
    assert_eq!(strings(&again.deny_peers), strings(&c.deny_peers));
    assert_eq!(again.users, vec![User::with_password("alice", REDACTED)]);
    assert_eq!(again.auth_secrets, [REDACTED, REDACTED]);
    // ...while a redacted key is refused rather than loaded as a wrong key.
    let err = load_with(Some(&text), &[], &[]).unwrap_err();
    assert_eq!(err.keys().collect::<Vec<_>>(), ["users[1].key"]);
}

#[test]
fn to_toml_of_defaults_reparses_to_defaults() {
    let text = Config::default().to_toml();
    let again = load_with(Some(&text), &[], &[]).unwrap();
    assert_eq!(again.to_toml(), text);
    assert!(text.contains("software = \"turnd/"), "{text}");
}

#[test]
fn to_toml_escapes_strings() {
    let c = Config {
        realm: "a\"b\\c".into(),
        ..Config::default()
    };
    let text = c.to_toml();
    assert!(text.contains(r#"realm = "a\"b\\c""#), "{text}");
}

#[test]
fn debug_redacts_secrets() {
    let c = load_with(Some(FILE), &[], &[]).unwrap();
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("pw:with:colons") && !shown.contains("\"s1\""),
        "{shown}"
    );
    assert!(
        shown.contains("alice") && shown.contains("10.2.0.0/16"),
        "{shown}"
    );
}

#[test]
fn advertised_ip_prefers_exact_mapping_then_family() {
    let c = Config {
        external_ips: vec![
            "203.0.113.9".parse().unwrap(),
            "198.51.100.1/10.0.0.1".parse().unwrap(),
        ],
        ..Config::default()
    };
    assert_eq!(c.advertised_ip(ip("10.0.0.1")), ip("198.51.100.1"));
    assert_eq!(c.advertised_ip(ip("10.0.0.2")), ip("203.0.113.9"));
    assert_eq!(c.advertised_ip(ip("::1")), ip("::1"));
}

#[test]
fn value_types_round_trip_through_text() {
    for s in ["1-1", "49152-65535", "1024-2048"] {
        assert_eq!(s.parse::<PortRange>().unwrap().to_string(), s);
    }
    assert_eq!(
        "7000".parse::<PortRange>().unwrap(),
        PortRange {
            low: 7000,
            high: 7000
        }
    );
    for s in ["203.0.113.1", "203.0.113.1/10.0.0.1", "2001:db8::1/fd00::1"] {
        assert_eq!(s.parse::<ExternalIp>().unwrap().to_string(), s);
    }
    assert!("203.0.113.1/fd00::1".parse::<ExternalIp>().is_err());
    assert!("0.0.0.0".parse::<ExternalIp>().is_err());
    assert!("nocolon".parse::<User>().is_err());
}

#[test]
fn a_reload_names_the_changed_keys_it_cannot_apply() {
    let running = load_with(Some(FILE), &[], &[]).unwrap();
    // The same sources again: nothing changed.
    let same = load_with(Some(FILE), &[], &[]).unwrap();
    assert!(running.changed_needing_restart(&same).is_empty());
    // Reloadable keys (realm, peers, secrets, users, log level) changed: still nothing to say.
    let reloadable = load_with(
        Some(FILE),
        &[],
        &[
            "--realm",
            "other.example",
            "--deny-peer",
            "10.0.0.0/8",
            "--auth-secret",
            "s9",
            "--log-level",
            "debug",
        ],
    )
    .unwrap();
    assert!(running.changed_needing_restart(&reloadable).is_empty());
    // How REST usernames are read belongs to the credentials: reloaded with them.
    let rest = load_with(
        Some(FILE),
        &[],
        &["--rest-username-order", "user-first", "--rest-max-ttl", "0"],
    )
    .unwrap();
    assert!(running.changed_needing_restart(&rest).is_empty());
    // A quota and the listen address changed: both named, in file order.
    let restart = load_with(
        Some(FILE),
        &[],
        &["--user-quota", "3", "--listen", "127.0.0.1:3479"],
    )
    .unwrap();
    assert_eq!(
        running.changed_needing_restart(&restart),
        ["listen", "user_quota"]
    );
}

#[test]
fn store_is_optional_takes_redis_and_rediss_and_prints_without_its_password() {
    assert_eq!(Config::default().store, None);
    let c = load_with(None, &[("TURND_STORE", "")], &[]).unwrap();
    assert_eq!(c.store, None);
    for url in ["redis://127.0.0.1:6379/0", "rediss://redis.example:6380/2"] {
        let c = load_with(None, &[], &["--store", url]).unwrap();
        assert_eq!(c.store.as_deref(), Some(url));
        assert!(c.to_toml().contains(url), "{}", c.to_toml());
    }
    let c = load_with(
        None,
        &[],
        &["--store", "rediss://turnd:hunter2@10.0.0.5:6380/1"],
    )
    .unwrap();
    let text = c.to_toml();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains("store = \"rediss://<redacted>@10.0.0.5:6380/1\""),
        "{text}"
    );
}

#[test]
fn the_store_password_variable_is_no_key_and_never_printed() {
    // TURND_STORE_PASSWORD is read by the store, not refused as an unknown TURND_* variable.
    let c = load_with(
        None,
        &[("TURND_STORE_PASSWORD", "hunter2")],
        &[
            "--store",
            "redis://10.0.0.5:6379/0",
            "--store-password-file",
            "/run/pw",
        ],
    )
    .unwrap();
    let text = c.to_toml();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("store_password_file = \"/run/pw\""), "{text}");
    assert_eq!(c.store_max_users, 100_000);
}
