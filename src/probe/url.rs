//! STUN and TURN URIs: `stun:`/`stuns:` (RFC 7064) and `turn:`/`turns:` (RFC 7065).
//!
//! `turn:host[:port][?transport=udp|tcp]`. The host is a name, an IPv4 address or an IPv6
//! address in brackets (`turn:[::1]:3478`). Without a port, `turn:`/`stun:` mean 3478 and
//! `turns:`/`stuns:` 5349. Without `?transport=`, `turn:` means UDP and `turns:` TLS over TCP
//! (RFC 7065 §3); `turns:…?transport=udp` would be DTLS, which the probe does not speak.

use std::fmt;

/// The default port of `stun:` and `turn:` (RFC 8489 §18.6, RFC 8656 §4).
pub const DEFAULT_PORT: u16 = 3478;
/// The default port of `stuns:` and `turns:`.
pub const DEFAULT_TLS_PORT: u16 = 5349;

/// How the probe talks to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// The scheme of the URI: a TURN server (allocations) or a STUN-only server (Binding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Stun,
    Turn,
}

/// A parsed `stun:`/`turn:` URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrl {
    pub scheme: Scheme,
    /// Host name or IP address, without brackets.
    pub host: String,
    pub port: u16,
    pub transport: Transport,
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secure = self.transport == Transport::Tls;
        let scheme = match (self.scheme, secure) {
            (Scheme::Turn, false) => "turn",
            (Scheme::Turn, true) => "turns",
            (Scheme::Stun, false) => "stun",
            (Scheme::Stun, true) => "stuns",
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let transport = if secure { "tcp" } else { self.transport.name() };
        write!(f, "{scheme}:{host}:{}?transport={transport}", self.port)
    }
}

/// Why a URI was refused; the message says what a valid one looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlError {}

fn err(s: &str, why: &str) -> UrlError {
    UrlError(format!(
        "`{s}`: {why} (expected turn:HOST[:PORT][?transport=udp|tcp], turns:HOST[:PORT] or \
         stun:HOST[:PORT]; IPv6 in brackets: turn:[::1]:3478)"
    ))
}

/// Parses a `stun:`, `stuns:`, `turn:` or `turns:` URI. The scheme is case-insensitive; a
/// `//` after the colon (a common slip, `turn://host`) is tolerated.
pub fn parse(s: &str) -> Result<ServerUrl, UrlError> {
    let (scheme, rest) = s.split_once(':').ok_or_else(|| err(s, "no scheme"))?;
    let (scheme, secure) = match scheme.to_ascii_lowercase().as_str() {
        "turn" => (Scheme::Turn, false),
        "turns" => (Scheme::Turn, true),
        "stun" => (Scheme::Stun, false),
        "stuns" => (Scheme::Stun, true),
        _ => return Err(err(s, "the scheme must be turn, turns, stun or stuns")),
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (authority, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (host, port) = split_host_port(authority).map_err(|why| err(s, why))?;
    if host.is_empty() {
        return Err(err(s, "no host"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| err(s, "the port must be 1-65535"))?,
        None if secure => DEFAULT_TLS_PORT,
        None => DEFAULT_PORT,
    };
    let mut transport = if secure {
        Transport::Tls
    } else {
        Transport::Udp
    };
    if let Some(q) = query {
        // Only `transport` is defined (RFC 7065 §3); anything else is a typo worth reporting.
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !k.eq_ignore_ascii_case("transport") {
                return Err(err(s, "the only query parameter is transport"));
            }
            transport = match (v.to_ascii_lowercase().as_str(), secure) {
                ("udp", false) => Transport::Udp,
                ("tcp", false) => Transport::Tcp,
                ("tcp", true) => Transport::Tls,
                ("udp", true) => return Err(err(s, "turns: over UDP is DTLS, not supported")),
                _ => return Err(err(s, "transport must be udp or tcp")),
            };
        }
    }
    Ok(ServerUrl {
        scheme,
        host: host.to_string(),
        port,
        transport,
    })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`. A bare IPv6 address without brackets is
/// refused: its last group would be mistaken for a port.
fn split_host_port(a: &str) -> Result<(&str, Option<&str>), &'static str> {
    if let Some(rest) = a.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed [ in the host")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("brackets must hold an IPv6 address");
        }
        return match after {
            "" => Ok((host, None)),
            _ => after
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or("expected :PORT after ]"),
        };
    }
    match a.split_once(':') {
        Some((_, p)) if p.contains(':') => Err("an IPv6 address must be in brackets"),
        Some((h, p)) => Ok((h, Some(p))),
        None => Ok((a, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (Scheme, String, u16, Transport) {
        let u = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (u.scheme, u.host, u.port, u.transport)
    }

    #[test]
    fn defaults_per_scheme() {
        use Scheme::*;
        use Transport::*;
        assert_eq!(
            ok("turn:example.com"),
            (Turn, "example.com".into(), 3478, Udp)
        );
        assert_eq!(
            ok("turns:example.com"),
            (Turn, "example.com".into(), 5349, Tls)
        );
        assert_eq!(ok("stun:1.2.3.4"), (Stun, "1.2.3.4".into(), 3478, Udp));
        assert_eq!(ok("stuns:h"), (Stun, "h".into(), 5349, Tls));
    }

    #[test]
    fn ports_transports_and_ipv6() {
        use Transport::*;
        assert_eq!(ok("turn:h:80?transport=tcp").2, 80);
        assert_eq!(ok("turn:h:80?transport=tcp").3, Tcp);
        assert_eq!(ok("TURN:h?Transport=UDP").3, Udp);
        assert_eq!(ok("turns:h:443?transport=tcp").3, Tls);
        assert_eq!(
            ok("turn:[::1]:3479"),
            (Scheme::Turn, "::1".into(), 3479, Udp)
        );
        assert_eq!(ok("turn:[2001:db8::1]").2, 3478);
        assert_eq!(ok("turn://h:1").2, 1);
    }

    #[test]
    fn refusals() {
        for bad in [
            "h:3478",
            "http://h",
            "turn:",
            "turn::3478",
            "turn:h:0",
            "turn:h:99999",
            "turn:h:x",
            "turn:::1",
            "turn:[::1",
            "turn:[h]:1",
            "turn:[::1]x",
            "turn:h?transport=sctp",
            "turns:h?transport=udp",
            "turn:h?foo=bar",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "turn:h:3478?transport=udp",
            "turn:[::1]:9?transport=tcp",
            "turns:h:443?transport=tcp",
            "stun:h:3478?transport=udp",
        ] {
            assert_eq!(parse(s).unwrap().to_string(), s);
            assert_eq!(
                parse(&parse(s).unwrap().to_string()).unwrap(),
                parse(s).unwrap()
            );
        }
    }
}
