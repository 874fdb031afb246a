//! The fleet store (`src/store/`, issue 17) against a real `redis-server`, which each test starts
//! on a free loopback port with persistence off and stops by its own child handle.
//!
//! Tier 2 (tests/README.md): built and run only with `cargo test --features external`; a machine
//! without `redis-server` fails these tests (install the Debian package `redis-server`; `.ci/run`
//! does this).

use redis::AsyncCommands;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use turnd::core::auth::UserSecret;
use turnd::store::users::read_users_bounded;
use turnd::store::{connect, read_users, USERS_KEY};

/// A `redis-server` of this test's own, killed and reaped when dropped.
struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("an ephemeral TCP port on 127.0.0.1")
            .port();
        RedisServer::start_on(port)
    }

    fn start_on(port: u16) -> RedisServer {
        let program = find_on_path("redis-server").unwrap_or_else(|| {
            panic!(
                "required tool `redis-server` not found on PATH: install the Debian package \
                 redis-server. This is a tier-2 test (feature `external`, tests/README.md); \
                 `.ci/run` installs it, and plain `cargo test` runs without it"
            )
        });
        let dir =
            std::env::temp_dir().join(format!("turnd-store-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the server's scratch dir");
        let child = Command::new(program)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let mut server = RedisServer { child, port, dir };
        // Bounded: one try per 50 ms for 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis-server exited ({status}) before listening on port {port}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Our own child, by its handle (its PID); it may already have exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

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
