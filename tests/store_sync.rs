//! The fleet store's "in" direction (`src/store/sync.rs`, docs/cluster.md) end to end: real
//! turnd processes sharing one real `redis-server` that each test starts on a free loopback
//! port (persistence off) and stops by its own child handle; users, secrets and revocations
//! written with the real `turnd users|secrets|revoke` commands and the admin API; clients are
//! the raw TURN client of `tests/raw`.
//!
//! Propagation times are measured and printed (`--nocapture` shows them), never asserted:
//! the assertions are bounded waits ("within 5 s"), which are hang detectors.
//!
//! Tier 2 (tests/README.md): built and run only with `cargo test --features external`; needs
//! `redis-server` (`.ci/run` installs it).

mod common;
mod raw;

use common::redis::RedisServer;
use common::Proc;
use raw::*;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const STARTUP: Duration = Duration::from_secs(10);
/// The bound on every wait for a change to reach the nodes: a hang detector, far above the
/// about-a-second the design promises (the measured times are printed).
const PROPAGATION_BOUND: Duration = Duration::from_secs(5);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(5);

/// One turnd node with the store, a TOML user (alice) and the REST secret `toml-secret`.
struct Node {
    proc: Proc,
    udp: SocketAddr,
    metrics: SocketAddr,
}

impl Node {
    fn start(store: &str) -> Node {
        Node::start_with(store, &[])
    }

    fn start_with(store: &str, extra: &[&str]) -> Node {
        let alice = format!("{}:{}", ALICE.0, ALICE.1);
        let args = [
            "--listen",
            "127.0.0.1:0",
            "--relay-ip",
            "127.0.0.1",
            "--realm",
            REALM,
            "--allow-peer",
            "127.0.0.1/32",
            "--user",
            &alice,
            "--auth-secret",
            "toml-secret",
            "--workers",
            "2",
            "--metrics-listen",
            "127.0.0.1:0",
            "--store",
            store,
        ];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnd"));
        cmd.args(args).args(extra);
        common::without_turnd_env(&mut cmd);
        let (proc, udp, metrics) = common::spawn_turnd(cmd, STARTUP);
        let node = Node { proc, udp, metrics };
        node.wait_for_output("store: subscribed", STARTUP);
        node
    }

    /// Waits (bounded) until the node has printed `text` `times` times in all.
    #[track_caller]
    fn wait_for_output_n(&self, text: &str, times: usize, bound: Duration) {
        let deadline = Instant::now() + bound;
        // Bounded: every 20 ms until the deadline.
        while self.proc.output().matches(text).count() < times {
            assert!(
                Instant::now() < deadline,
                "turnd did not print `{text}` ({times}x) within {bound:?}:\n{}",
                self.proc.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[track_caller]
    fn wait_for_output(&self, text: &str, bound: Duration) {
        self.wait_for_output_n(text, 1, bound)
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let raw = common::http_get(self.metrics, "/metrics");
        common::http_body(&raw).lines().find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// Allocations the node holds for `user` (from `GET /allocations`).
    fn allocations_of(&self, user: &str) -> usize {
        let raw = common::http_get(self.metrics, "/allocations");
        common::http_body(&raw)
            .matches(&format!("\"user\":\"{user}\""))
            .count()
    }
}

/// The answer code of one Allocate by `username` (None = success); the allocation, if
/// made, is released at once.
fn try_allocate(server: SocketAddr, username: &str, password: &str) -> Option<u16> {
    let mut c = Client::new(server).with_user(username, password);
    let r = c.allocate_with(&[udp()]);
    let code = r.error_code().map(|(code, _)| code);
    if code.is_none() {
        let _ = c.refresh(Some(0));
    }
    code
}

/// Waits (bounded) until every node answers an Allocate by `username` with `want` (None =
/// success); how long that took.
#[track_caller]
fn until_every_node(nodes: &[Node], username: &str, password: &str, want: Option<u16>) -> Duration {
    let start = Instant::now();
    let mut pending: Vec<&Node> = nodes.iter().collect();
    // Bounded by PROPAGATION_BOUND, one round per POLL.
    while !pending.is_empty() {
        pending.retain(|n| try_allocate(n.udp, username, password) != want);
        if pending.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < PROPAGATION_BOUND,
            "`{username}` not answered {want:?} on every node within {PROPAGATION_BOUND:?}:\n{}",
            pending[0].proc.output()
        );
        std::thread::sleep(POLL);
    }
    start.elapsed()
}

/// Runs `turnd ARGS --store URL` and checks it succeeded; its standard output.
#[track_caller]
fn turnd_cli(store: &str, args: &[&str]) -> String {
    turnd_cli_env(store, args, &[])
}

#[track_caller]
fn turnd_cli_env(store: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnd"));
    cmd.args(args).args(["--store", store]);
    common::without_turnd_env(&mut cmd);
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run turnd");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "turnd {args:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A request without body to the admin listener: (status, body).
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let timeout = Duration::from_secs(10);
    let mut s = TcpStream::connect_timeout(&addr, timeout).expect("connect");
    s.set_read_timeout(Some(timeout)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, common::http_body(&raw).to_string())
}

fn summary(what: &str, times: &[Duration]) {
    let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{what}: median {:.1} ms, range {:.1}–{:.1} ms over {} runs",
        ms[ms.len() / 2],
        ms[0],
        ms[ms.len() - 1],
        ms.len()
    );
}

const RUNS: usize = 5;

#[test]
fn users_and_secrets_added_with_the_cli_reach_every_node() {
    let redis = RedisServer::start();
    let url = redis.url();
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&url)).collect();

    let mut adds = Vec::new();
    for run in 0..RUNS {
        let name = format!("dave{run}");
        let password = format!("dave-pw-{run}");
        assert_eq!(try_allocate(nodes[0].udp, &name, &password), Some(401));
        turnd_cli(
            &url,
            &[
                "users",
                "add",
                &name,
                "--password",
                &password,
                "--realm",
                REALM,
            ],
        );
        let took = until_every_node(&nodes, &name, &password, None);
        println!("user add run {run}: every node accepted {name} {took:?} after the CLI returned");
        adds.push(took);
    }
    summary("user add → accepted on all 3 nodes", &adds);
    // The store's cost of one change: the commands the nodes sent for it (the CLI sends
    // MULTI, SET, PUBLISH, HSET, EXEC; the nodes GET, HSCAN, ZRANGEBYSCORE).
    let before = node_commands(&url);
    turnd_cli(
        &url,
        &["users", "add", "extra", "--password", "x", "--realm", REALM],
    );
    until_every_node(&nodes, "extra", "x", None);
    std::thread::sleep(Duration::from_millis(200));
    let after = node_commands(&url);
    println!(
        "one users change cost each node {:.1} commands (one round trip each): {:?} → {:?}",
        (after.iter().sum::<u64>() - before.iter().sum::<u64>()) as f64 / nodes.len() as f64,
        before,
        after
    );
    turnd_cli(&url, &["users", "remove", "extra"]);
    // The store holds the key, not the password.
    let listed = turnd_cli(&url, &["users", "list"]);
    assert_eq!(listed.lines().count(), RUNS, "{listed}");
    assert!(!listed.contains("dave-pw"), "{listed}");

    // A key given as hex works too.
    let key: String = long_term_key("erin", REALM, "erin-pw")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    turnd_cli(&url, &["users", "add", "erin", "--key", &key]);
    until_every_node(&nodes, "erin", "erin-pw", None);

    // Removed: refused everywhere; the TOML's alice is untouched.
    let mut removes = Vec::new();
    for run in 0..RUNS {
        let name = format!("dave{run}");
        turnd_cli(&url, &["users", "remove", &name]);
        removes.push(until_every_node(
            &nodes,
            &name,
            &format!("dave-pw-{run}"),
            Some(401),
        ));
    }
    summary("user remove → refused on all 3 nodes", &removes);
    until_every_node(&nodes, ALICE.0, ALICE.1, None);

    // A store user named like a TOML user does not replace it: the TOML wins.
    turnd_cli(
        &url,
        &[
            "users",
            "add",
            ALICE.0,
            "--password",
            "store-pw",
            "--realm",
            REALM,
        ],
    );
    until_every_node(&nodes, "erin", "erin-pw", None);
    std::thread::sleep(Duration::from_millis(200));
    for n in &nodes {
        assert_eq!(try_allocate(n.udp, ALICE.0, ALICE.1), None);
        assert_eq!(try_allocate(n.udp, ALICE.0, "store-pw"), Some(401));
    }

    // A REST secret from the store: credentials minted with it work on all three.
    let username = format!("{}:frank", unix_now() + 3600);
    let password = rest_password("store-secret", &username);
    assert_eq!(try_allocate(nodes[1].udp, &username, &password), Some(401));
    turnd_cli(
        &url,
        &["secrets", "add", "2026-12", "--secret", "store-secret"],
    );
    let took = until_every_node(&nodes, &username, &password, None);
    println!("secret add: every node accepted a REST credential {took:?} after the CLI returned");
    let listed = turnd_cli(&url, &["secrets", "list"]);
    assert_eq!(listed.trim(), "2026-12", "names only, never the secret");
    // The TOML's secret still works beside it.
    let toml_user = format!("{}:frank", unix_now() + 3600);
    let toml_pw = rest_password("toml-secret", &toml_user);
    until_every_node(&nodes, &toml_user, &toml_pw, None);
    turnd_cli(&url, &["secrets", "remove", "2026-12"]);
    until_every_node(&nodes, &username, &password, Some(401));

    // SIGHUP reloads the TOML's layer and keeps the store's users.
    let pid = libc::pid_t::try_from(nodes[0].proc.id()).expect("pid fits");
    // SAFETY: kill(2) on our own child, which has not been reaped (we hold its handle).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    nodes[0].wait_for_output("configuration reloaded", PROPAGATION_BOUND);
    assert_eq!(
        try_allocate(nodes[0].udp, "erin", "erin-pw"),
        None,
        "store user kept"
    );
    assert_eq!(try_allocate(nodes[0].udp, ALICE.0, ALICE.1), None);

    for n in &nodes {
        assert_eq!(n.metric("turnd_store_up"), Some(1.0), "{}", n.proc.output());
        assert_eq!(
            n.metric("turnd_store_users"),
            Some(2.0),
            "erin and the store's alice"
        );
        assert_eq!(n.metric("turnd_store_secrets"), Some(0.0));
    }
}

/// A client holding an allocation with a channel to `peer`, checked with one round trip.
fn relaying(
    server: SocketAddr,
    peer: &Peer,
    username: &str,
    password: &str,
) -> (Client, SocketAddr) {
    let mut c = Client::new(server).with_user(username, password);
    let relay = c.allocate();
    c.bind_channel(0x4000, peer.addr());
    round_trip(&c, peer, relay, b"hello");
    (c, relay)
}

#[track_caller]
fn round_trip(c: &Client, peer: &Peer, relay: SocketAddr, payload: &[u8]) {
    c.send_channel_data(0x4000, payload, false);
    assert_eq!(peer.recv().expect("relayed to the peer").0, payload);
    peer.send_to(relay, payload);
    assert_eq!(c.recv_channel_data(), (0x4000, payload.to_vec()));
}

/// Waits (bounded) until no node holds an allocation of `user`; how long that took.
#[track_caller]
fn until_no_allocation(nodes: &[Node], user: &str) -> Duration {
    let start = Instant::now();
    // Bounded by PROPAGATION_BOUND, one round per POLL.
    while nodes.iter().any(|n| n.allocations_of(user) > 0) {
        assert!(
            start.elapsed() < PROPAGATION_BOUND,
            "`{user}` still holds allocations after {PROPAGATION_BOUND:?}"
        );
        std::thread::sleep(POLL);
    }
    start.elapsed()
}

#[test]
fn a_revoked_user_loses_its_allocations_on_every_node_and_is_refused_until_the_end() {
    let redis = RedisServer::start();
    let url = redis.url();
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&url)).collect();
    let peer = Peer::v4();
    turnd_cli(
        &url,
        &[
            "users",
            "add",
            "mallory",
            "--password",
            "m-pw",
            "--realm",
            REALM,
        ],
    );
    until_every_node(&nodes, "mallory", "m-pw", None);

    let mut ends = Vec::new();
    for run in 0..RUNS {
        // Two allocations per node, so both workers are likely to hold one.
        let held: Vec<_> = nodes
            .iter()
            .flat_map(|n| (0..2).map(|_| relaying(n.udp, &peer, "mallory", "m-pw")))
            .collect();
        assert!(nodes.iter().all(|n| n.allocations_of("mallory") == 2));
        turnd_cli(&url, &["revoke", "--user", "mallory"]);
        let took = until_no_allocation(&nodes, "mallory");
        println!("revocation run {run}: all 6 allocations ended {took:?} after the CLI returned");
        ends.push(took);
        for n in &nodes {
            assert_eq!(try_allocate(n.udp, "mallory", "m-pw"), Some(401));
        }
        // The ended allocations relay nothing more.
        let (c, relay) = &held[0];
        c.send_channel_data(0x4000, b"after", false);
        peer.expect_silence("data on a revoked user's ended allocation");
        let _ = relay;
        turnd_cli(&url, &["revoke", "--remove", "--user", "mallory"]);
        until_every_node(&nodes, "mallory", "m-pw", None);
    }
    summary("revoke → every allocation ended on all 3 nodes", &ends);
    for n in &nodes {
        let failures = common::http_body(&common::http_get(n.metrics, "/metrics"))
            .lines()
            .any(|l| l.starts_with("turnd_auth_failures_total{reason=\"revoked\"}"));
        assert!(failures, "no revoked auth failures counted");
    }

    // For a while: refused at once, accepted again when it ends (by each node's clock).
    turnd_cli(&url, &["revoke", "--user", "mallory", "--for", "2s"]);
    until_every_node(&nodes, "mallory", "m-pw", Some(401));
    let listed = turnd_cli(&url, &["revoke", "--list"]);
    assert!(listed.starts_with("mallory\t"), "{listed}");
    let start = Instant::now();
    let deadline = start + Duration::from_secs(6);
    // Bounded: every 50 ms for 6 s.
    while nodes
        .iter()
        .any(|n| try_allocate(n.udp, "mallory", "m-pw").is_some())
    {
        assert!(Instant::now() < deadline, "the 2 s revocation did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "a 2 s revocation: accepted again on every node {:?} later",
        start.elapsed()
    );

    // A REST user id: every REST username of that id is refused, others are not.
    turnd_cli(&url, &["secrets", "add", "s", "--secret", "store-secret"]);
    let rest = |id: &str| {
        let u = format!("{}:{id}", unix_now() + 3600);
        let p = rest_password("store-secret", &u);
        (u, p)
    };
    let (u, p) = rest("oscar");
    until_every_node(&nodes, &u, &p, None);
    let _held = relaying(nodes[2].udp, &peer, &u, &p);
    turnd_cli(&url, &["revoke", "--user", "oscar"]);
    until_no_allocation(&nodes, &u);
    let (u2, p2) = rest("oscar");
    until_every_node(&nodes, &u2, &p2, Some(401));
    let (u3, p3) = rest("peggy");
    until_every_node(&nodes, &u3, &p3, None);

    // The admin API, on one node, revokes on all of them.
    let (status, body) = http(nodes[1].metrics, "POST", "/revocations?user=peggy&for=1h");
    assert_eq!(status, 200, "{body}");
    until_every_node(&nodes, &u3, &p3, Some(401));
    let (status, body) = http(nodes[0].metrics, "GET", "/revocations");
    assert_eq!(status, 200);
    assert!(body.contains("\"user\":\"peggy\""), "{body}");
    assert!(body.contains("\"user\":\"oscar\",\"until\":null"), "{body}");
    let (status, _) = http(nodes[2].metrics, "DELETE", "/revocations/peggy");
    assert_eq!(status, 200);
    until_every_node(&nodes, &u3, &p3, None);
    assert_eq!(
        http(nodes[2].metrics, "DELETE", "/revocations/peggy").0,
        404
    );
    for n in &nodes {
        assert_eq!(n.metric("turnd_store_revoked"), Some(1.0), "oscar");
    }
}

#[test]
fn a_store_that_stops_or_comes_back_empty_costs_no_datagram_and_no_cached_user() {
    let redis = RedisServer::start();
    let (url, port) = (redis.url(), redis.port);
    let nodes: Vec<Node> = (0..2).map(|_| Node::start(&url)).collect();
    turnd_cli(
        &url,
        &[
            "users",
            "add",
            "trent",
            "--password",
            "t-pw",
            "--realm",
            REALM,
        ],
    );
    until_every_node(&nodes, "trent", "t-pw", None);

    // Traffic through node 0 while the store stops: every datagram arrives, both ways.
    let peer = Peer::v4();
    let (c, relay) = relaying(nodes[0].udp, &peer, "trent", "t-pw");
    // The store is stopped from another thread while the datagrams flow.
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        drop(redis);
    });
    let mut relayed = 0u32;
    for i in 0..2000u32 {
        round_trip(&c, &peer, relay, &i.to_be_bytes());
        relayed += 1;
    }
    stopper.join().expect("the stopping thread");
    println!("relayed {relayed} datagrams each way across the store's stop, none lost");

    // Down: cached users still authenticate, /readyz stays 200, the metric says so.
    for n in &nodes {
        n.wait_for_output("store: unreachable", PROPAGATION_BOUND);
        assert_eq!(try_allocate(n.udp, "trent", "t-pw"), None);
        assert_eq!(try_allocate(n.udp, ALICE.0, ALICE.1), None);
        let ready = common::http_get(n.metrics, "/readyz");
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        assert_eq!(n.metric("turnd_store_up"), Some(0.0));
    }
    round_trip(&c, &peer, relay, b"still relaying");

    // Back, empty: the nodes keep their cache and say why.
    let _redis = RedisServer::start_on(port);
    for n in &nodes {
        n.wait_for_output("turnd:epoch is gone", Duration::from_secs(30));
        assert_eq!(
            try_allocate(n.udp, "trent", "t-pw"),
            None,
            "cached user kept"
        );
        assert_eq!(n.metric("turnd_store_up"), Some(1.0));
        assert!(n.metric("turnd_store_reconnects_total").unwrap_or(0.0) >= 1.0);
    }
    // Written again: the new store is read whole (trent is no longer in it).
    turnd_cli(
        &url,
        &[
            "users",
            "add",
            "victor",
            "--password",
            "v-pw",
            "--realm",
            REALM,
        ],
    );
    until_every_node(&nodes, "victor", "v-pw", None);
    until_every_node(&nodes, "trent", "t-pw", Some(401));
    round_trip(&c, &peer, relay, b"after the store came back");
}

/// Runs `f` with a connection to the store at `url`.
fn with_redis<T>(url: &str, f: impl AsyncFnOnce(&mut redis::aio::MultiplexedConnection) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let client = redis::Client::open(url).expect("the URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test's redis");
        f(&mut conn).await
    })
}

#[test]
fn what_a_node_keeps_from_the_store_is_bounded_and_kill_messages_are_obeyed() {
    use redis::AsyncCommands;
    let redis = RedisServer::start();
    let url = redis.url();
    // A node keeping at most 100 users (and 100 revocations).
    let node = Node::start_with(&url, &["--store-max-users", "100"]);
    with_redis(&url, async |c| {
        let users: Vec<(String, String)> = (0..150)
            .map(|i| (format!("u{i}"), format!("password:p{i}")))
            .collect();
        let () = c.hset_multiple("turnd:users", &users).await.unwrap();
        let secrets: Vec<(String, String)> = (0..70)
            .map(|i| (format!("s{i}"), format!("secret{i}")))
            .collect();
        let () = c.hset_multiple("turnd:secrets", &secrets).await.unwrap();
        let revoked: Vec<(String, String)> = (0..130)
            .map(|i| ("+inf".to_string(), format!("r{i}")))
            .collect();
        let _: u64 = redis::cmd("ZADD")
            .arg("turnd:revoked")
            .arg(&revoked)
            .query_async(c)
            .await
            .unwrap();
        for part in ["users", "secrets", "revoked"] {
            let _: u64 = c.publish("turnd:changes", part).await.unwrap();
        }
    });
    let deadline = Instant::now() + PROPAGATION_BOUND;
    // Bounded: every 20 ms until the deadline.
    while node.metric("turnd_store_revoked") != Some(100.0) {
        assert!(Instant::now() < deadline, "{}", node.proc.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(node.metric("turnd_store_users"), Some(100.0));
    assert_eq!(node.metric("turnd_store_secrets"), Some(64.0));
    // Every store metric is in the operator's reference.
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("docs/metrics.md");
    let text = common::http_get(node.metrics, "/metrics");
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE turnd_store_"))
        .collect();
    assert_eq!(families.len(), 10, "{text}"); // 7 of the sync task, 3 of the report task
    for f in families {
        let name = format!("turnd_store_{}", f.split(' ').next().unwrap());
        assert!(docs.contains(&name), "{name} not in docs/metrics.md");
    }
    node.wait_for_output("turnd:users entries left out", PROPAGATION_BOUND);
    node.wait_for_output("turnd:secrets entries left out", PROPAGATION_BOUND);

    // `alloc NODE ID` ends that one allocation on that node only; `user NAME` ends the user's
    // allocations without refusing the user.
    let out = node.proc.output();
    let node_id = out
        .split("node=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("the node id in the store task's start line")
        .to_string();
    let peer = Peer::v4();
    let _a = relaying(node.udp, &peer, ALICE.0, ALICE.1);
    let _b = relaying(node.udp, &peer, ALICE.0, ALICE.1);
    let raw = common::http_get(node.metrics, "/allocations");
    let id = common::http_body(&raw)
        .split("\"id\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("an allocation id")
        .to_string();
    with_redis(&url, async |c| {
        let _: u64 = c
            .publish("turnd:kill", format!("alloc other-node:1:1 {id}"))
            .await
            .unwrap();
        let _: u64 = c
            .publish("turnd:kill", format!("alloc {node_id} {id}"))
            .await
            .unwrap();
    });
    let deadline = Instant::now() + PROPAGATION_BOUND;
    // Bounded: every 20 ms until the deadline.
    while node.allocations_of(ALICE.0) != 1 {
        assert!(Instant::now() < deadline, "{}", node.proc.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    with_redis(&url, async |c| {
        let _: u64 = c.publish("turnd:kill", "user alice").await.unwrap();
    });
    until_no_allocation(std::slice::from_ref(&node), ALICE.0);
    assert_eq!(
        try_allocate(node.udp, ALICE.0, ALICE.1),
        None,
        "not refused"
    );
}

#[test]
fn a_store_with_a_password_is_reached_with_it_from_a_file_or_the_environment() {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let redis = RedisServer::start_with(port, &["--requirepass", "s3cret-pw"]);
    let url = redis.url();
    let dir = common::ScratchDir::new("store-password");
    let file = dir.path().join("redis-password");
    std::fs::write(&file, "s3cret-pw\n").unwrap();
    let node = Node::start_with(&url, &["--store-password-file", file.to_str().unwrap()]);
    // Without the password the CLI is refused (exit status 1), and says nothing of it.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnd"));
    cmd.args(["users", "list", "--store", &url]);
    common::without_turnd_env(&mut cmd);
    let out = cmd.output().expect("run turnd");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    turnd_cli_env(
        &url,
        &[
            "users",
            "add",
            "wendy",
            "--password",
            "w-pw",
            "--realm",
            REALM,
        ],
        &[("TURND_STORE_PASSWORD", "s3cret-pw")],
    );
    until_every_node(std::slice::from_ref(&node), "wendy", "w-pw", None);
    assert_eq!(node.metric("turnd_store_up"), Some(1.0));
    assert!(!node.proc.output().contains("s3cret-pw"));
}

/// Calls of the commands nodes send to read the store (GET, HSCAN, ZRANGEBYSCORE), from
/// `INFO commandstats`.
fn node_commands(url: &str) -> [u64; 3] {
    let info: String = with_redis(url, async |c| {
        redis::cmd("INFO")
            .arg("commandstats")
            .query_async(c)
            .await
            .unwrap()
    });
    ["get", "hscan", "zrangebyscore"].map(|cmd| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    })
}
