//! What a test reads off a running server: its resident memory and descriptors from `/proc`,
//! and samples of its `/metrics` exposition from the admin listener.

use super::{http_body, http_get};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

/// Resident memory of process `pid`, in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Open file descriptors of process `pid`, from `/proc/PID/fd`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .count()
}

/// The `/metrics` exposition of the admin listener at `addr`.
pub fn metrics_text(addr: SocketAddr) -> String {
    http_body(&http_get(addr, "/metrics")).to_string()
}

/// The value of the sample `series` (name and labels, exactly as printed) in `text`; `None`
/// when it is not there (a counter with labels is printed once it has counted).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The sum of every sample of metric `name` whose labels contain `label` ("" for all of them).
pub fn sum_samples(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        .filter(|rest| rest.contains(label))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `series` on the server's `/metrics` now; 0 when it is not there.
pub fn metric(addr: SocketAddr, series: &str) -> f64 {
    sample(&metrics_text(addr), series).unwrap_or(0.0)
}

/// Waits (bounded by `timeout`) until `series` on the server's `/metrics` reads `want`.
#[track_caller]
pub fn wait_metric(addr: SocketAddr, series: &str, want: f64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    // Bounded: one scrape per 20 ms until the deadline.
    loop {
        let got = metric(addr, series);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {got}, expected {want}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}
