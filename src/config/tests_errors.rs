//! Every way a configuration can be refused, and that the message names the
//! key (and where the bad value came from).

use std::collections::HashMap;

use super::tests::{load_with, TempFile};
use super::*;

/// Loads and expects failure; returns the message and the keys named.
fn fails(file: Option<&str>, vars: &[(&str, &str)], argv: &[&str]) -> (String, Vec<String>) {
    match load_with(file, vars, argv) {
        Ok(c) => panic!("expected an error, loaded {c:?}"),
        Err(e) => (e.to_string(), e.keys().map(String::from).collect()),
    }
}

/// The single problem's message, after checking it names `key`.
fn fails_on(key: &str, file: Option<&str>, vars: &[(&str, &str)], argv: &[&str]) -> String {
    let (msg, keys) = fails(file, vars, argv);
    assert_eq!(keys, [key], "{msg}");
    assert!(msg.contains(&format!("`{key}`")), "{msg}");
    msg
}

#[test]
fn bad_listen_address() {
    let msg = fails_on("listen", Some("listen = [\"127.0.0.1\"]"), &[], &[]);
    assert!(msg.contains("`127.0.0.1` is not a socket address"), "{msg}");
    assert!(msg.contains("[from file test.toml]"), "{msg}");
    let msg = fails_on("listen", None, &[], &["--listen", "localhost:3478"]);
    assert!(msg.contains("[from flag --listen]"), "{msg}");
    let msg = fails_on("listen", None, &[("TURND_LISTEN", "1.2.3.4:5,nope")], &[]);
    assert!(
        msg.contains("`nope`") && msg.contains("[from env TURND_LISTEN]"),
        "{msg}"
    );
}

#[test]
fn empty_and_duplicate_listen() {
    let msg = fails_on("listen", Some("listen = []"), &[], &[]);
    assert!(msg.contains("at least one"), "{msg}");
    let msg = fails_on(
        "listen",
        None,
        &[("TURND_LISTEN", "1.2.3.4:5,1.2.3.4:5")],
        &[],
    );
    assert!(msg.contains("twice"), "{msg}");
}

#[test]
fn bad_relay_ports() {
    let msg = fails_on("relay_ports", None, &[], &["--relay-ports", "70000-80000"]);
    assert!(
        msg.starts_with(
            "config key `relay_ports`: `70000-80000` is not a port range LOW-HIGH (number too large)"
        ),
        "{msg}"
    );
    for bad in ["abc", "1000-", "-5", "0-10", "1000 2000"] {
        fails_on(
            "relay_ports",
            Some(&format!("relay_ports = \"{bad}\"")),
            &[],
            &[],
        );
    }
    let msg = fails_on("relay_ports", Some("relay_ports = [1, 2]"), &[], &[]);
    assert!(msg.contains("found a list"), "{msg}");
}

#[test]
fn relay_ports_low_above_high() {
    let msg = fails_on(
        "relay_ports",
        None,
        &[("TURND_RELAY_PORTS", "60000-50000")],
        &[],
    );
    assert!(
        msg.contains("LOW 60000 is greater than HIGH 50000"),
        "{msg}"
    );
}

#[test]
fn bad_relay_ip() {
    fails_on("relay_ips", Some("relay_ips = [\"300.1.1.1\"]"), &[], &[]);
    let msg = fails_on("relay_ips", None, &[], &["--relay-ip", "0.0.0.0"]);
    assert!(msg.contains("cannot be a relay IP"), "{msg}");
}

#[test]
fn bad_external_ips() {
    fails_on(
        "external_ips",
        None,
        &[],
        &["--external-ip", "1.2.3.4/fd00::1"],
    );
    fails_on("external_ips", None, &[], &["--external-ip", "example.com"]);
    let two_bare = ["--external-ip", "1.2.3.4", "--external-ip", "5.6.7.8"];
    fails_on("external_ips", None, &[], &two_bare);
    let unmapped = [
        "--relay-ip",
        "10.0.0.1",
        "--external-ip",
        "1.2.3.4/10.0.0.9",
    ];
    let msg = fails_on("external_ips", None, &[], &unmapped);
    assert!(msg.contains("not one of relay_ips"), "{msg}");
}

#[test]
fn bad_cidr() {
    let msg = fails_on(
        "allow_peers",
        Some("allow_peers = [\"10.0.0.0/33\"]"),
        &[],
        &[],
    );
    assert!(msg.contains("`10.0.0.0/33` is not an IP network"), "{msg}");
    fails_on(
        "deny_peers",
        None,
        &[("TURND_DENY_PEERS", "10.0.0.0/8,bogus")],
        &[],
    );
    fails_on("deny_peers", None, &[], &["--deny-peer", "10.0.0.0/x"]);
}

#[test]
fn user_without_password_or_key() {
    let msg = fails_on("users[0]", Some("[[users]]\nname = \"bob\""), &[], &[]);
    assert!(
        msg.contains("user `bob` has neither `password` nor `key`"),
        "{msg}"
    );
}

#[test]
fn user_with_both_password_and_key() {
    let file =
        "[[users]]\nname = \"bob\"\npassword = \"x\"\nkey = \"00112233445566778899aabbccddeeff\"";
    let msg = fails_on("users[0]", Some(file), &[], &[]);
    assert!(msg.contains("both `password` and `key`"), "{msg}");
}

#[test]
fn user_with_bad_hex_key() {
    for key in [
        "0011",
        "zz112233445566778899aabbccddeeff",
        "00112233445566778899aabbccddeeff00",
    ] {
        let file = format!("[[users]]\nname = \"bob\"\nkey = \"{key}\"");
        let msg = fails_on("users[0].key", Some(&file), &[], &[]);
        assert!(msg.contains("not 32 hex digits"), "{msg}");
        assert!(!msg.contains(key), "the key text must not be echoed: {msg}");
    }
}

#[test]
fn user_problems_in_text_form_and_tables() {
    let msg = fails_on(
        "users[1]",
        None,
        &[("TURND_USERS", "a:b,secretwithoutcolon")],
        &[],
    );
    assert!(!msg.contains("secretwithoutcolon"), "{msg}");
    fails_on("users[0].name", None, &[], &["--user", ":pw"]);
    fails_on("users[0].password", None, &[], &["--user", "a:"]);
    fails_on(
        "users[0].name",
        Some("[[users]]\npassword = \"x\""),
        &[],
        &[],
    );
    fails_on("users", None, &[], &["--user", "a:b", "--user", "a:c"]);
    let msg = fails_on(
        "users[0].pasword",
        Some("[[users]]\nname = \"a\"\npassword = \"x\"\npasword = \"y\""),
        &[],
        &[],
    );
    assert!(msg.contains("did you mean `password`?"), "{msg}");
}

#[test]
fn default_lifetime_above_max_lifetime() {
    let msg = fails_on("default_lifetime", None, &[], &["--max-lifetime", "300"]);
    assert!(
        msg.contains("600 s is longer than max_lifetime (300 s, from flag --max-lifetime)"),
        "{msg}"
    );
    fails_on(
        "default_lifetime",
        Some("default_lifetime = 4000"),
        &[],
        &[],
    );
}

#[test]
fn bad_numbers() {
    fails_on("max_lifetime", Some("max_lifetime = 0"), &[], &[]);
    fails_on("nonce_lifetime", Some("nonce_lifetime = -5"), &[], &[]);
    fails_on(
        "nonce_lifetime",
        None,
        &[("TURND_NONCE_LIFETIME", "ten")],
        &[],
    );
    fails_on(
        "default_lifetime",
        None,
        &[],
        &["--default-lifetime", "99999999999"],
    );
    fails_on("workers", Some("workers = -1"), &[], &[]);
    fails_on("workers", Some("workers = 1.5"), &[], &[]);
    fails_on("workers", None, &[], &["--workers", "100000"]);
}

#[test]
fn unknown_key_in_file() {
    let msg = fails_on("relay_port", Some("relay_port = \"1-2\""), &[], &[]);
    assert!(
        msg.starts_with("config key `relay_port` is not known (did you mean `relay_ports`?)"),
        "{msg}"
    );
    let msg = fails_on("totally_new", Some("totally_new = 1"), &[], &[]);
    assert!(!msg.contains("did you mean"), "{msg}");
    fails_on("logging", Some("[logging]\nlevel = \"info\""), &[], &[]);
}

#[test]
fn unknown_turnd_env_variable() {
    let (msg, _) = fails(None, &[("TURND_RELAY_PORT", "1-2")], &[]);
    assert!(
        msg.contains("`TURND_RELAY_PORT`") && msg.contains("TURND_RELAY_PORTS"),
        "{msg}"
    );
}

#[test]
fn bad_log_level() {
    for bad in ["verbose", "", "turnd=loud", "info,,"] {
        let msg = fails_on("log_level", None, &[], &["--log-level", bad]);
        assert!(msg.contains("log level"), "{msg}");
    }
    for good in [
        "TRACE",
        "Warn",
        "off",
        "turnd=debug,info",
        "turnd::shell=trace",
        "h[s{a=1}]",
    ] {
        let c = load_with(None, &[], &["--log-level", good]).unwrap();
        assert_eq!(c.log_level, good);
    }
}

#[test]
fn bad_realm_and_software() {
    fails_on("realm", None, &[], &["--realm", ""]);
    fails_on("realm", None, &[("TURND_REALM", "a\"b")], &[]);
    let long = "x".repeat(128);
    fails_on("realm", None, &[], &["--realm", &long]);
    fails_on("software", None, &[], &["--software", &long]);
    fails_on("auth_secrets", Some("auth_secrets = [\"\"]"), &[], &[]);
}

#[test]
fn wrong_toml_types() {
    let msg = fails_on("listen", Some("listen = 5"), &[], &[]);
    assert!(msg.contains("found a whole number"), "{msg}");
    fails_on("listen", Some("listen = [\"1.2.3.4:5\", 6]"), &[], &[]);
    fails_on("users", Some("users = \"a:b\""), &[], &[]);
    fails_on("users[0]", Some("users = [5]"), &[], &[]);
    fails_on("realm", Some("realm = true"), &[], &[]);
}

#[test]
fn all_problems_are_reported_at_once() {
    let file = "listen = [\"x\"]\nrelay_ports = \"9-1\"\nrelay_prots = 1";
    let (msg, keys) = fails(Some(file), &[], &["--workers", "many"]);
    assert_eq!(
        keys,
        ["relay_prots", "listen", "relay_ports", "workers"],
        "{msg}"
    );
    assert!(msg.starts_with("4 problems in the configuration:"), "{msg}");
}

#[test]
fn missing_file_names_the_file() {
    let args = ConfigArgs {
        config: Some("/nonexistent/turnd.toml".into()),
        ..ConfigArgs::default()
    };
    let err = load_from(&args, &HashMap::new()).unwrap_err();
    let msg = err.to_string();
    assert_eq!(msg, "config file `/nonexistent/turnd.toml`: not found");
}

#[test]
fn toml_syntax_error_names_file_and_line() {
    let file = TempFile::new("realm = \"ok\"\nlisten = [\"127.0.0.1:3478\"\nworkers = 1\n");
    let err = load_from(&file.args(), &HashMap::new()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("config file `{}`", file.0.display())),
        "{msg}"
    );
    assert!(msg.contains("line 3"), "{msg}");
    assert_eq!(err.keys().count(), 0);
}

#[test]
fn bad_connection_limits() {
    let msg = fails_on("max_frame_size", None, &[], &["--max-frame-size", "100"]);
    assert!(msg.contains("from 512 to 65552"), "{msg}");
    fails_on(
        "max_frame_size",
        None,
        &[("TURND_MAX_FRAME_SIZE", "70000")],
        &[],
    );
    let msg = fails_on(
        "unauthenticated_timeout",
        Some("unauthenticated_timeout = 0"),
        &[],
        &[],
    );
    assert!(msg.contains("lowest is 1 s"), "{msg}");
    fails_on("max_connections", None, &[], &["--max-connections=-1"]);
    fails_on(
        "max_connections_per_source",
        Some("max_connections_per_source = \"many\""),
        &[],
        &[],
    );
}

#[test]
fn tls_listen_needs_cert_and_key() {
    let msg = fails_on(
        "tls_key",
        None,
        &[],
        &["--tls-listen", "127.0.0.1:5349", "--tls-cert", "c.pem"],
    );
    assert!(msg.contains("certificate and its key"), "{msg}");
    fails_on(
        "tls_cert",
        Some("tls_listen = [\"127.0.0.1:5349\"]\ntls_key = \"k.pem\""),
        &[],
        &[],
    );
    fails_on("tls_listen", None, &[("TURND_TLS_LISTEN", "5349")], &[]);
}

#[test]
fn nat_discovery_listen_needs_a_specific_listen_address_to_pair_with() {
    // The default listen address is a wildcard: RESPONSE-ORIGIN could not name it.
    let msg = fails_on(
        "nat_discovery_listen",
        None,
        &[],
        &["--nat-discovery-listen", "127.0.0.2:3479"],
    );
    assert!(msg.contains("wildcard"), "{msg}");
    for (alt, why) in [
        ("127.0.0.1:3479", "IP other than"),
        ("127.0.0.2:3478", "port other than"),
        ("[::1]:3479", "no `listen` address of its family"),
    ] {
        let msg = fails_on(
            "nat_discovery_listen",
            None,
            &[("TURND_NAT_DISCOVERY_LISTEN", alt)],
            &["--listen", "127.0.0.1:3478"],
        );
        assert!(msg.contains(why), "{alt}: {msg}");
    }
    let msg = fails_on(
        "nat_discovery_listen",
        Some("listen = [\"127.0.0.1:3478\"]\nnat_discovery_listen = [\"127.0.0.2:1\", \"127.0.0.3:2\"]"),
        &[],
        &[],
    );
    assert!(msg.contains("one alternate address per family"), "{msg}");
    // Port 0 is picked at start-up, and a good pair loads.
    let c = load_with(
        None,
        &[],
        &[
            "--listen",
            "127.0.0.1:0",
            "--nat-discovery-listen",
            "127.0.0.2:0",
        ],
    )
    .unwrap();
    assert_eq!(
        nat_discovery_pairs(&c),
        Ok(vec![(0, "127.0.0.2:0".parse().unwrap())])
    );
}

#[test]
fn alternate_servers_must_be_reachable() {
    for bad in ["0.0.0.0:3478", "192.0.2.7:0"] {
        let msg = fails_on("alternate_servers", None, &[], &["--alternate-server", bad]);
        assert!(msg.contains("real IP and port"), "{bad}: {msg}");
    }
    let c = load_with(
        None,
        &[(
            "TURND_ALTERNATE_SERVERS",
            "192.0.2.7:3478,[2001:db8::7]:3478",
        )],
        &[],
    )
    .unwrap();
    assert_eq!(c.alternate_servers.len(), 2);
}

#[test]
fn bad_rest_username_keys_name_the_key() {
    let msg = fails_on(
        "rest_username_order",
        Some("rest_username_order = \"expiry_first\""),
        &[],
        &[],
    );
    assert!(
        msg.contains("expiry-first") && msg.contains("user-first"),
        "{msg}"
    );
    fails_on(
        "rest_username_order",
        None,
        &[("TURND_REST_USERNAME_ORDER", "both")],
        &[],
    );
    let msg = fails_on("rest_max_ttl", None, &[], &["--rest-max-ttl", "7d"]);
    assert!(msg.contains("0 (no cap)"), "{msg}");
    fails_on("rest_max_ttl", Some("rest_max_ttl = -1"), &[], &[]);
    fails_on(
        "rest_max_ttl",
        None,
        &[("TURND_REST_MAX_TTL", "4294967296")],
        &[],
    );
}

#[test]
fn rates_and_switches() {
    let c = load_with(None, &[], &["--unauthenticated-rate", "5"]).unwrap();
    assert_eq!(
        c.unauthenticated_rate,
        Rate {
            per_second: 5,
            burst: 10
        }
    );
    let c = load_with(
        Some("binding_rate = \"7 / 9\"\nuserhash = true\nmax_channels = 3"),
        &[("TURND_UNAUTHENTICATED_RATE", "0")],
        &[],
    )
    .unwrap();
    assert_eq!(
        c.binding_rate,
        Rate {
            per_second: 7,
            burst: 9
        }
    );
    assert!(c.unauthenticated_rate.is_unlimited() && c.userhash);
    assert_eq!((c.max_permissions, c.max_channels), (256, 3));
    let msg = fails_on("binding_rate", None, &[], &["--binding-rate", "fast"]);
    assert!(msg.contains("RATE/BURST"), "{msg}");
    fails_on(
        "unauthenticated_rate",
        Some("unauthenticated_rate = \"5/0\""),
        &[],
        &[],
    );
    fails_on("userhash", None, &[], &["--userhash", "maybe"]);
    // Only switches take TOML booleans.
    fails_on("max_channels", Some("max_channels = true"), &[], &[]);
    // Every allocation's lists have a ceiling: 4096 (0 means it).
    let msg = fails_on("max_permissions", None, &[], &["--max-permissions", "4097"]);
    assert!(msg.contains("0 = 4096"), "{msg}");
    fails_on("max_channels", Some("max_channels = 100000"), &[], &[]);
    let c = load_with(
        None,
        &[],
        &["--max-permissions", "4096", "--max-channels", "0"],
    )
    .unwrap();
    assert_eq!((c.max_permissions, c.max_channels), (4096, 0));
}

#[test]
fn store_url_needs_a_redis_scheme_and_never_repeats_its_password() {
    let msg = fails_on(
        "store",
        None,
        &[],
        &["--store", "http://:hunter2@127.0.0.1:6379"],
    );
    assert!(msg.contains("expected redis://"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    let msg = fails_on(
        "store",
        None,
        &[("TURND_STORE", "redis://:hunter2@[::1")],
        &[],
    );
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[test]
fn xdp_settings() {
    use crate::config::XdpMode;
    let c = load_with(
        Some("xdp = \"auto\"\nxdp_interfaces = [\"eth0\", \"eth1\"]"),
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(c.xdp, XdpMode::Auto);
    assert_eq!(c.xdp_interfaces, ["eth0", "eth1"]);
    assert_eq!(c.xdp_max_channels, 65536);
    let msg = fails_on("xdp", None, &[], &["--xdp", "fast"]);
    assert!(msg.contains("off, auto, native or generic"), "{msg}");
    for bad in ["", "a/b", "eth 0", "sixteen-chars-xx"] {
        let msg = fails_on("xdp_interfaces", None, &[], &["--xdp-interface", bad]);
        assert!(msg.contains("interface name"), "{bad:?}: {msg}");
    }
    for bad in ["0", "1048577", "many"] {
        let msg = fails_on("xdp_max_channels", None, &[], &["--xdp-max-channels", bad]);
        assert!(msg.contains("1 to 1048576"), "{bad}: {msg}");
    }
}

#[test]
fn store_tls_files_need_rediss_and_a_client_certificate_its_key() {
    let msg = fails_on(
        "store_ca_file",
        None,
        &[],
        &[
            "--store",
            "redis://127.0.0.1/0",
            "--store-ca-file",
            "ca.pem",
        ],
    );
    assert!(msg.contains("rediss://"), "{msg}");
    let msg = fails_on(
        "store_key_file",
        None,
        &[],
        &[
            "--store",
            "rediss://127.0.0.1/0",
            "--store-cert-file",
            "c.pem",
        ],
    );
    assert!(msg.contains("store_cert_file is set"), "{msg}");
    let msg = fails_on(
        "store_cert_file",
        None,
        &[("TURND_STORE_KEY_FILE", "k.pem")],
        &[],
    );
    assert!(msg.contains("store_key_file is set"), "{msg}");
    let c = load_with(
        None,
        &[],
        &[
            "--store",
            "rediss://127.0.0.1/0",
            "--store-ca-file",
            "/etc/ca.pem",
            "--store-cert-file",
            "c.pem",
            "--store-key-file",
            "k.pem",
        ],
    )
    .unwrap();
    assert_eq!(
        c.store_ca_file.as_deref(),
        Some(std::path::Path::new("/etc/ca.pem"))
    );
    // Without `store` the files wait for a command's `--store rediss://…`.
    assert!(load_with(None, &[], &["--store-ca-file", "ca.pem"]).is_ok());
}
