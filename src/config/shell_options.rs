//! The shell's options from a loaded [`Config`]: the one place the shell's settings are read,
//! environment included (`TURND_UDP_GSO`), so the shell never imports config.

use super::{nat_discovery_pairs, Amplification, Config, XdpMode};
use crate::core::auth::{Credentials, RestPolicy};
use crate::core::peer_filter::PeerFilter;
use crate::core::CoreConfig;
use crate::shell::{udp, xdp};
use crate::shell::{Access, ShellOptions};
use std::time::Duration;

/// The hidden switch: `TURND_UDP_GSO=off` turns UDP GSO off (tests force the fallback with
/// it, and it helps comparing). Not a config key: `sources` leaves it out of the `TURND_*`
/// check.
pub const GSO_ENV: &str = "TURND_UDP_GSO";

/// The panic policy's test hook: `TURND_TEST_PANIC_WORKER=N` makes worker N panic once it
/// runs, so a test can see the process exit non-zero. Read only in debug builds (the ones
/// tests run): a release binary ignores it. Never reachable from the network.
pub const PANIC_ENV: &str = "TURND_TEST_PANIC_WORKER";

/// The channel-expiry test hook: `TURND_TEST_CHANNEL_LIFETIME=SECS` makes channel bindings
/// last SECS seconds instead of RFC 8656's 10 minutes, so `tests/xdp_relay.rs` can watch a
/// channel expire in the kernel path. Read only in debug builds (the ones tests run): a
/// release binary ignores it and always follows the RFC.
pub const CHANNEL_LIFETIME_ENV: &str = "TURND_TEST_CHANNEL_LIFETIME";

fn channel_lifetime() -> Duration {
    let secs = if cfg!(debug_assertions) {
        std::env::var(CHANNEL_LIFETIME_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&s| s > 0)
    } else {
        None
    };
    secs.map_or(crate::core::channel::CHANNEL_LIFETIME, Duration::from_secs)
}

fn panic_worker() -> Option<usize> {
    if cfg!(debug_assertions) {
        std::env::var(PANIC_ENV).ok()?.parse().ok()
    } else {
        None
    }
}

/// Whether the environment leaves GSO on (the shell also needs the kernel to support it).
fn gso_wanted() -> bool {
    !matches!(
        std::env::var(GSO_ENV).as_deref(),
        Ok("off" | "0" | "false" | "no")
    )
}

/// The shell's options; an error names the key (RFC 5780 pairs are checked at load already,
/// so in practice this does not fail for a loaded config).
pub fn shell_options(c: &Config) -> Result<ShellOptions, String> {
    Ok(ShellOptions {
        workers: c.effective_workers().max(1),
        listen: c.listen.clone(),
        nat_discovery: nat_discovery_pairs(c)
            .map_err(|e| format!("config key `nat_discovery_listen`: {e}"))?,
        tls_listen: c.tls_listen.clone(),
        tls_files: c.tls_cert.clone().zip(c.tls_key.clone()),
        metrics_listen: c.metrics_listen,
        admin_token: c.admin_token.clone(),
        store: c.store.clone(),
        store_files: crate::store::connect::StoreFiles::of(c),
        udp: udp::Options {
            recv_buffer: c.udp_recv_buffer,
            send_buffer: c.udp_send_buffer,
            gso: gso_wanted(),
            coalesce: (c.udp_coalesce > 0).then(|| Duration::from_micros(c.udp_coalesce.into())),
        },
        max_connections: c.max_connections as usize,
        max_connections_per_source: c.max_connections_per_source as usize,
        unauthenticated_timeout: Duration::from_secs(c.unauthenticated_timeout.into()),
        max_frame: c.max_frame_size as usize,
        relay_ips: c.relay_ips.clone(),
        external_ips: c
            .external_ips
            .iter()
            .map(|e| (e.public, e.private))
            .collect(),
        relay_ports: (c.relay_ports.low, c.relay_ports.high),
        core: CoreConfig {
            software: c.software.clone(),
            default_lifetime: Duration::from_secs(c.default_lifetime as u64),
            max_lifetime: Duration::from_secs(c.max_lifetime as u64),
            nonce_lifetime: Duration::from_secs(c.nonce_lifetime as u64),
            relays: Vec::new(),
            user_quota: c.user_quota,
            refuse_amplification: c.amplification == Amplification::Refuse,
            userhash: c.userhash,
            max_permissions: c.max_permissions,
            max_channels: c.max_channels,
            unauthenticated_rate: c.unauthenticated_rate,
            binding_rate: c.binding_rate,
            total_quota: c.total_quota,
            nat_discovery: Vec::new(),
            alternate_servers: c.alternate_servers.clone(),
            allocation_bandwidth: c.allocation_bandwidth.into(),
            user_bandwidth: c.user_bandwidth.into(),
            // Set by the shell once its XDP program is attached.
            fast_path: false,
            channel_lifetime: channel_lifetime(),
        },
        access: access(c),
        xdp: xdp_options(c),
        panic_worker: panic_worker(),
    })
}

/// `xdp` and `xdp_interfaces` as the shell's loader takes them.
fn xdp_options(c: &Config) -> xdp::Options {
    use xdp::Hook::{Generic, Native};
    let (hooks, required) = match c.xdp {
        XdpMode::Off => (Vec::new(), false),
        XdpMode::Auto => (vec![Native, Generic], false),
        XdpMode::Native => (vec![Native], true),
        XdpMode::Generic => (vec![Generic], true),
    };
    xdp::Options {
        hooks,
        required,
        interfaces: c.xdp_interfaces.clone(),
        max_channels: c.xdp_max_channels,
    }
}

/// The realm, static users, REST secrets (and how REST usernames are read:
/// `rest_username_order`, `rest_max_ttl`) and the peer filter: what SIGHUP replaces.
pub fn access(c: &Config) -> Access {
    let credentials = Credentials::new(
        &c.realm,
        c.users.iter().map(|u| (u.name.clone(), u.secret.clone())),
        c.auth_secrets.iter().cloned(),
    )
    .with_rest_policy(RestPolicy {
        order: c.rest_username_order,
        max_ttl: c.rest_max_ttl.into(),
    });
    Access {
        credentials,
        peer_filter: PeerFilter::new(c.allow_peers.clone(), c.deny_peers.clone()),
    }
}
