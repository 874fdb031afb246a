//! Fleet-wide quotas through the store (docs/cluster.md, Fleet-wide quotas): each node writes
//! its own allocation counts to `turnd:count:{node}` as absolute values (so a repeat after a
//! reconnect is harmless) and reads the other live nodes' into the snapshot its workers admit
//! against ([`crate::core::quota::Quotas::set_others`]).

use super::keys::{self, LEASE, TOTAL_FIELD};
use crate::core::quota::Others;
use redis::aio::ConnectionLike;
use redis::Value;

/// At most this many nodes are read from `turnd:nodes` (the rest are left out of the quota
/// snapshot and the fleet view): Redis content is bounded like any input.
pub const MAX_NODES: usize = 1_024;
/// At most this many (node, user) counts are summed into one snapshot.
pub const MAX_COUNTS: usize = 200_000;

/// Replaces this node's counts, renews their lease and tells the other nodes (`counts NODE` on
/// `turnd:changes`), in one transaction: one round trip.
pub async fn write(
    conn: &mut impl ConnectionLike,
    node: &str,
    users: &[(Box<str>, u32)],
    total: u32,
) -> redis::RedisResult<()> {
    let key = keys::count(node);
    let mut hset = redis::cmd("HSET");
    hset.arg(&key).arg(TOTAL_FIELD).arg(total);
    for (user, n) in users {
        if &**user != TOTAL_FIELD {
            hset.arg(&**user).arg(*n);
        }
    }
    redis::pipe()
        .atomic()
        .del(&key)
        .ignore()
        .add_command(hset)
        .ignore()
        .pexpire(&key, LEASE.as_millis() as i64)
        .ignore()
        .publish(keys::CHANGES, keys::counts_changed(node))
        .ignore()
        .exec_async(conn)
        .await
}

/// The live nodes other than `own`: members of `turnd:nodes` whose node key still exists
/// (at most [`MAX_NODES`]), each with the length of its hash `hash(node)` (`HLEN`), so a
/// caller reads only hashes of a size it accepts: Redis's replies are bounded before they are
/// read, not only after. Two round trips.
pub async fn live_nodes(
    conn: &mut impl ConnectionLike,
    own: Option<&str>,
    hash: fn(&str) -> String,
) -> redis::RedisResult<Vec<(String, u64)>> {
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(keys::NODES)
        .arg(0)
        .arg(MAX_NODES as i64 - 1)
        .query_async(conn)
        .await?;
    let members: Vec<String> = members
        .into_iter()
        .filter(|m| Some(m.as_str()) != own)
        .collect();
    if members.is_empty() {
        return Ok(Vec::new());
    }
    let mut p = redis::pipe();
    for m in &members {
        p.exists(keys::node(m)).hlen(hash(m));
    }
    let answers: Vec<(bool, u64)> = p.query_async(conn).await?;
    Ok(members
        .into_iter()
        .zip(answers)
        .filter_map(|(m, (alive, len))| alive.then_some((m, len)))
        .collect())
}

/// The other live nodes' counts, summed: three round trips whatever the fleet's size. A node
/// whose counts hash holds more than [`MAX_COUNTS`] fields is left out (no node writes that
/// many: it would hold that many users' allocations).
pub async fn read_others(conn: &mut impl ConnectionLike, own: &str) -> redis::RedisResult<Others> {
    let nodes = live_nodes(conn, Some(own), keys::count).await?;
    let mut others = Others::default();
    let nodes: Vec<String> = nodes
        .into_iter()
        .filter(|(_, len)| *len <= MAX_COUNTS as u64)
        .map(|(n, _)| n)
        .collect();
    if nodes.is_empty() {
        return Ok(others);
    }
    let mut p = redis::pipe();
    for n in &nodes {
        p.hgetall(keys::count(n));
    }
    let hashes: Vec<Value> = p.query_async(conn).await?;
    let mut kept = 0;
    for h in hashes {
        add_counts(&mut others, h, &mut kept);
    }
    Ok(others)
}

/// Adds one node's `HGETALL` answer to `others`; entries that are not a user and a count are
/// skipped, and at most [`MAX_COUNTS`] user entries are kept over all nodes.
pub fn add_counts(others: &mut Others, hash: Value, kept: &mut usize) {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = redis::from_redis_value(hash).unwrap_or_default();
    for (field, value) in pairs {
        let Some(n) = std::str::from_utf8(&value)
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
        else {
            continue;
        };
        if field == TOTAL_FIELD.as_bytes() {
            others.total = others.total.saturating_add(n);
            continue;
        }
        let Ok(user) = std::str::from_utf8(&field) else {
            continue;
        };
        if let Some(c) = others.per_user.get_mut(user) {
            *c = c.saturating_add(n);
        } else if *kept < MAX_COUNTS && n > 0 {
            *kept += 1;
            others.per_user.insert(user.into(), n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pairs: &[(&str, &str)]) -> Value {
        Value::Array(
            pairs
                .iter()
                .flat_map(|(k, v)| {
                    [
                        Value::BulkString(k.as_bytes().to_vec()),
                        Value::BulkString(v.as_bytes().to_vec()),
                    ]
                })
                .collect(),
        )
    }

    #[test]
    fn nodes_add_up_and_garbage_is_skipped() {
        let mut o = Others::default();
        let mut kept = 0;
        add_counts(
            &mut o,
            hash(&[("*", "3"), ("alice", "2"), ("bob", "1")]),
            &mut kept,
        );
        add_counts(
            &mut o,
            hash(&[("*", "2"), ("alice", "1"), ("eve", "-1"), ("mallory", "x")]),
            &mut kept,
        );
        add_counts(&mut o, Value::Int(7), &mut kept);
        assert_eq!(o.total, 5);
        assert_eq!(o.per_user.get("alice"), Some(&3));
        assert_eq!(o.per_user.get("bob"), Some(&1));
        assert_eq!(o.per_user.len(), 2);
    }

    #[test]
    fn the_snapshot_is_bounded() {
        let mut o = Others::default();
        let mut kept = MAX_COUNTS - 1;
        add_counts(&mut o, hash(&[("a", "1"), ("b", "1")]), &mut kept);
        assert_eq!(o.per_user.len(), 1);
    }
}
