//! A real browser through turnd: headless Chromium (Debian package `chromium`) loads
//! `tests/chromium/page.html` from a tiny HTTP server this test runs on 127.0.0.1. The page opens
//! two `RTCPeerConnection`s with turnd as the only ICE server and `iceTransportPolicy: 'relay'`
//! — Chromium also uses a `turn:` URL as a STUN server, so without `relay` nothing would prove
//! the relay carried the data — over `?transport=udp` and `?transport=tcp`. A data channel
//! carries 100 messages (1–1.2 kB, content depending on the index) and their echoes, each
//! checked intact and in order, and the page POSTs to `/result` the selected candidate pair of
//! both sides from `getStats()` (polled, bounded, until its state reads "succeeded": Chromium
//! marks a pair "in-progress" while any check on it — a keepalive on the pair in use too — awaits
//! its answer): both candidates relay, and the local relay candidate's
//! `relayProtocol` (the client-to-TURN transport) the one asked for. turnd's relayed-bytes
//! counter for clients on that transport must have moved.
//!
//! turnd runs on loopback and relays to loopback peers (its relayed addresses are 127.0.0.1:
//! the two relay candidates talk to each other through it), which the test configuration
//! allows. Chromium runs in a PID namespace of its own (`unshare`, util-linux) and is killed with
//! it, by PID, when the test ends, pass or fail; its profile is a scratch directory. Without `chromium` on PATH the test fails, it never skips.
//!
//! Tier 2 (tests/README.md): built and run only with `cargo test --features external`, which
//! `.ci/run` does.

mod common;

use common::{require_tool, Proc, ScratchDir, TurnServer, PASSWORD, USER};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const PAGE: &str = include_str!("chromium/page.html");
/// Data-channel messages the page sends (and expects echoed).
const MESSAGES: u32 = 100;
/// How long the page may take, from Chromium's start to its POST.
const RESULT_TIMEOUT: Duration = Duration::from_secs(40);
/// Bound on one HTTP exchange with the page.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest POST body accepted (the result is a few kB).
const MAX_BODY: usize = 1 << 20;

#[test]
fn chromium_relay_only_datachannel_over_turn_udp() {
    run_page("udp");
}

#[test]
fn chromium_relay_only_datachannel_over_turn_tcp() {
    run_page("tcp");
}

fn run_page(transport: &str) {
    let chromium = require_tool("chromium");
    let unshare = require_tool("unshare");
    let mut server = TurnServer::spawn_turnd(&[]);
    let (http_addr, results) = serve_page();
    let profile = ScratchDir::new("chromium-profile");
    let url = format!(
        "http://{http_addr}/page.html?turn={}&transport={transport}&user={USER}&credential={PASSWORD}&count={MESSAGES}",
        server.addr()
    );
    // In a PID namespace of its own: Chromium starts renderer, GPU, network and crashpad
    // processes, and the crashpad handlers detach (new session, reparented), out of reach of
    // its PID or process group. `--kill-child` kills Chromium when `unshare` (the PID the guard
    // holds) dies, and when a PID namespace's first process dies the kernel kills every other
    // process in it: pass or fail, nothing of the browser outlives the test.
    let mut cmd = Command::new(unshare);
    cmd.args(["--pid", "--fork", "--kill-child", "--mount-proc"])
        .arg(chromium)
        .args([
            "--headless",
            "--no-sandbox", // root in CI: Chromium's sandbox refuses to run as root
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            // Nothing WebRTC-specific is needed: relay-only ICE gathers no host candidates, so
            // neither the mDNS hiding of host addresses nor loopback interfaces matter.
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&url);
    let browser = Proc::spawn("chromium", cmd);

    let body = results.recv_timeout(RESULT_TIMEOUT).unwrap_or_else(|_| {
        panic!(
            "the page posted no result within {RESULT_TIMEOUT:?} ({url})\n--- chromium:\n{}\n--- turnd:\n{}",
            browser.output(),
            server.output()
        )
    });
    drop(browser); // SIGKILL to `unshare` by its PID, and so to the whole namespace
    server.assert_running();

    let (summary, details) = body.split_once('\n').unwrap_or((&body, ""));
    let words: HashMap<&str, &str> = summary
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect();
    let context = format!("page result: {summary}\n{details}");
    // Shown with --nocapture: how many getStats() polls each side's pair took to read
    // "succeeded" (more than 1 when a keepalive check was in flight).
    eprintln!("page result: {summary}");
    assert!(!words.contains_key("error"), "the page failed: {context}");
    assert_eq!(words.get("ok"), Some(&"true"), "{context}");
    let n = MESSAGES.to_string();
    assert_eq!(words.get("received"), Some(&n.as_str()), "{context}");
    assert_eq!(words.get("echoed"), Some(&n.as_str()), "{context}");
    for side in ["a", "b"] {
        let get = |k: &str| words.get(format!("{side}_{k}").as_str()).copied();
        assert_eq!(get("state"), Some("succeeded"), "{context}");
        assert_eq!(get("local"), Some("relay"), "{context}");
        assert_eq!(get("remote"), Some("relay"), "{context}");
        assert_eq!(get("relay_protocol"), Some(transport), "{context}");
    }
    // And turnd relayed the data for clients on that transport (its live counters).
    let relayed = relayed_bytes(&server.output(), transport);
    assert!(
        relayed > 0.0,
        "turnd counted no bytes relayed for {transport} clients:\n{}",
        server.output()
    );
}

/// Sum of turnd's `turnd_relayed_bytes_total` series for clients on `transport`, from the
/// metrics listener turnd announced in its output (`turnd metrics http://ADDR`).
fn relayed_bytes(turnd_output: &str, transport: &str) -> f64 {
    let addr = turnd_output
        .lines()
        .find_map(|l| l.strip_prefix("turnd metrics http://"))
        .unwrap_or_else(|| panic!("turnd printed no metrics address:\n{turnd_output}"));
    let mut s = TcpStream::connect(addr.trim()).expect("connect to turnd's metrics listener");
    s.set_read_timeout(Some(IO_TIMEOUT))
        .expect("a nonzero read timeout");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the metrics request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read /metrics");
    let label = format!("transport=\"{transport}\"");
    text.lines()
        .filter(|l| l.starts_with("turnd_relayed_bytes_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Serves `PAGE` on GET and hands each POST /result body to the returned receiver, from a
/// thread that ends at its deadline or once the test has stopped listening.
fn serve_page() -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page server on 127.0.0.1");
    listener
        .set_nonblocking(true)
        .expect("a nonblocking listener, so the accept loop can watch its deadline");
    let addr = listener
        .local_addr()
        .expect("local_addr of a bound listener");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let deadline = Instant::now() + RESULT_TIMEOUT + IO_TIMEOUT;
        // Bounded: one accept attempt per 20 ms (each connection bounded by IO_TIMEOUT) until
        // the deadline.
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Some(body) = handle(stream) {
                        if tx.send(body).is_err() {
                            return;
                        }
                    }
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (addr, rx)
}

/// One HTTP/1.x request (the connection is closed after the answer). Returns the body of a
/// POST to /result.
fn handle(stream: TcpStream) -> Option<String> {
    // Accepted from a nonblocking listener; this exchange itself blocks, with timeouts.
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).ok()?;
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next()?, parts.next()?.to_string());
    let mut content_length = 0usize;
    // Bounded: at most 100 header lines.
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().ok()?;
            }
        }
    }
    let mut result = None;
    let (status, content_type, body): (&str, &str, &[u8]) = match (method, path.as_str()) {
        ("GET", p) if p.starts_with("/page.html") => ("200 OK", "text/html", PAGE.as_bytes()),
        ("POST", "/result") if content_length <= MAX_BODY => {
            let mut buf = vec![0; content_length];
            reader.read_exact(&mut buf).ok()?;
            result = Some(String::from_utf8_lossy(&buf).into_owned());
            ("200 OK", "text/plain", b"ok")
        }
        _ => ("404 Not Found", "text/plain", b"not found"),
    };
    let mut stream = reader.into_inner();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    result
}
