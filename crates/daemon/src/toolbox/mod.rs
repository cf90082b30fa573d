//! The toolbox server: Daytona's toolbox API, served over the sandbox's Unix socket.
//!
//! PID 1 starts it with fd 3 bound to the listening socket that the runner connects to from
//! outside, and `DAYTONA_DAEMON_CONFIG` set to the sandbox's [`DaemonConfig`]. For development
//! and tests, `--listen <path>` binds a socket instead; run that way as a non-root user,
//! commands run as that user and unconfined.
//!
//! Each API area is a module: `info`, `process` and `files`.
//!
//! The server keeps no state between requests. When it shuts down on SIGTERM or SIGINT,
//! commands still running for a request are killed with their process groups, but processes
//! that commands left running in the background are not: they belong to PID 1 from then on,
//! which also restarts the server. State that later areas keep across requests (sessions,
//! PTYs) has to survive such a restart too.

mod computeruse;
mod config_store;
mod drain;
mod env;
mod error;
mod files;
mod git;
mod info;
mod interpreter;
mod lsp;
mod process;
mod pty;
mod server;
mod session;
mod state;
mod stream;
mod system;
mod user;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use daytona_wire::daemon::{CONFIG_ENV, CONFIG_FD_ENV, DEFAULT_OUTPUT_LIMIT, DaemonConfig};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{getsockopt, sockopt};
use nix::unistd::geteuid;

use self::config_store::ConfigStore;
use self::process::command::{Identity, Launcher};
use self::state::Toolbox;
use self::user::SandboxUser;

/// The descriptor on which PID 1 hands over the listening socket.
const LISTENER_FD: i32 = 3;

/// How long blocking file operations may run on after the server stopped.
const BLOCKING_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Options of `daytona-daemon toolbox`.
#[derive(Debug, Parser)]
#[command(name = "daytona-daemon toolbox", version)]
struct Args {
    /// Bind a new listening Unix socket at this path instead of using fd 3.
    #[arg(long, value_name = "PATH")]
    listen: Option<PathBuf>,
    /// Read the daemon configuration (JSON) from this file instead of DAYTONA_DAEMON_CONFIG.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Use this directory as the user's home and work directory instead of the home in
    /// /etc/passwd.
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
}

/// Runs the toolbox server until SIGTERM or SIGINT; exits the process on a startup failure.
pub fn main() {
    let args = Args::parse_from(std::env::args().skip(1));
    init_logging();
    if let Err(error) = run(args) {
        tracing::error!("toolbox server failed: {error:#}");
        std::process::exit(1);
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(args: Args) -> anyhow::Result<()> {
    // 1. Read the configuration and remove it from the environment while the process still
    //    has a single thread, the only time that removing a variable is sound.
    let (config, config_store) = load_config(&args)?;

    // 2. Take the listening socket, and keep every descriptor the daemon inherited, the socket
    //    included, from reaching workloads: anything holding the socket could accept the
    //    runner's connections.
    let listener = match &args.listen {
        Some(path) => bind_listener(path)?,
        None => inherited_listener()?,
    };
    close_inherited_on_exec();

    // 3. Resolve the user, the shell and the confinement once, for every request.
    let toolbox = build_toolbox(config, config_store, &args)?;
    tracing::info!(
        sandbox_id = %toolbox.sandbox_id,
        user = %toolbox.user.name,
        work_dir = %toolbox.work_dir.display(),
        shell = ?toolbox.shell,
        "toolbox server starting"
    );

    // 4. Serve.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let toolbox = Arc::new(toolbox);
    let result = runtime.block_on(async {
        // The first command would otherwise wait for the launcher to start.
        toolbox.launcher.warm_up().await;
        server::serve(listener, toolbox).await
    });

    // File operations still running on blocking threads get a moment to finish; commands are
    // not waited for.
    runtime.shutdown_timeout(BLOCKING_SHUTDOWN_GRACE);
    result
}

fn load_config(args: &Args) -> anyhow::Result<(DaemonConfig, Option<ConfigStore>)> {
    let from_env = std::env::var_os(CONFIG_ENV);
    let from_fd = std::env::var_os(CONFIG_FD_ENV);
    // SAFETY: no other thread exists yet: this runs before the async runtime starts, and
    // logging spawns no threads.
    unsafe {
        std::env::remove_var(CONFIG_ENV);
        std::env::remove_var(CONFIG_FD_ENV);
    }

    if let Some(fd) = from_fd {
        let fd: RawFd = fd
            .to_str()
            .and_then(|fd| fd.parse().ok())
            .with_context(|| format!("{CONFIG_FD_ENV} is not a descriptor number"))?;
        let (store, config) = ConfigStore::open(fd)?;
        return Ok((config, Some(store)));
    }
    load_config_once(args, from_env).map(|config| (config, None))
}

fn load_config_once(
    args: &Args,
    from_env: Option<std::ffi::OsString>,
) -> anyhow::Result<DaemonConfig> {
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read the configuration {}", path.display()))?;
        return serde_json::from_str(&text)
            .with_context(|| format!("invalid configuration in {}", path.display()));
    }
    if let Some(json) = from_env {
        let json = json
            .into_string()
            .map_err(|_| anyhow::anyhow!("{CONFIG_ENV} is not valid UTF-8"))?;
        return serde_json::from_str(&json).with_context(|| format!("invalid {CONFIG_ENV}"));
    }
    if args.listen.is_some() {
        // An empty user name stands for the daemon's own user.
        return Ok(DaemonConfig {
            sandbox_id: "local".to_owned(),
            user: String::new(),
            env: BTreeMap::new(),
            output_limit: DEFAULT_OUTPUT_LIMIT,
            confine_workloads: false,
            workload_env: None,
            work_dir: None,
        });
    }
    bail!("{CONFIG_ENV} is not set; pass --config FILE or --listen PATH to run outside a sandbox")
}

/// Marks every descriptor above standard error close-on-exec.
fn close_inherited_on_exec() {
    // SAFETY: close_range only changes descriptor flags; it touches no memory.
    let result = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if result == -1 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "failed to mark inherited descriptors close-on-exec"
        );
    }
}

/// Binds a listening socket at `path`, replacing a stale socket file left by an earlier run.
fn bind_listener(path: &PathBuf) -> anyhow::Result<UnixListener> {
    if let Ok(metadata) = std::fs::symlink_metadata(path) {
        if !metadata.file_type().is_socket() {
            bail!("{} exists and is not a socket", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("failed to remove the stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("failed to listen on {}", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Takes over the listening socket that PID 1 passed as fd 3.
fn inherited_listener() -> anyhow::Result<UnixListener> {
    // SAFETY: F_GETFD only reads the descriptor flags of a possibly closed descriptor.
    if unsafe { libc::fcntl(LISTENER_FD, libc::F_GETFD) } == -1 {
        bail!(
            "fd {LISTENER_FD} is not open; the toolbox server expects its listening socket there"
        );
    }
    // SAFETY: fd 3 is open, as checked above. PID 1 handed it to this process for the server
    // alone, so nothing else in the process uses or closes it.
    let fd = unsafe { OwnedFd::from_raw_fd(LISTENER_FD) };
    let listening = getsockopt(&fd, sockopt::AcceptConn)
        .with_context(|| format!("fd {LISTENER_FD} is not a socket"))?;
    if !listening {
        bail!("fd {LISTENER_FD} is a socket that does not listen");
    }
    // Workloads must not inherit the socket.
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .with_context(|| format!("failed to set close-on-exec on fd {LISTENER_FD}"))?;
    let listener = UnixListener::from(fd);
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn build_toolbox(
    config: DaemonConfig,
    config_store: Option<ConfigStore>,
    args: &Args,
) -> anyhow::Result<Toolbox> {
    let running_as_root = geteuid().is_root();

    // Only root can switch users. Anywhere else, workloads run as the daemon's own user.
    let switch_user = running_as_root && !config.user.is_empty();
    let user = if switch_user {
        SandboxUser::by_name(&config.user)?
    } else {
        if !config.user.is_empty() {
            tracing::warn!(
                user = %config.user,
                "not running as root: commands run as the daemon's own user"
            );
        }
        SandboxUser::by_uid(geteuid().as_raw())?
    };

    // Workloads are confined only in a sandbox, where the daemon runs as root.
    let confine = config.confine_workloads && running_as_root;
    let executable = std::env::current_exe().context("failed to find the daemon's executable")?;
    let identity = switch_user.then(|| Identity {
        uid: user.uid,
        gid: user.gid,
        groups: user.groups.clone(),
    });

    let home = args.home.clone().unwrap_or_else(|| user.home.clone());
    if !home.is_dir() {
        tracing::warn!(home = %home.display(), "the user's home directory does not exist");
    }
    let work_dir = match config.work_dir.as_deref().map(PathBuf::from) {
        Some(dir) if dir.is_dir() => dir,
        Some(dir) => {
            tracing::warn!(work_dir = %dir.display(), "the image's work directory does not exist; using the home directory");
            home.clone()
        }
        None => home.clone(),
    };
    let shell = state::find_shell();
    if shell.is_none() {
        tracing::warn!("neither bash nor sh found: commands cannot run");
    }
    let workload_env = match &config.workload_env {
        Some(env) => env.clone(),
        None => state::workload_env(&user, &home, shell.as_deref(), &config.env),
    };

    Ok(Toolbox {
        sandbox_id: config.sandbox_id.clone(),
        file_owner: running_as_root.then_some((user.uid, user.gid)),
        user,
        work_dir,
        home,
        shell,
        workload_env: std::sync::RwLock::new(workload_env),
        output_limit: config.output_limit,
        launcher: Launcher::new(identity, confine, executable),
        config: std::sync::Mutex::new((config, config_store)),
        sessions: session::Sessions::new(),
        ptys: pty::Ptys::new(),
        interpreters: interpreter::Interpreters::new(),
        lsp: lsp::LspServers::new(),
        cpu_sampler: system::CpuSampler::new(),
    })
}
