//! Puts the writes of two output streams back in the order they were made, from the order of
//! their inotify events.
//!
//! The inputs are packets and runs. Packets are read from output pipes in packet mode, where
//! a write splits into packets of `PIPE_BUF` bytes, so a shorter packet ends a write. A run is
//! one inotify event: it is one or more consecutive writes to the same stream, because inotify
//! merges an event into an identical one that is still queued. Runs are queued in write order
//! across both streams.
//!
//! The caller reads the pipes before collecting events, so every write read has its event
//! collected, and events of writes not read yet wait for their data. Each run gets at least
//! one write. When a stream has more writes than runs, the extra writes go to the stream's
//! earliest run: several writes to a stream came in a row. That guess is wrong when, between
//! reading the pipes and collecting the events, the other stream and then this stream were
//! written again: the later run then counts against the earlier one, and a write of the
//! earlier run is placed after the other stream's write.

use std::collections::VecDeque;

/// Largest packet of a pipe in packet mode; a write splits into packets of this size.
pub const PACKET_SIZE: usize = libc::PIPE_BUF;

/// Most bytes held back while waiting for the events that place them. Past this, held writes
/// are released in arrival order, so memory stays bounded when events never come (writes
/// made by `splice(2)` have none).
const HOLD_LIMIT: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn index(self) -> usize {
        match self {
            Self::Stdout => 0,
            Self::Stderr => 1,
        }
    }
}

/// Writes of one stream that are not placed yet.
#[derive(Debug, Default)]
struct Writes {
    complete: VecDeque<Vec<u8>>,
    /// Packets of a write that is still being read.
    partial: Vec<u8>,
    /// Writes released without their event; as many runs that find no write are dropped.
    released_early: usize,
}

/// Orders the writes of two streams by their runs.
#[derive(Debug, Default)]
pub struct Interleaver {
    runs: VecDeque<Stream>,
    writes: [Writes; 2],
    held_bytes: usize,
}

impl Interleaver {
    /// Records that a run of writes to `stream` happened after every run recorded before.
    pub fn push_run(&mut self, stream: Stream) {
        self.runs.push_back(stream);
    }

    /// Adds a packet read from `stream`.
    pub fn push_packet(&mut self, stream: Stream, packet: &[u8]) {
        let writes = &mut self.writes[stream.index()];
        writes.partial.extend_from_slice(packet);
        self.held_bytes += packet.len();
        if packet.len() < PACKET_SIZE {
            let write = std::mem::take(&mut writes.partial);
            writes.complete.push_back(write);
        }
    }

    /// Marks the end of `stream`: a write still being read is complete.
    pub fn close(&mut self, stream: Stream) {
        let writes = &mut self.writes[stream.index()];
        if !writes.partial.is_empty() {
            let write = std::mem::take(&mut writes.partial);
            writes.complete.push_back(write);
        }
    }

    /// Emits the writes that the recorded runs place, in order. Writes whose run is not
    /// recorded yet are held, unless too many bytes are held.
    pub fn emit_placed(&mut self, mut emit: impl FnMut(Stream, &[u8])) {
        while let Some(&stream) = self.runs.front() {
            let later_runs = self.runs.iter().skip(1).filter(|s| **s == stream).count();
            let writes = &mut self.writes[stream.index()];
            if writes.complete.is_empty() {
                if writes.released_early == 0 {
                    // The run's data is not read yet.
                    break;
                }
                writes.released_early -= 1;
                self.runs.pop_front();
                continue;
            }

            let count = writes.complete.len().saturating_sub(later_runs).max(1);
            for write in writes.complete.drain(..count) {
                self.held_bytes -= write.len();
                emit(stream, &write);
            }
            self.runs.pop_front();
        }

        if self.held_bytes > HOLD_LIMIT {
            self.release_all(emit);
        }
    }

    /// Emits every write held, in arrival order per stream, standard output first. It is for
    /// writes that no event will place, because the streams ended or the order is unknown.
    pub fn release_all(&mut self, mut emit: impl FnMut(Stream, &[u8])) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let writes = &mut self.writes[stream.index()];
            let mut released = std::mem::take(&mut writes.complete);
            if !writes.partial.is_empty() {
                released.push_back(std::mem::take(&mut writes.partial));
            }
            writes.released_early += released.len();
            for write in released {
                self.held_bytes -= write.len();
                emit(stream, &write);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Stream::{Stderr, Stdout};

    fn emitted(interleaver: &mut Interleaver) -> String {
        let mut text = String::new();
        interleaver.emit_placed(|_, bytes| text.push_str(std::str::from_utf8(bytes).unwrap()));
        text
    }

    fn feed(interleaver: &mut Interleaver, writes: &[(Stream, &str)]) {
        for (stream, text) in writes {
            interleaver.push_packet(*stream, text.as_bytes());
        }
    }

    #[test]
    fn alternating_single_writes_keep_order() {
        let mut interleaver = Interleaver::default();
        for stream in [Stdout, Stderr, Stdout, Stderr] {
            interleaver.push_run(stream);
        }
        feed(
            &mut interleaver,
            &[(Stdout, "a"), (Stdout, "c"), (Stderr, "b"), (Stderr, "d")],
        );
        assert_eq!(emitted(&mut interleaver), "abcd");
    }

    #[test]
    fn runs_of_several_writes_keep_order() {
        // a, b to stdout; c to stderr; d to stdout; e to stderr.
        let mut interleaver = Interleaver::default();
        for stream in [Stdout, Stderr, Stdout, Stderr] {
            interleaver.push_run(stream);
        }
        feed(
            &mut interleaver,
            &[(Stdout, "a"), (Stdout, "b"), (Stdout, "d")],
        );
        feed(&mut interleaver, &[(Stderr, "c"), (Stderr, "e")]);
        assert_eq!(emitted(&mut interleaver), "abcde");
    }

    #[test]
    fn run_waits_for_its_data() {
        let mut interleaver = Interleaver::default();
        interleaver.push_run(Stderr);
        interleaver.push_run(Stdout);
        feed(&mut interleaver, &[(Stdout, "late")]);
        assert_eq!(emitted(&mut interleaver), "");
        feed(&mut interleaver, &[(Stderr, "early")]);
        assert_eq!(emitted(&mut interleaver), "earlylate");
    }

    #[test]
    fn write_split_into_packets_stays_whole() {
        let mut interleaver = Interleaver::default();
        interleaver.push_run(Stdout);
        interleaver.push_run(Stderr);
        interleaver.push_run(Stdout);
        let full = "x".repeat(PACKET_SIZE);
        feed(
            &mut interleaver,
            &[(Stdout, &full), (Stdout, "y"), (Stdout, "z")],
        );
        feed(&mut interleaver, &[(Stderr, "E")]);
        assert_eq!(emitted(&mut interleaver), format!("{full}yEz"));
    }

    #[test]
    fn partial_write_is_held_until_complete() {
        let mut interleaver = Interleaver::default();
        interleaver.push_run(Stdout);
        let full = "x".repeat(PACKET_SIZE);
        feed(&mut interleaver, &[(Stdout, &full)]);
        assert_eq!(emitted(&mut interleaver), "");
        interleaver.close(Stdout);
        assert_eq!(emitted(&mut interleaver), full);
    }

    #[test]
    fn released_writes_drop_their_late_runs() {
        let mut interleaver = Interleaver::default();
        feed(&mut interleaver, &[(Stdout, "spliced")]);
        let mut text = String::new();
        interleaver.release_all(|_, bytes| text.push_str(std::str::from_utf8(bytes).unwrap()));
        assert_eq!(text, "spliced");

        interleaver.push_run(Stdout);
        interleaver.push_run(Stderr);
        feed(&mut interleaver, &[(Stderr, "next")]);
        assert_eq!(emitted(&mut interleaver), "next");
    }

    #[test]
    fn held_bytes_past_limit_are_released() {
        let mut interleaver = Interleaver::default();
        let chunk = "y".repeat(PACKET_SIZE - 1);
        for _ in 0..(HOLD_LIMIT / chunk.len() + 1) {
            interleaver.push_packet(Stdout, chunk.as_bytes());
        }
        assert!(emitted(&mut interleaver).len() > HOLD_LIMIT);
        assert_eq!(interleaver.held_bytes, 0);
    }
}
