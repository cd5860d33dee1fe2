//! CPU time and memory of a process and its threads, from Linux's /proc: the figures the load
//! program divides by, taken from the worker's own accounting so the load program's work is
//! not counted.

use std::path::Path;

/// Clock ticks per second of /proc's CPU times (`sysconf(_SC_CLK_TCK)`).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// User + system CPU seconds from the text of a `/proc/.../stat` file.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of the whole line are 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The `VmRSS` figure (KiB) of a `/proc/.../status` text.
pub fn parse_status_rss_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU seconds (user + system) a process has used, all threads.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(parse_stat_cpu_ticks(&stat)? as f64 / ticks_per_second())
}

/// Busy seconds of one CPU (everything but idle and iowait) from the text of /proc/stat.
pub fn parse_cpu_busy_ticks(stat: &str, cpu: usize) -> Option<u64> {
    let prefix = format!("cpu{cpu} ");
    let line = stat.lines().find(|l| l.starts_with(&prefix))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = fields.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    Some(busy)
}

/// Busy seconds of one CPU so far. With the worker alone on that CPU this counts the kernel's
/// packet processing that runs in softirq threads (ksoftirqd) on the worker's behalf under
/// load, which its process accounting misses.
pub fn cpu_busy_seconds(cpu: usize) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    Some(parse_cpu_busy_ticks(&stat, cpu)? as f64 / ticks_per_second())
}

/// CPU seconds of the process's threads whose name starts with `prefix` (the worker names its
/// media threads `fanout-media-N`).
pub fn threads_cpu_seconds(pid: u32, prefix: &str) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut ticks = 0;
    let mut found = false;
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if name.trim_end().starts_with(prefix) {
            found = true;
            ticks += read_ticks(&dir.join("stat")).unwrap_or(0);
        }
    }
    found.then(|| ticks as f64 / ticks_per_second())
}

fn read_ticks(path: &Path) -> Option<u64> {
    parse_stat_cpu_ticks(&std::fs::read_to_string(path).ok()?)
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    parse_status_rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// CPU seconds the calling thread has used (user + system), at microsecond resolution.
pub fn this_thread_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Pins the calling thread (and threads it starts later) to one CPU. False when the machine
/// has no such CPU or the call is refused.
pub fn pin_this_thread(cpu: usize) -> bool {
    // SAFETY: cpu_set_t is plain data; CPU_SET stays within it for cpu < CPU_SETSIZE.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            return false;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_even_with_spaces_in_the_name() {
        let stat = "4242 (fanout media 0) S 1 4242 4242 0 -1 4194560 500 0 0 0 1234 567 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn a_cpus_busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 10 0 20 1000 5 1 2 0 0 0\ncpu1 100 1 50 300 7 3 40 0 0 0\n";
        assert_eq!(parse_cpu_busy_ticks(stat, 1), Some(100 + 1 + 50 + 3 + 40));
        assert_eq!(parse_cpu_busy_ticks(stat, 0), Some(33));
        assert_eq!(parse_cpu_busy_ticks(stat, 2), None);
    }

    #[test]
    fn rss_comes_from_vmrss() {
        let status = "Name:\tfanout-worker\nVmPeak:\t  9999 kB\nVmRSS:\t   20480 kB\nThreads:\t4\n";
        assert_eq!(parse_status_rss_kib(status), Some(20480));
        assert_eq!(parse_status_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(process_cpu_seconds(pid).is_some());
        let before = this_thread_cpu_seconds();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(this_thread_cpu_seconds() > before);
    }
}
