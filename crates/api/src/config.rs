//! Settings of the API server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    pub lifecycle: LifecycleConfig,
    /// Limits of organizations that have none of their own.
    pub organization_limits: OrganizationLimits,
    /// How often the CPU and memory use of started sandboxes is sampled for
    /// `GET /sandbox/{id}/telemetry/metrics`.
    pub metrics_interval: Duration,
    pub object_storage: ObjectStorageConfig,
    /// Sandbox networking; `None` leaves sandboxes with loopback only.
    pub network: Option<daytona_runner::network::NetworkConfig>,
    pub ssh_gateway: SshGatewayConfig,
    pub preview: PreviewConfig,
}

/// The SSH gateway's listener and the host that `sshCommand` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshGatewayConfig {
    /// Address the gateway listens on; its port is the one `sshCommand` names.
    pub listen: SocketAddr,
    /// Host name or address that clients reach the gateway at.
    pub public_host: String,
}

/// How preview URLs look and where their proxy listens.
#[derive(Debug, Clone)]
pub struct PreviewConfig {
    /// Address of the preview proxy's listener (HTTP/1.1, and HTTP/2 with prior knowledge).
    pub listen: SocketAddr,
    pub url_style: PreviewUrlStyle,
    /// Scheme, host and port that preview URLs start from, without a trailing slash. With
    /// the host style, `{port}-{sandboxId}.` goes in front of the host. When `None`, the
    /// server uses `http://localhost:<port>` (host style) or `http://<address>` (path style)
    /// of the address it bound, with `https` when `tls` is set.
    pub base_url: Option<String>,
    /// Whether the listener speaks TLS (HTTP/2 or HTTP/1.1 by ALPN) with a certificate of the
    /// local CA, that of the object storage, instead of plain HTTP.
    pub tls: bool,
}

/// The two forms of preview URLs; the proxy accepts both whichever one it hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviewUrlStyle {
    /// `http://{port}-{sandboxId}.{host}`, which needs wildcard DNS for the host (every
    /// `*.localhost` name resolves to loopback in curl and browsers).
    Host,
    /// `http://{host}/preview/{sandboxId}/{port}/`, for hosts without wildcard DNS. Apps see
    /// the path without the prefix, so pages with absolute links work only in the host style.
    Path,
}

impl PreviewConfig {
    /// The host style on `listen`, with `localhost` as the base host.
    pub fn local(listen: SocketAddr) -> Self {
        Self {
            listen,
            url_style: PreviewUrlStyle::Host,
            base_url: None,
            tls: false,
        }
    }

    /// Records the address the listener bound (its port when `listen` asked for any port)
    /// and fills in the default base URL.
    pub fn bound(&mut self, address: SocketAddr) {
        self.listen = address;
        if self.base_url.is_none() {
            let scheme = self.scheme();
            self.base_url = Some(match self.url_style {
                PreviewUrlStyle::Host => format!("{scheme}://localhost:{}", address.port()),
                PreviewUrlStyle::Path => format!("{scheme}://{address}"),
            });
        }
    }

    /// The base URL of preview URLs; see [`PreviewConfig::base_url`].
    pub fn base(&self) -> String {
        self.base_url
            .clone()
            .unwrap_or_else(|| format!("{}://localhost:{}", self.scheme(), self.listen.port()))
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// Where build contexts and sandbox archives are stored.
#[derive(Debug, Clone)]
pub struct ObjectStorageConfig {
    /// Address of the embedded S3 service's HTTPS listener; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Directory of the local CA and the listener's certificate.
    pub tls_dir: PathBuf,
    /// Names the listener's certificate covers besides `localhost`, `127.0.0.1` and `::1`.
    pub tls_names: Vec<String>,
    /// URL that push access hands to SDKs for the embedded service. Without it the URL is
    /// `https://<host the API request reached>:<listener port>`.
    pub public_url: Option<String>,
    /// An external S3 endpoint that replaces the embedded service.
    pub external: Option<daytona_objstore::ExternalConfig>,
}

impl ObjectStorageConfig {
    /// The embedded service on `listen`, with its TLS material in `<data_dir>/tls`.
    pub fn embedded(data_dir: &std::path::Path, listen: SocketAddr) -> Self {
        Self {
            listen,
            tls_dir: data_dir.join("tls"),
            tls_names: Vec::new(),
            public_url: None,
            external: None,
        }
    }
}

/// Limits on what one organization's sandboxes hold at once; 0 is no limit. Started and
/// stopping sandboxes count, and so do creates and starts in progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrganizationLimits {
    pub max_sandboxes: i64,
    /// vCPUs.
    pub total_cpu: i64,
    /// GiB.
    pub total_memory: i64,
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

/// Timing of the sandbox lifecycle.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// Maximum time a sandbox may stay `creating`, `starting` or `stopping`. After it the
    /// sandbox goes to `error`, with a warning in the log.
    pub transition_timeout: Duration,
    /// Real length of one minute of the auto-stop, auto-delete and TTL intervals. One minute,
    /// except in tests, which shrink it so that intervals of a few "minutes" pass in seconds.
    pub minute: Duration,
    /// Test aid: while this file exists, sandbox starts (other
    /// than the warm pool's) wait, which keeps a sandbox in `starting`.
    pub hang_start_file: Option<PathBuf>,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            transition_timeout: Duration::from_secs(60),
            minute: Duration::from_secs(60),
            hang_start_file: None,
        }
    }
}
