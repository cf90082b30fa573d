//! Sandbox cgroups, v1 and v2, created below the server's own cgroup.
//!
//! The server runs inside a cgroup that it was given (a systemd service, a container, a CI
//! job). Sandbox groups go below it, as `<own cgroup>/daytona-sandboxes/<sandbox id>` in every
//! hierarchy that the runtime uses, and the host's cgroup layout is never changed.
//!
//! cgroup v2 is used only where `/sys/fs/cgroup` itself is a cgroup2 mount whose
//! `cgroup.controllers` lists cpu, memory and pids. A cgroup2 mount elsewhere (such as
//! `/sys/fs/cgroup/unified` next to v1 controllers) carries no controllers and is ignored.
//! Otherwise the v1 hierarchies of cpu, cpuacct, memory, pids and freezer are used.
//!
//! All operations are plain file operations on cgroupfs and take well under a millisecond, so
//! they are synchronous. Tests point [`HostPaths`] at fixture trees.

use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Name of the group, below the server's own cgroup, that contains one group per sandbox.
pub const DEFAULT_PARENT: &str = "daytona-sandboxes";

/// Leaf that the server moves itself into on cgroup v2, so that its own cgroup has no
/// processes and may enable controllers for its children ("no internal processes" rule).
pub const SERVER_LEAF: &str = "daytona-server";

/// CFS period used for CPU limits, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// v1 controllers that a sandbox joins. The freezer is needed for snapshots and for killing
/// every process of a sandbox without racing forks; cpuacct provides the CPU usage.
const V1_CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "freezer"];

/// v2 controllers that must be available for v2 to be used.
const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// How long `remove` retries while the kernel finishes tearing down exited processes.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long `freeze` waits for every process to stop.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

/// Resource limits of one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Whole CPUs of CFS bandwidth (quota = cpus x period).
    pub cpus: u32,
    /// Memory limit in bytes; swap is not granted on top of it.
    pub memory_bytes: u64,
    /// Maximum number of processes and threads.
    pub pids: u64,
}

impl Default for Limits {
    /// 1 vCPU, 1 GiB of memory, 2048 processes.
    fn default() -> Self {
        Self {
            cpus: 1,
            memory_bytes: 1 << 30,
            pids: 2048,
        }
    }
}

/// Errors of cgroup operations.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("failed to read {path}")]
    Read { path: PathBuf, source: io::Error },

    #[error("failed to write {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },

    #[error("failed to create cgroup {path}")]
    Create { path: PathBuf, source: io::Error },

    #[error("failed to remove cgroup {path}")]
    Remove { path: PathBuf, source: io::Error },

    #[error("failed to kill process {pid} of cgroup {path}")]
    Kill {
        pid: i32,
        path: PathBuf,
        source: nix::Error,
    },

    #[error(
        "no usable cgroup hierarchy: no cgroup v1 mount has the {controller} controller and {cgroup_root} is not cgroup v2 with cpu, memory and pids"
    )]
    MissingController {
        controller: &'static str,
        cgroup_root: PathBuf,
    },

    #[error("{path} names no cgroup for the {hierarchy} hierarchy")]
    OwnCgroupUnknown { path: PathBuf, hierarchy: String },

    #[error(
        "own cgroup {path} lacks the {controller} controller; the parent cgroup must delegate cpu, memory and pids"
    )]
    ControllerNotDelegated {
        path: PathBuf,
        controller: &'static str,
    },

    #[error(
        "invalid sandbox id {id:?}: use letters, digits, '-', '_' and '.', at most 128 characters"
    )]
    InvalidSandboxId { id: String },

    #[error("timed out waiting for cgroup {path} to freeze")]
    FreezeTimeout { path: PathBuf },

    #[error("unexpected content {content:?} in {path}")]
    Parse { path: PathBuf, content: String },
}

/// The cgroup version that the runtime uses on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Paths of the kernel's cgroup information, replaced by fixture trees in tests.
#[derive(Debug, Clone)]
pub struct HostPaths {
    /// Usually `/sys/fs/cgroup`.
    pub cgroup_root: PathBuf,
    /// Usually `/proc/self/mountinfo`.
    pub mountinfo: PathBuf,
    /// Usually `/proc/self/cgroup`.
    pub self_cgroup: PathBuf,
}

impl HostPaths {
    /// Returns the paths of the live host, seen from this process.
    pub fn live() -> Self {
        Self {
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            self_cgroup: PathBuf::from("/proc/self/cgroup"),
        }
    }
}

/// One v1 hierarchy (a cgroupfs mount with one or more controllers).
#[derive(Debug, Clone, PartialEq, Eq)]
struct V1Hierarchy {
    /// The controllers of [`V1_CONTROLLERS`] that this hierarchy carries.
    controllers: Vec<&'static str>,
    /// `<mount point><own cgroup>/<parent name>`.
    parent: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    V1(Vec<V1Hierarchy>),
    V2 {
        /// The server's own cgroup directory.
        own: PathBuf,
        /// Whether `own` is the root of the hierarchy, which may have processes and enable
        /// controllers at the same time.
        own_is_root: bool,
        /// `<own>/<parent name>`.
        parent: PathBuf,
    },
}

/// Creates, limits and removes sandbox cgroups below the server's own cgroup.
#[derive(Debug)]
pub struct CgroupManager {
    layout: Layout,
    /// Set once the parent groups exist (and, on v2, the controllers are enabled).
    parent_ready: Mutex<bool>,
}

impl CgroupManager {
    /// Detects the cgroup layout of this host, with sandboxes below [`DEFAULT_PARENT`].
    pub fn detect() -> Result<Self, CgroupError> {
        Self::detect_in(&HostPaths::live(), DEFAULT_PARENT)
    }

    /// Detects the cgroup layout described by `host`, with sandboxes below `parent_name`.
    pub fn detect_in(host: &HostPaths, parent_name: &str) -> Result<Self, CgroupError> {
        validate_name(parent_name)?;
        let mounts = read_mountinfo(&host.mountinfo)?;
        let own = read_to_string(&host.self_cgroup)?;

        let layout = match detect_v2(host, &mounts, &own, parent_name)? {
            Some(layout) => layout,
            None => detect_v1(host, &mounts, &own, parent_name)?,
        };
        Ok(Self {
            layout,
            parent_ready: Mutex::new(false),
        })
    }

    pub fn version(&self) -> CgroupVersion {
        match self.layout {
            Layout::V1(_) => CgroupVersion::V1,
            Layout::V2 { .. } => CgroupVersion::V2,
        }
    }

    /// Directories that hold the sandbox groups, one per hierarchy.
    pub fn parent_dirs(&self) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V1(hierarchies) => hierarchies.iter().map(|h| h.parent.clone()).collect(),
            Layout::V2 { parent, .. } => vec![parent.clone()],
        }
    }

    /// Returns the cgroup of one sandbox, which may or may not exist yet. This only computes
    /// its paths.
    pub fn sandbox(&self, sandbox_id: &str) -> Result<SandboxCgroup, CgroupError> {
        validate_name(sandbox_id)?;
        let dirs = match &self.layout {
            Layout::V1(hierarchies) => hierarchies
                .iter()
                .map(|h| (h.controllers.clone(), h.parent.join(sandbox_id)))
                .collect(),
            Layout::V2 { parent, .. } => vec![(V2_CONTROLLERS.to_vec(), parent.join(sandbox_id))],
        };
        Ok(SandboxCgroup {
            version: self.version(),
            dirs,
        })
    }

    /// Creates the sandbox's cgroup in every hierarchy and sets its limits. An existing group
    /// is reused, so that a retried create succeeds.
    pub fn create(&self, sandbox_id: &str, limits: &Limits) -> Result<SandboxCgroup, CgroupError> {
        let cgroup = self.sandbox(sandbox_id)?;
        self.ensure_parents()?;
        let existed = cgroup.exists();
        for (_, dir) in &cgroup.dirs {
            create_dir(dir)?;
        }
        if let Err(err) = cgroup.set_limits(limits) {
            // A new group has no processes yet, so its removal cannot block. A reused group
            // may belong to a running sandbox and stays.
            if !existed {
                let _ = cgroup.remove();
            }
            return Err(err);
        }
        Ok(cgroup)
    }

    /// Removes the parent groups if no sandbox group is left in them. Groups of other
    /// sandboxes keep them in place, which is not an error.
    pub fn remove_parents_if_empty(&self) -> Result<(), CgroupError> {
        let mut ready = lock(&self.parent_ready);
        for parent in self.parent_dirs() {
            match fs::remove_dir(&parent) {
                Ok(()) => {}
                Err(err)
                    if err.kind() == ErrorKind::NotFound
                        || err.raw_os_error() == Some(libc::EBUSY)
                        || err.raw_os_error() == Some(libc::ENOTEMPTY) => {}
                Err(source) => {
                    return Err(CgroupError::Remove {
                        path: parent,
                        source,
                    });
                }
            }
        }
        *ready = false;
        Ok(())
    }

    /// Creates the parent groups once. On v2 this also moves this process into
    /// [`SERVER_LEAF`] and enables cpu, memory and pids for the children.
    fn ensure_parents(&self) -> Result<(), CgroupError> {
        let mut ready = lock(&self.parent_ready);
        if *ready {
            return Ok(());
        }
        match &self.layout {
            Layout::V1(hierarchies) => {
                for hierarchy in hierarchies {
                    create_dir(&hierarchy.parent)?;
                }
            }
            Layout::V2 {
                own,
                own_is_root,
                parent,
            } => prepare_v2_parent(own, *own_is_root, parent)?,
        }
        *ready = true;
        Ok(())
    }
}

/// The cgroup of one sandbox: one directory per hierarchy.
#[derive(Debug, Clone)]
pub struct SandboxCgroup {
    version: CgroupVersion,
    /// The controllers each directory carries, and the directory.
    dirs: Vec<(Vec<&'static str>, PathBuf)>,
}

impl SandboxCgroup {
    /// Returns the directories that the setup stage joins (`SandboxSpec::cgroup_dirs`).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, dir)| dir.clone()).collect()
    }

    /// Sets CPU, memory and process limits; used at create, on resize and when a pooled
    /// sandbox is claimed.
    pub fn set_limits(&self, limits: &Limits) -> Result<(), CgroupError> {
        match self.version {
            CgroupVersion::V1 => self.set_limits_v1(limits),
            CgroupVersion::V2 => self.set_limits_v2(limits),
        }
    }

    fn set_limits_v1(&self, limits: &Limits) -> Result<(), CgroupError> {
        let quota = u64::from(limits.cpus) * CPU_PERIOD_US;
        let cpu = self.dir_of("cpu");
        write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
        write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;

        set_memory_v1(self.dir_of("memory"), limits.memory_bytes)?;

        write(
            &self.dir_of("pids").join("pids.max"),
            &limits.pids.to_string(),
        )
    }

    fn set_limits_v2(&self, limits: &Limits) -> Result<(), CgroupError> {
        let dir = self.dir_of("cpu");
        let quota = u64::from(limits.cpus) * CPU_PERIOD_US;
        write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
        write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
        // memory.swap.max exists only where swap accounting is on.
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            write(&swap, "0")?;
        }
        write(&dir.join("pids.max"), &limits.pids.to_string())
    }

    /// Stops every process of the sandbox and waits until all are stopped.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        match self.version {
            CgroupVersion::V1 => {
                let state = self.dir_of("freezer").join("freezer.state");
                write(&state, "FROZEN")?;
                wait_for(&state, FREEZE_TIMEOUT, |content| content.trim() == "FROZEN")
            }
            CgroupVersion::V2 => {
                let dir = self.dir_of("cpu");
                write(&dir.join("cgroup.freeze"), "1")?;
                wait_for(&dir.join("cgroup.events"), FREEZE_TIMEOUT, |content| {
                    content.lines().any(|line| line.trim() == "frozen 1")
                })
            }
        }
    }

    /// Lets the processes of a frozen sandbox run again.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        match self.version {
            CgroupVersion::V1 => write(&self.dir_of("freezer").join("freezer.state"), "THAWED"),
            CgroupVersion::V2 => write(&self.dir_of("cpu").join("cgroup.freeze"), "0"),
        }
    }

    /// Sends SIGKILL to every process of the sandbox, including ones forked while this runs.
    ///
    /// On v2 this is one write to `cgroup.kill`. On v1, and on v2 kernels older than 5.14, the
    /// group is frozen first, so that no process can fork between reading `cgroup.procs` and
    /// the kill. The processes die when the group is thawed.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        if self.version == CgroupVersion::V2 {
            let kill_file = self.dir_of("cpu").join("cgroup.kill");
            if kill_file.exists() {
                return write(&kill_file, "1");
            }
        }
        let dir = match self.version {
            CgroupVersion::V1 => self.dir_of("freezer"),
            CgroupVersion::V2 => self.dir_of("cpu"),
        };
        self.freeze()?;
        let killed = kill_procs(dir);
        let thawed = self.thaw();
        killed.and(thawed)
    }

    /// Removes the sandbox's groups, retrying briefly while the kernel finishes tearing down
    /// exited processes. Groups that do not exist are skipped, so removal can be repeated.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for (_, dir) in &self.dirs {
            remove_dir(dir)?;
        }
        Ok(())
    }

    /// Returns whether any of the sandbox's groups still exists.
    pub fn exists(&self) -> bool {
        self.dirs.iter().any(|(_, dir)| dir.exists())
    }

    /// Current memory use in bytes, page cache included.
    pub fn memory_usage(&self) -> Result<u64, CgroupError> {
        let file = match self.version {
            CgroupVersion::V1 => self.dir_of("memory").join("memory.usage_in_bytes"),
            CgroupVersion::V2 => self.dir_of("memory").join("memory.current"),
        };
        parse_u64(&file, read_to_string(&file)?.trim())
    }

    /// CPU time used by the sandbox's processes since the group was created.
    pub fn cpu_usage(&self) -> Result<Duration, CgroupError> {
        match self.version {
            CgroupVersion::V1 => {
                let file = self.dir_of("cpuacct").join("cpuacct.usage");
                let nanos = parse_u64(&file, read_to_string(&file)?.trim())?;
                Ok(Duration::from_nanos(nanos))
            }
            CgroupVersion::V2 => {
                let file = self.dir_of("cpu").join("cpu.stat");
                let content = read_to_string(&file)?;
                let value = content
                    .lines()
                    .find_map(|line| line.strip_prefix("usage_usec "))
                    .ok_or_else(|| CgroupError::Parse {
                        path: file.clone(),
                        content: content.clone(),
                    })?;
                Ok(Duration::from_micros(parse_u64(&file, value.trim())?))
            }
        }
    }

    /// Process ids in the sandbox's groups (`cgroup.procs`, nested groups included).
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = Vec::new();
        collect_pids(self.dir_of("pids"), &mut pids)?;
        Ok(pids)
    }

    /// Returns the directory of the hierarchy that carries `controller`. Every layout has all
    /// controllers that this module uses, which `detect_in` checked.
    fn dir_of(&self, controller: &str) -> &Path {
        self.dirs
            .iter()
            .find(|(controllers, _)| controllers.contains(&controller))
            .map(|(_, dir)| dir.as_path())
            .expect("detect_in checked that every controller has a hierarchy")
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug)]
struct MountEntry {
    /// Root of the mount within its filesystem.
    root: String,
    mount_point: PathBuf,
    fs_type: String,
    super_options: Vec<String>,
}

fn read_mountinfo(path: &Path) -> Result<Vec<MountEntry>, CgroupError> {
    let content = read_to_string(path)?;
    Ok(content.lines().filter_map(parse_mountinfo_line).collect())
}

/// Parses `id parent major:minor root mount-point options [optional...] - fstype source
/// super-options`.
fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (before, after) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    let after: Vec<&str> = after.split(' ').collect();
    if fields.len() < 5 || after.len() < 3 {
        return None;
    }
    Some(MountEntry {
        root: unescape_mountinfo(fields[3]),
        mount_point: PathBuf::from(unescape_mountinfo(fields[4])),
        fs_type: after[0].to_string(),
        super_options: after[2].split(',').map(str::to_string).collect(),
    })
}

/// Decodes the octal escapes (`\040` for a space) that mountinfo uses in paths.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes.get(i + 1..i + 4);
        match escape {
            Some(digits)
                if bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)) =>
            {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Returns the v2 layout if `cgroup_root` is a cgroup2 mount with cpu, memory and pids.
fn detect_v2(
    host: &HostPaths,
    mounts: &[MountEntry],
    own: &str,
    parent_name: &str,
) -> Result<Option<Layout>, CgroupError> {
    let Some(mount) = mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == host.cgroup_root)
    else {
        return Ok(None);
    };
    if mount.fs_type != "cgroup2" {
        return Ok(None);
    }
    let controllers = read_to_string(&host.cgroup_root.join("cgroup.controllers"))?;
    let available: Vec<&str> = controllers.split_whitespace().collect();
    if !V2_CONTROLLERS.iter().all(|c| available.contains(c)) {
        return Ok(None);
    }

    let own_path = own
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(|| CgroupError::OwnCgroupUnknown {
            path: host.self_cgroup.clone(),
            hierarchy: "cgroup2".into(),
        })?;
    let mut own_dir = join_cgroup(&host.cgroup_root, &mount.root, own_path);
    // A restarted server that moved itself into its leaf before starts from there.
    if own_dir.file_name().is_some_and(|name| name == SERVER_LEAF) {
        own_dir.pop();
    }

    let delegated = read_to_string(&own_dir.join("cgroup.controllers"))?;
    let delegated: Vec<&str> = delegated.split_whitespace().collect();
    if let Some(missing) = V2_CONTROLLERS.iter().find(|c| !delegated.contains(c)) {
        return Err(CgroupError::ControllerNotDelegated {
            path: own_dir,
            controller: missing,
        });
    }
    Ok(Some(Layout::V2 {
        parent: own_dir.join(parent_name),
        own_is_root: own_dir == host.cgroup_root,
        own: own_dir,
    }))
}

/// Returns the v1 layout: one entry per hierarchy that carries a controller of
/// [`V1_CONTROLLERS`].
fn detect_v1(
    host: &HostPaths,
    mounts: &[MountEntry],
    own: &str,
    parent_name: &str,
) -> Result<Layout, CgroupError> {
    let mut hierarchies: Vec<V1Hierarchy> = Vec::new();
    for controller in V1_CONTROLLERS {
        let mount = mounts
            .iter()
            .find(|m| m.fs_type == "cgroup" && m.super_options.iter().any(|o| o == controller))
            .ok_or_else(|| CgroupError::MissingController {
                controller,
                cgroup_root: host.cgroup_root.clone(),
            })?;
        let own_path =
            own_cgroup_v1(own, controller).ok_or_else(|| CgroupError::OwnCgroupUnknown {
                path: host.self_cgroup.clone(),
                hierarchy: controller.to_string(),
            })?;
        let parent = join_cgroup(&mount.mount_point, &mount.root, own_path).join(parent_name);

        // Controllers mounted together (such as cpu,cpuacct) share one directory.
        match hierarchies.iter_mut().find(|h| h.parent == parent) {
            Some(hierarchy) => hierarchy.controllers.push(controller),
            None => hierarchies.push(V1Hierarchy {
                controllers: vec![controller],
                parent,
            }),
        }
    }
    Ok(Layout::V1(hierarchies))
}

/// Finds the path in a `/proc/self/cgroup` line `id:controller,controller:path`.
fn own_cgroup_v1<'a>(own: &'a str, controller: &str) -> Option<&'a str> {
    own.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path)
    })
}

/// Joins a cgroup path from `/proc/self/cgroup` to the mount point of its hierarchy. The
/// path is relative to the hierarchy's root, and the mount may show only a subtree of it.
fn join_cgroup(mount_point: &Path, mount_root: &str, cgroup_path: &str) -> PathBuf {
    let relative = cgroup_path
        .strip_prefix(mount_root)
        .unwrap_or(cgroup_path)
        .trim_start_matches('/');
    if relative.is_empty() {
        mount_point.to_path_buf()
    } else {
        mount_point.join(relative)
    }
}

/// Moves this process into `<own>/daytona-server` unless `own` is the root, then enables
/// cpu, memory and pids for the children of `<own>` and `<own>/<parent>`.
///
/// cgroup v2 lets a group enable controllers for its children only while no process lives
/// in the group itself (the root is exempt), so the server leaves its own cgroup first.
fn prepare_v2_parent(own: &Path, own_is_root: bool, parent: &Path) -> Result<(), CgroupError> {
    if !own_is_root && !read_to_string(&own.join("cgroup.procs"))?.trim().is_empty() {
        let leaf = own.join(SERVER_LEAF);
        create_dir(&leaf)?;
        write(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
    }
    let enable = V2_CONTROLLERS.map(|c| format!("+{c}")).join(" ");
    write(&own.join("cgroup.subtree_control"), &enable)?;
    create_dir(parent)?;
    write(&parent.join("cgroup.subtree_control"), &enable)
}

/// Sets the v1 memory limit, and the memory+swap limit to the same value where swap
/// accounting exists, so that the sandbox cannot use swap beyond its limit.
///
/// The kernel keeps memsw >= memory at all times: a raise writes memsw first, a cut writes
/// memory first. The current order is unknown without reading both, so the raise order is
/// tried after the cut order fails with EINVAL.
fn set_memory_v1(dir: &Path, bytes: u64) -> Result<(), CgroupError> {
    let memory = dir.join("memory.limit_in_bytes");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    let value = bytes.to_string();
    if !memsw.exists() {
        return write(&memory, &value);
    }
    match write(&memory, &value) {
        Ok(()) => write(&memsw, &value),
        Err(CgroupError::Write { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
            write(&memsw, &value)?;
            write(&memory, &value)
        }
        Err(err) => Err(err),
    }
}

/// Sends SIGKILL to every process listed in `dir` and its child groups.
fn kill_procs(dir: &Path) -> Result<(), CgroupError> {
    let mut pids = Vec::new();
    collect_pids(dir, &mut pids)?;
    for pid in pids {
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) | Err(nix::Error::ESRCH) => {}
            Err(source) => {
                return Err(CgroupError::Kill {
                    pid,
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
    Ok(())
}

fn collect_pids(dir: &Path, pids: &mut Vec<i32>) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.procs");
    let content = match fs::read_to_string(&file) {
        Ok(content) => content,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(CgroupError::Read { path: file, source }),
    };
    for line in content.lines().filter(|l| !l.trim().is_empty()) {
        let pid = line.trim().parse().map_err(|_| CgroupError::Parse {
            path: file.clone(),
            content: line.to_string(),
        })?;
        pids.push(pid);
    }
    for child in child_dirs(dir)? {
        collect_pids(&child, pids)?;
    }
    Ok(())
}

fn child_dirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let entries = fs::read_dir(dir).map_err(|source| CgroupError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut dirs = Vec::new();
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

/// Removes `dir` and any child groups, deepest first.
fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    if !dir.exists() {
        return Ok(());
    }
    for child in child_dirs(dir)? {
        remove_dir(&child)?;
    }
    let deadline = Instant::now() + REMOVE_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
            // EBUSY: the last processes are still exiting.
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// Polls `file` until `done` accepts its content.
fn wait_for(
    file: &Path,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> Result<(), CgroupError> {
    let deadline = Instant::now() + timeout;
    loop {
        if done(&read_to_string(file)?) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CgroupError::FreezeTimeout {
                path: file.parent().unwrap_or(file).to_path_buf(),
            });
        }
        thread::sleep(Duration::from_millis(1));
    }
}

fn create_dir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Create {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

fn read_to_string(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_u64(path: &Path, value: &str) -> Result<u64, CgroupError> {
    value.parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        content: value.to_string(),
    })
}

/// Accepts names that are safe as one path component of a cgroup directory.
fn validate_name(name: &str) -> Result<(), CgroupError> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(CgroupError::InvalidSandboxId { id: name.into() })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_line_parsed() {
        let line =
            "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:5 - cgroup cgroup rw,memory";
        let entry = parse_mountinfo_line(line).unwrap();
        assert_eq!(entry.mount_point, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(entry.fs_type, "cgroup");
        assert_eq!(entry.root, "/");
        assert_eq!(entry.super_options, vec!["rw", "memory"]);
    }

    #[test]
    fn mountinfo_escapes_decoded() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape_mountinfo(r"/plain\x"), r"/plain\x");
    }

    #[test]
    fn own_cgroup_found_by_controller() {
        let own = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/x\n0::/\n";
        assert_eq!(own_cgroup_v1(own, "memory"), Some("/process_api/abc"));
        assert_eq!(own_cgroup_v1(own, "cpuacct"), Some("/x"));
        assert_eq!(own_cgroup_v1(own, "pids"), None);
    }

    #[test]
    fn cgroup_path_joined_below_mount_root() {
        let mount = Path::new("/sys/fs/cgroup/memory");
        assert_eq!(join_cgroup(mount, "/", "/"), mount);
        assert_eq!(join_cgroup(mount, "/", "/a/b"), mount.join("a/b"));
        assert_eq!(join_cgroup(mount, "/a", "/a/b"), mount.join("b"));
    }

    #[test]
    fn sandbox_ids_validated() {
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["abc", "0f3e-aa_b.c", &"x".repeat(128)] {
            assert!(validate_name(good).is_ok(), "{good:?} rejected");
        }
    }
}
