//! The process stream, `POST /process/stream`: one command with its standard streams carried
//! over an upgraded connection, for the SSH gateway. The framing is described in
//! [`daytona_wire::stream`].
//!
//! Unlike `/process/execute`, the command's input and output are bytes, not text, and flow
//! while it runs. It starts through the launcher like every other workload: confined and as
//! the sandbox user. When the client goes away before the command ends, the command's process
//! group (or, on a terminal, its session) is killed.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use daytona_wire::stream::{
    MAX_FRAME, REQUEST_HEADER, StreamRequest, TerminalRequest, UPGRADE_PROTOCOL, frame_header,
    parse_frame_header, tag,
};
use hyper_util::rt::TokioIo;
use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;

use super::error::ApiError;
use super::process::command::{CommandSpec, SessionMode, Workload, exit_code, launch_error_to_io};
use super::pty::{open_pty, session_members, set_size, write_to};
use super::state::{Toolbox, check_env_var};

/// How long output is still read after the command exited, for processes it left behind that
/// keep its output open.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Size of one read from the command's output.
const READ_CHUNK: usize = 32 * 1024;

/// Largest number of columns or rows.
const MAX_SIZE: u16 = 1000;

/// Returns the stream route, which stays out of the OpenAPI document because only the runner
/// uses it.
pub fn routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::new().route(daytona_wire::stream::PATH, axum::routing::post(stream))
}

async fn stream(
    State(toolbox): State<Arc<Toolbox>>,
    mut request: Request,
) -> Result<Response, ApiError> {
    let stream_request = parse_request(request.headers())?;
    let upgrade = hyper::upgrade::on(&mut request);
    let process = start(&toolbox, &stream_request).await?;

    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => process.serve(TokioIo::new(upgraded)).await,
            Err(error) => {
                tracing::warn!(%error, "the process stream's upgrade failed; killing the command");
                process.kill();
                let _ = process.workload.wait().await;
            }
        }
    });

    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
    Ok(response)
}

fn parse_request(headers: &HeaderMap) -> Result<StreamRequest, ApiError> {
    let upgrade = headers.get(header::UPGRADE).map(HeaderValue::as_bytes);
    if upgrade != Some(UPGRADE_PROTOCOL.as_bytes()) {
        return Err(ApiError::bad_request(format!(
            "the process stream needs the header Upgrade: {UPGRADE_PROTOCOL}"
        )));
    }
    let invalid = |reason: String| {
        ApiError::bad_request(format!(
            "invalid {REQUEST_HEADER} header: {reason}; send base64 of the request's JSON"
        ))
    };
    let encoded = headers
        .get(REQUEST_HEADER)
        .ok_or_else(|| invalid("missing".to_owned()))?;
    let json = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .map_err(|error| invalid(error.to_string()))?;
    let request: StreamRequest =
        serde_json::from_slice(&json).map_err(|error| invalid(error.to_string()))?;
    for (name, value) in &request.env {
        check_env_var(name, value)?;
    }
    if let Some(terminal) = &request.terminal {
        check_size(terminal.cols, terminal.rows)?;
    }
    Ok(request)
}

fn check_size(cols: u16, rows: u16) -> Result<(), ApiError> {
    if !(1..=MAX_SIZE).contains(&cols) || !(1..=MAX_SIZE).contains(&rows) {
        return Err(ApiError::bad_request(format!(
            "invalid terminal size {cols}x{rows}: columns and rows must be 1 to {MAX_SIZE}"
        )));
    }
    Ok(())
}

/// The command's side of the streams.
enum Streams {
    Pipes {
        stdin: Option<pipe::Sender>,
        stdout: pipe::Receiver,
        stderr: pipe::Receiver,
    },
    Terminal(Arc<AsyncFd<OwnedFd>>),
}

/// A started command.
struct Process {
    workload: Workload,
    streams: Streams,
}

/// Starts the command of a stream request through the launcher.
async fn start(toolbox: &Toolbox, request: &StreamRequest) -> Result<Process, ApiError> {
    let shell = toolbox.shell.clone().ok_or_else(|| {
        ApiError::bad_request("no shell found: the image has neither bash nor sh")
    })?;
    let mut env = toolbox.command_env(None)?;
    env.extend(request.env.iter().cloned());
    if let Some(terminal) = &request.terminal {
        env.insert("TERM".to_owned(), terminal.term.clone());
    }
    let args = match &request.command {
        Some(command) => vec!["-c".into(), command.into()],
        None => vec!["-l".into()],
    };
    let spec = CommandSpec {
        program: shell,
        args,
        env,
        cwd: toolbox.work_dir.clone(),
        stdin: None,
        timeout: None,
        output_limit: 0,
    };
    let started = match &request.terminal {
        Some(terminal) => start_on_terminal(toolbox, &spec, terminal).await,
        None => start_with_pipes(toolbox, &spec).await,
    };
    started.map_err(|error| ApiError::internal("failed to start the command", &error))
}

async fn start_with_pipes(toolbox: &Toolbox, spec: &CommandSpec) -> io::Result<Process> {
    let (stdin_read, stdin_write) = pipe_pair()?;
    let (stdout_read, stdout_write) = pipe_pair()?;
    let (stderr_read, stderr_write) = pipe_pair()?;
    let stdio = [Some(stdin_read), Some(stdout_write), Some(stderr_write)];
    let workload = toolbox
        .launcher
        .spawn(spec, stdio)
        .await
        .map_err(launch_error_to_io)?;
    Ok(Process {
        workload,
        streams: Streams::Pipes {
            stdin: Some(pipe::Sender::from_owned_fd(stdin_write)?),
            stdout: pipe::Receiver::from_owned_fd(stdout_read)?,
            stderr: pipe::Receiver::from_owned_fd(stderr_read)?,
        },
    })
}

fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// Starts the command as the leader of a new session with a new pseudo-terminal as its
/// controlling terminal, as the PTY sessions do.
async fn start_on_terminal(
    toolbox: &Toolbox,
    spec: &CommandSpec,
    terminal: &TerminalRequest,
) -> io::Result<Process> {
    let (master, slave) = open_pty(toolbox, terminal.cols, terminal.rows)?;

    let mut request = toolbox.launcher.request(spec);
    request.session = SessionMode::NewSession;
    request.controlling_terminal = Some(0);
    let stdio = [
        Some(slave.try_clone()?),
        Some(slave.try_clone()?),
        Some(slave),
    ];
    let workload = toolbox
        .launcher
        .spawn_request(request, stdio)
        .await
        .map_err(launch_error_to_io)?;
    // SAFETY: an OwnedFd always returns the descriptor it owns, which stays open and the same
    // until the AsyncFd, which owns the OwnedFd, is dropped.
    let master = unsafe {
        AsyncFd::register_with_interest(master, Interest::READABLE | Interest::WRITABLE)
    }?;
    Ok(Process {
        workload,
        streams: Streams::Terminal(Arc::new(master)),
    })
}

impl Process {
    /// Carries the streams until the command exits or the client goes away.
    async fn serve<T>(mut self, io: T)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut reader, writer) = tokio::io::split(io);
        let (frames, queue) = mpsc::channel::<(u8, Bytes)>(16);
        let writing = tokio::spawn(write_frames(writer, queue));
        let pumps = self.start_output_pumps(&frames);
        let stop_pumps = pumps
            .iter()
            .map(tokio::task::JoinHandle::abort_handle)
            .collect::<Vec<_>>();
        let input = match &mut self.streams {
            Streams::Pipes { stdin, .. } => Input::Pipe(stdin.take()),
            Streams::Terminal(master) => Input::Terminal(Arc::clone(master)),
        };

        let status = tokio::select! {
            status = self.workload.wait() => status,
            () = read_input(&mut reader, input) => {
                // The connection closed or broke: the client is gone.
                // Kill before reaping: while the leader is unreaped, its pid, which is also
                // the group and session id, cannot be reused.
                self.kill();
                let _ = self.workload.wait().await;
                stop_pumps.iter().for_each(tokio::task::AbortHandle::abort);
                return;
            }
        };

        // The output that is still buffered, and what processes left behind write soon after.
        let drain = futures_util::future::join_all(pumps);
        let _ = tokio::time::timeout(DRAIN_GRACE, drain).await;
        // Pumps still reading hold senders, which would keep the writer waiting.
        stop_pumps.iter().for_each(tokio::task::AbortHandle::abort);
        let last = match status {
            Ok(status) => (
                tag::EXIT,
                Bytes::copy_from_slice(&exit_code(status).to_be_bytes()),
            ),
            Err(error) => (
                tag::ERROR,
                Bytes::from(format!("failed to wait for the command: {error}")),
            ),
        };
        let _ = frames.send(last).await;
        drop(frames);
        let _ = writing.await;
    }

    fn start_output_pumps(
        &mut self,
        frames: &mpsc::Sender<(u8, Bytes)>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        match &mut self.streams {
            Streams::Pipes { stdout, stderr, .. } => {
                let stdout = std::mem::replace(stdout, empty_receiver());
                let stderr = std::mem::replace(stderr, empty_receiver());
                vec![
                    tokio::spawn(pump_pipe(stdout, tag::STDOUT, frames.clone())),
                    tokio::spawn(pump_pipe(stderr, tag::STDERR, frames.clone())),
                ]
            }
            Streams::Terminal(master) => {
                vec![tokio::spawn(pump_terminal(
                    Arc::clone(master),
                    frames.clone(),
                ))]
            }
        }
    }

    /// Kills the command's process group, and on a terminal every process of its session.
    fn kill(&self) {
        let pid = self.workload.pid();
        if matches!(self.streams, Streams::Terminal(_)) {
            for member in session_members(pid) {
                let _ = kill(Pid::from_raw(member), Signal::SIGKILL);
            }
        }
        // ESRCH means every process of the group is gone already.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Returns a receiver at end of file, left in place of a pipe handed to a pump.
fn empty_receiver() -> pipe::Receiver {
    let (read, _write) = pipe_pair().expect("creating a pipe fails only without descriptors");
    pipe::Receiver::from_owned_fd(read).expect("a new pipe's read end is a pipe")
}

/// Destination of the client's input.
enum Input {
    Pipe(Option<pipe::Sender>),
    Terminal(Arc<AsyncFd<OwnedFd>>),
}

/// Applies the client's frames until the connection ends.
async fn read_input<R: AsyncRead + Unpin>(reader: &mut R, mut input: Input) {
    let mut buffer = Vec::new();
    loop {
        let Ok(frame_tag) = read_frame(reader, &mut buffer).await else {
            return;
        };
        match (frame_tag, &mut input) {
            (tag::STDIN, Input::Pipe(slot)) => {
                // A command that closed its input makes the write fail; later input is dropped.
                if let Some(stdin) = slot
                    && stdin.write_all(&buffer).await.is_err()
                {
                    *slot = None;
                }
            }
            (tag::STDIN, Input::Terminal(master)) => {
                let _ = write_to(master, &buffer).await;
            }
            (tag::STDIN_EOF, Input::Pipe(stdin)) => *stdin = None,
            (tag::RESIZE, Input::Terminal(master)) => {
                if let [c1, c2, r1, r2] = buffer[..] {
                    let cols = u16::from_be_bytes([c1, c2]).clamp(1, MAX_SIZE);
                    let rows = u16::from_be_bytes([r1, r2]).clamp(1, MAX_SIZE);
                    let _ = set_size(master, cols, rows);
                }
            }
            // Input after end of input, end of input on a terminal and resizing pipes have no
            // effect, as with sshd.
            _ => {}
        }
    }
}

/// Reads one frame into `buffer` and returns its tag.
async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, buffer: &mut Vec<u8>) -> io::Result<u8> {
    let mut header = [0; 5];
    reader.read_exact(&mut header).await?;
    let (frame_tag, length) = parse_frame_header(header);
    if length > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {length} bytes, more than {MAX_FRAME}"),
        ));
    }
    buffer.resize(length, 0);
    reader.read_exact(buffer).await?;
    Ok(frame_tag)
}

async fn write_frames<W: AsyncWrite>(writer: W, mut queue: mpsc::Receiver<(u8, Bytes)>) {
    let mut writer = std::pin::pin!(writer);
    while let Some((frame_tag, payload)) = queue.recv().await {
        let header = frame_header(frame_tag, payload.len());
        if writer.write_all(&header).await.is_err() || writer.write_all(&payload).await.is_err() {
            return;
        }
        if queue.is_empty() && writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

async fn pump_pipe(mut pipe: pipe::Receiver, frame_tag: u8, frames: mpsc::Sender<(u8, Bytes)>) {
    let mut buffer = vec![0; READ_CHUNK];
    loop {
        match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(length) => {
                let chunk = Bytes::copy_from_slice(&buffer[..length]);
                if frames.send((frame_tag, chunk)).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn pump_terminal(master: Arc<AsyncFd<OwnedFd>>, frames: mpsc::Sender<(u8, Bytes)>) {
    let mut buffer = vec![0; READ_CHUNK];
    loop {
        let read = master
            .async_io(Interest::READABLE, |fd| {
                nix::unistd::read(fd, &mut buffer).map_err(io::Error::from)
            })
            .await;
        // EIO means no process has the terminal open any more.
        let length = match read {
            Ok(0) | Err(_) => return,
            Ok(length) => length,
        };
        let chunk = Bytes::copy_from_slice(&buffer[..length]);
        if frames.send((tag::STDOUT, chunk)).await.is_err() {
            return;
        }
    }
}
