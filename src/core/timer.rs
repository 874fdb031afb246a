//! Deadlines, at most one pending per [`TimerKind`].
//!
//! A deadline is named by what it is for — this allocation's expiry, this allocation's sweep,
//! this allocation's reservation, this peer connection — and each name has at most one pending
//! instant: scheduling a name again moves its deadline, cancelling it removes it. So the
//! deadlines held are exactly the things waiting for one, however many times a client refreshed
//! them, and an owner that goes away takes its deadlines with it (no lazy deletion, no stale
//! entries to compact, no teardown cost that grows with a client's past requests).
//!
//! An ordered set of `(instant, name)` yields the earliest deadline; a map from name to its
//! instant finds the entry to move or remove. Every operation is O(log n) in the deadlines
//! held.

use super::allocation::AllocationId;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// What a deadline is for; the name under which it is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// The earliest time-to-expiry among the allocation's families (one per allocation: a
    /// single-family allocation's expiry, or the sooner of a dual allocation's two).
    AllocationExpiry(AllocationId),
    /// Remove expired permissions and channel bindings of an allocation.
    Sweep(AllocationId),
    /// The reservation this allocation's Allocate made (EVEN-PORT with the R bit) lapses
    /// after 30 s (RFC 8656 §7.2).
    Reservation(AllocationId),
    /// An RFC 6062 peer connection's Connect attempt or ConnectionBind wait may be over.
    TcpConnection(u32),
}

#[derive(Default, Debug)]
pub struct Timers {
    order: BTreeSet<(Instant, TimerKind)>,
    by_kind: HashMap<TimerKind, Instant>,
}

impl Timers {
    /// Sets the deadline of `kind` to `at`, replacing the one pending for `kind` if any.
    pub fn push(&mut self, at: Instant, kind: TimerKind) {
        if let Some(old) = self.by_kind.insert(kind, at) {
            self.order.remove(&(old, kind));
        }
        self.order.insert((at, kind));
    }

    /// Removes the pending deadline of `kind`, if any.
    pub fn cancel(&mut self, kind: TimerKind) {
        if let Some(at) = self.by_kind.remove(&kind) {
            self.order.remove(&(at, kind));
        }
    }

    /// When `kind` is due, if it has a pending deadline.
    pub fn at(&self, kind: TimerKind) -> Option<Instant> {
        self.by_kind.get(&kind).copied()
    }

    /// The earliest deadline, which is when the shell should next call `handle_timeout`.
    pub fn next(&self) -> Option<Instant> {
        self.order.first().map(|(at, _)| *at)
    }

    /// Removes and returns one deadline that is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<TimerKind> {
        match self.order.first() {
            Some(&(at, kind)) if at <= now => {
                self.order.pop_first();
                self.by_kind.remove(&kind);
                Some(kind)
            }
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(index: u32) -> AllocationId {
        AllocationId {
            index,
            generation: 0,
        }
    }

    #[test]
    fn one_deadline_per_kind_moved_not_added() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for s in 0..100_000u64 {
            t.push(
                t0 + Duration::from_secs(s),
                TimerKind::AllocationExpiry(id(1)),
            );
        }
        t.push(t0 + Duration::from_secs(5), TimerKind::Sweep(id(1)));
        assert_eq!(t.len(), 2);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(
            t.at(TimerKind::AllocationExpiry(id(1))),
            Some(t0 + Duration::from_secs(99_999))
        );
        // Moving a deadline earlier works as well as later.
        t.push(
            t0 + Duration::from_secs(1),
            TimerKind::AllocationExpiry(id(1)),
        );
        assert_eq!(t.pop_due(t0), None);
        let now = t0 + Duration::from_secs(10);
        assert_eq!(t.pop_due(now), Some(TimerKind::AllocationExpiry(id(1))));
        assert_eq!(t.pop_due(now), Some(TimerKind::Sweep(id(1))));
        assert_eq!(t.pop_due(now), None);
        assert!(t.is_empty() && t.by_kind.is_empty());
    }

    #[test]
    fn cancel_removes_only_its_kind() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.push(t0, TimerKind::Reservation(id(1)));
        t.push(t0, TimerKind::Reservation(id(2)));
        t.push(t0, TimerKind::TcpConnection(7));
        t.cancel(TimerKind::Reservation(id(1)));
        t.cancel(TimerKind::Reservation(id(9)));
        assert_eq!(t.len(), 2);
        assert_eq!(t.at(TimerKind::Reservation(id(1))), None);
        assert_eq!(t.pop_due(t0), Some(TimerKind::Reservation(id(2))));
        assert_eq!(t.pop_due(t0), Some(TimerKind::TcpConnection(7)));
        assert!(t.is_empty());
    }
}
