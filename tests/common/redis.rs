//! A real `redis-server` of a test's own (tier 2: the fleet store's tests), on a free loopback
//! port with persistence off, killed and reaped by its child handle when dropped.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// A plain server on a free port.
    pub fn start() -> RedisServer {
        RedisServer::start_on(free_tcp_port())
    }

    /// A plain server on `port` (a restart on the port a stopped one had).
    pub fn start_on(port: u16) -> RedisServer {
        RedisServer::start_with(port, &[])
    }

    /// A plain server on `port` with `extra` arguments (say `--requirepass`).
    pub fn start_with(port: u16, extra: &[&str]) -> RedisServer {
        let dir = scratch_dir(port);
        RedisServer::launch(port, &dir, |cmd| {
            cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(extra);
        })
    }

    /// Starts `redis-server` with what `configure` adds (its listening port must be `port`),
    /// persistence off and `dir` as its directory, and waits until `port` accepts.
    pub fn launch(port: u16, dir: &Path, configure: impl FnOnce(&mut Command)) -> RedisServer {
        let program = super::require_tool("redis-server");
        std::fs::create_dir_all(dir).expect("create the server's scratch dir");
        let mut cmd = Command::new(program);
        configure(&mut cmd);
        let child = cmd
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let mut server = RedisServer {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        // Bounded: one try per 20 ms for 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis-server exited ({status}) before listening on port {port}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A blocking connection to it, for a test's own reads and writes.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to the test's redis-server")
    }

    /// Stops it (our own child, by its handle) and waits for it; it may already have exited.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free TCP port on 127.0.0.1 (Redis listens on TCP).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("an ephemeral TCP port on 127.0.0.1")
        .port()
}

/// A scratch directory of this test process for a server on `port`.
pub fn scratch_dir(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("turnd-redis-{}-{port}", std::process::id()))
}
