//! Telling every worker that a reload replaced the peer filter, and waiting until each has
//! applied it to its allocations.
//!
//! A reload that denies a network must stop relaying toward it at once (see the core's
//! `handle_peer_filter_changed`), and "reloaded" must mean it: [`Reloads::announce`] returns
//! once every worker has re-checked its permissions, channels and TCP connections, so the
//! "configuration reloaded" log line comes after the last datagram to a denied peer, not before.
//! The wait is bounded: a worker that does not answer in time (stuck, or stopping) is logged and
//! the reload goes on; its timer would still apply the filter within a second.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The generation each worker has applied, by worker index.
#[derive(Debug)]
struct Acks {
    applied: Mutex<Vec<u64>>,
    changed: Condvar,
}

/// The reloading side: held by the shell's `Server`.
pub struct Reloads {
    tx: watch::Sender<u64>,
    acks: Arc<Acks>,
}

/// One worker's side.
pub struct ReloadLink {
    rx: watch::Receiver<u64>,
    acks: Arc<Acks>,
    index: usize,
}

impl Reloads {
    /// The announcer and one link per worker.
    pub fn new(workers: usize) -> (Reloads, Vec<ReloadLink>) {
        let (tx, rx) = watch::channel(0u64);
        let acks = Arc::new(Acks {
            applied: Mutex::new(vec![0; workers]),
            changed: Condvar::new(),
        });
        let links = (0..workers)
            .map(|index| ReloadLink {
                rx: rx.clone(),
                acks: acks.clone(),
                index,
            })
            .collect();
        (Reloads { tx, acks }, links)
    }

    /// Starts a new generation and waits up to `timeout` for every worker to apply it; false
    /// when one did not in time.
    pub fn announce(&self, timeout: Duration) -> bool {
        let mut generation = 0;
        self.tx.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
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
    /// The next generation to apply; `None` once the server is gone.
    pub async fn changed(&mut self) -> Option<u64> {
        self.rx.changed().await.ok()?;
        Some(*self.rx.borrow_and_update())
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
        let (reloads, links) = Reloads::new(2);
        let workers: Vec<_> = links
            .into_iter()
            .map(|mut link| {
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        if let Some(g) = link.changed().await {
                            link.applied(g);
                        }
                    });
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
