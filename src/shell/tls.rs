//! TURN over TLS (TURNS, RFC 8656 §3.1): TCP listeners on `tls_listen`, a rustls
//! `ServerConnection` per connection driven by the worker's loop (`stream.rs`), then the very
//! same connection handling as plain TCP (`tcp.rs`) with `Transport::Tls` in the 5-tuple.
//!
//! The certificate can change under a running server (Let's Encrypt renews every few weeks):
//! [`Certs`] holds the current rustls `ServerConfig` behind a lock that only the accept path
//! reads, and [`Certs::reload`] swaps in a new one built from the files — on SIGHUP, or when
//! [`watch`] sees their contents change. A connection keeps the config it was accepted with,
//! so a reload never drops a connection; a certificate or key that does not load is logged and
//! the old one keeps serving.
//!
//! **The final state of the files is always loaded.** Two races used to lose it:
//! - The watcher told versions apart by modification time and size, read *before* the files
//!   were parsed. A file rewritten in place while a reload read it (the key half-written, or
//!   the new certificate next to the old key) was refused, and when the rest was written in the
//!   same kernel clock tick (mtime is only as fine as the timer tick) or by a copy that keeps
//!   the mtime (`cp -p`, `rsync -t`, `install -p`) and at the same size (keys of one type are
//!   all one length), the finished files carried the stamp of the refused read: never loaded.
//!   Now a version is the SHA-256 of the very bytes parsed, read once: different bytes are
//!   always tried, and the same bytes give the same result again.
//! - A SIGHUP reload and a watcher reload could interleave: one reading the old files, the
//!   other the new ones, the old one storing its config last. Now a reload holds one lock from
//!   reading the files to storing its result, so the later reload always reads later bytes and
//!   stores last.
//!
//! **Handshakes in progress are bounded** by the connection slots they hold: each is a
//! connection taken at accept like a TCP one, within `max_connections` and, from one source,
//! `max_connections_per_source` (so one source cannot hold every handshake), and it must
//! finish within `unauthenticated_timeout`, so a client that opens a connection and never
//! sends a ClientHello holds its slot only that long. A half-open handshake costs about 8 KiB
//! (rustls's state and its read buffer of what arrived plus 4 KiB, at most 64 KiB for a
//! ClientHello that really is that long), measured by `tests/abuse_connections.rs`.

use super::options::ShellOptions;
use anyhow::{anyhow, Context};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio_rustls::rustls::{self, ServerConfig};

/// ALPN protocols accepted (RFC 7443). A client offering none is accepted too; one offering
/// only others is refused by rustls with a `no_application_protocol` alert (RFC 7301).
pub const ALPN: [&[u8]; 2] = [b"stun.turn", b"stun.nat-discovery"];

/// How often [`watch`] reads the files for a change.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// The largest certificate or key file read: a chain of a few certificates is a few KiB.
const MAX_FILE: u64 = 1024 * 1024;

/// One file's contents as read.
struct File {
    path: PathBuf,
    bytes: std::io::Result<Vec<u8>>,
}

impl File {
    fn read(path: &Path) -> File {
        let bytes = std::fs::File::open(path).and_then(|f| {
            let mut bytes = Vec::new();
            f.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
            if bytes.len() as u64 > MAX_FILE {
                return Err(std::io::Error::other(format!(
                    "larger than {MAX_FILE} bytes"
                )));
            }
            Ok(bytes)
        });
        File {
            path: path.to_path_buf(),
            bytes,
        }
    }

    /// What identifies this version: the SHA-256 of its bytes (`None` when unreadable).
    fn digest(&self) -> Option<[u8; 32]> {
        self.bytes.as_ref().ok().map(|b| Sha256::digest(b).into())
    }
}

/// The version of both files a reload last tried, loaded or refused.
type Version = [Option<[u8; 32]>; 2];

/// The TLS certificate in use and the files it comes from.
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    /// The config served, and the version of the files it was built from.
    current: RwLock<(Arc<ServerConfig>, Version)>,
    /// The version last tried, so [`Certs::reload_if_changed`] tries each new one once. Held
    /// by every reload from reading the files to storing its result, so reloads never
    /// interleave.
    tried: Mutex<Version>,
}

impl Certs {
    /// Loads the certificate chain and key; the error names the config key and the file.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Certs> {
        let (c, k) = (File::read(cert), File::read(key));
        let tried = [c.digest(), k.digest()];
        let config = server_config(&c, &k)?;
        Ok(Certs {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new((config, tried)),
            tried: Mutex::new(tried),
        })
    }

    /// The config new handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        // A poisoned lock still holds a complete Arc: a panic cannot leave it half-written.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// The version of the files the served config was built from.
    #[cfg(test)]
    fn served(&self) -> Version {
        self.current.read().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Loads the files again and, if they load, serves them to new handshakes. `why` is
    /// for the log line. Returns whether the new certificate is in use.
    pub fn reload(&self, why: &str) -> bool {
        let mut tried = self.tried.lock().unwrap_or_else(|e| e.into_inner());
        let (c, k) = (File::read(&self.cert), File::read(&self.key));
        self.load_locked(&mut tried, &c, &k, why)
    }

    /// Reloads when either file's contents differ from the version last tried. Returns
    /// whether a new certificate is in use.
    pub fn reload_if_changed(&self) -> bool {
        let mut tried = self.tried.lock().unwrap_or_else(|e| e.into_inner());
        let (c, k) = (File::read(&self.cert), File::read(&self.key));
        if *tried == [c.digest(), k.digest()] {
            return false;
        }
        self.load_locked(&mut tried, &c, &k, "file changed")
    }

    /// Builds a config from the bytes just read and serves it if it loads; either way these
    /// bytes are the version tried. `tried` is the held lock.
    fn load_locked(&self, tried: &mut Version, c: &File, k: &File, why: &str) -> bool {
        *tried = [c.digest(), k.digest()];
        match server_config(c, k) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (config, *tried);
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
}

/// Builds a rustls server config (TLS 1.2 and 1.3, ring) from the PEM files' bytes.
fn server_config(cert: &File, key: &File) -> anyhow::Result<Arc<ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = cert
        .bytes
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
        .and_then(|b| {
            CertificateDer::pem_slice_iter(b)
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow!("{e}"))
        })
        .with_context(|| format!("config key `tls_cert`: cannot load {}", cert.path.display()))?;
    if chain.is_empty() {
        anyhow::bail!(
            "config key `tls_cert`: {} holds no PEM CERTIFICATE",
            cert.path.display()
        );
    }
    let private = key
        .bytes
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
        .and_then(|b| PrivateKeyDer::from_pem_slice(b).map_err(|e| anyhow!("{e}")))
        .with_context(|| format!("config key `tls_key`: cannot load {}", key.path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("tls: protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .with_context(|| {
            format!(
                "config keys `tls_cert`/`tls_key`: {} and {} do not make a usable certificate",
                cert.path.display(),
                key.path.display()
            )
        })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Checks the certificate files at `check-config` and start-up.
pub fn check(config: &ShellOptions) -> anyhow::Result<()> {
    if let Some((cert, key)) = &config.tls_files {
        server_config(&File::read(cert), &File::read(key))?;
    }
    Ok(())
}

/// Polls the files every [`WATCH_INTERVAL`] until `stop` is dropped (or sent to).
pub fn watch(certs: Arc<Certs>, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(WATCH_INTERVAL) {
        certs.reload_if_changed();
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
    pub fn bind(config: &ShellOptions, workers: usize) -> anyhow::Result<Listeners> {
        let mut t = Listeners {
            addrs: Vec::new(),
            listeners: Vec::new(),
            certs: None,
            watcher: None,
        };
        let Some((cert, key)) = &config.tls_files else {
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

    /// A fresh scratch directory and the paths of `cert.pem` and `key.pem` in it, holding
    /// `pair` when one is given: (dir, cert, key).
    fn pem_files(tag: &str, pair: Option<&(String, String)>) -> (PathBuf, PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("turnd-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if let Some((c, k)) = pair {
            std::fs::write(&cert, c).unwrap();
            std::fs::write(&key, k).unwrap();
        }
        (dir, cert, key)
    }

    /// The SHA-256 of `pem`, as [`Certs::served`] reports a file it serves.
    fn digest(pem: &str) -> Option<[u8; 32]> {
        Some(Sha256::digest(pem.as_bytes()).into())
    }

    #[test]
    fn reload_takes_a_good_pair_and_refuses_a_bad_one() {
        let one = self_signed("one");
        let (dir, cert, key) = pem_files("reload", Some(&one));
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

    /// The lost update: a new certificate and key written in two steps, the key rewritten in
    /// place at the same length (keys of one type are all one length) and, as after a copy
    /// that keeps the modification time or two writes within one kernel clock tick, with the
    /// same mtime. A check between the steps reads a mix and refuses it; the check after the
    /// second step must still load the finished pair (with modification time and size as the
    /// version, it saw nothing new and never did).
    #[test]
    fn a_pair_finished_after_a_refused_read_is_still_loaded() {
        let one = self_signed("one");
        let (dir, cert, key) = pem_files("two-steps", Some(&one));
        let certs = Certs::load(&cert, &key).unwrap();
        let first = certs.current();
        let (c2, k2) = self_signed("two");
        assert_eq!(one.1.len(), k2.len(), "keys of one type have one length");
        let mtime = std::fs::metadata(&key).unwrap().modified().unwrap();
        let overwrite = |at: usize, bytes: &[u8]| {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new().write(true).open(&key).unwrap();
            f.seek(SeekFrom::Start(at as u64)).unwrap();
            f.write_all(bytes).unwrap();
            f.set_modified(mtime).unwrap();
        };
        // Step one: the new certificate, and half of the new key over the old one.
        std::fs::write(&cert, &c2).unwrap();
        let half = k2.len() / 2;
        overwrite(0, &k2.as_bytes()[..half]);
        assert!(!certs.reload_if_changed(), "a half-written key loaded");
        assert!(Arc::ptr_eq(&first, &certs.current()));
        // Step two: the rest of the key. Same size, same mtime as the refused read saw.
        overwrite(half, &k2.as_bytes()[half..]);
        assert_eq!(std::fs::read_to_string(&key).unwrap(), k2);
        assert!(
            certs.reload_if_changed(),
            "the finished pair was not loaded"
        );
        let second = certs.current();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(certs.served(), [digest(&c2), digest(&k2)]);
        // Tried once: the same bytes are not loaded again.
        assert!(!certs.reload_if_changed());
        assert!(Arc::ptr_eq(&second, &certs.current()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// SIGHUP and the watcher reload from two threads while the files change under them:
    /// once the writes stop, the watcher's next look serves the final pair — a reload that
    /// read older files never stores its config after one that read newer files.
    #[test]
    fn concurrent_reloads_end_on_the_final_files() {
        let pairs: Vec<(String, String)> = (0..4).map(|i| self_signed(&format!("p{i}"))).collect();
        let (dir, cert, key) = pem_files("concurrent", Some(&pairs[0]));
        let certs = Arc::new(Certs::load(&cert, &key).unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reloaders: Vec<_> = (0..2)
            .map(|i| {
                let (certs, stop) = (certs.clone(), stop.clone());
                std::thread::spawn(move || {
                    // Bounded by the writer below, which sets `stop`.
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if i == 0 {
                            certs.reload("SIGHUP");
                        } else {
                            certs.reload_if_changed();
                        }
                    }
                })
            })
            .collect();
        for round in 0..40 {
            let (c, k) = &pairs[round % pairs.len()];
            std::fs::write(&cert, c).unwrap();
            std::fs::write(&key, k).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in reloaders {
            r.join().unwrap();
        }
        // Whatever the threads did, the watcher's next look leaves the last pair written in
        // use: it loads it now, or those very bytes were the version last tried — a valid
        // pair, loaded, and under the lock nothing older was stored after it.
        certs.reload_if_changed();
        let (c, k) = &pairs[39 % pairs.len()];
        assert_eq!(certs.served(), [digest(c), digest(k)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn load_errors_name_the_key_and_the_file() {
        let (dir, cert, key) = pem_files("errors", None);
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
