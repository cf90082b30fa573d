//! Reads the daemon's own cgroups: the sandbox's, which PID 1 mounts read-only at
//! `/sys/fs/cgroup` (cgroup v2, or the v1 hierarchies `cpu`, `memory` and `pids`).
//!
//! The group of each controller is found from `/proc/self/cgroup` and the cgroup mounts in
//! `/proc/self/mountinfo`. So the same code works inside a sandbox, whose cgroup namespace
//! starts at the sandbox's groups, and outside one, where it reads the daemon's own groups.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PROC_CGROUP: &str = "/proc/self/cgroup";
const PROC_MOUNTINFO: &str = "/proc/self/mountinfo";

/// A v1 memory limit at or above this means no limit (the kernel reports the largest page
/// multiple below 2^63).
const V1_UNLIMITED: u64 = 1 << 62;

/// The cgroup files that describe the sandbox's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// One unified group with the memory controller.
    V2(PathBuf),
    /// The v1 groups of each controller that is mounted.
    V1 {
        cpu: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
        memory: Option<PathBuf>,
    },
}

/// Memory use of a group, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    /// `None` when the group has no limit.
    pub limit: Option<u64>,
    /// Usage without reclaimable page cache (inactive file pages).
    pub used: u64,
    pub cache: u64,
}

impl Cgroup {
    /// Finds the daemon's groups; `None` when no usable cgroup is mounted.
    pub fn discover() -> Option<Self> {
        let membership = fs::read_to_string(PROC_CGROUP).ok()?;
        let mountinfo = fs::read_to_string(PROC_MOUNTINFO).ok()?;
        Self::from_tables(&membership, &mountinfo, Path::new("/"))
    }

    /// Finds the groups from the text of `/proc/self/cgroup` and `/proc/self/mountinfo`;
    /// `root` prefixes mount points (a test's fixture directory, `/` otherwise).
    fn from_tables(membership: &str, mountinfo: &str, root: &Path) -> Option<Self> {
        let mounts: Vec<CgroupMount> = mountinfo.lines().filter_map(CgroupMount::parse).collect();
        let group_dir = |controllers: &[&str], path: &str| {
            mounts
                .iter()
                .filter(|mount| mount.matches(controllers))
                .find_map(|mount| mount.dir_of(path, root))
        };

        let mut cpu = None;
        let mut cpuacct = None;
        let mut memory = None;
        for line in membership.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if controllers.is_empty() {
                // The unified group counts only if it has the memory controller: a v2 mount
                // without controllers sits next to v1 hierarchies on some hosts.
                if let Some(dir) = group_dir(&[], path)
                    && dir.join("memory.current").is_file()
                {
                    return Some(Self::V2(dir));
                }
                continue;
            }
            let names: Vec<&str> = controllers.split(',').collect();
            let Some(dir) = group_dir(&names, path) else {
                continue;
            };
            if names.contains(&"cpu") {
                cpu = Some(dir.clone());
            }
            if names.contains(&"cpuacct") {
                cpuacct = Some(dir.clone());
            }
            if names.contains(&"memory") {
                memory = Some(dir);
            }
        }
        (cpu.is_some() || cpuacct.is_some() || memory.is_some()).then_some(Self::V1 {
            cpu,
            cpuacct,
            memory,
        })
    }

    /// Returns the CPU quota in CPUs, or `None` without a quota.
    pub fn cpu_quota(&self) -> Option<f64> {
        let (quota, period) = match self {
            Self::V2(dir) => {
                let text = fs::read_to_string(dir.join("cpu.max")).ok()?;
                let mut fields = text.split_whitespace();
                let quota = fields.next()?;
                let period = fields.next()?;
                (quota.parse::<f64>().ok()?, period.parse::<f64>().ok()?)
            }
            Self::V1 { cpu, .. } => {
                let cpu = cpu.as_ref()?;
                let quota: f64 = read_number(&cpu.join("cpu.cfs_quota_us"))?;
                let period: f64 = read_number(&cpu.join("cpu.cfs_period_us"))?;
                (quota, period)
            }
        };
        (quota > 0.0 && period > 0.0).then(|| quota / period)
    }

    /// Returns the CPU time that the group's processes used since it was created. It is `None`
    /// without CPU accounting, which is the case when the v1 cpuacct hierarchy is not mounted.
    pub fn cpu_usage(&self) -> Option<Duration> {
        match self {
            Self::V2(dir) => {
                let stat = fs::read_to_string(dir.join("cpu.stat")).ok()?;
                stat_value(&stat, "usage_usec").map(Duration::from_micros)
            }
            Self::V1 { cpuacct, .. } => {
                let nanos: u64 = read_number(&cpuacct.as_ref()?.join("cpuacct.usage"))?;
                Some(Duration::from_nanos(nanos))
            }
        }
    }

    /// Memory use of the group; `None` without a memory controller.
    pub fn memory(&self) -> Option<MemoryUsage> {
        match self {
            Self::V2(dir) => {
                let usage: u64 = read_number(&dir.join("memory.current"))?;
                let limit = fs::read_to_string(dir.join("memory.max"))
                    .ok()
                    .and_then(|text| text.trim().parse().ok());
                let stat = fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
                Some(MemoryUsage {
                    limit,
                    used: usage.saturating_sub(stat_value(&stat, "inactive_file").unwrap_or(0)),
                    cache: stat_value(&stat, "file").unwrap_or(0),
                })
            }
            Self::V1 { memory, .. } => {
                let memory = memory.as_ref()?;
                let usage: u64 = read_number(&memory.join("memory.usage_in_bytes"))?;
                let limit = read_number::<u64>(&memory.join("memory.limit_in_bytes"))
                    .filter(|limit| *limit < V1_UNLIMITED);
                let stat = fs::read_to_string(memory.join("memory.stat")).unwrap_or_default();
                // The total_ values include the group's descendants.
                let inactive = stat_value(&stat, "total_inactive_file")
                    .or_else(|| stat_value(&stat, "inactive_file"))
                    .unwrap_or(0);
                let cache = stat_value(&stat, "total_cache")
                    .or_else(|| stat_value(&stat, "cache"))
                    .unwrap_or(0);
                Some(MemoryUsage {
                    limit,
                    used: usage.saturating_sub(inactive),
                    cache,
                })
            }
        }
    }
}

/// A cgroup file system from `/proc/self/mountinfo`.
#[derive(Debug)]
struct CgroupMount {
    /// The group mounted, relative to the reader's cgroup namespace.
    root: String,
    mount_point: String,
    /// v1 controllers of the hierarchy; empty for cgroup2.
    controllers: Vec<String>,
    unified: bool,
}

impl CgroupMount {
    /// Parses `id parent major:minor root mount-point options [optional...] - type source
    /// super-options`; `None` for anything but a cgroup mount.
    fn parse(line: &str) -> Option<Self> {
        let (before, after) = line.split_once(" - ")?;
        let mut fields = before.split(' ');
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        let mut after = after.split(' ');
        let fs_type = after.next()?;
        let super_options = after.nth(1).unwrap_or("");
        let unified = match fs_type {
            "cgroup2" => true,
            "cgroup" => false,
            _ => return None,
        };
        let controllers = if unified {
            Vec::new()
        } else {
            super_options.split(',').map(str::to_owned).collect()
        };
        Some(Self {
            root: unescape(root),
            mount_point: unescape(mount_point),
            controllers,
            unified,
        })
    }

    /// Checks whether this mount contains the hierarchy of `controllers` (empty: the unified one).
    fn matches(&self, controllers: &[&str]) -> bool {
        if controllers.is_empty() {
            return self.unified;
        }
        !self.unified
            && controllers
                .iter()
                .all(|name| self.controllers.iter().any(|c| c == name))
    }

    /// Returns the directory of the group at `path` under this mount, if the mount shows it.
    fn dir_of(&self, path: &str, root: &Path) -> Option<PathBuf> {
        let relative = if self.root == "/" {
            path.strip_prefix('/')?
        } else {
            let rest = path.strip_prefix(self.root.as_str())?;
            if !rest.is_empty() && !rest.starts_with('/') {
                return None;
            }
            rest.trim_start_matches('/')
        };
        let mount_point = self.mount_point.trim_start_matches('/');
        let dir = root.join(mount_point).join(relative);
        dir.is_dir().then_some(dir)
    }
}

/// Decodes the octal escapes (`\040` for a space) of mountinfo fields.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escape = (bytes[index] == b'\\')
            .then(|| field.get(index + 1..index + 4))
            .flatten()
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match escape {
            Some(byte) => {
                decoded.push(byte);
                index += 4;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn read_number<T: std::str::FromStr>(path: &Path) -> Option<T> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Returns the value of `key` in a flat-keyed file such as `memory.stat` (`key value` per line).
pub fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, content: &str) {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    /// Builds a v1 sandbox view: `cpu` and `memory` hierarchies bound at the sandbox's groups,
    /// and an empty unified mount beside them.
    fn v1_fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "150000\n");
        write(root, "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
        write(root, "sys/fs/cgroup/memory/memory.usage_in_bytes", "1000\n");
        write(root, "sys/fs/cgroup/memory/memory.limit_in_bytes", "4096\n");
        write(
            root,
            "sys/fs/cgroup/memory/memory.stat",
            "cache 300\ninactive_file 100\ntotal_cache 400\ntotal_inactive_file 200\n",
        );
        fs::create_dir_all(root.join("sys/fs/cgroup/unified")).unwrap();
        dir
    }

    const V1_MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup/cpu ro,nosuid,nodev,noexec - cgroup cgroup rw,cpu
31 25 0:27 / /sys/fs/cgroup/memory ro,nosuid,nodev,noexec - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/unified rw shared:9 - cgroup2 cgroup2 rw
40 25 0:30 / /proc rw - proc proc rw
";

    const V1_MEMBERSHIP: &str = "4:memory:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";

    #[test]
    fn v1_groups_are_found_and_read() {
        let fixture = v1_fixture();
        let cgroup = Cgroup::from_tables(V1_MEMBERSHIP, V1_MOUNTINFO, fixture.path()).unwrap();
        let Cgroup::V1 {
            cpu,
            cpuacct,
            memory,
        } = &cgroup
        else {
            panic!("expected v1, got {cgroup:?}");
        };
        assert!(cpu.is_some());
        assert!(memory.is_some());
        // The cpuacct hierarchy is not mounted, so CPU time is not available here.
        assert!(cpuacct.is_none());
        assert_eq!(cgroup.cpu_usage(), None);
        assert_eq!(cgroup.cpu_quota(), Some(1.5));
        assert_eq!(
            cgroup.memory(),
            Some(MemoryUsage {
                limit: Some(4096),
                used: 800,
                cache: 400
            })
        );
    }

    #[test]
    fn v2_group_with_memory_controller() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "sys/fs/cgroup/box/memory.current", "2000\n");
        write(root, "sys/fs/cgroup/box/memory.max", "max\n");
        write(
            root,
            "sys/fs/cgroup/box/memory.stat",
            "file 500\ninactive_file 300\n",
        );
        write(root, "sys/fs/cgroup/box/cpu.max", "200000 100000\n");
        write(
            root,
            "sys/fs/cgroup/box/cpu.stat",
            "usage_usec 1500\nuser_usec 1000\n",
        );
        let mountinfo = "28 25 0:24 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let cgroup = Cgroup::from_tables("0::/box\n", mountinfo, root).unwrap();
        assert_eq!(cgroup, Cgroup::V2(root.join("sys/fs/cgroup/box")));
        assert_eq!(cgroup.cpu_quota(), Some(2.0));
        assert_eq!(cgroup.cpu_usage(), Some(Duration::from_micros(1500)));
        assert_eq!(
            cgroup.memory(),
            Some(MemoryUsage {
                limit: None,
                used: 1700,
                cache: 500
            })
        );
    }

    #[test]
    fn group_outside_the_mount_root_is_not_visible() {
        let fixture = v1_fixture();
        let mountinfo =
            "31 25 0:27 /sandboxes/a /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n";
        assert_eq!(
            Cgroup::from_tables("4:memory:/sandboxes/b\n", mountinfo, fixture.path()),
            None
        );
        let cgroup =
            Cgroup::from_tables("4:memory:/sandboxes/a\n", mountinfo, fixture.path()).unwrap();
        assert!(matches!(
            cgroup,
            Cgroup::V1 {
                memory: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
