//! Writes to the store, by the CLI (`turnd users|secrets|revoke`) and by the admin API's
//! revocations (through the store task). Nodes never write users, secrets or revocations
//! otherwise (`docs/cluster.md`, Data model).
//!
//! Every write is one `MULTI`/`EXEC` round trip: the change, `turnd:epoch` set if missing
//! (`SET NX`: the store is ours from now on, see [`EPOCH_KEY`]) and the `turnd:changes`
//! message that makes every node re-read that part at once.

use super::revoked::{score_of_until, REVOKED_KEY};
use super::secrets::SECRETS_KEY;
use super::users::USERS_KEY;
use redis::aio::ConnectionLike;

/// A random id written once by the first CLI write; missing or changed means the store was
/// emptied or replaced, and nodes keep their cached users rather than drop them all.
pub const EPOCH_KEY: &str = "turnd:epoch";
/// What changed: `users`, `secrets` or `revoked`.
pub const CHANGES_CHANNEL: &str = "turnd:changes";
/// Allocations to end: `user NAME` or `alloc NODE ID`.
pub const KILL_CHANNEL: &str = "turnd:kill";

/// A new epoch id: 16 random bytes in hex.
fn new_epoch() -> String {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn changed(part: &str) -> redis::Pipeline {
    let mut p = redis::pipe();
    p.atomic();
    p.cmd("SET")
        .arg(EPOCH_KEY)
        .arg(new_epoch())
        .arg("NX")
        .ignore();
    p.cmd("PUBLISH").arg(CHANGES_CHANNEL).arg(part).ignore();
    p
}

/// Sets field `name` of `hash` to `value`, announcing `part`.
async fn hset(
    conn: &mut impl ConnectionLike,
    hash: &str,
    part: &str,
    name: &str,
    value: &str,
) -> redis::RedisResult<()> {
    let mut p = changed(part);
    p.cmd("HSET").arg(hash).arg(name).arg(value).ignore();
    p.query_async(conn).await
}

/// Deletes field `name` of `hash`, announcing `part`; whether it was there.
async fn hdel(
    conn: &mut impl ConnectionLike,
    hash: &str,
    part: &str,
    name: &str,
) -> redis::RedisResult<bool> {
    let mut p = changed(part);
    p.cmd("HDEL").arg(hash).arg(name);
    let (removed,): (u64,) = p.query_async(conn).await?;
    Ok(removed > 0)
}

/// The fields of `hash`, sorted.
async fn names(conn: &mut impl ConnectionLike, hash: &str) -> redis::RedisResult<Vec<String>> {
    let mut names: Vec<String> = redis::cmd("HKEYS").arg(hash).query_async(conn).await?;
    names.sort();
    Ok(names)
}

/// Adds or replaces a user: `value` is `key:<32 hex>` or `password:<p>` (see `users.rs`).
pub async fn add_user(
    conn: &mut impl ConnectionLike,
    name: &str,
    value: &str,
) -> redis::RedisResult<()> {
    hset(conn, USERS_KEY, "users", name, value).await
}

pub async fn remove_user(conn: &mut impl ConnectionLike, name: &str) -> redis::RedisResult<bool> {
    hdel(conn, USERS_KEY, "users", name).await
}

pub async fn list_users(conn: &mut impl ConnectionLike) -> redis::RedisResult<Vec<String>> {
    names(conn, USERS_KEY).await
}

pub async fn add_secret(
    conn: &mut impl ConnectionLike,
    name: &str,
    secret: &str,
) -> redis::RedisResult<()> {
    hset(conn, SECRETS_KEY, "secrets", name, secret).await
}

pub async fn remove_secret(conn: &mut impl ConnectionLike, name: &str) -> redis::RedisResult<bool> {
    hdel(conn, SECRETS_KEY, "secrets", name).await
}

/// The secrets' names only: a secret is never read back.
pub async fn list_secrets(conn: &mut impl ConnectionLike) -> redis::RedisResult<Vec<String>> {
    names(conn, SECRETS_KEY).await
}

/// Revokes `user` until `until` ([`crate::core::revocation::FOREVER`]), prunes the ended
/// revocations, and tells every node: `revoked` on `turnd:changes` and `user NAME` on
/// `turnd:kill`.
pub async fn revoke(
    conn: &mut impl ConnectionLike,
    user: &str,
    until: u64,
    unix_now: u64,
) -> redis::RedisResult<()> {
    let mut p = redis::pipe();
    p.atomic();
    p.cmd("SET")
        .arg(EPOCH_KEY)
        .arg(new_epoch())
        .arg("NX")
        .ignore();
    p.cmd("ZADD")
        .arg(REVOKED_KEY)
        .arg(score_of_until(until))
        .arg(user)
        .ignore();
    p.cmd("ZREMRANGEBYSCORE")
        .arg(REVOKED_KEY)
        .arg("-inf")
        .arg(unix_now)
        .ignore();
    p.cmd("PUBLISH")
        .arg(CHANGES_CHANNEL)
        .arg("revoked")
        .ignore();
    p.cmd("PUBLISH")
        .arg(KILL_CHANNEL)
        .arg(format!("user {user}"))
        .ignore();
    p.query_async(conn).await
}

/// Ends `user`'s revocation; whether there was one.
pub async fn unrevoke(conn: &mut impl ConnectionLike, user: &str) -> redis::RedisResult<bool> {
    let mut p = changed("revoked");
    p.cmd("ZREM").arg(REVOKED_KEY).arg(user);
    let (removed,): (u64,) = p.query_async(conn).await?;
    Ok(removed > 0)
}

/// Every revocation not ended at `unix_now`, as (name, end).
pub async fn list_revoked(
    conn: &mut impl ConnectionLike,
    unix_now: u64,
) -> redis::RedisResult<Vec<(String, u64)>> {
    let found = super::revoked::read_revoked(conn, unix_now, 1_000_000).await?;
    let mut list: Vec<(String, u64)> = found
        .revoked
        .iter()
        .map(|(n, u)| (n.to_string(), u))
        .collect();
    list.sort();
    Ok(list)
}

/// Asks every node to end `user`'s allocations, without refusing the user.
pub async fn kill_user(conn: &mut impl ConnectionLike, user: &str) -> redis::RedisResult<()> {
    redis::cmd("PUBLISH")
        .arg(KILL_CHANNEL)
        .arg(format!("user {user}"))
        .query_async(conn)
        .await
}
