//! Settings of the API server.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Settings of `daytona server`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Directory of the state store, the sandboxes and the logs.
    pub data_dir: PathBuf,
    /// Directory of the image store; several data directories may share one.
    pub image_cache_dir: PathBuf,
    /// Address the API, the toolbox proxy and the dashboard listen on.
    pub listen: SocketAddr,
    /// Base URL clients reach this server at, without a trailing slash; the toolbox proxy URL
    /// handed to SDKs is this plus `/toolbox`.
    pub public_url: String,
    /// Host path of the static `daytona-daemon` binary.
    pub daemon_binary: PathBuf,
    /// Value of `DAYTONA_ADMIN_API_KEY`, which seeds the admin key when set.
    pub admin_api_key: Option<String>,
    pub limits: SandboxLimits,
    /// How many started sandboxes of the default snapshot wait for the next creates.
    pub warm_pool_size: usize,
}

/// Defaults and maxima of sandbox resources, per sandbox.
#[derive(Debug, Clone)]
pub struct SandboxLimits {
    pub default_cpu: i64,
    /// GiB.
    pub default_memory: i64,
    /// GiB.
    pub default_disk: i64,
    pub max_cpu: i64,
    /// GiB.
    pub max_memory: i64,
    /// GiB.
    pub max_disk: i64,
    pub pids: u32,
}

impl Default for SandboxLimits {
    /// Daytona's defaults: 1 vCPU, 1 GiB memory, 3 GiB disk, and its per-sandbox maxima of
    /// 4 vCPUs, 8 GiB memory and 10 GiB disk.
    fn default() -> Self {
        Self {
            default_cpu: 1,
            default_memory: 1,
            default_disk: 3,
            max_cpu: 4,
            max_memory: 8,
            max_disk: 10,
            pids: 2048,
        }
    }
}

/// Region name reported as every sandbox's `target`.
pub const TARGET: &str = "local";

/// User that sandbox commands run as unless the create names another.
pub const DEFAULT_USER: &str = "daytona";

/// Name of the organization that the admin key belongs to.
pub const DEFAULT_ORGANIZATION: &str = "default";

/// Defaults of the lifecycle intervals, in minutes, as Daytona has them.
pub const DEFAULT_AUTO_STOP_MINUTES: i64 = 15;
pub const DEFAULT_AUTO_ARCHIVE_MINUTES: i64 = 10080;
pub const DEFAULT_AUTO_DELETE_MINUTES: i64 = -1;
