//! Runs one workload command: spawns it confined and as the sandbox user, captures its output
//! within a cap, and kills its process group when it times out.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use daytona_isolation::workload::Confinement;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::{ChildStdin, Command};

use super::output::OutputText;
use super::reader::{OutputPipes, OutputReader};

/// How long output is still read after the command's main process exited. Background
/// processes that inherited the output pipes may keep them open for much longer; the
/// response does not wait for them.
const DRAIN_GRACE: Duration = Duration::from_millis(100);

/// Description of one command: program, arguments, environment, input and limits.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    /// Absolute path of the program.
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The complete environment; nothing is inherited from the daemon.
    pub env: BTreeMap<String, String>,
    /// Working directory, entered as the sandbox user.
    pub cwd: PathBuf,
    /// Bytes written to standard input, which is then closed; `None` connects `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
    /// Cap on each captured stream, in bytes.
    pub output_limit: usize,
}

/// Result of running a command.
#[derive(Debug)]
pub enum Outcome {
    /// The main process exited, or a signal ended it.
    Exited { exit_code: i32, output: OutputText },
    /// The timeout elapsed and the process group was killed.
    TimedOut { output: OutputText },
    /// The process could not be started, or its status could not be read.
    Failed { error: io::Error },
}

/// The uid, gid and groups a workload switches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
}

/// Starts workload processes: confined when the sandbox requires it, as the sandbox user, each
/// in its own process group.
#[derive(Debug, Default)]
pub struct Launcher {
    /// `None` when workloads run as the daemon's own user.
    identity: Option<Identity>,
    /// `None` when workloads run unconfined (outside a sandbox, in the daemon's own tests).
    confinement: Option<Arc<Confinement>>,
}

impl Launcher {
    pub fn new(identity: Option<Identity>, confinement: Option<Confinement>) -> Self {
        Self {
            identity,
            confinement: confinement.map(Arc::new),
        }
    }

    /// Runs a command to its end or its timeout.
    ///
    /// If the returned future is dropped before the command ends (the client went away), the
    /// command's process group is killed.
    pub async fn run(&self, spec: CommandSpec) -> Outcome {
        let started = OutputReader::start(spec.output_limit).and_then(|(reader, pipes)| {
            let mut command = self.command(&spec, pipes)?;
            // `command` keeps the daemon's copies of the pipes' write ends until it is dropped at
            // the end of this closure. The reader then sees end of file as soon as the
            // command's own processes close theirs.
            Ok((reader, command.spawn()?))
        });
        let (reader, mut child) = match started {
            Ok(started) => started,
            Err(error) => return Outcome::Failed { error },
        };
        let mut group = GroupKiller::new(child.id());

        // Feed the input while waiting: a command may read its input only after writing
        // output, or never.
        let ended = {
            let feed = feed_stdin(child.stdin.take(), spec.stdin);
            let deadline = sleep_for(spec.timeout);
            tokio::pin!(feed, deadline);
            let mut fed = false;
            loop {
                tokio::select! {
                    status = child.wait() => break Ended::Exited(status),
                    () = &mut feed, if !fed => fed = true,
                    () = &mut deadline => break Ended::TimedOut,
                }
            }
        };

        match ended {
            Ended::Exited(Ok(status)) => {
                // Background processes the command started keep running, as they would after
                // the command returned in a terminal.
                group.disarm();
                let output = reader.finish(DRAIN_GRACE).await;
                Outcome::Exited {
                    exit_code: exit_code(status),
                    output: output.into_text(),
                }
            }
            Ended::Exited(Err(error)) => {
                group.kill();
                Outcome::Failed { error }
            }
            Ended::TimedOut => {
                // Kill before reaping: while the main process is unreaped, its pid, which is
                // also the group id, cannot be reused.
                group.kill();
                let _ = child.wait().await;
                let output = reader.finish(DRAIN_GRACE).await;
                Outcome::TimedOut {
                    output: output.into_text(),
                }
            }
        }
    }

    fn command(&self, spec: &CommandSpec, pipes: OutputPipes) -> io::Result<Command> {
        let cwd = CString::new(spec.cwd.as_os_str().as_bytes())?;
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .env_clear()
            .envs(&spec.env)
            .stdin(match spec.stdin {
                Some(_) => Stdio::piped(),
                None => Stdio::null(),
            })
            .stdout(Stdio::from(pipes.stdout))
            .stderr(Stdio::from(pipes.stderr))
            .process_group(0);

        let identity = self.identity.clone();
        let confinement = self.confinement.clone();
        // SAFETY: the closure runs in the forked child before exec. It only makes system
        // calls (`Confinement::apply` promises the same) on memory that was allocated before
        // the fork and stays valid in the child's copy of the address space.
        unsafe {
            command
                .pre_exec(move || enter_workload(confinement.as_deref(), identity.as_ref(), &cwd));
        }
        Ok(command)
    }
}

/// Turns the forked child into the workload. Runs between fork and exec.
fn enter_workload(
    confinement: Option<&Confinement>,
    identity: Option<&Identity>,
    cwd: &CStr,
) -> io::Result<()> {
    // 1. Confine first, while the child is still root in the sandbox: installing the
    //    seccomp filter without no_new_privs and setting the capability sets need privileges
    //    that the user switch drops.
    //    NOTE: `apply` gives each workload its own Landlock domain. On kernels with Landlock
    //    scopes (6.12 and later), a command therefore cannot signal the processes of another
    //    command, such as a server an earlier command left running. Spawning through one
    //    launcher process that entered a single domain for all workloads removes this.
    if let Some(confinement) = confinement {
        confinement.apply()?;
    }

    // 2. Switch to the sandbox user: groups, then gid, then uid, because once the uid changes
    //    the process may no longer change its groups.
    if let Some(identity) = identity {
        // SAFETY: `groups` is a live slice whose length is passed with it.
        check(unsafe { libc::setgroups(identity.groups.len(), identity.groups.as_ptr()) })?;
        // SAFETY: plain system calls on integer arguments.
        check(unsafe { libc::setgid(identity.gid) })?;
        // SAFETY: as above.
        check(unsafe { libc::setuid(identity.uid) })?;
    }

    // 3. Enter the working directory as the user, so that its permissions apply to them.
    // SAFETY: `cwd` is a NUL-terminated string that outlives the call.
    check(unsafe { libc::chdir(cwd.as_ptr()) })?;
    Ok(())
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Exit code as a shell reports it: the status, or 128 + N when signal N ended the process.
fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    }
}

enum Ended {
    Exited(io::Result<ExitStatus>),
    TimedOut,
}

async fn sleep_for(timeout: Option<Duration>) {
    match timeout {
        Some(timeout) => tokio::time::sleep(timeout).await,
        None => std::future::pending().await,
    }
}

/// Writes the input and closes standard input. A command that exits or closes its input early
/// makes the write fail, which is not an error of the run.
async fn feed_stdin(stdin: Option<ChildStdin>, input: Option<Vec<u8>>) {
    let (Some(mut stdin), Some(input)) = (stdin, input) else {
        return;
    };
    let _ = stdin.write_all(&input).await;
    let _ = stdin.shutdown().await;
}

/// Kills a command's process group when dropped, unless disarmed.
struct GroupKiller {
    pgid: Option<Pid>,
}

impl GroupKiller {
    fn new(pid: Option<u32>) -> Self {
        Self {
            pgid: pid
                .and_then(|pid| i32::try_from(pid).ok())
                .map(Pid::from_raw),
        }
    }

    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // ESRCH means every process of the group is gone already.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}
