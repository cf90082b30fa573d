//! The launcher process: `daytona-daemon launcher [--unconfined]`.
//!
//! It serves spawn requests on fd 3 until the client closes its end of the socket, one at a
//! time, because each takes well under a millisecond.

use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::Identity;
use super::child::{self, Prepared, Spawned};
use super::protocol::{self, RECEIVE_BUFFER, Reply};
use crate::sandbox_log;
use crate::sys::{self, ChildStack};
use crate::workload::Confinement;

/// The socket to the client arrives on this descriptor.
const SOCKET_FD: RawFd = 3;

/// How often the launcher checks the size of the sandbox log, its standard error.
const LOG_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Errors of the launcher's start, written to its standard error before it exits.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("fd {SOCKET_FD} is not a SOCK_SEQPACKET socket")]
    Socket { source: io::Error },

    #[error("failed to {operation}")]
    System {
        operation: &'static str,
        source: io::Error,
    },

    #[error("failed to prepare the workload confinement")]
    PrepareConfinement { source: io::Error },

    #[error("failed to confine the launcher")]
    Confine { source: io::Error },

    #[error("failed to report readiness to the client")]
    Ready { source: io::Error },
}

/// Entry point of `daytona-daemon launcher`. Exits when the client closes the socket.
/// Open-file limits of workloads, Docker's historical defaults: 1024 per process unless the
/// workload raises its soft limit, to at most 4096.
const WORKLOAD_OPEN_FILES_SOFT: libc::rlim_t = 1024;
const WORKLOAD_OPEN_FILES_HARD: libc::rlim_t = 4096;

pub fn main() -> ! {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let confined = match args.as_slice() {
        [] => true,
        [flag] if flag == "--unconfined" => false,
        _ => {
            eprintln!("usage: daytona-daemon launcher [--unconfined]");
            std::process::exit(2);
        }
    };
    match Launcher::start(confined) {
        Ok(launcher) => {
            launcher.serve();
            std::process::exit(0)
        }
        Err(err) => {
            tracing::error!(error = %ErrorChain(&err), "the launcher failed to start");
            std::process::exit(1)
        }
    }
}

struct Launcher {
    socket: OwnedFd,
    dev_null: OwnedFd,
    confined: bool,
    /// Whether the launcher runs as root (of its user namespace).
    is_root: bool,
    /// The stack of each child until its exec.
    stack: ChildStack,
}

impl Launcher {
    fn start(confined: bool) -> Result<Self, StartError> {
        // 1. Workloads must inherit nothing but their standard streams. The toolbox server's
        //    spawn set up 0 to 3; anything above leaked from it.
        // SAFETY: no Rust object in this process owns a descriptor above SOCKET_FD yet.
        unsafe { libc::close_range(SOCKET_FD as libc::c_uint + 1, libc::c_uint::MAX, 0) };
        let socket = take_socket()?;

        // 2. Workloads are in the launcher's Landlock domain, so only the dumpable flag keeps
        //    them from ptrace on the launcher, whose descriptors (the socket, the sandbox log)
        //    they must not reach, and on its children before exec. The children inherit the
        //    flag until exec.
        sys::prctl(libc::PR_SET_DUMPABLE, 0).map_err(|source| StartError::System {
            operation: "clear the dumpable flag",
            source,
        })?;
        let dev_null = File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|source| StartError::System {
                operation: "open /dev/null",
                source,
            })?;

        // 3. Bound the open files of every workload. The kernel charges an open file to the
        //    sandbox's memory cgroup at only a few hundred bytes, so without this a sandbox
        //    could fill the host's file table, which all sandboxes share.
        if confined {
            let limit = libc::rlimit {
                rlim_cur: WORKLOAD_OPEN_FILES_SOFT,
                rlim_max: WORKLOAD_OPEN_FILES_HARD,
            };
            // SAFETY: setrlimit reads the struct, which lives for the call.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
                return Err(StartError::System {
                    operation: "limit the open files of workloads",
                    source: std::io::Error::last_os_error(),
                });
            }
        }

        // 4. Last, because it drops CAP_SYS_ADMIN: the one Landlock domain of the sandbox's
        //    workloads, Docker's seccomp profile and capability set, all inherited by every
        //    child. Whatever the launcher does from here on, a root workload may do too.
        let landlock = if confined {
            let confinement = Confinement::prepare()
                .map_err(|source| StartError::PrepareConfinement { source })?;
            confinement
                .apply()
                .map_err(|source| StartError::Confine { source })?;
            confinement.landlock_enabled()
        } else {
            false
        };

        let stack = ChildStack::new().map_err(|source| StartError::System {
            operation: "map the stack of the children",
            source,
        })?;
        let launcher = Self {
            socket,
            dev_null: dev_null.into(),
            is_root: nix::unistd::geteuid().is_root(),
            confined,
            stack,
        };
        let ready = Reply::Ready { confined, landlock };
        launcher
            .reply(&ready)
            .map_err(|source| StartError::Ready { source })?;
        Ok(launcher)
    }

    /// Serves requests until the client closes its end or the socket fails.
    fn serve(mut self) {
        let mut buffer = vec![0u8; RECEIVE_BUFFER];
        let mut log_checked: Option<Instant> = None;
        loop {
            if log_checked.is_none_or(|at| at.elapsed() >= LOG_CHECK_INTERVAL) {
                trim_log();
                log_checked = Some(Instant::now());
            }
            match wait_readable(self.socket.as_fd(), LOG_CHECK_INTERVAL) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    tracing::error!(error = %err, "failed to poll the launcher socket");
                    return;
                }
            }

            let result = match protocol::receive(self.socket.as_fd(), &mut buffer) {
                // Zero bytes without descriptors: the client closed its end.
                Ok(received) if received.len == 0 && received.fds.is_empty() => return,
                Ok(received) => self.handle(&buffer[..received.len], received.fds),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == io::ErrorKind::InvalidData => {
                    self.reject(err.to_string())
                }
                Err(err) => {
                    tracing::error!(error = %err, "failed to receive a spawn request");
                    return;
                }
            };
            if let Err(err) = result {
                tracing::error!(error = %err, "failed to reply to the client");
                return;
            }
        }
    }

    fn handle(&mut self, message: &[u8], fds: Vec<OwnedFd>) -> io::Result<()> {
        let request = match protocol::decode_request(message, fds, self.confined) {
            Ok(request) => request,
            Err(reason) => return self.reject(reason),
        };
        let switch_user = self.is_root || request.user.as_ref().is_some_and(|u| !is_own(u));
        let prepared = Prepared::new(request, self.dev_null.as_raw_fd(), switch_user);
        self.spawn(&prepared)
    }

    /// Creates the child and reports its pid once it executed the program, or why it failed.
    fn spawn(&mut self, prepared: &Prepared) -> io::Result<()> {
        let reply = match child::spawn(prepared, &mut self.stack) {
            Ok(Spawned { pid, failure: None }) => Reply::Started { pid },
            Ok(Spawned {
                pid,
                failure: Some((step, errno)),
            }) => Reply::StartFailed { pid, step, errno },
            Err(err) => Reply::CloneFailed {
                errno: err.raw_os_error().unwrap_or(libc::EIO),
            },
        };
        self.reply(&reply)
    }

    fn reject(&self, reason: String) -> io::Result<()> {
        tracing::warn!(%reason, "rejected a spawn request");
        self.reply(&Reply::Rejected { reason })
    }

    fn reply(&self, reply: &Reply) -> io::Result<()> {
        protocol::send(self.socket.as_fd(), &protocol::encode_reply(reply), &[])
    }
}

/// Takes fd 3, checks that it is the client's socket and marks it close-on-exec.
fn take_socket() -> Result<OwnedFd, StartError> {
    let mut socket_type: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `socket_type`. A descriptor that is
    // not open or not a socket only makes it fail.
    let ret = unsafe {
        libc::getsockopt(
            SOCKET_FD,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&raw mut socket_type).cast(),
            &mut len,
        )
    };
    if ret < 0 {
        let source = io::Error::last_os_error();
        return Err(StartError::Socket { source });
    }
    if socket_type != libc::SOCK_SEQPACKET {
        let message = format!("socket type {socket_type}");
        let source = io::Error::new(io::ErrorKind::InvalidInput, message);
        return Err(StartError::Socket { source });
    }

    // SAFETY: SOCKET_FD is an open socket that the client's spawn placed there for this
    // process, and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(SOCKET_FD) };
    nix::fcntl::fcntl(
        &socket,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|errno| StartError::System {
        operation: "mark the socket close-on-exec",
        source: errno.into(),
    })?;
    Ok(socket)
}

fn is_own(user: &Identity) -> bool {
    nix::unistd::geteuid().as_raw() == user.uid && nix::unistd::getegid().as_raw() == user.gid
}

/// Waits until the socket is readable (a message or end of file), at most `timeout`.
fn wait_readable(socket: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut fds = [PollFd::new(socket, PollFlags::POLLIN)];
    let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let ready = poll(&mut fds, PollTimeout::from(millis))?;
    Ok(ready > 0)
}

/// Trims the sandbox log when the launcher's standard error is that file.
fn trim_log() {
    // SAFETY: descriptor 2 stays open for the life of this process and no Rust object owns
    // it, so the borrowed File must not close it.
    let stderr = ManuallyDrop::new(unsafe { File::from_raw_fd(libc::STDERR_FILENO) });
    if let Err(err) = sandbox_log::trim(&stderr) {
        tracing::warn!(error = %err, "failed to trim the sandbox log");
    }
}

/// Formats an error with its chain of causes on one line.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
