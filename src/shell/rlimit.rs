//! The open-file limit. Every relay socket, TCP/TLS connection and listener is a file
//! descriptor, and distributions start services with a soft limit of 1,024 — about 1,000
//! allocations — while the hard limit is usually far higher. Like Go's runtime and nginx's
//! `worker_rlimit_nofile`, turnd raises its soft limit to the hard limit at start-up, so
//! operators need only set the hard limit (`LimitNOFILE=` in systemd, `--ulimit` in Docker).

use std::io;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns `(soft, hard)` as they are
/// afterwards.
pub fn raise_nofile_limit() -> io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim = raised;
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let (soft, hard) = super::raise_nofile_limit().expect("getrlimit/setrlimit");
        assert_eq!(soft, hard);
    }
}
