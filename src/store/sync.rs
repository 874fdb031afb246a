//! The store task, "in" direction (`docs/cluster.md`): keeps this node's copy of the store's
//! users, REST secrets and revocations, swaps it into the workers' credentials, and ends
//! the allocations the fleet asks to end.
//!
//! One tokio task on the main thread's runtime (the one that waits for signals); nothing else
//! in the process talks to Redis, and no worker ever waits for it. It holds two connections:
//! the multiplexed [`ConnectionManager`] for commands, and a dedicated pub/sub connection
//! subscribed to `turnd:changes` (which part to re-read) and `turnd:kill` (allocations to end).
//! A change reaches every node within one pub/sub delivery and one read; a message lost (the
//! pub/sub connection down meanwhile) is caught by the resync after every (re)subscription
//! and by the full resync every [`RESYNC_EVERY`].
//!
//! When Redis is down the node keeps serving what it cached; when Redis comes back empty
//! (`turnd:epoch` gone), it keeps its cache and says so, rather than refuse every store user.

use super::link::{Link, Request};
use super::revoked::{read_revoked, REVOKED_KEY};
use super::secrets::read_secrets;
use super::users::read_users_bounded;
use super::write::{self, CHANGES_CHANNEL, EPOCH_KEY, KILL_CHANNEL};
use crate::core::revocation::Revocations;
use crate::shell::StoreParts;
use redis::aio::ConnectionManager;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A full re-read of users, secrets and revocations this often, in case a message was lost.
pub const RESYNC_EVERY: Duration = Duration::from_secs(30);
/// The first wait before subscribing again after the pub/sub connection was lost; it doubles
/// up to [`super::connect::MAX_BACKOFF`].
const SUBSCRIBE_BACKOFF: Duration = super::connect::MIN_BACKOFF;

/// What the task runs with.
pub struct Settings {
    pub client: redis::Client,
    /// `store_max_users`: most users, and most revocations, kept.
    pub max_users: usize,
    /// This node's id, for `turnd:kill`'s `alloc NODE ID`.
    pub node_id: String,
}

/// A part of the store a `turnd:changes` message names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Users,
    Secrets,
    Revoked,
}

impl Part {
    pub fn parse(message: &str) -> Option<Part> {
        match message {
            "users" => Some(Part::Users),
            "secrets" => Some(Part::Secrets),
            "revoked" => Some(Part::Revoked),
            _ => None,
        }
    }
}

/// A `turnd:kill` message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kill<'a> {
    /// End the allocations of this user (or REST user id).
    User(&'a str),
    /// End allocation `id` (as the admin API names it) if `node` is this node.
    Alloc { node: &'a str, id: &'a str },
}

impl<'a> Kill<'a> {
    pub fn parse(message: &'a str) -> Option<Kill<'a>> {
        if let Some(user) = message.strip_prefix("user ") {
            return (!user.is_empty()).then_some(Kill::User(user));
        }
        let (node, id) = message.strip_prefix("alloc ")?.rsplit_once(' ')?;
        (!node.is_empty() && !id.is_empty()).then_some(Kill::Alloc { node, id })
    }
}

/// What `turnd:epoch` says about the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EpochCheck {
    /// Read it: the same store, a store never written by turnd's CLI, or a new one (an
    /// operator wrote to it since it was emptied).
    Read,
    /// The epoch seen before is gone: the store was emptied. Keep the cache.
    Emptied,
}

/// Compares the epoch seen before with the one read now, and remembers the new one.
pub fn check_epoch(seen: &mut Option<String>, now: Option<String>) -> EpochCheck {
    match (seen.as_ref(), now) {
        (Some(_), None) => EpochCheck::Emptied,
        (_, Some(now)) => {
            *seen = Some(now);
            EpochCheck::Read
        }
        (None, None) => EpochCheck::Read,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Task {
    settings: Settings,
    conn: ConnectionManager,
    parts: StoreParts,
    epoch: Option<String>,
    /// The error about an emptied store is logged once per emptying.
    emptied_logged: bool,
    /// Whether the last command failed, so a store that stays down is logged once.
    down_logged: bool,
    revoked: Arc<Revocations>,
}

/// Runs the task until `requests` closes (never, in turnd: the link holds its sender).
pub async fn run(settings: Settings, parts: StoreParts, mut requests: mpsc::Receiver<Request>) {
    let conn = match super::connect::connect_client(settings.client.clone()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "store: no connection; running with the TOML's users");
            return;
        }
    };
    let link = parts.link.clone();
    link.status.synced_unix.store(unix_now(), Ordering::Relaxed);
    let mut task = Task {
        settings,
        conn,
        parts,
        epoch: None,
        emptied_logged: false,
        down_logged: false,
        revoked: Default::default(),
    };
    let mut pubsub: Option<redis::aio::PubSub> = None;
    let mut subscribed_once = false;
    let mut backoff = SUBSCRIBE_BACKOFF;
    let mut retry_at = tokio::time::Instant::now();
    let mut resync = tokio::time::interval(RESYNC_EVERY);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = next_message(&mut pubsub) => match msg {
                Some((channel, payload)) => task.on_message(&channel, &payload).await,
                None => {
                    tracing::warn!("store: the pub/sub connection was lost; subscribing again");
                    pubsub = None;
                    link.set_up(false);
                    retry_at = tokio::time::Instant::now() + backoff;
                }
            },
            _ = tokio::time::sleep_until(retry_at), if pubsub.is_none() => {
                match subscribe(&task.settings.client).await {
                    Ok(p) => {
                        pubsub = Some(p);
                        backoff = SUBSCRIBE_BACKOFF;
                        if subscribed_once {
                            link.status.reconnects.fetch_add(1, Ordering::Relaxed);
                        }
                        subscribed_once = true;
                        tracing::info!("store: subscribed to turnd:changes and turnd:kill");
                        // Whatever changed while unsubscribed.
                        let _ = task.resync().await;
                    }
                    Err(e) => {
                        task.failed(&e);
                        retry_at = tokio::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(super::connect::MAX_BACKOFF);
                    }
                }
            }
            _ = resync.tick() => {
                // A failed resync also drops the pub/sub connection: one that died without a
                // word (a partition, no RST) would otherwise never be noticed, and the
                // resubscription resyncs once the store answers again.
                if !task.resync().await && pubsub.take().is_some() {
                    retry_at = tokio::time::Instant::now() + backoff;
                }
            }
            req = requests.recv() => match req {
                Some(req) => task.on_request(req).await,
                None => return,
            },
        }
    }
}

/// Subscribes a new pub/sub connection to both channels, within the connect timeout.
async fn subscribe(client: &redis::Client) -> redis::RedisResult<redis::aio::PubSub> {
    let connect = async {
        let mut p = client.get_async_pubsub().await?;
        p.subscribe(&[CHANGES_CHANNEL, KILL_CHANNEL]).await?;
        Ok(p)
    };
    match tokio::time::timeout(super::connect::CONNECT_TIMEOUT * 2, connect).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "subscribing timed out",
        ))),
    }
}

/// The next message's channel and payload; `None` when the connection ended; pending
/// forever without a connection.
async fn next_message(pubsub: &mut Option<redis::aio::PubSub>) -> Option<(String, String)> {
    use futures_util::StreamExt;
    let Some(p) = pubsub.as_mut() else {
        return std::future::pending().await;
    };
    let msg = p.on_message().next().await?;
    let payload: String = msg.get_payload().unwrap_or_default();
    Some((msg.get_channel_name().to_string(), payload))
}

impl Task {
    fn ok(&mut self) {
        self.parts.link.set_up(true);
        if self.down_logged {
            tracing::info!("store: reachable again");
            self.down_logged = false;
        }
    }

    fn failed(&mut self, e: &redis::RedisError) {
        self.parts.link.set_up(false);
        if !self.down_logged {
            tracing::warn!(
                error = ?e.kind(),
                "store: unreachable; serving the cached users, secrets and revocations, \
                 retrying with backoff"
            );
            self.down_logged = true;
        }
    }

    /// Reads `turnd:epoch`: whether the parts may be read.
    async fn epoch_allows_read(&mut self) -> redis::RedisResult<bool> {
        let now: Option<String> = redis::cmd("GET")
            .arg(EPOCH_KEY)
            .query_async(&mut self.conn)
            .await?;
        let before = self.epoch.clone();
        match check_epoch(&mut self.epoch, now) {
            EpochCheck::Read => {
                if before.is_some() && before != self.epoch {
                    tracing::warn!(
                        "store: turnd:epoch changed (a new or refilled store): reading it whole"
                    );
                }
                self.emptied_logged = false;
                Ok(true)
            }
            EpochCheck::Emptied => {
                if !self.emptied_logged {
                    tracing::error!(
                        "store: turnd:epoch is gone: the store was emptied or replaced. Keeping \
                         the cached users, secrets and revocations; they are read again once \
                         the store is written to with `turnd users|secrets|revoke`"
                    );
                    self.emptied_logged = true;
                }
                Ok(false)
            }
        }
    }

    /// Re-reads everything; whether the store answered.
    async fn resync(&mut self) -> bool {
        let r = self
            .read(&[Part::Users, Part::Secrets, Part::Revoked])
            .await;
        if r.is_ok() {
            let status = &self.parts.link.status;
            status.synced_unix.store(unix_now(), Ordering::Relaxed);
        }
        r.is_ok()
    }

    /// Re-reads `parts` (after the epoch check) and serves them; logs a failure.
    async fn read(&mut self, parts: &[Part]) -> redis::RedisResult<()> {
        let r = self.try_read(parts).await;
        match &r {
            Ok(()) => self.ok(),
            Err(e) => self.failed(e),
        }
        r
    }

    async fn try_read(&mut self, parts: &[Part]) -> redis::RedisResult<()> {
        if !self.epoch_allows_read().await? {
            return Ok(());
        }
        let max = self.settings.max_users;
        let link = self.parts.link.clone();
        let status = &link.status;
        let mut skipped = 0;
        for part in parts {
            match part {
                Part::Users => {
                    let found = read_users_bounded(&mut self.conn, max).await?;
                    if found.truncated || found.invalid > 0 {
                        tracing::warn!(
                            invalid = found.invalid,
                            over_bound = found.truncated,
                            store_max_users = max,
                            "store: turnd:users entries left out"
                        );
                    }
                    skipped += found.invalid + usize::from(found.truncated);
                    status
                        .users
                        .store(found.users.len() as u64, Ordering::Relaxed);
                    self.apply(move |l| {
                        let changed = l.store().users != found.users;
                        if changed {
                            l.store_mut().users = found.users;
                        }
                        changed
                    })
                    .await;
                }
                Part::Secrets => {
                    let found = read_secrets(&mut self.conn).await?;
                    if found.skipped > 0 {
                        tracing::warn!(
                            left_out = found.skipped,
                            "store: turnd:secrets entries left out (bad, or over 64)"
                        );
                    }
                    skipped += found.skipped;
                    status
                        .secrets
                        .store(found.secrets.len() as u64, Ordering::Relaxed);
                    self.apply(move |l| {
                        let changed = l.store().secrets != found.secrets;
                        if changed {
                            l.store_mut().secrets = found.secrets;
                        }
                        changed
                    })
                    .await;
                }
                Part::Revoked => {
                    let found = read_revoked(&mut self.conn, unix_now(), max).await?;
                    if found.skipped > 0 {
                        tracing::warn!(
                            left_out = found.skipped,
                            key = REVOKED_KEY,
                            "store: revocations left out (bad names, or over store_max_users)"
                        );
                    }
                    skipped += found.skipped;
                    self.set_revoked(found.revoked).await;
                }
            }
        }
        status.skipped.store(skipped as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Serves `revoked` and ends the allocations of every user newly revoked (also told by
    /// `turnd:kill`, but that message may be lost: ending twice finds nothing the second time).
    async fn set_revoked(&mut self, revoked: Revocations) {
        let now = unix_now();
        let order = self.order();
        let fresh: Vec<String> = revoked
            .iter()
            .filter(|(name, _)| !self.revoked.refuses(name, order, now))
            .map(|(name, _)| name.to_string())
            .collect();
        let revoked = Arc::new(revoked);
        self.parts
            .link
            .status
            .revoked
            .store(revoked.len() as u64, Ordering::Relaxed);
        self.revoked = revoked.clone();
        self.apply(move |l| {
            let changed = *l.store().revoked != *revoked;
            if changed {
                l.store_mut().revoked = revoked;
            }
            changed
        })
        .await;
        for user in fresh {
            self.close_user(&user).await;
        }
    }

    /// Changes the store's layer with `change` on a blocking thread: merging many users takes
    /// a while, and this runtime also waits for signals.
    async fn apply(
        &self,
        change: impl FnOnce(&mut crate::core::credential_layers::CredentialLayers) -> bool
            + Send
            + 'static,
    ) {
        let sink = self.parts.credentials.clone();
        if tokio::task::spawn_blocking(move || sink.update(change))
            .await
            .is_err()
        {
            // Only a panic in the merge gets here: a bug, logged; the old credentials stay.
            tracing::error!("store: merging the credentials failed; the previous ones stay");
        }
    }

    fn order(&self) -> crate::core::auth::RestUsernameOrder {
        self.parts
            .credentials
            .shared()
            .credentials
            .load()
            .rest_policy()
            .order
    }

    async fn close_user(&self, user: &str) {
        let order = self.order();
        match crate::metrics::admin::close_user(&self.parts.admin, user, order).await {
            Some(0) => {}
            Some(n) => tracing::info!(user, allocations = n, "store: ended the user's allocations"),
            None => tracing::warn!(
                user,
                "store: a worker did not answer; its timer ends them later"
            ),
        }
    }

    async fn on_message(&mut self, channel: &str, payload: &str) {
        if channel == CHANGES_CHANNEL {
            match Part::parse(payload) {
                Some(part) => {
                    let _ = self.read(&[part]).await;
                }
                None => tracing::debug!("store: unknown turnd:changes message ignored"),
            }
            return;
        }
        match Kill::parse(payload) {
            Some(Kill::User(user)) => self.close_user(user).await,
            Some(Kill::Alloc { node, id }) if node == self.settings.node_id => {
                match crate::metrics::admin::close(&self.parts.admin, id).await {
                    Some(true) => tracing::info!(allocation = id, "store: allocation ended"),
                    Some(false) => tracing::info!(allocation = id, "store: no such allocation"),
                    None => tracing::warn!(allocation = id, "store: the worker did not answer"),
                }
            }
            Some(Kill::Alloc { .. }) => {}
            None => tracing::debug!("store: unknown turnd:kill message ignored"),
        }
    }

    async fn on_request(&mut self, req: Request) {
        match req {
            Request::Revoke { user, until, reply } => {
                let r = write::revoke(&mut self.conn, &user, until, unix_now()).await;
                let r = match r {
                    Ok(()) => self.read(&[Part::Revoked]).await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(r.map_err(|e| format!("{:?}", e.kind())));
            }
            Request::Unrevoke { user, reply } => {
                let r = match write::unrevoke(&mut self.conn, &user).await {
                    Ok(existed) => self.read(&[Part::Revoked]).await.map(|()| existed),
                    Err(e) => Err(e),
                };
                let _ = reply.send(r.map_err(|e| format!("{:?}", e.kind())));
            }
            Request::List(reply) => {
                let now = unix_now();
                let mut list: Vec<(String, u64)> = self
                    .revoked
                    .iter()
                    .filter(|(_, until)| now < *until)
                    .map(|(n, u)| (n.to_string(), u))
                    .collect();
                list.sort();
                let _ = reply.send(list);
            }
        }
    }
}

/// Starts the task on `rt` and connects `link` to it.
pub fn start(rt: &tokio::runtime::Handle, settings: Settings, parts: StoreParts) {
    let (tx, rx) = mpsc::channel(super::link::REQUESTS);
    let link: Arc<Link> = parts.link.clone();
    link.connect(tx);
    rt.spawn(run(settings, parts, rx));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_and_garbage_is_ignored() {
        assert_eq!(Part::parse("users"), Some(Part::Users));
        assert_eq!(Part::parse("revoked"), Some(Part::Revoked));
        assert_eq!(Part::parse("Users"), None);
        assert_eq!(Kill::parse("user alice"), Some(Kill::User("alice")));
        assert_eq!(Kill::parse("user a b"), Some(Kill::User("a b")));
        assert_eq!(
            Kill::parse("alloc host:12:1700000000 0-3-1"),
            Some(Kill::Alloc {
                node: "host:12:1700000000",
                id: "0-3-1"
            })
        );
        for bad in ["user ", "alloc x", "alloc  1", "kill alice", ""] {
            assert_eq!(Kill::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_epoch_that_disappears_keeps_the_cache_and_a_new_one_is_read() {
        let mut seen = None;
        assert_eq!(check_epoch(&mut seen, None), EpochCheck::Read, "never seen");
        assert_eq!(check_epoch(&mut seen, Some("a".into())), EpochCheck::Read);
        assert_eq!(check_epoch(&mut seen, None), EpochCheck::Emptied);
        assert_eq!(seen.as_deref(), Some("a"), "remembered while emptied");
        assert_eq!(check_epoch(&mut seen, Some("b".into())), EpochCheck::Read);
        assert_eq!(seen.as_deref(), Some("b"));
    }
}
