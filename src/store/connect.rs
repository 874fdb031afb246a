//! Opening the store: a redis-rs `ConnectionManager` built from the `store` URL.
//!
//! The manager is one multiplexed connection that reconnects by itself with exponential backoff,
//! so a Redis that restarts or a network that drops for a while costs failed commands, not a
//! dead node. It connects lazily: a node whose store is down at start-up still starts (with its
//! TOML users) and the first command that reaches Redis finds the connection made.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::IntoConnectionInfo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The first reconnection delay; it doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two reconnection attempts, so a store back after an outage is
/// found again within this long.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Reconnection attempts one command makes before it fails. Few: a command that waited for
/// every attempt of a long backoff would keep the store task (resync, accounting) from its
/// other work for tens of seconds (19 s with redis-rs's default of 6, measured in
/// `tests/store_redis.rs`); the store task tries again on its own schedule instead.
pub const RETRIES_PER_COMMAND: usize = 2;
/// How long one connection attempt (TCP, TLS, AUTH, SELECT) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may wait for its answer: a stuck Redis must fail a resync, not hold
/// the store task forever.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the store URL could not be used. Never holds the URL, which may hold a password.
#[derive(Debug)]
pub struct ConnectError(redis::RedisError);

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the store URL cannot be used: {:?}", self.0.kind())
    }
}

impl std::error::Error for ConnectError {}

impl From<redis::RedisError> for ConnectError {
    fn from(e: redis::RedisError) -> Self {
        ConnectError(e)
    }
}

/// A connection manager for `url` (`redis://` or `rediss://`), connected lazily: this returns
/// without waiting for Redis and must be called inside a tokio runtime.
pub fn connect(url: &str) -> Result<ConnectionManager, ConnectError> {
    connect_client(redis::Client::open(url).map_err(ConnectError)?)
}

/// [`connect`] for a client already made (with its password, see [`client`]).
pub fn connect_client(client: redis::Client) -> Result<ConnectionManager, ConnectError> {
    let config = ConnectionManagerConfig::new()
        .set_min_delay(MIN_BACKOFF)
        .set_max_delay(MAX_BACKOFF)
        .set_number_of_retries(RETRIES_PER_COMMAND)
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    ConnectionManager::new_lazy_with_config(client, config).map_err(ConnectError)
}

/// The files a store connection reads besides its URL: the password and, for `rediss://`, a
/// private CA and a client certificate (`store_password_file`, `store_ca_file`,
/// `store_cert_file`, `store_key_file`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreFiles {
    pub password: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl StoreFiles {
    /// The configuration's store files.
    pub fn of(c: &crate::config::Config) -> StoreFiles {
        StoreFiles {
            password: c.store_password_file.clone(),
            ca: c.store_ca_file.clone(),
            cert: c.store_cert_file.clone(),
            key: c.store_key_file.clone(),
        }
    }
}

/// The client for `url`, with the password from `files.password` (its first line) or, failing
/// that, from `TURND_STORE_PASSWORD`, when the URL holds none; for a `rediss://` URL, trusting
/// the CA certificates of `files.ca` instead of the system's roots and showing `files.cert`
/// when given. Every file is read and checked here, so a bad one is an error now (start-up,
/// the command) rather than a store that never answers. The error names the file, never the
/// URL or the password.
pub fn client(url: &str, files: &StoreFiles) -> Result<redis::Client, String> {
    let env = std::env::var(crate::config::STORE_PASSWORD_ENV).ok();
    client_with(url, files, env)
}

fn client_with(
    url: &str,
    files: &StoreFiles,
    env: Option<String>,
) -> Result<redis::Client, String> {
    let info = url
        .into_connection_info()
        .map_err(|e| ConnectError(e).to_string())?;
    let from_file = match &files.password {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("store_password_file {}: {e}", path.display()))?;
            Some(text.lines().next().unwrap_or("").to_string())
        }
        None => None,
    };
    let password = from_file.or(env).filter(|p| !p.is_empty());
    let info = match password {
        Some(p) if info.redis_settings().password().is_none() => {
            let redis = info.redis_settings().clone().set_password(p);
            info.set_redis_settings(redis)
        }
        _ => info,
    };
    let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    if !tls || (files.ca.is_none() && files.cert.is_none() && files.key.is_none()) {
        // A plain URL takes no TLS files (the configuration refuses them with a plain
        // `store`; a `--store redis://…` given to a command leaves them unused).
        return redis::Client::open(info).map_err(|e| ConnectError(e).to_string());
    }
    let root_cert = match &files.ca {
        Some(path) => Some(read_pem(path, "store_ca_file", check_certificates)?),
        None => None,
    };
    let client_tls = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read_pem(cert, "store_cert_file", check_certificates)?,
            client_key: read_pem(key, "store_key_file", check_key)?,
        }),
        (Some(_), None) => return Err("store_cert_file is set: give store_key_file too".into()),
        (None, Some(_)) => return Err("store_key_file is set: give store_cert_file too".into()),
        (None, None) => None,
    };
    redis::Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(|e| {
        let named = [
            ("store_ca_file", &files.ca),
            ("store_cert_file", &files.cert),
        ]
        .into_iter()
        .filter_map(|(k, p)| p.as_ref().map(|p| format!("{k} {}", p.display())))
        .collect::<Vec<_>>()
        .join(", ");
        format!("{named}: not usable for TLS: {e}")
    })
}

/// The bytes of the PEM file `path` (config key `key`), checked by `check`.
fn read_pem(
    path: &Path,
    key: &str,
    check: fn(&[u8]) -> Result<(), String>,
) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    check(&bytes).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    Ok(bytes)
}

/// One or more PEM `CERTIFICATE` blocks, each one that rustls can read as a trust anchor
/// or a certificate: an empty file would trust nothing and fail every connection later.
fn check_certificates(pem: &[u8]) -> Result<(), String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM CERTIFICATE".into());
    }
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("a certificate that cannot be used: {e}"))?;
    }
    Ok(())
}

/// A PEM private key (PKCS#8, PKCS#1 or SEC1).
fn check_key(pem: &[u8]) -> Result<(), String> {
    PrivateKeyDer::from_pem_slice(pem)
        .map(|_| ())
        .map_err(|e| format!("not a PEM private key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(c: &redis::Client) -> Option<String> {
        c.get_connection_info()
            .redis_settings()
            .password()
            .map(str::to_string)
    }

    #[test]
    fn the_password_comes_from_the_url_then_the_file_then_the_environment() {
        let dir = std::env::temp_dir().join(format!("turnd-store-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "from-file\nignored\n").unwrap();
        let url = "redis://127.0.0.1:6379/0";
        let pw = |p: &Path| StoreFiles {
            password: Some(p.to_path_buf()),
            ..StoreFiles::default()
        };
        let none = StoreFiles::default();
        let c = client_with(url, &pw(&file), Some("from-env".into())).unwrap();
        assert_eq!(password(&c).as_deref(), Some("from-file"));
        let c = client_with(url, &none, Some("from-env".into())).unwrap();
        assert_eq!(password(&c).as_deref(), Some("from-env"));
        let c = client_with("redis://:in-url@127.0.0.1/0", &pw(&file), None).unwrap();
        assert_eq!(password(&c).as_deref(), Some("in-url"));
        assert_eq!(password(&client_with(url, &none, None).unwrap()), None);
        let missing = client_with(url, &pw(&dir.join("nope")), None).unwrap_err();
        assert!(missing.contains("store_password_file"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;

    /// A scratch directory with a CA certificate, a certificate it signed and its key.
    fn files(tag: &str) -> (PathBuf, String, String, String) {
        let dir =
            std::env::temp_dir().join(format!("turnd-store-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["turnd".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        (dir, ca.pem(), leaf.pem(), leaf_key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, text: &str) -> Option<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        Some(path)
    }

    const TLS_URL: &str = "rediss://127.0.0.1:6380/0";

    #[test]
    fn a_ca_file_and_a_client_certificate_make_a_tls_client() {
        let (dir, ca, cert, key) = files("good");
        let two_cas = format!("{ca}{cert}");
        let files = StoreFiles {
            ca: write(&dir, "ca.pem", &two_cas),
            cert: write(&dir, "cert.pem", &cert),
            key: write(&dir, "key.pem", &key),
            ..StoreFiles::default()
        };
        let c = client_with(TLS_URL, &files, None).unwrap();
        assert!(matches!(
            c.get_connection_info().addr(),
            redis::ConnectionAddr::TcpTls {
                tls_params: Some(_),
                ..
            }
        ));
        // A plain URL leaves the TLS files unused (only a command's --store can give one).
        let plain = client_with("redis://127.0.0.1/0", &files, None).unwrap();
        assert!(matches!(
            plain.get_connection_info().addr(),
            redis::ConnectionAddr::Tcp(..)
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_ca_or_client_file_is_an_error_naming_it() {
        let (dir, ca, cert, key) = files("bad");
        let ca_file = |name: &str, text: &str| StoreFiles {
            ca: write(&dir, name, text),
            ..StoreFiles::default()
        };
        let missing = StoreFiles {
            ca: Some(dir.join("missing.pem")),
            ..StoreFiles::default()
        };
        let truncated = &ca[..ca.len() / 2];
        for (files, file) in [
            (missing, "missing.pem"),
            (ca_file("empty.pem", ""), "empty.pem"),
            (ca_file("text.pem", "not a certificate\n"), "text.pem"),
            (ca_file("key-only.pem", &key), "key-only.pem"),
            (ca_file("cut.pem", truncated), "cut.pem"),
        ] {
            let e = client_with(TLS_URL, &files, None).unwrap_err();
            assert!(e.starts_with("store_ca_file "), "{e}");
            assert!(e.contains(file), "{e}");
        }
        let bad_key = StoreFiles {
            cert: write(&dir, "c.pem", &cert),
            key: write(&dir, "k.pem", &ca),
            ..StoreFiles::default()
        };
        let e = client_with(TLS_URL, &bad_key, None).unwrap_err();
        assert!(
            e.starts_with("store_key_file ") && e.contains("k.pem"),
            "{e}"
        );
        let bad_cert = StoreFiles {
            cert: write(&dir, "c2.pem", &key),
            key: write(&dir, "k2.pem", &key),
            ..StoreFiles::default()
        };
        let e = client_with(TLS_URL, &bad_cert, None).unwrap_err();
        assert!(
            e.starts_with("store_cert_file ") && e.contains("c2.pem"),
            "{e}"
        );
        let key_only = StoreFiles {
            key: write(&dir, "k3.pem", &key),
            ..StoreFiles::default()
        };
        let e = client_with(TLS_URL, &key_only, None).unwrap_err();
        assert!(e.contains("give store_cert_file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
