//! Workload usage of a sandbox, everything but the daemon: the runner's input to auto-stop.
//!
//! Every process of a sandbox is in its cgroups: the daemon's own (PID 1 `init`, the toolbox
//! server, the launcher) and the workloads that the toolbox started for the user. The daemon's
//! processes are recognized by their executable, the static binary that the setup stage
//! bind-mounts at [`DAEMON_PATH_IN_SANDBOX`].

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use daytona_isolation::cgroup::SandboxCgroup;
use daytona_isolation::spec::DAEMON_PATH_IN_SANDBOX;

/// CPU time and processes of a sandbox's workloads, the daemon's own processes left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkloadUsage {
    /// CPU time that processes other than the daemon's used since the sandbox's cgroups were
    /// created, exited processes included.
    pub cpu: Duration,
    /// Live processes other than the daemon's; zombies are not counted.
    pub processes: usize,
}

/// One process as `/proc/<pid>/stat` shows it.
struct ProcessStat {
    /// One-letter state (`R`, `S`, `Z`, ...).
    state: char,
    /// User plus system CPU time, in clock ticks.
    cpu_ticks: u64,
}

/// Reads the workload usage of the sandbox whose cgroup is `cgroup`. `daemon_binary` is the
/// host path of the daemon binary, whose device and inode identify the daemon's processes
/// even when their executable path reads differently.
pub fn read(cgroup: &SandboxCgroup, daemon_binary: &Path) -> Option<WorkloadUsage> {
    if !cgroup.exists() {
        return None;
    }
    let total = cgroup.cpu_usage().ok()?;
    let pids = cgroup.pids().ok()?;
    let daemon_identity = fs::metadata(daemon_binary)
        .ok()
        .map(|meta| (meta.dev(), meta.ino()));
    let tick_nanos = clock_tick_nanos();

    let mut daemon_cpu = Duration::ZERO;
    let mut processes = 0;
    for pid in pids {
        // A process that exited since the cgroup listed it is simply gone.
        let Some(stat) = read_stat(pid) else {
            continue;
        };
        if is_daemon(pid, daemon_identity) {
            daemon_cpu += Duration::from_nanos(stat.cpu_ticks.saturating_mul(tick_nanos));
        } else if stat.state != 'Z' && stat.state != 'X' {
            processes += 1;
        }
    }
    Some(WorkloadUsage {
        cpu: total.saturating_sub(daemon_cpu),
        processes,
    })
}

/// Returns whether process `pid` runs the daemon binary. Its executable then reads as the
/// daemon's path in the sandbox (with `(deleted)` appended once the host file was replaced),
/// or is the same file as the host's daemon binary.
fn is_daemon(pid: i32, daemon_identity: Option<(u64, u64)>) -> bool {
    let exe = format!("/proc/{pid}/exe");
    if let Ok(target) = fs::read_link(&exe)
        && target
            .to_str()
            .is_some_and(|path| path.starts_with(DAEMON_PATH_IN_SANDBOX))
    {
        return true;
    }
    match (fs::metadata(&exe), daemon_identity) {
        (Ok(meta), Some(identity)) => (meta.dev(), meta.ino()) == identity,
        _ => false,
    }
}

/// Parses the state and the CPU time of `/proc/<pid>/stat`.
fn read_stat(pid: i32) -> Option<ProcessStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) may contain spaces and
/// parentheses, so the fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<ProcessStat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 3 (state), 14 (utime) and 15 (stime) of proc(5), counted from field 3.
    let state = fields.first()?.chars().next()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcessStat {
        state,
        cpu_ticks: utime + stime,
    })
}

/// Length of one clock tick in nanoseconds; CPU times in `/proc/<pid>/stat` count ticks.
fn clock_tick_nanos() -> u64 {
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|ticks| u64::try_from(ticks).ok())
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100);
    1_000_000_000 / per_second
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_name() {
        let line =
            "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 120 0 0 0 7 3 0 0 20 0 1 0 99 0 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.cpu_ticks, 10);
    }

    #[test]
    fn stat_truncated_is_none() {
        assert!(parse_stat("1 (init) S 0").is_none());
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn daemon_recognized_by_file_identity() {
        let pid = std::process::id() as i32;
        assert!(!is_daemon(pid, None));
        let own = fs::metadata("/proc/self/exe").unwrap();
        assert!(is_daemon(pid, Some((own.dev(), own.ino()))));
    }
}
