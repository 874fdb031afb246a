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
    /// The CPU split, summed over the threads alive at the sample (`/proc/PID/task/*`): user
    /// and system time in clock ticks (utime, stime of each `stat`) and context switches
    /// (voluntary + nonvoluntary of each `status`), i.e. how often a thread went to sleep
    /// or was preempted — for a relay, about how many wake-ups it needed.
    pub split: Split,
}

/// User time, system time (clock ticks) and context switches of a process's threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub user_ticks: u64,
    pub sys_ticks: u64,
    pub ctxt_switches: u64,
}

impl Split {
    fn add(self, o: Split) -> Split {
        Split {
            user_ticks: self.user_ticks + o.user_ticks,
            sys_ticks: self.sys_ticks + o.sys_ticks,
            ctxt_switches: self.ctxt_switches + o.ctxt_switches,
        }
    }
}

/// The split between two samples, per unit (relayed datagram, or allocation set up): user µs,
/// system µs, context switches. `None` when there were no units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SplitPer {
    pub user_us: f64,
    pub sys_us: f64,
    pub wakeups: f64,
}

pub fn split_per(before: Split, after: Split, units: u64, ticks_per_s: u64) -> Option<SplitPer> {
    if units == 0 || ticks_per_s == 0 {
        return None;
    }
    let us = |a: u64, b: u64| a.saturating_sub(b) as f64 * 1e6 / ticks_per_s as f64 / units as f64;
    Some(SplitPer {
        user_us: us(after.user_ticks, before.user_ticks),
        sys_us: us(after.sys_ticks, before.sys_ticks),
        wakeups: after.ctxt_switches.saturating_sub(before.ctxt_switches) as f64 / units as f64,
    })
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

/// Parses utime + stime (fields 14 and 15) out of a `/proc/PID/stat` line.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    parse_stat_user_sys_ticks(stat).map(|(u, s)| u + s)
}

/// Parses (utime, stime) — fields 14 and 15, in clock ticks — out of a `/proc/PID/stat` or
/// `/proc/PID/task/TID/stat` line. The command name (field 2) may contain spaces and
/// parentheses (a thread may name itself `a) b (c`), so fields are counted after the *last*
/// ')': the kernel writes nothing after the name that could contain one.
pub fn parse_stat_user_sys_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    // After ')': field 3 is state; utime is field 14, i.e. the 12th token here.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime, stime))
}

/// `voluntary_ctxt_switches` + `nonvoluntary_ctxt_switches` of a `/proc/PID/status` (or a
/// thread's); `None` unless both are there.
pub fn parse_status_ctxt_switches(status: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].trim().parse().ok()
    };
    Some(field("voluntary_ctxt_switches:")? + field("nonvoluntary_ctxt_switches:")?)
}

/// The split summed over the threads of `pid` alive now. A thread that exits between the
/// listing and the reads counts zero (both servers keep their relay threads for their life).
fn thread_split(pid: u32) -> Option<Split> {
    let mut total = Split::default();
    // Bounded: a process has a finite task list; 100,000 is far above either server.
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .take(100_000)
    {
        let dir = entry.ok()?.path();
        let (Ok(stat), Ok(status)) = (
            std::fs::read_to_string(dir.join("stat")),
            std::fs::read_to_string(dir.join("status")),
        ) else {
            continue;
        };
        let (user_ticks, sys_ticks) = parse_stat_user_sys_ticks(&stat)?;
        total = total.add(Split {
            user_ticks,
            sys_ticks,
            ctxt_switches: parse_status_ctxt_switches(&status)?,
        });
    }
    Some(total)
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
        split: thread_split(pid)
            .ok_or_else(|| anyhow::anyhow!("unparsable /proc/{pid}/task/*/stat or status"))?,
    })
}

/// This process's own CPU time so far, (user, system) in microseconds (`getrusage`,
/// microsecond resolution, every thread).
pub fn self_cpu_us() -> (u64, u64) {
    // SAFETY: all-zero is a valid rusage, and getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a live rusage.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if r != 0 {
        return (0, 0);
    }
    let us = |t: libc::timeval| t.tv_sec.max(0) as u64 * 1_000_000 + t.tv_usec.max(0) as u64;
    (us(ru.ru_utime), us(ru.ru_stime))
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
            ..ProcSample::default()
        };
        let b = ProcSample {
            cpu_ns: 10_500_000_000,
            ..ProcSample::default()
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
    fn stat_with_a_hostile_comm() {
        // A thread name with spaces and parentheses, even ") S 1 2": only the last ')' counts.
        let stat = "4242 (x) S 1 (evil) 2) S 1 4242 4242 0 -1 4194624 120 0 0 0 731 1294 0 0 20 0 9 0 5 1 2";
        assert_eq!(parse_stat_user_sys_ticks(stat), Some((731, 1294)));
        assert_eq!(parse_stat_cpu_ticks(stat), Some(2025));
        let plain = "17 (turnd-worker-0) R 1 17 17 0 -1 4194368 9 0 0 0 12 34 0 0 20 0 3 0";
        assert_eq!(parse_stat_user_sys_ticks(plain), Some((12, 34)));
        // Truncated or garbled lines are no sample, never a panic.
        assert_eq!(parse_stat_user_sys_ticks("17 (a b) R 1 2 3"), None);
        assert_eq!(parse_stat_user_sys_ticks("17 no parenthesis 1 2 3"), None);
        assert_eq!(
            parse_stat_user_sys_ticks("17 (x) S 1 1 1 0 -1 0 0 0 0 0 u 5"),
            None
        );
        assert_eq!(parse_stat_user_sys_ticks(")"), None);
    }

    #[test]
    fn status_context_switches() {
        let status = "Name:\tturn (relay) 1\nState:\tS (sleeping)\nVmRSS:\t  1 kB\n\
                      voluntary_ctxt_switches:\t1500\nnonvoluntary_ctxt_switches:\t  25\n";
        assert_eq!(parse_status_ctxt_switches(status), Some(1525));
        assert_eq!(
            parse_status_ctxt_switches("voluntary_ctxt_switches:\t3\n"),
            None
        );
        assert_eq!(
            parse_status_ctxt_switches(
                "voluntary_ctxt_switches: x\nnonvoluntary_ctxt_switches: 1\n"
            ),
            None
        );
    }

    #[test]
    fn split_per_unit() {
        let a = Split {
            user_ticks: 100,
            sys_ticks: 200,
            ctxt_switches: 1_000,
        };
        let b = Split {
            user_ticks: 150,
            sys_ticks: 500,
            ctxt_switches: 51_000,
        };
        // 50 and 300 ticks at 100/s = 0.5 s and 3 s over 100,000 datagrams.
        let p = split_per(a, b, 100_000, 100).unwrap();
        assert!((p.user_us - 5.0).abs() < 1e-9, "{p:?}");
        assert!((p.sys_us - 30.0).abs() < 1e-9, "{p:?}");
        assert!((p.wakeups - 0.5).abs() < 1e-12, "{p:?}");
        assert_eq!(split_per(a, b, 0, 100), None);
        // Counters never go back; an odd pair gives zero, not a wrap.
        assert_eq!(split_per(b, a, 10, 100).map(|p| p.sys_us), Some(0.0));
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
