//! Telling every worker that a reload replaced the peer filter, and waiting until each has
//! applied it to its allocations.
//!
//! A reload that denies a network must stop relaying toward it at once (see the core's
//! `handle_peer_filter_changed`), and "reloaded" must mean it: [`Reloads::announce`] returns
//! once every worker has re-checked its permissions, channels and TCP connections, so the
//! "configuration reloaded" log line comes after the last datagram to a denied peer, not before.
//! The wait is bounded: a worker that does not answer in time (stuck, or stopping) is logged and
//! the reload goes on; its timer would still apply the filter within a second.

use super::poller::Notifier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The generation announced, and the one each worker has applied, by worker index.
#[derive(Debug)]
struct Acks {
    announced: AtomicU64,
    applied: Mutex<Vec<u64>>,
    changed: Condvar,
}

/// The reloading side: held by the shell's `Server`.
pub struct Reloads {
    acks: Arc<Acks>,
    wake: Vec<Arc<Notifier>>,
}

/// One worker's side.
pub struct ReloadLink {
    acks: Arc<Acks>,
    index: usize,
    seen: u64,
}

impl Reloads {
    /// The announcer (which wakes each worker through its notifier) and one link per worker.
    pub fn new(wake: Vec<Arc<Notifier>>) -> (Reloads, Vec<ReloadLink>) {
        let acks = Arc::new(Acks {
            announced: AtomicU64::new(0),
            applied: Mutex::new(vec![0; wake.len()]),
            changed: Condvar::new(),
        });
        let links = (0..wake.len())
            .map(|index| ReloadLink {
                acks: acks.clone(),
                index,
                seen: 0,
            })
            .collect();
        (Reloads { acks, wake }, links)
    }

    /// Starts a new generation and waits up to `timeout` for every worker to apply it; false
    /// when one did not in time.
    pub fn announce(&self, timeout: Duration) -> bool {
        let generation = self.acks.announced.fetch_add(1, Ordering::AcqRel) + 1;
        for w in &self.wake {
            w.wake();
        }
        // Invariant: nothing panics while holding the lock (a comparison or a store).
        let applied = self.acks.applied.lock().unwrap_or_else(|e| e.into_inner());
        let (_applied, wait) = self
            .acks
            .changed
            .wait_timeout_while(applied, timeout, |a| a.iter().any(|&g| g < generation))
            .unwrap_or_else(|e| e.into_inner());
        !wait.timed_out()
    }
}

impl ReloadLink {
    /// A generation announced since this worker last looked, if any (checked on every
    /// wake-up of the worker: one atomic load).
    pub fn pending(&mut self) -> Option<u64> {
        let g = self.acks.announced.load(Ordering::Acquire);
        (g > self.seen).then(|| {
            self.seen = g;
            g
        })
    }

    /// Reports `generation` applied by this worker.
    pub fn applied(&self, generation: u64) {
        let mut a = self.acks.applied.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = a.get_mut(self.index) {
            *g = (*g).max(generation);
        }
        self.acks.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announce_waits_for_every_worker() {
        let wake: Vec<Arc<Notifier>> = (0..2).map(|_| Arc::new(Notifier::new().unwrap())).collect();
        let (reloads, links) = Reloads::new(wake);
        let workers: Vec<_> = links
            .into_iter()
            .map(|mut link| {
                std::thread::spawn(move || {
                    // Bounded: ten seconds of polling at most.
                    for _ in 0..10_000 {
                        if let Some(g) = link.pending() {
                            link.applied(g);
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
            })
            .collect();
        assert!(reloads.announce(Duration::from_secs(10)));
        for w in workers {
            w.join().unwrap();
        }
        // Nobody left to answer: the wait ends at its timeout.
        assert!(!reloads.announce(Duration::from_millis(10)));
    }
}
