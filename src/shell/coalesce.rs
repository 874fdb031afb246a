//! Wake-up coalescing for a busy worker: interrupt moderation in user space.
//!
//! At a steady offered load each datagram arrives on its own, so a worker wakes from
//! `epoll_wait` for every one: a context switch in, one `recvmmsg` of one datagram, one
//! `sendmmsg`, a context switch out. Profiles of turnd and coturn under such a load put more than
//! 90 % of either server's CPU in the kernel, a fifth of it in the switches alone, so user-space
//! work cannot cut the cost per datagram much further; only fewer wake-ups and fuller batches can.
//!
//! When `udp_coalesce` is set and the worker is busy — it relayed at least two datagrams per
//! coalescing window over the last millisecond — the worker's loop, about to block in
//! `epoll_wait`, first sleeps for the window. Datagrams that arrive meanwhile queue in the sockets without waking anybody (the
//! thread is not waiting on epoll), and the next `epoll_wait` returns them all at once, so each
//! `recvmmsg`/`sendmmsg` carries several. A worker that is idle or lightly loaded never sleeps
//! here and blocks as before, so the added latency (at most one window per hop) is paid only
//! under load, where it buys the batching. Like a NIC's interrupt moderation, it trades a bounded
//! delay for fewer interrupts.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Rates are judged over this much time.
const RATE_WINDOW: Duration = Duration::from_millis(1);

/// Sleep only when at least this many datagrams are expected per coalescing window.
const MIN_PER_WINDOW: u32 = 2;

/// A worker's coalescing state, owned by its loop.
pub struct Coalescer {
    /// Datagrams received since the start of the rate window.
    received: Cell<u32>,
    /// Datagrams received since the worker last parked.
    tick: Cell<u32>,
    /// Start of the current rate window.
    since: Cell<Option<Instant>>,
    /// Whether the last complete rate window was busy enough to coalesce.
    busy: Cell<bool>,
}

impl Coalescer {
    pub const fn new() -> Coalescer {
        Coalescer {
            received: Cell::new(0),
            tick: Cell::new(0),
            since: Cell::new(None),
            busy: Cell::new(false),
        }
    }
}

impl Coalescer {
    /// Called by the loop each time it is about to block: sleeps for `window` when the
    /// worker is busy and this turn relayed something (see the module doc).
    pub fn before_wait(&self, window: Duration) {
        if self.decide(Instant::now(), window) {
            std::thread::sleep(window);
        }
    }

    /// Whether to sleep `window` before parking at `now`; rolls the rate window over.
    fn decide(&self, now: Instant, window: Duration) -> bool {
        let since = match self.since.get() {
            Some(t) => t,
            None => {
                self.since.set(Some(now));
                now
            }
        };
        let elapsed = now.saturating_duration_since(since);
        if elapsed >= RATE_WINDOW {
            // Expected datagrams per window = received × window / elapsed.
            let expected = u128::from(self.received.get()) * window.as_nanos();
            self.busy
                .set(expected >= u128::from(MIN_PER_WINDOW) * elapsed.as_nanos());
            self.received.set(0);
            self.since.set(Some(now));
        }
        let worked = self.tick.replace(0) > 0;
        worked && self.busy.get()
    }

    /// Counts `n` datagrams received (called from the receive path: two cell updates, no
    /// clock).
    pub fn received(&self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.received.set(self.received.get().saturating_add(n));
        self.tick.set(self.tick.get().saturating_add(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_micros(100);

    #[test]
    fn an_idle_worker_never_sleeps() {
        let c = Coalescer::new();
        let t0 = Instant::now();
        for i in 0..10 {
            assert!(!c.decide(t0 + RATE_WINDOW * i, WINDOW));
        }
    }

    #[test]
    fn a_lightly_loaded_worker_never_sleeps() {
        // One datagram a millisecond: 0.1 per window.
        let c = Coalescer::new();
        let t0 = Instant::now();
        for i in 0..10 {
            c.received(1);
            assert!(!c.decide(t0 + RATE_WINDOW * i, WINDOW));
        }
    }

    #[test]
    fn a_busy_worker_sleeps_after_a_tick_with_work_only() {
        let c = Coalescer::new();
        let t0 = Instant::now();
        c.decide(t0, WINDOW);
        // 50 datagrams in a millisecond: 5 per window.
        c.received(50);
        assert!(c.decide(t0 + RATE_WINDOW, WINDOW));
        // A tick that received nothing (a timer, a TCP frame) does not sleep.
        assert!(!c.decide(t0 + RATE_WINDOW + WINDOW, WINDOW));
        c.received(1);
        assert!(c.decide(t0 + RATE_WINDOW + WINDOW * 2, WINDOW));
    }

    #[test]
    fn a_quiet_rate_window_turns_coalescing_off() {
        let c = Coalescer::new();
        let t0 = Instant::now();
        c.decide(t0, WINDOW);
        c.received(50);
        assert!(c.decide(t0 + RATE_WINDOW, WINDOW));
        // Then one datagram in the next 3 ms.
        c.received(1);
        assert!(!c.decide(t0 + RATE_WINDOW * 4, WINDOW));
    }
}
