//! TURN over TLS (TURNS, RFC 8656 §3.1): TCP listeners on `tls_listen`, a rustls handshake
//! per connection, then the very same connection task as plain TCP (`tcp.rs`) with
//! `Transport::Tls` in the 5-tuple.
//!
//! The certificate can change under a running server (Let's Encrypt renews every few weeks):
//! [`Certs`] holds the current rustls `ServerConfig` behind a lock that only the accept path
//! reads, and [`Certs::reload`] swaps in a new one built from the files — on SIGHUP, or when
//! [`watch`] sees their modification time or size change. A connection keeps the config it was
//! accepted with, so a reload never drops a connection; a certificate or key that does not load
//! is logged and the old one keeps serving.
//!
//! The handshake must finish within `unauthenticated_timeout`, so a client that opens a
//! connection and never sends a ClientHello holds a `max_connections` slot only that long.

use super::tcp::{self, Limits, Slot};
use super::worker::Shared;
use crate::config::Config;
use crate::core::{FiveTuple, Transport};
use anyhow::{anyhow, Context};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// ALPN protocols accepted (RFC 7443). A client offering none is accepted too; one offering
/// only others is refused by rustls with a `no_application_protocol` alert (RFC 7301).
pub const ALPN: [&[u8]; 2] = [b"stun.turn", b"stun.nat-discovery"];

/// How often [`watch`] looks at the files' modification times.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// What identifies one version of a file on disk: modification time and size.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The TLS certificate in use and the files it comes from.
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
    /// The files' stamps when last loaded (or last refused), so [`Certs::reload_if_changed`]
    /// tries each new version once.
    seen: Mutex<[Stamp; 2]>,
}

impl Certs {
    /// Loads the certificate chain and key; the error names the config key and the file.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Certs> {
        let seen = [stamp(cert), stamp(key)];
        let config = server_config(cert, key)?;
        Ok(Certs {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(config),
            seen: Mutex::new(seen),
        })
    }

    /// The config new handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        // A poisoned lock still holds a complete Arc: a panic cannot leave it half-written.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads the files again and, if they load, serves them to new handshakes. `why` is
    /// for the log line. Returns whether the new certificate is in use.
    pub fn reload(&self, why: &str) -> bool {
        let seen = [stamp(&self.cert), stamp(&self.key)];
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = seen;
        match server_config(&self.cert, &self.key) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
                tracing::info!(reason = why, cert = %self.cert.display(), "tls certificate reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(
                    reason = why,
                    error = %format!("{e:#}"),
                    "tls certificate not reloaded; the previous one stays in use"
                );
                false
            }
        }
    }

    /// Reloads when either file changed since it was last loaded (or refused).
    pub fn reload_if_changed(&self) {
        let now = [stamp(&self.cert), stamp(&self.key)];
        let changed = *self.seen.lock().unwrap_or_else(|e| e.into_inner()) != now;
        if changed {
            self.reload("file changed");
        }
    }
}

/// Builds a rustls server config (TLS 1.2 and 1.3, ring) from PEM files.
fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("config key `tls_cert`: cannot load {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!(
            "config key `tls_cert`: {} holds no PEM CERTIFICATE",
            cert.display()
        );
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("config key `tls_key`: cannot load {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("tls: protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .with_context(|| {
            format!(
                "config keys `tls_cert`/`tls_key`: {} and {} do not make a usable certificate",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Checks the certificate files at `check-config` and start-up.
pub fn check(config: &Config) -> anyhow::Result<()> {
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        server_config(cert, key)?;
    }
    Ok(())
}

/// Polls the files every [`WATCH_INTERVAL`] until `stop` is dropped (or sent to).
pub fn watch(certs: Arc<Certs>, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(WATCH_INTERVAL) {
        certs.reload_if_changed();
    }
}

/// Accepts TLS connections on one listener of this worker.
pub async fn accept(worker: Shared, listener: TcpListener, limits: Limits, certs: Arc<Certs>) {
    loop {
        let (stream, ft, slot) = tcp::accept_one(&worker, &listener, &limits, Transport::Tls).await;
        let acceptor = TlsAcceptor::from(certs.current());
        tokio::task::spawn_local(handshake(
            worker.clone(),
            acceptor,
            stream,
            ft,
            limits.clone(),
            slot,
        ));
    }
}

/// Runs the TLS handshake (bounded by `unauthenticated_timeout`), then the connection.
async fn handshake(
    worker: Shared,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    ft: FiveTuple,
    limits: Limits,
    slot: Slot,
) {
    let timeout = limits.unauthenticated_timeout;
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let (_, session) = tls.get_ref();
            tracing::debug!(
                client = %ft,
                alpn = session.alpn_protocol().map(String::from_utf8_lossy).as_deref().unwrap_or("-"),
                version = ?session.protocol_version(),
                "tls handshake done"
            );
            tcp::serve(worker, tls, ft, limits, slot).await;
        }
        Ok(Err(e)) => tracing::debug!(client = %ft, error = %e, "tls handshake failed"),
        Err(_) => tracing::debug!(client = %ft, "tls handshake timed out"),
    }
}

/// The TLS side of a server: its listeners until the workers take them, the certificate, and
/// the thread watching the certificate files.
pub struct Listeners {
    addrs: Vec<SocketAddr>,
    /// Per `tls_listen` address, one listener per worker.
    listeners: Vec<Vec<std::net::TcpListener>>,
    certs: Option<Arc<Certs>>,
    /// Dropping the sender stops the watcher.
    watcher: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Listeners {
    /// Loads the certificate, binds every `tls_listen` address (one listener per worker) and
    /// starts the file watcher; nothing when `tls_listen` is empty.
    pub fn bind(config: &Config, workers: usize) -> anyhow::Result<Listeners> {
        let mut t = Listeners {
            addrs: Vec::new(),
            listeners: Vec::new(),
            certs: None,
            watcher: None,
        };
        let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
            return Ok(t);
        };
        if config.tls_listen.is_empty() {
            return Ok(t);
        }
        let certs = Arc::new(Certs::load(cert, key)?);
        for addr in &config.tls_listen {
            let group = super::socket::bind_tcp_reuseport_group(*addr, workers, addr.port() == 0)
                .with_context(|| format!("cannot listen on tls {addr}"))?;
            t.addrs.push(group[0].local_addr()?);
            t.listeners.push(group);
        }
        let (tx, rx) = mpsc::channel();
        let c = certs.clone();
        let handle = std::thread::Builder::new()
            .name("turnd-tls-watch".into())
            .spawn(move || watch(c, rx))
            .context("cannot start the tls certificate watcher")?;
        t.certs = Some(certs);
        t.watcher = Some((tx, handle));
        Ok(t)
    }

    /// Hands out the listeners: for each worker, one per `tls_listen` address.
    pub fn per_worker(&mut self, workers: usize) -> Vec<Vec<(std::net::TcpListener, Arc<Certs>)>> {
        let mut out: Vec<Vec<_>> = (0..workers).map(|_| Vec::new()).collect();
        let Some(certs) = &self.certs else {
            return out;
        };
        for group in std::mem::take(&mut self.listeners) {
            // One listener per worker (`bind` made `workers` of them).
            for (slot, l) in out.iter_mut().zip(group) {
                slot.push((l, certs.clone()));
            }
        }
        out
    }

    /// The bound addresses, with real ports for port 0.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// [`Certs::reload`], when there is TLS.
    pub fn reload(&self, why: &str) -> bool {
        self.certs.as_ref().is_some_and(|c| c.reload(why))
    }

    /// Stops the file watcher.
    pub fn stop(&mut self) {
        if let Some((tx, handle)) = self.watcher.take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `localhost`: (cert PEM, key PEM).
    fn self_signed(cn: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("turnd-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reload_takes_a_good_pair_and_refuses_a_bad_one() {
        let dir = scratch("reload");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let (c1, k1) = self_signed("one");
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let certs = Certs::load(&cert, &key).unwrap();
        let first = certs.current();
        assert_eq!(
            first.alpn_protocols,
            [b"stun.turn".to_vec(), b"stun.nat-discovery".to_vec()]
        );

        // A certificate whose key is another one's: refused, the old config stays.
        let (c2, k2) = self_signed("two");
        std::fs::write(&cert, &c2).unwrap();
        assert!(!certs.reload("test"));
        assert!(Arc::ptr_eq(&first, &certs.current()));
        // Not PEM at all.
        std::fs::write(&key, "garbage").unwrap();
        assert!(!certs.reload("test"));
        assert!(Arc::ptr_eq(&first, &certs.current()));
        // A missing file.
        std::fs::remove_file(&key).unwrap();
        certs.reload_if_changed();
        assert!(Arc::ptr_eq(&first, &certs.current()));
        // The matching pair: taken, by the file watcher's check as well.
        std::fs::write(&key, &k2).unwrap();
        certs.reload_if_changed();
        assert!(!Arc::ptr_eq(&first, &certs.current()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn load_errors_name_the_key_and_the_file() {
        let dir = scratch("errors");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let e = format!("{:#}", Certs::load(&cert, &key).err().unwrap());
        assert!(e.contains("`tls_cert`") && e.contains("cert.pem"), "{e}");
        let (c, _) = self_signed("x");
        std::fs::write(&cert, &c).unwrap();
        std::fs::write(&key, &c).unwrap();
        let e = format!("{:#}", Certs::load(&cert, &key).err().unwrap());
        assert!(e.contains("`tls_key`") && e.contains("key.pem"), "{e}");
        std::fs::write(&cert, "").unwrap();
        let e = format!("{:#}", Certs::load(&cert, &key).err().unwrap());
        assert!(
            e.contains("`tls_cert`") && e.contains("no PEM CERTIFICATE"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
