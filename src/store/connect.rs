//! Opening the store: a redis-rs `ConnectionManager` built from the `store` URL.
//!
//! The manager is one multiplexed connection that reconnects by itself with exponential backoff,
//! so a Redis that restarts or a network that drops for a while costs failed commands, not a
//! dead node. It connects lazily: a node whose store is down at start-up still starts (with its
//! TOML users) and the first command that reaches Redis finds the connection made.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::IntoConnectionInfo;
use std::fmt;
use std::path::Path;
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

/// [`connect`] for a client already made (with its password, see [`client`]).
pub fn connect_client(client: redis::Client) -> Result<ConnectionManager, ConnectError> {
    let config = ConnectionManagerConfig::new()
        .set_min_delay(MIN_BACKOFF)
        .set_max_delay(MAX_BACKOFF)
        .set_number_of_retries(RETRIES_PER_COMMAND)
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    ConnectionManager::new_lazy_with_config(client, config).map_err(ConnectError)
}

/// The client for `url`, with the password from `password_file` (its first line) or, failing
/// that, from `TURND_STORE_PASSWORD`, when the URL holds none. The error names the file, never
/// the URL or the password.
pub fn client(url: &str, password_file: Option<&Path>) -> Result<redis::Client, String> {
    let env = std::env::var(crate::config::STORE_PASSWORD_ENV).ok();
    client_with(url, password_file, env)
}

fn client_with(
    url: &str,
    password_file: Option<&Path>,
    env: Option<String>,
) -> Result<redis::Client, String> {
    let info = url
        .into_connection_info()
        .map_err(|e| ConnectError(e).to_string())?;
    let from_file = match password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("store_password_file {}: {e}", path.display()))?;
            Some(text.lines().next().unwrap_or("").to_string())
        }
        None => None,
    };
    let password = from_file.or(env).filter(|p| !p.is_empty());
    let info = match password {
        Some(p) if info.redis_settings().password().is_none() => {
            let redis = info.redis_settings().clone().set_password(p);
            info.set_redis_settings(redis)
        }
        _ => info,
    };
    redis::Client::open(info).map_err(|e| ConnectError(e).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(c: &redis::Client) -> Option<String> {
        c.get_connection_info()
            .redis_settings()
            .password()
            .map(str::to_string)
    }

    #[test]
    fn the_password_comes_from_the_url_then_the_file_then_the_environment() {
        let dir = std::env::temp_dir().join(format!("turnd-store-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "from-file\nignored\n").unwrap();
        let url = "redis://127.0.0.1:6379/0";
        let c = client_with(url, Some(&file), Some("from-env".into())).unwrap();
        assert_eq!(password(&c).as_deref(), Some("from-file"));
        let c = client_with(url, None, Some("from-env".into())).unwrap();
        assert_eq!(password(&c).as_deref(), Some("from-env"));
        let c = client_with("redis://:in-url@127.0.0.1/0", Some(&file), None).unwrap();
        assert_eq!(password(&c).as_deref(), Some("in-url"));
        assert_eq!(password(&client_with(url, None, None).unwrap()), None);
        let missing = client_with(url, Some(&dir.join("nope")), None).unwrap_err();
        assert!(missing.contains("store_password_file"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
