//! Allocations (RFC 8656 §2.2, §7): a relayed transport address on the server, owned by the
//! client 5-tuple that asked for it, with the permissions and channel bindings that say
//! which peers may use it.
//!
//! Each worker has its own [`AllocationTable`]; the kernel's `SO_REUSEPORT` hash sends all of
//! a client's datagrams to one worker, so the table is never shared between cores.

use super::auth::SessionKey;
use super::channel::Channels;
use super::five_tuple::FiveTuple;
use super::permission::Permissions;
use crate::stun::TransactionId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

/// A handle to an allocation: a slot index plus a generation, so a late datagram on a relay
/// socket that belonged to a freed allocation never reaches the slot's next occupant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocationId {
    pub index: u32,
    pub generation: u32,
}

/// Relayed traffic counters, kept per allocation for its end-of-life log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

/// Where an allocation is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The relay socket is being opened; the Allocate response waits for it.
    Opening {
        txid: TransactionId,
        /// How many relay ports have been tried so far.
        attempts: u8,
        /// Set when EVEN-PORT asked for the next port to be reserved.
        reservation: Option<[u8; 8]>,
        /// Whether the request carried FINGERPRINT, so the answer does too.
        fingerprint: bool,
        /// Whether another port may be tried if this one is taken by another process
        /// (not when the port was chosen by EVEN-PORT or a reservation).
        retryable: bool,
    },
    Active,
}

#[derive(Clone, Debug)]
pub struct Allocation {
    pub id: AllocationId,
    pub five_tuple: FiveTuple,
    /// The USERNAME that created it: later requests must be signed by the same user (441).
    pub username: Box<str>,
    pub key: SessionKey,
    /// The address the relay socket is bound to.
    pub relay: SocketAddr,
    /// The relayed transport address told to the client (differs behind NAT/Docker).
    pub advertised: SocketAddr,
    pub created: Instant,
    pub expires: Instant,
    pub state: State,
    pub dont_fragment: bool,
    pub permissions: Permissions,
    pub channels: Channels,
    pub stats: Stats,
    /// The earliest pending sweep of permissions and channels, so refreshes do not pile up
    /// one heap entry each.
    pub next_sweep: Option<Instant>,
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
}
