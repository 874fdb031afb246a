//! Allocations (RFC 8656 §2.2, §7): a relayed transport address on the server, owned by the
//! client 5-tuple that asked for it, with the permissions and channel bindings that say
//! which peers may use it.
//!
//! Each worker has its own [`AllocationTable`]; the kernel's `SO_REUSEPORT` hash sends all of
//! a client's datagrams to one worker, so the table is never shared between cores.

use super::auth::SessionKey;
use super::channel::Channels;
use super::counters::Relayed;
use super::five_tuple::FiveTuple;
pub use super::ids::AllocationId;
use super::ids::{ConnectionId, ReservationToken};
use super::permission::Permissions;
use super::tcp_relay::SpliceShare;
use crate::stun::{AddressFamily, ErrorCode, TransactionId};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// What an allocation relays, decided by REQUESTED-TRANSPORT when it is made: the one place
/// that says whether it is a TCP allocation.
#[derive(Clone, Debug)]
pub enum AllocationKind {
    /// UDP (RFC 8656): the relayed address is a UDP socket; data comes as ChannelData or Send
    /// indications and goes as datagrams.
    Udp,
    /// TCP (RFC 6062): the relayed address is a TCP listener; data goes only through peer
    /// connections spliced with client data connections.
    Tcp(TcpAllocation),
}

/// What a TCP allocation (RFC 6062) has besides what every allocation has.
#[derive(Clone, Debug, Default)]
pub struct TcpAllocation {
    /// Its caps and spliced byte counts, shared with its splices (which may run on other
    /// workers).
    pub splice: Arc<SpliceShare>,
    /// The CONNECTION-IDs of its peer connections, at most
    /// [`MAX_PEER_CONNECTIONS`](super::tcp_relay::MAX_PEER_CONNECTIONS). Some may have ended
    /// on another worker already; they are pruned as they are met.
    pub connections: Vec<ConnectionId>,
}

/// Where an allocation is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The relay socket is being opened; the Allocate response waits for it.
    Opening {
        txid: TransactionId,
        /// How many relay ports have been tried so far.
        attempts: u8,
        /// Whether the request carried FINGERPRINT, so the answer does too.
        fingerprint: bool,
        /// What may be tried if this port is taken by another process.
        retry: Retry,
        /// The second relayed address asked for by ADDITIONAL-ADDRESS-FAMILY.
        additional: Additional,
    },
    Active,
}

/// What an Allocate whose relay port turns out to be taken by another process (the shell's
/// bind answers "address in use") may try instead: the port pool only knows turnd's own ports,
/// and the range may be shared with other programs (or other turnd processes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Any other port of the same address.
    Any,
    /// Another even port (EVEN-PORT without the R bit).
    Even,
    /// Another even port whose next port is free too: the reservation moves with it (EVEN-PORT
    /// with the R bit; the token is not out yet, it goes in this Allocate's answer).
    Pair,
    /// None: the port is the one a RESERVATION-TOKEN promised.
    No,
}

/// The second relayed address of a dual allocation while the Allocate is in progress
/// (RFC 8656 §7.2 step 9). It is opened after the first one, so the shell only ever has one
/// `OpenRelay` outstanding per allocation and its answer needs no family to say which it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Additional {
    /// A single-family Allocate.
    None,
    /// A port is taken on `bind`; its socket is opened once the first one is open.
    Waiting { bind: SocketAddr },
    /// The `OpenRelay` for `bind` is out; `attempts` ports tried so far.
    Opening { bind: SocketAddr, attempts: u8 },
    /// The family cannot be had: the success response carries ADDRESS-ERROR-CODE with
    /// `code` (440 not supported, 508 no capacity) and the allocation is single-family.
    Refused {
        family: AddressFamily,
        code: ErrorCode,
    },
}

/// What a dual allocation (RFC 8656 §7.2 step 9) has besides the first relayed address: the
/// second one, and each family's own time-to-expiry. RFC 8656 §8.1 treats the two families as
/// two allocations sharing a 5-tuple: a Refresh with REQUESTED-ADDRESS-FAMILY refreshes or
/// deletes one of them, and deleting one "MUST NOT affect any permissions or channels
/// associated with allocations for the other address family".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dual {
    /// Where the second relay socket is bound (always of the other family than `relay`).
    pub relay: SocketAddr,
    /// The second relayed transport address told to the client.
    pub advertised: SocketAddr,
    /// `[first family, second family]` time-to-expiry; `None` once that family was deleted
    /// or has expired (its port is then back in the pool and its socket closed). The
    /// allocation's own `expires` is the later of the two.
    pub expires: [Option<Instant>; 2],
}

#[derive(Clone, Debug)]
pub struct Allocation {
    pub id: AllocationId,
    pub five_tuple: FiveTuple,
    /// The USERNAME that created it: later requests must be signed by the same user (441).
    pub username: Box<str>,
    /// The account its quota unit is counted under, and its `user_bandwidth` bucket shared:
    /// a static user's name, or a REST username's user id, so one user's credentials of
    /// different expiries share one `user_quota`
    /// ([`crate::core::auth::Credentials::account_of`]). Fixed at creation: the unit is given
    /// back under the name it was taken under, whatever a reload changes.
    pub account: Box<str>,
    pub key: SessionKey,
    /// The address the (first) relay socket is bound to. It stays the allocation's name in
    /// logs, metrics and the admin API even if a dual allocation later loses this family.
    pub relay: SocketAddr,
    /// The relayed transport address told to the client (differs behind NAT/Docker).
    pub advertised: SocketAddr,
    pub created: Instant,
    /// When the whole allocation ends (for a dual allocation, its later family).
    pub expires: Instant,
    /// The second relayed address and per-family lifetimes of a dual allocation.
    pub dual: Option<Dual>,
    pub state: State,
    pub dont_fragment: bool,
    pub permissions: Permissions,
    pub channels: Channels,
    /// Its relayed datagrams (a TCP allocation's spliced bytes are in its [`TcpAllocation`]).
    pub stats: Relayed,
    /// The RESERVATION-TOKEN of the port this allocation's Allocate reserved (EVEN-PORT with
    /// the R bit), until it is redeemed, lapses, or goes with this allocation.
    pub reservation: Option<ReservationToken>,
    /// The `allocation_bandwidth` cap, when one is set.
    pub bandwidth: Option<super::bandwidth::TokenBucket>,
    /// The `user_bandwidth` bucket its user's allocations share, when a cap is set.
    pub user_bandwidth: Option<std::sync::Arc<super::bandwidth::SharedBucket>>,
    /// UDP, or TCP with its peer connections.
    pub kind: AllocationKind,
}

impl Allocation {
    /// Whether `bytes` more may be relayed now under the allocation's and its user's caps
    /// (both directions count). Nothing is taken from either bucket unless both allow it
    /// (the allocation's own is checked on a copy first).
    pub fn within_bandwidth(&mut self, now: Instant, bytes: u64) -> bool {
        let mut own = self.bandwidth;
        if own.as_mut().is_some_and(|b| !b.take(now, bytes)) {
            return false;
        }
        if self
            .user_bandwidth
            .as_ref()
            .is_some_and(|u| !u.take(now, bytes))
        {
            return false;
        }
        self.bandwidth = own;
        true
    }
}

impl Allocation {
    /// Whether it is a TCP allocation (RFC 6062): its relayed address is a TCP listener, and
    /// data reaches its peers only through spliced connections.
    #[inline]
    pub fn is_tcp(&self) -> bool {
        matches!(self.kind, AllocationKind::Tcp(_))
    }

    /// The RFC 6062 part of a TCP allocation; `None` for a UDP one.
    pub fn tcp(&self) -> Option<&TcpAllocation> {
        match &self.kind {
            AllocationKind::Tcp(t) => Some(t),
            AllocationKind::Udp => None,
        }
    }

    pub fn tcp_mut(&mut self) -> Option<&mut TcpAllocation> {
        match &mut self.kind {
            AllocationKind::Tcp(t) => Some(t),
            AllocationKind::Udp => None,
        }
    }

    /// What the allocation relayed: its datagrams, plus for a TCP allocation the bytes its
    /// splices copied (they have no datagrams to count).
    pub fn relayed(&self) -> Relayed {
        let mut s = self.stats;
        if let Some(tcp) = self.tcp() {
            let (to_peer, to_client) = tcp.splice.bytes();
            s.to_peer_bytes += to_peer;
            s.to_client_bytes += to_client;
        }
        s
    }

    /// Which entry of [`Dual::expires`] a family is: 0 the first relayed address, 1 the second.
    fn dual_index(&self, d: &Dual, family: AddressFamily) -> Option<usize> {
        if AddressFamily::of(&self.relay) == family {
            Some(0)
        } else if AddressFamily::of(&d.relay) == family {
            Some(1)
        } else {
            None
        }
    }

    /// Whether the allocation holds a relayed address of `family` (not deleted; expiry is
    /// left to the timer). Decides 443 Peer Address Family Mismatch.
    pub fn has_family(&self, family: AddressFamily) -> bool {
        match &self.dual {
            None => AddressFamily::of(&self.relay) == family,
            Some(d) => self
                .dual_index(d, family)
                .is_some_and(|i| d.expires[i].is_some()),
        }
    }

    /// On the relay path, after the permission check: may data to or from `peer` use the
    /// allocation at `now`? A single-family allocation only ever holds permissions of its own
    /// family (443 otherwise), so only a dual one has anything to check: that the peer's
    /// family is neither deleted nor past its own expiry.
    #[inline]
    pub fn relays_family_of(&self, peer: IpAddr, now: Instant) -> bool {
        let Some(d) = &self.dual else {
            return true;
        };
        let i = usize::from(peer.is_ipv6() != self.relay.is_ipv6());
        d.expires[i].is_some_and(|e| e > now)
    }

    /// The relay sockets' addresses still held, with their families' expiry.
    pub fn held_relays(&self) -> impl Iterator<Item = (SocketAddr, Instant)> + '_ {
        let (first, second) = match &self.dual {
            None => (Some((self.relay, self.expires)), None),
            Some(d) => (
                d.expires[0].map(|e| (self.relay, e)),
                d.expires[1].map(|e| (d.relay, e)),
            ),
        };
        first.into_iter().chain(second)
    }

    /// The relayed transport addresses told to the client that are still held.
    pub fn advertised_relays(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let (first, second) = match &self.dual {
            None => (Some(self.advertised), None),
            Some(d) => (
                d.expires[0].map(|_| self.advertised),
                d.expires[1].map(|_| d.advertised),
            ),
        };
        first.into_iter().chain(second)
    }

    /// Sets one family's time-to-expiry (`None` deletes it) and recomputes the allocation's.
    /// Returns false when the allocation does not hold `family`. A single-family allocation
    /// just takes `expires`; deleting its only family is the caller's job (free it whole).
    pub fn set_family_expiry(&mut self, family: AddressFamily, expires: Option<Instant>) -> bool {
        let Some(mut d) = self.dual else {
            if AddressFamily::of(&self.relay) != family {
                return false;
            }
            if let Some(e) = expires {
                self.expires = e;
            }
            return true;
        };
        let Some(i) = self
            .dual_index(&d, family)
            .filter(|&i| d.expires[i].is_some())
        else {
            return false;
        };
        d.expires[i] = expires;
        if let Some(e) = d.expires.iter().flatten().max() {
            self.expires = *e;
        }
        self.dual = Some(d);
        true
    }

    /// Sets every held family's time-to-expiry (a Refresh without REQUESTED-ADDRESS-FAMILY
    /// applies to all of them, RFC 8656 §8.1).
    pub fn set_expiry(&mut self, expires: Instant) {
        self.expires = expires;
        if let Some(d) = &mut self.dual {
            for e in d.expires.iter_mut().flatten() {
                *e = expires;
            }
        }
    }

    /// Drops the permissions and channels of `family` (a deleted family of a dual
    /// allocation); returns how many of each went.
    pub fn drop_family_state(&mut self, family: AddressFamily) -> (usize, usize) {
        let v6 = family == AddressFamily::V6;
        let (p, c) = (self.permissions.len(), self.channels.len());
        self.permissions.retain(|ip| ip.is_ipv6() != v6);
        self.channels.retain(|peer| peer.is_ipv6() != v6);
        (p - self.permissions.len(), c - self.channels.len())
    }
}

#[derive(Debug)]
enum Slot {
    Free { generation: u32 },
    Used(Box<Allocation>),
}

/// A slab of allocations with a 5-tuple index.
#[derive(Debug, Default)]
pub struct AllocationTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_five_tuple: HashMap<FiveTuple, AllocationId>,
}

impl AllocationTable {
    /// Reserves a slot and returns the id the allocation will have.
    pub fn next_id(&self) -> AllocationId {
        match self.free.last() {
            Some(&index) => match self.slots[index as usize] {
                Slot::Free { generation } => AllocationId { index, generation },
                // Invariant: indices on the free list always point at free slots.
                Slot::Used(_) => unreachable!("free list points at a used slot"),
            },
            None => AllocationId {
                index: self.slots.len() as u32,
                generation: 0,
            },
        }
    }

    /// Inserts an allocation whose id came from [`Self::next_id`].
    pub fn insert(&mut self, alloc: Allocation) {
        let id = alloc.id;
        debug_assert_eq!(id, self.next_id());
        self.by_five_tuple.insert(alloc.five_tuple, id);
        if self.free.last() == Some(&id.index) {
            self.free.pop();
            self.slots[id.index as usize] = Slot::Used(Box::new(alloc));
        } else {
            self.slots.push(Slot::Used(Box::new(alloc)));
        }
    }

    pub fn get(&self, id: AllocationId) -> Option<&Allocation> {
        match self.slots.get(id.index as usize)? {
            Slot::Used(a) if a.id.generation == id.generation => Some(a),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, id: AllocationId) -> Option<&mut Allocation> {
        match self.slots.get_mut(id.index as usize)? {
            Slot::Used(a) if a.id.generation == id.generation => Some(a),
            _ => None,
        }
    }

    pub fn id_for(&self, five_tuple: &FiveTuple) -> Option<AllocationId> {
        self.by_five_tuple.get(five_tuple).copied()
    }

    pub fn by_five_tuple_mut(&mut self, five_tuple: &FiveTuple) -> Option<&mut Allocation> {
        let id = self.id_for(five_tuple)?;
        self.get_mut(id)
    }

    pub fn remove(&mut self, id: AllocationId) -> Option<Allocation> {
        let slot = self.slots.get_mut(id.index as usize)?;
        match slot {
            Slot::Used(a) if a.id.generation == id.generation => {
                let next = Slot::Free {
                    generation: id.generation.wrapping_add(1),
                };
                let Slot::Used(a) = std::mem::replace(slot, next) else {
                    // Invariant: matched as Used just above.
                    unreachable!()
                };
                self.by_five_tuple.remove(&a.five_tuple);
                self.free.push(id.index);
                Some(*a)
            }
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.by_five_tuple.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_five_tuple.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Allocation> {
        self.slots.iter().filter_map(|s| match s {
            Slot::Used(a) => Some(&**a),
            Slot::Free { .. } => None,
        })
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Allocation> {
        self.slots.iter_mut().filter_map(|s| match s {
            Slot::Used(a) => Some(&mut **a),
            Slot::Free { .. } => None,
        })
    }
}
