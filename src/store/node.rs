//! This node's id in the fleet (`docs/cluster.md`, Data model): `hostname:pid:start-unix`,
//! unique across restarts of the same host (the pid and start time change) and readable in a
//! listing. `turnd:kill`'s `alloc NODE ID` is acted on only by the node with that id.

use std::sync::OnceLock;

/// This process's node id, the same on every call.
pub fn node_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("{}:{}:{start}", hostname(), std::process::id())
    })
}

/// The host's name, or `localhost` when it cannot be read.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "localhost".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_id_is_stable_and_names_this_process() {
        let id = super::node_id();
        assert_eq!(id, super::node_id());
        let parts: Vec<&str> = id.rsplitn(3, ':').collect();
        assert_eq!(parts[1], std::process::id().to_string());
        assert!(parts[0].parse::<u64>().is_ok(), "{id}");
    }
}
