//! PID 1 of a sandbox, from the fork in the setup stage to the exec of the daemon's `init`.
//!
//! PID 1 finishes the sandbox's root: `/proc` with the OCI runtime-spec masked and read-only
//! paths, a minimal `/dev`, a read-only `/sys` with the sandbox's own cgroups at
//! `/sys/fs/cgroup`, the daemon binary and the generated `/etc` files. Everything that comes from the host is opened as a detached mount before
//! `pivot_root` and attached after it. So no path inside the sandbox root is resolved while
//! the host's tree is still reachable, and a symlink planted in the image or the upper
//! directory can only point into the sandbox itself.

use std::convert::Infallible;
use std::ffi::{CStr, CString};
use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, symlink};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::unistd::{
    Gid, Uid, chdir, execve, pivot_root, setgroups, sethostname, setresgid, setresuid, setsid,
};

use crate::setup::{DetachedVolume, SetupError, StatusPipe, path_to_cstring};
use crate::spec::{DAEMON_PATH_IN_SANDBOX, ETC_FILES, ROOTFS_DIR, SandboxSpec};
use crate::sys;

/// The toolbox socket is descriptor 3 of `daytona-daemon init`.
const TOOLBOX_FD: i32 = 3;

/// `PATH` of the daemon; the toolbox server builds its own environment for workloads.
const DAEMON_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Paths hidden behind `/dev/null` (files) or an empty read-only tmpfs (directories): the
/// OCI runtime-spec defaults. Paths that this kernel does not have are skipped.
const MASKED_PROC_PATHS: [&str; 9] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
];

const MASKED_SYS_PATHS: [&str; 2] = ["/sys/firmware", "/sys/devices/virtual/powercap"];

/// Paths bind-mounted read-only over themselves: the OCI runtime-spec defaults.
const READ_ONLY_PROC_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Device nodes bind-mounted from the host's `/dev`. A user namespace cannot create device
/// nodes, and these are safe to share.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Symlinks in `/dev`.
const DEV_SYMLINKS: [(&str, &str); 5] = [
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// Runs PID 1 up to the exec of the daemon; reports a failure on the status pipe and exits.
pub(crate) fn run(
    spec: &SandboxSpec,
    listener: UnixListener,
    volumes: Vec<DetachedVolume>,
    status: &StatusPipe,
) -> ! {
    let Err(err) = start(spec, listener, volumes);
    status.error(&err);
    std::process::exit(1)
}

fn start(
    spec: &SandboxSpec,
    listener: UnixListener,
    volumes: Vec<DetachedVolume>,
) -> Result<Infallible, SetupError> {
    // a. A session of its own, so that signals to the runner's process group (Ctrl-C in a
    //    terminal, a service manager stopping the runner) do not reach the sandbox.
    setsid().map_err(SetupError::system("create a session"))?;

    // b. The UTS and network namespaces are empty so far and need no files.
    sethostname(&spec.hostname).map_err(|errno| SetupError::SetHostname {
        hostname: spec.hostname.clone(),
        source: errno.into(),
    })?;
    loopback_up().map_err(|source| SetupError::LoopbackUp { source })?;

    // c. Open everything that comes from the host now: to the filesystem this process is
    //    still host uid 0, and after step d the run directory (0700, host root) is out of
    //    reach. proc and sysfs are created here too, because the kernel allows them in a user
    //    namespace only while the host's instances are visible in the mount namespace.
    let host = HostMounts::open(spec)?;
    let rootfs = spec.run_dir.join(ROOTFS_DIR);
    enter_rootfs(&rootfs).map_err(|source| SetupError::PivotRoot {
        rootfs: rootfs.clone(),
        source,
    })?;

    // d. Become the sandbox's root, so that the files created below belong to it.
    become_root().map_err(|source| SetupError::SwitchToRoot { source })?;

    // e. Make the overlay the root and detach the host's tree. The pivot_root(".", ".") form
    //    stacks the old root on the new one, and the lazy unmount removes it.
    pivot_to_cwd().map_err(|source| SetupError::PivotRoot { rootfs, source })?;

    // f. Attach the host mounts inside the sandbox root.
    host.attach()?;
    for volume in &volumes {
        attach_volume(volume)?;
    }
    drop(volumes);

    // g. The daemon binary belongs to host root, which the sandbox does not map, so the
    //    kernel makes `init` non-dumpable at exec: its memory, environment and /proc entries
    //    stay closed to the sandbox's root (the test of Landlock checks /proc/1/environ).
    //    Until the exec this process sets it itself.
    sys::prctl(libc::PR_SET_DUMPABLE, 0).map_err(|source| SetupError::Exec {
        path: DAEMON_PATH_IN_SANDBOX.into(),
        source,
    })?;
    exec_init(spec, listener)
}

/// A mount that is not attached anywhere yet, with its source for error messages.
struct Detached {
    source: PathBuf,
    fd: OwnedFd,
}

impl Detached {
    /// Creates a new instance of `fs_type` with the given mount attributes.
    fn new_fs(fs_type: &'static str, name: &CStr, attrs: u64) -> Result<Self, SetupError> {
        let fd = sys::fs_mount(name, attrs)
            .map_err(|source| SetupError::NewFilesystem { fs_type, source })?;
        Ok(Self {
            source: PathBuf::from(fs_type),
            fd,
        })
    }

    /// Creates a bind mount of `path` with the given mount attributes.
    fn clone_of(path: &Path, attrs: u64) -> Result<Self, SetupError> {
        let clone = || -> io::Result<OwnedFd> {
            let tree = sys::open_tree(
                libc::AT_FDCWD,
                &path_to_cstring(path)?,
                libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
            )?;
            let attr = libc::mount_attr {
                attr_set: attrs,
                attr_clr: 0,
                propagation: 0,
                userns_fd: 0,
            };
            sys::mount_setattr(tree.as_fd(), 0, &attr)?;
            Ok(tree)
        };
        let fd = clone().map_err(|source| SetupError::CloneMount {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            source: path.to_path_buf(),
            fd,
        })
    }

    /// Attaches the mount at `target`. A final symlink in `target` is followed only with
    /// `MOVE_MOUNT_T_SYMLINKS` in `flags`.
    fn attach(&self, target: &Path, flags: libc::c_uint) -> Result<(), SetupError> {
        let attach = || sys::move_mount(self.fd.as_fd(), &path_to_cstring(target)?, flags);
        attach().map_err(|source| SetupError::Attach {
            source_path: self.source.clone(),
            target: target.to_path_buf(),
            source,
        })
    }
}

/// Mounts from the host, opened before `pivot_root` and attached after it.
struct HostMounts {
    proc: Detached,
    sysfs: Detached,
    /// `None` when the sandbox has no cgroup under `/sys/fs/cgroup`.
    cgroups: Option<CgroupView>,
    devices: Vec<(&'static str, Detached)>,
    daemon: Detached,
    etc_files: Vec<(&'static str, Detached)>,
}

impl HostMounts {
    fn open(spec: &SandboxSpec) -> Result<Self, SetupError> {
        let no_exec = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
        let proc = Detached::new_fs("proc", c"proc", no_exec)?;
        let sysfs = Detached::new_fs("sysfs", c"sysfs", no_exec | libc::MOUNT_ATTR_RDONLY)?;
        let cgroups = CgroupView::open(&spec.cgroup_dirs)?;

        let mut devices = Vec::new();
        for name in DEVICES {
            let path = Path::new("/dev").join(name);
            let attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC;
            devices.push((name, Detached::clone_of(&path, attrs)?));
        }

        let daemon = Detached::clone_of(
            &spec.daemon_binary,
            libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        )?;

        let mut etc_files = Vec::new();
        for name in ETC_FILES {
            let path = spec.run_dir.join(name);
            etc_files.push((
                name,
                Detached::clone_of(&path, no_exec | libc::MOUNT_ATTR_RDONLY)?,
            ));
        }

        Ok(Self {
            proc,
            sysfs,
            cgroups,
            devices,
            daemon,
            etc_files,
        })
    }

    /// Attaches everything in the sandbox root; runs after `pivot_root`.
    fn attach(self) -> Result<(), SetupError> {
        attach_dir(&self.proc, "/proc")?;
        // /dev comes before the /proc masks, which bind /dev/null.
        self.attach_dev()?;
        for path in MASKED_PROC_PATHS {
            mask(path)?;
        }
        for path in READ_ONLY_PROC_PATHS {
            bind_read_only(path)?;
        }

        attach_dir(&self.sysfs, "/sys")?;
        for path in MASKED_SYS_PATHS {
            mask(path)?;
        }
        if let Some(cgroups) = &self.cgroups {
            cgroups.attach()?;
        }

        attach_daemon(&self.daemon)?;
        for (name, mount) in &self.etc_files {
            attach_etc_file(mount, &Path::new("/etc").join(name))?;
        }
        Ok(())
    }

    /// Mounts a tmpfs on `/dev` with the host's safe device nodes, a private devpts instance, a tmpfs
    /// `/dev/shm` and the usual symlinks.
    fn attach_dev(&self) -> Result<(), SetupError> {
        ensure_dir("/dev")?;
        mount_fs(
            "tmpfs",
            "/dev",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_STRICTATIME,
            "mode=755,size=65536k",
        )?;
        for (name, device) in &self.devices {
            let target = Path::new("/dev").join(name);
            create_file(&target, 0o666)?;
            device.attach(&target, 0)?;
        }

        ensure_dir("/dev/pts")?;
        mount_fs(
            "devpts",
            "/dev/pts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        )?;
        ensure_dir("/dev/shm")?;
        mount_fs(
            "tmpfs",
            "/dev/shm",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            "mode=1777,size=65536k",
        )?;

        for (name, target) in DEV_SYMLINKS {
            let link = Path::new("/dev").join(name);
            symlink(target, &link).map_err(prepare_error(&link))?;
        }
        Ok(())
    }
}

/// The mount point of the sandbox's cgroups, the same as on the host.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The v1 controllers whose hierarchies appear in the view: the ones with the sandbox's
/// limits. The cpuacct and freezer hierarchies contain none and are left out, because each
/// hierarchy adds to the start. On the development machine (kernel 6.18, 2 cores) the view
/// took 130 us with all five hierarchies and 100 us with these three.
const LIMIT_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// The sandbox's own cgroups, bind-mounted read-only at `/sys/fs/cgroup`, so that programs
/// inside can read their limits (`memory.max` or `memory.limit_in_bytes`, `pids.max`). The
/// cgroup namespace, rooted at these groups, makes `/proc/self/cgroup` and the mount roots
/// in `/proc/self/mountinfo` agree with the view, which is how language runtimes such as the
/// JVM find their limits.
///
/// Binding the sandbox's groups, rather than mounting the hierarchies anew in the cgroup
/// namespace, needs no knowledge of which controllers share a v1 hierarchy. Nothing above
/// the sandbox's groups is visible.
enum CgroupView {
    /// cgroup v2: the sandbox's one group is the whole view.
    Unified(Detached),
    /// cgroup v1: each hierarchy's group under the hierarchy's name on the host, such as
    /// `memory`, in a read-only tmpfs.
    Hierarchies(Vec<(String, Detached)>),
}

impl CgroupView {
    /// Opens the bind mounts of the sandbox's groups; runs before `pivot_root`.
    fn open(dirs: &[PathBuf]) -> Result<Option<Self>, SetupError> {
        let attrs = libc::MOUNT_ATTR_RDONLY
            | libc::MOUNT_ATTR_NOSUID
            | libc::MOUNT_ATTR_NODEV
            | libc::MOUNT_ATTR_NOEXEC;
        if let [dir] = dirs
            && is_cgroup2(dir)
        {
            return Ok(Some(Self::Unified(Detached::clone_of(dir, attrs)?)));
        }

        let mut hierarchies = Vec::new();
        for dir in dirs {
            // A v1 group of the runner lies in `/sys/fs/cgroup/<hierarchy>`; one elsewhere has
            // no name to appear under and is left out.
            let Some(name) = hierarchy_name(dir) else {
                continue;
            };
            if name
                .split(',')
                .any(|controller| LIMIT_CONTROLLERS.contains(&controller))
            {
                hierarchies.push((name, Detached::clone_of(dir, attrs)?));
            }
        }
        Ok((!hierarchies.is_empty()).then_some(Self::Hierarchies(hierarchies)))
    }

    /// Attaches the view; runs after `/sys` is attached.
    fn attach(&self) -> Result<(), SetupError> {
        let hierarchies = match self {
            Self::Unified(group) => return group.attach(Path::new(CGROUP_ROOT), 0),
            Self::Hierarchies(hierarchies) => hierarchies,
        };
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount_fs("tmpfs", CGROUP_ROOT, flags, "mode=755,size=64k")?;
        for (name, group) in hierarchies {
            let target = Path::new(CGROUP_ROOT).join(name);
            DirBuilder::new()
                .mode(0o755)
                .create(&target)
                .map_err(prepare_error(&target))?;
            group.attach(&target, 0)?;
        }
        mount(
            None::<&str>,
            CGROUP_ROOT,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | flags,
            None::<&str>,
        )
        .map_err(|errno| SetupError::Mount {
            fs_type: "tmpfs",
            target: CGROUP_ROOT.into(),
            source: errno.into(),
        })
    }
}

fn is_cgroup2(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// Returns `<hierarchy>` of `/sys/fs/cgroup/<hierarchy>/...`.
fn hierarchy_name(dir: &Path) -> Option<String> {
    let relative = dir.strip_prefix(CGROUP_ROOT).ok()?;
    match relative.components().next()? {
        std::path::Component::Normal(name) => name.to_str().map(String::from),
        _ => None,
    }
}

/// Attaches a detached mount at a directory, which must not be a symlink.
fn attach_dir(mount: &Detached, target: &str) -> Result<(), SetupError> {
    ensure_dir(target)?;
    mount.attach(Path::new(target), 0)
}

/// Binds the daemon over `/usr/local/bin/daytona-daemon`, creating an empty placeholder (and
/// its parent directories) in the sandbox's upper directory if the image has none.
fn attach_daemon(daemon: &Detached) -> Result<(), SetupError> {
    let target = Path::new(DAEMON_PATH_IN_SANDBOX);
    let parent = target.parent().unwrap_or(Path::new("/"));
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(parent)
        .map_err(prepare_error(parent))?;
    match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_file() => {}
        // The path is reserved for the daemon; a symlink would redirect the mount.
        Ok(meta) if meta.is_symlink() => {
            fs::remove_file(target).map_err(prepare_error(target))?;
            create_file(target, 0o755)?;
        }
        Ok(_) => {
            return Err(prepare_error(target)(io::Error::from_raw_os_error(
                libc::EISDIR,
            )));
        }
        Err(_) => create_file(target, 0o755)?,
    }
    daemon.attach(target, 0)
}

/// Binds a generated file over a path in `/etc`, creating the file if the image lacks it. A
/// symlink is followed: it resolves inside the sandbox root.
fn attach_etc_file(file: &Detached, target: &Path) -> Result<(), SetupError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create("/etc")
        .map_err(prepare_error(Path::new("/etc")))?;
    if !target.exists() {
        create_file(target, 0o644)?;
    }
    file.attach(target, libc::MOVE_MOUNT_T_SYMLINKS)
}

/// Attaches a volume at its mount path, creating the missing directories as the sandbox's
/// root. Symlinks on the way resolve inside the sandbox root; the mount point itself must be
/// a directory.
fn attach_volume(volume: &DetachedVolume) -> Result<(), SetupError> {
    let target = &volume.mount.target;
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(target)
        .map_err(prepare_error(target))?;
    match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(prepare_error(target)(io::Error::from_raw_os_error(
                libc::ENOTDIR,
            )));
        }
        Err(err) => return Err(prepare_error(target)(err)),
    }
    let attach = || sys::move_mount(volume.tree.as_fd(), &path_to_cstring(target)?, 0);
    attach().map_err(|source| SetupError::Attach {
        source_path: volume.mount.source.clone(),
        target: target.clone(),
        source,
    })
}

/// Hides a path: `/dev/null` over a file, an empty read-only tmpfs over a directory.
fn mask(path: &str) -> Result<(), SetupError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(prepare_error(Path::new(path))(err)),
    };
    if meta.is_dir() {
        mount_fs(
            "tmpfs",
            path,
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            "mode=555,size=0",
        )
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|errno| SetupError::Attach {
            source_path: "/dev/null".into(),
            target: path.into(),
            source: errno.into(),
        })
    }
}

/// Bind-mounts a path read-only over itself.
fn bind_read_only(path: &str) -> Result<(), SetupError> {
    if let Err(err) = fs::symlink_metadata(path) {
        if err.kind() == io::ErrorKind::NotFound {
            return Ok(());
        }
        return Err(prepare_error(Path::new(path))(err));
    }
    let attrs = libc::MOUNT_ATTR_RDONLY
        | libc::MOUNT_ATTR_NOSUID
        | libc::MOUNT_ATTR_NODEV
        | libc::MOUNT_ATTR_NOEXEC;
    Detached::clone_of(Path::new(path), attrs)?.attach(Path::new(path), 0)
}

fn mount_fs(
    fs_type: &'static str,
    target: &str,
    flags: MsFlags,
    options: &str,
) -> Result<(), SetupError> {
    mount(Some(fs_type), target, Some(fs_type), flags, Some(options)).map_err(|errno| {
        SetupError::Mount {
            fs_type,
            target: target.into(),
            source: errno.into(),
        }
    })
}

/// Creates a directory if it is missing; an existing path must be a directory, not a
/// symlink.
fn ensure_dir(path: &str) -> Result<(), SetupError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(prepare_error(Path::new(path))(
            io::Error::from_raw_os_error(libc::ENOTDIR),
        )),
        Err(err) if err.kind() == io::ErrorKind::NotFound => DirBuilder::new()
            .mode(0o755)
            .create(path)
            .map_err(prepare_error(Path::new(path))),
        Err(err) => Err(prepare_error(Path::new(path))(err)),
    }
}

/// Creates an empty file to mount over.
fn create_file(path: &Path, mode: u32) -> Result<(), SetupError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .open(path)
        .map(drop)
        .map_err(prepare_error(path))
}

fn prepare_error(path: &Path) -> impl FnOnce(io::Error) -> SetupError + '_ {
    move |source| SetupError::PrepareTarget {
        path: path.to_path_buf(),
        source,
    }
}

/// Sets IFF_UP on `lo`, the only interface of a new network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket takes integer arguments; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned `fd` and nothing else owns it.
    let socket = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };

    // SAFETY: ifreq is plain old data, for which all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of `request`, which lives
    // across the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the name and flags of `request`.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Switches to uid and gid 0 of the sandbox's user namespace (host `host_base`), with no
/// supplementary groups. The capabilities in the namespace stay.
fn become_root() -> io::Result<()> {
    let root_gid = Gid::from_raw(0);
    let root_uid = Uid::from_raw(0);
    setresgid(root_gid, root_gid, root_gid)?;
    setgroups(&[])?;
    setresuid(root_uid, root_uid, root_uid)?;
    Ok(())
}

/// Bind-mounts the overlay onto itself and makes it the working directory.
///
/// The overlay was mounted in a mount namespace of the host's user namespace, so in the
/// sandbox's mount namespace it is locked to its mount point, and `pivot_root` refuses a
/// locked new root. A bind mount made here belongs to the sandbox's namespace and is not
/// locked.
fn enter_rootfs(rootfs: &Path) -> io::Result<()> {
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    chdir(rootfs)?;
    Ok(())
}

fn pivot_to_cwd() -> io::Result<()> {
    pivot_root(".", ".")?;
    umount2(".", MntFlags::MNT_DETACH)?;
    chdir("/")?;
    Ok(())
}

/// Executes `/usr/local/bin/daytona-daemon init` with the toolbox socket as fd 3 and the
/// daemon's configuration in a memory file whose descriptor the environment names. With a test
/// command in the spec, `init` runs that command in place of the toolbox server.
fn exec_init(spec: &SandboxSpec, listener: UnixListener) -> Result<Infallible, SetupError> {
    let exec_error = |source: io::Error| SetupError::Exec {
        path: DAEMON_PATH_IN_SANDBOX.into(),
        source,
    };
    place_toolbox_socket(&listener).map_err(exec_error)?;

    let config = serde_json::to_string(&spec.daemon)
        .map_err(|err| exec_error(io::Error::new(io::ErrorKind::InvalidData, err)))?;
    let mut args = vec!["daytona-daemon".to_string(), "init".to_string()];
    if let Some(command) = &spec.init_command {
        args.push("--".to_string());
        args.extend(command.iter().cloned());
    }
    // A memory file, not an environment variable: the kernel caps one variable at 128 KiB,
    // and a sandbox's environment may be larger.
    let config_fd = config_memfd(&config).map_err(exec_error)?;
    let env = [
        DAEMON_PATH_ENV.to_string(),
        format!("{}={config_fd}", daytona_wire::daemon::CONFIG_FD_ENV),
    ];

    let args = to_cstrings(&args).map_err(exec_error)?;
    let env = to_cstrings(&env).map_err(exec_error)?;
    let path = CString::new(DAEMON_PATH_IN_SANDBOX).expect("constant has no NUL byte");

    // init takes SIGTERM and SIGCHLD with sigtimedwait. The kernel drops a signal to PID 1
    // that has no handler and is not blocked. A SIGTERM from the runner right after `start`
    // returns would be lost if init blocked the signals only after exec, and the mask
    // survives exec.
    let mut init_signals = SigSet::empty();
    init_signals.add(Signal::SIGTERM);
    init_signals.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&init_signals), None)
        .map_err(|errno| exec_error(errno.into()))?;
    let errno = execve(&path, &args, &env).unwrap_err();
    Err(exec_error(errno.into()))
}

/// Writes the configuration to a memory file that survives exec, and returns its descriptor.
fn config_memfd(config: &str) -> io::Result<RawFd> {
    let fd = nix::sys::memfd::memfd_create(
        c"daytona-daemon-config",
        nix::sys::memfd::MFdFlags::empty(),
    )?;
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, config.as_bytes())?;
    // The descriptor must outlive this function for init to inherit it.
    Ok(std::os::fd::IntoRawFd::into_raw_fd(file))
}

/// Puts the listening socket on fd 3 without close-on-exec.
fn place_toolbox_socket(listener: &UnixListener) -> io::Result<()> {
    let fd = listener.as_raw_fd();
    // SAFETY: fcntl and dup2 on descriptors this process owns; fd 3 is free or is the socket
    // itself (the spec descriptor was closed after reading).
    let ret = unsafe {
        if fd == TOOLBOX_FD {
            libc::fcntl(fd, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, TOOLBOX_FD)
        }
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn to_cstrings(values: &[String]) -> io::Result<Vec<CString>> {
    values
        .iter()
        .map(|value| {
            CString::new(value.as_bytes()).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "argument contains a NUL byte")
            })
        })
        .collect()
}
