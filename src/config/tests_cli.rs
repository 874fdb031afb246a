//! The command line: invocation shapes, and that every key has a flag and a
//! variable that set it the same way.

use std::path::PathBuf;

use clap::{CommandFactory, Parser};

use super::keys::KEYS;
use super::tests::load_with;
use super::*;

#[test]
fn invocation_shapes_parse() {
    let parse = |argv: &[&str]| Cli::try_parse_from(argv).unwrap();
    let cli = parse(&["turnd", "--config", "F"]);
    assert!(!cli.is_check_config());
    assert_eq!(cli.config_args().config, Some(PathBuf::from("F")));

    let cli = parse(&[
        "turnd",
        "--config",
        "F",
        "--listen",
        "127.0.0.1:3478",
        "--user",
        "a:b",
    ]);
    assert_eq!(cli.config_args().listen, ["127.0.0.1:3478"]);
    assert_eq!(cli.config_args().user, ["a:b"]);

    let cli = parse(&["turnd", "check-config", "--config", "F", "--realm", "r"]);
    assert!(cli.is_check_config());
    assert_eq!(cli.config_args().config, Some(PathBuf::from("F")));
    assert_eq!(cli.config_args().realm.as_deref(), Some("r"));

    // Flags before the subcommand count too; flags after it win.
    let cli = parse(&[
        "turnd",
        "-c",
        "F",
        "--realm",
        "a",
        "check-config",
        "--realm",
        "b",
    ]);
    assert_eq!(cli.config_args().config, Some(PathBuf::from("F")));
    assert_eq!(cli.config_args().realm.as_deref(), Some("b"));

    let cli = parse(&["turnd"]);
    assert_eq!(cli.config_args(), ConfigArgs::default());
}

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn every_key_has_a_flag_in_the_cli_and_in_the_sources() {
    let cli = Cli::command();
    for key in KEYS {
        let flag = key.flag();
        let long = flag.trim_start_matches("--");
        assert!(
            cli.get_arguments().any(|a| a.get_long() == Some(long)),
            "no flag {flag} for key {}",
            key.name
        );
        // Each key must be settable by its flag and by its variable.
        let value = match key.name {
            "users" => "u:p",
            "listen" | "tls_listen" => "127.0.0.1:1",
            "metrics_listen" => "127.0.0.1:2",
            "tls_cert" | "tls_key" => "/etc/turnd/x.pem",
            "relay_ips" => "127.0.0.2",
            "nat_discovery_listen" => "127.0.0.2:2",
            "alternate_servers" => "192.0.2.7:3478",
            "relay_ports" => "2000-2001",
            "external_ips" => "203.0.113.5",
            "allow_peers" | "deny_peers" => "10.9.0.0/16",
            "workers" | "user_quota" | "total_quota" | "max_connections" => "7",
            "max_connections_per_source" => "7",
            "allocation_bandwidth" | "user_bandwidth" => "125000",
            "default_lifetime"
            | "max_lifetime"
            | "nonce_lifetime"
            | "unauthenticated_timeout"
            | "drain_timeout" => "700",
            "max_frame_size" => "4096",
            "udp_recv_buffer" | "udp_send_buffer" => "1048576",
            "udp_coalesce" => "300",
            "log_level" => "warn",
            "log_format" => "json",
            "amplification" => "refuse",
            "unauthenticated_rate" | "binding_rate" => "7/9",
            "userhash" => "true",
            "max_permissions" | "max_channels" | "store_max_users" => "7",
            "rest_username_order" => "user-first",
            "rest_max_ttl" => "86400",
            "store" => "redis://127.0.0.1:6379/1",
            "xdp" => "generic",
            "xdp_interfaces" => "eth7",
            "xdp_max_channels" => "1024",
            // A new key needs a valid, non-default sample above.
            _ => "seven",
        };
        // tls_listen alone is refused: it needs a certificate and key.
        let extra: &[&str] = match key.name {
            "tls_listen" => &["--tls-cert", "c.pem", "--tls-key", "k.pem"],
            // RFC 5780 pairs the alternate with a specific listen address.
            "nat_discovery_listen" => &["--listen", "127.0.0.1:1"],
            // Mutual TLS needs both halves.
            "store_cert_file" => &["--store-key-file", "k.pem"],
            "store_key_file" => &["--store-cert-file", "c.pem"],
            _ => &[],
        };
        let args: Vec<&str> = [flag.as_str(), value]
            .iter()
            .chain(extra)
            .copied()
            .collect();
        let sample = |e| panic!("give key {} a valid sample value here: {e}", key.name);
        let from_flag = load_with(None, &[], &args).unwrap_or_else(sample).to_toml();
        let var = key.env_var();
        let from_env = load_with(None, &[(&var, value)], extra)
            .unwrap_or_else(sample)
            .to_toml();
        let default = Config::default().to_toml();
        assert_ne!(from_flag, default, "flag {flag} changed nothing");
        assert_eq!(from_flag, from_env, "flag {flag} and {var} disagree");
    }
}
