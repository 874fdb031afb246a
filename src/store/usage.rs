//! Usage accounting (docs/cluster.md, Usage): per account (a static user's name, a REST
//! username's user id), relayed bytes and datagrams each way and allocation-seconds, turned
//! into deltas against the cumulative counters last seen per allocation, and allocation
//! start/end events. Pure bookkeeping, no I/O: the report task feeds it what the workers
//! answer ([`Usage::observe`]) and writes what it takes out ([`Usage::take_batch`]), putting
//! back what a failed write did not deliver ([`Usage::put_back`]).
//!
//! Exact: an allocation that ends between two observations comes back from its worker's
//! ended log with its final counters, so its last bytes are counted too. Bounded: at most
//! [`MAX_PENDING`] (hour, account) entries and [`MAX_EVENTS`] events wait for the store; what
//! does not fit is counted as dropped, never kept.

use crate::core::Relayed;
use crate::metrics::admin::{AllocationInfo, EndedAllocation};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// The counters, in field order: `{counter}:{account}` in the usage hashes. rx/tx are seen
/// from the client: tx is what the client sent (relayed to peers), rx what it received.
pub const COUNTERS: [&str; 5] = [
    "rx_bytes",
    "tx_bytes",
    "rx_datagrams",
    "tx_datagrams",
    "alloc_seconds",
];

/// (hour, account) entries waiting for the store at most.
pub const MAX_PENDING: usize = 100_000;
/// Events waiting for the store at most.
pub const MAX_EVENTS: usize = 100_000;
/// Allocations tracked at most (one entry per live allocation; a node holds far fewer: each
/// needs a relay port and a file).
pub const MAX_TRACKED: usize = 1_000_000;

/// The five counters of [`COUNTERS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub [u64; 5]);

impl Counters {
    /// What `now` adds to `before` (saturating: counters only grow), plus `seconds`.
    fn delta(now: Relayed, before: Relayed, seconds: u64) -> Counters {
        Counters([
            now.to_client_bytes.saturating_sub(before.to_client_bytes),
            now.to_peer_bytes.saturating_sub(before.to_peer_bytes),
            now.to_client_packets
                .saturating_sub(before.to_client_packets),
            now.to_peer_packets.saturating_sub(before.to_peer_packets),
            seconds,
        ])
    }

    fn add(&mut self, o: Counters) {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a = a.saturating_add(b);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&c| c == 0)
    }
}

/// An allocation start or end, for `turnd:events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub end: bool,
    pub alloc: String,
    pub user: String,
    pub client: SocketAddr,
    pub relayed: Vec<SocketAddr>,
    /// Unix seconds of the start or end.
    pub at: u64,
    /// On an end: the allocation's whole counters.
    pub counters: Option<Counters>,
}

impl Event {
    /// The stream entry's fields (`type`, `node`, `alloc`, `user`, `client`, `relayed`, `at`,
    /// and on `end` the five counters).
    pub fn fields(&self, node: &str) -> Vec<(&'static str, String)> {
        let relayed: Vec<String> = self.relayed.iter().map(ToString::to_string).collect();
        let mut f = vec![
            ("type", if self.end { "end" } else { "start" }.to_string()),
            ("node", node.to_string()),
            ("alloc", self.alloc.clone()),
            ("user", self.user.clone()),
            ("client", self.client.to_string()),
            ("relayed", relayed.join(",")),
            ("at", self.at.to_string()),
        ];
        if let Some(c) = self.counters {
            for (name, v) in COUNTERS.iter().zip(c.0) {
                f.push((name, v.to_string()));
            }
        }
        f
    }
}

/// What was last counted of one live allocation.
#[derive(Debug)]
struct Seen {
    account: Box<str>,
    relayed: Relayed,
    /// Allocation-seconds are counted up to this unix time.
    seconds_to: u64,
    created: u64,
}

/// Deltas and events waiting for the store, and what is known of each live allocation.
#[derive(Debug, Default)]
pub struct Usage {
    seen: HashMap<String, Seen>,
    /// (start of the hour, account) → counters not yet written.
    pending: HashMap<(u64, Box<str>), Counters>,
    events: VecDeque<Event>,
    /// Unix time of the oldest delta or event not yet written.
    oldest: Option<u64>,
    pub dropped_usage: u64,
    pub dropped_events: u64,
}

/// One write's worth: deltas and events taken out of [`Usage`].
#[derive(Debug, Default)]
pub struct Batch {
    pub deltas: Vec<((u64, Box<str>), Counters)>,
    pub events: Vec<Event>,
    pub oldest: Option<u64>,
}

/// What an observation changed in the set of live allocations, for `turnd:allocs:{node}`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// Ids of allocations seen for the first time and still live.
    pub started: Vec<String>,
    /// Ids of allocations that ended (including those that started since the last look).
    pub ended: Vec<String>,
}

impl Usage {
    /// Counts what changed since the last observation: `live` (every worker's allocations)
    /// and `ended` (their ended logs, drained after the lists). `account` maps a username to
    /// its account. `now` is the unix time of the observation; deltas of live allocations go
    /// to its hour, an ended allocation's last delta to the hour it ended.
    pub fn observe(
        &mut self,
        live: &[AllocationInfo],
        ended: &[EndedAllocation],
        account: impl Fn(&str) -> Box<str>,
        now: u64,
    ) -> Changed {
        self.observe_partial(live, ended, account, now, |_| false)
    }

    /// [`Usage::observe`] when some workers did not answer: an allocation `unanswered` says is
    /// theirs is kept as it was (neither counted nor forgotten) until they answer again.
    pub fn observe_partial(
        &mut self,
        live: &[AllocationInfo],
        ended: &[EndedAllocation],
        account: impl Fn(&str) -> Box<str>,
        now: u64,
        unanswered: impl Fn(&str) -> bool,
    ) -> Changed {
        let mut changed = Changed::default();
        let ended_ids: std::collections::HashSet<&str> =
            ended.iter().map(|e| e.id.as_str()).collect();
        let mut live_ids = std::collections::HashSet::new();
        for a in live {
            // An allocation listed and then logged as ended (it ended between the two
            // requests) is counted from the log, with its final counters.
            if ended_ids.contains(a.id.as_str()) {
                continue;
            }
            live_ids.insert(a.id.as_str());
            if !self.seen.contains_key(&a.id) {
                if self.seen.len() >= MAX_TRACKED {
                    continue;
                }
                changed.started.push(a.id.clone());
                self.start(
                    &a.id,
                    &a.user,
                    a.client,
                    &a.relays,
                    a.created_unix,
                    &account,
                );
            }
            let Some(s) = self.seen.get_mut(&a.id) else {
                continue;
            };
            let to = now.max(s.seconds_to);
            let d = Counters::delta(a.stats, s.relayed, to - s.seconds_to);
            s.relayed = a.stats;
            s.seconds_to = to;
            let account = s.account.clone();
            self.add(now, account, d);
        }
        for e in ended {
            if !self.seen.contains_key(&e.id) {
                // Started and ended between two observations.
                self.start(
                    &e.id,
                    &e.user,
                    e.client,
                    &e.relays,
                    e.created_unix,
                    &account,
                );
            }
            let Some(s) = self.seen.remove(&e.id) else {
                continue;
            };
            changed.ended.push(e.id.clone());
            let to = e.ended_unix.max(s.seconds_to);
            let d = Counters::delta(e.stats, s.relayed, to - s.seconds_to);
            let whole = Counters::delta(e.stats, Relayed::default(), to.saturating_sub(s.created));
            self.add(e.ended_unix, s.account, d);
            self.event(Event {
                end: true,
                alloc: e.id.clone(),
                user: e.user.clone(),
                client: e.client,
                relayed: e.relays.clone(),
                at: e.ended_unix,
                counters: Some(whole),
            });
        }
        // Neither listed nor logged: its worker's log had no room (counted there). Its last
        // delta is lost; forget it.
        self.seen
            .retain(|id, _| live_ids.contains(id.as_str()) || unanswered(id));
        changed
    }

    fn start(
        &mut self,
        id: &str,
        user: &str,
        client: SocketAddr,
        relays: &[SocketAddr],
        created: u64,
        account: &impl Fn(&str) -> Box<str>,
    ) {
        self.seen.insert(
            id.to_string(),
            Seen {
                account: account(user),
                relayed: Relayed::default(),
                seconds_to: created,
                created,
            },
        );
        self.event(Event {
            end: false,
            alloc: id.to_string(),
            user: user.to_string(),
            client,
            relayed: relays.to_vec(),
            at: created,
            counters: None,
        });
    }

    fn add(&mut self, at: u64, account: Box<str>, d: Counters) {
        if d.is_zero() {
            return;
        }
        let key = (at - at % 3600, account);
        let full = self.pending.len() >= MAX_PENDING;
        match self.pending.get_mut(&key) {
            Some(c) => c.add(d),
            None if full => {
                self.dropped_usage += 1;
                return;
            }
            None => {
                self.pending.insert(key, d);
            }
        }
        self.oldest = Some(self.oldest.map_or(at, |o| o.min(at)));
    }

    fn event(&mut self, e: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.dropped_events += 1;
            return;
        }
        self.oldest = Some(self.oldest.map_or(e.at, |o| o.min(e.at)));
        self.events.push_back(e);
    }

    /// Takes up to `max` deltas and `max` events for one write.
    pub fn take_batch(&mut self, max: usize) -> Batch {
        let keys: Vec<(u64, Box<str>)> = self.pending.keys().take(max).cloned().collect();
        let deltas = keys
            .into_iter()
            .filter_map(|k| self.pending.remove_entry(&k))
            .collect();
        let n = self.events.len().min(max);
        let events = self.events.drain(..n).collect();
        let oldest = self.oldest;
        if self.pending.is_empty() && self.events.is_empty() {
            self.oldest = None;
        }
        Batch {
            deltas,
            events,
            oldest,
        }
    }

    /// Puts back a batch the store did not take (bounded like new deltas: what no longer
    /// fits is dropped and counted).
    pub fn put_back(&mut self, b: Batch) {
        // `add` would date them at their hour's start; their age is the batch's.
        let oldest = self.oldest;
        for ((hour, account), c) in b.deltas {
            self.add(hour, account, c);
        }
        self.oldest = oldest;
        // Back in front, in their order.
        for e in b.events.into_iter().rev() {
            if self.events.len() >= MAX_EVENTS {
                self.dropped_events += 1;
                continue;
            }
            self.events.push_front(e);
        }
        if let Some(o) = b.oldest {
            self.oldest = Some(self.oldest.map_or(o, |x| x.min(o)));
        }
    }

    /// Whether anything waits for the store.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.events.is_empty()
    }

    /// Age in seconds at `now` of the oldest delta or event waiting (0 when none).
    pub fn lag(&self, now: u64) -> u64 {
        self.oldest.map_or(0, |o| now.saturating_sub(o))
    }

    /// Live allocations tracked.
    pub fn tracked(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relayed(tx: u64, rx: u64) -> Relayed {
        Relayed {
            to_peer_packets: tx / 100,
            to_peer_bytes: tx,
            to_client_packets: rx / 100,
            to_client_bytes: rx,
        }
    }

    fn live(id: &str, user: &str, created: u64, stats: Relayed) -> AllocationInfo {
        AllocationInfo {
            id: id.into(),
            user: user.into(),
            transport: "udp",
            client: "192.0.2.1:5000".parse().unwrap(),
            server: "192.0.2.2:3478".parse().unwrap(),
            relay: "192.0.2.2:50000".parse().unwrap(),
            relays: vec!["192.0.2.2:50000".parse().unwrap()],
            created_unix: created,
            expires_unix: created + 600,
            stats,
            permissions: Vec::new(),
            channels: Vec::new(),
        }
    }

    fn ended(id: &str, user: &str, created: u64, at: u64, stats: Relayed) -> EndedAllocation {
        EndedAllocation {
            id: id.into(),
            user: user.into(),
            client: "192.0.2.1:5000".parse().unwrap(),
            relays: vec!["192.0.2.2:50000".parse().unwrap()],
            created_unix: created,
            ended_unix: at,
            stats,
        }
    }

    fn account(u: &str) -> Box<str> {
        u.rsplit(':').next().unwrap_or(u).into()
    }

    /// Sums every pending delta per account.
    fn totals(u: &mut Usage) -> HashMap<Box<str>, Counters> {
        let mut t: HashMap<Box<str>, Counters> = HashMap::new();
        for ((_, a), c) in u.take_batch(usize::MAX).deltas {
            t.entry(a).or_default().add(c);
        }
        t
    }

    const T: u64 = 1_796_540_400; // the start of an hour

    #[test]
    fn deltas_add_up_to_the_final_counters_live_or_ended() {
        let mut u = Usage::default();
        let c = u.observe(
            &[live("0-1-0", "1800000000:carol", T, relayed(1000, 2000))],
            &[],
            account,
            T + 5,
        );
        assert_eq!((c.started, c.ended.len()), (vec!["0-1-0".to_string()], 0));
        u.observe(
            &[live("0-1-0", "1800000000:carol", T, relayed(1500, 2600))],
            &[],
            account,
            T + 10,
        );
        // It ends before the next observation, with bytes a list never showed.
        u.observe(
            &[],
            &[ended(
                "0-1-0",
                "1800000000:carol",
                T,
                T + 12,
                relayed(1700, 2900),
            )],
            account,
            T + 15,
        );
        // One that started and ended between two observations.
        u.observe(
            &[],
            &[ended("1-2-0", "carol", T + 16, T + 18, relayed(10, 20))],
            account,
            T + 20,
        );
        let t = totals(&mut u);
        assert_eq!(t["carol"], Counters([2920, 1710, 29, 17, 14]));
        let events: Vec<(bool, String)> = u
            .take_batch(usize::MAX)
            .events
            .iter()
            .map(|e| (e.end, e.alloc.clone()))
            .collect();
        assert!(events.is_empty(), "taken with the deltas");
        assert_eq!(u.tracked(), 0);
    }

    #[test]
    fn events_carry_starts_and_ends_with_the_whole_counters() {
        let mut u = Usage::default();
        u.observe(
            &[live("0-1-0", "alice", T, relayed(100, 200))],
            &[],
            account,
            T + 5,
        );
        u.observe(
            &[],
            &[ended("0-1-0", "alice", T, T + 7, relayed(300, 400))],
            account,
            T + 10,
        );
        let b = u.take_batch(usize::MAX);
        assert_eq!(b.events.len(), 2);
        assert!(!b.events[0].end);
        assert_eq!(b.events[0].at, T);
        assert!(b.events[1].end);
        assert_eq!(b.events[1].counters, Some(Counters([400, 300, 4, 3, 7])));
        let f = b.events[1].fields("n1");
        assert!(f.contains(&("type", "end".into())));
        assert!(f.contains(&("rx_bytes", "400".into())));
        assert_eq!(b.oldest, Some(T));
        assert_eq!(u.lag(T + 20), 0, "nothing waits");
    }

    #[test]
    fn listed_then_logged_counts_once_from_the_log() {
        let mut u = Usage::default();
        u.observe(
            &[live("0-1-0", "alice", T, relayed(100, 0))],
            &[],
            account,
            T + 1,
        );
        u.observe(
            &[live("0-1-0", "alice", T, relayed(150, 0))],
            &[ended("0-1-0", "alice", T, T + 2, relayed(160, 0))],
            account,
            T + 3,
        );
        assert_eq!(totals(&mut u)["alice"].0[1], 160);
    }

    #[test]
    fn a_worker_that_did_not_answer_keeps_its_allocations_counted_once() {
        let mut u = Usage::default();
        u.observe(
            &[live("1-1-0", "alice", T, relayed(100, 0))],
            &[],
            account,
            T + 1,
        );
        // Worker 1 did not answer this time: its allocation is neither ended nor restarted.
        let c = u.observe_partial(&[], &[], account, T + 2, |id| id.starts_with("1-"));
        assert_eq!(c, Changed::default());
        assert_eq!(u.tracked(), 1);
        u.observe(
            &[live("1-1-0", "alice", T, relayed(250, 0))],
            &[],
            account,
            T + 3,
        );
        assert_eq!(totals(&mut u)["alice"].0[1], 250, "no double count");
        let starts = u.take_batch(usize::MAX).events.len();
        assert_eq!(starts, 0, "taken above; one start only");
    }

    #[test]
    fn a_failed_write_is_put_back_and_the_buffer_is_bounded() {
        let mut u = Usage::default();
        u.observe(
            &[live("0-1-0", "alice", T + 100, relayed(100, 0))],
            &[],
            account,
            T + 101,
        );
        let b = u.take_batch(usize::MAX);
        assert_eq!(b.deltas.len(), 1);
        u.put_back(b);
        // The oldest waiting is the start event (T + 100), not the hour's start (T).
        assert_eq!(u.lag(T + 131), 31);
        assert_eq!(totals(&mut u)["alice"].0[1], 100);
        // Fill the buffer: one entry per account.
        for i in 0..MAX_PENDING + 3 {
            u.add(T, format!("u{i}").into(), Counters([1, 0, 0, 0, 0]));
        }
        assert_eq!(u.pending.len(), MAX_PENDING);
        assert_eq!(u.dropped_usage, 3);
        for i in 0..MAX_EVENTS + 2 {
            u.event(Event {
                end: false,
                alloc: i.to_string(),
                user: String::new(),
                client: "192.0.2.1:1".parse().unwrap(),
                relayed: Vec::new(),
                at: T,
                counters: None,
            });
        }
        assert_eq!((u.events.len(), u.dropped_events), (MAX_EVENTS, 2));
    }

    #[test]
    fn deltas_go_to_the_hour_they_were_seen_in() {
        let mut u = Usage::default();
        u.observe(
            &[live("0-1-0", "alice", T - 10, relayed(100, 0))],
            &[],
            account,
            T - 5,
        );
        u.observe(
            &[live("0-1-0", "alice", T - 10, relayed(300, 0))],
            &[],
            account,
            T + 5,
        );
        let mut hours: Vec<(u64, u64)> = u
            .take_batch(usize::MAX)
            .deltas
            .into_iter()
            .map(|((h, _), c)| (h, c.0[1]))
            .collect();
        hours.sort();
        assert_eq!(hours, vec![(T - 3600, 100), (T, 200)]);
    }
}
