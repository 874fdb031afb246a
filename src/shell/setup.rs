//! Turning the shell's options into the core's shared state.

use super::discover;
use super::options::{Access, ShellOptions};
use crate::core::nonce::NonceKey;
use crate::core::own_host::{HostAddrs, OwnHost};
use crate::core::peer_filter::PeerFilter;
use crate::core::ports::PortPool;
use crate::core::{RelayAddr, Shared};
use anyhow::bail;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// The relay addresses: `relay_ips`, or else the listening IPs; each mapped to the address
/// advertised to clients by `external_ips` (`PUBLIC` for every relay IP of its family, or
/// `PUBLIC/PRIVATE` for one).
pub fn relay_addrs(config: &ShellOptions) -> anyhow::Result<Vec<RelayAddr>> {
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
            let exact = config.external_ips.iter().find(|e| e.1 == Some(bind));
            let family = config
                .external_ips
                .iter()
                .find(|e| e.1.is_none() && e.0.is_ipv4() == bind.is_ipv4());
            let advertised = exact.or(family).map_or(bind, |e| e.0);
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

/// The peer filter of `access` refusing the host `host` describes, with the addresses of its
/// interfaces read now (start-up, and again on every SIGHUP: an address added since is own
/// too). Replaced whole on reload.
pub fn peer_filter_for_host(access: &Access, host: &HostAddrs) -> PeerFilter {
    let host = HostAddrs {
        interfaces: discover::interface_addrs(),
        ..host.clone()
    };
    access
        .peer_filter
        .clone()
        .with_own_host(OwnHost::new(&host))
}

/// What the own-host set needs besides the interfaces: every bound listening socket, the relay
/// addresses and the relay port range.
pub fn host_addrs(
    config: &ShellOptions,
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
        relay_ports: config.relay_ports,
        interfaces: Vec::new(),
    }
}

/// The core's shared state; `nat_discovery` holds the RFC 5780 pairs with their bound ports.
pub fn shared_state(
    config: &ShellOptions,
    nat_discovery: Vec<crate::core::nat_discovery::NatPair>,
) -> anyhow::Result<Arc<Shared>> {
    let relays = relay_addrs(config)?;
    let bind_ips: Vec<IpAddr> = relays.iter().map(|r| r.bind).collect();
    let mut core = config.core.clone();
    core.relays = relays;
    core.nat_discovery = nat_discovery;
    Ok(Arc::new(Shared {
        config: core,
        credentials: config.access.credentials.clone().into(),
        nonce_key: NonceKey::new(rand::random()),
        peer_filter: config.access.peer_filter.clone().into(),
        ports: Mutex::new(PortPool::new(
            &bind_ips,
            config.relay_ports.0,
            config.relay_ports.1,
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
