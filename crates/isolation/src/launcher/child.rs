//! The child between `clone` and `execve`: it turns itself into the workload.
//!
//! The child shares the launcher's memory and runs on a stack of its own while the
//! launcher waits, as with vfork. So it only makes system calls on memory that was prepared
//! before the clone: it neither allocates nor takes locks, and it ends with execve or
//! `_exit`. A child that fails leaves the step and the errno in the shared [`Spawn`] and
//! exits with status 127.

use std::convert::Infallible;
use std::ffi::{CString, c_char};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};

use super::protocol::DecodedRequest;
use super::{Identity, SessionMode, StartStep};
use crate::sys::{self, ChildStack};

/// Directories searched for a program without `/` when the request has no `PATH`.
const DEFAULT_PATH: &[u8] = b"/usr/local/bin:/usr/bin:/bin";

/// A spawn request with every pointer that execve needs, built before the clone.
pub(super) struct Prepared {
    argv: Vec<CString>,
    env: Vec<CString>,
    argv_pointers: Vec<*const c_char>,
    env_pointers: Vec<*const c_char>,
    /// Paths to try with execve, in order.
    programs: Vec<CString>,
    cwd: CString,
    /// Sources of descriptors 0, 1 and 2; every one is 3 or above.
    stdio: [RawFd; 3],
    /// `None` when the launcher keeps its own user.
    user: Option<Identity>,
    session: SessionMode,
    controlling_terminal: Option<u8>,
    umask: libc::mode_t,
    /// The received stream descriptors, open until the request is done.
    _stdio_fds: Vec<OwnedFd>,
}

impl Prepared {
    /// Prepares a request; absent streams read and write `dev_null`. `switch_user` is false
    /// when the request's user is the launcher's own and the launcher is not root, so that an
    /// unprivileged launcher can run workloads as itself.
    pub(super) fn new(request: DecodedRequest, dev_null: RawFd, switch_user: bool) -> Self {
        let programs = program_candidates(&request.argv[0], request.path.as_deref());
        let mut stdio = [dev_null; 3];
        let mut stdio_fds = Vec::new();
        for (slot, fd) in request.stdio.into_iter().enumerate() {
            if let Some(fd) = fd {
                stdio[slot] = fd.as_raw_fd();
                stdio_fds.push(fd);
            }
        }
        let mut prepared = Self {
            argv: request.argv,
            env: request.env,
            argv_pointers: Vec::new(),
            env_pointers: Vec::new(),
            programs,
            cwd: request.cwd,
            stdio,
            user: request.user.filter(|_| switch_user),
            session: request.session,
            controlling_terminal: request.controlling_terminal,
            umask: request.umask as libc::mode_t,
            _stdio_fds: stdio_fds,
        };
        prepared.argv_pointers = null_terminated(&prepared.argv);
        prepared.env_pointers = null_terminated(&prepared.env);
        prepared
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Returns the paths that execvp would try for `program`: itself if it contains `/`,
/// otherwise `<dir>/<program>` for every non-empty directory in `path`.
fn program_candidates(program: &CString, path: Option<&[u8]>) -> Vec<CString> {
    let name = program.as_bytes();
    if name.contains(&b'/') {
        return vec![program.clone()];
    }
    path.unwrap_or(DEFAULT_PATH)
        .split(|&b| b == b':')
        .filter(|dir| !dir.is_empty())
        .filter_map(|dir| {
            let mut candidate = dir.to_vec();
            if !candidate.ends_with(b"/") {
                candidate.push(b'/');
            }
            candidate.extend_from_slice(name);
            // A directory from PATH contains no NUL byte, since the request was validated.
            CString::new(candidate).ok()
        })
        .collect()
}

/// A created child: its pid, and the step and errno at which it failed, if it did.
pub(super) struct Spawned {
    pub pid: libc::pid_t,
    pub failure: Option<(StartStep, i32)>,
}

/// The memory that the launcher and the child share during the clone.
struct Spawn<'a> {
    prepared: &'a Prepared,
    /// Written by the child when it fails; read after it left the shared memory.
    failure: Option<(StartStep, i32)>,
}

/// Creates the workload and returns once it executed the program or failed.
pub(super) fn spawn(prepared: &Prepared, stack: &mut ChildStack) -> io::Result<Spawned> {
    let mut shared = Spawn {
        prepared,
        failure: None,
    };
    let mut previous = SigSet::empty();
    sigprocmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut previous),
    )?;
    // SAFETY: the launcher is single-threaded and blocks every signal until the clone
    // returns. `child_main` only makes system calls on `shared` and the prepared request,
    // which live on this frame unchanged until the clone returns, after the child executed
    // the program or exited.
    let pid = unsafe { sys::spawn_sibling(child_main, stack, (&raw mut shared).cast()) };
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&previous), None)?;

    // SAFETY: `shared` is a live local. The read is volatile because the child wrote it
    // through a pointer, which the compiler cannot account for.
    let failure = unsafe { std::ptr::read_volatile(&raw const shared.failure) };
    Ok(Spawned { pid: pid?, failure })
}

/// The child's entry point: becomes the workload, or leaves why not and exits with 127.
extern "C" fn child_main(shared: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `spawn` passes a pointer to its `Spawn`, which outlives this child's use of
    // the shared memory.
    let shared = unsafe { &mut *shared.cast::<Spawn<'_>>() };
    let Err((step, error)) = enter(shared.prepared);
    let errno = error.raw_os_error().unwrap_or(libc::EIO);
    // SAFETY: as above. _exit skips every destructor and atexit handler, which belong to the
    // launcher, whose memory this is.
    unsafe {
        std::ptr::write_volatile(&raw mut shared.failure, Some((step, errno)));
        libc::_exit(127)
    }
}

/// Runs the steps from the clone to the exec; returns only on failure. The child inherited
/// the launcher's confinement: its Landlock domain, seccomp programs and capability sets.
fn enter(prepared: &Prepared) -> Result<Infallible, (StartStep, io::Error)> {
    // 1. The launcher ignores SIGPIPE, as every Rust program does, and ignored signals stay
    //    ignored across exec. Workloads start with default dispositions and an empty mask.
    reset_signals().map_err(at(StartStep::Signals))?;

    // 2. Detach from the toolbox server's job control: the workload leads its own group.
    match prepared.session {
        SessionMode::NewSession => {
            // SAFETY: setsid takes no arguments.
            check(unsafe { libc::setsid() }).map_err(at(StartStep::Setsid))?
        }
        SessionMode::NewProcessGroup => {
            // SAFETY: setpgid with integer arguments on this process.
            check(unsafe { libc::setpgid(0, 0) }).map_err(at(StartStep::Setpgid))?
        }
    }

    // 3. The sources are 3 or above, so no dup2 overwrites a source that a later one needs.
    place_stdio(&prepared.stdio).map_err(at(StartStep::Dup2))?;
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(prepared.umask) };

    // 4. Groups, then gid, then uid: once the uid changes, the process may no longer change
    //    its groups. setuid to a non-root user clears the capability sets.
    if let Some(user) = &prepared.user {
        switch_user(user).map_err(at(StartStep::SwitchUser))?;
    }

    // 5. TIOCSCTTY with argument 0 takes a terminal that no other session controls, which
    //    is true of a new PTY. It needs no capability, so it may follow the switch.
    if let Some(index) = prepared.controlling_terminal {
        // SAFETY: TIOCSCTTY takes an integer argument.
        let ret = unsafe { libc::ioctl(libc::c_int::from(index), libc::TIOCSCTTY, 0) };
        check(ret).map_err(at(StartStep::Tiocsctty))?;
    }

    // 6. Enter the working directory as the user, so that its permissions apply to them.
    // SAFETY: `cwd` is a NUL-terminated string that outlives the call.
    check(unsafe { libc::chdir(prepared.cwd.as_ptr()) }).map_err(at(StartStep::Chdir))?;

    Err((StartStep::Execve, exec(prepared)))
}

fn at(step: StartStep) -> impl FnOnce(io::Error) -> (StartStep, io::Error) {
    move |error| (step, error)
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn reset_signals() -> io::Result<()> {
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL is a valid disposition. glibc rejects the signals that it reserves
        // for itself with EINVAL; those are never ignored, so the error does not matter.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
    // SAFETY: the set is initialized by sigemptyset before sigprocmask reads it.
    unsafe {
        let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(empty.as_mut_ptr());
        check(libc::sigprocmask(
            libc::SIG_SETMASK,
            empty.as_ptr(),
            std::ptr::null_mut(),
        ))
    }
}

fn place_stdio(sources: &[RawFd; 3]) -> io::Result<()> {
    for (target, &source) in (0..).zip(sources) {
        // SAFETY: dup2 on descriptors of this process. dup2 clears close-on-exec on the
        // copy, and every source is close-on-exec, so only 0, 1 and 2 survive the exec.
        check(unsafe { libc::dup2(source, target) })?;
    }
    Ok(())
}

/// Switches with raw system calls, because glibc's wrappers switch every thread in glibc's
/// list of threads, and that list belongs to the launcher.
fn switch_user(user: &Identity) -> io::Result<()> {
    // SAFETY: `groups` is a live slice whose length is passed with it.
    let ret =
        unsafe { libc::syscall(libc::SYS_setgroups, user.groups.len(), user.groups.as_ptr()) };
    check_long(ret)?;
    // SAFETY: plain system calls on integer arguments.
    check_long(unsafe { libc::syscall(libc::SYS_setgid, user.gid) })?;
    // SAFETY: as above.
    check_long(unsafe { libc::syscall(libc::SYS_setuid, user.uid) })
}

fn check_long(ret: libc::c_long) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Tries every candidate path with execvp's rules: EACCES is remembered and the search goes
/// on, a missing file or directory goes on, any other error ends it.
fn exec(prepared: &Prepared) -> io::Error {
    let mut denied = false;
    let mut last = io::Error::from_raw_os_error(libc::ENOENT);
    for program in &prepared.programs {
        // SAFETY: the path, argv and envp are NUL-terminated strings and NULL-terminated
        // pointer arrays that outlive the call.
        unsafe {
            libc::execve(
                program.as_ptr(),
                prepared.argv_pointers.as_ptr(),
                prepared.env_pointers.as_ptr(),
            )
        };
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EACCES) => denied = true,
            Some(libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT) => {}
            _ => return error,
        }
        last = error;
    }
    if denied {
        io::Error::from_raw_os_error(libc::EACCES)
    } else {
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_searched_for_bare_names() {
        let candidates = program_candidates(&c"ls".to_owned(), Some(b"/a:/b/::/c"));
        assert_eq!(
            candidates,
            [
                c"/a/ls".to_owned(),
                c"/b/ls".to_owned(),
                c"/c/ls".to_owned()
            ]
        );
        let candidates = program_candidates(&c"ls".to_owned(), None);
        assert_eq!(candidates[0], c"/usr/local/bin/ls".to_owned());
    }

    #[test]
    fn paths_not_searched() {
        for program in [c"/bin/ls", c"./ls", c"sub/ls"] {
            let candidates = program_candidates(&program.to_owned(), Some(b"/a"));
            assert_eq!(candidates, [program.to_owned()]);
        }
    }
}
