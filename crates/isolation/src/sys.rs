//! Thin wrappers over system calls that neither std nor nix wrap: the new mount API, pidfds,
//! seccomp, Landlock and capabilities.
//!
//! None of these functions allocate, so the ones that workload confinement uses are safe to
//! call between fork and exec.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Converts a `-1`-on-error return value into an `io::Result`.
fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a file descriptor returned by a system call.
fn owned(ret: libc::c_long) -> io::Result<OwnedFd> {
    let fd = check(ret)? as RawFd;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `open_tree(dirfd, path, flags)`.
pub fn open_tree(dirfd: RawFd, path: &CStr, flags: libc::c_uint) -> io::Result<OwnedFd> {
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, dirfd, path.as_ptr(), flags) })
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH | flags, attr)`: changes the attributes of the mount
/// that `fd` refers to.
pub fn mount_setattr(
    fd: BorrowedFd<'_>,
    flags: libc::c_uint,
    attr: &libc::mount_attr,
) -> io::Result<()> {
    // SAFETY: the path is an empty C string and `attr` points to a properly sized struct that
    // outlives the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | flags,
            attr as *const libc::mount_attr,
            size_of::<libc::mount_attr>(),
        )
    })?;
    Ok(())
}

/// `move_mount(fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH | flags)`: attaches the
/// detached mount `fd` at `target`. A final symlink in `target` is followed only with
/// `MOVE_MOUNT_T_SYMLINKS` in `flags`.
pub fn move_mount(fd: BorrowedFd<'_>, target: &CStr, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: both paths are valid NUL-terminated strings for the duration of the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | flags,
        )
    })?;
    Ok(())
}

/// Creates a detached mount of a new instance of `fs_type` with the mount attributes
/// `attr_flags` (`fsopen`, `fsconfig(FSCONFIG_CMD_CREATE)`, `fsmount`).
pub fn fs_mount(fs_type: &CStr, attr_flags: u64) -> io::Result<OwnedFd> {
    // SAFETY: `fs_type` is a valid NUL-terminated string for the duration of the call.
    let context =
        owned(unsafe { libc::syscall(libc::SYS_fsopen, fs_type.as_ptr(), libc::FSOPEN_CLOEXEC) })?;
    // SAFETY: FSCONFIG_CMD_CREATE takes no key, value or aux argument.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: `context` is a configured filesystem context owned by this function.
    owned(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            context.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attr_flags as libc::c_uint,
        )
    })
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments.
    owned(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })
}

/// `pidfd_send_signal(pidfd, signal, NULL, 0)`.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: a NULL siginfo makes the kernel fill in the same fields as kill(2).
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })?;
    Ok(())
}

/// Installs one seccomp BPF program on the calling thread with the raw `seccomp` system call.
///
/// Unlike `seccompiler::apply_filter` this does not set `no_new_privs`: the caller has
/// CAP_SYS_ADMIN in its user namespace, which the kernel accepts instead, so setuid programs
/// such as `sudo` keep working under the filter.
pub fn seccomp_set_filter(program: &[seccompiler::sock_filter]) -> io::Result<()> {
    // seccompiler's `sock_filter` has the kernel's layout (u16 code, u8 jt, u8 jf, u32 k).
    let prog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: `prog` points to `program`, which outlives the call; the kernel copies it.
    check(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    })?;
    Ok(())
}

/// `landlock_restrict_self(ruleset_fd, 0)`.
pub fn landlock_restrict_self(ruleset: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0) })?;
    Ok(())
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`: the Landlock ABI
/// version of the running kernel, or an error where Landlock is absent or disabled.
pub fn landlock_abi_version() -> io::Result<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with this flag the kernel reads no attribute.
    let version = check(unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    })?;
    Ok(version as u32)
}

/// Capability sets as 64-bit masks (bit n = capability n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

/// `capset` for the calling thread.
pub fn capset(sets: CapSets) -> io::Result<()> {
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let half = |shift: u32| Data {
        effective: (sets.effective >> shift) as u32,
        permitted: (sets.permitted >> shift) as u32,
        inheritable: (sets.inheritable >> shift) as u32,
    };
    let data = [half(0), half(32)];
    // SAFETY: version 3 takes a header and an array of two data structs, both alive here.
    check(unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) })?;
    Ok(())
}

/// `prctl` with integer arguments.
pub fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> io::Result<()> {
    // SAFETY: every option used in this crate takes integer arguments only.
    check(unsafe { libc::prctl(option, arg2, 0, 0, 0) }.into())?;
    Ok(())
}

/// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)`.
pub fn clear_ambient_caps() -> io::Result<()> {
    let (option, operation) = (libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL);
    // SAFETY: PR_CAP_AMBIENT takes integer arguments only.
    let ret = unsafe { libc::prctl(option, operation, 0, 0, 0) };
    check(ret.into())?;
    Ok(())
}

/// A stack for a child that shares the caller's memory, with an inaccessible guard page
/// below it, so that an overflow faults instead of overwriting the caller's memory.
pub struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    /// Size of the usable stack.
    const SIZE: usize = 256 * 1024;
    const GUARD: usize = 4096;

    pub fn new() -> io::Result<Self> {
        let len = Self::SIZE + Self::GUARD;
        // SAFETY: an anonymous private mapping at an address the kernel chooses.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Self { base, len };
        // SAFETY: the lowest page of the mapping just created, which nothing uses yet.
        check(unsafe { libc::mprotect(base, Self::GUARD, libc::PROT_NONE) }.into())?;
        Ok(stack)
    }

    /// Returns the highest address, where a stack that grows down starts. It is 16-byte
    /// aligned as the x86_64 ABI requires, since mappings are page-aligned.
    fn top(&mut self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, which is `len` bytes long.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `new` with this base and length, and no child
        // runs on it: `spawn_sibling` returns only after the child left it.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Runs `entry(arg)` in a new process that shares the caller's memory until it executes a
/// program or exits, with `clone(CLONE_VM | CLONE_VFORK | CLONE_PARENT | SIGCHLD)`. Returns
/// its pid once it has done either. Its parent is the caller's parent, which receives its
/// SIGCHLD and reaps it. This is the way posix_spawn creates processes: no page tables are
/// copied.
///
/// # Safety
///
/// The caller must be single-threaded and block every signal, so that no signal handler
/// runs in the child on the shared memory. `entry` runs on `stack` and must only make system
/// calls on memory that stays valid and unchanged until this function returns, and end with
/// execve or `_exit`, never return.
pub unsafe fn spawn_sibling(
    entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    stack: &mut ChildStack,
    arg: *mut libc::c_void,
) -> io::Result<libc::pid_t> {
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PARENT | libc::SIGCHLD;
    // SAFETY: `stack` is a live mapping for the child, which glibc's clone wrapper switches
    // to before it calls `entry`. The caller upholds the rest of the contract.
    let pid = unsafe { libc::clone(entry, stack.top(), flags, arg) };
    check(pid.into())?;
    Ok(pid)
}

/// `waitid(P_PIDFD, pidfd, WEXITED | WNOHANG)`: reaps the process if it has exited and
/// returns its status in the encoding of `waitpid`, or `None` while it runs. The caller
/// must be the process's parent.
pub fn reap_pidfd(pidfd: BorrowedFd<'_>) -> io::Result<Option<libc::c_int>> {
    // SAFETY: siginfo_t is plain old data, for which all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes into `info`, which lives across the call.
    let ret = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    check(ret.into())?;
    // SAFETY: waitid filled in `info`; si_pid stays 0 when no process has exited yet.
    if unsafe { info.si_pid() } == 0 {
        return Ok(None);
    }
    // SAFETY: for CLD_* codes the kernel sets si_status.
    let status = unsafe { info.si_status() };
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => status | 0x80,
        // CLD_KILLED; WEXITED reports no other codes.
        _ => status,
    }))
}
