//! The response cache that makes retransmitted requests idempotent.
//!
//! Over UDP a client retransmits a request whose response was lost. Re-running a Refresh
//! with LIFETIME 0 or an Allocate would then fail (437), so RFC 8489 §6.3.1 lets a server
//! remember its last responses for 40 s and send the same bytes again. Only authenticated
//! requests are cached: the server keeps no state for a client before it authenticates.

use super::five_tuple::FiveTuple;
use crate::stun::TransactionId;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// RFC 8489 §6.2.1: a client gives up on a transaction after 39.5 s by default.
pub const RETENTION: Duration = Duration::from_secs(40);

type TxKey = (FiveTuple, TransactionId);

#[derive(Debug)]
pub struct TransactionCache {
    responses: HashMap<TxKey, Vec<u8>>,
    order: VecDeque<(Instant, TxKey)>,
    capacity: usize,
}

impl TransactionCache {
    pub fn new(capacity: usize) -> TransactionCache {
        TransactionCache {
            responses: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Forgets the responses older than [`RETENTION`], and gives the tables' memory back
    /// once nothing is left, so a burst of requests does not pin memory after it ends.
    pub fn expire(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front() {
            if *at + RETENTION > now {
                break;
            }
            self.responses.remove(key);
            self.order.pop_front();
        }
        if self.order.is_empty() && self.order.capacity() > 0 {
            self.responses = HashMap::new();
            self.order = VecDeque::new();
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn get(&self, five_tuple: &FiveTuple, txid: &TransactionId) -> Option<&[u8]> {
        self.responses
            .get(&(*five_tuple, *txid))
            .map(|v| v.as_slice())
    }

    /// Remembers a response; forgets those older than [`RETENTION`], and the oldest ones when
    /// over capacity, so the cache cannot grow without bound.
    pub fn insert(
        &mut self,
        now: Instant,
        five_tuple: FiveTuple,
        txid: TransactionId,
        response: Vec<u8>,
    ) {
        while let Some((at, key)) = self.order.front() {
            if *at + RETENTION > now && self.order.len() < self.capacity {
                break;
            }
            self.responses.remove(key);
            self.order.pop_front();
        }
        let key = (five_tuple, txid);
        if self.responses.insert(key, response).is_none() {
            self.order.push_back((now, key));
        }
    }
}
