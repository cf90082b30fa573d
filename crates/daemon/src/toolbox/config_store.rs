//! The daemon configuration kept in a memory file that PID 1 owns, so that the toolbox server
//! can change it and find the change again after a restart.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{FromRawFd, RawFd};

use anyhow::Context;
use daytona_wire::daemon::DaemonConfig;

/// The memory file that holds the configuration.
#[derive(Debug)]
pub struct ConfigStore {
    file: std::fs::File,
}

impl ConfigStore {
    /// Takes the inherited descriptor `fd` and reads the configuration from it.
    pub fn open(fd: RawFd) -> anyhow::Result<(Self, DaemonConfig)> {
        // SAFETY: PID 1 passes this descriptor to the toolbox server for its sole use, and
        // nothing else in this process owns it.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        let mut text = String::new();
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_string(&mut text))
            .with_context(|| format!("failed to read the daemon configuration from fd {fd}"))?;
        let config = serde_json::from_str(&text)
            .with_context(|| format!("invalid daemon configuration on fd {fd}"))?;
        Ok((Self { file }, config))
    }

    /// Replaces the stored configuration.
    pub fn save(&mut self, config: &DaemonConfig) -> std::io::Result<()> {
        let text = serde_json::to_vec(config).expect("the configuration always serializes");
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&text)
    }
}
