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

/// CPU seconds (user + system) a process has used, all threads: the scheduler's exact
/// runtime (its CPU-time clock), else /proc's tick counts.
///
/// The ticks are samples: a thread is charged a whole tick when it happens to run at one. A
/// worker forwarding a few thousand packets a second runs in short bursts, and over a 10 s
/// window it uses about ten ticks, so they would leave its cost uncertain by tens of percent.
/// The relay is measured with its own thread's exact runtime (`getrusage`), so this keeps the
/// ratio like for like.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    process_cpu_clock_seconds(pid).or_else(|| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some(parse_stat_cpu_ticks(&stat)? as f64 / ticks_per_second())
    })
}

fn process_cpu_clock_seconds(pid: u32) -> Option<f64> {
    let mut clock: libc::clockid_t = 0;
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: both calls only write into the values we own.
    unsafe {
        if libc::clock_getcpuclockid(libc::pid_t::try_from(pid).ok()?, &mut clock) != 0 || libc::clock_gettime(clock, &mut now) != 0 {
            return None;
        }
    }
    Some(now.tv_sec as f64 + now.tv_nsec as f64 / 1e9)
}

/// Seconds one CPU spent running tasks (user, nice, system and hard interrupts) from the text
/// of /proc/stat. Left out with idle and iowait: softirq, where loopback runs the receiving
/// side of every datagram sent (work a network would put on the subscribers' machines), and
/// steal, the hypervisor's.
pub fn parse_cpu_busy_ticks(stat: &str, cpu: usize) -> Option<u64> {
    let prefix = format!("cpu{cpu} ");
    let line = stat.lines().find(|l| l.starts_with(&prefix))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = [0, 1, 2, 5].iter().map(|&i| fields.get(i).copied()).sum::<Option<u64>>()?;
    Some(busy)
}

/// Seconds one CPU has spent running tasks so far (see [`parse_cpu_busy_ticks`]). With the
/// worker alone on that CPU it should about equal the worker's own CPU time; more means some
/// other program ran there.
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
    fn a_cpus_busy_time_leaves_out_idle_iowait_softirq_and_steal() {
        let stat = "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 10 0 20 1000 5 1 2 0 0 0\ncpu1 100 1 50 300 7 3 40 0 0 0\n";
        assert_eq!(parse_cpu_busy_ticks(stat, 1), Some(100 + 1 + 50 + 3), "softirq (40) left out");
        assert_eq!(parse_cpu_busy_ticks(stat, 0), Some(31));
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
        let process_before = process_cpu_clock_seconds(pid).expect("the process CPU-time clock");
        let before = this_thread_cpu_seconds();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let thread_spent = this_thread_cpu_seconds() - before;
        assert!(thread_spent > 0.0);
        let process_spent = process_cpu_clock_seconds(pid).unwrap() - process_before;
        assert!(process_spent >= 0.9 * thread_spent, "the process clock counts this thread's loop: {process_spent} < {thread_spent}");
        // Another process's clock is read the same way (the worker is one).
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        assert!(process_cpu_clock_seconds(child.id()).is_some());
        let _ = child.kill();
        let _ = child.wait();
    }
}
