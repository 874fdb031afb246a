//! Turning the operator's [`Config`] into the core's shared state.

use super::discover;
use crate::config::Config;
use crate::core::auth::{Credentials, RestPolicy};
use crate::core::channel::MAX_CHANNELS;
use crate::core::nonce::NonceKey;
use crate::core::peer_filter::PeerFilter;
use crate::core::permission::MAX_PERMISSIONS;
use crate::core::ports::PortPool;
use crate::core::{CoreConfig, RelayAddr, Shared};
use anyhow::bail;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The relay addresses: `relay_ips`, or else the listening IPs; each mapped to the address
/// advertised to clients by `external_ips` (`PUBLIC` for every relay IP of its family, or
/// `PUBLIC/PRIVATE` for one).
pub fn relay_addrs(config: &Config) -> anyhow::Result<Vec<RelayAddr>> {
    let mut ips: Vec<IpAddr> = config.relay_ips.clone();
    if ips.is_empty() {
        ips = listen_relay_ips(&config.listen, discover::relay_ip_for_wildcard)?;
    }
    if ips.is_empty() {
        bail!("config key `relay_ips`: no relay address (set relay_ips or listen)");
    }
    Ok(ips
        .into_iter()
        .map(|bind| {
            let exact = config.external_ips.iter().find(|e| e.private == Some(bind));
            let family = config
                .external_ips
                .iter()
                .find(|e| e.private.is_none() && e.public.is_ipv4() == bind.is_ipv4());
            let advertised = exact.or(family).map_or(bind, |e| e.public);
            RelayAddr { bind, advertised }
        })
        .collect())
}

/// The relay IPs when `relay_ips` is not set: each listening IP, and for a wildcard listener
/// the address of the default route's interface (`discover(v6)`) — of the listener's family,
/// which must exist, and of the other family when the host has one, so that dual allocations
/// (ADDITIONAL-ADDRESS-FAMILY) and REQUESTED-ADDRESS-FAMILY work without configuration on a
/// dual-stack host.
fn listen_relay_ips(
    listen: &[std::net::SocketAddr],
    discover: impl Fn(bool) -> Option<IpAddr>,
) -> anyhow::Result<Vec<IpAddr>> {
    let mut ips = Vec::new();
    for l in listen {
        let mut found = Vec::new();
        if l.ip().is_unspecified() {
            // A wildcard cannot be handed to clients: use the default route's address.
            match discover(l.is_ipv6()) {
                Some(ip) => found.push(ip),
                None => bail!(
                    "config key `relay_ips`: listening on {l} but no address of the default route's \
                     interface was found to relay on; set relay_ips (--relay-ip IP)"
                ),
            }
            found.extend(discover(!l.is_ipv6()));
        } else {
            found.push(l.ip());
        }
        for ip in found {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    Ok(ips)
}

/// The realm, static users, REST secrets and the way REST usernames are read
/// (`rest_username_order`, `rest_max_ttl`) of `config` (replaced whole on reload).
pub fn credentials(config: &Config) -> Credentials {
    Credentials::new(
        &config.realm,
        config
            .users
            .iter()
            .map(|u| (u.name.clone(), u.secret.clone())),
        config.auth_secrets.iter().cloned(),
    )
    .with_rest_policy(RestPolicy {
        order: config.rest_username_order,
        max_ttl: config.rest_max_ttl.into(),
    })
}

/// The peer filter of `config` (replaced whole on reload).
pub fn peer_filter(config: &Config) -> PeerFilter {
    PeerFilter::new(config.allow_peers.clone(), config.deny_peers.clone())
}

/// A per-allocation limit as the core gets it: the operator's, with 0 (no limit of their own)
/// meaning the built-in ceiling, so every allocation's lists have a bound.
fn per_allocation(configured: u32, ceiling: u32) -> u32 {
    match configured {
        0 => ceiling,
        n => n.min(ceiling),
    }
}

/// The core's shared state; `nat_discovery` holds the RFC 5780 pairs with their bound ports.
pub fn shared_state(
    config: &Config,
    nat_discovery: Vec<crate::core::nat_discovery::NatPair>,
) -> anyhow::Result<Arc<Shared>> {
    let relays = relay_addrs(config)?;
    let bind_ips: Vec<IpAddr> = relays.iter().map(|r| r.bind).collect();
    let credentials = credentials(config);
    let core = CoreConfig {
        software: config.software.clone(),
        default_lifetime: Duration::from_secs(config.default_lifetime as u64),
        max_lifetime: Duration::from_secs(config.max_lifetime as u64),
        nonce_lifetime: Duration::from_secs(config.nonce_lifetime as u64),
        relays,
        user_quota: config.user_quota,
        refuse_amplification: config.refuse_amplification,
        userhash: config.userhash,
        max_permissions: per_allocation(config.max_permissions, MAX_PERMISSIONS),
        max_channels: per_allocation(config.max_channels, MAX_CHANNELS),
        unauthenticated_rate: config.unauthenticated_rate,
        binding_rate: config.binding_rate,
        total_quota: config.total_quota,
        nat_discovery,
        alternate_servers: config.alternate_servers.clone(),
        allocation_bandwidth: config.allocation_bandwidth.into(),
        user_bandwidth: config.user_bandwidth.into(),
    };
    Ok(Arc::new(Shared {
        config: core,
        credentials: credentials.into(),
        nonce_key: NonceKey::new(rand::random()),
        peer_filter: peer_filter(config).into(),
        ports: Mutex::new(PortPool::new(
            &bind_ips,
            config.relay_ports.low,
            config.relay_ports.high,
        )),
        reservations: Default::default(),
        tcp_connections: Default::default(),
        quotas: Default::default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::{listen_relay_ips, per_allocation};
    use crate::core::channel::MAX_CHANNELS;
    use crate::core::permission::MAX_PERMISSIONS;

    #[test]
    fn per_allocation_limits_always_have_a_ceiling() {
        assert_eq!(per_allocation(0, MAX_PERMISSIONS), 4096);
        assert_eq!(per_allocation(0, MAX_CHANNELS), 4096);
        assert_eq!(per_allocation(256, MAX_PERMISSIONS), 256);
        assert_eq!(per_allocation(u32::MAX, MAX_CHANNELS), 4096);
    }
    use std::net::IpAddr;

    fn discover(v4: Option<&str>, v6: Option<&str>) -> impl Fn(bool) -> Option<IpAddr> {
        let (v4, v6) = (
            v4.map(|s| s.parse().unwrap()),
            v6.map(|s| s.parse().unwrap()),
        );
        move |want_v6| if want_v6 { v6 } else { v4 }
    }

    #[test]
    fn wildcard_listeners_relay_on_both_families_when_the_host_has_them() {
        let any4 = ["0.0.0.0:3478".parse().unwrap()];
        let any6 = ["[::]:3478".parse().unwrap()];
        let both = discover(Some("192.0.2.2"), Some("2001:db8::2"));
        let ips = |v: &[&str]| -> Vec<IpAddr> { v.iter().map(|s| s.parse().unwrap()).collect() };
        assert_eq!(
            listen_relay_ips(&any4, &both).unwrap(),
            ips(&["192.0.2.2", "2001:db8::2"])
        );
        assert_eq!(
            listen_relay_ips(&any6, &both).unwrap(),
            ips(&["2001:db8::2", "192.0.2.2"])
        );
        // The other family is optional; the listener's own is not.
        let v4_only = discover(Some("192.0.2.2"), None);
        assert_eq!(
            listen_relay_ips(&any4, &v4_only).unwrap(),
            ips(&["192.0.2.2"])
        );
        assert!(listen_relay_ips(&any6, &v4_only).is_err());
        // A specific listening IP is its own relay IP, nothing discovered.
        let lo = [
            "127.0.0.1:3478".parse().unwrap(),
            "[::1]:3478".parse().unwrap(),
        ];
        assert_eq!(
            listen_relay_ips(&lo, &both).unwrap(),
            ips(&["127.0.0.1", "::1"])
        );
    }
}
