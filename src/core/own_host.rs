//! The relay's own host, as a peer: every address that reaches this machine.
//!
//! A relay on a host whose address is public (bare metal, a cloud VM with the public IP on its
//! interface, a Kubernetes DaemonSet with `hostNetwork`) must not let a client name that host
//! as a peer: a permission toward its own IP would reach the TURN port itself, the admin
//! listener (`/allocations`, `DELETE /allocations/{id}` through an RFC 6062 TCP relay) and
//! every service the firewall opens to local traffic only (SSH, databases, caches). This is
//! the CVE-2020-26262 class, which the built-in deny list covers for `0.0.0.0`, `::` and
//! loopback but cannot cover for a public address it does not know. [`OwnHost`] knows it.
//!
//! **What is own.** Every address turnd listens on (`listen`, `tls_listen`, RFC 5780's
//! `nat_discovery_listen` sockets, the admin `metrics_listen`), every relay IP, every address
//! it advertises (`external_ips`), the unspecified addresses, and every address of the host's
//! interfaces (found with `getifaddrs` by the shell, at start and on SIGHUP). When any listener
//! binds a wildcard, the loopback interface's whole prefix is own too (Linux answers on all of
//! 127.0.0.0/8, not just 127.0.0.1).
//!
//! **The one exception: relayed addresses.** Two clients of one relay must reach each other's
//! relayed transport addresses — the everyday WebRTC case, where both ends take TURN
//! candidates from the same server. Those live on the relay IPs (bind and advertised), on the
//! relay port range. So a relay IP is open on the relay ports, except any port a listener of
//! turnd holds ([`OwnHost::is_relay_port`]); every other own address is closed on every port.
//!
//! How the peer filter applies this per method, and how an operator reopens an address, is in
//! [`PeerFilter`](super::peer_filter::PeerFilter)'s docs.

use super::peer_filter::Cidr;
use super::RelayAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One address of one of the host's interfaces, as `getifaddrs` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceAddr {
    pub ip: IpAddr,
    /// The interface network's prefix length (from its netmask).
    pub prefix: u8,
    /// On a loopback interface (`IFF_LOOPBACK`).
    pub loopback: bool,
}

/// What the shell knows of the host, for [`OwnHost::new`].
#[derive(Clone, Debug, Default)]
pub struct HostAddrs {
    /// Every bound listening socket (wildcards kept as bound, real ports for port 0): the UDP
    /// and TCP `listen` addresses, `tls_listen`, the RFC 5780 sockets and `metrics_listen`.
    pub listeners: Vec<SocketAddr>,
    /// The relay addresses (bind IP, advertised IP).
    pub relays: Vec<RelayAddr>,
    /// `relay_ports`, inclusive.
    pub relay_ports: (u16, u16),
    /// The host's interface addresses.
    pub interfaces: Vec<InterfaceAddr>,
}

/// The own-host set. Built on the control plane (start, SIGHUP) and read on requests; the relay
/// path only calls [`OwnHost::is_relay_port`], for permissions marked own-host.
///
/// Bound: one entry per address of the host and of the configuration — not driven by clients.
#[derive(Clone, Debug, Default)]
pub struct OwnHost {
    /// Own addresses, sorted and deduplicated (binary search).
    addrs: Vec<IpAddr>,
    /// Own networks: the loopback interface's prefixes, when a listener binds a wildcard.
    nets: Vec<Cidr>,
    /// Relay IPs, bind and advertised, sorted: where the relay ports stay open.
    relay_ips: Vec<IpAddr>,
    /// `relay_ports`, inclusive; `None` in the empty set.
    relay_ports: Option<(u16, u16)>,
    /// Every listening socket, as bound.
    listeners: Vec<SocketAddr>,
    /// Their ports, sorted and deduplicated: closed even inside the relay range.
    listener_ports: Vec<u16>,
    /// (bind IP, advertised IP) of each relay address, for [`OwnHost::is_own_listener`].
    relays: Vec<RelayAddr>,
}

impl OwnHost {
    #[must_use]
    pub fn new(host: &HostAddrs) -> OwnHost {
        let wildcard = host.listeners.iter().any(|l| l.ip().is_unspecified());
        let mut addrs: Vec<IpAddr> = vec![
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ];
        addrs.extend(
            host.listeners
                .iter()
                .map(SocketAddr::ip)
                .filter(|ip| !ip.is_unspecified()),
        );
        addrs.extend(host.relays.iter().flat_map(|r| [r.bind, r.advertised]));
        addrs.extend(host.interfaces.iter().map(|i| i.ip));
        addrs.sort_unstable();
        addrs.dedup();
        let mut nets: Vec<Cidr> = Vec::new();
        if wildcard {
            for i in host.interfaces.iter().filter(|i| i.loopback) {
                if let Some(net) = Cidr::new(i.ip, i.prefix) {
                    if !nets.contains(&net) {
                        nets.push(net);
                    }
                }
            }
        }
        let mut relay_ips: Vec<IpAddr> = host
            .relays
            .iter()
            .flat_map(|r| [r.bind, r.advertised])
            .collect();
        relay_ips.sort_unstable();
        relay_ips.dedup();
        let mut listener_ports: Vec<u16> = host.listeners.iter().map(SocketAddr::port).collect();
        listener_ports.sort_unstable();
        listener_ports.dedup();
        OwnHost {
            addrs,
            nets,
            relay_ips,
            relay_ports: Some(host.relay_ports),
            listeners: host.listeners.clone(),
            listener_ports,
            relays: host.relays.clone(),
        }
    }

    /// Whether the set is empty (a filter built without one, as in most core tests).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty() && self.nets.is_empty()
    }

    /// Whether `ip`, exactly as given, is an address of this host. Embedded IPv4 forms are the
    /// peer filter's business: it asks about each form.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.addrs.binary_search(&ip).is_ok() || self.nets.iter().any(|n| n.contains(ip))
    }

    /// Whether `ip` is a relay IP (bind or advertised), where the relay ports stay open.
    #[must_use]
    pub fn is_relay_ip(&self, ip: IpAddr) -> bool {
        self.relay_ips.binary_search(&ip).is_ok()
    }

    /// Whether `port` of a relay IP may be reached: inside `relay_ports` and held by no
    /// listener of turnd. On the relay path, for own-host permissions only; a range test and
    /// a search of a handful of listener ports.
    #[inline]
    #[must_use]
    pub fn is_relay_port(&self, port: u16) -> bool {
        self.relay_ports
            .is_some_and(|(low, high)| low <= port && port <= high)
            && self.listener_ports.binary_search(&port).is_err()
    }

    /// Whether `addr` names one of turnd's own listening sockets: a listener bound to it, a
    /// wildcard listener on its port when its IP is own, or a relay IP's advertised address on
    /// the port of a listener bound to that relay IP (1:1 NAT). ALTERNATE-SERVER uses it so a
    /// server never redirects a client to itself.
    #[must_use]
    pub fn is_own_listener(&self, addr: SocketAddr) -> bool {
        self.listeners.iter().any(|l| {
            l.port() == addr.port()
                && (l.ip() == addr.ip()
                    || (l.ip().is_unspecified() && self.contains(addr.ip()))
                    || self
                        .relays
                        .iter()
                        .any(|r| r.bind == l.ip() && r.advertised == addr.ip()))
        })
    }

    /// The own addresses, for the start-up log.
    pub fn addrs(&self) -> impl Iterator<Item = &IpAddr> {
        self.addrs.iter()
    }

    /// The own networks (loopback prefixes under a wildcard listener), for the start-up log.
    pub fn nets(&self) -> &[Cidr] {
        &self.nets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn iface(s: &str, prefix: u8, loopback: bool) -> InterfaceAddr {
        InterfaceAddr {
            ip: ip(s),
            prefix,
            loopback,
        }
    }

    fn host(listeners: &[&str]) -> HostAddrs {
        HostAddrs {
            listeners: listeners.iter().map(|s| sa(s)).collect(),
            relays: vec![RelayAddr {
                bind: ip("10.0.0.5"),
                advertised: ip("44.0.0.1"),
            }],
            relay_ports: (49152, 65535),
            interfaces: vec![
                iface("127.0.0.1", 8, true),
                iface("::1", 128, true),
                iface("10.0.0.5", 24, false),
                iface("44.0.0.9", 24, false),
                iface("fe80::1", 64, false),
            ],
        }
    }

    #[test]
    fn every_listed_and_interface_address_is_own() {
        let own = OwnHost::new(&host(&["10.0.0.5:3478", "127.0.0.1:9641", "[::1]:5349"]));
        for a in [
            "0.0.0.0",
            "::",
            "10.0.0.5",
            "44.0.0.1",
            "44.0.0.9",
            "127.0.0.1",
            "::1",
            "fe80::1",
        ] {
            assert!(own.contains(ip(a)), "{a}");
        }
        // No wildcard listener: the rest of 127/8 is not turnd's (the built-in list and the
        // operator's allow_peers decide it).
        for a in ["127.0.0.2", "10.0.0.6", "44.0.0.2", "::2", "8.8.8.8"] {
            assert!(!own.contains(ip(a)), "{a}");
        }
        assert!(!own.is_empty());
        assert!(OwnHost::default().is_empty());
        assert!(!OwnHost::default().contains(ip("0.0.0.0")));
    }

    #[test]
    fn wildcard_listener_owns_the_whole_loopback_prefix() {
        let own = OwnHost::new(&host(&["0.0.0.0:3478"]));
        for a in ["127.0.0.1", "127.0.0.2", "127.255.255.254", "::1"] {
            assert!(own.contains(ip(a)), "{a}");
        }
        assert!(!own.contains(ip("::2")));
        assert!(!own.contains(ip("128.0.0.1")));
        assert_eq!(own.nets().len(), 2);
    }

    #[test]
    fn relay_ports_are_open_on_relay_ips_except_listener_ports() {
        let own = OwnHost::new(&host(&["10.0.0.5:3478", "10.0.0.5:50000"]));
        assert!(own.is_relay_ip(ip("10.0.0.5")) && own.is_relay_ip(ip("44.0.0.1")));
        assert!(!own.is_relay_ip(ip("44.0.0.9")) && !own.is_relay_ip(ip("127.0.0.1")));
        assert!(own.is_relay_port(49152) && own.is_relay_port(65535));
        assert!(!own.is_relay_port(49151) && !own.is_relay_port(3478));
        // A listener inside the range is carved out of it.
        assert!(!own.is_relay_port(50000));
        assert!(!OwnHost::default().is_relay_port(50001));
    }

    #[test]
    fn own_listeners_recognised_through_wildcards_and_nat() {
        let own = OwnHost::new(&host(&["0.0.0.0:3478", "10.0.0.5:3479"]));
        // The wildcard answers on every own address.
        for a in [
            "10.0.0.5:3478",
            "44.0.0.9:3478",
            "127.0.0.3:3478",
            "44.0.0.1:3478",
        ] {
            assert!(own.is_own_listener(sa(a)), "{a}");
        }
        // A specific listener, and its advertised address (1:1 NAT).
        assert!(own.is_own_listener(sa("10.0.0.5:3479")));
        assert!(own.is_own_listener(sa("44.0.0.1:3479")));
        // Other ports and other hosts are not this server.
        for a in [
            "10.0.0.5:3480",
            "44.0.0.2:3478",
            "44.0.0.9:3479",
            "8.8.8.8:3478",
        ] {
            assert!(!own.is_own_listener(sa(a)), "{a}");
        }
    }
}
