//! The names of the keys and channels nodes write and read (docs/cluster.md, Data model).
//! Every one starts with `turnd:`; `{node}` is a node id ([`super::node::node_id`]).

use std::time::Duration;

/// Sorted set: member = node id, score = unix time of its last refresh.
pub const NODES: &str = "turnd:nodes";
/// Pub/sub: what to re-read now (`counts` from this task; `users`, `secrets`, `revoked` from
/// the CLI).
pub const CHANGES: &str = "turnd:changes";
/// Pub/sub: `user NAME` (or `alloc NODE ID`): end those allocations on every node.
pub const KILL: &str = "turnd:kill";
/// Stream of allocation start/end events.
pub const EVENTS: &str = "turnd:events";
/// The approximate length `XADD … MAXLEN ~` keeps [`EVENTS`] to.
pub const EVENTS_MAXLEN: u64 = 100_000;
/// The message on [`CHANGES`] that a node's counts changed: `counts NODE` (the node, so it
/// can skip its own message).
pub const COUNTS_CHANGED: &str = "counts";

/// The `counts NODE` message of `node`.
pub fn counts_changed(node: &str) -> String {
    format!("{COUNTS_CHANGED} {node}")
}

/// Whether `payload` on [`CHANGES`] says another node than `own` changed its counts (a bare
/// `counts` too).
pub fn is_others_counts(payload: &[u8], own: &str) -> bool {
    match payload.strip_prefix(COUNTS_CHANGED.as_bytes()) {
        Some(b"") => true,
        Some(rest) => rest.strip_prefix(b" ").is_some_and(|n| n != own.as_bytes()),
        None => false,
    }
}

/// How long a node's keys live without a refresh: a node that dies or is cut off gives its
/// quota counts back and leaves the fleet view within this long.
pub const LEASE: Duration = Duration::from_secs(15);
/// How often a node refreshes its lease (three refreshes per lease: one lost refresh, or a
/// Redis restart in between, does not drop a live node).
pub const REFRESH: Duration = Duration::from_secs(5);

/// String (JSON) with the lease: the node is alive while it exists.
pub fn node(node: &str) -> String {
    format!("turnd:node:{node}")
}

/// Hash with the lease: field = user, value = that node's allocations of the user; `*` = total.
pub fn count(node: &str) -> String {
    format!("turnd:count:{node}")
}

/// Hash with the lease: field = allocation id, value = JSON.
pub fn allocs(node: &str) -> String {
    format!("turnd:allocs:{node}")
}

/// The field of [`count`] that holds the node's total. A user whose name is exactly `*` is
/// therefore left out of the per-user counts (counted per node only, and in the total).
pub const TOTAL_FIELD: &str = "*";

/// Hash of one hour's usage: `turnd:usage:hour:YYYY-MM-DDTHH` (UTC).
pub fn usage_hour(unix: u64) -> String {
    let (y, m, d, h) = civil(unix);
    format!("turnd:usage:hour:{y:04}-{m:02}-{d:02}T{h:02}")
}

/// Hash of one day's usage: `turnd:usage:day:YYYY-MM-DD` (UTC).
pub fn usage_day(unix: u64) -> String {
    let (y, m, d, _) = civil(unix);
    format!("turnd:usage:day:{y:04}-{m:02}-{d:02}")
}

/// How long an hour bucket is kept after its last write.
pub const USAGE_HOUR_TTL: Duration = Duration::from_secs(8 * 24 * 3600);
/// How long a day bucket is kept after its last write.
pub const USAGE_DAY_TTL: Duration = Duration::from_secs(400 * 24 * 3600);

/// (year, month, day, hour) in UTC of a unix time (Howard Hinnant's days-to-civil).
fn civil(unix: u64) -> (i64, u32, u32, u32) {
    let days = (unix / 86_400) as i64;
    let hour = ((unix % 86_400) / 3600) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, hour)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_skips_its_own_counts_message() {
        assert!(is_others_counts(counts_changed("B").as_bytes(), "A"));
        assert!(!is_others_counts(counts_changed("A").as_bytes(), "A"));
        assert!(is_others_counts(b"counts", "A"));
        assert!(!is_others_counts(b"countsA", "B"));
        assert!(!is_others_counts(b"users", "A"));
    }

    #[test]
    fn usage_buckets_are_utc_hours_and_days() {
        assert_eq!(usage_hour(0), "turnd:usage:hour:1970-01-01T00");
        // 2026-12-06T07:15:24Z
        assert_eq!(usage_hour(1_796_541_324), "turnd:usage:hour:2026-12-06T07");
        assert_eq!(usage_day(1_796_541_324), "turnd:usage:day:2026-12-06");
        // 2024-02-29T23:59:59Z, a leap day.
        assert_eq!(usage_hour(1_709_251_199), "turnd:usage:hour:2024-02-29T23");
        assert_eq!(usage_day(1_709_251_200), "turnd:usage:day:2024-03-01");
    }
}
