//! Permissions (RFC 8656 §9): which peer IP addresses may exchange data with an allocation.
//!
//! A permission is keyed by IP address only, with no port: a peer's NAT may pick any port.
//! Allocations carry few of them (an ICE agent installs one per remote candidate address),
//! so a small vector scanned linearly beats a hash map on the per-packet lookup.
//!
//! One exception needs a port: a permission toward a relay IP of this very host is marked
//! *own-host* when installed (the peer filter said [`PeerVerdict::RelayPortsOnly`]), and data
//! through it may only go to or come from a relay port ([`OwnHost::is_relay_port`]) — another
//! allocation's relayed address, never a service of the host. The flag is set on the control
//! path, so the relay path runs no filter: it reads a bool, and only when it is set tests the
//! port.
//!
//! [`PeerVerdict::RelayPortsOnly`]: super::peer_filter::PeerVerdict::RelayPortsOnly

use super::own_host::OwnHost;
use super::peer_filter::PeerVerdict;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// RFC 8656 §9: "The Permission Lifetime MUST be 300 seconds (= 5 minutes)."
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);

/// The most permissions the shell lets one allocation hold (`max_permissions` of 0 means
/// this): each costs memory and a step of the per-datagram scan, and RFC 8656 sets no bound
/// of its own. An ICE agent installs one per remote candidate address: a handful.
pub const MAX_PERMISSIONS: u32 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    pub ip: IpAddr,
    pub expires: Instant,
    /// `ip` is a relay IP of this host: only its relay ports may be reached.
    pub own_host: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Permissions {
    list: Vec<Permission>,
}

impl Permissions {
    /// Whether `ip` has a live permission at `now`, whatever its ports. The relay path asks
    /// [`Permissions::allows_peer`] instead.
    #[inline]
    pub fn allows(&self, ip: IpAddr, now: Instant) -> bool {
        self.list.iter().any(|p| p.ip == ip && p.expires > now)
    }

    /// Is data to/from `peer` allowed at `now`: a live permission for its IP, and through an
    /// own-host one a relay port? Called for every relayed datagram.
    #[inline]
    pub fn allows_peer(&self, peer: SocketAddr, now: Instant, own: &OwnHost) -> bool {
        let ip = peer.ip();
        self.list.iter().any(|p| {
            p.ip == ip && p.expires > now && (!p.own_host || own.is_relay_port(peer.port()))
        })
    }

    /// Installs or refreshes the permission for `ip` (RFC 8656 §9.2); `own_host` as the peer
    /// filter's verdict says now (a refresh takes the current verdict).
    pub fn install(&mut self, ip: IpAddr, now: Instant, own_host: bool) -> Instant {
        let expires = now + PERMISSION_LIFETIME;
        match self.list.iter_mut().find(|p| p.ip == ip) {
            Some(p) => {
                p.expires = expires;
                p.own_host = own_host;
            }
            None => self.list.push(Permission {
                ip,
                expires,
                own_host,
            }),
        }
        expires
    }

    /// Applies a new peer filter (after a reload): drops the permissions whose IP it denies
    /// and re-marks the others own-host or not. Returns how many were dropped.
    pub fn refilter(&mut self, mut verdict: impl FnMut(IpAddr) -> PeerVerdict) -> usize {
        let before = self.list.len();
        self.list.retain_mut(|p| match verdict(p.ip) {
            PeerVerdict::Denied => false,
            v => {
                p.own_host = v == PeerVerdict::RelayPortsOnly;
                true
            }
        });
        before - self.list.len()
    }

    /// Drops expired permissions; returns the next expiry, if any remain.
    pub fn sweep(&mut self, now: Instant) -> Option<Instant> {
        self.list.retain(|p| p.expires > now);
        self.list.iter().map(|p| p.expires).min()
    }

    /// Keeps only the permissions whose IP satisfies `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(IpAddr) -> bool) {
        self.list.retain(|p| keep(p.ip));
    }

    /// Whether `ip` has an entry (live, or expired and not yet swept): installing it again
    /// takes no new entry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.list.iter().any(|p| p.ip == ip)
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Permission> {
        self.list.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::own_host::HostAddrs;
    use crate::core::RelayAddr;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn own() -> OwnHost {
        OwnHost::new(&HostAddrs {
            listeners: vec![sa("44.0.0.1:3478"), sa("44.0.0.1:50000")],
            relays: vec![RelayAddr {
                bind: "44.0.0.1".parse().unwrap(),
                advertised: "44.0.0.1".parse().unwrap(),
            }],
            relay_ports: (49152, 65535),
            interfaces: Vec::new(),
        })
    }

    #[test]
    fn own_host_permission_passes_relay_ports_only() {
        let t0 = Instant::now();
        let own = own();
        let mut p = Permissions::default();
        p.install(sa("44.0.0.1:0").ip(), t0, true);
        p.install(sa("8.8.8.8:0").ip(), t0, false);
        assert!(p.allows_peer(sa("44.0.0.1:49152"), t0, &own));
        assert!(p.allows_peer(sa("44.0.0.1:65535"), t0, &own));
        for refused in [
            "44.0.0.1:3478",
            "44.0.0.1:50000",
            "44.0.0.1:22",
            "44.0.0.1:49151",
        ] {
            assert!(!p.allows_peer(sa(refused), t0, &own), "{refused}");
        }
        // An ordinary permission: every port.
        assert!(p.allows_peer(sa("8.8.8.8:22"), t0, &own));
        assert!(!p.allows_peer(sa("8.8.4.4:22"), t0, &own));
        // A refresh takes the current verdict.
        p.install(sa("44.0.0.1:0").ip(), t0, false);
        assert!(p.allows_peer(sa("44.0.0.1:22"), t0, &own));
        // Expired: nothing.
        assert!(!p.allows_peer(sa("8.8.8.8:22"), t0 + PERMISSION_LIFETIME, &own));
    }

    #[test]
    fn refilter_drops_denied_and_remarks_the_rest() {
        let t0 = Instant::now();
        let own = own();
        let mut p = Permissions::default();
        for a in ["44.0.0.1:0", "8.8.8.8:0", "1.1.1.1:0"] {
            p.install(sa(a).ip(), t0, false);
        }
        let dropped = p.refilter(|ip| match ip.to_string().as_str() {
            "44.0.0.1" => PeerVerdict::RelayPortsOnly,
            "1.1.1.1" => PeerVerdict::Denied,
            _ => PeerVerdict::Allowed,
        });
        assert_eq!((dropped, p.len()), (1, 2));
        assert!(!p.allows_peer(sa("44.0.0.1:22"), t0, &own));
        assert!(p.allows_peer(sa("44.0.0.1:60000"), t0, &own));
        assert!(p.allows_peer(sa("8.8.8.8:22"), t0, &own));
        assert!(!p.allows_peer(sa("1.1.1.1:22"), t0, &own));
    }
}
