//! The parsers config keys name in their declaration (`keys.rs`): each turns one text value,
//! from the file, a variable or a flag alike, into a typed value or one item of a list, or says
//! what was expected. The caller prefixes the message with the key and where the value came
//! from.

use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::core::auth::RestUsernameOrder;
use crate::core::peer_filter::Cidr;
use crate::core::rate_limit::Rate;

/// RFC 8489 §14.9 (REALM) and §14.14 (SOFTWARE): fewer than 128 characters.
const MAX_TEXT_CHARS: usize = 127;
/// More workers than this is a typo, not a machine.
const MAX_WORKERS: usize = 1024;

/// Any type with a `FromStr` whose error says what was wrong (`PortRange`, `ExternalIp`, the
/// enums); surrounding spaces are ignored.
pub(crate) fn from_str<T: FromStr>(s: &str) -> Result<T, String>
where
    T::Err: Display,
{
    s.trim().parse::<T>().map_err(|e| e.to_string())
}

pub(crate) fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("`{s}` is not a socket address IP:PORT (IPv6 in brackets, like [::1]:3478)")
    })
}

/// A network interface name as the kernel takes it: 1 to 15 bytes (IFNAMSIZ less its NUL), no
/// `/`, `:` or white space.
pub(crate) fn interface(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 15 || s == "." || s == ".." {
        return Err(format!(
            "`{s}` is not an interface name (1 to 15 characters)"
        ));
    }
    if s.chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "`{s}` is not an interface name (no `/`, `:` or white space)"
        ));
    }
    Ok(s.to_string())
}

/// `xdp_max_channels`: 1 to 1048576 map entries.
pub(crate) fn xdp_entries(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if (1..=1 << 20).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a number of entries from 1 to 1048576"
        )),
    }
}

pub(crate) fn path(s: &str) -> Result<Option<std::path::PathBuf>, String> {
    if s.trim().is_empty() {
        return Err("the file name is empty".into());
    }
    Ok(Some(s.into()))
}

pub(crate) fn relay_ip(s: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not an IP address"))?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(format!(
            "{ip} cannot be a relay IP: clients are told to send to it, so it must be a \
             unicast address of this host (use external_ips to advertise a public one)"
        ));
    }
    Ok(ip)
}

pub(crate) fn realm(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the realm is empty".into());
    }
    if s.chars().count() > MAX_TEXT_CHARS
        || s.chars().any(|c| c.is_control() || c == '"' || c == '\\')
    {
        return Err(format!(
            "`{}` is not a realm: at most {MAX_TEXT_CHARS} characters, without `\"`, `\\` \
             or control characters (RFC 8489 §14.9)",
            s.escape_debug()
        ));
    }
    Ok(s.to_string())
}

pub(crate) fn admin_token(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the admin token must not hold spaces or control characters".into());
    }
    Ok(Some(s.to_string()))
}

/// `node_id`: "" is none (the default name); otherwise at most 128 printable ASCII bytes
/// without spaces, so it is safe inside a Redis key and a log line.
pub(crate) fn node_id(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    if s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a node id is at most 128 printable ASCII characters, no spaces".into());
    }
    Ok(Some(s.to_string()))
}

/// `store`: "" is none; otherwise a `redis://` or `rediss://` URL that redis-rs can read. The
/// URL may hold a password, so no message repeats it.
pub(crate) fn store_url(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let expected = "expected redis://HOST[:PORT][/DB] or rediss://… (TLS)";
    if !(s.starts_with("redis://") || s.starts_with("rediss://")) {
        return Err(format!(
            "`{}` is not a store URL: {expected}",
            store_url_redacted(s)
        ));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "the store URL holds spaces or control characters: {expected}"
        ));
    }
    redis::IntoConnectionInfo::into_connection_info(s)
        .map_err(|_| format!("`{}` is not a store URL: {expected}", store_url_redacted(s)))?;
    Ok(Some(s.to_string()))
}

/// The store URL with its user and password (everything before the host's `@`) redacted.
pub(crate) fn store_url_redacted(s: &str) -> String {
    let (scheme, rest) = s.split_once("://").unwrap_or(("", s));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if scheme.is_empty() => format!("{}{}", super::REDACTED, &rest[at..]),
        Some(at) => format!("{scheme}://{}{}", super::REDACTED, &rest[at..]),
        None => s.to_string(),
    }
}

pub(crate) fn secret(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("a shared secret is empty".into());
    }
    Ok(s.to_string())
}

pub(crate) fn cidr(s: &str) -> Result<Cidr, String> {
    // `Cidr::Err` is the core's type; only its failure matters here.
    s.trim().parse::<Cidr>().map_err(|_| {
        format!("`{s}` is not an IP network ADDR/PREFIX (like 10.0.0.0/8 or ::1/128) or an IP")
    })
}

pub(crate) fn workers(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n <= MAX_WORKERS => Ok(n),
        Ok(n) => Err(format!(
            "{n} workers is more than {MAX_WORKERS}; 0 means one per CPU core"
        )),
        Err(_) => Err(format!(
            "`{s}` is not a whole number ≥ 0 (0 means one per CPU core)"
        )),
    }
}

/// `RATE` or `RATE/BURST`, per second; the burst defaults to twice the rate; 0 = no limit.
pub(crate) fn rate(s: &str) -> Result<Rate, String> {
    let bad = || format!("`{s}` is not `RATE` or `RATE/BURST` (whole numbers; 0 = no limit)");
    let (rate, burst) = match s.trim().split_once('/') {
        Some((r, b)) => (r.trim(), Some(b.trim())),
        None => (s.trim(), None),
    };
    let per_second = rate.parse::<u32>().map_err(|_| bad())?;
    let burst = match burst {
        Some(b) => b.parse::<u32>().map_err(|_| bad())?,
        None => per_second.saturating_mul(2),
    };
    if per_second > 0 && burst == 0 {
        return Err(format!(
            "`{s}`: a burst of 0 would refuse everything; use 0 for no limit"
        ));
    }
    Ok(Rate { per_second, burst })
}

pub(crate) fn boolean(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" | "on" | "yes" => Ok(true),
        "false" | "off" | "no" => Ok(false),
        _ => Err(format!("`{s}` is neither `true` nor `false`")),
    }
}

pub(crate) fn count(s: &str) -> Result<u32, String> {
    s.trim().parse::<u32>().map_err(|_| {
        format!(
            "`{s}` is not a whole number from 0 (no limit) to {}",
            u32::MAX
        )
    })
}

/// A socket buffer size: the kernel takes an `int`.
pub(crate) fn buffer(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .ok()
        .filter(|&n| n <= i32::MAX as u32)
        .ok_or_else(|| {
            format!(
                "`{s}` is not a size in bytes from 0 (the kernel's default) to {}",
                i32::MAX
            )
        })
}

/// The longest coalescing window: beyond a few milliseconds the added delay would show in
/// calls (and a worker would sit idle with datagrams queued).
const MAX_COALESCE_US: u32 = 5_000;

pub(crate) fn coalesce(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .ok()
        .filter(|&n| n <= MAX_COALESCE_US)
        .ok_or_else(|| {
            format!("`{s}` is not a window in microseconds from 0 (off) to {MAX_COALESCE_US}")
        })
}

/// The smallest useful frame limit: a STUN Allocate with long-term credentials is a few
/// hundred bytes.
const MIN_FRAME_SIZE: u32 = 512;

pub(crate) fn frame_size(s: &str) -> Result<u32, String> {
    let max = crate::stun::framing::MAX_FRAME_LEN as u32;
    match s.trim().parse::<u32>() {
        Ok(n) if (MIN_FRAME_SIZE..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a number of bytes from {MIN_FRAME_SIZE} to {max} (the largest STUN message)"
        )),
    }
}

pub(crate) fn seconds(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err("0 s is too short; the lowest is 1 s".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "`{s}` is not a number of seconds from 1 to {}",
            u32::MAX
        )),
    }
}

/// The levels `tracing`'s `LevelFilter` accepts, case-insensitively.
const LEVELS: [&str; 12] = [
    "trace", "debug", "info", "warn", "error", "off", "0", "1", "2", "3", "4", "5",
];

fn is_level(s: &str) -> bool {
    LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s.trim()))
}

/// A plain level is checked exactly. A directive list (`turnd=debug,info`) is
/// left to `EnvFilter`, except that a `target=LEVEL` part's level is checked.
pub(crate) fn log_level(s: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "`{s}` is not a log level (trace, debug, info, warn, error, off) \
             nor a directive list like `turnd=debug,info`"
        )
    };
    let s = s.trim();
    if s.is_empty() {
        return Err("the log level is empty; use info if unsure".into());
    }
    let is_directive = s.contains(['=', ',', '[']);
    if !is_directive {
        return if is_level(s) {
            Ok(s.to_string())
        } else {
            Err(bad())
        };
    }
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(bad());
        }
        if part.contains(['[', '{']) {
            continue; // span filters: EnvFilter's own grammar
        }
        if let Some((target, level)) = part.split_once('=') {
            if target.trim().is_empty() || !is_level(level) {
                return Err(bad());
            }
        }
    }
    Ok(s.to_string())
}

pub(crate) fn software(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    if s.chars().count() > MAX_TEXT_CHARS || s.chars().any(char::is_control) {
        return Err(format!(
            "`{}` is not a SOFTWARE text: at most {MAX_TEXT_CHARS} characters without control \
             characters (RFC 8489 §14.14); \"\" sends none",
            s.escape_debug()
        ));
    }
    Ok(Some(s.to_string()))
}

/// `rest_username_order`: `expiry-first` or `user-first`.
pub(crate) fn rest_username_order(s: &str) -> Result<RestUsernameOrder, String> {
    RestUsernameOrder::parse(s.trim()).ok_or_else(|| {
        format!(
            "`{s}` is neither `expiry-first` (EXPIRY:USER, the default) nor `user-first` \
             (USER:EXPIRY)"
        )
    })
}

/// `rest_max_ttl`: seconds, 0 = no cap; at most `u32::MAX` (136 years) like every duration
/// here, which also keeps it a TOML integer when printed.
pub(crate) fn max_ttl(s: &str) -> Result<u32, String> {
    s.trim().parse::<u32>().map_err(|_| {
        format!(
            "`{s}` is not a number of seconds from 0 (no cap) to {}",
            u32::MAX
        )
    })
}

/// `max_permissions`, `max_channels`: 0 (meaning the ceiling) up to the ceiling, 4096 for both.
pub(crate) fn per_allocation(s: &str) -> Result<u32, String> {
    const CEILING: u32 = crate::core::permission::MAX_PERMISSIONS;
    const _: () = assert!(CEILING == crate::core::channel::MAX_CHANNELS);
    s.trim()
        .parse::<u32>()
        .ok()
        .filter(|&n| n <= CEILING)
        .ok_or_else(|| {
            format!("`{s}` is not a whole number from 1 to {CEILING} (0 = {CEILING}, the most)")
        })
}
