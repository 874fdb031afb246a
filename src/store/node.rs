//! Who this node is in the fleet: its id (one per process: the `node_id` key, else
//! `hostname:pid:start-unix`), and what `turnd:node:{node}` says about it.

use std::net::SocketAddr;
use std::sync::OnceLock;

static ID: OnceLock<String> = OnceLock::new();

/// Sets this process's node id from the `node_id` key (`None` or empty: the default), once,
/// before anything reads it; returns the id in force (a later call changes nothing).
pub fn init(configured: Option<&str>) -> &'static str {
    ID.get_or_init(|| make_id(configured, unix_now()))
}

/// This process's node id, the same on every call: the one [`init`] set, else
/// `hostname:pid:start-unix`.
pub fn node_id() -> &'static str {
    init(None)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `configured` when set, else `hostname:pid:start-unix`, unique per process so that a
/// restarted node never takes over the keys of the one before (those expire with their lease).
pub fn make_id(configured: Option<&str>, start_unix: u64) -> String {
    match configured {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!("{}:{}:{start_unix}", hostname(), std::process::id()),
    }
}

/// The host's name, or `unknown` when the system does not say (kept to printable ASCII, so it
/// is safe in a key and a log line).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name: String = buf[..len]
        .iter()
        .filter(|b| b.is_ascii_graphic() && **b != b':')
        .map(|&b| char::from(b))
        .collect();
    if rc != 0 || name.is_empty() {
        "unknown".to_string()
    } else {
        name
    }
}

/// The JSON value of `turnd:node:{node}`.
pub fn info_json(
    node: &str,
    udp: &[SocketAddr],
    metrics: SocketAddr,
    started_unix: u64,
    allocations: u32,
) -> String {
    serde_json::json!({
        "node": node,
        "version": env!("CARGO_PKG_VERSION"),
        "udp": udp.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "metrics": metrics.to_string(),
        "started": started_unix,
        "allocations": allocations,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_id_wins_else_host_pid_and_start() {
        assert_eq!(make_id(Some("turn-eu-1"), 7), "turn-eu-1");
        let id = make_id(None, 1_700_000_000);
        let parts: Vec<&str> = id.split(':').collect();
        assert_eq!(parts.len(), 3, "{id}");
        assert_eq!(parts[1], std::process::id().to_string());
        assert_eq!(parts[2], "1700000000");
        assert_eq!(make_id(Some(""), 7), id.replace("1700000000", "7"));
    }

    #[test]
    fn the_id_is_set_once_and_stable() {
        let id = node_id();
        assert_eq!(init(Some("later")), id, "the first id stays");
        assert_eq!(node_id(), id);
    }
}
