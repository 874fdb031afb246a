//! The probe's connection to the server: a UDP socket, a TCP stream, or TLS over TCP, each
//! handing back whole STUN messages or ChannelData frames.
//!
//! Blocking std sockets with read timeouts, not tokio: the probe is one client doing one thing
//! at a time, and a blocking loop with a deadline is the easiest thing to read. The TLS client
//! is rustls (already a dependency through tokio-rustls) driven synchronously.

use crate::stun::framing::{complete_frame, MAX_FRAME_LEN};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_rustls::rustls::{
    self,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
    StreamOwned,
};

/// Where the system's CA bundle usually is (Debian/Ubuntu/Alpine, then Fedora/RHEL, then
/// SUSE). `SSL_CERT_FILE` overrides, as for OpenSSL.
const SYSTEM_CA_FILES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
];

/// Why a connection could not be set up; the diagnosis turns each into advice.
#[derive(Debug)]
pub enum ConnectError {
    /// TCP: nothing listens there (RST).
    Refused,
    /// TCP: no answer to the SYN in time (a firewall dropping it, or a wrong address).
    Timeout,
    /// The server's certificate was not accepted (unknown issuer, wrong name, expired …).
    Certificate(String),
    /// The TLS handshake failed for another reason (not TLS on that port, no common ALPN …).
    Tls(String),
    /// The trust anchors could not be loaded (`--ca`, or no system bundle).
    Trust(String),
    Other(String),
}

/// What the TLS client trusts.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The system CA bundle.
    System,
    /// Only the certificates in this PEM file (a private CA or a self-signed certificate).
    CaFile(std::path::PathBuf),
    /// Nothing is checked: for a self-signed test server only.
    Insecure,
}

/// A stream transport's read side: bytes read so far, cut into frames by the shared framing
/// code.
struct Framed<S> {
    s: S,
    buf: Vec<u8>,
}

enum Inner {
    Udp(UdpSocket),
    Tcp(Framed<TcpStream>),
    Tls(Box<Framed<StreamOwned<ClientConnection, TcpStream>>>),
}

/// One connection to the server.
pub struct Conn {
    inner: Inner,
    local: SocketAddr,
}

/// What `recv` got.
pub enum Recv {
    Frame(Vec<u8>),
    /// Nothing before the deadline.
    Timeout,
    /// UDP: the kernel saw an ICMP port unreachable for an earlier datagram.
    Unreachable,
    /// TCP/TLS: the server closed the connection.
    Closed,
}

impl Conn {
    /// A connected UDP socket (so ICMP port unreachable is reported).
    pub fn udp(server: SocketAddr) -> io::Result<Conn> {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal address")
        } else {
            "[::]:0".parse().expect("literal address")
        };
        let s = UdpSocket::bind(bind)?;
        s.connect(server)?;
        Ok(Conn {
            local: s.local_addr()?,
            inner: Inner::Udp(s),
        })
    }

    pub fn tcp(server: SocketAddr, timeout: Duration) -> Result<Conn, ConnectError> {
        let s = tcp_connect(server, timeout)?;
        Ok(Conn {
            local: s
                .local_addr()
                .map_err(|e| ConnectError::Other(e.to_string()))?,
            inner: Inner::Tcp(Framed { s, buf: Vec::new() }),
        })
    }

    /// TCP, then a TLS handshake completed here, so certificate problems show up as a connect
    /// error rather than as a mysterious silence later.
    pub fn tls(
        server: SocketAddr,
        name: &str,
        config: Arc<ClientConfig>,
        timeout: Duration,
    ) -> Result<Conn, ConnectError> {
        let tcp = tcp_connect(server, timeout)?;
        let local = tcp
            .local_addr()
            .map_err(|e| ConnectError::Other(e.to_string()))?;
        let sni = ServerName::try_from(name.to_string())
            .map_err(|e| ConnectError::Tls(format!("`{name}` is not a valid TLS name: {e}")))?;
        let conn =
            ClientConnection::new(config, sni).map_err(|e| ConnectError::Tls(e.to_string()))?;
        let mut stream = StreamOwned::new(conn, tcp);
        let _ = stream.sock.set_read_timeout(Some(timeout));
        // Bounded: each round trip of the handshake waits at most `timeout`; rustls ends the
        // handshake (or fails) within a few round trips.
        while stream.conn.is_handshaking() {
            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                return Err(classify_tls(e));
            }
        }
        Ok(Conn {
            local,
            inner: Inner::Tls(Box::new(Framed {
                s: stream,
                buf: Vec::new(),
            })),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Over a stream, ChannelData must be padded to a multiple of 4 (RFC 8656 §12.5).
    pub fn is_stream(&self) -> bool {
        !matches!(self.inner, Inner::Udp(_))
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.inner {
            Inner::Udp(s) => s.send(bytes).map(|_| ()),
            Inner::Tcp(f) => f.s.write_all(bytes),
            Inner::Tls(f) => {
                f.s.write_all(bytes)?;
                f.s.flush()
            }
        }
    }

    /// The next datagram or frame, waiting until `deadline` at most.
    pub fn recv(&mut self, deadline: Instant) -> io::Result<Recv> {
        match &mut self.inner {
            Inner::Udp(s) => {
                let Some(left) = left(deadline) else {
                    return Ok(Recv::Timeout);
                };
                s.set_read_timeout(Some(left))?;
                let mut buf = vec![0u8; 65536];
                match s.recv(&mut buf) {
                    Ok(n) => {
                        buf.truncate(n);
                        Ok(Recv::Frame(buf))
                    }
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(Recv::Unreachable),
                    Err(e) if is_timeout(&e) => Ok(Recv::Timeout),
                    Err(e) => Err(e),
                }
            }
            Inner::Tcp(f) => read_frame(f, deadline),
            Inner::Tls(f) => read_frame(f, deadline),
        }
    }
}

fn left(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A byte stream over a TCP socket whose reads can be given a timeout.
trait TimedStream: Read {
    fn set_timeout(&self, t: Duration) -> io::Result<()>;
}

impl TimedStream for TcpStream {
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))
    }
}

impl TimedStream for StreamOwned<ClientConnection, TcpStream> {
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.sock.set_read_timeout(Some(t))
    }
}

/// Reads until a whole frame is buffered or the deadline passes. Bounded: every read waits at
/// most the time left, and the loop ends at the deadline, on EOF or on an error.
fn read_frame<S: TimedStream>(f: &mut Framed<S>, deadline: Instant) -> io::Result<Recv> {
    loop {
        match complete_frame(&f.buf, MAX_FRAME_LEN) {
            Ok(Some(n)) => return Ok(Recv::Frame(f.buf.drain(..n).collect())),
            Ok(None) => {}
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the server sent something that is not STUN or ChannelData: {e:?}"),
                ))
            }
        }
        let Some(left) = left(deadline) else {
            return Ok(Recv::Timeout);
        };
        f.s.set_timeout(left)?;
        let mut chunk = [0u8; 4096];
        match f.s.read(&mut chunk) {
            Ok(0) => return Ok(Recv::Closed),
            Ok(n) => f.buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => return Ok(Recv::Timeout),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(Recv::Closed),
            Err(e) => return Err(e),
        }
    }
}

fn tcp_connect(server: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    match TcpStream::connect_timeout(&server, timeout) {
        Ok(s) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Err(ConnectError::Refused),
        Err(e) if is_timeout(&e) => Err(ConnectError::Timeout),
        Err(e) => Err(ConnectError::Other(e.to_string())),
    }
}

/// rustls reports its own errors wrapped in an `io::Error`; a certificate error is what the
/// diagnosis needs to tell apart.
fn classify_tls(e: io::Error) -> ConnectError {
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .cloned();
    match inner {
        Some(rustls::Error::InvalidCertificate(c)) => ConnectError::Certificate(format!("{c:?}")),
        Some(other) => ConnectError::Tls(other.to_string()),
        None if e.kind() == io::ErrorKind::UnexpectedEof => ConnectError::Tls(
            "the server closed the connection during the handshake (not TLS on this port?)".into(),
        ),
        None if is_timeout(&e) => ConnectError::Tls("no answer to the TLS handshake".into()),
        None => ConnectError::Tls(e.to_string()),
    }
}

/// The rustls client configuration for `trust`, offering ALPN `stun.turn` (RFC 7443).
pub fn tls_config(trust: &Trust) -> Result<Arc<ClientConfig>, ConnectError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConnectError::Tls(e.to_string()))?;
    let mut config = match trust {
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
        Trust::CaFile(path) => builder
            .with_root_certificates(roots_from(path)?)
            .with_no_client_auth(),
        Trust::System => {
            let file = std::env::var_os("SSL_CERT_FILE")
                .map(std::path::PathBuf::from)
                .or_else(|| {
                    SYSTEM_CA_FILES
                        .iter()
                        .map(std::path::PathBuf::from)
                        .find(|p| p.exists())
                })
                .ok_or_else(|| {
                    ConnectError::Trust(
                        "no system CA bundle found (set SSL_CERT_FILE, or pass --ca FILE)".into(),
                    )
                })?;
            builder
                .with_root_certificates(roots_from(&file)?)
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"stun.turn".to_vec()];
    Ok(Arc::new(config))
}

fn roots_from(path: &Path) -> Result<RootCertStore, ConnectError> {
    let bad = |e: String| ConnectError::Trust(format!("{}: {e}", path.display()));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| bad(e.to_string()))?;
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad("holds no usable PEM CERTIFICATE".into()));
    }
    Ok(store)
}

/// `--insecure`: accepts any certificate, but still checks the handshake signatures (so the
/// connection is at least to whoever holds the key of the certificate shown).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
