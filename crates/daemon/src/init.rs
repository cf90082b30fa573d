//! `daytona-daemon init`: PID 1 of a sandbox.
//!
//! PID 1 supervises the toolbox server and reaps orphans. It does nothing else, so that the
//! toolbox server can crash and restart without taking the sandbox's processes with it.
//!
//! - It starts `/usr/local/bin/daytona-daemon toolbox` with the listening toolbox socket on
//!   fd 3 and the daemon configuration on fd 4, and restarts it with a growing backoff when it
//!   exits. The configuration arrives from the setup stage in a memory file, which PID 1 keeps
//!   and the toolbox server updates, so that its changes survive the server's restart.
//! - It reaps every child with `waitpid(-1)`: the toolbox server and orphans that the kernel
//!   reparents to PID 1. Processes that the toolbox server started are its children, so their
//!   exit status stays with it as long as it runs.
//! - On SIGTERM from outside the sandbox (the runner's stop) it sends SIGTERM to every
//!   process of the sandbox, waits for them briefly and exits, which makes the kernel kill
//!   whatever is left in the PID namespace.
//!
//! Signals are taken synchronously with `sigtimedwait`: SIGCHLD and SIGTERM are blocked and
//! have no handler. Other signals keep their default action, which the kernel ignores for
//! PID 1 when they come from inside the sandbox.
//!
//! `init -- <command...>` is a test hook of the isolation runtime: PID 1 runs the command,
//! confined like a workload, in place of the toolbox server, and shuts the sandbox down with
//! the command's exit code when it exits.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use daytona_isolation::spec::DAEMON_PATH_IN_SANDBOX;
use daytona_isolation::workload::Confinement;
use daytona_wire::daemon::{CONFIG_ENV, CONFIG_FD_ENV};
use nix::errno::Errno;
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// The toolbox socket, inherited from the setup stage.
const TOOLBOX_FD: RawFd = 3;

/// Where the toolbox server finds the memory file that holds its configuration.
const CONFIG_FD: RawFd = 4;

/// First delay before restarting a toolbox server that exited.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Maximum delay between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A toolbox server that ran this long is restarted after `MIN_BACKOFF` again.
const STABLE_RUN: Duration = Duration::from_secs(10);

/// How long processes get to exit after SIGTERM before PID 1 exits anyway.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Environment of the test command.
const TEST_COMMAND_ENV: [(&str, &str); 3] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/root"),
    ("LANG", "C.UTF-8"),
];

/// Entry point of `daytona-daemon init`. Never returns.
pub fn main() -> ! {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();

    let args: Vec<String> = std::env::args().skip(2).collect();
    let child = match args.split_first() {
        None => Supervised::Toolbox,
        Some((separator, command)) if separator == "--" && !command.is_empty() => {
            Supervised::TestCommand(command.to_vec())
        }
        Some(_) => {
            eprintln!("usage: daytona-daemon init [-- <command> [<argument>...]]");
            std::process::exit(2);
        }
    };
    std::process::exit(Init::new(child).run())
}

/// The process that PID 1 starts and supervises.
enum Supervised {
    Toolbox,
    TestCommand(Vec<String>),
}

struct Init {
    supervised: Supervised,
    /// The daemon configuration as a memory file, which outlives each toolbox server.
    config: Option<OwnedFd>,
    signals: SigSet,
    /// Pid of the running toolbox server or test command.
    child: Option<Pid>,
    started_at: Instant,
    /// When to start the toolbox server again after it exited.
    restart_at: Option<Instant>,
    backoff: Duration,
}

impl Init {
    fn new(supervised: Supervised) -> Self {
        let mut signals = SigSet::empty();
        signals.add(Signal::SIGCHLD);
        signals.add(Signal::SIGTERM);
        Self {
            supervised,
            config: None,
            signals,
            child: None,
            started_at: Instant::now(),
            restart_at: None,
            backoff: MIN_BACKOFF,
        }
    }

    /// Runs until the sandbox stops; returns PID 1's exit code.
    fn run(mut self) -> i32 {
        // PID 1 of the setup stage blocked both before the exec, so that a SIGTERM sent
        // right after the start is not dropped. Blocking them here again keeps init correct
        // when it is started some other way.
        if let Err(errno) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&self.signals), None) {
            tracing::error!(%errno, "failed to block SIGCHLD and SIGTERM");
            return 1;
        }
        if matches!(self.supervised, Supervised::Toolbox) {
            match config_memfd() {
                Ok(config) => self.config = config,
                Err(err) => {
                    tracing::error!(error = %err, "failed to keep the daemon configuration");
                    return 1;
                }
            }
        }
        if let Err(err) = self.start_child() {
            tracing::error!(error = %err, "failed to start the sandbox's first process");
            if matches!(self.supervised, Supervised::TestCommand(_)) {
                return 127;
            }
            self.schedule_restart();
        }

        loop {
            let timeout = self
                .restart_at
                .map(|at| at.saturating_duration_since(Instant::now()));
            match wait_signal(&self.signals, timeout) {
                Some((Signal::SIGCHLD, _)) => {
                    if let Some(code) = self.reap() {
                        return shutdown(&self.signals, code);
                    }
                }
                // si_pid is 0 for a sender outside the sandbox's PID namespace. SIGTERM
                // from inside (a workload that escaped its Landlock domain on an old kernel,
                // say) does not stop the sandbox.
                Some((Signal::SIGTERM, 0)) => {
                    tracing::info!("SIGTERM from the host; stopping the sandbox");
                    return shutdown(&self.signals, 0);
                }
                Some(_) => {}
                None => self.restart_if_due(),
            }
        }
    }

    /// Starts the toolbox server or the test command.
    fn start_child(&mut self) -> std::io::Result<()> {
        let mut command = Command::new(DAEMON_PATH_IN_SANDBOX);
        let mut confinement = None;
        match &self.supervised {
            Supervised::Toolbox => {
                command.arg("toolbox");
            }
            Supervised::TestCommand(argv) => {
                command = test_command(argv);
                confinement = Some(Confinement::prepare()?);
            }
        }

        // The child inherits the signal mask, and std's spawn does not reset it.
        let signals = self.signals;
        let config_fd = self.config.as_ref().map(|fd| fd.as_raw_fd());
        if config_fd.is_some() {
            command.env(CONFIG_FD_ENV, CONFIG_FD.to_string());
        }
        // SAFETY: the closure only makes system calls (sigprocmask, dup2 or fcntl, and `apply`,
        // which is written for this place), as required between fork and exec.
        unsafe {
            command.pre_exec(move || {
                sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&signals), None)?;
                // dup2 onto itself keeps close-on-exec set, so that case clears the flag.
                let moved = match config_fd {
                    Some(fd) if fd == CONFIG_FD => libc::fcntl(fd, libc::F_SETFD, 0),
                    Some(fd) => libc::dup2(fd, CONFIG_FD),
                    None => 0,
                };
                if moved < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                match &confinement {
                    Some(confinement) => confinement.apply(),
                    None => Ok(()),
                }
            });
        }
        let child = command.spawn()?;
        self.child = Some(Pid::from_raw(child.id() as i32));
        self.started_at = Instant::now();
        Ok(())
    }

    /// Reaps every exited child. Returns an exit code when the sandbox should stop: the test
    /// command exited.
    fn reap(&mut self) -> Option<i32> {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return None,
                Ok(status) => status,
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    tracing::error!(%errno, "waitpid failed");
                    return None;
                }
            };
            let Some(pid) = status.pid() else { continue };
            if Some(pid) != self.child {
                // An orphan; its status has no reader.
                continue;
            }
            self.child = None;
            let code = exit_code(status);
            match self.supervised {
                Supervised::TestCommand(_) => return Some(code),
                Supervised::Toolbox => {
                    tracing::warn!(%pid, code, "toolbox server exited; restarting it");
                    self.schedule_restart();
                }
            }
        }
    }

    fn schedule_restart(&mut self) {
        if self.started_at.elapsed() >= STABLE_RUN {
            self.backoff = MIN_BACKOFF;
        }
        self.restart_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn restart_if_due(&mut self) {
        let Some(at) = self.restart_at else { return };
        if Instant::now() < at {
            return;
        }
        self.restart_at = None;
        if let Err(err) = self.start_child() {
            tracing::error!(error = %err, "failed to restart the toolbox server");
            self.schedule_restart();
        }
    }
}

/// Builds the test command, which runs confined like a workload (root in the sandbox with Docker's
/// capabilities, seccomp profile and a Landlock domain), with a plain environment and
/// without the toolbox socket.
/// Takes the memory file with the daemon configuration that the setup stage passed (its
/// descriptor named by `DAYTONA_DAEMON_CONFIG_FD`), or moves a configuration found in the
/// environment into a new one. PID 1 keeps it and hands it to every toolbox server it starts.
/// `None` when neither is there.
fn config_memfd() -> std::io::Result<Option<OwnedFd>> {
    if let Some(fd) = std::env::var_os(CONFIG_FD_ENV) {
        // SAFETY: PID 1 is single-threaded, so no other thread reads the environment.
        unsafe { std::env::remove_var(CONFIG_FD_ENV) };
        let fd: RawFd = fd.to_str().and_then(|fd| fd.parse().ok()).ok_or_else(|| {
            std::io::Error::other(format!("{CONFIG_FD_ENV} is not a descriptor number"))
        })?;
        // SAFETY: the setup stage created this descriptor for PID 1 alone, and nothing else in
        // this process owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Only the toolbox server gets it, as fd 4; other children must not.
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
        return Ok(Some(fd));
    }
    let Some(config) = std::env::var_os(CONFIG_ENV) else {
        return Ok(None);
    };
    // SAFETY: PID 1 is single-threaded, so no other thread reads the environment.
    unsafe { std::env::remove_var(CONFIG_ENV) };
    let fd = memfd_create(c"daytona-daemon-config", MFdFlags::MFD_CLOEXEC)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(config.as_encoded_bytes())?;
    Ok(Some(file.into()))
}

fn test_command(argv: &[String]) -> Command {
    // SAFETY: fcntl on a descriptor number; an invalid one only returns an error.
    unsafe { libc::fcntl(TOOLBOX_FD, libc::F_SETFD, libc::FD_CLOEXEC) };

    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env_clear()
        .envs(TEST_COMMAND_ENV)
        .current_dir("/");
    command
}

/// Stops every process of the sandbox and returns `code` for PID 1 to exit with.
fn shutdown(signals: &SigSet, code: i32) -> i32 {
    // kill(-1) from PID 1 reaches every other process in its PID namespace.
    match kill(Pid::from_raw(-1), Signal::SIGTERM) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(errno) => tracing::error!(%errno, "failed to send SIGTERM to the sandbox"),
    }
    let deadline = Instant::now() + TERM_GRACE;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Err(Errno::ECHILD) => return code,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(errno) => {
                tracing::error!(%errno, "waitpid failed during shutdown");
                return code;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::warn!(grace = ?TERM_GRACE, "processes ignored SIGTERM; exiting, which kills them");
            return code;
        }
        // Orphans reparent to PID 1 as their parents exit, so an empty waitpid means that
        // the whole namespace is gone.
        wait_signal(signals, Some(left));
    }
}

/// Waits for a blocked signal, at most `timeout` (forever if `None`). Returns the signal and
/// the sender's pid as seen from this PID namespace (0 for the host and the kernel).
fn wait_signal(signals: &SigSet, timeout: Option<Duration>) -> Option<(Signal, i32)> {
    let timespec = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    // SAFETY: siginfo_t is plain old data, for which all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let timeout_ptr = timespec
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: the set, info and timeout pointers are valid for the duration of the call.
    let number = unsafe { libc::sigtimedwait(signals.as_ref(), &mut info, timeout_ptr) };
    if number < 0 {
        // EAGAIN: the timeout passed; EINTR: another signal interrupted the wait.
        return None;
    }
    let signal = Signal::try_from(number).ok()?;
    // SAFETY: sigtimedwait filled in `info` for a signal sent with kill or by the kernel.
    let sender = unsafe { info.si_pid() };
    Some((signal, sender))
}

/// Converts a wait status to the shell's convention: the exit code, or 128 + the signal
/// number.
fn exit_code(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, signal, _) => 128 + signal as i32,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_shell() {
        let pid = Pid::from_raw(1);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 3)), 3);
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            137
        );
    }

    #[test]
    fn restart_backoff_grows_and_caps() {
        let mut init = Init::new(Supervised::Toolbox);
        let mut delays = Vec::new();
        for _ in 0..8 {
            init.schedule_restart();
            delays.push(init.restart_at.unwrap() - Instant::now());
        }
        assert!(delays[0] <= MIN_BACKOFF);
        assert!(delays[1] > MIN_BACKOFF);
        assert!(delays[7] <= MAX_BACKOFF);
        assert!(delays[7] > MAX_BACKOFF / 2);
    }
}
