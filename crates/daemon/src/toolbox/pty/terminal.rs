//! One PTY session: a shell on a pseudo-terminal, the clients attached to it, and the output
//! it wrote while none was.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::pty::{OpenptyResult, Winsize, openpty};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::broadcast;

use crate::toolbox::process::command::{CommandSpec, SessionMode, Workload, launch_error_to_io};
use crate::toolbox::state::Toolbox;

/// Output kept while no client is attached; older bytes are dropped first.
pub const SCROLLBACK_LIMIT: usize = 256 * 1024;

/// Events queued for each attached client before a slow one is dropped.
const CLIENT_QUEUE: usize = 1024;

/// How long output is still read after the shell exited, for processes that keep the
/// terminal open.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// Size of one read from the terminal.
const READ_CHUNK: usize = 64 * 1024;

/// An event sent to attached clients.
#[derive(Debug, Clone)]
pub enum Event {
    Output(Bytes),
    Exited(i32),
}

/// The settings a PTY session is created with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub id: String,
    pub cwd: PathBuf,
    /// The variables the session was created with, on top of the sandbox's.
    pub envs: BTreeMap<String, String>,
    pub cols: u16,
    pub rows: u16,
    pub lazy_start: bool,
}

/// One PTY session.
#[derive(Debug)]
pub struct Terminal {
    pub settings: Settings,
    pub created_at: String,
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    cols: u16,
    rows: u16,
    clients: usize,
    /// Output written while no client was attached.
    scrollback: VecDeque<u8>,
}

#[derive(Debug)]
enum Phase {
    /// Created with `lazyStart`; the shell starts when the first client connects.
    Pending,
    Starting,
    Running {
        master: Arc<AsyncFd<OwnedFd>>,
        /// The shell's pid, which is also its session id.
        pid: i32,
    },
    Exited(i32),
}

/// The state a client receives when it attaches.
pub struct Attachment {
    /// Output written while no client was attached.
    pub scrollback: Vec<u8>,
    pub events: broadcast::Receiver<Event>,
    /// The exit code, if the shell already exited.
    pub exited: Option<i32>,
}

impl Terminal {
    pub fn new(settings: Settings) -> Arc<Self> {
        let (events, _) = broadcast::channel(CLIENT_QUEUE);
        Arc::new(Self {
            inner: Mutex::new(Inner {
                phase: Phase::Pending,
                cols: settings.cols,
                rows: settings.rows,
                clients: 0,
                scrollback: VecDeque::new(),
            }),
            settings,
            created_at: daytona_wire::now_rfc3339(),
            events,
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn size(&self) -> (u16, u16) {
        let inner = self.inner();
        (inner.cols, inner.rows)
    }

    /// Returns whether the shell runs or is being started.
    pub fn is_active(&self) -> bool {
        matches!(self.inner().phase, Phase::Running { .. } | Phase::Starting)
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self.inner().phase {
            Phase::Exited(code) => Some(code),
            _ => None,
        }
    }

    /// Starts the shell unless it was started already.
    pub async fn start(self: &Arc<Self>, toolbox: &Arc<Toolbox>) -> io::Result<()> {
        let size = {
            let mut inner = self.inner();
            if !matches!(inner.phase, Phase::Pending) {
                return Ok(());
            }
            inner.phase = Phase::Starting;
            (inner.cols, inner.rows)
        };
        match self.spawn(toolbox, size).await {
            Ok((master, workload)) => {
                let master = Arc::new(master);
                self.inner().phase = Phase::Running {
                    master: Arc::clone(&master),
                    pid: workload.pid(),
                };
                tokio::spawn(Arc::clone(self).pump(master, workload));
                Ok(())
            }
            Err(error) => {
                self.inner().phase = Phase::Exited(-1);
                let _ = self.events.send(Event::Exited(-1));
                Err(error)
            }
        }
    }

    /// Opens the pseudo-terminal and starts the shell on it, as the leader of a new session
    /// with the terminal as its controlling terminal.
    async fn spawn(
        &self,
        toolbox: &Arc<Toolbox>,
        (cols, rows): (u16, u16),
    ) -> io::Result<(AsyncFd<OwnedFd>, Workload)> {
        let shell = toolbox.shell.clone().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no shell found: the image has neither bash nor sh",
            )
        })?;
        let (master, slave) = open_pty(toolbox, cols, rows)?;

        let mut env = toolbox.command_env(None).map_err(|error| {
            io::Error::new(io::ErrorKind::InvalidInput, error.message().to_owned())
        })?;
        env.insert("TERM".to_owned(), "xterm-256color".to_owned());
        env.extend(self.settings.envs.clone());
        let spec = CommandSpec {
            program: shell,
            args: vec!["-i".into(), "-l".into()],
            env,
            cwd: self.settings.cwd.clone(),
            stdin: None,
            timeout: None,
            output_limit: 0,
        };
        let mut request = toolbox.launcher.request(&spec);
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
        // SAFETY: an OwnedFd always returns the descriptor it owns, which stays open and the
        // same until the AsyncFd, which owns the OwnedFd, is dropped.
        let master = unsafe {
            AsyncFd::register_with_interest(master, Interest::READABLE | Interest::WRITABLE)
        }
        .map_err(io::Error::from)?;
        Ok((master, workload))
    }

    /// Reads the terminal until the shell exited and its output was read, then reports the
    /// exit.
    async fn pump(self: Arc<Self>, master: Arc<AsyncFd<OwnedFd>>, workload: Workload) {
        let mut buffer = vec![0; READ_CHUNK];
        let status = loop {
            tokio::select! {
                status = workload.wait() => break status,
                read = read_master(&master, &mut buffer) => match read {
                    Some(length) => self.output(&buffer[..length]),
                    // Every holder of the terminal closed it: the shell is exiting.
                    None => break workload.wait().await,
                },
            }
        };
        // Processes the shell left may still hold the terminal; their output gets a moment.
        let drain = async {
            while let Some(length) = read_master(&master, &mut buffer).await {
                self.output(&buffer[..length]);
            }
        };
        let _ = tokio::time::timeout(DRAIN_GRACE, drain).await;

        let code = match status {
            Ok(status) => exit_code(status),
            Err(error) => {
                tracing::warn!(pty_id = %self.settings.id, %error, "failed to wait for a PTY shell");
                -1
            }
        };
        self.inner().phase = Phase::Exited(code);
        let _ = self.events.send(Event::Exited(code));
    }

    /// Hands output to the attached clients, or keeps it while none is attached.
    fn output(&self, bytes: &[u8]) {
        let mut inner = self.inner();
        if inner.clients > 0 {
            let _ = self
                .events
                .send(Event::Output(Bytes::copy_from_slice(bytes)));
            return;
        }
        inner.scrollback.extend(bytes);
        let excess = inner.scrollback.len().saturating_sub(SCROLLBACK_LIMIT);
        inner.scrollback.drain(..excess);
    }

    /// Attaches a client: it gets the output kept while none was attached, then every event.
    pub fn attach(&self) -> Attachment {
        let mut inner = self.inner();
        inner.clients += 1;
        let exited = match inner.phase {
            Phase::Exited(code) => Some(code),
            _ => None,
        };
        Attachment {
            scrollback: inner.scrollback.drain(..).collect(),
            events: self.events.subscribe(),
            exited,
        }
    }

    pub fn detach(&self) {
        let mut inner = self.inner();
        inner.clients = inner.clients.saturating_sub(1);
    }

    /// Writes a client's keystrokes to the terminal.
    pub async fn write(&self, data: &[u8]) -> io::Result<()> {
        let master = match &self.inner().phase {
            Phase::Running { master, .. } => Arc::clone(master),
            _ => return Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        };
        write_to(&master, data).await
    }

    /// Changes the terminal's size; the kernel sends SIGWINCH to its foreground processes.
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        let mut inner = self.inner();
        if let Phase::Running { master, .. } = &inner.phase {
            set_size(master, cols, rows)?;
        }
        inner.cols = cols;
        inner.rows = rows;
        Ok(())
    }

    /// Kills the shell and every process of its session.
    pub fn kill(&self) {
        let pid = match self.inner().phase {
            Phase::Running { pid, .. } => pid,
            _ => return,
        };
        for member in session_members(pid) {
            let _ = kill(Pid::from_raw(member), Signal::SIGKILL);
        }
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Opens a pseudo-terminal of the given size for the sandbox user: the master side
/// non-blocking, both sides close-on-exec.
pub fn open_pty(toolbox: &Toolbox, cols: u16, rows: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let winsize = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let OpenptyResult { master, slave } = openpty(Some(&winsize), None)?;
    fcntl(&master, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    fcntl(&slave, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    let flags = OFlag::from_bits_retain(fcntl(&master, FcntlArg::F_GETFL)?);
    fcntl(&master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    // The terminal belongs to the user who works in it, as login(1) arranges.
    if let Some((uid, _)) = toolbox.file_owner {
        std::os::unix::fs::fchown(&slave, Some(uid), None)?;
    }
    Ok((master, slave))
}

/// Writes all of `data` to a terminal's master side.
pub async fn write_to(master: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let written = master
            .async_io(Interest::WRITABLE, |fd| {
                nix::unistd::write(fd, data).map_err(io::Error::from)
            })
            .await?;
        data = &data[written..];
    }
    Ok(())
}

/// Changes a terminal's size; the kernel sends SIGWINCH to its foreground processes.
pub fn set_size(master: &AsyncFd<OwnedFd>, cols: u16, rows: u16) -> io::Result<()> {
    let winsize = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which points to a live value, and
    // the descriptor stays open while `master` is borrowed.
    let result = unsafe {
        libc::ioctl(
            master.get_ref().as_fd().as_raw_fd(),
            libc::TIOCSWINSZ,
            &winsize,
        )
    };
    if result == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads the terminal's pending output. Returns `None` at its end, which is EIO once no
/// process has the terminal open.
async fn read_master(master: &AsyncFd<OwnedFd>, buffer: &mut [u8]) -> Option<usize> {
    let read = master
        .async_io(Interest::READABLE, |fd| {
            nix::unistd::read(fd, buffer).map_err(io::Error::from)
        })
        .await;
    match read {
        Ok(0) | Err(_) => None,
        Ok(length) => Some(length),
    }
}

/// Lists the processes whose session id is `sid`, from `/proc`.
pub fn session_members(sid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the name: state, ppid, pgrp, session.
            let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after_name.split_whitespace().nth(3) == Some(&sid.to_string())
        })
        .collect()
}

/// Exit code as a shell reports it: the status, or 128 + N when signal N ended the process.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    }
}

/// Returns the reason Daytona gives for an exit code.
pub fn exit_reason(code: i32) -> Option<String> {
    match code {
        0 => None,
        130 => Some("Ctrl+C".to_owned()),
        137 => Some("SIGKILL".to_owned()),
        143 => Some("SIGTERM".to_owned()),
        code if code > 128 => Some(format!("signal {}", code - 128)),
        _ => Some("non-zero exit".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reasons_follow_daytona() {
        assert_eq!(exit_reason(0), None);
        assert_eq!(exit_reason(130).as_deref(), Some("Ctrl+C"));
        assert_eq!(exit_reason(137).as_deref(), Some("SIGKILL"));
        assert_eq!(exit_reason(143).as_deref(), Some("SIGTERM"));
        assert_eq!(exit_reason(129).as_deref(), Some("signal 1"));
        assert_eq!(exit_reason(3).as_deref(), Some("non-zero exit"));
    }

    #[test]
    fn scrollback_keeps_the_latest_output() {
        let terminal = Terminal::new(Settings {
            id: "t".to_owned(),
            cwd: "/".into(),
            envs: BTreeMap::new(),
            cols: 80,
            rows: 24,
            lazy_start: true,
        });
        terminal.output(&vec![b'a'; SCROLLBACK_LIMIT]);
        terminal.output(b"tail");
        let attachment = terminal.attach();
        assert_eq!(attachment.scrollback.len(), SCROLLBACK_LIMIT);
        assert!(attachment.scrollback.ends_with(b"tail"));
        // Attached clients get output as events, not in the scrollback.
        let mut events = attachment.events;
        terminal.output(b"live");
        assert!(matches!(events.try_recv(), Ok(Event::Output(bytes)) if &bytes[..] == b"live"));
        terminal.detach();
        terminal.output(b"later");
        assert_eq!(terminal.attach().scrollback, b"later");
    }
}
