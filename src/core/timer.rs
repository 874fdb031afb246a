//! Deadlines in a binary heap with lazy deletion.
//!
//! Every refresh pushes a new deadline instead of finding and moving the old one; when a
//! deadline fires, the owner checks whether it is still current. That keeps both operations
//! O(log n) and avoids the periodic scan of every allocation that some relays do.

use super::allocation::AllocationId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// Check whether the allocation has reached its time-to-expiry.
    AllocationExpiry(AllocationId),
    /// Remove expired permissions and channel bindings of an allocation.
    Sweep(AllocationId),
    /// A reservation made by EVEN-PORT with the R bit lapses after 30 s (RFC 8656 §7.2).
    Reservation([u8; 8]),
    /// An RFC 6062 peer connection's Connect attempt or ConnectionBind wait may be over.
    TcpConnection(u32),
}

#[derive(Default, Debug)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, TimerKind)>>,
}

impl Timers {
    pub fn push(&mut self, at: Instant, kind: TimerKind) {
        self.heap.push(Reverse((at, kind)));
    }

    /// The earliest deadline, which is when the shell should next call `handle_timeout`.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns one deadline that is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<TimerKind> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, k))| k),
            _ => None,
        }
    }

    /// Keeps only the deadlines `keep` says are still wanted (O(n), then a re-heapify).
    pub fn retain(&mut self, mut keep: impl FnMut(&TimerKind) -> bool) {
        self.heap.retain(|Reverse((_, kind))| keep(kind));
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}
