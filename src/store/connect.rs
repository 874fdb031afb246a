//! Opening the store: a redis-rs `ConnectionManager` built from the `store` URL.
//!
//! The manager is one multiplexed connection that reconnects by itself with exponential backoff,
//! so a Redis that restarts or a network that drops for a while costs failed commands, not a
//! dead node. It connects lazily: a node whose store is down at start-up still starts (with its
//! TOML users) and the first command that reaches Redis finds the connection made.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::fmt;
use std::time::Duration;

/// The first reconnection delay; it doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two reconnection attempts, so a store back after an outage is
/// found again within this long.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Reconnection attempts one command makes before it fails. Few: a command that waited for
/// every attempt of a long backoff would keep the store task (resync, accounting) from its
/// other work for tens of seconds (19 s with redis-rs's default of 6, measured in
/// `tests/store_redis.rs`); the store task tries again on its own schedule instead.
pub const RETRIES_PER_COMMAND: usize = 2;
/// How long one connection attempt (TCP, TLS, AUTH, SELECT) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may wait for its answer: a stuck Redis must fail a resync, not hold
/// the store task forever.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the store URL could not be used. Never holds the URL, which may hold a password.
#[derive(Debug)]
pub struct ConnectError(redis::RedisError);

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the store URL cannot be used: {:?}", self.0.kind())
    }
}

impl std::error::Error for ConnectError {}

impl From<redis::RedisError> for ConnectError {
    fn from(e: redis::RedisError) -> Self {
        ConnectError(e)
    }
}

/// A connection manager for `url` (`redis://` or `rediss://`), connected lazily: this returns
/// without waiting for Redis and must be called inside a tokio runtime.
pub fn connect(url: &str) -> Result<ConnectionManager, ConnectError> {
    connect_client(redis::Client::open(url).map_err(ConnectError)?)
}

/// [`connect`] for a client already made.
pub fn connect_client(client: redis::Client) -> Result<ConnectionManager, ConnectError> {
    let config = ConnectionManagerConfig::new()
        .set_min_delay(MIN_BACKOFF)
        .set_max_delay(MAX_BACKOFF)
        .set_number_of_retries(RETRIES_PER_COMMAND)
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    ConnectionManager::new_lazy_with_config(client, config).map_err(ConnectError)
}
