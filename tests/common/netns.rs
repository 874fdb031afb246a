//! Network namespaces for the tests that need root (`own_host.rs`, `nat_namespaces.rs`, tier 2).
//!
//! Each set-up command is bounded and checked. A test's namespaces are named after the test
//! process (`turnd-TAG-PID-N-NAME`) and deleted by a guard on drop, failure included; what a
//! killed earlier run of the same file left behind is deleted before new ones are made.

use super::{require_tool, run_tool, without_turnd_env, Proc};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

/// Bound on each set-up command, and on the start of what runs inside a namespace.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// Panics unless the test runs as root: `file` (under tests/) creates `what`.
pub fn require_root(file: &str, what: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "tests/{file} needs root: it creates {what}; run it as root (.ci/run does)"
    );
}

/// Runs `program args…` to completion (bounded) and panics with its output unless it succeeds.
pub fn run(program: &str, args: &[&str]) {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let (status, out) = run_tool(program, cmd, COMMAND_TIMEOUT);
    assert!(
        status.success(),
        "`{program} {}` failed ({status}):\n{out}",
        args.join(" ")
    );
}

/// `ip -n NS WORDS…` (WORDS split on whitespace).
pub fn ip(ns: &str, words: &str) {
    let mut all = vec!["-n", ns];
    all.extend(words.split_whitespace());
    run("ip", &all);
}

/// `ip netns exec NS program args…`.
pub fn in_ns(ns: &str, program: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run("ip", &all);
}

/// A veth pair, `a_dev` in `a_ns` and `b_dev` in `b_ns`. It is created inside the namespaces
/// directly (`-n`, `netns`), so no name ever appears in the host's own namespace.
pub fn veth(a_ns: &str, a_dev: &str, b_ns: &str, b_dev: &str) {
    ip(
        a_ns,
        &format!("link add {a_dev} type veth peer name {b_dev} netns {b_ns}"),
    );
}

/// Gives `dev` in `ns` the address `cidr` and brings it up.
pub fn address(ns: &str, dev: &str, cidr: &str) {
    ip(ns, &format!("addr add {cidr} dev {dev}"));
    ip(ns, &format!("link set {dev} up"));
}

/// The namespaces of one test. Deleting them on drop also removes every veth, bridge,
/// address, route and iptables rule inside them, and kills nothing: the processes running in
/// them are guarded separately, and must be dropped first (before this guard, in field order).
pub struct Namespaces {
    prefix: String,
    names: Vec<String>,
}

impl Namespaces {
    /// Creates `turnd-TAG-PID-N-NAME` for each of `names` (N counts this process's sets), each
    /// with its loopback up.
    pub fn create(tag: &str, names: &[&str]) -> Namespaces {
        require_tool("ip");
        remove_stale(tag);
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "turnd-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // Registered before creation, so a failure half-way still deletes what exists.
        let mut ns = Namespaces {
            prefix,
            names: Vec::new(),
        };
        for short in names {
            let name = ns.name(short);
            ns.names.push(name.clone());
            run("ip", &["netns", "add", &name]);
            ip(&name, "link set lo up");
        }
        ns
    }

    /// The full name of the namespace created as `short`.
    pub fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.names {
            // Best effort: a namespace that was never created fails harmlessly.
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Deletes namespaces a previous run left behind because it was killed before its guards ran:
/// only names made with `tag` (`turnd-TAG-PID-…`), and only when no process with that PID
/// exists any more.
fn remove_stale(tag: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let prefix = format!("turnd-{tag}-");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        let alive = std::path::Path::new("/proc").join(pid).exists();
        if !alive && pid.bytes().all(|b| b.is_ascii_digit()) {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Starts turnd inside `ns` with `args` as its whole configuration (`ip netns exec` execs it,
/// so the PID the guard kills is turnd's own); returns it and its admin listener's address
/// once it has printed it, after its listening lines.
pub fn spawn_turnd(ns: &str, args: &[&str]) -> (Proc, SocketAddr) {
    spawn_turnd_with_env(ns, &[], args)
}

/// [`spawn_turnd`] with `env` set for turnd (a debug build's test hooks).
pub fn spawn_turnd_with_env(ns: &str, env: &[(&str, &str)], args: &[&str]) -> (Proc, SocketAddr) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_turnd")])
        .args(args);
    without_turnd_env(&mut cmd);
    cmd.envs(env.iter().copied());
    let mut turnd = Proc::spawn(&format!("turnd (netns {ns})"), cmd);
    let metrics = turnd.wait_for_line("turnd metrics http://", COMMAND_TIMEOUT);
    let metrics = metrics.parse().expect("turnd printed its metrics address");
    (turnd, metrics)
}

/// Runs `f` on a thread that has joined namespace `ns` (`setns`), so the sockets it makes
/// live there.
pub fn run_in<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/var/run/netns/{ns}");
    thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(&path).expect("open the namespace");
            // SAFETY: setns on a namespace file descriptor we own; it changes only this
            // thread's network namespace, which ends with the thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}
