//! A deliberately small HTTP/1.1 server for the admin listener: one request per connection
//! (`Connection: close`), no request body, a bounded request head, a deadline per connection
//! and a cap on connections served at once. Prometheus, curl and load balancers' health checks
//! need nothing more, and it keeps a web framework out of the dependency tree.
//!
//! Bounds, so an admin port exposed by mistake is no memory sink ([`Limits::ADMIN`]): at most
//! 64 connections are served at once, each holding at most an 8 KiB request head; more wait in
//! the kernel's accept queue (bounded by its backlog) until one ends. A connection must send
//! its whole request head within 2 s — Prometheus, curl and health checkers send it at once —
//! and be done within 10 s, so idle connections holding every slot delay a health check by
//! at most the head timeout. Each request is answered by its own task, so one slow answer
//! (`/allocations` waiting for a worker) never delays another.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;

/// How many connections the server serves at once, and how long each may take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// A connection must have sent its whole request head within this.
    pub head_timeout: Duration,
    /// A connection must send its request and take its answer within this.
    pub deadline: Duration,
}

impl Limits {
    /// The admin listener's.
    pub const ADMIN: Limits = Limits {
        max_connections: 64,
        head_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(10),
    };
}

/// What answers requests: the admin listener's router, or a test's.
pub trait Route: Send + Sync + 'static {
    /// The answer to `req`; may wait (for a worker), without delaying other requests.
    fn route(&self, req: Request) -> impl Future<Output = Response> + Send;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without its query string.
    pub path: String,
    /// The query string (after `?`, before any `#`), empty when absent; not decoded.
    pub query: String,
    /// The `Accept` header, empty when absent.
    pub accept: String,
    /// The `Authorization` header, empty when absent.
    pub authorization: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not an HTTP/1.x request line or header.
    BadRequest,
    /// The head exceeds [`MAX_HEAD`].
    TooLarge,
}

/// Parses a request head from the bytes received so far: `Ok(None)` when the blank line
/// ending the head has not arrived yet.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, ParseError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_HEAD {
            Err(ParseError::TooLarge)
        } else {
            Ok(None)
        };
    };
    if end + 4 > MAX_HEAD {
        return Err(ParseError::TooLarge);
    }
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| ParseError::BadRequest)?;
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadRequest);
    };
    if method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
        || !matches!(version, "HTTP/1.0" | "HTTP/1.1")
    {
        return Err(ParseError::BadRequest);
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let query = target
        .split('#')
        .next()
        .and_then(|t| t.split_once('?'))
        .map_or("", |(_, q)| q);
    let mut accept = String::new();
    let mut authorization = String::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(ParseError::BadRequest)?;
        if name.eq_ignore_ascii_case("authorization") {
            authorization = value.trim().to_string();
        }
        if name.eq_ignore_ascii_case("accept") {
            if !accept.is_empty() {
                accept.push_str(", ");
            }
            accept.push_str(value.trim());
        }
    }
    Ok(Some(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        accept,
        authorization,
    }))
}

/// An answer: status, content type and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// The methods a 405 names in its `Allow` header.
    pub allow: &'static str,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow: "GET, HEAD",
        }
    }

    /// 405, naming the methods `allow`ed on the resource.
    pub fn method_not_allowed(allow: &'static str) -> Response {
        Response {
            allow,
            ..Response::text(405, "method not allowed\n")
        }
    }

    fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            504 => "Gateway Timeout",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        }
    }

    /// The bytes on the wire; HEAD gets the headers only.
    pub fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason(),
            self.content_type,
            self.body.len()
        );
        if self.status == 401 {
            out.push_str("WWW-Authenticate: Bearer\r\n");
        }
        if self.status == 405 {
            out.push_str(&format!("Allow: {}\r\n", self.allow));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// Serves `listener` until `stop` completes, answering each request with `route`, each
/// connection on a task of its own.
pub async fn serve<R, S>(listener: TcpListener, route: Arc<R>, stop: S, limits: Limits)
where
    R: Route,
    S: Future<Output = ()>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            _ = &mut stop => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = &mut stop => return,
            s = listener.accept() => match s {
                Ok((s, _)) => s,
                // Out of fds and the like: back off instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let route = route.clone();
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(limits.deadline, connection(stream, &*route, limits)).await;
            drop(permit);
        });
    }
}

async fn connection<R: Route>(mut stream: TcpStream, route: &R, limits: Limits) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head = async {
        loop {
            match parse_request(&buf) {
                Ok(None) => {}
                other => break Some(other),
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    // A connection that has not sent its head in time is closed without an answer.
    let Ok(Some(result)) = tokio::time::timeout(limits.head_timeout, head).await else {
        return;
    };
    let (response, head_only) = match result {
        Ok(Some(req)) => {
            let head_only = req.method == "HEAD";
            (route.route(req).await, head_only)
        }
        Err(ParseError::TooLarge) => (Response::text(431, "request head too large\n"), false),
        Err(ParseError::BadRequest) | Ok(None) => (Response::text(400, "bad request\n"), false),
    };
    let _ = stream.write_all(&response.encode(head_only)).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_scrape() {
        let req = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\nauthorization:  Bearer t0k\r\n\r\n";
        let r = parse_request(req).unwrap().unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/metrics");
        assert_eq!(r.query, "x=1");
        assert!(r.accept.starts_with("application/openmetrics-text"));
        assert_eq!(r.authorization, "Bearer t0k");
        let r = parse_request(b"DELETE /fleet/allocations?user=a%3Ab#frag HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.path.as_str(), r.query.as_str()),
            ("/fleet/allocations", "user=a%3Ab")
        );
    }

    #[test]
    fn waits_for_the_end_of_the_head() {
        assert_eq!(parse_request(b""), Ok(None));
        assert_eq!(
            parse_request(b"GET /healthz HTTP/1.1\r\nHost: a\r\n"),
            Ok(None)
        );
        let r = parse_request(b"GET /healthz HTTP/1.0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((r.path.as_str(), r.accept.as_str()), ("/healthz", ""));
    }

    #[test]
    fn rejects_garbage_and_oversized_heads() {
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
            b"\xff\xfe / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_request(bad), Err(ParseError::BadRequest), "{bad:?}");
        }
        let big = vec![b'a'; MAX_HEAD];
        assert_eq!(parse_request(&big), Err(ParseError::TooLarge));
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_request(&long), Err(ParseError::TooLarge));
    }

    #[test]
    fn head_answers_carry_no_body() {
        let r = Response::text(200, "ok\n");
        let full = String::from_utf8(r.encode(false)).unwrap();
        assert!(full.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(full.contains("Content-Length: 3\r\n"));
        assert!(full.ends_with("\r\n\r\nok\n"));
        let head = String::from_utf8(r.encode(true)).unwrap();
        assert!(head.ends_with("\r\n\r\n"));
        let r = Response::method_not_allowed("GET, HEAD");
        assert!(String::from_utf8(r.encode(false))
            .unwrap()
            .contains("Allow: GET, HEAD"));
    }
}
