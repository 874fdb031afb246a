//! The report task: what this node tells the fleet's store (docs/cluster.md), one tokio task
//! on the runtime that serves signals, with its own connection. It
//!
//! - registers the node (`turnd:node:{node}` with a lease, `turnd:nodes`) every
//!   [`REFRESH`], and its live allocations (`turnd:allocs:{node}`);
//! - writes this node's quota counts (`turnd:count:{node}`) within [`COALESCE`] of a change
//!   and publishes `counts` on `turnd:changes`; reads the other live nodes' counts on that
//!   message and every [`OTHERS_EVERY`] into the workers' quota snapshot, which it clears
//!   after a [`LEASE`] without a successful read (the node then counts alone);
//! - accounts usage: every [`OBSERVE_EVERY`] (sooner after a change) it asks every worker for
//!   its allocations and its ended ones, and every [`FLUSH_EVERY`] writes the deltas
//!   (`HINCRBY` into the hour and day buckets) and the start/end events (`XADD`).
//!
//! Nothing here is on the relay path: the workers answer admin requests between two batches,
//! and a store that is slow or down slows only this task (its writes are retried on its own
//! schedule, what waits is bounded and what is dropped counted).

use super::keys::{self, LEASE, REFRESH};
use super::stats::{Dropped, StoreStats};
use super::usage::{Batch, Usage, COUNTERS};
use super::{counts, node};
use crate::core::Shared;
use crate::metrics::admin::{self, AdminSender, AllocationInfo};
use redis::aio::ConnectionManager;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// How long a change of this node's counts may wait before it is written, so a burst of
/// allocations costs one write.
pub const COALESCE: Duration = Duration::from_millis(50);
/// How often the other nodes' counts are read at least (also on every `counts` message).
pub const OTHERS_EVERY: Duration = Duration::from_secs(1);
/// How often the workers' allocations are observed at least (sooner, at most once per
/// [`OBSERVE_MIN`], after the node's counts changed).
pub const OBSERVE_EVERY: Duration = REFRESH;
/// The shortest time between two observations.
pub const OBSERVE_MIN: Duration = Duration::from_secs(1);
/// How often usage deltas and events are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// Deltas (and events) per transaction.
const FLUSH_BATCH: usize = 2_000;
/// After a failed write, the same write waits this long before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the report task needs of the running server ([`crate::shell::Server::store_link`]).
pub struct Link {
    pub shared: Arc<Shared>,
    pub workers: Vec<AdminSender>,
    pub stats: Arc<StoreStats>,
    pub udp: Vec<SocketAddr>,
    pub metrics: SocketAddr,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The running report task: its node id, and the way to make it leave the fleet.
pub struct Reporter {
    pub node: String,
    leave: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
}

impl Reporter {
    /// Before the process exits (after draining, while the workers still answer): a last
    /// usage report and flush, then this node's keys are deleted so the other nodes stop
    /// counting its allocations at once instead of after the lease. Waits at most `timeout`.
    pub async fn leave(&self, timeout: Duration) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.leave.send(tx).await.is_ok() {
            let _ = tokio::time::timeout(timeout, rx).await;
        }
    }
}

/// How long [`Reporter::leave`] is given at exit.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Starts the report task on `rt` for the store `client` (its URL, and password if any),
/// as node [`node::node_id`]. Returns its handle, or why the client cannot be used.
pub fn spawn(
    rt: &tokio::runtime::Handle,
    link: Link,
    client: redis::Client,
) -> Result<Reporter, super::ConnectError> {
    let started = unix_now();
    let node = node::node_id().to_string();
    let _enter = rt.enter();
    let conn = super::connect::connect_client(client.clone())?;
    let changes = Arc::new(Notify::new());
    // The subscriber: another node's `counts NODE` wakes the report task to re-read.
    rt.spawn(subscribe(client, node.clone(), changes.clone()));
    let task = Report {
        node: node.clone(),
        started,
        conn,
        link,
        usage: Usage::default(),
        written_generation: None,
        others_read_at: None,
        snapshot_cleared: true,
        last_observe: None,
        observed_generation: 0,
        allocs_rewrite: true,
    };
    let (leave, leave_rx) = tokio::sync::mpsc::channel(1);
    rt.spawn(task.run(changes, leave_rx));
    Ok(Reporter { node, leave })
}

/// Listens to `turnd:changes` on a pub/sub connection of its own and wakes `changes` on
/// every other node's `counts NODE`; reconnects with backoff (the same as the connection manager's).
async fn subscribe(client: redis::Client, node: String, changes: Arc<Notify>) {
    use futures_util::StreamExt;
    let mut backoff = super::connect::MIN_BACKOFF;
    loop {
        let connected =
            tokio::time::timeout(super::connect::CONNECT_TIMEOUT, client.get_async_pubsub()).await;
        if let Ok(Ok(mut pubsub)) = connected {
            if pubsub.subscribe(keys::CHANGES).await.is_ok() {
                backoff = super::connect::MIN_BACKOFF;
                // A message may have been missed while unsubscribed: read now.
                changes.notify_one();
                let mut messages = pubsub.on_message();
                // Ends when the connection drops.
                while let Some(msg) = messages.next().await {
                    if keys::is_others_counts(msg.get_payload_bytes(), &node) {
                        changes.notify_one();
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(super::connect::MAX_BACKOFF);
    }
}

struct Report {
    node: String,
    started: u64,
    conn: ConnectionManager,
    link: Link,
    usage: Usage,
    /// The quota generation last written to the store (`None`: write now).
    written_generation: Option<u64>,
    /// When the others' counts were last read successfully.
    others_read_at: Option<Instant>,
    snapshot_cleared: bool,
    last_observe: Option<Instant>,
    /// The quota generation at the last observation.
    observed_generation: u64,
    /// `turnd:allocs:{node}` must be rewritten whole (at start, after a failed or skipped
    /// write, when the store lost it); otherwise only what changed is written.
    allocs_rewrite: bool,
}

impl Report {
    async fn run(
        mut self,
        changes: Arc<Notify>,
        mut leave: tokio::sync::mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
    ) {
        tracing::info!(node = %self.node, "store: reporting this node to the fleet");
        let mut coalesce = tokio::time::interval(COALESCE);
        coalesce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut others = tokio::time::interval(OTHERS_EVERY);
        others.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh = tokio::time::interval(REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut write_retry_at = Instant::now();
        loop {
            tokio::select! {
                _ = coalesce.tick() => {
                    let generation = self.link.shared.quotas.generation();
                    if self.written_generation != Some(generation)
                        && Instant::now() >= write_retry_at
                    {
                        if self.write_counts(generation).await {
                            write_retry_at = Instant::now();
                        } else {
                            write_retry_at = Instant::now() + RETRY_AFTER;
                        }
                    }
                    let due = self.last_observe.is_none_or(|t| t.elapsed() >= OBSERVE_EVERY)
                        || (generation != self.observed_generation
                            && self.last_observe.is_none_or(|t| t.elapsed() >= OBSERVE_MIN));
                    if due {
                        self.observe(generation).await;
                    }
                }
                _ = changes.notified() => self.read_others().await,
                _ = others.tick() => self.read_others().await,
                _ = refresh.tick() => self.register().await,
                _ = flush.tick() => self.flush().await,
                done = leave.recv() => {
                    self.leave().await;
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
            }
        }
    }

    /// The last report: usage up to now, then this node's keys go.
    async fn leave(&mut self) {
        let generation = self.link.shared.quotas.generation();
        self.observe(generation).await;
        self.flush().await;
        let result = redis::pipe()
            .atomic()
            .del(keys::node(&self.node))
            .ignore()
            .del(keys::count(&self.node))
            .ignore()
            .del(keys::allocs(&self.node))
            .ignore()
            .zrem(keys::NODES, &self.node)
            .ignore()
            .publish(keys::CHANGES, keys::counts_changed(&self.node))
            .ignore()
            .exec_async(&mut self.conn)
            .await;
        match result {
            Ok(()) => tracing::info!(node = %self.node, "store: left the fleet"),
            Err(e) => tracing::warn!(
                error = ?e.kind(),
                "store: could not leave the fleet; this node's keys expire with their lease"
            ),
        }
    }

    /// Writes this node's counts; true when the store took them.
    async fn write_counts(&mut self, generation: u64) -> bool {
        let (users, total) = self.link.shared.quotas.own_counts();
        match counts::write(&mut self.conn, &self.node, &users, total).await {
            Ok(()) => {
                self.written_generation = Some(generation);
                true
            }
            Err(e) => {
                tracing::debug!(error = ?e.kind(), "store: counts not written");
                false
            }
        }
    }

    /// Reads the other live nodes' counts into the quota snapshot; after a lease without a
    /// successful read, clears it (this node counts alone, as without a store).
    async fn read_others(&mut self) {
        match counts::read_others(&mut self.conn, &self.node).await {
            Ok(others) => {
                self.others_read_at = Some(Instant::now());
                self.snapshot_cleared = false;
                self.link.stats.set_others_total(others.total);
                self.link.shared.quotas.set_others(others);
            }
            Err(e) => {
                let stale = self.others_read_at.is_none_or(|t| t.elapsed() >= LEASE);
                if stale && !self.snapshot_cleared {
                    tracing::warn!(
                        error = ?e.kind(),
                        "store: the other nodes' counts could not be read for a lease; quotas \
                         count this node alone until the store answers"
                    );
                    self.link.shared.quotas.set_others(Default::default());
                    self.link.stats.set_others_total(0);
                    self.snapshot_cleared = true;
                }
            }
        }
    }

    /// Renews the node's lease and registration; finds a store that lost this node's keys
    /// (restarted empty, or replaced) and writes them again.
    async fn register(&mut self) {
        let now = unix_now();
        let info = node::info_json(
            &self.node,
            &self.link.udp,
            self.link.metrics,
            self.started,
            self.link.shared.quotas.total(),
        );
        let lease = LEASE.as_millis() as i64;
        let count_key = keys::count(&self.node);
        let result: redis::RedisResult<(bool, bool)> = redis::pipe()
            .atomic()
            .set(keys::node(&self.node), info)
            .arg("PX")
            .arg(lease)
            .ignore()
            .zadd(keys::NODES, &self.node, now)
            .ignore()
            // Members not refreshed for four leases are dead nodes: their keys expired.
            .cmd("ZREMRANGEBYSCORE")
            .arg(keys::NODES)
            .arg("-inf")
            .arg(now.saturating_sub(4 * LEASE.as_secs()))
            .ignore()
            .pexpire(&count_key, lease)
            .pexpire(keys::allocs(&self.node), lease)
            .query_async(&mut self.conn)
            .await;
        match result {
            Ok((counts_kept, allocs_kept)) => {
                if !counts_kept {
                    // Lost (a restarted store): write the counts at once.
                    self.written_generation = None;
                }
                if !allocs_kept && self.usage.tracked() > 0 {
                    // Lost (a restarted store): rewritten whole. (No key is what a node
                    // without allocations has anyway.)
                    self.allocs_rewrite = true;
                }
            }
            Err(e) => tracing::debug!(error = ?e.kind(), "store: lease not renewed"),
        }
    }

    /// Asks every worker for its allocations and ended ones, counts the usage, and brings
    /// `turnd:allocs:{node}` up to date: what started and ended, or all of it when it must be
    /// rewritten whole.
    async fn observe(&mut self, generation: u64) {
        self.last_observe = Some(Instant::now());
        self.observed_generation = generation;
        let answers = admin::list_and_drain_ended(&self.link.workers).await;
        let unanswered: Vec<usize> = answers
            .iter()
            .enumerate()
            .filter_map(|(w, a)| a.is_none().then_some(w))
            .collect();
        if !unanswered.is_empty() {
            tracing::debug!(workers = ?unanswered, "store: workers did not answer the usage request");
        }
        let (mut live, mut ended, mut left_out) = (Vec::new(), Vec::new(), 0);
        for (l, e, n) in answers.into_iter().flatten() {
            live.extend(l);
            ended.extend(e);
            left_out += n;
        }
        if left_out > 0 {
            self.link.stats.add_dropped(Dropped::Ended, left_out);
        }
        let credentials = self.link.shared.credentials.load();
        // An id is `worker-slot-generation` (admin::format_id).
        let unanswered_worker = |id: &str| {
            id.split('-')
                .next()
                .and_then(|w| w.parse::<usize>().ok())
                .is_some_and(|w| unanswered.contains(&w))
        };
        let changed = self.usage.observe_partial(
            &live,
            &ended,
            |u| credentials.account_of(u).into(),
            unix_now(),
            unanswered_worker,
        );
        self.sync_stats();
        // A partial list would drop the silent workers' allocations from the fleet view: the
        // next complete one rewrites it whole.
        if !unanswered.is_empty() {
            self.allocs_rewrite = true;
            return;
        }
        let ok = if self.allocs_rewrite {
            self.write_allocs(&live).await
        } else if !changed.started.is_empty() || !changed.ended.is_empty() {
            let started: std::collections::HashSet<&str> =
                changed.started.iter().map(String::as_str).collect();
            let new: Vec<&AllocationInfo> = live
                .iter()
                .filter(|a| started.contains(a.id.as_str()))
                .collect();
            self.write_allocs_changes(&new, &changed.ended).await
        } else {
            true
        };
        self.allocs_rewrite = !ok;
    }

    /// Replaces `turnd:allocs:{node}` with `live`, under the lease: one transaction. True when
    /// written.
    async fn write_allocs(&mut self, live: &[AllocationInfo]) -> bool {
        let key = keys::allocs(&self.node);
        let mut p = redis::pipe();
        p.atomic().del(&key).ignore();
        if !live.is_empty() {
            let mut hset = redis::cmd("HSET");
            hset.arg(&key);
            for a in live {
                hset.arg(&a.id).arg(alloc_json(a));
            }
            p.add_command(hset).ignore();
            p.pexpire(&key, LEASE.as_millis() as i64).ignore();
        }
        self.exec_allocs(p).await
    }

    /// Adds the allocations that started and removes those that ended: one transaction, its
    /// size that of the change, not of the table.
    async fn write_allocs_changes(
        &mut self,
        started: &[&AllocationInfo],
        ended: &[String],
    ) -> bool {
        let key = keys::allocs(&self.node);
        let mut p = redis::pipe();
        p.atomic();
        if !ended.is_empty() {
            let mut hdel = redis::cmd("HDEL");
            hdel.arg(&key).arg(ended);
            p.add_command(hdel).ignore();
        }
        if !started.is_empty() {
            let mut hset = redis::cmd("HSET");
            hset.arg(&key);
            for a in started {
                hset.arg(&a.id).arg(alloc_json(a));
            }
            p.add_command(hset).ignore();
        }
        p.pexpire(&key, LEASE.as_millis() as i64).ignore();
        self.exec_allocs(p).await
    }

    async fn exec_allocs(&mut self, p: redis::Pipeline) -> bool {
        match p.exec_async(&mut self.conn).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = ?e.kind(), "store: allocations not written");
                false
            }
        }
    }

    /// Writes waiting usage deltas and events, a transaction of at most [`FLUSH_BATCH`] of
    /// each at a time; what fails goes back to wait for the next flush.
    async fn flush(&mut self) {
        // Bounded: each round takes up to FLUSH_BATCH out, and a failure ends the flush.
        while !self.usage.is_empty() {
            let batch = self.usage.take_batch(FLUSH_BATCH);
            let p = usage_pipeline(&self.node, &batch);
            match tokio::time::timeout(RETRY_AFTER * 5, p.exec_async(&mut self.conn)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = ?e.kind(), "store: usage not written; kept for later");
                    self.usage.put_back(batch);
                    break;
                }
                Err(_) => {
                    self.usage.put_back(batch);
                    break;
                }
            }
        }
        self.sync_stats();
    }

    /// Publishes what the usage buffer dropped and its lag.
    fn sync_stats(&mut self) {
        let s = &self.link.stats;
        let (u, e) = (
            std::mem::take(&mut self.usage.dropped_usage),
            std::mem::take(&mut self.usage.dropped_events),
        );
        if u > 0 {
            s.add_dropped(Dropped::Usage, u);
        }
        if e > 0 {
            s.add_dropped(Dropped::Events, e);
        }
        s.set_lag(self.usage.lag(unix_now()));
    }
}

/// One transaction: `HINCRBY` of every delta into its hour and day bucket, their TTLs, and
/// an `XADD` per event.
pub fn usage_pipeline(node: &str, b: &Batch) -> redis::Pipeline {
    let mut p = redis::pipe();
    p.atomic();
    let mut hours = std::collections::HashSet::new();
    for ((hour, account), c) in &b.deltas {
        let (hk, dk) = (keys::usage_hour(*hour), keys::usage_day(*hour));
        for (name, v) in COUNTERS.iter().zip(c.0) {
            if v > 0 {
                let field = format!("{name}:{account}");
                p.hincr(&hk, &field, v).ignore();
                p.hincr(&dk, &field, v).ignore();
            }
        }
        hours.insert(*hour);
    }
    for hour in hours {
        p.expire(
            keys::usage_hour(hour),
            keys::USAGE_HOUR_TTL.as_secs() as i64,
        )
        .ignore();
        p.expire(keys::usage_day(hour), keys::USAGE_DAY_TTL.as_secs() as i64)
            .ignore();
    }
    for e in &b.events {
        let mut x = redis::cmd("XADD");
        x.arg(keys::EVENTS)
            .arg("MAXLEN")
            .arg("~")
            .arg(keys::EVENTS_MAXLEN)
            .arg("*");
        for (k, v) in e.fields(node) {
            x.arg(k).arg(v);
        }
        p.add_command(x).ignore();
    }
    p
}

/// The JSON value of one allocation in `turnd:allocs:{node}`.
pub fn alloc_json(a: &AllocationInfo) -> String {
    serde_json::json!({
        "id": a.id,
        "user": a.user,
        "transport": a.transport,
        "client": a.client.to_string(),
        "relayed": a.relays.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "start": a.created_unix,
        "expires": a.expires_unix,
    })
    .to_string()
}
