//! The workload launcher: one long-lived process per sandbox that creates every workload.
//!
//! The toolbox server executes `daytona-daemon launcher` with one end of a `SOCK_SEQPACKET`
//! socket pair as fd 3 and talks to it through [`LauncherClient`]. At its start the launcher,
//! root in the sandbox's user namespace, enters the sandbox's one Landlock domain. For each
//! spawn request it creates the workload with `clone(CLONE_PARENT)`, so that:
//!
//! - every workload inherits the same Landlock domain, and workloads started by different
//!   requests can signal each other and connect to each other's abstract Unix sockets;
//! - the workload's parent is the toolbox server, not the launcher. The toolbox server owns
//!   the exit status: it waits on a pidfd and reaps with `waitid(P_PIDFD)`. Workloads keep
//!   running when the launcher dies, which a root workload can cause, because the launcher
//!   is in their domain. The client then starts a new launcher for the next request.
//!
//! The toolbox server and PID 1 stay outside the domain, so workloads cannot signal, ptrace
//! or connect to them. The launcher is not dumpable, so workloads cannot ptrace it either.
//!
//! The launcher confines itself once at its start: the Landlock domain, Docker's seccomp
//! profile and Docker's capability set (see [`crate::workload`]), which every workload
//! inherits. The clone also has CLONE_VM and CLONE_VFORK, as posix_spawn does: the child
//! runs in the launcher's memory until its exec, which spares copying page tables (about
//! 0.2 ms of the 0.4 ms that a spawn took with a copy on the development machine). Between
//! clone and exec the child switches to the requested user. A child that fails there leaves
//! the step and errno in the shared memory, so that the client can tell "could not start"
//! from a process that ran.

mod child;
mod client;
mod protocol;
mod server;

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use client::{LauncherClient, Workload};
pub use server::main;

/// A workload to start: everything about it but its standard streams, which travel as
/// descriptors next to the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnRequest {
    /// The program and its arguments. A program without `/` is searched in the `PATH` of
    /// `env` (or `/usr/local/bin:/usr/bin:/bin` without one), as execvp does: a directory
    /// where the program is missing or not executable is skipped.
    pub argv: Vec<OsString>,
    /// The complete environment; nothing is inherited from the launcher.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory, entered after the switch to `user`, so that its permissions apply.
    pub cwd: PathBuf,
    /// The user to run as; `None` keeps the launcher's own (root in a sandbox).
    pub user: Option<Identity>,
    /// Whether the workload is confined. It must match the launcher, which is confined in
    /// production and unconfined only in the daemon's own tests outside a sandbox.
    pub confine: bool,
    pub session: SessionMode,
    /// The standard stream (0, 1 or 2) whose terminal becomes the controlling terminal of
    /// the workload, for PTYs. Needs [`SessionMode::NewSession`].
    pub controlling_terminal: Option<u8>,
    /// File mode creation mask, such as 0o022.
    pub umask: u32,
}

impl SpawnRequest {
    /// Creates a request for `argv` with an empty environment, `/` as working directory, the
    /// launcher's user, confinement, a new session and umask 022.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            user: None,
            confine: true,
            session: SessionMode::NewSession,
            controlling_terminal: None,
            umask: 0o022,
        }
    }
}

/// The uid, gid and supplementary groups that a workload switches to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// The detachment of a workload from the toolbox server's job control. Either way the
/// workload leads a new process group whose id is its pid, so [`Workload::kill_group`]
/// reaches the processes it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SessionMode {
    /// `setsid`: a new session without a controlling terminal, unless one is requested.
    NewSession,
    /// `setpgid(0, 0)`: a new process group in the toolbox server's session.
    NewProcessGroup,
}

/// The step at which a workload failed to start, named after its system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StartStep {
    /// Resetting the signal mask and dispositions.
    Signals,
    Setsid,
    Setpgid,
    /// Placing the standard streams on 0, 1 and 2.
    Dup2,
    /// setgroups, setgid and setuid.
    SwitchUser,
    /// Making a standard stream the controlling terminal.
    Tiocsctty,
    Chdir,
    Execve,
}

impl fmt::Display for StartStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StartStep::Signals => "resetting signals",
            StartStep::Setsid => "setsid",
            StartStep::Setpgid => "setpgid",
            StartStep::Dup2 => "placing the standard streams",
            StartStep::SwitchUser => "switching the user",
            StartStep::Tiocsctty => "setting the controlling terminal",
            StartStep::Chdir => "chdir",
            StartStep::Execve => "execve",
        })
    }
}

/// A spawn request that the launcher cannot carry out as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    #[error("argv is empty or names an empty program")]
    EmptyProgram,

    #[error("{field} contains a NUL byte")]
    NulByte { field: &'static str },

    #[error("invalid environment variable name {name:?}: it must be non-empty without '='")]
    EnvName { name: String },

    #[error("controlling terminal {index} is not a standard stream: use 0, 1 or 2")]
    TerminalIndex { index: u8 },

    #[error("a controlling terminal needs a new session")]
    TerminalWithoutSession,

    #[error("the controlling terminal {index} has no descriptor")]
    TerminalMissing { index: u8 },

    #[error("the launcher runs unconfined and cannot confine a workload")]
    ConfineUnavailable,

    #[error("the launcher runs confined, so every workload is confined: set confine")]
    ConfineRequired,

    #[error("the request is {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
}

/// Errors of [`LauncherClient::spawn`].
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("invalid spawn request")]
    Invalid { source: InvalidRequest },

    #[error("failed to start the launcher")]
    StartLauncher { source: io::Error },

    #[error("the launcher exited during its start; its error is in its standard error")]
    LauncherFailed,

    #[error("failed to pass the spawn request to the launcher")]
    Send { source: io::Error },

    #[error("failed to read the launcher's reply")]
    Receive { source: io::Error },

    #[error("the launcher exited while it handled a spawn request")]
    LauncherExited,

    #[error("the launcher did not reply within {timeout:?}")]
    Timeout { timeout: Duration },

    #[error("invalid reply from the launcher")]
    Protocol { source: serde_json::Error },

    #[error("unexpected reply from the launcher: {reply}")]
    UnexpectedReply { reply: String },

    #[error("the launcher rejected the request: {reason}")]
    Rejected { reason: String },

    #[error("failed to create the process for {program:?}")]
    Clone { program: String, source: io::Error },

    #[error("failed to start {program:?}: {step} failed")]
    Start {
        program: String,
        step: StartStep,
        source: io::Error,
    },

    #[error("failed to open a pidfd for workload {pid}")]
    Pidfd { pid: i32, source: io::Error },
}

impl LaunchError {
    /// Returns the OS error of a workload that could not be created or started, such as
    /// ENOENT for a missing program.
    pub fn start_error(&self) -> Option<&io::Error> {
        match self {
            LaunchError::Clone { source, .. } | LaunchError::Start { source, .. } => Some(source),
            _ => None,
        }
    }
}
