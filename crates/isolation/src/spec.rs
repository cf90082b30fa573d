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
