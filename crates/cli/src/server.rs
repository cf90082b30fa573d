//! `daytona server`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use daytona_api::{
    LifecycleConfig, ObjectStorageConfig, OrganizationLimits, PreviewConfig, PreviewUrlStyle,
    SandboxLimits, ServerConfig, SshGatewayConfig,
};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Directory of the state store, the sandboxes' files and the logs
    /// [default: /var/lib/daytona as root, else $XDG_DATA_HOME/daytona or ~/.local/share/daytona]
    #[arg(long, env = "DAYTONA_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Address to listen on for the API and the toolbox proxy.
    #[arg(long, env = "DAYTONA_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,

    /// Directory of the image store; several data directories can share one
    /// [default: <data-dir>/images]
    #[arg(long, env = "DAYTONA_IMAGE_CACHE")]
    image_cache: Option<PathBuf>,

    /// URL clients reach this server at [default: http://<listen>]
    #[arg(long, env = "DAYTONA_PUBLIC_URL")]
    public_url: Option<String>,

    /// Path of the static daytona-daemon binary [default: next to this executable]
    #[arg(long, env = "DAYTONA_DAEMON_BINARY")]
    daemon_binary: Option<PathBuf>,

    /// Started sandboxes of the default snapshot kept waiting for creates, so that a create
    /// takes one instead of starting a sandbox (0 disables the warm pool).
    #[arg(long, env = "DAYTONA_WARM_POOL_SIZE", default_value_t = 2)]
    warm_pool_size: usize,

    #[command(flatten)]
    network: crate::network::NetworkArgs,

    /// Seconds a sandbox may stay creating, starting or stopping; after that it goes to
    /// the error state, which frees its CPU and memory.
    #[arg(long, env = "DAYTONA_TRANSITION_TIMEOUT", default_value_t = 60, value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..))]
    transition_timeout: u64,

    /// Testing aid: real seconds that one minute of the auto-stop, auto-delete and TTL
    /// intervals lasts, so that tests of those timers take seconds. Keep 60 otherwise.
    #[arg(long, default_value_t = 60, value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..))]
    lifecycle_minute: u64,

    /// Most sandboxes one organization may have started at once, creates and starts in
    /// progress included (0 for no limit). The admin can set another limit per organization.
    #[arg(
        long,
        env = "DAYTONA_ORG_MAX_SANDBOXES",
        default_value_t = 100,
        value_name = "COUNT"
    )]
    org_max_sandboxes: u32,

    /// Most vCPUs one organization's started sandboxes may have in total (0 for no limit).
    #[arg(
        long,
        env = "DAYTONA_ORG_MAX_CPU",
        default_value_t = 100,
        value_name = "VCPUS"
    )]
    org_max_cpu: u32,

    /// Most memory one organization's started sandboxes may have in total, in GiB (0 for no
    /// limit).
    #[arg(
        long,
        env = "DAYTONA_ORG_MAX_MEMORY",
        default_value_t = 200,
        value_name = "GIB"
    )]
    org_max_memory: u32,

    /// Seconds between two samples of the CPU and memory use of started sandboxes, which
    /// `get_metrics` returns.
    #[arg(long, env = "DAYTONA_METRICS_INTERVAL", default_value_t = 10, value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..))]
    metrics_interval: u64,

    /// Address of the embedded S3 object storage's HTTPS listener, which SDKs upload the local
    /// files of declarative images to (port 0 picks a free port).
    #[arg(
        long,
        env = "DAYTONA_OBJECT_STORAGE_LISTEN",
        default_value = daytona_objstore::DEFAULT_LISTEN
    )]
    object_storage_listen: SocketAddr,

    /// URL that SDKs reach the embedded object storage at [default: https://<host of the API
    /// request>:<port of --object-storage-listen>]
    #[arg(long, env = "DAYTONA_OBJECT_STORAGE_PUBLIC_URL")]
    object_storage_public_url: Option<String>,

    /// Directory of the local CA and the object storage's certificate; trust its ca.crt
    /// (`daytona tls ca-path`) [default: <data-dir>/tls]
    #[arg(long, env = "DAYTONA_TLS_DIR")]
    tls_dir: Option<PathBuf>,

    /// Host name or address the object storage's certificate covers besides localhost,
    /// 127.0.0.1 and ::1 (repeatable; comma-separated in the variable).
    #[arg(long = "tls-name", env = "DAYTONA_TLS_NAMES", value_delimiter = ',')]
    tls_names: Vec<String>,

    /// URL of an external S3 endpoint to use instead of the embedded object storage, for
    /// example https://s3.example.com; its buckets must exist.
    #[arg(long, env = "DAYTONA_OBJECT_STORAGE_URL")]
    object_storage_url: Option<String>,

    /// Region of the external S3 endpoint.
    #[arg(long, env = "DAYTONA_OBJECT_STORAGE_REGION", default_value = daytona_objstore::DEFAULT_REGION)]
    object_storage_region: String,

    /// Access key of the external S3 endpoint.
    #[arg(
        long,
        env = "DAYTONA_OBJECT_STORAGE_ACCESS_KEY",
        hide_env_values = true
    )]
    object_storage_access_key: Option<String>,

    /// Secret key of the external S3 endpoint; prefer the variable, which stays out of the
    /// process list.
    #[arg(
        long,
        env = "DAYTONA_OBJECT_STORAGE_SECRET_KEY",
        hide_env_values = true
    )]
    object_storage_secret_key: Option<String>,

    /// Prefix of the external endpoint's bucket names (daytona-volume-builds and
    /// daytona-archives), so that several servers can share one account.
    #[arg(long, env = "DAYTONA_OBJECT_STORAGE_BUCKET_PREFIX", default_value = "")]
    object_storage_bucket_prefix: String,

    /// Address the SSH gateway listens on for `ssh -p <port> <token>@<host>`.
    #[arg(long, env = "DAYTONA_SSH_LISTEN", default_value = "127.0.0.1:2222")]
    ssh_listen: SocketAddr,

    /// Host name or address that the `sshCommand` of SSH access tokens names [default: the
    /// host of --public-url]
    #[arg(long, env = "DAYTONA_SSH_PUBLIC_HOST")]
    ssh_public_host: Option<String>,

    /// Address of the preview proxy, which serves the sandboxes' preview URLs (port 0 picks
    /// a free port).
    #[arg(long, env = "DAYTONA_PREVIEW_LISTEN", default_value = "127.0.0.1:4000")]
    preview_listen: SocketAddr,

    /// Form of preview URLs: `host` gives http://{port}-{sandboxId}.localhost:4000, which
    /// needs wildcard DNS for other domains; `path` gives
    /// http://127.0.0.1:4000/preview/{sandboxId}/{port}/. The proxy accepts both.
    #[arg(long, env = "DAYTONA_PREVIEW_URL_STYLE", value_enum, default_value_t = UrlStyle::Host)]
    preview_url_style: UrlStyle,

    /// Scheme, host and port that preview URLs start from, for example
    /// https://preview.example.com; with the host style `{port}-{sandboxId}.` goes in front
    /// of the host [default: http://localhost:<port of --preview-listen> (host style),
    /// http://<--preview-listen> (path style)]
    #[arg(long, env = "DAYTONA_PREVIEW_BASE_URL")]
    preview_base_url: Option<String>,

    /// Serve preview URLs over TLS, HTTP/2 and HTTP/1.1 by ALPN, with the certificate of the
    /// local CA in --tls-dir that the object storage uses (it covers localhost, 127.0.0.1,
    /// ::1 and --tls-name, not `*.localhost`, so clients that check it need the path style)
    #[arg(long, env = "DAYTONA_PREVIEW_TLS")]
    preview_tls: bool,

    /// Test aid, left out of the help: while this file exists, sandbox starts (other than
    /// the warm pool's) wait, which keeps a sandbox in the starting state.
    #[arg(long, value_name = "FILE", hide = true)]
    test_hang_start_file: Option<PathBuf>,
}

/// Returns the host of a URL such as `http://example.com:3000/base`, without brackets around
/// an IPv6 address.
fn url_host(url: &str) -> anyhow::Result<String> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() {
        bail!("the public URL {url:?} has no host; pass --ssh-public-host");
    }
    Ok(host.to_owned())
}

/// The `--preview-url-style` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum UrlStyle {
    Host,
    Path,
}

pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(PathBuf::from("/var/lib/daytona"));
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("daytona"));
    }
    let home = std::env::var_os("HOME")
        .context("neither XDG_DATA_HOME nor HOME is set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/daytona"))
}

/// Finds the daemon binary: beside this executable, or in the target directory of a build
/// with `--target x86_64-unknown-linux-gnu`, where the static build lands.
fn default_daemon_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("failed to find this executable's path")?;
    let dir = exe
        .parent()
        .context("this executable has no parent directory")?;
    let profile = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let mut candidates = vec![dir.join("daytona-daemon")];
    if let Some(target_dir) = dir.parent() {
        candidates.insert(
            0,
            target_dir
                .join("x86_64-unknown-linux-gnu")
                .join(&profile)
                .join("daytona-daemon"),
        );
    }
    for candidate in &candidates {
        if candidate.is_file() {
            return Ok(candidate.clone());
        }
    }
    bail!(
        "the static daytona-daemon binary was not found (looked at {}); build it or pass --daemon-binary",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Logs to the terminal and to `<data-dir>/logs/server.log`.
fn init_logging(
    data_dir: &std::path::Path,
) -> anyhow::Result<tracing_appender::non_blocking::WorkerGuard> {
    let logs = data_dir.join("logs");
    std::fs::create_dir_all(&logs)
        .with_context(|| format!("failed to create {}", logs.display()))?;
    let (file_writer, guard) =
        tracing_appender::non_blocking(tracing_appender::rolling::never(&logs, "server.log"));
    // netlink-packet-route warns about every interface attribute newer than itself, which
    // current kernels send on each link lookup.
    let filter = || {
        EnvFilter::try_from_env("DAYTONA_LOG")
            .unwrap_or_else(|_| EnvFilter::new("info"))
            .add_directive(
                "netlink_packet_route=error"
                    .parse()
                    .expect("valid directive"),
            )
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(file_writer)
                .with_filter(filter()),
        )
        .init();
    Ok(guard)
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => default_data_dir()?,
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("failed to create the data directory {}", data_dir.display()))?;
    // The store holds sandboxes' environments and key hashes, and volumes keep their files
    // below: no other host user may enter.
    std::fs::set_permissions(
        &data_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .with_context(|| {
        format!(
            "failed to restrict the data directory {}",
            data_dir.display()
        )
    })?;
    let data_dir = data_dir
        .canonicalize()
        .context("failed to resolve the data directory")?;
    let _log_guard = init_logging(&data_dir)?;

    let image_cache_dir = args.image_cache.unwrap_or_else(|| data_dir.join("images"));
    let daemon_binary = match args.daemon_binary {
        Some(path) => path,
        None => default_daemon_binary()?,
    };
    // The setup stage bind-mounts the binary from another working directory.
    let daemon_binary = daemon_binary.canonicalize().with_context(|| {
        format!(
            "the daemon binary {} does not exist",
            daemon_binary.display()
        )
    })?;
    let public_url = args
        .public_url
        .unwrap_or_else(|| format!("http://{}", args.listen))
        .trim_end_matches('/')
        .to_owned();
    let ssh_gateway = SshGatewayConfig {
        listen: args.ssh_listen,
        public_host: match args.ssh_public_host {
            Some(host) => host,
            None => url_host(&public_url)?,
        },
    };
    let external = match args.object_storage_url {
        None => None,
        Some(endpoint) => Some(daytona_objstore::ExternalConfig {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            region: args.object_storage_region,
            access_key: args.object_storage_access_key.context(
                "--object-storage-url needs DAYTONA_OBJECT_STORAGE_ACCESS_KEY (or --object-storage-access-key)",
            )?,
            secret_key: args.object_storage_secret_key.context(
                "--object-storage-url needs DAYTONA_OBJECT_STORAGE_SECRET_KEY (or --object-storage-secret-key)",
            )?,
            bucket_prefix: args.object_storage_bucket_prefix,
        }),
    };
    let object_storage = ObjectStorageConfig {
        listen: args.object_storage_listen,
        tls_dir: args.tls_dir.unwrap_or_else(|| data_dir.join("tls")),
        tls_names: args
            .tls_names
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect(),
        public_url: args
            .object_storage_public_url
            .map(|url| url.trim_end_matches('/').to_owned()),
        external,
    };
    let network = args.network.config(&data_dir)?;
    let config = ServerConfig {
        data_dir,
        image_cache_dir,
        listen: args.listen,
        public_url,
        daemon_binary,
        admin_api_key: std::env::var("DAYTONA_ADMIN_API_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
        limits: SandboxLimits::default(),
        warm_pool_size: args.warm_pool_size,
        lifecycle: LifecycleConfig {
            transition_timeout: Duration::from_secs(args.transition_timeout),
            minute: Duration::from_secs(args.lifecycle_minute),
            hang_start_file: args.test_hang_start_file,
        },
        organization_limits: OrganizationLimits {
            max_sandboxes: i64::from(args.org_max_sandboxes),
            total_cpu: i64::from(args.org_max_cpu),
            total_memory: i64::from(args.org_max_memory),
        },
        metrics_interval: Duration::from_secs(args.metrics_interval),
        object_storage,
        ssh_gateway,
        network,
        preview: PreviewConfig {
            listen: args.preview_listen,
            url_style: match args.preview_url_style {
                UrlStyle::Host => PreviewUrlStyle::Host,
                UrlStyle::Path => PreviewUrlStyle::Path,
            },
            base_url: args
                .preview_base_url
                .map(|url| url.trim_end_matches('/').to_owned()),
            tls: args.preview_tls,
        },
    };

    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = async {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler succeeds");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            tracing::info!("shutting down");
        };
        daytona_api::run(config, shutdown).await
    })
}

#[cfg(test)]
mod tests {
    use super::url_host;

    #[test]
    fn url_host_drops_scheme_port_and_path() {
        assert_eq!(url_host("http://127.0.0.1:3000").unwrap(), "127.0.0.1");
        assert_eq!(url_host("https://example.com/api").unwrap(), "example.com");
        assert_eq!(url_host("http://[::1]:3000/").unwrap(), "::1");
        assert!(url_host("http://:3000").is_err());
    }
}
