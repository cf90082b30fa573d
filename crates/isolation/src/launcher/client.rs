//! The toolbox server's side: starts the launcher, sends it spawn requests and owns the
//! workloads it creates.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::OwnedMutexGuard;
use tokio::time::timeout;

use super::protocol::{self, Reply};
use super::{InvalidRequest, LaunchError, SpawnRequest};
use crate::sys;

/// How long the client waits for a started launcher to report that it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one spawn request may take, from sending it to the reply after the exec. The
/// launcher needs well under a millisecond, but a child that a workload stops with SIGSTOP
/// before its exec would hold it forever.
///
/// NOTE: after a timeout the launcher is killed and replaced, but such a stopped child is
/// left as it is: the client never learned its pid, so it stays unreaped after it exits.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Size of the reply buffer; replies are a few dozen bytes of JSON.
const REPLY_BUFFER: usize = 16 * 1024;

/// The launcher's socket in the launcher process.
const LAUNCHER_SOCKET_FD: RawFd = 3;

/// The state of a running launcher, as [`LauncherClient::ensure_started`] returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LauncherStatus {
    /// The launcher's pid in this process's PID namespace.
    pub pid: u32,
    /// Whether the launcher is in a Landlock domain: it runs confined on a kernel with
    /// Landlock scopes (6.12 and later).
    pub landlock: bool,
}

/// Starts workloads through one launcher process, which it starts on the first request and
/// again after the launcher died. Requests are served one at a time.
///
/// Every workload is a child of this process, so nothing else in this process may reap
/// children it does not own (`waitpid(-1)`). tokio's process support reaps only its own.
pub struct LauncherClient {
    make_command: Box<dyn Fn() -> Command + Send + Sync>,
    confined: bool,
    /// Shared with the task that reads the reply to a spawn whose caller went away.
    connection: Arc<tokio::sync::Mutex<Option<Connection>>>,
}

impl fmt::Debug for LauncherClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LauncherClient")
            .field("confined", &self.confined)
            .finish_non_exhaustive()
    }
}

impl LauncherClient {
    /// Creates a client of a confined launcher: `<launcher_exe> launcher`, with an empty
    /// environment. The launcher's standard error is this process's.
    pub fn new(launcher_exe: PathBuf) -> Self {
        Self::with_command(true, move || {
            let mut command = Command::new(&launcher_exe);
            command.arg("launcher").env_clear();
            command
        })
    }

    /// Creates a client of a launcher that runs unconfined, for the daemon's own tests
    /// outside a sandbox: no Landlock domain, seccomp or capability changes, and no user
    /// switch where the launcher is not root.
    pub fn unconfined(launcher_exe: PathBuf) -> Self {
        Self::with_command(false, move || {
            let mut command = Command::new(&launcher_exe);
            command.arg("launcher").arg("--unconfined").env_clear();
            command
        })
    }

    /// Creates a client that starts the launcher with `make_command`, which must execute
    /// `daytona-daemon launcher`, with `--unconfined` unless `confined`. The client sets the
    /// command's standard input and output to `/dev/null` and places the socket on fd 3.
    pub fn with_command(
        confined: bool,
        make_command: impl Fn() -> Command + Send + Sync + 'static,
    ) -> Self {
        Self {
            make_command: Box::new(make_command),
            confined,
            connection: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// Starts the launcher unless it runs, so that the next spawn does not wait for it.
    pub async fn ensure_started(&self) -> Result<LauncherStatus, LaunchError> {
        let mut state = self.connection.lock().await;
        let connection = self.usable_connection(&mut state).await?;
        Ok(connection.status())
    }

    /// Starts a workload with `stdio` as its descriptors 0, 1 and 2 (`/dev/null` where
    /// `None`) and returns it once it executed the program. A program that cannot start is
    /// an error, not an exit status, and [`LaunchError::start_error`] returns its cause.
    ///
    /// Dropping the returned future after the request went out leaves a task that reads the
    /// reply and kills the workload, which no one would manage.
    pub async fn spawn(
        &self,
        request: SpawnRequest,
        stdio: [Option<OwnedFd>; 3],
    ) -> Result<Workload, LaunchError> {
        let present = [0, 1, 2].map(|index| stdio[index].is_some());
        let invalid = |source: InvalidRequest| LaunchError::Invalid { source };
        protocol::validate(&request, present, self.confined).map_err(invalid)?;
        let encoded = protocol::encode_request(&request, present).map_err(invalid)?;
        let mut fds: Vec<RawFd> = stdio.iter().flatten().map(AsRawFd::as_raw_fd).collect();
        fds.extend(encoded.memfd.as_ref().map(AsRawFd::as_raw_fd));
        let program = request.argv[0].to_string_lossy().into_owned();

        let mut exchange = Exchange {
            state: Some(Arc::clone(&self.connection).lock_owned().await),
            pending: false,
        };
        let sent = self.exchange(&mut exchange, &encoded.message, &fds);
        let reply = match timeout(SPAWN_TIMEOUT, sent).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(err)) => {
                exchange.reset();
                return Err(err);
            }
            Err(_) => {
                exchange.reset();
                return Err(LaunchError::Timeout {
                    timeout: SPAWN_TIMEOUT,
                });
            }
        };
        drop(exchange);
        // The launcher received copies of the descriptors; these can go.
        drop((stdio, encoded));

        match reply {
            Reply::Started { pid } => {
                Workload::open(pid).map_err(|source| LaunchError::Pidfd { pid, source })
            }
            Reply::StartFailed { pid, step, errno } => {
                // The child exits right after its report; reap it before reporting.
                if let Ok(workload) = Workload::open(pid) {
                    let _ = workload.wait().await;
                }
                Err(LaunchError::Start {
                    program,
                    step,
                    source: io::Error::from_raw_os_error(errno),
                })
            }
            Reply::CloneFailed { errno } => Err(LaunchError::Clone {
                program,
                source: io::Error::from_raw_os_error(errno),
            }),
            Reply::Rejected { reason } => Err(LaunchError::Rejected { reason }),
            Reply::Ready { .. } => Err(unexpected(reply)),
        }
    }

    /// Sends a request and reads its reply, marking the exchange pending in between.
    async fn exchange(
        &self,
        exchange: &mut Exchange,
        message: &[u8],
        fds: &[RawFd],
    ) -> Result<Reply, LaunchError> {
        let state = exchange.state.as_mut().expect("held until drop");
        let connection = self.send_request(state, message, fds).await?;
        exchange.pending = true;
        let reply = connection.receive().await?;
        exchange.pending = false;
        Ok(reply)
    }

    /// Sends a request, starting the launcher first if it does not run. A launcher that died
    /// before it took the request is replaced and the request sent once more: it cannot have
    /// acted on it.
    async fn send_request<'a>(
        &self,
        state: &'a mut Option<Connection>,
        message: &[u8],
        fds: &[RawFd],
    ) -> Result<&'a mut Connection, LaunchError> {
        for attempt in 0..2 {
            let connection = self.usable_connection(state).await?;
            let sent = connection
                .socket
                .async_io(Interest::WRITABLE, |socket| {
                    protocol::send(socket.as_fd(), message, fds)
                })
                .await;
            match sent {
                Ok(()) => return Ok(state.as_mut().expect("connected above")),
                Err(err) if attempt == 0 && is_peer_gone(&err) => *state = None,
                Err(source) => return Err(LaunchError::Send { source }),
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Returns the running launcher's connection, or starts a launcher.
    async fn usable_connection<'a>(
        &self,
        state: &'a mut Option<Connection>,
    ) -> Result<&'a mut Connection, LaunchError> {
        if !state.as_mut().is_some_and(Connection::is_running) {
            *state = None;
            *state = Some(self.start_launcher().await?);
        }
        Ok(state.as_mut().expect("set above"))
    }

    async fn start_launcher(&self) -> Result<Connection, LaunchError> {
        let start_error = |source: io::Error| LaunchError::StartLauncher { source };
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|errno| start_error(errno.into()))?;
        set_nonblocking(&ours).map_err(start_error)?;

        let mut command = (self.make_command)();
        command.stdin(Stdio::null()).stdout(Stdio::null());
        let socket = theirs.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only calls dup2 or
        // fcntl on a descriptor that is open in the child's copy of the descriptor table.
        // Descriptor 3 is either taken by a descriptor of this process, which the child may
        // replace, or is one of the socket pair's: std's own descriptors for the spawn are
        // opened after the socket pair and cannot be 3.
        unsafe { command.pre_exec(move || place_socket(socket)) };
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        let process = command.spawn().map_err(start_error)?;
        // The launcher has the only other end now, so end of file means that it exited.
        drop(theirs);

        let socket =
            register(ours, Interest::READABLE | Interest::WRITABLE).map_err(start_error)?;
        let mut connection = Connection {
            socket,
            process,
            landlock: false,
            buffer: vec![0; REPLY_BUFFER],
        };
        match timeout(START_TIMEOUT, connection.receive()).await {
            Ok(Ok(Reply::Ready { landlock, .. })) => {
                connection.landlock = landlock;
                let pid = connection.process.id();
                if self.confined && !landlock {
                    tracing::warn!(
                        ?pid,
                        "started the launcher without Landlock: the kernel lacks Landlock scopes \
                         (added in Linux 6.12), so workloads can signal the toolbox server"
                    );
                } else {
                    tracing::debug!(?pid, landlock, "started the launcher");
                }
                Ok(connection)
            }
            Ok(Ok(reply)) => Err(unexpected(reply)),
            Ok(Err(LaunchError::LauncherExited)) => Err(LaunchError::LauncherFailed),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(LaunchError::Timeout {
                timeout: START_TIMEOUT,
            }),
        }
    }
}

fn unexpected(reply: Reply) -> LaunchError {
    LaunchError::UnexpectedReply {
        reply: format!("{reply:?}"),
    }
}

fn is_peer_gone(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EPIPE | libc::ECONNRESET | libc::ECONNREFUSED)
    )
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Registers a descriptor with the tokio runtime.
fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd always returns the descriptor it owns, which stays open and the same
    // until the AsyncFd, which owns the OwnedFd, is dropped.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(Into::into)
}

/// Places the launcher's end of the socket on fd 3, without close-on-exec. Runs between
/// fork and exec.
fn place_socket(socket: RawFd) -> io::Result<()> {
    // SAFETY: fcntl and dup2 on descriptors of this process. dup2 clears close-on-exec on
    // the copy, and fcntl clears it where the socket is fd 3 already.
    let ret = unsafe {
        if socket == LAUNCHER_SOCKET_FD {
            libc::fcntl(socket, libc::F_SETFD, 0)
        } else {
            libc::dup2(socket, LAUNCHER_SOCKET_FD)
        }
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The client's hold on the launcher for one request.
///
/// Dropped while the reply is pending, because the caller dropped the spawn, it reads the
/// reply in a task of its own, still holding the launcher, and kills the workload that no
/// one would manage.
struct Exchange {
    /// `Some` until dropped.
    state: Option<OwnedMutexGuard<Option<Connection>>>,
    /// Set from sending the request to reading its reply.
    pending: bool,
}

impl Exchange {
    /// Forgets the launcher, whose state is unknown after a failed exchange: dropping the
    /// connection kills it, and the next request starts a new one.
    fn reset(&mut self) {
        if let Some(state) = self.state.as_mut() {
            **state = None;
        }
        self.pending = false;
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.pending {
            return;
        }
        let Some(mut state) = self.state.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { read_abandoned_reply(&mut state).await });
            }
            Err(_) => *state = None,
        }
    }
}

/// Reads the reply to a request whose caller went away and kills the workload it started.
async fn read_abandoned_reply(state: &mut Option<Connection>) {
    let Some(connection) = state.as_mut() else {
        return;
    };
    match timeout(SPAWN_TIMEOUT, connection.receive()).await {
        Ok(Ok(Reply::Started { pid } | Reply::StartFailed { pid, .. })) => {
            // Dropping the workload reaps it once it exits.
            if let Ok(workload) = Workload::open(pid) {
                let _ = workload.kill_group(libc::SIGKILL);
            }
        }
        Ok(Ok(_)) => {}
        Ok(Err(_)) | Err(_) => *state = None,
    }
}

/// The client's end of one launcher.
struct Connection {
    socket: AsyncFd<OwnedFd>,
    process: tokio::process::Child,
    landlock: bool,
    buffer: Vec<u8>,
}

impl Connection {
    fn is_running(&mut self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }

    fn status(&self) -> LauncherStatus {
        LauncherStatus {
            pid: self.process.id().unwrap_or(0),
            landlock: self.landlock,
        }
    }

    async fn receive(&mut self) -> Result<Reply, LaunchError> {
        let buffer = &mut self.buffer;
        let received = self
            .socket
            .async_io(Interest::READABLE, |socket| {
                protocol::receive(socket.as_fd(), buffer)
            })
            .await
            .map_err(|source| LaunchError::Receive { source })?;
        if received.len == 0 && received.fds.is_empty() {
            return Err(LaunchError::LauncherExited);
        }
        protocol::decode_reply(&self.buffer[..received.len])
            .map_err(|source| LaunchError::Protocol { source })
    }
}

/// A workload process: a child of this process, known by a pidfd, so that no other process
/// that reuses its pid can be signalled or waited for by mistake.
///
/// Dropping a workload that was not waited for reaps it in the background once it exits
/// (inside a tokio runtime); the process itself keeps running.
pub struct Workload {
    pid: i32,
    /// `Some` until dropped.
    pidfd: Option<AsyncFd<OwnedFd>>,
    /// The exit status, once reaped.
    status: Mutex<Option<ExitStatus>>,
}

impl fmt::Debug for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workload")
            .field("pid", &self.pid)
            .field("status", &self.status.lock().ok().and_then(|s| *s))
            .finish()
    }
}

impl Workload {
    /// Opens a pidfd for a child of this process. Nothing reaps the child before this, so
    /// the pid still names it, even if it has exited.
    fn open(pid: i32) -> io::Result<Self> {
        let pidfd = register(sys::pidfd_open(pid)?, Interest::READABLE)?;
        Ok(Self {
            pid,
            pidfd: Some(pidfd),
            status: Mutex::new(None),
        })
    }

    /// Returns the workload's pid in this process's PID namespace, which is also its process
    /// group id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Returns the pidfd, which stays open as long as the workload value lives.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.async_pidfd().get_ref().as_fd()
    }

    fn async_pidfd(&self) -> &AsyncFd<OwnedFd> {
        self.pidfd.as_ref().expect("the pidfd lives until drop")
    }

    /// Waits until the workload exits, reaps it and returns its exit status. Later calls
    /// return the same status.
    pub async fn wait(&self) -> io::Result<ExitStatus> {
        loop {
            let mut ready = self.async_pidfd().readable().await?;
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            ready.clear_ready();
        }
    }

    /// Reaps the workload if it has exited; returns `None` while it runs.
    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_none() {
            *status = sys::reap_pidfd(self.pidfd())?.map(ExitStatus::from_raw);
        }
        Ok(*status)
    }

    /// Sends `signal` to the workload's main process. Fails with ESRCH once it has exited.
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        sys::pidfd_send_signal(self.pidfd(), signal)
    }

    /// Sends `signal` to the workload's process group, whose id is the workload's pid.
    ///
    /// NOTE: once the workload has been reaped and the last process of its group has
    /// exited, the kernel may give the pid to a new process, which could then lead a group
    /// of the same id.
    pub fn kill_group(&self, signal: i32) -> io::Result<()> {
        // SAFETY: kill with integer arguments; a negative pid names the process group.
        if unsafe { libc::kill(-self.pid, signal) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        let reaped = self.status.lock().map(|s| s.is_some()).unwrap_or(false);
        if reaped {
            return;
        }
        let pid = self.pid;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    loop {
                        let Ok(mut ready) = pidfd.readable().await else {
                            return;
                        };
                        match sys::reap_pidfd(pidfd.get_ref().as_fd()) {
                            Ok(Some(_)) | Err(_) => return,
                            Ok(None) => ready.clear_ready(),
                        }
                    }
                });
            }
            Err(_) => {
                // NOTE: without a runtime, a workload that still runs stays a zombie after it
                // exits, until this process exits.
                if !matches!(sys::reap_pidfd(pidfd.get_ref().as_fd()), Ok(Some(_))) {
                    tracing::warn!(pid, "dropped a running workload outside a tokio runtime");
                }
            }
        }
    }
}
