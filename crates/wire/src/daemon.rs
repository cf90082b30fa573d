//! The configuration the runner hands to the daemon of one sandbox.
//!
//! This is an internal contract between two parts of this project, not a Daytona shape, so
//! unknown fields are rejected.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Environment variable that carries [`DaemonConfig`] as JSON from the runtime into the
/// sandbox's init, which passes it on to the toolbox server and removes it from the
/// environment of everything else.
pub const CONFIG_ENV: &str = "DAYTONA_DAEMON_CONFIG";

/// Environment variable that names the descriptor from which the toolbox server reads
/// [`DaemonConfig`]: a memory file that PID 1 creates from [`CONFIG_ENV`] and keeps, so that
/// changes the toolbox server writes back (such as `POST /env`) survive its restart.
pub const CONFIG_FD_ENV: &str = "DAYTONA_DAEMON_CONFIG_FD";

/// Default cap on the `result` of one exec or code run: 16 MiB.
pub const DEFAULT_OUTPUT_LIMIT: usize = 16 * 1024 * 1024;

/// What the daemon needs to serve one sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DaemonConfig {
    pub sandbox_id: String,
    /// Name of the user that commands run as, looked up in the image's `/etc/passwd`.
    pub user: String,
    /// Environment set at create time; per-command variables override it.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Cap on the captured output of one command, in bytes.
    #[serde(default = "default_output_limit")]
    pub output_limit: usize,
    /// Whether workloads get the sandbox confinement (seccomp, Landlock, capability bounding
    /// set). Off only when the daemon runs outside a sandbox, in its own tests.
    #[serde(default = "default_true")]
    pub confine_workloads: bool,
    /// The complete environment of workloads once `POST /env` changed it; it then replaces the
    /// environment built from the defaults and `env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_env: Option<BTreeMap<String, String>>,
    /// Directory that commands start in: the image's `WorkingDir`; the user's home when
    /// absent or missing from the filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<String>,
}

fn default_output_limit() -> usize {
    DEFAULT_OUTPUT_LIMIT
}

fn default_true() -> bool {
    true
}
