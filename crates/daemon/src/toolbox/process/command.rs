//! Runs one workload command: spawns it through the launcher, confined and as the sandbox
//! user, captures its output within a cap, and kills its process group when it times out.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

pub use daytona_isolation::launcher::Identity;
use daytona_isolation::launcher::LauncherClient;
pub use daytona_isolation::launcher::{LaunchError, SessionMode, SpawnRequest, Workload};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;

use super::output::OutputText;
use super::reader::OutputReader;

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

/// Starts workload processes through the sandbox's launcher: confined when the sandbox
/// requires it, as the sandbox user, each in its own process group.
///
/// The launcher puts every workload into one Landlock domain, so that workloads of different
/// requests can signal each other while the toolbox server stays out of their reach. The
/// toolbox server is the parent of every workload and owns their exit status.
#[derive(Debug)]
pub struct Launcher {
    /// `None` when workloads run as the daemon's own user.
    identity: Option<Identity>,
    client: LauncherClient,
    confine: bool,
}

impl Launcher {
    /// `confine` selects a confining launcher (in a sandbox) or an unconfined one (the daemon's
    /// own tests); `executable` is the daemon binary that runs as the launcher.
    pub fn new(identity: Option<Identity>, confine: bool, executable: PathBuf) -> Self {
        let client = if confine {
            LauncherClient::new(executable)
        } else {
            LauncherClient::unconfined(executable)
        };
        Self {
            identity,
            client,
            confine,
        }
    }

    /// Starts the launcher ahead of the first request, which would otherwise wait for it.
    pub async fn warm_up(&self) {
        if let Err(error) = self.client.ensure_started().await {
            tracing::warn!(%error, "failed to start the workload launcher; the next command retries");
        }
    }

    /// A spawn request for `spec`, as the sandbox user and in a new process group; callers may
    /// change the session mode or the controlling terminal before [`Launcher::spawn_request`].
    pub fn request(&self, spec: &CommandSpec) -> SpawnRequest {
        let mut argv = Vec::with_capacity(spec.args.len() + 1);
        argv.push(spec.program.clone().into_os_string());
        argv.extend(spec.args.iter().cloned());
        let mut request = SpawnRequest::new(argv);
        request.env = spec
            .env
            .iter()
            .map(|(name, value)| (OsString::from(name), OsString::from(value)))
            .collect();
        request.cwd = spec.cwd.clone();
        request.user = self.identity.clone();
        request.confine = self.confine;
        request.session = SessionMode::NewProcessGroup;
        request
    }

    /// Starts one process for a request built by [`Launcher::request`], with the given stdio.
    pub async fn spawn_request(
        &self,
        request: SpawnRequest,
        stdio: [Option<OwnedFd>; 3],
    ) -> Result<Workload, LaunchError> {
        self.client.spawn(request, stdio).await
    }

    /// Starts one process for `spec`, in a new process group, with the given stdio.
    pub async fn spawn(
        &self,
        spec: &CommandSpec,
        stdio: [Option<OwnedFd>; 3],
    ) -> Result<Workload, LaunchError> {
        self.spawn_request(self.request(spec), stdio).await
    }

    /// Runs a command to its end or its timeout.
    ///
    /// If the returned future is dropped before the command ends (the client went away), the
    /// command's process group is killed.
    pub async fn run(&self, spec: CommandSpec) -> Outcome {
        let (reader, pipes) = match OutputReader::start(spec.output_limit) {
            Ok(started) => started,
            Err(error) => return Outcome::Failed { error },
        };
        let (stdin_read, stdin_write) = match spec.stdin {
            Some(_) => match pipe() {
                Ok((read, write)) => (Some(read), Some(write)),
                Err(error) => return Outcome::Failed { error },
            },
            None => (None, None),
        };
        // The launcher passes these descriptors to the workload; dropping the daemon's copies
        // afterwards lets the reader see end of file once the command's processes close theirs.
        let stdio = [stdin_read, Some(pipes.stdout), Some(pipes.stderr)];
        let workload = match self.spawn(&spec, stdio).await {
            Ok(workload) => workload,
            Err(error) => {
                return Outcome::Failed {
                    error: launch_error_to_io(error),
                };
            }
        };
        let mut group = GroupKiller::new(&workload);

        // Feed the input while waiting: a command may read its input only after writing
        // output, or never.
        let ended = {
            let feed = feed_stdin(stdin_write, spec.stdin);
            let deadline = sleep_for(spec.timeout);
            tokio::pin!(feed, deadline);
            let mut fed = false;
            loop {
                tokio::select! {
                    status = workload.wait() => break Ended::Exited(status),
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
                let _ = workload.wait().await;
                let output = reader.finish(DRAIN_GRACE).await;
                Outcome::TimedOut {
                    output: output.into_text(),
                }
            }
        }
    }
}

/// Converts a launch failure to an I/O error, keeping the errno of a program that could not
/// start (ENOENT, EACCES), which callers report as such.
pub fn launch_error_to_io(error: LaunchError) -> io::Error {
    match error.start_error() {
        Some(start) => io::Error::new(start.kind(), error.to_string()),
        None => io::Error::other(error.to_string()),
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// Exit code as a shell reports it: the status, or 128 + N when signal N ended the process.
pub fn exit_code(status: ExitStatus) -> i32 {
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
async fn feed_stdin(stdin: Option<OwnedFd>, input: Option<Vec<u8>>) {
    let (Some(stdin), Some(input)) = (stdin, input) else {
        return;
    };
    let Ok(mut stdin) = tokio::net::unix::pipe::Sender::from_owned_fd(stdin) else {
        return;
    };
    let _ = stdin.write_all(&input).await;
}

/// Kills a command's process group when dropped, unless disarmed.
struct GroupKiller {
    pgid: Option<Pid>,
}

impl GroupKiller {
    /// The workload leads its own process group, so its pid is the group id.
    fn new(workload: &Workload) -> Self {
        Self {
            pgid: Some(Pid::from_raw(workload.pid())),
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
