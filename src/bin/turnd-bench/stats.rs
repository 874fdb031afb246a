//! The arithmetic of the report — percentiles, rates, CPU per datagram — and reading a
//! process's CPU time and RSS from /proc. Kept apart so unit tests cover it.

use std::time::Duration;

/// The `p`-th percentile (0–100) of `sorted` by the nearest-rank method; `None` when empty.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// CPU time and resident memory of a process at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcSample {
    /// CPU time in nanoseconds: the sum over the process's threads of the first field of
    /// `/proc/PID/task/TID/schedstat` (nanosecond resolution), or utime + stime of
    /// `/proc/PID/stat` (10 ms ticks) converted when schedstat is unavailable.
    pub cpu_ns: u64,
    pub rss_bytes: u64,
}

/// The first field of a `schedstat` line: time spent on the CPU, in nanoseconds.
pub fn parse_schedstat_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// Sum of every thread's on-CPU nanoseconds. Threads that already exited are not counted, so
/// this suits servers with long-lived threads (turnd's workers, coturn's relay threads).
fn schedstat_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    // Bounded: a process has a finite task list; 100,000 is far above either server.
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .take(100_000)
    {
        let path = entry.ok()?.path().join("schedstat");
        // A thread may exit between the listing and the read; it then counts zero.
        if let Ok(s) = std::fs::read_to_string(path) {
            total += parse_schedstat_ns(&s)?;
        }
    }
    Some(total)
}

/// Parses utime + stime (fields 14 and 15) out of a `/proc/PID/stat` line. The command name
/// (field 2) may contain spaces and parentheses, so fields are counted after the last ')'.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    // After ')': field 3 is state; utime is field 14, i.e. the 12th token here.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` of a `/proc/PID/status`, in bytes.
pub fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// How many files process `pid` has open (`/proc/PID/fd`), if readable.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let cpu_ns = match schedstat_ns(pid) {
        Some(ns) => ns,
        None => {
            let ticks = parse_stat_cpu_ticks(&stat)
                .ok_or_else(|| anyhow::anyhow!("unparsable /proc/{pid}/stat"))?;
            ticks * 1_000_000_000 / clock_ticks_per_sec()
        }
    };
    Ok(ProcSample {
        cpu_ns,
        rss_bytes: parse_status_rss(&status)
            .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))?,
    })
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf only reads a constant of the C library.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Server CPU microseconds per unit (relayed datagram, or allocation set up) between two
/// samples; `None` when there were no units.
pub fn cpu_us_per(before: ProcSample, after: ProcSample, units: u64) -> Option<f64> {
    if units == 0 {
        return None;
    }
    let ns = after.cpu_ns.saturating_sub(before.cpu_ns);
    Some(ns as f64 / 1e3 / units as f64)
}

/// Events per second over `window`.
pub fn rate(count: u64, window: Duration) -> f64 {
    let s = window.as_secs_f64();
    if s > 0.0 {
        count as f64 / s
    } else {
        0.0
    }
}

/// Loss in percent: the part of `sent` that did not arrive.
pub fn loss_pct(sent: u64, received: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        100.0 * sent.saturating_sub(received) as f64 / sent as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), Some(2));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn cpu_per_datagram() {
        let a = ProcSample {
            cpu_ns: 10_000_000_000,
            rss_bytes: 0,
        };
        let b = ProcSample {
            cpu_ns: 10_500_000_000,
            rss_bytes: 0,
        };
        // 0.5 s of CPU over 100,000 datagrams = 5 µs each.
        let us = cpu_us_per(a, b, 100_000).unwrap();
        assert!((us - 5.0).abs() < 1e-9, "{us}");
        assert_eq!(cpu_us_per(a, b, 0), None);
        // A counter never goes back; if a sample is odd, the delta is zero, not a wrap.
        assert_eq!(cpu_us_per(b, a, 10), Some(0.0));
    }

    #[test]
    fn proc_parsing() {
        let stat = "1234 (turn server) S 1 2 3 4 5 6 7 8 9 10 250 70 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(320));
        let status = "Name:\tturnd\nVmRSS:\t   2048 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss(status), Some(2048 * 1024));
        assert_eq!(parse_status_rss("Name: x\n"), None);
        assert_eq!(parse_schedstat_ns("123456789 2000 31\n"), Some(123_456_789));
        assert_eq!(parse_schedstat_ns(""), None);
    }

    #[test]
    fn rates_and_loss() {
        assert_eq!(rate(1000, Duration::from_secs(2)), 500.0);
        assert_eq!(rate(5, Duration::ZERO), 0.0);
        assert_eq!(loss_pct(200, 150), 25.0);
        assert_eq!(loss_pct(0, 0), 0.0);
        assert_eq!(loss_pct(10, 12), 0.0);
    }
}
