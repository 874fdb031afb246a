//! The worker's own deadlines besides the core's: connection idle and TLS handshake timeouts,
//! splice pacing waits, accept back-offs. A min-heap of (deadline, poller token); an entry is
//! only a reminder to look — the handler checks what is really due, so an entry left behind by
//! a connection that closed or moved its deadline costs one look and is gone.
//!
//! Bound: a connection pushes an entry only when its deadline comes before the earliest one it
//! already has in the heap (`Conn::timer_at`), and every entry leaves once its time passes
//! (each is at most `unauthenticated_timeout` or one pacing wait ahead), so the heap holds a
//! few entries per connection at most.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Timers {
    pub fn push(&mut self, at: Instant, token: u64) {
        self.heap.push(Reverse((at, token)));
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// The next entry due at `now`, removed.
    pub fn pop_due(&mut self, now: Instant) -> Option<u64> {
        if self.next()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((_, token))| token)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entries_come_out_in_deadline_order_once_due() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.push(t0 + Duration::from_secs(2), 2);
        t.push(t0 + Duration::from_secs(1), 1);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(t.pop_due(t0 + Duration::from_secs(5)), Some(1));
        assert_eq!(t.pop_due(t0 + Duration::from_secs(5)), Some(2));
        assert_eq!(t.len(), 0);
    }
}
