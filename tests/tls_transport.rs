//! TURN over TLS (TURNS) with a tokio-rustls client that trusts a CA made for the test:
//! Allocate and ChannelData both ways, ALPN (`stun.turn`, `stun.nat-discovery`, none; anything
//! else refused), the handshake timeout, and certificate reload — on SIGHUP to the binary and
//! on a file change — while an existing TLS allocation keeps relaying, with a broken new
//! certificate refused and the old one kept. Every wait is bounded.

mod common;
mod raw;
mod tls_certs;

use raw::stream::*;
use raw::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tls_certs::{Ca, CertFiles};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, pki_types::ServerName, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use turnd::config::ConfigArgs;

/// How long a reload may take to show in new handshakes (the file watcher polls every 2 s).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

fn client_config(ca: &Ca, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().into()).expect("CA into the root store");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to `addr` (server name `localhost`), or the handshake error.
async fn try_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").expect("server name");
        TlsConnector::from(config).connect(name, tcp).await
    };
    tokio::time::timeout(REPLY_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("TLS connect to {addr} timed out"))
}

/// A raw TURN client over one TLS connection.
struct TlsClient {
    stream: TlsStream<TcpStream>,
    buf: Vec<u8>,
    credential: Credential,
}

impl TlsClient {
    async fn connect(addr: SocketAddr, config: Arc<ClientConfig>, user: (&str, &str)) -> Self {
        let stream = try_connect(addr, config)
            .await
            .unwrap_or_else(|e| panic!("TLS handshake with {addr} failed: {e}"));
        TlsClient {
            stream,
            buf: Vec::new(),
            credential: Credential::new(user),
        }
    }

    fn alpn(&self) -> Option<Vec<u8>> {
        self.stream.get_ref().1.alpn_protocol().map(|p| p.to_vec())
    }

    /// The leaf certificate the server showed, DER.
    fn server_cert(&self) -> Vec<u8> {
        self.stream
            .get_ref()
            .1
            .peer_certificates()
            .expect("server certificate")[0]
            .to_vec()
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("tls write");
        self.stream.flush().await.expect("tls flush");
    }

    /// The next whole frame within [`REPLY_TIMEOUT`].
    async fn recv_frame(&mut self) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        let mut chunk = [0u8; 4096];
        // Bounded: each round reads at least one byte or ends at the deadline.
        loop {
            if let Some(n) = frame_len(&self.buf).filter(|&n| n <= self.buf.len()) {
                return self.buf.drain(..n).collect();
            }
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) => panic!("server closed the TLS connection"),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => panic!("TLS read failed: {e}"),
                Err(_) => panic!("no frame within {REPLY_TIMEOUT:?}"),
            }
        }
    }

    async fn transact(&mut self, bytes: &[u8]) -> Parsed {
        let txid: [u8; 12] = bytes[8..20].try_into().unwrap();
        self.send(bytes).await;
        for _ in 0..32 {
            let frame = self.recv_frame().await;
            if let Some(p) = Parsed::parse(&frame) {
                if p.txid == txid && matches!(p.class(), SUCCESS | ERROR) {
                    return p;
                }
            }
        }
        panic!("no response with the request's transaction id");
    }

    async fn binding(&mut self) -> SocketAddr {
        let r = self.transact(&plain_request(BINDING, &[])).await;
        assert_success(&r, BINDING);
        r.xor_address(A_XOR_MAPPED_ADDRESS)
            .expect("XOR-MAPPED-ADDRESS")
    }

    async fn request(&mut self, method: u16, attrs: &[Attr]) -> Parsed {
        if !self.credential.has_nonce() {
            let r = self.transact(&plain_request(REFRESH, &[])).await;
            self.credential.learn(&r);
        }
        let bytes = self.credential.sign(method, attrs);
        self.transact(&bytes).await
    }

    async fn allocate(&mut self) -> SocketAddr {
        let r = self.request(ALLOCATE, &[udp()]).await;
        assert_success(&r, ALLOCATE);
        r.xor_address(A_XOR_RELAYED_ADDRESS)
            .expect("relayed address")
    }

    async fn bind_channel(&mut self, channel: u16, to: SocketAddr) {
        let r = self
            .request(CHANNEL_BIND, &[channel_number(channel), peer(to)])
            .await;
        assert_success(&r, CHANNEL_BIND);
    }

    /// ChannelData both ways between this client (on `channel`) and `p` (via `relay`).
    async fn relay_round_trip(&mut self, channel: u16, p: &Peer, relay: SocketAddr, tag: &str) {
        let up = format!("client->peer {tag}");
        self.send(&channel_data(channel, up.as_bytes(), true)).await;
        let (got, from) = p.recv().expect("peer got the client's ChannelData");
        assert_eq!((got.as_slice(), from), (up.as_bytes(), relay));
        let down = format!("peer->client {tag}!");
        p.send_to(relay, down.as_bytes());
        let frame = self.recv_frame().await;
        assert_eq!(frame.len() % 4, 0, "ChannelData padded on the stream");
        assert_eq!(parse_channel_data(&frame), (channel, down.into_bytes()));
    }
}

/// An in-process server with a TLS listener on 127.0.0.1:0 using `files`.
fn tls_server(files: &CertFiles, extra: impl FnOnce(&mut ConfigArgs)) -> TestServer {
    let mut args = ConfigArgs {
        // The peers listen on 127.0.0.1, the relay's own address: named exactly.
        allow_peer: vec!["127.0.0.0/8".into(), "127.0.0.1".into()],
        tls_listen: vec!["127.0.0.1:0".into()],
        tls_cert: Some(files.cert.display().to_string()),
        tls_key: Some(files.key.display().to_string()),
        ..base_args()
    };
    extra(&mut args);
    TestServer::start(args)
}

#[tokio::test]
async fn allocate_and_channel_data_both_ways_over_tls_with_alpn_stun_turn() {
    let dir = common::ScratchDir::new("tls-relay");
    let ca = Ca::new();
    let files = CertFiles::write(dir.path(), &ca.issue("turnd one", 1));
    let server = tls_server(&files, |_| {});
    let tls_addr = server.tls_addrs[0];
    assert_ne!(tls_addr.port(), 0);
    let config = client_config(&ca, &[b"stun.turn"]);
    let mut c = TlsClient::connect(tls_addr, config, ALICE).await;
    assert_eq!(c.alpn().as_deref(), Some(&b"stun.turn"[..]));
    let local = c.stream.get_ref().0.local_addr().unwrap();
    assert_eq!(c.binding().await, local);
    let relay = c.allocate().await;
    let p = Peer::v4();
    c.bind_channel(0x4000, p.addr()).await;
    for i in 0..20 {
        c.relay_round_trip(0x4000, &p, relay, &i.to_string()).await;
    }
}

#[tokio::test]
async fn alpn_nat_discovery_and_no_alpn_are_accepted_others_refused() {
    let dir = common::ScratchDir::new("tls-alpn");
    let ca = Ca::new();
    let files = CertFiles::write(dir.path(), &ca.issue("turnd alpn", 2));
    let server = tls_server(&files, |_| {});
    let addr = server.tls_addrs[0];

    let mut c = TlsClient::connect(addr, client_config(&ca, &[]), ALICE).await;
    assert_eq!(c.alpn(), None);
    c.binding().await;

    let config = client_config(&ca, &[b"stun.nat-discovery"]);
    let mut c = TlsClient::connect(addr, config, ALICE).await;
    assert_eq!(c.alpn().as_deref(), Some(&b"stun.nat-discovery"[..]));
    c.binding().await;

    // A client offering only other protocols is told no_application_protocol (RFC 7301).
    let r = try_connect(addr, client_config(&ca, &[b"h2", b"http/1.1"])).await;
    assert!(r.is_err(), "a handshake offering only h2/http1.1 succeeded");
}

#[tokio::test]
async fn a_connection_that_never_says_client_hello_is_closed_in_time() {
    let dir = common::ScratchDir::new("tls-slow");
    let ca = Ca::new();
    let files = CertFiles::write(dir.path(), &ca.issue("turnd slow", 3));
    let server = tls_server(&files, |a| a.unauthenticated_timeout = Some("1".into()));
    // Taken before the connection exists, so the server's 1 s (which starts when it accepts)
    // lies wholly inside `waited`: a busy machine can only make `waited` longer, and a close
    // before the timeout shows as less than 1 s whatever the load.
    let start = Instant::now();
    let mut tcp = TcpStream::connect(server.tls_addrs[0]).await.unwrap();
    let mut byte = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut byte)).await;
    let waited = start.elapsed();
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "silent connection not closed within 5 s: {r:?}"
    );
    assert!(
        waited >= Duration::from_secs(1),
        "closed before the 1 s unauthenticated_timeout ({waited:?})"
    );
}

/// When the server ends a TLS connection (here: no allocation within
/// `unauthenticated_timeout`) it sends close_notify, so the client reads a clean end of
/// stream; without it rustls reports an unexpected EOF (a possible truncation attack).
#[tokio::test]
async fn a_server_initiated_close_sends_close_notify() {
    let dir = common::ScratchDir::new("tls-close");
    let ca = Ca::new();
    let files = CertFiles::write(dir.path(), &ca.issue("turnd close", 4));
    let server = tls_server(&files, |a| a.unauthenticated_timeout = Some("1".into()));
    let mut c = TlsClient::connect(server.tls_addrs[0], client_config(&ca, &[]), ALICE).await;
    c.binding().await;
    let mut chunk = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(10), c.stream.read(&mut chunk)).await;
    match r {
        Ok(Ok(0)) => {}
        other => panic!("expected a clean close (close_notify, then EOF), got {other:?}"),
    }
}

/// New handshakes to `addr` show `want` within [`RELOAD_TIMEOUT`].
async fn wait_for_cert(addr: SocketAddr, config: &Arc<ClientConfig>, want: &[u8], what: &str) {
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    // Bounded: one handshake per 100 ms until the deadline.
    loop {
        let c = TlsClient::connect(addr, config.clone(), ALICE).await;
        if c.server_cert() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: new handshakes still see the old certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until the server's output contains `text`.
async fn wait_for_output(server: &common::TurnServer, text: &str) {
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    // Bounded: one look per 50 ms until the deadline.
    while !server.output().contains(text) {
        assert!(
            Instant::now() < deadline,
            "no `{text}` in the server output:\n{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sighup_reloads_the_certificate_while_a_tls_allocation_keeps_relaying() {
    let dir = common::ScratchDir::new("tls-hup");
    let ca = Ca::new();
    let (one, two) = (ca.issue("turnd one", 10), ca.issue("turnd two", 11));
    let files = CertFiles::write(dir.path(), &one);
    let flags = files.flags();
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut server = common::TurnServer::spawn_turnd(&args);
    let addr = server.tls_addr();
    let config = client_config(&ca, &[b"stun.turn"]);

    let user = (common::USER, common::PASSWORD);
    let mut c = TlsClient::connect(addr, config.clone(), user).await;
    assert_eq!(c.server_cert(), one.der);
    let relay = c.allocate().await;
    let p = Peer::v4();
    c.bind_channel(0x4001, p.addr()).await;
    c.relay_round_trip(0x4001, &p, relay, "before").await;

    let hup = |server: &common::TurnServer| {
        let pid = libc::pid_t::try_from(server.pid()).expect("pid fits");
        // SAFETY: kill(2) on our own child, which the server guard has not reaped.
        let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
        assert_eq!(rc, 0, "kill({pid}, SIGHUP)");
    };
    // The allocation's log line carries the transport.
    let local = c.stream.get_ref().0.local_addr().unwrap();
    let created = format!("client={local}->{addr}/tls");
    wait_for_output(&server, &created).await;

    files.replace(&two);
    hup(&server);
    wait_for_output(&server, "tls certificate reloaded reason=\"SIGHUP\"").await;
    wait_for_cert(addr, &config, &two.der, "after SIGHUP").await;
    server.assert_running();
    c.relay_round_trip(0x4001, &p, relay, "after reload").await;

    // A broken certificate is refused with a log line; the last good one stays.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    hup(&server);
    wait_for_output(&server, "tls certificate not reloaded").await;
    let fresh = TlsClient::connect(addr, config.clone(), user).await;
    assert_eq!(fresh.server_cert(), two.der);
    server.assert_running();
    c.relay_round_trip(0x4001, &p, relay, "after refusal").await;
}

#[tokio::test]
async fn a_changed_certificate_file_is_picked_up_without_a_signal() {
    let dir = common::ScratchDir::new("tls-watch");
    let ca = Ca::new();
    let (one, two) = (ca.issue("turnd one", 20), ca.issue("turnd two", 21));
    let files = CertFiles::write(dir.path(), &one);
    let server = tls_server(&files, |_| {});
    let addr = server.tls_addrs[0];
    let config = client_config(&ca, &[]);
    let mut c = TlsClient::connect(addr, config.clone(), ALICE).await;
    assert_eq!(c.server_cert(), one.der);
    let relay = c.allocate().await;
    let p = Peer::v4();
    c.bind_channel(0x4002, p.addr()).await;

    files.replace(&two);
    wait_for_cert(addr, &config, &two.der, "after the files changed").await;
    c.relay_round_trip(0x4002, &p, relay, "after reload").await;
}

#[tokio::test]
async fn max_connections_counts_tls_connections() {
    let dir = common::ScratchDir::new("tls-max");
    let ca = Ca::new();
    let files = CertFiles::write(dir.path(), &ca.issue("turnd max", 30));
    let server = tls_server(&files, |a| a.max_connections = Some("1".into()));
    let config = client_config(&ca, &[]);
    let mut first = TlsClient::connect(server.tls_addrs[0], config.clone(), ALICE).await;
    first.binding().await;
    let second = try_connect(server.tls_addrs[0], config.clone()).await;
    assert!(
        second.is_err(),
        "a second connection beyond max_connections=1 was served"
    );
    first.binding().await;
}

#[test]
fn certificate_files_that_do_not_load_stop_start_up_naming_key_and_file() {
    let dir = common::ScratchDir::new("tls-bad");
    let files = CertFiles::write(dir.path(), &Ca::new().issue("turnd bad", 40));
    let missing = dir.path().join("missing.pem").display().to_string();
    let key = files.key.display().to_string();
    let cert = files.cert.display().to_string();
    let cases = [
        ("tls_cert", missing.as_str(), key.as_str(), missing.as_str()),
        ("tls_key", cert.as_str(), cert.as_str(), cert.as_str()),
    ];
    for (name, cert_arg, key_arg, named) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_turnd"))
            .args(["check-config", "--listen", "127.0.0.1:3478"])
            .args(["--tls-listen", "127.0.0.1:5349"])
            .args(["--tls-cert", cert_arg, "--tls-key", key_arg])
            .env_clear()
            .output()
            .expect("run turnd check-config");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("`{name}`")) && err.contains(named),
            "{err}"
        );
    }
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_both_served() {
    let dir = common::ScratchDir::new("tls-versions");
    let ca = Ca::new();
    let files = CertFiles::write(dir.path(), &ca.issue("turnd versions", 50));
    let server = tls_server(&files, |_| {});
    for (version, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().into()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut c = TlsClient::connect(server.tls_addrs[0], Arc::new(config), ALICE).await;
        assert_eq!(c.stream.get_ref().1.protocol_version(), Some(want));
        c.binding().await;
    }
}

#[tokio::test]
async fn tls_over_ipv6_loopback_relays() {
    let dir = common::ScratchDir::new("tls-v6");
    let ca = Ca::new();
    let files = CertFiles::write(dir.path(), &ca.issue("turnd v6", 60));
    let server = TestServer::start(ConfigArgs {
        allow_peer: vec!["::1/128".into()],
        tls_listen: vec!["[::1]:0".into()],
        tls_cert: Some(files.cert.display().to_string()),
        tls_key: Some(files.key.display().to_string()),
        workers: Some("2".into()),
        ..base_args_v6()
    });
    let addr = server.tls_addrs[0];
    assert!(addr.is_ipv6() && addr.port() != 0, "{addr}");
    let mut c = TlsClient::connect(addr, client_config(&ca, &[b"stun.turn"]), ALICE).await;
    let local = c.stream.get_ref().0.local_addr().unwrap();
    assert_eq!(c.binding().await, local);
    let r = c
        .request(ALLOCATE, &[udp(), address_family(FAMILY_V6)])
        .await;
    assert_success(&r, ALLOCATE);
    let relay = r
        .xor_address(A_XOR_RELAYED_ADDRESS)
        .expect("relayed address");
    assert!(relay.is_ipv6());
    let p = Peer::v6();
    c.bind_channel(0x4003, p.addr()).await;
    c.relay_round_trip(0x4003, &p, relay, "v6").await;
}
