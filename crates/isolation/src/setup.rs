//! The setup stage: `daytona-daemon setup`.
//!
//! The runner executes this stage as host root with the [`SandboxSpec`] as JSON on fd 3 and
//! the write end of a status pipe on fd 4. The stage builds the sandbox's namespaces and root
//! filesystem, forks the sandbox's PID 1, reports `pid <pid> <start time>` on the status pipe
//! and exits, so that PID 1 is reparented away from the runner and outlives it. PID 1 (see
//! the `pid1` module) finishes the root filesystem and executes the daemon's `init` mode.
//! Anything that fails before that is reported as `error <message>` on the status pipe. The
//! status pipe is close-on-exec, so the runner reads end-of-file once `init` runs.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::{ForkResult, Pid, chdir, fork};

use crate::disk;
use crate::pid1;
use crate::spec::{
    DISK_DIR, IdMap, LOWER_DIR, ROOTFS_DIR, SandboxSpec, TOOLBOX_SOCKET, VOLUME_UID_BASE,
    VolumeMount,
};
use crate::sys;

/// The spec arrives on this descriptor.
const SPEC_FD: RawFd = 3;

/// The status pipe's write end arrives on this descriptor.
const STATUS_FD: RawFd = 4;

/// Errors of the setup stage and of PID 1 before it executes the daemon. Each is sent to the
/// runner as one `error` line with its causes.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("failed to read the sandbox spec from fd 3")]
    ReadSpec { source: io::Error },

    #[error("invalid sandbox spec")]
    ParseSpec { source: serde_json::Error },

    #[error("failed to join cgroup {path}")]
    JoinCgroup { path: PathBuf, source: io::Error },

    #[error("failed to bind the toolbox socket in {run_dir}")]
    BindSocket { run_dir: PathBuf, source: io::Error },

    #[error("failed to create the user namespace")]
    CreateUserNamespace { source: io::Error },

    #[error("failed to write {path}")]
    WriteIdMap { path: PathBuf, source: io::Error },

    /// A system call on this process itself: namespaces, session, signal mask.
    #[error("failed to {operation}")]
    System {
        operation: &'static str,
        source: io::Error,
    },

    #[error("failed to ID-map layer {layer} onto {target}")]
    IdmapLayer {
        layer: PathBuf,
        target: PathBuf,
        source: io::Error,
    },

    #[error("failed to mount the disk image {image} on {target}")]
    MountDisk {
        image: PathBuf,
        target: PathBuf,
        source: io::Error,
    },

    #[error("failed to prepare {path} in the sandbox's disk")]
    PrepareDisk { path: PathBuf, source: io::Error },

    #[error("failed to ID-map volume {volume} for {target}")]
    IdmapVolume {
        volume: PathBuf,
        target: PathBuf,
        source: io::Error,
    },

    #[error("failed to mount {fs_type} on {target}")]
    Mount {
        fs_type: &'static str,
        target: PathBuf,
        source: io::Error,
    },

    #[error("failed to create a new {fs_type} instance")]
    NewFilesystem {
        fs_type: &'static str,
        source: io::Error,
    },

    #[error("failed to clone the mount at {path}")]
    CloneMount { path: PathBuf, source: io::Error },

    #[error("failed to mount {source_path} on {target}")]
    Attach {
        source_path: PathBuf,
        target: PathBuf,
        source: io::Error,
    },

    #[error("failed to prepare {path} in the sandbox root")]
    PrepareTarget { path: PathBuf, source: io::Error },

    #[error("failed to fork the sandbox's PID 1")]
    Fork { source: io::Error },

    #[error("failed to become root of the sandbox's user namespace")]
    SwitchToRoot { source: io::Error },

    #[error("failed to set the hostname {hostname:?}")]
    SetHostname { hostname: String, source: io::Error },

    #[error("failed to bring up the loopback interface")]
    LoopbackUp { source: io::Error },

    #[error("failed to pivot into the sandbox root {rootfs}")]
    PivotRoot { rootfs: PathBuf, source: io::Error },

    #[error("failed to execute {path}")]
    Exec { path: PathBuf, source: io::Error },

    #[error("failed to report to the runner")]
    Report { source: io::Error },
}

impl SetupError {
    /// Maps an errno to [`SetupError::System`] for `operation`.
    pub(crate) fn system(operation: &'static str) -> impl FnOnce(nix::Error) -> Self {
        move |errno| SetupError::System {
            operation,
            source: errno.into(),
        }
    }
}

/// Entry point of `daytona-daemon setup`. Never returns.
pub fn main() -> ! {
    let status = StatusPipe::from_inherited();
    match run(&status) {
        Ok(()) => std::process::exit(0),
        Err(err) => {
            status.error(&err);
            std::process::exit(1);
        }
    }
}

/// Runs the setup stage in order. Returns in the parent once PID 1 runs. PID 1 never
/// returns.
fn run(status: &StatusPipe) -> Result<(), SetupError> {
    // 0. Nothing but the spec and the status pipe may leak from the runner into the sandbox,
    //    and no signal mask either: exec keeps it, and the daemon expects an empty one.
    close_inherited_fds();
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .map_err(SetupError::system("reset the signal mask"))?;

    // 1. Join the cgroups first, so that everything created below is charged to the sandbox
    //    and the cgroup namespace of step 5 is rooted at the sandbox's group.
    let spec = read_spec()?;
    join_cgroups(&spec.cgroup_dirs)?;

    // 2. The toolbox socket lives on the host filesystem, where nothing inside the sandbox
    //    can open it. Connections queue in the backlog until the daemon accepts them, so the
    //    runner needs no readiness check. This also makes the run directory the working
    //    directory, which step 4 relies on.
    let listener = bind_toolbox_socket(&spec.run_dir)?;

    // 3. The user namespace comes before the mounts, because ID-mapping a layer needs it.
    //    Its helper exits meanwhile and is reaped at the end.
    let (userns, mut helper) = create_user_namespace(spec.id_map)?;
    helper.release();

    // 4. A private mount namespace, still owned by the host's user namespace, so that host
    //    root can mount the overlay over ID-mapped layers. None of it reaches the host.
    enter_private_mount_namespace()?;
    if let Some(image) = &spec.disk_image {
        mount_disk(&spec, image)?;
    }
    mount_root_overlay(&spec, &userns)?;
    // ID-mapping needs host root, so the volumes are prepared here; PID 1 attaches them
    // inside the sandbox root, where it creates their mount points as the sandbox's root.
    let volumes = open_volumes(&spec)?;

    // 5. Enter the user namespace, then create every other namespace from inside it, so that
    //    the sandbox's root owns them.
    setns(&userns, CloneFlags::CLONE_NEWUSER)
        .map_err(SetupError::system("enter the user namespace"))?;
    drop(userns);
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWCGROUP,
    )
    .map_err(SetupError::system("create the sandbox namespaces"))?;

    // 6. The child is PID 1 of the new PID namespace. This process exits right after
    //    reporting it, so PID 1 is reparented away from the runner. PID 1 shares this
    //    process's mount namespace, so its pivot_root moves this process's root too, onto
    //    the sandbox's /proc: the host's procfs is opened before the fork.
    let host_proc = File::open("/proc").map_err(|source| SetupError::Report { source })?;
    // SAFETY: this process is single-threaded, so the child may run arbitrary code.
    match unsafe { fork() }.map_err(|errno| SetupError::Fork {
        source: errno.into(),
    })? {
        ForkResult::Child => pid1::run(&spec, listener, volumes, status),
        ForkResult::Parent { child } => {
            let reported = status.pid(&host_proc, child);
            helper.reap();
            reported
        }
    }
}

/// Closes every descriptor above the status pipe; the runner's spawn sets up only 0 to 4.
fn close_inherited_fds() {
    // SAFETY: no Rust object in this process owns a descriptor above STATUS_FD yet.
    unsafe { libc::close_range(STATUS_FD as libc::c_uint + 1, libc::c_uint::MAX, 0) };
}

fn read_spec() -> Result<SandboxSpec, SetupError> {
    // SAFETY: the runner passes the spec on SPEC_FD, and nothing else in this process uses it.
    let mut file = unsafe { File::from_raw_fd(SPEC_FD) };
    let mut json = Vec::new();
    file.read_to_end(&mut json)
        .map_err(|source| SetupError::ReadSpec { source })?;
    serde_json::from_slice(&json).map_err(|source| SetupError::ParseSpec { source })
}

/// Moves this process into the sandbox's cgroups.
///
/// Moving a whole process takes the kernel's global threadgroup lock, whose write side waits
/// for an RCU grace period (about 15 ms on the development machine). Moving only the calling
/// thread by writing 0 to a v1 `tasks` file skips that lock (Linux 6.1 and later), and this
/// process has one thread. cgroup v2 offers no such file for domain groups, so there the
/// process is moved through `cgroup.procs`.
fn join_cgroups(dirs: &[PathBuf]) -> Result<(), SetupError> {
    let pid = std::process::id().to_string();
    for dir in dirs {
        let tasks = dir.join("tasks");
        let joined = if tasks.exists() {
            fs::write(&tasks, "0")
        } else {
            fs::write(dir.join("cgroup.procs"), &pid)
        };
        joined.map_err(|source| SetupError::JoinCgroup {
            path: dir.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Binds `<run_dir>/toolbox.sock` with mode 0600. The relative name keeps long run
/// directories within the 108-byte limit of a socket path.
fn bind_toolbox_socket(run_dir: &Path) -> Result<UnixListener, SetupError> {
    let bind = || -> io::Result<UnixListener> {
        chdir(run_dir)?;
        match fs::remove_file(TOOLBOX_SOCKET) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        // SAFETY: umask only changes this process's file creation mask.
        let previous = unsafe { libc::umask(0o177) };
        let listener = UnixListener::bind(TOOLBOX_SOCKET);
        // SAFETY: as above; the sandbox inherits the usual 022.
        unsafe { libc::umask(previous) };
        listener
    };
    bind().map_err(|source| SetupError::BindSocket {
        run_dir: run_dir.to_path_buf(),
        source,
    })
}

/// Creates a user namespace that maps `0..size` to `host_base..host_base + size` and returns
/// a descriptor for it, and the helper process to reap later.
///
/// A process cannot write the ID maps of its own new user namespace with more than one
/// entry. So a helper child creates the namespace and waits on a pipe, while this process,
/// still host root, writes the maps and opens the namespace. The helper shares this process's
/// memory (CLONE_VM) and runs on a stack of its own, which spares copying the page tables.
fn create_user_namespace(id_map: IdMap) -> Result<(OwnedFd, UsernsHelper), SetupError> {
    create_mapped_user_namespace(0, id_map)
}

/// Creates a user namespace that maps `ns_base..ns_base + size` to
/// `host_base..host_base + size`; see [`create_user_namespace`].
fn create_mapped_user_namespace(
    ns_base: u32,
    id_map: IdMap,
) -> Result<(OwnedFd, UsernsHelper), SetupError> {
    let create_error = |source| SetupError::CreateUserNamespace { source };
    let (wait_read, wait_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|errno| create_error(errno.into()))?;

    // The child gets a copy of the descriptor table, so it must close its own copy of the
    // write end to see end-of-file. Both numbers travel in the argument.
    let fds = (wait_read.as_raw_fd() as usize) << 32 | wait_write.as_raw_fd() as usize;
    let mut stack = vec![0u8; HELPER_STACK_SIZE];
    // SAFETY: the stack grows down from its end, which is 16-byte aligned as required on
    // x86_64. The child runs `userns_helper`, which only makes raw system calls, and this
    // process keeps the stack and the pipe's read end alive until it has reaped the child.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(HELPER_STACK_SIZE);
        let top = top.sub(top as usize % 16);
        libc::clone(
            userns_helper,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_NEWUSER | libc::SIGCHLD,
            fds as *mut libc::c_void,
        )
    };
    if pid < 0 {
        return Err(create_error(io::Error::last_os_error()));
    }
    let helper = UsernsHelper {
        pid: Pid::from_raw(pid),
        _stack: stack,
        _wait_read: wait_read,
        wait_write: Some(wait_write),
    };

    write_id_maps(helper.pid, ns_base, id_map)?;
    let userns = File::open(format!("/proc/{}/ns/user", helper.pid))
        .map(OwnedFd::from)
        .map_err(create_error)?;
    Ok((userns, helper))
}

const HELPER_STACK_SIZE: usize = 64 * 1024;

/// Body of the user namespace helper: closes its copy of the pipe's write end, then blocks
/// until the parent closes the original.
extern "C" fn userns_helper(fds: *mut libc::c_void) -> libc::c_int {
    let fds = fds as usize;
    let (read_fd, write_fd) = (
        (fds >> 32) as libc::c_long,
        (fds & 0xffff_ffff) as libc::c_long,
    );
    let mut byte = 0u8;
    // SAFETY: raw system calls on this child's own descriptors and a local byte. Raw calls
    // leave errno, which this child shares with its parent, untouched.
    unsafe {
        libc::syscall(libc::SYS_close, write_fd);
        libc::syscall(libc::SYS_read, read_fd, (&raw mut byte), 1);
    }
    0
}

/// The child that keeps the new user namespace alive until this process has a descriptor.
struct UsernsHelper {
    pid: Pid,
    _stack: Vec<u8>,
    _wait_read: OwnedFd,
    wait_write: Option<OwnedFd>,
}

impl UsernsHelper {
    /// Lets the helper exit: its pipe reaches end-of-file.
    fn release(&mut self) {
        self.wait_write = None;
    }

    /// Reaps the helper. Until then its stack stays allocated.
    fn reap(mut self) {
        self.release();
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

fn write_id_maps(helper: Pid, ns_base: u32, id_map: IdMap) -> Result<(), SetupError> {
    let line = format!("{ns_base} {} {}\n", id_map.host_base, id_map.size);
    for map in ["uid_map", "gid_map"] {
        let path = PathBuf::from(format!("/proc/{helper}/{map}"));
        fs::write(&path, &line).map_err(|source| SetupError::WriteIdMap { path, source })?;
    }
    Ok(())
}

/// Creates a mount namespace and stops propagation in both directions, so that no mount
/// made for the sandbox appears on the host.
fn enter_private_mount_namespace() -> Result<(), SetupError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(SetupError::system("create a mount namespace"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(SetupError::system("make the mount tree private"))
}

/// Mounts every layer ID-mapped and read-only at `lower/<n>` in the run directory (the
/// working directory), then the overlay of them and the upper directory at `rootfs`.
///
/// The ID map makes files that host uid 0 owns in a layer appear as owned by the sandbox's
/// root. Files that the sandbox writes land in the upper directory as host uids
/// host_base + n. The overlay is `nodev`, because image layers may contain device nodes.
fn mount_root_overlay(spec: &SandboxSpec, userns: &OwnedFd) -> Result<(), SetupError> {
    for (index, layer) in spec.layers.iter().enumerate() {
        let target = PathBuf::from(LOWER_DIR).join(index.to_string());
        idmap_layer(layer, &target, userns).map_err(|source| SetupError::IdmapLayer {
            layer: layer.clone(),
            target: spec.run_dir.join(&target),
            source,
        })?;
    }

    // Paths relative to the run directory (the working directory), as the lower layers are,
    // so that the sandbox's /proc/mounts shows no host path.
    let upper = relative_to_run_dir(&spec.run_dir, &spec.upper_dir);
    let work = relative_to_run_dir(&spec.run_dir, &spec.overlay_work_dir);
    let options = overlay_options(spec.layers.len(), &upper, &work);
    mount(
        Some("overlay"),
        ROOTFS_DIR,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|errno| SetupError::Mount {
        fs_type: "overlay",
        target: spec.run_dir.join(ROOTFS_DIR),
        source: errno.into(),
    })
}

/// Mounts the disk image at [`DISK_DIR`] in the run directory (the working directory) and
/// creates the upper and work directories in it for the sandbox's root. The filesystem's root
/// holds nothing the sandbox can change, so the paths cannot lead elsewhere.
fn mount_disk(spec: &SandboxSpec, image: &Path) -> Result<(), SetupError> {
    let target = spec.run_dir.join(DISK_DIR);
    disk::mount_image(image, Path::new(DISK_DIR)).map_err(|source| SetupError::MountDisk {
        image: image.to_path_buf(),
        target,
        source,
    })?;
    let root = spec.id_map.host_base;
    for (dir, mode) in [(&spec.upper_dir, 0o755), (&spec.overlay_work_dir, 0o700)] {
        let prepare = || -> io::Result<()> {
            match fs::DirBuilder::new().mode(mode).create(dir) {
                Err(err) if err.kind() != io::ErrorKind::AlreadyExists => return Err(err),
                _ => {}
            }
            std::os::unix::fs::chown(dir, Some(root), Some(root))
        };
        prepare().map_err(|source| SetupError::PrepareDisk {
            path: dir.clone(),
            source,
        })?;
    }
    Ok(())
}

/// A volume ID-mapped for the sandbox, not attached yet.
pub(crate) struct DetachedVolume {
    pub(crate) mount: VolumeMount,
    pub(crate) tree: OwnedFd,
}

/// Clones each volume's directory as a detached, ID-mapped mount without setuid programs
/// and devices. The mapping stores uid `k` of the sandbox as [`VOLUME_UID_BASE`] + `k`, so
/// every sandbox that mounts the volume sees the same owners, and none of them is a host
/// user.
fn open_volumes(spec: &SandboxSpec) -> Result<Vec<DetachedVolume>, SetupError> {
    if spec.volumes.is_empty() {
        return Ok(Vec::new());
    }
    let (userns, helper) = create_mapped_user_namespace(VOLUME_UID_BASE, spec.id_map)?;
    let volumes = open_volumes_with(spec, &userns);
    helper.reap();
    volumes
}

fn open_volumes_with(
    spec: &SandboxSpec,
    userns: &OwnedFd,
) -> Result<Vec<DetachedVolume>, SetupError> {
    spec.volumes
        .iter()
        .map(|volume| {
            let open = || -> io::Result<OwnedFd> {
                let target = volume.target.to_str().unwrap_or_default();
                if let Err(invalid) = crate::spec::check_mount_path(target) {
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, invalid));
                }
                let dir = open_volume_dir(&volume.source, volume.subpath.as_deref())?;
                let tree = sys::open_tree(
                    dir.as_raw_fd(),
                    c"",
                    libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32,
                )?;
                let attr = libc::mount_attr {
                    attr_set: libc::MOUNT_ATTR_IDMAP
                        | libc::MOUNT_ATTR_NOSUID
                        | libc::MOUNT_ATTR_NODEV,
                    attr_clr: 0,
                    propagation: 0,
                    userns_fd: userns.as_raw_fd() as u64,
                };
                sys::mount_setattr(tree.as_fd(), 0, &attr)?;
                Ok(tree)
            };
            let tree = open().map_err(|source| SetupError::IdmapVolume {
                volume: volume.source.clone(),
                target: volume.target.clone(),
                source,
            })?;
            Ok(DetachedVolume {
                mount: volume.clone(),
                tree,
            })
        })
        .collect()
}

/// Opens the directory `subpath` of a volume, creating the missing components (mode 0777,
/// like the volume's root). Each component is opened relative to its parent without
/// following symlinks, so a symlink that a sandbox placed in the volume cannot lead outside.
fn open_volume_dir(root: &Path, subpath: Option<&Path>) -> io::Result<OwnedFd> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::{Mode, fchmod, mkdirat};
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir: OwnedFd = File::open(root)?.into();
    let Some(subpath) = subpath else {
        return Ok(dir);
    };
    for component in subpath.components() {
        let std::path::Component::Normal(name) = component else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid volume subpath {}", subpath.display()),
            ));
        };
        match mkdirat(&dir, name, Mode::from_bits_truncate(0o777)) {
            Ok(()) => {
                let created = openat(
                    &dir,
                    name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                // The umask took bits away; the owner is the sandboxes' root.
                fchmod(&created, Mode::from_bits_truncate(0o777))?;
                nix::unistd::fchown(
                    &created,
                    Some(nix::unistd::Uid::from_raw(VOLUME_UID_BASE)),
                    Some(nix::unistd::Gid::from_raw(VOLUME_UID_BASE)),
                )?;
            }
            Err(nix::errno::Errno::EEXIST) => {}
            Err(errno) => return Err(errno.into()),
        }
        dir = openat(&dir, name, flags, Mode::empty())?;
    }
    Ok(dir)
}

fn idmap_layer(layer: &Path, target: &Path, userns: &OwnedFd) -> io::Result<()> {
    let layer = path_to_cstring(layer)?;
    let tree = sys::open_tree(
        libc::AT_FDCWD,
        &layer,
        libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
    )?;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP | libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    sys::mount_setattr(tree.as_fd(), 0, &attr)?;
    sys::move_mount(tree.as_fd(), &path_to_cstring(target)?, 0)
}

/// Overlay mount options: the top layer first, relative paths for the layers (the option
/// string is limited to one page), and `index=off` because the sandbox never needs hard
/// links across layers to keep their identity.
fn overlay_options(layers: usize, upper: &Path, work: &Path) -> String {
    let lower: Vec<String> = (0..layers)
        .rev()
        .map(|index| format!("{LOWER_DIR}/{index}"))
        .collect();
    format!(
        "lowerdir={},upperdir={},workdir={},index=off",
        lower.join(":"),
        escape_overlay_path(upper),
        escape_overlay_path(work)
    )
}

/// Returns `path` relative to `run_dir` when it lies in the run directory or beside it in the
/// sandbox's directory, and unchanged otherwise.
fn relative_to_run_dir(run_dir: &Path, path: &Path) -> PathBuf {
    if let Ok(inside) = path.strip_prefix(run_dir) {
        return inside.to_path_buf();
    }
    match run_dir
        .parent()
        .map(|sandbox_dir| path.strip_prefix(sandbox_dir))
    {
        Some(Ok(beside)) => Path::new("..").join(beside),
        _ => path.to_path_buf(),
    }
}

/// Escapes the characters that separate overlay options (`,`) and layers (`:`).
fn escape_overlay_path(path: &Path) -> String {
    let mut escaped = String::new();
    for c in path.to_string_lossy().chars() {
        if matches!(c, ',' | ':' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Formats `error <message>: <cause>: ...` as one line.
fn error_line(err: &SetupError) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    format!("error {}\n", message.replace('\n', " "))
}

pub(crate) fn path_to_cstring(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// The write end of the status pipe to the runner.
pub(crate) struct StatusPipe {
    fd: RawFd,
}

impl StatusPipe {
    /// Takes fd 4 and marks it close-on-exec, so that the runner reads end-of-file when PID 1
    /// executes the daemon.
    fn from_inherited() -> Self {
        // SAFETY: fcntl on an integer descriptor; an invalid one only makes writes fail.
        unsafe { libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
        Self { fd: STATUS_FD }
    }

    /// Reports PID 1 by its host pid and start time (field 22 of `/proc/<pid>/stat`), which
    /// together identify it across pid reuse. PID 1 cannot be reaped before this process
    /// exits, so its `/proc` entry is still the right one.
    fn pid(&self, host_proc: &File, child: Pid) -> Result<(), SetupError> {
        let start_time = crate::spawn::read_start_time_in(host_proc, child.as_raw())
            .map_err(|source| SetupError::Report { source })?;
        self.write_line(&format!("pid {child} {start_time}\n"))
            .map_err(|source| SetupError::Report { source })
    }

    /// Reports an error with its chain of causes.
    pub(crate) fn error(&self, err: &SetupError) {
        // Nothing is left to report a failed report to.
        let _ = self.write_line(&error_line(err));
    }

    fn write_line(&self, line: &str) -> io::Result<()> {
        // SAFETY: the runner's status pipe stays open for the life of this process and is
        // not owned by any Rust object, so borrowing it as a File must not close it.
        let file = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(self.fd) });
        io::Write::write_all(&mut &*file, line.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_list_top_layer_first() {
        let options = overlay_options(3, Path::new("/u"), Path::new("/w"));
        assert_eq!(
            options,
            "lowerdir=lower/2:lower/1:lower/0,upperdir=/u,workdir=/w,index=off"
        );
    }

    #[test]
    fn overlay_dirs_relative_to_run_dir() {
        let run = Path::new("/data/sandboxes/s1/run");
        assert_eq!(
            relative_to_run_dir(run, Path::new("/data/sandboxes/s1/run/disk/upper")),
            Path::new("disk/upper")
        );
        assert_eq!(
            relative_to_run_dir(run, Path::new("/data/sandboxes/s1/upper")),
            Path::new("../upper")
        );
        assert_eq!(
            relative_to_run_dir(run, Path::new("/elsewhere/upper")),
            Path::new("/elsewhere/upper")
        );
    }

    #[test]
    fn overlay_paths_escaped() {
        assert_eq!(escape_overlay_path(Path::new("/a,b:c\\d")), r"/a\,b\:c\\d");
    }

    #[test]
    fn error_chain_on_one_line() {
        let err = SetupError::JoinCgroup {
            path: "/sys/fs/cgroup/x".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(
            error_line(&err),
            "error failed to join cgroup /sys/fs/cgroup/x: No such file or directory (os error 2)\n"
        );
    }
}
