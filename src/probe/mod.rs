//! `turnd probe`: connectivity diagnosis from the client's side (issue #7).
//!
//! `turnd probe turn:HOST[:PORT][?transport=udp|tcp] --user U --password P` (or `--secret S`)
//! does what a WebRTC client does with a TURN server — Binding, Allocate, CreatePermission,
//! ChannelBind, and data through two allocations back to itself — over UDP, TCP or TLS, prints
//! each step with its timing, and on failure a diagnosis naming the fix. It exits 0 only if data
//! round-tripped. `--json` prints one JSON object instead.
//!
//! `turnd probe --nat-behaviour stun:HOST[:PORT]` classifies the NAT between this machine and
//! the server (RFC 5780), against a server that supports it.
//!
//! - [`url`]: `turn:`/`turns:`/`stun:` URIs (RFC 7064, RFC 7065).
//! - [`transport`]: the blocking UDP, TCP and TLS connection.
//! - [`client`]: the library's sans-IO TURN client ([`crate::client`]) driven over it.
//! - [`steps`]: the probe's sequence; [`nat`]: the RFC 5780 tests.
//! - [`diagnosis`]: from a failure to advice; [`report`]: text and JSON.

pub mod client;
pub mod diagnosis;
pub mod nat;
pub mod report;
pub mod steps;
pub mod transport;
pub mod url;

use crate::client::Credentials;
use crate::credentials::parse_ttl;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// turn:HOST[:PORT][?transport=udp|tcp], turns:HOST[:PORT], or stun:HOST[:PORT]
    /// (only a Binding; with --nat-behaviour the RFC 5780 tests)
    #[arg(value_name = "URL")]
    pub url: String,
    /// User name (static, or a REST username `<expiry>:<id>`)
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Password of --user
    #[arg(long, value_name = "PASSWORD")]
    pub password: Option<String>,
    /// Mint REST API credentials with this shared secret (as `turnd credentials` does); the
    /// user id is --user, default `probe`
    #[arg(long, value_name = "SECRET", conflicts_with = "password")]
    pub secret: Option<String>,
    /// Lifetime of the credentials minted with --secret
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// Realm to compute the key with, instead of the one the server announces (to check a
    /// client's configured realm)
    #[arg(long, value_name = "REALM")]
    pub realm: Option<String>,
    /// TLS: trust only the CA certificates in this PEM file (a private CA)
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// TLS: do not verify the server's certificate (self-signed test servers only)
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,
    /// Per request: how long to retransmit over UDP (from 500 ms, doubling) or wait over TCP
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_ttl)]
    pub timeout: Duration,
    /// Payloads echoed through the relays with Send/Data and again with ChannelData
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: u32,
    /// RFC 5780 NAT behaviour discovery (mapping and filtering) against a stun: URL
    #[arg(long)]
    pub nat_behaviour: bool,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// Exit status: 0 data round-tripped (or, with --nat-behaviour, the behaviour was found),
/// 1 the probe failed, 2 a usage error.
pub fn main(args: &ProbeArgs) -> u8 {
    let url = match url::parse(&args.url) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("turnd probe: {e}");
            return 2;
        }
    };
    if args.nat_behaviour {
        let r = nat::run(&url, args.timeout);
        print!(
            "{}",
            if args.json {
                r.to_json() + "\n"
            } else {
                r.to_text()
            }
        );
        return if r.success { 0 } else { 1 };
    }
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (creds, minted) = match (&args.user, &args.password, &args.secret) {
        (_, _, Some(secret)) => {
            let c = Credentials::rest(
                secret,
                args.user.as_deref().unwrap_or("probe"),
                args.ttl,
                unix_now,
                // The draft's order, which a server reads unless told otherwise.
                Default::default(),
            );
            (Some(c), true)
        }
        (Some(u), Some(p), None) => (Some(Credentials::new(u, p)), false),
        (Some(_), None, None) => {
            eprintln!("turnd probe: --user needs --password (or use --secret)");
            return 2;
        }
        (None, Some(_), None) => {
            eprintln!("turnd probe: --password needs --user");
            return 2;
        }
        (None, None, None) => (None, false),
    };
    let trust = match (&args.ca, args.insecure) {
        (Some(f), _) => transport::Trust::CaFile(f.clone()),
        (None, true) => transport::Trust::Insecure,
        (None, false) => transport::Trust::System,
    };
    let options = steps::Options {
        url,
        creds: creds.map(|c| Credentials {
            realm: args.realm.clone(),
            ..c
        }),
        minted,
        trust,
        timeout: args.timeout,
        count: args.count,
    };
    let r = steps::run(&options);
    print!(
        "{}",
        if args.json {
            r.to_json() + "\n"
        } else {
            r.to_text()
        }
    );
    if r.success {
        0
    } else {
        1
    }
}
