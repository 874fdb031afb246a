//! The fleet store (`src/store/`, issue 17) against a real `redis-server`, which each test starts
//! on a free loopback port with persistence off and stops by its own child handle.
//!
//! Tier 2 (tests/README.md): built and run only with `cargo test --features external`; a machine
//! without `redis-server` fails these tests (install the Debian package `redis-server`; `.ci/run`
//! does this).

mod common;
mod tls_certs;

use common::redis::{free_tcp_port, RedisServer};

use redis::AsyncCommands;
use std::process::Command;
use std::time::{Duration, Instant};
use turnd::core::auth::UserSecret;
use turnd::store::users::read_users_bounded;
use turnd::store::{connect, read_users, USERS_KEY};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn static_users_are_read_from_the_users_hash_and_bad_entries_skipped() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let mut conn = connect(&server.url()).expect("a valid URL");
        let key = "0123456789abcdef0123456789abcdef";
        let bob = format!("key:{key}");
        let entries: [(&[u8], &[u8]); 5] = [
            (b"alice", b"password:alice-password"),
            (b"bob", bob.as_bytes()),
            (b"carol", b"no-prefix"),
            (b"", b"password:x"),
            (b"dave\xff", b"password:x"),
        ];
        for (name, value) in entries {
            let () = conn.hset(USERS_KEY, name, value).await.expect("HSET");
        }
        let found = read_users(&mut conn).await.expect("read the users");
        assert_eq!(found.users.len(), 2, "{:?}", found.users.keys());
        assert_eq!(
            found.users["alice"],
            UserSecret::Password("alice-password".into())
        );
        assert_eq!(
            found.users["bob"],
            UserSecret::Key(UserSecret::parse_key_hex(key).unwrap())
        );
        assert_eq!(found.invalid, 3);
        assert!(!found.truncated);

        // Over the bound: the first `max` users are kept and the read says it left some out.
        let many: Vec<(String, String)> = (0..2_500)
            .map(|i| (format!("user{i}"), format!("password:p{i}")))
            .collect();
        let () = conn
            .hset_multiple(USERS_KEY, &many)
            .await
            .expect("HSET many");
        let found = read_users_bounded(&mut conn, 1_000).await.expect("read");
        assert_eq!(found.users.len(), 1_000);
        assert!(found.truncated);
        let found = read_users(&mut conn).await.expect("read all");
        assert_eq!(found.users.len(), 2_502);
        assert!(!found.truncated);
    });
}

#[test]
fn a_store_that_is_down_is_an_error_in_bounded_time_not_a_hang() {
    let server = RedisServer::start();
    let (url, port) = (server.url(), server.port);
    drop(server);
    runtime().block_on(async {
        // Connecting is lazy: a node whose store is down still starts.
        let mut conn = connect(&url).expect("a valid URL");
        let started = Instant::now();
        // The bound is a hang detector, not a performance assertion: RETRIES_PER_COMMAND
        // attempts, each waiting at most CONNECT_TIMEOUT and MAX_BACKOFF.
        let read = tokio::time::timeout(Duration::from_secs(60), read_users(&mut conn))
            .await
            .expect("read_users gave up within 60 s");
        assert!(read.is_err(), "read from a stopped store: {read:?}");
        eprintln!(
            "a stopped store failed the read after {:?}",
            started.elapsed()
        );
        // ...and a store back on the same port is found again by the same connection.
        let _again = RedisServer::start_on(port);
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            // Bounded: at most 60 tries, one every 500 ms, within the timeout above.
            for _ in 0..60 {
                if let Ok(found) = read_users(&mut conn).await {
                    return found;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            panic!("the restarted store was not reached again")
        })
        .await
        .expect("reconnected within 60 s");
        assert!(found.users.is_empty());
    });
}

/// `rediss://`: the store's connection over TLS (rustls on turnd's ring provider) to a
/// `redis-server` serving only TLS, with a certificate from a test CA given as the root (a
/// node uses the system's roots; the TLS path is the same).
#[test]
fn a_store_over_tls_is_read_like_a_plain_one() {
    let ca = tls_certs::Ca::new();
    let cert = ca.issue("redis", 1);
    let dir = std::env::temp_dir().join(format!("turnd-store-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = tls_certs::CertFiles::write(&dir, &cert);
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let server = tls_redis(&dir, &files, &ca_file, false);
    let port = server.port;
    {
        runtime().block_on(async {
            let url = format!("rediss://127.0.0.1:{port}/0");
            let client = redis::Client::build_with_tls(
                url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.pem().into_bytes()),
                },
            )
            .expect("a TLS client");
            let mut conn = turnd::store::connect::connect_client(client).expect("a manager");
            let () = conn
                .hset(USERS_KEY, "alice", "password:over-tls")
                .await
                .expect("HSET over TLS");
            let found = read_users(&mut conn).await.expect("read over TLS");
            assert_eq!(
                found.users["alice"],
                UserSecret::Password("over-tls".into())
            );
            // A client that does not trust the CA (the system roots) is refused.
            let untrusting =
                turnd::store::connect::client(&url, &Default::default()).expect("a client");
            let mut conn = turnd::store::connect::connect_client(untrusting).expect("a manager");
            let refused = tokio::time::timeout(Duration::from_secs(60), read_users(&mut conn))
                .await
                .expect("an answer within 60 s");
            assert!(
                refused.is_err(),
                "a certificate from an unknown CA was accepted"
            );
        })
    }
}

/// A `redis-server` serving only TLS on a free port with `files` (its certificate and key),
/// trusting `ca_file` for client certificates, which it asks for when `auth_clients`.
fn tls_redis(
    dir: &std::path::Path,
    files: &tls_certs::CertFiles,
    ca_file: &std::path::Path,
    auth_clients: bool,
) -> RedisServer {
    let port = free_tcp_port();
    let auth = if auth_clients { "yes" } else { "no" };
    RedisServer::launch(port, dir, |cmd| {
        cmd.args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &port.to_string(), "--tls-auth-clients", auth])
            .arg("--tls-cert-file")
            .arg(&files.cert)
            .arg("--tls-key-file")
            .arg(&files.key)
            .arg("--tls-ca-cert-file")
            .arg(ca_file);
    })
}

/// `turnd ARGS` (a store command): its exit code, standard output and standard error.
fn turnd(args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnd"));
    cmd.args(args);
    common::without_turnd_env(&mut cmd);
    let out = cmd.output().expect("run turnd");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `store_ca_file`, `store_cert_file` and `store_key_file` against a `redis-server` serving
/// only TLS with a private CA and asking for client certificates: the CLI writes and lists
/// users through them, a node reads those users (its sync task over the same TLS), a wrong CA
/// or a missing client certificate is refused, and a CA file that is not one stops a node at
/// start-up (exit 2, the file named).
#[test]
fn a_private_ca_and_a_client_certificate_reach_a_store_over_tls() {
    let ca = tls_certs::Ca::new();
    let dir = std::env::temp_dir().join(format!("turnd-store-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = tls_certs::CertFiles::write(&dir, &ca.issue("redis", 1));
    let path = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let ca_file = path("ca.pem", &ca.pem());
    let client = ca.issue("turnd-node", 2);
    let cert_file = path("client.pem", &client.chain_pem);
    let key_file = path("client-key.pem", &client.key_pem);
    let other_ca = path("other-ca.pem", &tls_certs::Ca::new().pem());
    let not_a_ca = path("not-a-ca.pem", "this is not a certificate\n");
    let server = tls_redis(&dir, &files, std::path::Path::new(&ca_file), true);
    let url = format!("rediss://127.0.0.1:{}/0", server.port);
    // The TLS files as flags before the subcommand (they are configuration keys), the store
    // after it (`--store` of the command).
    let tls = |ca: &str| {
        vec![
            "--store-ca-file".to_string(),
            ca.to_string(),
            "--store-cert-file".into(),
            cert_file.clone(),
            "--store-key-file".into(),
            key_file.clone(),
        ]
    };
    let run = |tls: &[String], command: &[&str]| {
        let args: Vec<&str> = tls
            .iter()
            .map(String::as_str)
            .chain(command.iter().copied())
            .chain(["--store", url.as_str()])
            .collect();
        turnd(&args)
    };

    let add = [
        "users",
        "add",
        "alice",
        "--password",
        "pw",
        "--realm",
        "example.org",
    ];
    let (code, _, err) = run(&tls(&ca_file), &add);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = run(&tls(&ca_file), &["users", "list"]);
    assert_eq!((code, out.trim()), (Some(0), "alice"), "{err}");

    // What was written holds both keys, read back through the library's own client.
    let files_of = turnd::store::connect::StoreFiles {
        ca: Some(ca_file.clone().into()),
        cert: Some(cert_file.clone().into()),
        key: Some(key_file.clone().into()),
        ..Default::default()
    };
    let client = turnd::store::connect::client(&url, &files_of).expect("a TLS client");
    runtime().block_on(async {
        let mut conn = connect::connect_client(client).expect("a manager");
        let found = read_users(&mut conn).await.expect("read over mutual TLS");
        assert!(
            matches!(found.users["alice"], UserSecret::Keys { .. }),
            "{:?}",
            found.users
        );
    });

    // A wrong CA, and no client certificate, are refused (exit 1: the store is unreachable).
    let (code, _, err) = run(&tls(&other_ca), &["users", "list"]);
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert_eq!(
        code,
        Some(1),
        "a store certificate from an unknown CA was accepted: {err}"
    );
    let ca_only = ["--store-ca-file".to_string(), ca_file.clone()];
    let (code, _, err) = run(&ca_only, &["users", "list"]);
    assert!(err.contains("CertificateRequired"), "{err}");
    assert_eq!(
        code,
        Some(1),
        "a client without a certificate was let in: {err}"
    );

    // A node reads the store's users over the same TLS.
    let node_args = [
        "--listen",
        "127.0.0.1:0",
        "--relay-ip",
        "127.0.0.1",
        "--realm",
        "example.org",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnd"));
    cmd.args(node_args)
        .args(tls(&ca_file))
        .args(["--store", &url]);
    common::without_turnd_env(&mut cmd);
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let node = common::Proc::spawn_with("turnd", cmd, move |line| {
        if let Some(a) = line.strip_prefix("turnd metrics http://") {
            if let (Ok(a), Ok(tx)) = (a.trim().parse::<std::net::SocketAddr>(), tx.lock()) {
                let _ = tx.send(a);
            }
        }
    });
    let metrics = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("turnd did not start:\n{}", node.output()));
    let metric = |name: &str| {
        let raw = common::http_get(metrics, "/metrics");
        common::http_body(&raw).lines().find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse::<f64>().ok()).flatten()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    // Bounded: every 50 ms for 30 s.
    while metric("turnd_store_users") != Some(1.0) || metric("turnd_store_up") != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the node did not read the store's user over TLS:\n{}",
            node.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(node);

    // A CA file that holds no certificate stops a node before it starts.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnd"));
    cmd.args(node_args)
        .args(tls(&not_a_ca))
        .args(["--store", &url]);
    common::without_turnd_env(&mut cmd);
    let out = cmd.output().expect("run turnd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("store_ca_file") && err.contains("not-a-ca.pem"),
        "{err}"
    );
    drop(server);
}
