//! One sandbox's runtime record, stored as `sandbox.json` in its directory.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use daytona_isolation::spawn::SandboxProcess;
use daytona_isolation::spec::{DISK_DIR, VolumeMount};
use serde::{Deserialize, Serialize};

use crate::network::SandboxNetwork;

/// Resource limits of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    pub cpus: u32,
    pub memory_gib: u32,
    pub disk_gib: u32,
    pub pids: u32,
}

impl Default for Limits {
    /// Daytona's defaults (1 vCPU, 1 GiB memory, 3 GiB disk) and a PIDs limit of 2048.
    fn default() -> Self {
        Self {
            cpus: 1,
            memory_gib: 1,
            disk_gib: 3,
            pids: 2048,
        }
    }
}

/// What the runner keeps about one sandbox across restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceRecord {
    pub sandbox_id: String,
    pub slot: u32,
    /// Unpacked image layers, lowest first.
    pub layers: Vec<PathBuf>,
    pub user: String,
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    /// PID 1 of the sandbox while it runs.
    pub process: Option<SandboxProcess>,
    /// Whether the sandbox waits in the warm pool, not yet handed to anyone.
    #[serde(default)]
    pub pooled: bool,
    /// Host directories mounted into the sandbox.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Whether the sandbox's writable layer lives in its disk image ([`InstanceDirs::disk_image`]),
    /// which bounds it to `limits.disk_gib`. Sandboxes created before disk images existed, or
    /// by a runner without loop devices, keep it in `upper` on the host filesystem.
    #[serde(default)]
    pub disk_image: bool,
    /// Directory that commands start in; the user's home when `None`.
    #[serde(default)]
    pub work_dir: Option<String>,
    /// Whether the writable layer was archived and removed from this host.
    #[serde(default)]
    pub archived: bool,
    /// The sandbox's network index and egress policy; `None` for loopback only.
    #[serde(default)]
    pub network: Option<SandboxNetwork>,
}

/// Whether a sandbox's processes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxRuntimeState {
    Running,
    Stopped,
}

/// Paths of one sandbox's directory.
#[derive(Debug, Clone)]
pub struct InstanceDirs {
    pub root: PathBuf,
}

impl InstanceDirs {
    pub fn new(sandboxes_dir: &Path, sandbox_id: &str) -> Self {
        Self {
            root: sandboxes_dir.join(sandbox_id),
        }
    }

    pub fn record(&self) -> PathBuf {
        self.root.join("sandbox.json")
    }

    pub fn upper(&self) -> PathBuf {
        self.root.join("upper")
    }

    pub fn overlay_work(&self) -> PathBuf {
        self.root.join("work")
    }

    /// The sparse file with the ext4 filesystem of the sandbox's writable layer.
    pub fn disk_image(&self) -> PathBuf {
        self.root.join("disk.img")
    }

    /// The upper directory inside the mounted disk image, as the setup stage sees it.
    pub fn disk_upper(&self) -> PathBuf {
        self.run().join(DISK_DIR).join("upper")
    }

    /// The overlay work directory inside the mounted disk image.
    pub fn disk_overlay_work(&self) -> PathBuf {
        self.run().join(DISK_DIR).join("work")
    }

    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn toolbox_socket(&self) -> PathBuf {
        self.run().join(daytona_isolation::spec::TOOLBOX_SOCKET)
    }
}

impl InstanceRecord {
    /// Writes the record atomically: a crash leaves the old or the new version, never a mix.
    pub fn save(&self, dirs: &InstanceDirs) -> io::Result<()> {
        let path = dirs.record();
        let temporary = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).expect("the record always serializes");
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, &path)
    }

    pub fn load(dirs: &InstanceDirs) -> io::Result<Self> {
        let text = std::fs::read(dirs.record())?;
        serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}
