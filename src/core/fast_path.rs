//! The kernel fast path's state, as the core decides it (docs/xdp.md, "Who writes them").
//!
//! An XDP program can relay an established channel's ChannelData (client → peer) and its
//! peer's datagrams (peer → client) without the sockets, but only what the core would relay
//! itself: the program never decides, it looks entries up. The core therefore says, as
//! [`Output::FastPath`](super::Output::FastPath) values, which channels may be relayed there
//! and until when, and takes each back the moment it may no longer be: channel expired or
//! revoked, permission expired or denied by a reloaded filter, the peer's family deleted or
//! expired, the allocation ended for any reason. Data never refreshes anything (RFC 8656), so
//! the core loses nothing when datagrams bypass it.
//!
//! One rule makes every one of those ends covered: after anything that can change an
//! allocation's channels, permissions or lifetimes (a request on it, a sweep, a family ended,
//! a peer-filter reload) [`Server::sync_fast_path`] recomputes, for each of its channel
//! bindings, the entry it should have — a route and the earliest of the channel's, the
//! permission's and the family's expiry, or none — and emits what differs from what it emitted
//! last (remembered in [`ChannelBinding::installed`]). An allocation that ends emits a removal
//! for each binding still installed. The entry's own expiry is also the program's: it passes
//! up traffic past it even before the removal is carried out.
//!
//! Never installed: allocations under a bandwidth cap (`allocation_bandwidth`,
//! `user_bandwidth`: their buckets are counted per datagram in user space, docs/xdp.md), clients
//! over TCP or TLS (their ChannelData is framed in a stream), RFC 6062 TCP allocations, and
//! everything when the shell has no fast path ([`CoreConfig::fast_path`] false).
//!
//! [`ChannelBinding::installed`]: super::channel::ChannelBinding::installed
//! [`CoreConfig::fast_path`]: super::CoreConfig::fast_path

use super::allocation::{Allocation, AllocationId, State};
use super::channel::Installed;
use super::five_tuple::{FiveTuple, Transport};
use super::own_host::OwnHost;
use super::{Output, Server};
use std::net::SocketAddr;
use std::time::Instant;

/// What identifies a channel's entries in the kernel: the client side (its 5-tuple and the
/// channel number, client → peer) and the relay side (relay address and peer, peer → client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelKey {
    pub id: AllocationId,
    /// The client's 5-tuple: client address and the listen address it sends to (always UDP).
    pub client: FiveTuple,
    pub channel: u16,
    /// The address the allocation's relay socket of the peer's family is bound to.
    pub relay: SocketAddr,
    pub peer: SocketAddr,
}

/// A change to the kernel fast path's entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FastPath {
    /// Relay this channel in the kernel, both directions, until `expires` (insert, or replace
    /// an entry with the same key: a refresh moves `expires`).
    Install {
        key: ChannelKey,
        expires: Instant,
        /// The allocation's DONT-FRAGMENT (RFC 8656 §7.2): the DF bit of what the relay sends.
        dont_fragment: bool,
    },
    /// Relay it in the kernel no more (both directions).
    Remove(ChannelKey),
}

impl Server {
    /// Whether allocation `a` may have kernel entries at all (see the module docs).
    fn fast_path_eligible(&self, a: &Allocation) -> bool {
        self.shared.config.fast_path
            && a.state == State::Active
            && a.five_tuple.transport == Transport::Udp
            && !a.is_tcp()
            && a.bandwidth.is_none()
            && a.user_bandwidth.is_none()
    }

    /// Brings allocation `id`'s kernel entries in line with its state at `now`: emits an
    /// install for each binding whose entry should exist and differs from the last one
    /// emitted, a removal for each that should not exist but was installed.
    pub(super) fn sync_fast_path(&mut self, now: Instant, id: AllocationId) {
        let Some(a) = self.allocations.get(id) else {
            return;
        };
        let eligible = self.fast_path_eligible(a);
        // Nothing was ever installed for an allocation that never was eligible: the common
        // case (no fast path) ends here without touching its bindings.
        if !eligible && a.channels.iter().all(|c| c.installed.is_none()) {
            return;
        }
        let own = self.filter.clone();
        let Some(a) = self.allocations.get_mut(id) else {
            return;
        };
        // Each family's relay address and expiry, while it is held and live.
        let mut relays: [Option<(SocketAddr, Instant)>; 2] = [None; 2];
        for (relay, expires) in a.held_relays() {
            if expires > now {
                relays[usize::from(relay.is_ipv6())] = Some((relay, expires));
            }
        }
        let (client, dont_fragment) = (a.five_tuple, a.dont_fragment);
        let permissions = &a.permissions;
        for c in a.channels.iter_mut() {
            let want = if eligible {
                wanted(c.peer, c.expires, now, &relays, |peer| {
                    permission_expiry(permissions, peer, now, own.own_host())
                })
            } else {
                None
            };
            if want == c.installed {
                continue;
            }
            let key = |relay| ChannelKey {
                id,
                client,
                channel: c.number,
                relay,
                peer: c.peer,
            };
            let out = match (want, c.installed) {
                (Some(w), _) => FastPath::Install {
                    key: key(w.relay),
                    expires: w.expires,
                    dont_fragment,
                },
                (None, Some(old)) => FastPath::Remove(key(old.relay)),
                // Invariant: `want != c.installed`, so both cannot be `None`.
                (None, None) => unreachable!("equal states were skipped"),
            };
            // A route to another relay address (it cannot happen: a family's relay address
            // is fixed for the allocation's life) would leave the old key behind: remove it.
            if let (Some(w), Some(old)) = (want, c.installed) {
                if w.relay != old.relay {
                    self.outputs
                        .push_back(Output::FastPath(FastPath::Remove(key(old.relay))));
                }
            }
            self.outputs.push_back(Output::FastPath(out));
            c.installed = want;
        }
    }

    /// The removals for an allocation that is gone (`free_allocation` took it out of the
    /// table): one per binding still installed.
    pub(super) fn remove_fast_path(&mut self, a: &Allocation) {
        for c in a.channels.iter() {
            if let Some(old) = c.installed {
                self.outputs
                    .push_back(Output::FastPath(FastPath::Remove(ChannelKey {
                        id: a.id,
                        client: a.five_tuple,
                        channel: c.number,
                        relay: old.relay,
                        peer: c.peer,
                    })));
            }
        }
    }

    /// [`Server::sync_fast_path`] for every allocation (a peer-filter reload).
    pub(super) fn sync_fast_path_all(&mut self, now: Instant) {
        if !self.shared.config.fast_path {
            return;
        }
        let ids: Vec<AllocationId> = self.allocations.iter().map(|a| a.id).collect();
        for id in ids {
            self.sync_fast_path(now, id);
        }
    }
}

/// The expiry of the permission that lets data to and from `peer` through at `now`, if any:
/// the same test as the relay path's `allows_peer`.
fn permission_expiry(
    permissions: &super::permission::Permissions,
    peer: SocketAddr,
    now: Instant,
    own: &OwnHost,
) -> Option<Instant> {
    permissions
        .iter()
        .find(|p| {
            p.ip == peer.ip() && p.expires > now && (!p.own_host || own.is_relay_port(peer.port()))
        })
        .map(|p| p.expires)
}

/// The entry a binding should have at `now`: relayed in the kernel only while the channel,
/// its peer's permission and its peer's family are all live, until the first of them ends.
fn wanted(
    peer: SocketAddr,
    channel_expires: Instant,
    now: Instant,
    relays: &[Option<(SocketAddr, Instant)>; 2],
    permission: impl Fn(SocketAddr) -> Option<Instant>,
) -> Option<Installed> {
    if channel_expires <= now {
        return None;
    }
    let (relay, family_expires) = relays[usize::from(peer.is_ipv6())]?;
    let permission_expires = permission(peer)?;
    Some(Installed {
        relay,
        expires: channel_expires.min(permission_expires).min(family_expires),
    })
}
