//! The admin API on the metrics listener: `GET /allocations` lists every allocation of every
//! worker as JSON, `DELETE /allocations/{id}` ends one; the fleet store ends a revoked user's
//! ([`close_user`]). (`/revocations` is in `revocations.rs`.)
//!
//! Allocation tables belong to their workers, so the listener asks each worker over a channel
//! and waits (bounded) for the answers; a worker answers between two batches of datagrams. The
//! relay path never sees these requests.
//!
//! The wait is asynchronous: the listener's runtime serves `/metrics`, `/healthz` and
//! `/readyz` meanwhile, so a slow or stuck worker delays only the admin request that asked it
//! (which answers 504 after [`WORKER_TIMEOUT`]), never a scrape or a health check.

use crate::core::{Allocation, AllocationId, Relayed, Server as Core};
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long the listener waits for the workers' answers to one request.
pub const WORKER_TIMEOUT: Duration = Duration::from_secs(2);

/// A request to one worker.
#[derive(Debug)]
pub enum AdminRequest {
    List(oneshot::Sender<Vec<AllocationInfo>>),
    Close(AllocationId, oneshot::Sender<bool>),
    /// Ends every allocation of a user (a static user name, or a REST username's user id
    /// read in the given order): a revocation (`crate::store`). Answers how many ended.
    CloseUser(
        String,
        crate::core::auth::RestUsernameOrder,
        oneshot::Sender<usize>,
    ),
    /// The allocations that ended since the last drain, with their final counters, and how
    /// many did not fit the log ([`EndedLog`]); the store's usage accounting asks.
    DrainEnded(oneshot::Sender<(Vec<EndedAllocation>, u64)>),
}

/// An allocation that ended, as the store's usage accounting needs it: its final counters,
/// which a later `List` can no longer show.
#[derive(Clone, Debug, PartialEq)]
pub struct EndedAllocation {
    /// As [`AllocationInfo::id`].
    pub id: String,
    pub user: String,
    pub client: SocketAddr,
    pub relays: Vec<SocketAddr>,
    pub created_unix: u64,
    pub ended_unix: u64,
    pub stats: Relayed,
}

/// A worker's log of ended allocations, kept only when a store is configured (capacity 0:
/// nothing kept, nothing counted). Bounded: beyond `capacity` entries not yet drained, an
/// ended allocation is left out and counted, so a stuck store task costs at most this much.
#[derive(Debug, Default)]
pub struct EndedLog {
    entries: Vec<EndedAllocation>,
    capacity: usize,
    overflowed: u64,
}

impl EndedLog {
    /// Ended allocations kept per worker between two drains (every few seconds): about
    /// 200 bytes each, so at most a few MiB per worker.
    pub const CAPACITY: usize = 16_384;

    pub fn new(capacity: usize) -> EndedLog {
        EndedLog {
            entries: Vec::new(),
            capacity,
            overflowed: 0,
        }
    }

    /// Keeps `e` (when enabled and not full; else counts it as left out).
    pub fn push(&mut self, e: impl FnOnce() -> EndedAllocation) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.overflowed += 1;
            return;
        }
        self.entries.push(e());
    }

    /// Everything kept, and the count left out, since the last drain.
    pub fn drain(&mut self) -> (Vec<EndedAllocation>, u64) {
        (
            std::mem::take(&mut self.entries),
            std::mem::take(&mut self.overflowed),
        )
    }

    /// Takes back a drain that could not be delivered (the asker gave up waiting), in front of
    /// what ended since, so nothing is lost; still bounded (the surplus is counted as left out).
    pub fn restore(&mut self, (mut entries, overflowed): (Vec<EndedAllocation>, u64)) {
        self.overflowed += overflowed;
        let room = self.capacity.saturating_sub(self.entries.len());
        if entries.len() > room {
            self.overflowed += (entries.len() - room) as u64;
            entries.truncate(room);
        }
        entries.append(&mut self.entries);
        self.entries = entries;
    }
}

pub type AdminSender = tokio::sync::mpsc::UnboundedSender<AdminRequest>;
pub type AdminReceiver = tokio::sync::mpsc::UnboundedReceiver<AdminRequest>;

/// One allocation as the admin API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct AllocationInfo {
    /// `worker-index-generation`: stable for the allocation's life, never reused at once.
    pub id: String,
    pub user: String,
    pub transport: &'static str,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub relay: SocketAddr,
    /// Every relayed address it holds now: one, or two for a dual allocation (one fewer once
    /// a family was deleted or expired).
    pub relays: Vec<SocketAddr>,
    pub created_unix: u64,
    pub expires_unix: u64,
    pub stats: Relayed,
    pub permissions: Vec<IpAddr>,
    pub channels: Vec<(u16, SocketAddr)>,
}

pub fn format_id(worker: usize, id: AllocationId) -> String {
    format!("{worker}-{}-{}", id.index, id.generation)
}

pub fn parse_id(s: &str) -> Option<(usize, AllocationId)> {
    let mut it = s.split('-');
    let (w, i, g) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    Some((
        w.parse().ok()?,
        AllocationId {
            index: i.parse().ok()?,
            generation: g.parse().ok()?,
        },
    ))
}

fn info(worker: usize, a: &Allocation, now: Instant, unix_now: u64) -> AllocationInfo {
    let unix = |t: Instant| {
        if t >= now {
            unix_now + (t - now).as_secs()
        } else {
            unix_now.saturating_sub((now - t).as_secs())
        }
    };
    AllocationInfo {
        id: format_id(worker, a.id),
        user: a.username.to_string(),
        transport: a.five_tuple.transport.as_str(),
        client: a.five_tuple.client,
        server: a.five_tuple.server,
        relay: a.advertised,
        relays: a.advertised_relays().collect(),
        created_unix: unix(a.created),
        expires_unix: unix(a.expires),
        stats: a.relayed(),
        permissions: a
            .permissions
            .iter()
            .filter(|p| p.expires > now)
            .map(|p| p.ip)
            .collect(),
        channels: a.channels.active(now).map(|c| (c.number, c.peer)).collect(),
    }
}

/// Answers one request on the worker's thread; true when the core has outputs to drain.
/// `kernel` adds what the XDP fast path has relayed so far for an allocation to its stats (the
/// core counts only what crossed user space): the listed stats, and the store's usage computed
/// from them, include kernel traffic while the allocation lasts.
pub fn handle(
    core: &mut Core,
    ended: &mut EndedLog,
    worker: usize,
    req: AdminRequest,
    unix_now: u64,
    kernel: impl Fn(AllocationId, &mut Relayed),
) -> bool {
    let now = Instant::now();
    match req {
        AdminRequest::DrainEnded(tx) => {
            if let Err(undelivered) = tx.send(ended.drain()) {
                ended.restore(undelivered);
            }
            false
        }
        AdminRequest::List(tx) => {
            let list = core
                .allocations()
                .filter(|a| a.state == crate::core::allocation::State::Active)
                .map(|a| {
                    let mut i = info(worker, a, now, unix_now);
                    kernel(a.id, &mut i.stats);
                    i
                })
                .collect();
            let _ = tx.send(list);
            false
        }
        AdminRequest::Close(id, tx) => {
            let closed = core.close(now, id);
            let _ = tx.send(closed);
            closed
        }
        AdminRequest::CloseUser(user, order, tx) => {
            let ids: Vec<AllocationId> = core
                .allocations()
                .filter(|a| crate::core::revocation::belongs_to(&a.username, &user, order))
                .map(|a| a.id)
                .collect();
            let closed = ids.into_iter().filter(|&id| core.close(now, id)).count();
            let _ = tx.send(closed);
            closed > 0
        }
    }
}

/// Ends `user`'s allocations on every worker at once; how many ended, `None` when a worker
/// did not answer within [`WORKER_TIMEOUT`].
pub async fn close_user(
    workers: &[AdminSender],
    user: &str,
    order: crate::core::auth::RestUsernameOrder,
) -> Option<usize> {
    let mut answers = Vec::new();
    for w in workers {
        let (tx, rx) = oneshot::channel();
        w.send(AdminRequest::CloseUser(user.to_string(), order, tx))
            .ok()?;
        answers.push(rx);
    }
    let deadline = tokio::time::Instant::now() + WORKER_TIMEOUT;
    let mut closed = 0;
    for rx in answers {
        closed += tokio::time::timeout_at(deadline, rx).await.ok()?.ok()?;
    }
    Some(closed)
}

/// Every worker's allocations; `None` when a worker did not answer within
/// [`WORKER_TIMEOUT`] (all workers are asked at once, so that is the whole wait).
pub async fn list(workers: &[AdminSender]) -> Option<Vec<AllocationInfo>> {
    let mut answers = Vec::new();
    for w in workers {
        let (tx, rx) = oneshot::channel();
        w.send(AdminRequest::List(tx)).ok()?;
        answers.push(rx);
    }
    let deadline = tokio::time::Instant::now() + WORKER_TIMEOUT;
    let mut all = Vec::new();
    for rx in answers {
        all.extend(tokio::time::timeout_at(deadline, rx).await.ok()?.ok()?);
    }
    Some(all)
}

/// What one worker answered to [`list_and_drain_ended`]: its live allocations, its ended ones
/// since the last drain, and how many its log left out.
pub type WorkerUsage = (Vec<AllocationInfo>, Vec<EndedAllocation>, u64);

/// Every worker's allocations, then its ended allocations since the last drain, asked in that
/// order on the worker's channel so that an allocation ending meanwhile is in one list or the
/// other. One entry per worker, `None` for a worker that did not answer within
/// [`WORKER_TIMEOUT`] (its undelivered drain goes back into its log: nothing is lost).
pub async fn list_and_drain_ended(workers: &[AdminSender]) -> Vec<Option<WorkerUsage>> {
    let mut asked = Vec::new();
    for w in workers {
        let (ltx, lrx) = oneshot::channel();
        let (dtx, drx) = oneshot::channel();
        let sent = w.send(AdminRequest::List(ltx)).is_ok()
            && w.send(AdminRequest::DrainEnded(dtx)).is_ok();
        asked.push(sent.then_some((lrx, drx)));
    }
    let deadline = tokio::time::Instant::now() + WORKER_TIMEOUT;
    let mut answers = Vec::new();
    for a in asked {
        let answer = match a {
            Some((l, d)) => {
                let live = tokio::time::timeout_at(deadline, l)
                    .await
                    .ok()
                    .and_then(Result::ok);
                let ended = tokio::time::timeout_at(deadline, d)
                    .await
                    .ok()
                    .and_then(Result::ok);
                live.zip(ended)
                    .map(|(live, (ended, left_out))| (live, ended, left_out))
            }
            None => None,
        };
        answers.push(answer);
    }
    answers
}

/// Ends allocation `id`: `Some(true)` when it existed, `None` when its worker did not answer.
pub async fn close(workers: &[AdminSender], id: &str) -> Option<bool> {
    let Some((w, id)) = parse_id(id) else {
        return Some(false);
    };
    let Some(worker) = workers.get(w) else {
        return Some(false);
    };
    let (tx, rx) = oneshot::channel();
    worker.send(AdminRequest::Close(id, tx)).ok()?;
    tokio::time::timeout(WORKER_TIMEOUT, rx).await.ok()?.ok()
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The JSON body of `GET /allocations`.
pub fn to_json(list: &[AllocationInfo]) -> String {
    let mut o = String::from("{\"allocations\":[");
    for (i, a) in list.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str("{\"id\":");
        json_str(&mut o, &a.id);
        o.push_str(",\"user\":");
        json_str(&mut o, &a.user);
        let _ = write!(
            o,
            ",\"transport\":\"{}\",\"client\":\"{}\",\"server\":\"{}\",\"relay\":\"{}\",\
             \"relays\":{},\"created\":{},\"expires\":{},\"client_to_peer_bytes\":{},\
             \"client_to_peer_datagrams\":{},\"peer_to_client_bytes\":{},\
             \"peer_to_client_datagrams\":{},\"permissions\":[",
            a.transport,
            a.client,
            a.server,
            a.relay,
            json_addrs(&a.relays),
            a.created_unix,
            a.expires_unix,
            a.stats.to_peer_bytes,
            a.stats.to_peer_packets,
            a.stats.to_client_bytes,
            a.stats.to_client_packets,
        );
        for (k, ip) in a.permissions.iter().enumerate() {
            let _ = write!(o, "{}\"{ip}\"", if k > 0 { "," } else { "" });
        }
        o.push_str("],\"channels\":[");
        for (k, (n, peer)) in a.channels.iter().enumerate() {
            let _ = write!(
                o,
                "{}{{\"number\":{n},\"peer\":\"{peer}\"}}",
                if k > 0 { "," } else { "" }
            );
        }
        o.push_str("]}");
    }
    o.push_str("]}\n");
    o
}

/// A JSON array of address strings.
fn json_addrs(addrs: &[SocketAddr]) -> String {
    let items: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ended_log_is_off_without_capacity_and_bounded_with_it() {
        let e = || EndedAllocation {
            id: "0-1-0".into(),
            user: "alice".into(),
            client: "192.0.2.1:5000".parse().unwrap(),
            relays: Vec::new(),
            created_unix: 1,
            ended_unix: 2,
            stats: Relayed::default(),
        };
        let mut off = EndedLog::new(0);
        off.push(e);
        assert_eq!(off.drain(), (Vec::new(), 0));
        let mut log = EndedLog::new(3);
        for _ in 0..5 {
            log.push(e);
        }
        let (kept, left_out) = log.drain();
        assert_eq!((kept.len(), left_out), (3, 2));
        assert_eq!(log.drain(), (Vec::new(), 0), "a drain empties it");
        // An undelivered drain comes back first, within the bound.
        log.push(|| EndedAllocation {
            id: "0-9-0".into(),
            ..e()
        });
        log.restore((kept, left_out));
        let (kept, left_out) = log.drain();
        assert_eq!(kept.len(), 3);
        assert_eq!(kept[0].id, "0-1-0");
        assert_eq!(left_out, 2 + 1, "the one that no longer fit is counted");
    }

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id = AllocationId {
            index: 7,
            generation: 3,
        };
        assert_eq!(format_id(2, id), "2-7-3");
        assert_eq!(parse_id("2-7-3"), Some((2, id)));
        for bad in ["", "2-7", "2-7-3-1", "a-7-3", "2--3", "-1-2-3"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn json_escapes_usernames() {
        let a = AllocationInfo {
            id: "0-1-0".into(),
            user: "1700000000:a\"b\\c\n".into(),
            transport: "udp",
            client: "192.0.2.1:5000".parse().unwrap(),
            server: "192.0.2.2:3478".parse().unwrap(),
            relay: "192.0.2.2:50000".parse().unwrap(),
            relays: vec![
                "192.0.2.2:50000".parse().unwrap(),
                "[2001:db8::2]:50001".parse().unwrap(),
            ],
            created_unix: 10,
            expires_unix: 610,
            stats: Relayed {
                to_peer_packets: 1,
                to_peer_bytes: 2,
                to_client_packets: 3,
                to_client_bytes: 4,
            },
            permissions: vec!["198.51.100.1".parse().unwrap()],
            channels: vec![(0x4000, "198.51.100.1:9".parse().unwrap())],
        };
        let j = to_json(&[a]);
        assert!(j.contains(r#""user":"1700000000:a\"b\\c\u000a""#), "{j}");
        assert!(j.contains(r#""permissions":["198.51.100.1"]"#), "{j}");
        assert!(j.contains(r#""channels":[{"number":16384,"peer":"198.51.100.1:9"}]"#));
        assert!(j.contains(r#""client_to_peer_bytes":2"#));
        assert!(
            j.contains(r#""relays":["192.0.2.2:50000","[2001:db8::2]:50001"]"#),
            "{j}"
        );
        assert_eq!(to_json(&[]), "{\"allocations\":[]}\n");
    }
}
