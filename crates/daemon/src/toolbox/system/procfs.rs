//! Fallbacks from `/proc` for what the cgroup files do not give.

use std::fs;
use std::time::Duration;

/// Memory of the machine, in bytes, from `/proc/meminfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineMemory {
    pub total: u64,
    /// Memory in use: the total less what is available without swapping.
    pub used: u64,
    /// Page cache and buffers.
    pub cache: u64,
}

/// Reads `/proc/meminfo`.
pub fn machine_memory() -> Option<MachineMemory> {
    parse_meminfo(&fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_meminfo(text: &str) -> Option<MachineMemory> {
    // Values are in kB (KiB).
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        })
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable").unwrap_or(0);
    let cache = field("Cached").unwrap_or(0) + field("Buffers").unwrap_or(0);
    Some(MachineMemory {
        total,
        used: total.saturating_sub(available),
        cache,
    })
}

/// CPU time of every process this process can see in `/proc`: each one's own time plus the
/// time of the children it has waited for. In a sandbox's PID namespace these are the
/// sandbox's processes, and PID 1 waits for every orphan, so the sum covers processes that
/// have ended too.
///
/// NOTE: a process that ends between the reads of its own entry and of its parent's can be
/// counted twice or not at all, so two samples taken then may differ by its CPU time.
pub fn visible_processes_cpu_time() -> Option<Duration> {
    let ticks_per_second = clock_ticks_per_second()?;
    let mut ticks = 0u64;
    for entry in fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
        let name = entry.file_name();
        if !name
            .to_string_lossy()
            .bytes()
            .all(|byte| byte.is_ascii_digit())
        {
            continue;
        }
        // A process that ended since the directory was read has no stat file.
        if let Ok(stat) = fs::read_to_string(entry.path().join("stat")) {
            ticks += stat_cpu_ticks(&stat).unwrap_or(0);
        }
    }
    Some(Duration::from_secs_f64(
        ticks as f64 / ticks_per_second as f64,
    ))
}

/// Sums utime, stime, cutime and cstime in a `/proc/<pid>/stat` line, in clock ticks.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name, in parentheses, may contain spaces; the fields after it are fixed.
    let after_name = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after_name.split(' ').collect();
    // After the name come state (field 3 of the line), ..., utime (14) to cstime (17).
    let times = fields.get(11..15)?;
    times
        .iter()
        .map(|value| value.parse::<i64>().ok().map(|ticks| ticks.max(0) as u64))
        .sum()
}

fn clock_ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|ticks| *ticks > 0)
}

/// Number of CPUs this process may run on (its affinity mask), at least 1.
pub fn usable_cpus() -> u64 {
    let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return 1;
    };
    let count = (0..nix::sched::CpuSet::count())
        .filter(|cpu| set.is_set(*cpu).unwrap_or(false))
        .count();
    (count as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_parses_in_bytes() {
        let text = "MemTotal:       16000 kB\nMemFree:  1000 kB\nMemAvailable:   12000 kB\nBuffers: 100 kB\nCached:  900 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Some(MachineMemory {
                total: 16000 * 1024,
                used: 4000 * 1024,
                cache: 1000 * 1024
            })
        );
    }

    #[test]
    fn stat_times_sum_own_and_waited_children() {
        let stat = "42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 20 10 20 0 1 0 100 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(40));
    }

    #[test]
    fn own_process_is_counted() {
        let time = visible_processes_cpu_time().unwrap();
        assert!(time > Duration::ZERO);
    }
}
