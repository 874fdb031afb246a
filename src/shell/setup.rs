//! Turning the operator's [`Config`] into the core's shared state.

use super::discover;
use crate::config::Config;
use crate::core::auth::{Credentials, RestPolicy};
use crate::core::nonce::NonceKey;
use crate::core::own_host::{HostAddrs, OwnHost};
use crate::core::peer_filter::PeerFilter;
use crate::core::ports::PortPool;
use crate::core::{CoreConfig, RelayAddr, Shared};
use anyhow::bail;
use std::net::{IpAddr, SocketAddr};
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

/// The peer filter of `config`, without an own-host set (the listeners are not bound yet when
/// the shared state is made); [`peer_filter_for_host`] is the one workers run with.
pub fn peer_filter(config: &Config) -> PeerFilter {
    PeerFilter::new(config.allow_peers.clone(), config.deny_peers.clone())
}

/// The peer filter of `config` refusing the host `host` describes, with the addresses of its
/// interfaces read now (start-up, and again on every SIGHUP: an address added since is own
/// too). Replaced whole on reload.
pub fn peer_filter_for_host(config: &Config, host: &HostAddrs) -> PeerFilter {
    let host = HostAddrs {
        interfaces: discover::interface_addrs(),
        ..host.clone()
    };
    peer_filter(config).with_own_host(OwnHost::new(&host))
}

/// What the own-host set needs besides the interfaces: every bound listening socket, the relay
/// addresses and the relay port range.
pub fn host_addrs(
    config: &Config,
    shared: &Shared,
    listeners: impl IntoIterator<Item = SocketAddr>,
) -> HostAddrs {
    let mut all: Vec<SocketAddr> = listeners.into_iter().collect();
    // RFC 5780's four sockets per pair.
    for p in &shared.config.nat_discovery {
        all.extend(p.addresses());
    }
    all.sort_unstable();
    all.dedup();
    HostAddrs {
        listeners: all,
        relays: shared.config.relays.clone(),
        relay_ports: (config.relay_ports.low, config.relay_ports.high),
        interfaces: Vec::new(),
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
        refuse_amplification: config.amplification == crate::config::Amplification::Refuse,
        userhash: config.userhash,
        max_permissions: config.max_permissions,
        max_channels: config.max_channels,
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
    use super::listen_relay_ips;
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
