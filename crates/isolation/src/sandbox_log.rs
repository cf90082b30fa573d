//! The size cap of the sandbox log (`sandbox.log` in the run directory).
//!
//! The setup stage, PID 1, the toolbox server and the launcher all write to one open file
//! description of the log in append mode. So the log is trimmed in place: renaming it would
//! leave every writer on the old file. The runner trims it at each start, and the launcher,
//! which lives inside the sandbox as long as the toolbox server, checks it periodically.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

/// A log larger than this is trimmed.
pub const LOG_LIMIT: u64 = 1 << 20;

/// About this much of the newest log survives a trim.
const KEEP: u64 = 256 << 10;

/// Trims the log if it is a regular file larger than [`LOG_LIMIT`]; returns whether it did.
///
/// The oldest part goes with `fallocate(FALLOC_FL_COLLAPSE_RANGE)`, in whole filesystem
/// blocks, so that concurrent appends are kept (ext4 and XFS support it). Where the
/// filesystem does not, the log is truncated to a line that reports the truncation.
pub fn trim(log: &File) -> io::Result<bool> {
    let meta = log.metadata()?;
    if !meta.is_file() || meta.len() <= LOG_LIMIT {
        return Ok(false);
    }

    let block = meta.blksize().max(1);
    let cut = (meta.len() - KEEP) / block * block;
    // SAFETY: fallocate on a descriptor that `log` keeps open, with integer arguments.
    let collapsed = unsafe {
        libc::fallocate(
            log.as_raw_fd(),
            libc::FALLOC_FL_COLLAPSE_RANGE,
            0,
            cut as libc::off_t,
        )
    } == 0;
    if !collapsed {
        log.set_len(0)?;
        let note = format!(
            "daytona: the log reached {} bytes and was truncated\n",
            meta.len()
        );
        (&*log).write_all(note.as_bytes())?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(size: usize) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sandbox.log");
        let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
        let content: Vec<u8> = line.iter().copied().cycle().take(size).collect();
        std::fs::write(&path, content).unwrap();
        let file = File::options().append(true).open(&path).unwrap();
        (dir, file)
    }

    #[test]
    fn small_log_kept() {
        let (_dir, file) = log_of(1000);
        assert!(!trim(&file).unwrap());
        assert_eq!(file.metadata().unwrap().len(), 1000);
    }

    #[test]
    fn large_log_trimmed_and_appendable() {
        let (_dir, mut file) = log_of(3 << 20);
        assert!(trim(&file).unwrap());
        let len = file.metadata().unwrap().len();
        assert!(len <= LOG_LIMIT, "{len} bytes left");
        assert!(len > 0);

        file.write_all(b"after\n").unwrap();
        assert_eq!(file.metadata().unwrap().len(), len + 6);
    }
}
