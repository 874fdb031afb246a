//! Allocation quotas (RFC 8656 §7.2: 486 Allocation Quota Reached): how many allocations one
//! user, and the whole server, may hold. A port reservation (EVEN-PORT with the R bit) counts
//! as one too, held by the user who made it until it is redeemed (its unit then passes to the
//! allocation that redeemed it), lapses, or goes with the allocation that made it. Counted
//! across all workers, so the counters are shared; they are touched when an allocation or a
//! reservation is created or freed, never on the relay path.

use super::bandwidth::SharedBucket;
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// One user's allocations, and their shared `user_bandwidth` bucket when a cap is set. The
/// entry goes when the count reaches zero, and the bucket with it.
#[derive(Debug, Default)]
struct UserEntry {
    count: u32,
    bucket: Option<Arc<SharedBucket>>,
}

#[derive(Debug, Default)]
pub struct Quotas {
    per_user: DashMap<Box<str>, UserEntry>,
    total: AtomicU32,
    /// Set while the server drains before exiting: no new allocation is admitted.
    draining: AtomicBool,
}

impl Quotas {
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
        let total_ok = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (total_limit == 0 || n < total_limit).then_some(n + 1)
            })
            .is_ok();
        if !total_ok {
            return Err(Refusal::Total);
        }
        let mut entry = self.per_user.entry(user.into()).or_default();
        if user_limit != 0 && entry.count >= user_limit {
            let empty = entry.count == 0;
            drop(entry);
            if empty {
                self.per_user.remove_if(user, |_, e| e.count == 0);
            }
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::User);
        }
        entry.count += 1;
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
}
