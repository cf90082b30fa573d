//! The log of one session command: its output in write order, kept in a file with a size cap,
//! readable while the command runs and followable until it ends.
//!
//! The file contains records: one byte naming the stream (1 standard output, 2 standard error),
//! the length as four bytes little-endian, then the bytes as written. Records keep the output
//! binary-safe; the 3-byte markers of Daytona's streaming format exist only on the wire, where
//! a command's own output could contain them.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use daytona_wire::sessions::SessionCommandLogsResponse;
use tokio::sync::watch;

use crate::toolbox::process::interleave::Stream;
use crate::toolbox::process::reader::OutputSink;

/// Size of a record's header: the stream byte and the length.
const RECORD_HEADER: usize = 5;

/// Marker that precedes standard output on the wire.
pub const STDOUT_MARKER: [u8; 3] = [1, 1, 1];

/// Marker that precedes standard error on the wire.
pub const STDERR_MARKER: [u8; 3] = [2, 2, 2];

/// How far a log has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of records in the file.
    pub len: u64,
    /// Whether the log is complete: the command ended and its output was read.
    pub done: bool,
}

/// The log of one command.
#[derive(Debug)]
pub struct CommandLog {
    path: PathBuf,
    state: Mutex<Writer>,
    progress: watch::Sender<Progress>,
}

#[derive(Debug)]
struct Writer {
    /// `None` once the log is complete, or when the file could not be written.
    file: Option<File>,
    len: u64,
    /// Maximum bytes of records in the file, the truncation notice excluded.
    limit: u64,
    truncated: bool,
}

impl CommandLog {
    /// Creates an empty log file at `path` that keeps at most `limit` bytes of output.
    pub fn create(path: PathBuf, limit: u64) -> io::Result<Self> {
        let file = File::options()
            .create_new(true)
            .write(true)
            .read(true)
            .open(&path)?;
        let (progress, _) = watch::channel(Progress {
            len: 0,
            done: false,
        });
        Ok(Self {
            path,
            state: Mutex::new(Writer {
                file: Some(file),
                len: 0,
                limit,
                truncated: false,
            }),
            progress,
        })
    }

    /// Opens the complete log of a command that ended before the toolbox server restarted.
    pub fn reopen(path: PathBuf) -> Self {
        let len = std::fs::metadata(&path).map_or(0, |metadata| metadata.len());
        let (progress, _) = watch::channel(Progress { len, done: true });
        Self {
            path,
            state: Mutex::new(Writer {
                file: None,
                len,
                limit: len,
                truncated: true,
            }),
            progress,
        }
    }

    /// Bytes the log takes on disk.
    pub fn len(&self) -> u64 {
        self.progress.borrow().len
    }

    /// Appends bytes written to `stream`. Past the limit, the log ends with a notice on the
    /// same stream and later bytes are dropped.
    pub fn append(&self, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut writer = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if writer.truncated || writer.file.is_none() {
            return;
        }
        let room = writer.limit.saturating_sub(writer.len);
        let fits = (bytes.len() + RECORD_HEADER) as u64 <= room;
        if fits {
            writer.write_record(stream, bytes);
        } else {
            let kept = room.saturating_sub(RECORD_HEADER as u64) as usize;
            if kept > 0 {
                writer.write_record(stream, &bytes[..kept]);
            }
            let notice = format!(
                "\n[output truncated: the log of this command is limited to {} bytes]\n",
                writer.limit
            );
            writer.write_record(stream, notice.as_bytes());
            writer.truncated = true;
        }
        let len = writer.len;
        self.progress.send_modify(|progress| progress.len = len);
    }

    /// Marks the log complete: nothing is appended after this.
    pub fn finish(&self) {
        let mut writer = self.state.lock().unwrap_or_else(|e| e.into_inner());
        writer.file = None;
        let len = writer.len;
        self.progress.send_replace(Progress { len, done: true });
    }

    /// Follows the log's progress.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Reads the log as Daytona's JSON logs: the interleaved output and each stream alone.
    pub fn read_text(&self) -> io::Result<SessionCommandLogsResponse> {
        let len = self.len();
        let mut records = Records::default();
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(SessionCommandLogsResponse::default());
            }
            Err(error) => return Err(error),
        };
        let mut data = Vec::new();
        Read::by_ref(&mut file).take(len).read_to_end(&mut data)?;
        records.push(&data);

        let (mut output, mut stdout, mut stderr) = (Vec::new(), Vec::new(), Vec::new());
        for (stream, bytes) in records.drain() {
            output.extend_from_slice(&bytes);
            match stream {
                Stream::Stdout => stdout.extend_from_slice(&bytes),
                Stream::Stderr => stderr.extend_from_slice(&bytes),
            }
        }
        let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
        Ok(SessionCommandLogsResponse {
            output: text(output),
            stdout: text(stdout),
            stderr: text(stderr),
        })
    }

    /// Reads up to `max` bytes of records from `offset` and returns them in the wire format:
    /// each record's bytes preceded by its stream's marker. `records` carries a record split
    /// across two reads.
    pub fn read_wire(
        &self,
        offset: &mut u64,
        max: usize,
        records: &mut Records,
    ) -> io::Result<Vec<u8>> {
        let len = self.len();
        if *offset >= len {
            return Ok(Vec::new());
        }
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(*offset))?;
        let wanted = (len - *offset).min(max as u64);
        let mut data = Vec::with_capacity(wanted as usize);
        file.take(wanted).read_to_end(&mut data)?;
        *offset += data.len() as u64;
        records.push(&data);

        let mut wire = Vec::with_capacity(data.len());
        for (stream, bytes) in records.drain() {
            wire.extend_from_slice(match stream {
                Stream::Stdout => &STDOUT_MARKER,
                Stream::Stderr => &STDERR_MARKER,
            });
            wire.extend_from_slice(&bytes);
        }
        Ok(wire)
    }

    /// Removes the log file.
    pub fn remove(&self) {
        let mut writer = self.state.lock().unwrap_or_else(|e| e.into_inner());
        writer.file = None;
        if let Err(error) = std::fs::remove_file(&self.path)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), %error, "failed to remove a command log");
        }
    }
}

impl Writer {
    fn write_record(&mut self, stream: Stream, bytes: &[u8]) {
        let Some(file) = &mut self.file else {
            return;
        };
        let mut record = Vec::with_capacity(RECORD_HEADER + bytes.len());
        record.push(match stream {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        });
        record.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        record.extend_from_slice(bytes);
        match file.write_all(&record) {
            Ok(()) => self.len += record.len() as u64,
            Err(error) => {
                // A full disk ends the log; the command keeps running.
                tracing::warn!(%error, "failed to write a command log: later output is dropped");
                self.file = None;
            }
        }
    }
}

/// The sink that the output reader fills: the log of one command.
pub struct LogSink(pub std::sync::Arc<CommandLog>);

impl OutputSink for LogSink {
    fn push(&mut self, stream: Stream, bytes: &[u8]) {
        self.0.append(stream, bytes);
    }
}

/// Parses records from bytes that may end in the middle of one.
#[derive(Debug, Default)]
pub struct Records {
    pending: Vec<u8>,
    parsed: Vec<(Stream, Vec<u8>)>,
}

impl Records {
    pub fn push(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
        let mut at = 0;
        while self.pending.len() - at >= RECORD_HEADER {
            let stream = match self.pending[at] {
                2 => Stream::Stderr,
                _ => Stream::Stdout,
            };
            let length_bytes: [u8; 4] = self.pending[at + 1..at + RECORD_HEADER]
                .try_into()
                .expect("four bytes");
            let length = u32::from_le_bytes(length_bytes) as usize;
            if self.pending.len() - at - RECORD_HEADER < length {
                break;
            }
            let start = at + RECORD_HEADER;
            self.parsed
                .push((stream, self.pending[start..start + length].to_vec()));
            at = start + length;
        }
        self.pending.drain(..at);
    }

    pub fn drain(&mut self) -> impl Iterator<Item = (Stream, Vec<u8>)> + '_ {
        self.parsed.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(limit: u64) -> (tempfile::TempDir, CommandLog) {
        let dir = tempfile::tempdir().unwrap();
        let log = CommandLog::create(dir.path().join("c.log"), limit).unwrap();
        (dir, log)
    }

    #[test]
    fn text_keeps_order_and_streams_apart() {
        let (_dir, log) = log(1024);
        log.append(Stream::Stdout, b"out1 ");
        log.append(Stream::Stderr, b"err ");
        log.append(Stream::Stdout, b"out2");
        let text = log.read_text().unwrap();
        assert_eq!(text.output, "out1 err out2");
        assert_eq!(text.stdout, "out1 out2");
        assert_eq!(text.stderr, "err ");
    }

    #[test]
    fn wire_format_marks_each_chunk_and_survives_split_reads() {
        let (_dir, log) = log(1024);
        log.append(Stream::Stdout, b"a\x00b");
        log.append(Stream::Stderr, b"no newline");
        let mut offset = 0;
        let mut records = Records::default();
        let mut wire = Vec::new();
        // Three bytes at a time splits headers and data.
        loop {
            let chunk = log.read_wire(&mut offset, 3, &mut records).unwrap();
            if chunk.is_empty() && offset >= log.len() {
                break;
            }
            wire.extend(chunk);
        }
        assert_eq!(wire, b"\x01\x01\x01a\x00b\x02\x02\x02no newline");
    }

    #[test]
    fn flood_is_truncated_with_a_notice() {
        let (_dir, log) = log(100);
        for _ in 0..50 {
            log.append(Stream::Stdout, &[b'x'; 10]);
        }
        let text = log.read_text().unwrap();
        assert!(text.stdout.starts_with("xxxxxxxxxx"));
        assert!(
            text.stdout
                .ends_with("[output truncated: the log of this command is limited to 100 bytes]\n"),
            "{}",
            text.stdout
        );
        assert!(log.len() < 100 + 100);
    }

    #[test]
    fn finish_marks_done() {
        let (_dir, log) = log(100);
        let receiver = log.subscribe();
        assert!(!receiver.borrow().done);
        log.finish();
        assert!(receiver.borrow().done);
        log.append(Stream::Stdout, b"late");
        assert_eq!(log.read_text().unwrap().output, "");
    }
}
