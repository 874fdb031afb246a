//! Stats slots: each allocation with kernel entries gets one index in `turnd_alloc_stats`,
//! where the program counts what it relays for it. A worker owns a fixed range of them, so
//! no two workers hand out the same slot and none takes a lock to do it.
//!
//! Bounded by the range: an allocation that finds none free keeps the user-space path (its
//! install is skipped), and a slot comes back when its allocation ends. The map from
//! allocation to slot holds at most the range's size.

use crate::core::AllocationId;
use std::collections::HashMap;

pub struct SlotPool {
    free: Vec<u32>,
    owners: HashMap<AllocationId, u32>,
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
        if let Some(&s) = self.owners.get(&id) {
            return Some(Slot::Held(s));
        }
        let s = self.free.pop()?;
        self.owners.insert(id, s);
        Some(Slot::New(s))
    }

    /// The allocation's slot, if it has one; never hands one out.
    pub fn of(&self, id: AllocationId) -> Option<u32> {
        self.owners.get(&id).copied()
    }

    /// Gives back a slot just handed out that could not be prepared (zeroing failed).
    pub fn undo(&mut self, id: AllocationId) {
        if let Some(s) = self.owners.remove(&id) {
            self.free.push(s);
        }
    }

    /// The allocation ended: its slot, if it had one, which is free again.
    pub fn release(&mut self, id: AllocationId) -> Option<u32> {
        let s = self.owners.remove(&id)?;
        self.free.push(s);
        Some(s)
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
            }
            assert_eq!(p.in_use(), 8);
            for i in 0..12 {
                p.release(id(i, round));
            }
            assert_eq!(p.in_use(), 0);
        }
        assert_eq!(p.free.len(), 8);
    }
}
