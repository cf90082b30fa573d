//! The interpreter process of one context: a Python worker (`repl_worker.py`) started through
//! the launcher as the sandbox user, and the task that reads what it writes.
//!
//! The worker's standard input is one end of a socket pair, on which the server sends runs
//! and the worker replies with JSON lines. Its standard output and standard error are pipes
//! that the server reads itself, so that the output of processes the code starts arrives too.
//! Before it passes on a message from the socket, the reader drains whatever the pipes
//! contain. The worker flushes its output before it replies, so the output of a run reaches
//! the client before the run's end.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use serde::Deserialize;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::toolbox::process::command::{CommandSpec, Launcher, Workload, launch_error_to_io};

/// Source of the worker, written once per server to a root-owned, read-only file.
const WORKER_SOURCE: &str = include_str!("repl_worker.py");

/// How long a new worker may take to report that it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest JSON line the worker may send. The worker caps the tracebacks it sends far below
/// this, so a longer line means the protocol is broken.
const MAX_MESSAGE: usize = 8 * 1024 * 1024;

/// Bytes read from an output pipe at a time.
const READ_CHUNK: usize = 32 * 1024;

/// Events buffered between the reader task and the run that consumes them. When no run
/// consumes them, the reader stops reading and the worker's writes wait.
const EVENT_BUFFER: usize = 64;

/// Errors of starting or talking to a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("failed to write the interpreter worker script {}", path.display())]
    WriteScript {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to create the pipes of the interpreter")]
    Pipes {
        #[source]
        source: io::Error,
    },
    #[error("failed to start {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the interpreter exited before it was ready; its output: {output}")]
    ExitedAtStart { output: String },
    #[error("the interpreter did not report ready within {START_TIMEOUT:?}")]
    StartTimeout,
    #[error("failed to send the code to the interpreter")]
    Send {
        #[source]
        source: io::Error,
    },
}

/// A message the worker sends on its socket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WorkerMessage {
    Ready,
    Error {
        #[serde(default)]
        name: String,
        #[serde(default)]
        value: String,
        #[serde(default)]
        traceback: String,
    },
    Control {
        text: String,
    },
}

/// An event a run receives from its worker. Events arrive in the order the worker produced
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    Stdout(String),
    Stderr(String),
    Message(WorkerMessage),
    /// The worker closed its socket: it exited, or broke the protocol and must be killed.
    Closed,
}

/// The worker script on disk, shared by every context of the server.
#[derive(Debug, Default)]
pub struct WorkerScript {
    path: std::sync::Mutex<Option<PathBuf>>,
}

impl WorkerScript {
    /// Returns the script's path, writing the file first when it is missing or was changed.
    ///
    /// The file is `daytona-interpreter-<hash of the script>/repl_worker.py` under the
    /// temporary directory, so that every server of a host (or of a sandbox, across restarts)
    /// shares one copy per script version. The directory (mode 0755) and the read-only file
    /// belong to the server, root in a sandbox: the sandbox user can run the script but not
    /// change what later contexts run. When someone else created that directory, a directory
    /// with a random name takes its place.
    pub fn ensure(&self) -> Result<PathBuf, WorkerError> {
        let mut path = self.path.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = path.as_ref()
            && is_trusted_script(existing)
        {
            return Ok(existing.clone());
        }
        let shared = std::env::temp_dir().join(format!(
            "daytona-interpreter-{:016x}",
            fnv1a(WORKER_SOURCE.as_bytes())
        ));
        let file = match write_script(&shared) {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(dir = %shared.display(), %error, "cannot use the shared interpreter script directory; using a private one");
                let private = std::env::temp_dir().join(format!(
                    "daytona-interpreter-{}",
                    uuid::Uuid::new_v4().simple()
                ));
                write_script(&private).map_err(|source| WorkerError::WriteScript {
                    path: private.join(SCRIPT_NAME),
                    source,
                })?
            }
        };
        *path = Some(file.clone());
        Ok(file)
    }
}

/// File name of the worker script.
const SCRIPT_NAME: &str = "repl_worker.py";

/// Writes the script into `dir` unless a trusted copy is there already; returns its path.
/// Fails when `dir` exists and is not a directory of this process's user that others cannot
/// write to.
fn write_script(dir: &Path) -> io::Result<PathBuf> {
    let file = dir.join(SCRIPT_NAME);
    if is_trusted_script(&file) {
        return Ok(file);
    }
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && is_private_dir(dir) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the directory belongs to another user or others can write to it",
            ));
        }
        Err(error) => return Err(error),
    }

    // Servers that start at the same time may write the script together: each writes its own
    // file and renames it into place, so that a worker never runs a half-written script.
    let partial = dir.join(format!(".{SCRIPT_NAME}.{}", uuid::Uuid::new_v4().simple()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&partial)
        .and_then(|mut output| std::io::Write::write_all(&mut output, WORKER_SOURCE.as_bytes()))
        .and_then(|()| std::fs::rename(&partial, &file));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    Ok(file)
}

/// Checks that `dir` is a real directory of this process's user that others cannot write to.
fn is_private_dir(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(dir).is_ok_and(|metadata| {
        metadata.is_dir()
            && metadata.uid() == nix::unistd::geteuid().as_raw()
            && metadata.mode() & 0o022 == 0
    })
}

/// Checks that `file` is the current script, read-only, in a private directory, and owned by
/// this process's user.
fn is_trusted_script(file: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(dir) = file.parent() else {
        return false;
    };
    let owned_read_only = std::fs::symlink_metadata(file).is_ok_and(|metadata| {
        metadata.is_file()
            && metadata.uid() == nix::unistd::geteuid().as_raw()
            && metadata.mode() & 0o222 == 0
    });
    owned_read_only
        && is_private_dir(dir)
        && std::fs::read(file).is_ok_and(|content| content == WORKER_SOURCE.as_bytes())
}

/// 64-bit FNV-1a, a hash that stays the same across builds, for the script directory's name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A running worker. Dropping it kills the worker's process group.
#[derive(Debug)]
pub struct Worker {
    workload: std::sync::Arc<Workload>,
    control: OwnedWriteHalf,
    events: mpsc::Receiver<WorkerEvent>,
    reader: tokio::task::JoinHandle<()>,
    /// Set once [`Worker::kill`] reaped the worker; its group id may be reused from then on.
    reaped: bool,
}

impl Worker {
    /// Starts `python3 -u <script>` as a workload in `cwd` with `env`, and waits until it
    /// reports ready.
    pub async fn start(
        launcher: &Launcher,
        python: PathBuf,
        script: &Path,
        cwd: PathBuf,
        env: BTreeMap<String, String>,
    ) -> Result<Self, WorkerError> {
        let (daemon_end, worker_end) = std::os::unix::net::UnixStream::pair()
            .map_err(|source| WorkerError::Pipes { source })?;
        let (stdout_read, stdout_write) = pipe().map_err(|source| WorkerError::Pipes { source })?;
        let (stderr_read, stderr_write) = pipe().map_err(|source| WorkerError::Pipes { source })?;

        let spec = CommandSpec {
            program: python.clone(),
            args: vec!["-u".into(), script.into()],
            env,
            cwd,
            stdin: None,
            timeout: None,
            output_limit: 0,
        };
        let stdio = [
            Some(OwnedFd::from(worker_end)),
            Some(stdout_write),
            Some(stderr_write),
        ];
        let workload = launcher
            .spawn(&spec, stdio)
            .await
            .map_err(|error| WorkerError::Spawn {
                program: python,
                source: launch_error_to_io(error),
            })?;

        daemon_end
            .set_nonblocking(true)
            .map_err(|source| WorkerError::Pipes { source })?;
        let (control_read, control) = UnixStream::from_std(daemon_end)
            .map_err(|source| WorkerError::Pipes { source })?
            .into_split();
        let stdout =
            OutputPipe::new(stdout_read).map_err(|source| WorkerError::Pipes { source })?;
        let stderr =
            OutputPipe::new(stderr_read).map_err(|source| WorkerError::Pipes { source })?;
        let (sender, events) = mpsc::channel(EVENT_BUFFER);
        let reader = tokio::spawn(read_worker(control_read, stdout, stderr, sender));

        let mut worker = Self {
            workload: std::sync::Arc::new(workload),
            control,
            events,
            reader,
            reaped: false,
        };
        worker.wait_until_ready().await?;
        Ok(worker)
    }

    async fn wait_until_ready(&mut self) -> Result<(), WorkerError> {
        let mut output = String::new();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            loop {
                match self.events.recv().await {
                    Some(WorkerEvent::Message(WorkerMessage::Ready)) => return true,
                    Some(WorkerEvent::Stdout(text) | WorkerEvent::Stderr(text)) => {
                        if output.len() < 4096 {
                            output.push_str(&text);
                        }
                    }
                    Some(WorkerEvent::Message(_)) => {}
                    Some(WorkerEvent::Closed) | None => return false,
                }
            }
        })
        .await;
        match ready {
            Ok(true) => Ok(()),
            Ok(false) => Err(WorkerError::ExitedAtStart {
                output: output.trim().to_owned(),
            }),
            Err(_) => Err(WorkerError::StartTimeout),
        }
    }

    /// Returns the worker's process, which a context keeps to kill it while a run owns the
    /// worker.
    pub fn workload(&self) -> std::sync::Arc<Workload> {
        self.workload.clone()
    }

    /// Drops the events that arrived while no run was reading: output that background
    /// threads or processes wrote between runs. Returns false when the worker has exited.
    pub fn discard_pending(&mut self) -> bool {
        loop {
            match self.events.try_recv() {
                Ok(WorkerEvent::Closed) | Err(mpsc::error::TryRecvError::Disconnected) => {
                    return false;
                }
                Ok(_) => {}
                Err(mpsc::error::TryRecvError::Empty) => return true,
            }
        }
    }

    /// Sends one run to the worker.
    pub async fn send_run(
        &mut self,
        code: &str,
        envs: &BTreeMap<String, String>,
    ) -> Result<(), WorkerError> {
        let mut line = serde_json::to_vec(&serde_json::json!({"code": code, "envs": envs}))
            .expect("a run always serializes");
        line.push(b'\n');
        self.control
            .write_all(&line)
            .await
            .map_err(|source| WorkerError::Send { source })
    }

    /// Returns the next event; [`WorkerEvent::Closed`] once the worker is gone.
    pub async fn next_event(&mut self) -> WorkerEvent {
        self.events.recv().await.unwrap_or(WorkerEvent::Closed)
    }

    /// Interrupts the run as Ctrl+C in a terminal would: SIGINT to the worker's process group,
    /// which includes the processes the code started.
    pub fn interrupt(&self) {
        if let Err(error) = self.workload.kill_group(libc::SIGINT) {
            tracing::debug!(pid = self.workload.pid(), %error, "failed to interrupt the interpreter");
        }
    }

    /// Kills the worker's process group and reaps the worker; returns how it ended.
    pub async fn kill(mut self) -> String {
        // Killing before reaping keeps the group id from being reused in between.
        let _ = self.workload.kill_group(libc::SIGKILL);
        let status = self.workload.wait().await;
        self.reaped = true;
        match status {
            Ok(status) => describe_status(status),
            Err(error) => format!("unknown status ({error})"),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // The worker is unreaped unless `kill` ran, so its group id still names its group.
        // The last owner of the workload reaps it.
        if !self.reaped {
            let _ = self.workload.kill_group(libc::SIGKILL);
        }
        self.reader.abort();
    }
}

/// Describes an exit status as a shell user would read it.
fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "unknown status".to_owned(),
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// The read end of an output pipe, non-blocking, with its undecoded UTF-8 tail.
struct OutputPipe {
    fd: AsyncFd<OwnedFd>,
    decoder: Utf8Decoder,
    open: bool,
}

impl OutputPipe {
    fn new(fd: OwnedFd) -> io::Result<Self> {
        fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
        // SAFETY: an OwnedFd always returns the descriptor it owns, which stays open and the
        // same until the AsyncFd, which owns the OwnedFd, is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self {
            fd,
            decoder: Utf8Decoder::default(),
            open: true,
        })
    }

    /// Reads what the pipe contains, waiting until it contains something. Returns `None` at
    /// end of file.
    async fn read(&mut self) -> Option<String> {
        let mut buffer = vec![0; READ_CHUNK];
        loop {
            let mut guard = match self.fd.readable().await {
                Ok(guard) => guard,
                Err(_) => return self.close(),
            };
            match guard.try_io(|fd| read_fd(fd.get_ref(), &mut buffer)) {
                Ok(Ok(0)) | Ok(Err(_)) => return self.close(),
                Ok(Ok(read)) => return Some(self.decoder.decode(&buffer[..read])),
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads what the pipe contains right now, without waiting. The read goes to the pipe itself,
    /// not to the reactor's idea of whether it is readable, so nothing written before the call
    /// is missed.
    fn drain(&mut self) -> String {
        let mut text = String::new();
        let mut buffer = vec![0; READ_CHUNK];
        while self.open {
            match read_fd(self.fd.get_ref(), &mut buffer) {
                Ok(0) => {
                    self.open = false;
                }
                Ok(read) => text.push_str(&self.decoder.decode(&buffer[..read])),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => self.open = false,
            }
        }
        text
    }

    fn close(&mut self) -> Option<String> {
        self.open = false;
        None
    }
}

fn read_fd(fd: &OwnedFd, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::read(fd.as_fd(), buffer) {
            Err(nix::errno::Errno::EINTR) => continue,
            result => return result.map_err(io::Error::from),
        }
    }
}

/// Decodes a byte stream as UTF-8 across chunk boundaries; invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    pub fn decode(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut text = String::with_capacity(self.pending.len());
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    rest = &[];
                    break;
                }
                Err(error) => {
                    let (valid, after) = rest.split_at(error.valid_up_to());
                    text.push_str(std::str::from_utf8(valid).expect("checked as valid"));
                    match error.error_len() {
                        Some(invalid) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[invalid..];
                        }
                        // An incomplete character at the end waits for the next chunk.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        text
    }
}

/// Reads the worker's socket and pipes until the socket closes, and sends what it reads to
/// the run as events.
async fn read_worker(
    control: OwnedReadHalf,
    mut stdout: OutputPipe,
    mut stderr: OutputPipe,
    events: mpsc::Sender<WorkerEvent>,
) {
    let mut lines = LineReader::new(control);
    loop {
        let event = tokio::select! {
            text = stdout.read(), if stdout.open => text.map(WorkerEvent::Stdout),
            text = stderr.read(), if stderr.open => text.map(WorkerEvent::Stderr),
            line = lines.next() => {
                // Output written before the message goes first.
                let out = stdout.drain();
                let err = stderr.drain();
                if !out.is_empty() && events.send(WorkerEvent::Stdout(out)).await.is_err() {
                    return;
                }
                if !err.is_empty() && events.send(WorkerEvent::Stderr(err)).await.is_err() {
                    return;
                }
                match line {
                    Some(line) => match serde_json::from_slice::<WorkerMessage>(&line) {
                        Ok(message) => Some(WorkerEvent::Message(message)),
                        // Code in the worker can write to the socket too, so this is not worth
                        // more than a debug line.
                        Err(error) => {
                            tracing::debug!(%error, "ignoring a malformed message of the interpreter");
                            None
                        }
                    },
                    None => {
                        let _ = events.send(WorkerEvent::Closed).await;
                        return;
                    }
                }
            }
        };
        if let Some(event) = event
            && events.send(event).await.is_err()
        {
            return;
        }
    }
}

/// Splits the socket's bytes into lines of at most [`MAX_MESSAGE`] bytes.
struct LineReader {
    socket: OwnedReadHalf,
    buffer: Vec<u8>,
    closed: bool,
}

impl LineReader {
    fn new(socket: OwnedReadHalf) -> Self {
        Self {
            socket,
            buffer: Vec::new(),
            closed: false,
        }
    }

    /// Returns the next line without its newline. Returns `None` at end of file, on an error, or
    /// when a line is too long, and the worker then counts as gone. Cancel-safe, because bytes
    /// read stay in the buffer.
    async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&byte| byte == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                return Some(line);
            }
            if self.closed || self.buffer.len() > MAX_MESSAGE {
                self.closed = true;
                return None;
            }
            let mut chunk = [0; 8192];
            match self.socket.read(&mut chunk).await {
                Ok(0) | Err(_) => self.closed = true,
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_is_written_once_and_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let scripts = dir.path().join("scripts");
        let file = write_script(&scripts).unwrap();
        assert!(is_trusted_script(&file));
        assert_eq!(write_script(&scripts).unwrap(), file);

        // A changed copy is replaced.
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, "print('changed')").unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o444))
            .unwrap();
        assert!(!is_trusted_script(&file));
        let rewritten = write_script(&scripts).unwrap();
        assert_eq!(std::fs::read_to_string(rewritten).unwrap(), WORKER_SOURCE);
    }

    #[test]
    fn script_dir_writable_by_others_is_rejected() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let scripts = dir.path().join("scripts");
        std::fs::create_dir(&scripts).unwrap();
        std::fs::set_permissions(&scripts, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(write_script(&scripts).is_err());
    }

    #[test]
    fn fnv1a_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn decoder_joins_split_characters() {
        let mut decoder = Utf8Decoder::default();
        let bytes = "é€".as_bytes();
        assert_eq!(decoder.decode(&bytes[..1]), "");
        assert_eq!(decoder.decode(&bytes[1..3]), "é");
        assert_eq!(decoder.decode(&bytes[3..]), "€");
    }

    #[test]
    fn decoder_replaces_invalid_bytes() {
        let mut decoder = Utf8Decoder::default();
        assert_eq!(decoder.decode(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn worker_messages_parse() {
        let error: WorkerMessage = serde_json::from_str(
            r#"{"type":"error","name":"ValueError","value":"x","traceback":"t"}"#,
        )
        .unwrap();
        assert_eq!(
            error,
            WorkerMessage::Error {
                name: "ValueError".to_owned(),
                value: "x".to_owned(),
                traceback: "t".to_owned()
            }
        );
        let control: WorkerMessage =
            serde_json::from_str(r#"{"type":"control","text":"completed"}"#).unwrap();
        assert_eq!(
            control,
            WorkerMessage::Control {
                text: "completed".to_owned()
            }
        );
    }
}
