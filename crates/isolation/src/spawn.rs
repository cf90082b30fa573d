//! Runner side: start the setup stage and track the sandbox's PID 1.
//!
//! The runner calls [`start`] with a spec whose run directory and cgroups exist
//! ([`crate::run_dir::prepare`], [`crate::cgroup::CgroupManager::create`]). `start` returns
//! once the daemon's `init` runs as PID 1 of the sandbox. PID 1 is not a child of the runner:
//! the sandbox keeps running when the runner exits, and a restarted runner finds it again by
//! the [`SandboxProcess`] it stored (pid, start time and boot id).
//!
//! The functions here must run inside a tokio runtime with I/O enabled. After [`stop`], or
//! when [`wait_exit`] returns, the caller removes the sandbox's cgroups.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::time::{Instant, timeout, timeout_at};

use crate::sandbox_log;
use crate::spec::{LOG_FILE, SandboxSpec};
use crate::sys;

/// How long `start` waits for the setup stage and PID 1 before it gives up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `stop` waits for PID 1 to disappear after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// Identifies a sandbox's PID 1 across runner restarts: a pid alone may be reused, but not
/// together with the start time within one boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxProcess {
    /// Host pid of the sandbox's PID 1.
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat`: clock ticks after boot.
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id` when the sandbox started.
    pub boot_id: String,
}

/// Errors of starting and stopping sandboxes.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("failed to pass the spec of sandbox {sandbox_id} to the setup stage")]
    PassSpec {
        sandbox_id: String,
        source: io::Error,
    },

    #[error("failed to open the sandbox log {path}")]
    OpenLog { path: PathBuf, source: io::Error },

    #[error("failed to create the status pipe of sandbox {sandbox_id}")]
    StatusPipe {
        sandbox_id: String,
        source: io::Error,
    },

    #[error("failed to execute {binary} setup")]
    Exec { binary: PathBuf, source: io::Error },

    #[error("failed to read the status of sandbox {sandbox_id}")]
    ReadStatus {
        sandbox_id: String,
        source: io::Error,
    },

    #[error("sandbox {sandbox_id} failed to start: {message}")]
    Setup { sandbox_id: String, message: String },

    #[error("the setup stage of sandbox {sandbox_id} exited with {status} without starting PID 1")]
    SetupExited { sandbox_id: String, status: String },

    #[error("sandbox {sandbox_id} did not start within {timeout:?}")]
    StartTimeout {
        sandbox_id: String,
        timeout: Duration,
    },

    #[error("invalid status line {line:?} from the setup stage of sandbox {sandbox_id}")]
    Protocol { sandbox_id: String, line: String },

    #[error("failed to read the boot id from {BOOT_ID_PATH}")]
    BootId { source: io::Error },

    #[error("failed to signal PID 1 ({pid}) of a sandbox")]
    Signal { pid: i32, source: io::Error },

    #[error("failed to wait for process {pid}")]
    Wait { pid: i32, source: io::Error },

    #[error("PID 1 ({pid}) of a sandbox is still running {timeout:?} after SIGKILL")]
    StopTimeout { pid: i32, timeout: Duration },
}

/// Starts a sandbox: executes `<daemon_binary> setup` with the spec and returns when the
/// daemon runs as the sandbox's PID 1, or with the error that the setup stage or PID 1
/// reported.
pub async fn start(spec: &SandboxSpec) -> Result<SandboxProcess, SpawnError> {
    let sandbox_id = &spec.sandbox_id;
    let boot_id = boot_id()?;
    let spec_fd = spec_memfd(spec).map_err(|source| SpawnError::PassSpec {
        sandbox_id: sandbox_id.clone(),
        source,
    })?;
    let (status_read, status_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| {
            SpawnError::StatusPipe {
                sandbox_id: sandbox_id.clone(),
                source: errno.into(),
            }
        })?;

    let setup = SetupProcess::spawn(spec, &spec_fd, &status_write)?;
    // The setup stage and PID 1 now hold the only write ends, so end-of-file means that both
    // exited or executed `init`.
    drop(status_write);
    drop(spec_fd);

    let deadline = Instant::now() + START_TIMEOUT;
    let report = match read_status(sandbox_id, status_read, deadline).await {
        Ok(report) => report,
        Err(err) => {
            // Timed out or unreadable: leave nothing running.
            setup.kill();
            return Err(err);
        }
    };
    // The status pipe reached end-of-file, so the setup stage has exited or is exiting.
    let status = setup.wait().await?;

    if let Some(message) = report.error {
        return Err(SpawnError::Setup {
            sandbox_id: sandbox_id.clone(),
            message,
        });
    }
    let exited_cleanly = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    match report.pid {
        Some((pid, start_time)) if exited_cleanly => Ok(SandboxProcess {
            pid,
            start_time,
            boot_id,
        }),
        _ => Err(SpawnError::SetupExited {
            sandbox_id: sandbox_id.clone(),
            status: describe_wait_status(status),
        }),
    }
}

fn describe_wait_status(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

/// Returns whether the sandbox's PID 1 still runs: the pid exists in this boot, with the same start
/// time, and has not exited (a zombie counts as exited).
pub fn is_running(process: &SandboxProcess) -> bool {
    let same_boot = boot_id().is_ok_and(|id| id == process.boot_id);
    same_boot
        && read_stat(process.pid).is_ok_and(|stat| {
            stat.start_time == process.start_time
                && !matches!(stat.state, 'Z' | 'X')
                && stat.flags & PF_EXITING == 0
        })
        && !sigkill_pending(process.pid)
}

/// `PF_EXITING` of `include/linux/sched.h`: set once a task has begun to exit. A PID 1 that
/// is tearing down its PID namespace stays in state `R` or `D` for a while with this flag set.
const PF_EXITING: u64 = 0x4;

/// Whether SIGKILL is pending for the process (`ShdPnd` of /proc/<pid>/status), which means it
/// is about to exit even though it has not started yet.
fn sigkill_pending(pid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let sigkill_bit = 1u64 << (libc::SIGKILL - 1);
    status
        .lines()
        .filter_map(|line| {
            line.strip_prefix("ShdPnd:")
                .or_else(|| line.strip_prefix("SigPnd:"))
        })
        .filter_map(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .any(|mask| mask & sigkill_bit != 0)
}

/// Waits until the sandbox's PID 1 exits. Returns at once if it is not running.
pub async fn wait_exit(process: &SandboxProcess) -> Result<(), SpawnError> {
    let Some(pidfd) = open_pidfd(process)? else {
        return Ok(());
    };
    wait_pidfd(process.pid, pidfd, None).await.map(drop)
}

/// Stops a sandbox: SIGTERM to PID 1, which forwards it to every process of the sandbox;
/// after `grace`, SIGKILL. PID 1's exit kills whatever is left in the PID namespace.
pub async fn stop(process: &SandboxProcess, grace: Duration) -> Result<(), SpawnError> {
    let pid = process.pid;
    let Some(pidfd) = open_pidfd(process)? else {
        return Ok(());
    };
    if grace.is_zero() {
        return kill_and_wait(pid, pidfd).await;
    }
    if !send_signal(pid, &pidfd, libc::SIGTERM)? {
        return Ok(());
    }
    let (exited, pidfd) = wait_pidfd(pid, pidfd, Some(grace)).await?;
    if exited {
        return Ok(());
    }

    tracing::warn!(
        pid,
        ?grace,
        "sandbox PID 1 ignored SIGTERM; sending SIGKILL"
    );
    kill_and_wait(pid, pidfd).await
}

/// Sends SIGKILL to PID 1 and waits until it is gone.
async fn kill_and_wait(pid: i32, pidfd: OwnedFd) -> Result<(), SpawnError> {
    if !send_signal(pid, &pidfd, libc::SIGKILL)? {
        return Ok(());
    }
    match wait_pidfd(pid, pidfd, Some(KILL_TIMEOUT)).await? {
        (true, _) => Ok(()),
        (false, _) => Err(SpawnError::StopTimeout {
            pid,
            timeout: KILL_TIMEOUT,
        }),
    }
}

/// Reads the start time (field 22 of `/proc/<pid>/stat`) of a process.
pub fn read_start_time(pid: i32) -> io::Result<u64> {
    read_stat(pid).map(|stat| stat.start_time)
}

/// Reads field 22 of `<pid>/stat` below `proc_dir`, an open procfs directory. A descriptor
/// opened before a `pivot_root` keeps reaching the procfs it was opened on.
pub(crate) fn read_start_time_in(proc_dir: &std::fs::File, pid: i32) -> io::Result<u64> {
    use std::io::Read;
    use std::os::fd::AsFd;

    let fd = nix::fcntl::openat(
        proc_dir.as_fd(),
        format!("{pid}/stat").as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let mut content = String::new();
    std::fs::File::from(fd).read_to_string(&mut content)?;
    parse_stat(&content)
        .map(|stat| stat.start_time)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/<pid>/stat"))
}

/// Returns the current boot id, read once per process.
pub fn boot_id() -> Result<String, SpawnError> {
    static BOOT_ID: OnceLock<String> = OnceLock::new();
    if let Some(id) = BOOT_ID.get() {
        return Ok(id.clone());
    }
    let id = std::fs::read_to_string(BOOT_ID_PATH)
        .map_err(|source| SpawnError::BootId { source })?
        .trim()
        .to_string();
    Ok(BOOT_ID.get_or_init(|| id).clone())
}

/// Writes the spec as JSON into a memory file, which the setup stage reads
/// from fd 3. Unlike a pipe it never blocks, whatever the size of the spec.
fn spec_memfd(spec: &SandboxSpec) -> io::Result<OwnedFd> {
    let json = serde_json::to_vec(spec).map_err(io::Error::other)?;
    // SAFETY: the name is a valid C string; the result is checked.
    let fd = unsafe { libc::memfd_create(c"daytona-sandbox-spec".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(&json)?;
    file.rewind()?;
    Ok(file.into())
}

/// The running setup stage, a child of this process.
struct SetupProcess {
    pid: libc::pid_t,
    pidfd: OwnedFd,
}

impl SetupProcess {
    /// Executes `<daemon_binary> setup` with `/dev/null` as stdin, the sandbox log as stdout
    /// and stderr, the spec on fd 3 and the status pipe on fd 4, an empty environment, an
    /// empty signal mask and default signal dispositions.
    ///
    /// posix_spawn (glibc uses clone with CLONE_VM and CLONE_VFORK) does not copy the
    /// runner's page tables as fork does, which saves milliseconds per start in a large
    /// multi-threaded runner.
    fn spawn(
        spec: &SandboxSpec,
        spec_fd: &OwnedFd,
        status_write: &OwnedFd,
    ) -> Result<Self, SpawnError> {
        let log = open_log(&spec.run_dir)?;
        let exec_error = |source| SpawnError::Exec {
            binary: spec.daemon_binary.clone(),
            source,
        };
        // Copies above 10 cannot collide with the targets 0 to 4 of the file actions.
        let log = dup_high(&log).map_err(exec_error)?;
        let spec_copy = dup_high(spec_fd).map_err(exec_error)?;
        let status_copy = dup_high(status_write).map_err(exec_error)?;

        let binary = path_cstring(&spec.daemon_binary).map_err(exec_error)?;
        let pid =
            posix_spawn_setup(&binary, [&log, &spec_copy, &status_copy]).map_err(exec_error)?;
        // Nothing reaps this child but `wait`, so the pid cannot be reused before the open.
        let pidfd = sys::pidfd_open(pid).map_err(exec_error)?;
        Ok(Self { pid, pidfd })
    }

    /// Waits until the setup stage exits and returns its wait status.
    async fn wait(self) -> Result<libc::c_int, SpawnError> {
        let pid = self.pid;
        wait_pidfd(pid, self.pidfd, None).await?;
        let mut status = 0;
        // SAFETY: `pid` is an exited child of this process; waitpid writes `status`.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } < 0 {
            let source = io::Error::last_os_error();
            return Err(SpawnError::Wait { pid, source });
        }
        Ok(status)
    }

    /// Kills and reaps a setup stage that did not finish in time.
    fn kill(self) {
        let _ = sys::pidfd_send_signal(as_borrowed(&self.pidfd), libc::SIGKILL);
        let mut status = 0;
        // SAFETY: `pid` is a child of this process; SIGKILL makes it exit promptly.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

/// Spawns `binary setup` with `fds` = [log, spec, status] placed on 1 and 2, 3, and 4.
fn posix_spawn_setup(binary: &CString, fds: [&OwnedFd; 3]) -> io::Result<libc::pid_t> {
    let [log, spec, status] = fds.map(|fd| fd.as_raw_fd());
    let argv = [binary.as_ptr(), c"setup".as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];

    let mut actions = std::mem::MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
    let mut attrs = std::mem::MaybeUninit::<libc::posix_spawnattr_t>::uninit();
    // SAFETY: the action and attribute objects are initialized before use and destroyed
    // after posix_spawn. Every pointer passed refers to a live C string or to an array that
    // ends with NULL.
    unsafe {
        check_spawn(libc::posix_spawn_file_actions_init(actions.as_mut_ptr()))?;
        let actions_ptr = actions.as_mut_ptr();
        let result = (|| {
            check_spawn(libc::posix_spawn_file_actions_addopen(
                actions_ptr,
                0,
                c"/dev/null".as_ptr(),
                libc::O_RDONLY,
                0,
            ))?;
            for (fd, target) in [(log, 1), (log, 2), (spec, 3), (status, 4)] {
                check_spawn(libc::posix_spawn_file_actions_adddup2(
                    actions_ptr,
                    fd,
                    target,
                ))?;
            }

            check_spawn(libc::posix_spawnattr_init(attrs.as_mut_ptr()))?;
            let attrs_ptr = attrs.as_mut_ptr();
            let result = (|| {
                let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
                libc::sigemptyset(empty.as_mut_ptr());
                let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
                libc::sigfillset(all.as_mut_ptr());
                check_spawn(libc::posix_spawnattr_setsigmask(attrs_ptr, empty.as_ptr()))?;
                check_spawn(libc::posix_spawnattr_setsigdefault(attrs_ptr, all.as_ptr()))?;
                let flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
                check_spawn(libc::posix_spawnattr_setflags(
                    attrs_ptr,
                    flags as libc::c_short,
                ))?;

                let mut pid = 0;
                check_spawn(libc::posix_spawn(
                    &mut pid,
                    binary.as_ptr(),
                    actions_ptr,
                    attrs_ptr,
                    argv.as_ptr().cast(),
                    envp.as_ptr().cast(),
                ))?;
                Ok(pid)
            })();
            libc::posix_spawnattr_destroy(attrs_ptr);
            result
        })();
        libc::posix_spawn_file_actions_destroy(actions_ptr);
        result
    }
}

/// posix_spawn functions return the error number instead of setting errno.
fn check_spawn(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

/// Duplicates a descriptor to a number of at least 10, close-on-exec.
fn dup_high(fd: &impl AsRawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor the caller owns; the result is checked.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl just returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

fn path_cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Opens the sandbox log for appending, trimmed to its size cap (see [`sandbox_log`]).
fn open_log(run_dir: &Path) -> Result<File, SpawnError> {
    let path = run_dir.join(LOG_FILE);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| SpawnError::OpenLog {
            path: path.clone(),
            source,
        })?;
    // A log that cannot be trimmed still takes the new sandbox's lines.
    if let Err(error) = sandbox_log::trim(&log) {
        tracing::warn!(path = %path.display(), %error, "failed to trim the sandbox log");
    }
    Ok(log)
}

/// The report of the setup stage and PID 1.
#[derive(Debug, Default)]
struct StatusReport {
    /// Host pid and start time of PID 1.
    pid: Option<(i32, u64)>,
    error: Option<String>,
}

/// Reads the status pipe until end-of-file or the deadline.
async fn read_status(
    sandbox_id: &str,
    read_end: OwnedFd,
    deadline: Instant,
) -> Result<StatusReport, SpawnError> {
    let read_error = |source| SpawnError::ReadStatus {
        sandbox_id: sandbox_id.to_string(),
        source,
    };
    let mut receiver = pipe::Receiver::from_owned_fd(read_end).map_err(read_error)?;
    let mut text = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match timeout_at(deadline, receiver.read(&mut buffer)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => text.extend_from_slice(&buffer[..n]),
            Ok(Err(err)) => return Err(read_error(err)),
            Err(_) => {
                // A PID 1 that was already reported would otherwise keep running.
                if let Ok(report) = parse_status(sandbox_id, &text) {
                    kill_reported_pid(report.pid);
                }
                return Err(SpawnError::StartTimeout {
                    sandbox_id: sandbox_id.to_string(),
                    timeout: START_TIMEOUT,
                });
            }
        }
    }
    parse_status(sandbox_id, &text)
}

fn parse_status(sandbox_id: &str, text: &[u8]) -> Result<StatusReport, SpawnError> {
    let text = String::from_utf8_lossy(text);
    let mut report = StatusReport::default();
    for line in text.lines() {
        let protocol_error = || SpawnError::Protocol {
            sandbox_id: sandbox_id.to_string(),
            line: line.to_string(),
        };
        if let Some(message) = line.strip_prefix("error ") {
            // The first error is the cause; later ones are consequences.
            report.error.get_or_insert_with(|| message.to_string());
        } else if let Some(rest) = line.strip_prefix("pid ") {
            let (pid, start_time) = rest.split_once(' ').ok_or_else(protocol_error)?;
            let pid = pid.parse().map_err(|_| protocol_error())?;
            let start_time = start_time.parse().map_err(|_| protocol_error())?;
            report.pid = Some((pid, start_time));
        } else {
            return Err(protocol_error());
        }
    }
    Ok(report)
}

fn kill_reported_pid(reported: Option<(i32, u64)>) {
    let Some((pid, start_time)) = reported else {
        return;
    };
    let Ok(boot_id) = boot_id() else {
        return;
    };
    let process = SandboxProcess {
        pid,
        start_time,
        boot_id,
    };
    if let Ok(Some(pidfd)) = open_pidfd(&process) {
        let _ = sys::pidfd_send_signal(as_borrowed(&pidfd), libc::SIGKILL);
    }
}

/// Opens a pidfd for the sandbox's PID 1, or returns `None` if it no longer runs. The
/// identity check comes after the open, so that the pidfd cannot refer to a process that
/// reused the pid.
fn open_pidfd(process: &SandboxProcess) -> Result<Option<OwnedFd>, SpawnError> {
    let pidfd = match sys::pidfd_open(process.pid) {
        Ok(pidfd) => pidfd,
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(source) => {
            return Err(SpawnError::Wait {
                pid: process.pid,
                source,
            });
        }
    };
    Ok(is_running(process).then_some(pidfd))
}

/// Sends a signal through a pidfd; returns `false` if the process is already gone.
fn send_signal(pid: i32, pidfd: &OwnedFd, signal: libc::c_int) -> Result<bool, SpawnError> {
    match sys::pidfd_send_signal(as_borrowed(pidfd), signal) {
        Ok(()) => Ok(true),
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(source) => Err(SpawnError::Signal { pid, source }),
    }
}

/// Waits until the pidfd becomes readable (the process exited), at most `limit`. Returns
/// whether it exited, and the pidfd for further use.
async fn wait_pidfd(
    pid: i32,
    pidfd: OwnedFd,
    limit: Option<Duration>,
) -> Result<(bool, OwnedFd), SpawnError> {
    let wait_error = |source| SpawnError::Wait { pid, source };
    // SAFETY: OwnedFd always returns the descriptor it owns, and the AsyncFd owns the
    // OwnedFd until `into_inner`.
    let async_fd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|err| wait_error(err.into()))?;
    let exited = match limit {
        None => async_fd
            .readable()
            .await
            .map(drop)
            .map_err(wait_error)
            .map(|()| true)?,
        Some(limit) => match timeout(limit, async_fd.readable()).await {
            Ok(ready) => ready.map(drop).map_err(wait_error).map(|()| true)?,
            Err(_) => false,
        },
    };
    Ok((exited, async_fd.into_inner()))
}

fn as_borrowed(fd: &OwnedFd) -> BorrowedFd<'_> {
    std::os::fd::AsFd::as_fd(fd)
}

/// Fields of `/proc/<pid>/stat` that identify a process.
struct ProcStat {
    state: char,
    /// Field 9, the kernel's `PF_*` flags.
    flags: u64,
    start_time: u64,
}

fn read_stat(pid: i32) -> io::Result<ProcStat> {
    let content = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&content)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/<pid>/stat"))
}

/// Parses `pid (comm) state ... starttime ...`. The command name may contain spaces and
/// parentheses, so the fields are counted from the last `)`.
fn parse_stat(content: &str) -> Option<ProcStat> {
    let after_comm = &content[content.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // fields[0] is field 3 (state), so field 9 (flags) is fields[6] and field 22
    // (starttime) is fields[19].
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        flags: fields.get(6)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsed_with_odd_command_name() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 \
                    10 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let parsed = parse_stat(stat).unwrap();
        assert_eq!(parsed.state, 'S');
        assert_eq!(parsed.start_time, 987654);
    }

    #[test]
    fn own_start_time_readable() {
        let pid = std::process::id() as i32;
        assert!(read_start_time(pid).unwrap() > 0);
    }

    #[test]
    fn status_lines_parsed() {
        let report = parse_status("s", b"pid 12 345\n").unwrap();
        assert_eq!(report.pid, Some((12, 345)));
        assert!(report.error.is_none());

        let report = parse_status("s", b"pid 12 345\nerror failed to mount: x\n").unwrap();
        assert_eq!(report.error.as_deref(), Some("failed to mount: x"));

        assert!(parse_status("s", b"pid twelve 1\n").is_err());
        assert!(parse_status("s", b"hello\n").is_err());
    }
}
