//! What the rest of the process knows of the store task: its health (for the metrics) and a
//! bounded channel to ask it for revocations (for the admin API). The admin listener and the
//! metrics hold a [`Link`] from start-up; it stays empty, and they behave as without a store,
//! unless `store` is set and [`super::spawn`] connects it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Requests waiting for the store task at most; more are refused (503) rather than queued.
pub const REQUESTS: usize = 64;

/// How long the admin API waits for the store task's answer (a write to Redis, which gives
/// up after about 2 s against a store that is down, see `connect.rs`).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A request to the store task.
#[derive(Debug)]
pub enum Request {
    /// Revoke `user` until the unix time `until` ([`crate::core::revocation::FOREVER`]).
    Revoke {
        user: String,
        until: u64,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// End `user`'s revocation now; the answer says whether there was one.
    Unrevoke {
        user: String,
        reply: oneshot::Sender<Result<bool, String>>,
    },
    /// The revocations this node holds now (name, end).
    List(oneshot::Sender<Vec<(String, u64)>>),
}

/// The store task's health, written by it and read by a scrape.
#[derive(Debug, Default)]
pub struct Status {
    /// The last command to Redis succeeded.
    pub up: AtomicBool,
    /// Times the pub/sub connection was made again after it was lost.
    pub reconnects: AtomicU64,
    /// When the cached users and secrets were last read whole (unix seconds; at first the
    /// task's start, so a store that never answers shows an age growing from it).
    pub synced_unix: AtomicU64,
    pub users: AtomicU64,
    pub secrets: AtomicU64,
    pub revoked: AtomicU64,
    /// Store entries left out by the bounds (bad or over `store_max_users`), in the last read.
    pub skipped: AtomicU64,
}

/// The link: empty without a store.
#[derive(Debug, Default)]
pub struct Link {
    pub status: Status,
    requests: OnceLock<mpsc::Sender<Request>>,
}

/// Why the store task did not answer.
#[derive(Debug, PartialEq, Eq)]
pub enum AskError {
    /// No `store` is configured.
    NoStore,
    /// Its queue is full, or it did not answer within [`ANSWER_TIMEOUT`].
    Busy,
}

impl Link {
    /// Whether a store task runs.
    pub fn enabled(&self) -> bool {
        self.requests.get().is_some()
    }

    /// Connects the store task's request channel; false when one is already connected.
    pub fn connect(&self, requests: mpsc::Sender<Request>) -> bool {
        self.requests.set(requests).is_ok()
    }

    /// Sends the request `make` builds around a reply channel and waits for the answer.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, AskError> {
        let requests = self.requests.get().ok_or(AskError::NoStore)?;
        let (tx, rx) = oneshot::channel();
        requests.try_send(make(tx)).map_err(|_| AskError::Busy)?;
        match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            _ => Err(AskError::Busy),
        }
    }

    pub(crate) fn set_up(&self, up: bool) {
        self.status.up.store(up, Ordering::Relaxed);
    }
}
