//! Process settings a server that holds thousands of sockets needs.

/// Raises this process's open-file soft limit to its hard limit (one descriptor per transport
/// or connection) and returns the soft limit in force afterwards, or `None` if it cannot be read.
pub fn raise_open_file_limit() -> Option<u64> {
    // SAFETY: getrlimit/setrlimit with a pointer to a struct we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, ..limit };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        Some(limit.rlim_cur as u64)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let soft = super::raise_open_file_limit().expect("readable");
        // SAFETY: as above.
        let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        assert_eq!(soft, limit.rlim_cur as u64);
        // The kernel refuses a soft limit above fs.nr_open, which an unlimited hard limit is.
        if limit.rlim_max != libc::RLIM_INFINITY {
            assert_eq!(limit.rlim_cur, limit.rlim_max);
        }
    }
}
