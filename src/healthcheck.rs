//! `turnd healthcheck`: exits 0 when turnd's `/healthz` answers 200, 1 otherwise.
//!
//! It exists for container images without a shell or curl (`FROM scratch`, distroless): the
//! image's `HEALTHCHECK CMD ["turnd", "healthcheck"]` runs the binary that is already there. By
//! default it asks `/healthz` on the configured `metrics_listen` — read from the same sources as
//! the server (`--config`/`TURND_CONFIG`, `TURND_*` variables, flags), so the container's
//! environment that moved the admin port moves the check with it; a wildcard listener
//! (`0.0.0.0`, `[::]`) is asked on loopback.
//!
//! A plain HTTP/1.0 GET over `std::net::TcpStream`, every step bounded by `--timeout`: the
//! check must never hang, or the orchestrator's own timeout would count it as a failure with
//! no message. Host names are not resolved (a static binary in an empty image has no resolver
//! configuration), except `localhost`, which means loopback.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// URL to GET, e.g. http://127.0.0.1:9641/healthz (or /readyz); default: /healthz on the
    /// configured metrics_listen
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Give up after this long: 3, 3s, 1m
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = crate::credentials::parse_ttl)]
    pub timeout: Duration,
}

/// The `/healthz` URL of an admin listener bound to `metrics_listen`.
pub fn healthz_url(metrics_listen: SocketAddr) -> String {
    let ip = match metrics_listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!(
        "http://{}/healthz",
        SocketAddr::new(ip, metrics_listen.port())
    )
}

/// An `http://IP[:PORT][/PATH]` URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// The authority as written, for the Host header.
    pub host: String,
    pub path: String,
}

/// Parses `http://IP:PORT/PATH` (IPv6 in brackets; port 80 when absent; `localhost` as
/// 127.0.0.1). Anything else is refused with a message saying what is accepted.
pub fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}`: only http:// URLs are supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = |s: &str| -> String {
        // `[::1]`, `127.0.0.1` and `localhost` have no port yet; `[::1]:9` and `h:9` do.
        let has_port = match s.rfind(']') {
            Some(close) => s[close..].contains(':'),
            None => s.contains(':'),
        };
        if has_port {
            s.to_string()
        } else {
            format!("{s}:80")
        }
    };
    let hostport = with_port(host);
    let hostport = match hostport.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => hostport,
    };
    let addr: SocketAddr = hostport.parse().map_err(|_| {
        format!("`{url}`: the host must be an IP address (e.g. http://127.0.0.1:9641/healthz)")
    })?;
    Ok(Target {
        addr,
        host: host.to_string(),
        path: path.to_string(),
    })
}

/// GETs `target` and returns the HTTP status code; every step (connect, write, read) ends
/// by `timeout` after the start.
pub fn get_status(target: &Target, timeout: Duration) -> Result<u16, String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer within {timeout:?}"))
    };
    let mut stream = TcpStream::connect_timeout(&target.addr, left()?)
        .map_err(|e| format!("connect {}: {e}", target.addr))?;
    stream
        .set_write_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: turnd-healthcheck\r\nConnection: close\r\n\r\n",
        target.path, target.host
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send request: {e}"))?;
    // Only the status line matters; read until its end, at most 256 bytes.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    // Bounded: each read takes at least one byte or ends the loop, and `head` stops at 256.
    while !head.contains(&b'\n') && head.len() < 256 {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf[..256 - head.len()]) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read answer: {e}")),
        }
    }
    parse_status_line(&head)
}

/// `HTTP/1.x NNN ...` → NNN.
fn parse_status_line(head: &[u8]) -> Result<u16, String> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    match (words.next(), words.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(code))) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(format!("not an HTTP answer: {:?}", line.trim_end())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn urls_parse_with_and_without_port_and_path() {
        let t = parse_url("http://127.0.0.1:9641/healthz").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9641".parse().unwrap());
        assert_eq!(
            (t.host.as_str(), t.path.as_str()),
            ("127.0.0.1:9641", "/healthz")
        );
        let t = parse_url("http://[::1]:9/readyz").unwrap();
        assert_eq!(t.addr, "[::1]:9".parse().unwrap());
        let t = parse_url("http://[::1]").unwrap();
        assert_eq!(
            (t.addr, t.path.as_str()),
            ("[::1]:80".parse().unwrap(), "/")
        );
        let t = parse_url("http://localhost:9641/healthz").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9641".parse().unwrap());
        assert!(parse_url("https://127.0.0.1/healthz").is_err());
        assert!(parse_url("http://turn.example.com:9641/healthz").is_err());
    }

    #[test]
    fn wildcard_listeners_are_asked_on_loopback() {
        assert_eq!(
            healthz_url("0.0.0.0:9641".parse().unwrap()),
            "http://127.0.0.1:9641/healthz"
        );
        assert_eq!(
            healthz_url("[::]:19641".parse().unwrap()),
            "http://[::1]:19641/healthz"
        );
        assert_eq!(
            healthz_url("10.0.0.5:9641".parse().unwrap()),
            "http://10.0.0.5:9641/healthz"
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Ok(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable"),
            Ok(503)
        );
        assert!(parse_status_line(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_status_line(b"").is_err());
    }

    /// A one-shot server on loopback answering `answer` to the first connection.
    fn serve_once(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("bound");
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = [0u8; 512];
                let _ = s.read(&mut req);
                let _ = s.write_all(answer);
            }
        });
        addr
    }

    #[test]
    fn gets_the_status_of_a_live_server() {
        let timeout = Duration::from_secs(5);
        let ok = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
        let t = parse_url(&format!("http://{ok}/healthz")).unwrap();
        assert_eq!(get_status(&t, timeout), Ok(200));
        let busy = serve_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let t = parse_url(&format!("http://{busy}/readyz")).unwrap();
        assert_eq!(get_status(&t, timeout), Ok(503));
    }

    #[test]
    fn a_closed_port_is_an_error_not_a_hang() {
        // Bind and drop: nothing listens there now (another process could take it in between,
        // which would fail this test, not hang it).
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind loopback");
        let t = parse_url(&format!("http://{addr}/healthz")).unwrap();
        assert!(get_status(&t, Duration::from_secs(5)).is_err());
    }
}
