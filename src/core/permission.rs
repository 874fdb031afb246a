//! Permissions (RFC 8656 §9): which peer IP addresses may exchange data with an allocation.
//!
//! A permission is keyed by IP address only, with no port: a peer's NAT may pick any port.
//! Allocations carry few of them (an ICE agent installs one per remote candidate address),
//! so a small vector scanned linearly beats a hash map on the per-packet lookup.

use std::net::IpAddr;
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
}

#[derive(Clone, Debug, Default)]
pub struct Permissions {
    list: Vec<Permission>,
}

impl Permissions {
    /// Is data to/from `ip` allowed at `now`? Called for every relayed datagram.
    #[inline]
    pub fn allows(&self, ip: IpAddr, now: Instant) -> bool {
        self.list.iter().any(|p| p.ip == ip && p.expires > now)
    }

    /// Installs or refreshes the permission for `ip` (RFC 8656 §9.2).
    pub fn install(&mut self, ip: IpAddr, now: Instant) -> Instant {
        let expires = now + PERMISSION_LIFETIME;
        match self.list.iter_mut().find(|p| p.ip == ip) {
            Some(p) => p.expires = expires,
            None => self.list.push(Permission { ip, expires }),
        }
        expires
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
