//! Stats slots: each allocation with kernel entries gets one index in `turnd_alloc_stats`,
//! where the program counts what it relays for it. A worker owns a fixed range of them, so
//! no two workers hand out the same slot and none takes a lock to do it.
//!
//! Bounded by the range: an allocation that finds none free keeps the user-space path (its
//! install is skipped), and a slot comes back when its allocation ends. The map from
//! allocation to slot holds at most the range's size, and so does what is kept beside each
//! slot (the address a wildcard listener's client is answered from).

use crate::core::AllocationId;
use std::collections::HashMap;
use std::net::IpAddr;

pub struct SlotPool {
    free: Vec<u32>,
    owners: HashMap<AllocationId, Owner>,
}

/// What an allocation holds: its slot and, for a client of a wildcard listener, the local
/// address its entries answer it from (`maps::answer_address`), kept for the same keys at
/// every later install and removal.
struct Owner {
    slot: u32,
    answered_from: Option<IpAddr>,
}

/// What [`SlotPool::get`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The allocation already had this slot.
    Held(u32),
    /// A free slot, now the allocation's: the caller zeroes its counts.
    New(u32),
}

impl SlotPool {
    pub fn new(range: std::ops::Range<u32>) -> SlotPool {
        SlotPool {
            free: range.rev().collect(),
            owners: HashMap::new(),
        }
    }

    /// The allocation's slot, handed out on first use; `None` when every slot is taken.
    pub fn get(&mut self, id: AllocationId) -> Option<Slot> {
        if let Some(o) = self.owners.get(&id) {
            return Some(Slot::Held(o.slot));
        }
        let s = self.free.pop()?;
        self.owners.insert(
            id,
            Owner {
                slot: s,
                answered_from: None,
            },
        );
        Some(Slot::New(s))
    }

    /// The allocation's slot, if it has one; never hands one out.
    pub fn of(&self, id: AllocationId) -> Option<u32> {
        self.owners.get(&id).map(|o| o.slot)
    }

    /// The address kept for the allocation by [`SlotPool::keep_answered_from`].
    pub fn answered_from(&self, id: AllocationId) -> Option<IpAddr> {
        self.owners.get(&id)?.answered_from
    }

    /// Keeps `ip` for the allocation until its slot is released; nothing for an allocation
    /// without a slot (it has no kernel entries either). Returns whether it was kept.
    pub fn keep_answered_from(&mut self, id: AllocationId, ip: IpAddr) -> bool {
        match self.owners.get_mut(&id) {
            Some(o) => {
                o.answered_from = Some(ip);
                true
            }
            None => false,
        }
    }

    /// Gives back a slot just handed out that could not be prepared (zeroing failed).
    pub fn undo(&mut self, id: AllocationId) {
        if let Some(o) = self.owners.remove(&id) {
            self.free.push(o.slot);
        }
    }

    /// The allocation ended: its slot, if it had one, which is free again.
    pub fn release(&mut self, id: AllocationId) -> Option<u32> {
        let o = self.owners.remove(&id)?;
        self.free.push(o.slot);
        Some(o.slot)
    }

    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.owners.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u32, generation: u32) -> AllocationId {
        AllocationId { index, generation }
    }

    #[test]
    fn a_range_is_handed_out_to_its_end_and_comes_back() {
        let mut p = SlotPool::new(100..104);
        let got: Vec<_> = (0..4).map(|i| p.get(id(i, 0))).collect();
        assert_eq!(
            got,
            [100, 101, 102, 103].map(|s| Some(Slot::New(s))),
            "in order, from the range only"
        );
        // The bound: a fifth allocation gets none (and stays in user space).
        assert_eq!(p.get(id(4, 0)), None);
        assert_eq!(p.in_use(), 4);
        // Asking again is the same slot, not a new one.
        assert_eq!(p.get(id(2, 0)), Some(Slot::Held(102)));
        assert_eq!((p.of(id(2, 0)), p.of(id(9, 0))), (Some(102), None));
        // An ended allocation's slot goes to the next one; the same index with another
        // generation is another allocation.
        assert_eq!(p.release(id(2, 0)), Some(102));
        assert_eq!(p.release(id(2, 0)), None);
        assert_eq!(
            p.of(id(2, 0)),
            None,
            "a released slot is no longer the allocation's"
        );
        // The answer address lives and dies with the slot: never kept without one.
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!p.keep_answered_from(id(2, 0), ip));
        assert_eq!(p.answered_from(id(2, 0)), None);
        assert!(p.keep_answered_from(id(1, 0), ip));
        assert_eq!(p.answered_from(id(1, 0)), Some(ip));
        assert_eq!(p.get(id(2, 1)), Some(Slot::New(102)));
        assert_eq!(p.get(id(5, 0)), None);
        p.undo(id(2, 1));
        assert_eq!(p.get(id(5, 0)), Some(Slot::New(102)));
        assert_eq!(p.in_use(), 4);
    }

    #[test]
    fn churn_never_grows_past_the_range() {
        let mut p = SlotPool::new(0..8);
        for round in 0..1000u32 {
            for i in 0..12 {
                let _ = p.get(id(i, round));
                // Kept only for the 8 that got a slot.
                let kept = p.keep_answered_from(id(i, round), "192.0.2.1".parse().unwrap());
                assert_eq!(kept, i < 8);
            }
            assert_eq!(p.in_use(), 8);
            for i in 0..12 {
                p.release(id(i, round));
                assert_eq!(p.answered_from(id(i, round)), None);
            }
            assert_eq!(p.in_use(), 0);
        }
        assert_eq!(p.free.len(), 8);
    }
}
