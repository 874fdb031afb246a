//! Allocation quotas (RFC 8656 §7.2: 486 Allocation Quota Reached): how many allocations one
//! user, and the whole server, may hold. A port reservation (EVEN-PORT with the R bit) counts
//! as one too, held by the user who made it until it is redeemed (its unit then passes to the
//! allocation that redeemed it), lapses, or goes with the allocation that made it. Counted
//! across all workers, so the counters are shared; they are touched when an allocation or a
//! reservation is created or freed, never on the relay path.
//!
//! A fleet sharing a store (`docs/cluster.md`, Fleet-wide quotas) adds the other nodes' counts:
//! the store's report task replaces [`Quotas::set_others`] with a snapshot it reads from Redis,
//! and an Allocate is admitted when this node's exact count plus the snapshot stays under the
//! limit, never waiting for Redis. Every change of this node's counts bumps
//! [`Quotas::generation`], which the report task watches to publish them at once.

use super::bandwidth::SharedBucket;
use super::reloadable::Reloadable;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// One user's allocations, and their shared `user_bandwidth` bucket when a cap is set. The
/// entry goes when the count reaches zero, and the bucket with it.
#[derive(Debug, Default)]
struct UserEntry {
    count: u32,
    bucket: Option<Arc<SharedBucket>>,
}

/// What the other nodes of a fleet hold, as last read from the store: allocations per user
/// and in total. Empty without a store, or when the store could not be read for a lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Others {
    pub per_user: HashMap<Box<str>, u32>,
    pub total: u32,
}

impl Others {
    fn of_user(&self, user: &str) -> u32 {
        self.per_user.get(user).copied().unwrap_or(0)
    }
}

#[derive(Debug, Default)]
pub struct Quotas {
    per_user: DashMap<Box<str>, UserEntry>,
    total: AtomicU32,
    /// Set while the server drains before exiting: no new allocation is admitted.
    draining: AtomicBool,
    /// The other nodes' counts (a fleet sharing a store); replaced whole by the store task.
    others: Reloadable<Others>,
    /// Bumped on every change of this node's counts, so the store task knows when to write.
    generation: AtomicU64,
}

impl Quotas {
    /// Replaces the other nodes' counts (the store's report task, after each read).
    pub fn set_others(&self, others: Others) {
        self.others.store(others);
    }

    /// The other nodes' counts in force.
    pub fn others(&self) -> std::sync::Arc<Others> {
        self.others.load()
    }

    /// Changes every time this node's counts change; a reader compares it with the value it
    /// saw last.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// This node's own counts: (user, allocations) for every user holding one, and the total.
    /// O(users); taken by the store task when [`Quotas::generation`] moved, never per packet.
    pub fn own_counts(&self) -> (Vec<(Box<str>, u32)>, u32) {
        let users = self
            .per_user
            .iter()
            .filter(|e| e.count > 0)
            .map(|e| (e.key().clone(), e.count))
            .collect();
        (users, self.total())
    }

    /// Stops (or resumes) admitting new allocations; existing ones are untouched.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Counts one more allocation for `user` unless that would pass a limit (0 = none).
    /// Returns false, counting nothing, when a limit is reached.
    pub fn acquire(&self, user: &str, user_limit: u32, total_limit: u32) -> bool {
        self.try_acquire(user, user_limit, total_limit).is_ok()
    }

    /// [`Quotas::acquire`], saying which limit refused: a server that is full (total) may
    /// send the client elsewhere (300), a user over their own limit may not.
    pub fn try_acquire(
        &self,
        user: &str,
        user_limit: u32,
        total_limit: u32,
    ) -> Result<(), Refusal> {
        // The other nodes' counts, fixed for this decision; zero without a store.
        let others = self.others.load();
        let total_ok = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (total_limit == 0 || n.saturating_add(others.total) < total_limit).then_some(n + 1)
            })
            .is_ok();
        if !total_ok {
            return Err(Refusal::Total);
        }
        let mut entry = self.per_user.entry(user.into()).or_default();
        if user_limit != 0 && entry.count.saturating_add(others.of_user(user)) >= user_limit {
            let empty = entry.count == 0;
            drop(entry);
            if empty {
                self.per_user.remove_if(user, |_, e| e.count == 0);
            }
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::User);
        }
        entry.count += 1;
        drop(entry);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The `user_bandwidth` bucket every allocation of `user` shares (made on first use), for
    /// a user holding at least one allocation ([`Quotas::try_acquire`] succeeded). Taken on
    /// the control path; the relay path only touches the bucket's atomic.
    pub fn user_bucket(&self, user: &str, rate: u64, now: Instant) -> Option<Arc<SharedBucket>> {
        let mut entry = self.per_user.get_mut(user)?;
        Some(
            entry
                .bucket
                .get_or_insert_with(|| Arc::new(SharedBucket::new(rate, now)))
                .clone(),
        )
    }

    /// Forgets one allocation of `user`.
    pub fn release(&self, user: &str) {
        let _ = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        // Remove the entry at zero so the map holds only users with allocations.
        self.per_user.remove_if_mut(user, |_, e| {
            e.count = e.count.saturating_sub(1);
            e.count == 0
        });
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn total(&self) -> u32 {
        self.total.load(Ordering::Acquire)
    }

    pub fn of_user(&self, user: &str) -> u32 {
        self.per_user.get(user).map_or(0, |e| e.count)
    }
}

/// Which quota refused an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    User,
    Total,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_user_and_total() {
        let q = Quotas::default();
        assert!(q.acquire("a", 2, 3));
        assert!(q.acquire("a", 2, 3));
        assert!(!q.acquire("a", 2, 3), "user limit");
        assert!(q.acquire("b", 2, 3));
        assert!(!q.acquire("c", 2, 3), "total limit");
        assert_eq!((q.total(), q.of_user("a"), q.of_user("c")), (3, 2, 0));
        q.release("a");
        assert!(q.acquire("c", 2, 3));
        q.release("a");
        q.release("b");
        q.release("c");
        assert_eq!(q.total(), 0);
        assert!(q.per_user.is_empty());
        assert!(q.acquire("x", 0, 0), "0 means no limit");
    }

    #[test]
    fn the_generation_moves_on_every_change_and_own_counts_list_holders() {
        let q = Quotas::default();
        let g0 = q.generation();
        assert!(q.acquire("a", 0, 0));
        assert!(q.acquire("a", 0, 0));
        assert!(q.acquire("b", 0, 0));
        assert_eq!(q.generation(), g0 + 3);
        assert!(!q.acquire("a", 2, 0));
        assert_eq!(q.generation(), g0 + 3, "a refusal changes nothing");
        let (mut users, total) = q.own_counts();
        users.sort();
        assert_eq!(users, vec![("a".into(), 2), ("b".into(), 1)]);
        assert_eq!(total, 3);
        q.release("b");
        assert_eq!(q.generation(), g0 + 4);
        assert_eq!(q.own_counts().0.len(), 1);
    }
}
