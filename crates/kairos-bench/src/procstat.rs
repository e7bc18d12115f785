//! CPU time and memory of this process, read from `/proc` (Linux).
//!
//! CPU is `utime + stime` of `/proc/self/stat` (every thread; children that were waited for
//! are counted apart), in clock ticks (10 ms on most systems), so it suits runs of a second or
//! more. Memory is `VmRSS` (resident now) and `VmHWM` (peak resident) of `/proc/self/status`;
//! the peak is reset before each workload by writing `5` to `/proc/self/clear_refs`, so that a
//! workload does not inherit an earlier one's peak.

use std::time::Duration;

/// CPU time used so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// User plus system time of this process (all threads).
    pub own: Duration,
    /// User plus system time of its children that were waited for.
    pub children: Duration,
}

impl CpuTimes {
    /// Reads the current figures; zero where `/proc` is not available.
    pub fn now() -> Self {
        read_cpu().unwrap_or_default()
    }

    /// CPU used since `earlier`.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            own: self.own.saturating_sub(earlier.own),
            children: self.children.saturating_sub(earlier.children),
        }
    }
}

fn read_cpu() -> Option<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; the fields after it do not.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14..=17 of proc(5) (utime, stime, cutime, cstime) are 11..=14 after the name.
    let tick = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let hz = rustix::param::clock_ticks_per_second().max(1);
    let to_duration = |ticks: u64| Duration::from_secs_f64(ticks as f64 / hz as f64);
    Some(CpuTimes {
        own: to_duration(tick(11)? + tick(12)?),
        children: to_duration(tick(13)? + tick(14)?),
    })
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Resident memory now, in KiB.
pub fn rss_kib() -> Option<u64> {
    status_kib("VmRSS")
}

/// Peak resident memory since start or the last [`reset_peak_rss`], in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    status_kib("VmHWM")
}

/// Resets the peak resident memory to the current one. False where the kernel does not allow it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// KiB to MiB.
pub fn mib(kib: Option<u64>) -> f64 {
    kib.map_or(f64::NAN, |k| k as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_and_memory_of_this_process() {
        let before = CpuTimes::now();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let used = CpuTimes::now().since(&before);
        assert!(used.own <= Duration::from_secs(60));
        assert!(rss_kib().unwrap() > 0);
        assert!(peak_rss_kib().unwrap() >= rss_kib().unwrap() / 2);
    }
}
