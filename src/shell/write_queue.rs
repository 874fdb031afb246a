//! A TCP/TLS connection's write queue: whole frames waiting for the connection's task to
//! write them, bounded twice.
//!
//! - Per connection, [`WRITE_QUEUE_MAX`]: a client that stops reading loses whole frames past
//!   it (a TURN relay carries media, where a late packet is as good as a lost one), so it
//!   cannot make the server grow.
//! - Per worker, [`WORKER_QUEUE_BUDGET`]: every connection may always queue
//!   [`WRITE_QUEUE_FLOOR`] bytes, and what it queues beyond that comes out of one budget
//!   shared by the worker's connections. Without it, a holder of a valid credential with
//!   `max_connections_per_source` connections that never read (and a peer, or its own
//!   requests, filling them) would hold that many times `WRITE_QUEUE_MAX` — 256 MiB at the
//!   defaults. With it, the worker's queues hold at most `connections × WRITE_QUEUE_FLOOR +
//!   WORKER_QUEUE_BUDGET` bytes, and a connection that reads keeps its floor whatever the
//!   others do.
//!
//! Everything here is the worker's own (`Cell`s, an `Rc`): the relay path shares nothing with
//! other cores, and pushing a frame allocates nothing once the queue has grown to its working
//! size.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Bytes queued for one client (waiting, plus taken by the task and not yet written) beyond
/// which whole frames are dropped.
pub const WRITE_QUEUE_MAX: usize = 256 * 1024;
/// Bytes every connection may queue whatever the worker's other connections hold: a burst
/// of responses, or some 50 ms of a 2.5 Mbit/s stream.
pub const WRITE_QUEUE_FLOOR: usize = 16 * 1024;
/// Bytes the connections of one worker may queue beyond their floors, together.
pub const WORKER_QUEUE_BUDGET: usize = 16 * 1024 * 1024;
/// Capacity an emptied queue keeps, so a busy connection does not reallocate per batch.
const QUEUE_KEEP: usize = 16 * 1024;

/// What one worker's write queues may hold beyond their floors.
#[derive(Debug)]
pub struct QueueBudget {
    left: Cell<usize>,
}

impl QueueBudget {
    pub fn new(bytes: usize) -> Rc<QueueBudget> {
        Rc::new(QueueBudget {
            left: Cell::new(bytes),
        })
    }

    /// Bytes still free.
    #[cfg(test)]
    pub fn left(&self) -> usize {
        self.left.get()
    }

    fn take(&self, bytes: usize) -> bool {
        match self.left.get().checked_sub(bytes) {
            Some(left) => {
                self.left.set(left);
                true
            }
            None => false,
        }
    }

    fn give_back(&self, bytes: usize) {
        self.left.set(self.left.get() + bytes);
    }
}

/// One connection's queue.
#[derive(Debug)]
pub struct WriteQueue {
    /// Whole frames waiting for the task to write them, oldest first.
    waiting: RefCell<Vec<u8>>,
    /// Bytes the task has taken from `waiting` and not yet written: they count towards the
    /// bounds too.
    in_flight: Cell<usize>,
    /// Bytes of this queue charged to the worker's budget (those beyond the floor).
    charged: Cell<usize>,
    budget: Rc<QueueBudget>,
    /// Frames dropped because a bound was reached.
    pub dropped: Cell<u64>,
}

impl WriteQueue {
    pub fn new(budget: Rc<QueueBudget>) -> WriteQueue {
        WriteQueue {
            waiting: RefCell::default(),
            in_flight: Cell::new(0),
            charged: Cell::new(0),
            budget,
            dropped: Cell::new(0),
        }
    }

    /// Bytes held: waiting plus in flight.
    pub fn held(&self) -> usize {
        self.waiting.borrow().len() + self.in_flight.get()
    }

    /// Appends one whole frame; returns false (and counts it) when a bound drops it instead.
    /// `first` is set when the queue was empty, so the caller wakes the task once per batch.
    pub fn push(&self, frame: &[u8], first: &mut bool) -> bool {
        let mut q = self.waiting.borrow_mut();
        let after = q.len() + self.in_flight.get() + frame.len();
        if after > WRITE_QUEUE_MAX || !self.charge(after) {
            self.dropped.set(self.dropped.get() + 1);
            return false;
        }
        *first = q.is_empty();
        q.extend_from_slice(frame);
        true
    }

    /// Charges the budget for holding `held` bytes; false when it cannot pay.
    fn charge(&self, held: usize) -> bool {
        let need = held.saturating_sub(WRITE_QUEUE_FLOOR);
        let have = self.charged.get();
        if need > have {
            if !self.budget.take(need - have) {
                return false;
            }
            self.charged.set(need);
        }
        true
    }

    /// Gives the budget back what is no longer held.
    fn settle(&self) {
        let need = self.held().saturating_sub(WRITE_QUEUE_FLOOR);
        let have = self.charged.get();
        if need < have {
            self.budget.give_back(have - need);
            self.charged.set(need);
        }
    }

    /// The task takes everything waiting into `out` (which it has written in full): the two
    /// buffers swap, so neither is reallocated once grown, and an emptied one keeps only
    /// [`QUEUE_KEEP`] of capacity.
    pub fn take(&self, out: &mut Vec<u8>) {
        out.clear();
        out.shrink_to(QUEUE_KEEP);
        std::mem::swap(out, &mut *self.waiting.borrow_mut());
        self.in_flight.set(out.len());
    }

    /// The task has `left` bytes of what it took still to write.
    pub fn written(&self, left: usize) {
        self.in_flight.set(left);
        self.settle();
    }

    /// Everything still waiting (for a splice to send before the raw bytes).
    pub fn waiting(&self) -> std::cell::Ref<'_, Vec<u8>> {
        self.waiting.borrow()
    }
}

impl Drop for WriteQueue {
    fn drop(&mut self) {
        self.budget.give_back(self.charged.get());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: usize = 1000;

    /// Pushes frames until one is dropped; the number pushed.
    fn fill(q: &WriteQueue) -> usize {
        let frame = [0u8; FRAME];
        let mut first = false;
        (0..10_000)
            .take_while(|_| q.push(&frame, &mut first))
            .count()
    }

    #[test]
    fn a_queue_stops_at_its_bound_with_whole_frames() {
        let budget = QueueBudget::new(WORKER_QUEUE_BUDGET);
        let q = WriteQueue::new(budget.clone());
        let n = fill(&q);
        assert_eq!(n, WRITE_QUEUE_MAX / FRAME);
        assert_eq!(q.held(), n * FRAME);
        assert_eq!(q.dropped.get(), 1);
        assert_eq!(
            budget.left(),
            WORKER_QUEUE_BUDGET - (q.held() - WRITE_QUEUE_FLOOR)
        );
        // The task writes it all: the budget is whole again, and the queue takes frames.
        let mut out = Vec::new();
        q.take(&mut out);
        assert_eq!(q.held(), n * FRAME);
        q.written(0);
        assert_eq!(budget.left(), WORKER_QUEUE_BUDGET);
        let mut first = false;
        assert!(q.push(&[0; FRAME], &mut first) && first);
        drop(q);
        assert_eq!(budget.left(), WORKER_QUEUE_BUDGET);
    }

    /// The worker's bound: connections that never read exhaust the budget, and then hold
    /// only their floor each; a new connection still gets its floor; the budget comes back
    /// as they write or close.
    #[test]
    fn the_worker_budget_bounds_all_queues_and_keeps_every_floor() {
        const BUDGET: usize = 3 * WRITE_QUEUE_MAX;
        let budget = QueueBudget::new(BUDGET);
        let stuck: Vec<WriteQueue> = (0..10).map(|_| WriteQueue::new(budget.clone())).collect();
        for q in &stuck {
            fill(q);
        }
        let total: usize = stuck.iter().map(WriteQueue::held).sum();
        assert!(
            total <= stuck.len() * WRITE_QUEUE_FLOOR + BUDGET,
            "{total} bytes queued"
        );
        assert!(budget.left() < FRAME, "{} left", budget.left());
        let fresh = WriteQueue::new(budget.clone());
        assert_eq!(fill(&fresh), WRITE_QUEUE_FLOOR / FRAME);
        // Half of one stuck queue is written: that much is free for others again.
        let mut out = Vec::new();
        stuck[0].take(&mut out);
        let half = out.len() / 2;
        stuck[0].written(out.len() - half);
        assert!(budget.left() >= half - FRAME, "{} left", budget.left());
        drop(stuck);
        drop(fresh);
        assert_eq!(budget.left(), BUDGET);
    }
}
