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
        self.make_room(&key);
        if self.responses.insert(key, response).is_none() {
            self.order.push_back((now, key));
        }
    }

    /// Keeps the table within what `capacity` entries need. Under churn (the oldest removed,
    /// a new one inserted, over and over) the hash table's removed slots use up its spare
    /// room, and once the table is over half full it would then double, although it never
    /// holds more than `capacity` entries. So when it has no room left for a new key, it is
    /// rebuilt at its own size instead (O(n), once per many insertions; control path only).
    fn make_room(&mut self, key: &TxKey) {
        let len = self.responses.len();
        if len < self.responses.capacity() || self.responses.contains_key(key) {
            return;
        }
        // Below the bound, grow as the table would; at it, never past it.
        let room = (2 * len).clamp(len + 1, self.capacity.max(len + 1));
        let old = std::mem::take(&mut self.responses);
        self.responses = HashMap::with_capacity(room);
        self.responses.extend(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn key(n: u64) -> (FiveTuple, TransactionId) {
        let client = SocketAddr::from(([192, 0, 2, 1], (n % 50_000) as u16 + 1));
        let server = SocketAddr::from(([192, 0, 2, 2], 3478));
        let mut t = [0u8; 12];
        t[4..].copy_from_slice(&n.to_be_bytes());
        (FiveTuple::udp(client, server), TransactionId(t))
    }

    #[test]
    fn at_capacity_the_oldest_go_and_the_table_never_outgrows_it() {
        const CAPACITY: usize = 1024;
        let t0 = Instant::now();
        let mut cache = TransactionCache::new(CAPACITY);
        // What a table sized for `CAPACITY` entries can hold.
        let ceiling = HashMap::<TxKey, Vec<u8>>::with_capacity(CAPACITY).capacity();
        for n in 0..200_000u64 {
            let (ft, txid) = key(n);
            cache.insert(t0, ft, txid, vec![0; 8]);
            assert!(cache.len() <= CAPACITY);
            assert!(
                cache.responses.capacity() <= ceiling,
                "insert {n}: room for {} entries",
                cache.responses.capacity()
            );
        }
        assert_eq!(cache.len(), CAPACITY);
        assert!(cache.order.capacity() <= 2 * CAPACITY);
        // The newest are there, the oldest gone.
        let (ft, txid) = key(199_999);
        assert!(cache.get(&ft, &txid).is_some());
        let (ft, txid) = key(200_000 - CAPACITY as u64);
        assert!(cache.get(&ft, &txid).is_some());
        let (ft, txid) = key(200_000 - CAPACITY as u64 - 1);
        assert!(cache.get(&ft, &txid).is_none());
        // Past the retention everything goes, memory included.
        cache.expire(t0 + RETENTION);
        assert_eq!((cache.len(), cache.responses.capacity()), (0, 0));
    }
}
