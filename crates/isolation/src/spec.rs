//! What the runner tells the setup stage about one sandbox.

use std::path::PathBuf;

use daytona_wire::daemon::DaemonConfig;
use serde::{Deserialize, Serialize};

/// Everything the setup stage needs to start one sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxSpec {
    pub sandbox_id: String,
    pub hostname: String,
    /// Unpacked image layers, lowest first.
    pub layers: Vec<PathBuf>,
    /// The sandbox's private writable overlay layer; it persists across stop and start.
    pub upper_dir: PathBuf,
    /// Overlay work directory, on the same filesystem as `upper_dir`.
    pub overlay_work_dir: PathBuf,
    /// Host-side directory private to this sandbox: the toolbox socket, mount points and
    /// generated `/etc` files. Never visible inside the sandbox.
    pub run_dir: PathBuf,
    pub id_map: IdMap,
    /// Cgroup directories, one per hierarchy, that the sandbox joins. The runner creates them
    /// with their limits before the setup stage runs.
    pub cgroup_dirs: Vec<PathBuf>,
    /// Host path of the static daemon binary, bind-mounted read-only into the sandbox.
    pub daemon_binary: PathBuf,
    pub daemon: DaemonConfig,
    /// Test hook: PID 1 runs this command, confined like a workload, in place of the toolbox
    /// server, and the sandbox ends when the command exits. Production specs leave it unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_command: Option<Vec<String>>,
}

/// Maps uids and gids `0..size` inside the sandbox to `host_base..host_base + size` outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdMap {
    pub host_base: u32,
    pub size: u32,
}

/// File name of the toolbox socket inside a sandbox's run directory.
pub const TOOLBOX_SOCKET: &str = "toolbox.sock";

/// Path inside the sandbox where the daemon binary is bind-mounted.
pub const DAEMON_PATH_IN_SANDBOX: &str = "/usr/local/bin/daytona-daemon";

/// File name, in a sandbox's run directory, of the log that receives the standard output and
/// error of the setup stage, PID 1 and the toolbox server.
pub const LOG_FILE: &str = "sandbox.log";

/// Directory, in a sandbox's run directory, where the overlay root is mounted.
pub const ROOTFS_DIR: &str = "rootfs";

/// Directory, in a sandbox's run directory, with one mount point per ID-mapped layer.
pub const LOWER_DIR: &str = "lower";

/// Files in a sandbox's run directory that are bind-mounted read-only over the same names in
/// the sandbox's `/etc`.
pub const ETC_FILES: [&str; 3] = ["hosts", "hostname", "resolv.conf"];
