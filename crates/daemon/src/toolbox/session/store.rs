//! The session store: the logs of session commands, the scripts that run them, and a record
//! of each session, so that a restarted toolbox server finds its sessions again.
//!
//! The directory is `DAYTONA_TOOLBOX_STATE_DIR` when set. In a sandbox, where PID 1 started
//! the toolbox server, it is [`SANDBOX_STATE_DIR`]. Anywhere else (the daemon's own tests)
//! it is a directory of this process under the temporary directory, and nothing is reloaded.
//!
//! A record names the PID 1 it was written under. Records of an earlier start of the sandbox
//! describe processes that no longer exist and are removed.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Environment variable that names the state directory.
pub const STATE_DIR_ENV: &str = "DAYTONA_TOOLBOX_STATE_DIR";

/// The state directory in a sandbox.
pub const SANDBOX_STATE_DIR: &str = "/run/daytona/toolbox";

/// The files of every session.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    /// Whether records of an earlier server are loaded.
    persistent: bool,
    /// Set once the directories exist.
    ready: OnceLock<Result<(), String>>,
}

/// The part of a session kept across a restart of the toolbox server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionRecord {
    pub session_id: String,
    /// Name of the session's directory.
    pub dir: String,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    pub commands: Vec<CommandRecord>,
}

/// The part of a command kept across a restart of the toolbox server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandRecord {
    pub id: String,
    pub command: String,
    pub exit_code: Option<i32>,
    /// Seconds since the Unix epoch.
    pub ended_at: Option<u64>,
    /// The command's process group, which its background processes may still be in.
    #[serde(default)]
    pub process_group: Option<i32>,
}

impl Store {
    /// Picks the state directory as the module documentation describes.
    pub fn from_environment() -> Self {
        if let Some(dir) = std::env::var_os(STATE_DIR_ENV).filter(|dir| !dir.is_empty()) {
            return Self::at(PathBuf::from(dir), true);
        }
        if nix::unistd::getppid().as_raw() == 1 {
            return Self::at(PathBuf::from(SANDBOX_STATE_DIR), true);
        }
        let private = std::env::temp_dir().join(format!("daytona-toolbox-{}", std::process::id()));
        Self::at(private, false)
    }

    pub fn at(root: PathBuf, persistent: bool) -> Self {
        Self {
            root,
            persistent,
            ready: OnceLock::new(),
        }
    }

    /// Directory of the scripts and state files that session commands read and write as the
    /// sandbox user: it can be entered but not listed.
    pub fn exchange_dir(&self) -> PathBuf {
        self.root.join("exchange")
    }

    fn sessions_dir(&self) -> PathBuf {
        self.root.join("sessions")
    }

    pub fn session_dir(&self, dir: &str) -> PathBuf {
        self.sessions_dir().join(dir)
    }

    /// Creates the directories on first use.
    pub fn ensure(&self) -> io::Result<()> {
        let result = self.ready.get_or_init(|| {
            self.create_dirs()
                .map_err(|error| format!("{}: {error}", self.root.display()))
        });
        result.clone().map_err(io::Error::other)
    }

    fn create_dirs(&self) -> io::Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true).mode(0o711);
        builder.create(&self.root)?;
        builder.create(self.exchange_dir())?;
        builder.mode(0o700).create(self.sessions_dir())?;
        // The workload runs as the sandbox user and must reach its script.
        for dir in [self.root.clone(), self.exchange_dir()] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
        }
        Ok(())
    }

    /// Loads the records an earlier toolbox server of this sandbox start left, and removes
    /// those of an earlier start.
    pub fn load(&self) -> Vec<SessionRecord> {
        if !self.persistent || !self.root.is_dir() {
            return Vec::new();
        }
        let boot_file = self.root.join("boot");
        let boot = boot_id();
        let previous = std::fs::read_to_string(&boot_file).unwrap_or_default();
        if previous.trim() != boot {
            let _ = std::fs::remove_dir_all(self.sessions_dir());
            let _ = std::fs::remove_dir_all(self.exchange_dir());
            if let Err(error) = self
                .ensure()
                .and_then(|()| std::fs::write(&boot_file, &boot))
            {
                tracing::warn!(%error, "failed to prepare the session state directory");
            }
            return Vec::new();
        }

        // Scripts and state files left there belong to commands of the previous server, which
        // read their scripts through descriptors they already have.
        let _ = std::fs::remove_dir_all(self.exchange_dir());
        let Ok(entries) = std::fs::read_dir(self.sessions_dir()) else {
            return Vec::new();
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path().join("session.json");
            let loaded = std::fs::read(&path)
                .map_err(|error| error.to_string())
                .and_then(|json| {
                    serde_json::from_slice::<SessionRecord>(&json).map_err(|e| e.to_string())
                });
            match loaded {
                Ok(record) => records.push(record),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "dropping an unreadable session record");
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        records
    }

    /// Writes a session's record, replacing the previous one whole.
    pub fn save(&self, record: &SessionRecord) {
        if !self.persistent {
            return;
        }
        let dir = self.session_dir(&record.dir);
        let result = (|| -> io::Result<()> {
            if !self.root.join("boot").exists() {
                std::fs::write(self.root.join("boot"), boot_id())?;
            }
            let json = serde_json::to_vec(record).map_err(io::Error::other)?;
            let temporary = dir.join("session.json.tmp");
            std::fs::write(&temporary, json)?;
            std::fs::rename(&temporary, dir.join("session.json"))
        })();
        if let Err(error) = result {
            tracing::warn!(session_id = %record.session_id, %error, "failed to save a session record");
        }
    }
}

/// Names this start of the sandbox: the start time of PID 1, in clock ticks since boot.
fn boot_id() -> String {
    let stat = std::fs::read_to_string("/proc/1/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may contain spaces;
    // the start time is field 22 of the line, the 20th after the name.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after_name
        .split_whitespace()
        .nth(19)
        .unwrap_or("unknown")
        .to_owned()
}

/// Seconds since the Unix epoch.
pub fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// The time `seconds` after the Unix epoch.
pub fn from_unix_seconds(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

/// Creates a file for the sandbox user: readable and writable by it alone.
pub fn create_user_file(path: &Path, content: &[u8], owner: Option<(u32, u32)>) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::File::options()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    file.write_all(content)
}
