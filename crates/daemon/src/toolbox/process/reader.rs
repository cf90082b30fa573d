//! Reads a command's standard output and standard error on a dedicated thread, keeping the
//! order in which the two streams were written.
//!
//! Two pipes carry no record of which write came first, and a reader woken by the kernel may
//! run a millisecond after the write (the pipe's wake-up lets the writer keep its CPU). By
//! then both pipes may hold several writes. Two kernel features recover the order:
//!
//! - inotify: every `write(2)` to a watched pipe queues an `IN_MODIFY` event, and the events
//!   of both pipes arrive in one queue in write order.
//! - packet mode (`O_DIRECT`, see pipe(7)): each write stays a separate packet of at most
//!   `PIPE_BUF` bytes, and one `read(2)` returns one packet, so writes keep their boundaries.
//!
//! [`Interleaver`] matches the two. Without inotify (no `/proc`, or the per-user limit on
//! inotify instances reached), the output is ordered by when the thread read it.
//!
//! NOTE: the order is a reconstruction. Writes to the two streams made microseconds apart,
//! faster than the thread wakes up, can still come out regrouped; the conditions are in
//! [`Interleaver`]'s documentation. Each stream on its own is always exact.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use nix::unistd::pipe2;
use tokio::sync::oneshot;

use super::interleave::{Interleaver, Stream};
use super::output::CapturedOutput;

/// Size of one read from an output pipe; larger than any packet.
const READ_CHUNK: usize = 64 * 1024;

/// Most packets read from one pipe before the thread looks at the other pipe and the events
/// again, so that a fast writer on one stream does not hold back the other.
const PACKETS_PER_ROUND: usize = 256;

/// Capacity requested for the output pipes, so that a command writing many small packets
/// blocks less often. `/proc/sys/fs/pipe-max-size` allows 1 MiB to any process by default.
const PIPE_CAPACITY: libc::c_int = 1024 * 1024;

/// Where the reading thread puts the output, in write order.
pub trait OutputSink: Send + 'static {
    fn push(&mut self, stream: Stream, bytes: &[u8]);
}

impl OutputSink for CapturedOutput {
    fn push(&mut self, stream: Stream, bytes: &[u8]) {
        match stream {
            Stream::Stdout => self.push_stdout(bytes),
            Stream::Stderr => self.push_stderr(bytes),
        }
    }
}

/// The thread that reads a command's output, seen from the async side.
pub struct OutputReader<S = CapturedOutput> {
    output: oneshot::Receiver<S>,
    /// Closing this pipe makes the thread hand over the output read so far.
    detach: Option<OwnedFd>,
}

/// Write ends of the output pipes, for the child's standard output and standard error.
pub struct OutputPipes {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl OutputReader {
    /// Creates the output pipes and starts the thread that reads them.
    pub fn start(output_limit: usize) -> io::Result<(Self, OutputPipes)> {
        Self::start_with(CapturedOutput::new(output_limit))
    }

    /// Waits for both pipes to close, but at most `grace`: background processes may keep them
    /// open long after the command ended. Their later output is read and discarded, so that
    /// they neither block on a full pipe nor die of SIGPIPE.
    pub async fn finish(self, grace: Duration) -> CapturedOutput {
        self.finish_sink(grace)
            .await
            .unwrap_or_else(|| CapturedOutput::new(0))
    }
}

impl<S: OutputSink> OutputReader<S> {
    /// Creates the output pipes and starts the thread that reads them into `sink`.
    pub fn start_with(sink: S) -> io::Result<(Self, OutputPipes)> {
        let (stdout_read, stdout_write) = output_pipe()?;
        let (stderr_read, stderr_write) = output_pipe()?;
        let (detach_read, detach_write) = pipe2(OFlag::O_CLOEXEC)?;
        let (sender, receiver) = oneshot::channel();

        let stdout = nonblocking(stdout_read)?;
        let stderr = nonblocking(stderr_read)?;
        let thread = ReaderThread {
            order: WriteOrder::watch(&stdout, &stderr),
            stdout: Some(stdout),
            stderr: Some(stderr),
            detach: Some(detach_read),
            interleaver: Interleaver::default(),
            output: Some(sink),
            sender: Some(sender),
        };
        std::thread::Builder::new()
            .name("output-reader".to_owned())
            .spawn(move || thread.run())?;

        let reader = Self {
            output: receiver,
            detach: Some(detach_write),
        };
        let pipes = OutputPipes {
            stdout: stdout_write,
            stderr: stderr_write,
        };
        Ok((reader, pipes))
    }

    /// Like [`OutputReader::finish`], for any sink; `None` if the thread failed to hand it
    /// over.
    pub async fn finish_sink(mut self, grace: Duration) -> Option<S> {
        if let Ok(Ok(output)) = tokio::time::timeout(grace, &mut self.output).await {
            return Some(output);
        }
        self.detach.take();
        self.output.await.ok()
    }
}

/// Creates a pipe in packet mode with a large capacity.
fn output_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_DIRECT)?;
    // A smaller capacity only costs throughput, so a failure is ignored.
    let _ = fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_CAPACITY));
    Ok((read, write))
}

fn nonblocking(fd: OwnedFd) -> io::Result<File> {
    let flags = OFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GETFL)?);
    fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(File::from(fd))
}

/// The inotify watches that tell in which order the two pipes were written.
struct WriteOrder {
    inotify: Inotify,
    stdout: WatchDescriptor,
    stderr: WatchDescriptor,
}

impl WriteOrder {
    /// Watches both pipes; `None` when inotify is unavailable.
    fn watch(stdout: &File, stderr: &File) -> Option<Self> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok()?;
        let watch = |pipe: &File| {
            let path = format!("/proc/self/fd/{}", pipe.as_raw_fd());
            inotify
                .add_watch(path.as_str(), AddWatchFlags::IN_MODIFY)
                .ok()
        };
        let (stdout, stderr) = (watch(stdout)?, watch(stderr)?);
        Some(Self {
            inotify,
            stdout,
            stderr,
        })
    }

    /// Passes the queued write events to the interleaver. Returns false when the queue
    /// overflowed, which loses the order for good.
    fn collect(&self, interleaver: &mut Interleaver) -> bool {
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    return false;
                }
                // IN_IGNORED follows when a pipe is freed; it is no write.
                if !event.mask.contains(AddWatchFlags::IN_MODIFY) {
                    continue;
                }
                if event.wd == self.stdout {
                    interleaver.push_run(Stream::Stdout);
                } else if event.wd == self.stderr {
                    interleaver.push_run(Stream::Stderr);
                }
            }
        }
        true
    }
}

/// State of the reading thread.
struct ReaderThread<S> {
    /// A pipe is `None` once it reached end of file.
    stdout: Option<File>,
    stderr: Option<File>,
    /// `None` once the owner detached.
    detach: Option<OwnedFd>,
    /// `None` when the write order cannot be observed.
    order: Option<WriteOrder>,
    interleaver: Interleaver,
    /// `None` once handed to the owner; later output is discarded.
    output: Option<S>,
    sender: Option<oneshot::Sender<S>>,
}

/// Result of one `poll(2)`.
#[derive(Debug)]
struct Readiness {
    output: bool,
    detach: bool,
}

impl<S: OutputSink> ReaderThread<S> {
    fn run(mut self) {
        let mut buffer = vec![0; READ_CHUNK];
        while self.stdout.is_some() || self.stderr.is_some() {
            let Ok(ready) = self.wait() else {
                break;
            };
            if ready.output {
                self.read_round(&mut buffer);
            }
            if ready.detach {
                self.detach = None;
                self.flush();
                self.hand_over();
            }
        }
        self.flush();
        self.hand_over();
    }

    /// Blocks until a pipe is readable or closed, a write event is queued, or the owner
    /// detached.
    fn wait(&self) -> nix::Result<Readiness> {
        let output_fds = [
            self.stdout.as_ref().map(File::as_fd),
            self.stderr.as_ref().map(File::as_fd),
            self.order.as_ref().map(|order| order.inotify.as_fd()),
        ];
        let mut poll_fds: Vec<PollFd<'_>> = output_fds
            .iter()
            .flatten()
            .chain(self.detach.as_ref().map(OwnedFd::as_fd).iter())
            .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        loop {
            match poll(&mut poll_fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(error) => return Err(error),
                Ok(_) => break,
            }
        }

        let is_ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|revents| !revents.is_empty());
        let output_count = output_fds.iter().flatten().count();
        Ok(Readiness {
            output: poll_fds[..output_count].iter().any(is_ready),
            detach: poll_fds[output_count..].iter().any(is_ready),
        })
    }

    /// Reads both pipes, then collects the write events, then emits what the events place.
    /// Data comes first so that every write read has its event collected: the kernel queues
    /// the event within the `write(2)` call that filled the pipe. Events of writes made after
    /// the reads wait for their data.
    fn read_round(&mut self, buffer: &mut [u8]) {
        self.read_pipe(Stream::Stdout, buffer);
        self.read_pipe(Stream::Stderr, buffer);
        self.collect_events();
        if self.order.is_some() {
            let output = &mut self.output;
            self.interleaver
                .emit_placed(|stream, bytes| push(output, stream, bytes));
        } else {
            self.release();
        }
    }

    fn collect_events(&mut self) {
        let Some(order) = &self.order else {
            return;
        };
        if !order.collect(&mut self.interleaver) {
            self.order = None;
        }
    }

    /// Reads the packets that are in a pipe now, and closes the pipe at end of file.
    fn read_pipe(&mut self, stream: Stream, buffer: &mut [u8]) {
        let pipe = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let mut packets = 0;
        while packets < PACKETS_PER_ROUND {
            let Some(file) = pipe.as_mut() else {
                return;
            };
            match file.read(buffer) {
                Ok(0) => {
                    *pipe = None;
                    self.interleaver.close(stream);
                }
                Ok(length) => {
                    self.interleaver.push_packet(stream, &buffer[..length]);
                    packets += 1;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    *pipe = None;
                    self.interleaver.close(stream);
                }
            }
        }
    }

    /// Places what the last events allow, then releases everything else.
    fn flush(&mut self) {
        self.collect_events();
        let output = &mut self.output;
        self.interleaver
            .emit_placed(|stream, bytes| push(output, stream, bytes));
        self.release();
    }

    fn release(&mut self) {
        let output = &mut self.output;
        self.interleaver
            .release_all(|stream, bytes| push(output, stream, bytes));
    }

    /// Sends the output read so far to the owner, once.
    fn hand_over(&mut self) {
        if let (Some(sender), Some(output)) = (self.sender.take(), self.output.take()) {
            // The owner may be gone (the request was cancelled); the output is then dropped.
            let _ = sender.send(output);
        }
    }
}

fn push<S: OutputSink>(output: &mut Option<S>, stream: Stream, bytes: &[u8]) {
    if let Some(output) = output {
        output.push(stream, bytes);
    }
}
