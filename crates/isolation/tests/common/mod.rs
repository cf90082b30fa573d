//! Harness for the sandbox tests: a sandbox from the test rootfs in a temporary directory,
//! with its own cgroups, removed when the test ends, pass or fail.
//!
//! The tests need root, the test rootfs (`DAYTONA_TEST_ROOTFS`: an unpacked Debian 12 root
//! with bash, coreutils, python3, sudo, procps and a user `daytona`, uid 1000, with
//! passwordless sudo) and the static daemon binary (`DAYTONA_DAEMON_BIN`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use daytona_isolation::cgroup::{CgroupManager, HostPaths, Limits, SandboxCgroup};
use daytona_isolation::run_dir;
use daytona_isolation::spawn::{self, SandboxProcess, SpawnError};
use daytona_isolation::spec::{IdMap, SandboxSpec};
use daytona_wire::daemon::DaemonConfig;
use tempfile::TempDir;

/// Size of every test sandbox's ID range.
pub const ID_RANGE: u32 = 65536;

/// The host range of the first test sandbox; each further sandbox takes the next range.
const FIRST_HOST_BASE: u32 = 1_000_000;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// What every sandbox test needs from the environment.
pub struct TestEnv {
    pub rootfs: PathBuf,
    pub daemon: PathBuf,
}

/// Returns the environment, or `None` after printing `SKIPPED` when not running as root.
/// Panics with instructions when running as root without the rootfs or the daemon binary.
pub fn test_env(test: &str) -> Option<TestEnv> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: {test} needs root to create namespaces, mounts and cgroups");
        return None;
    }
    let rootfs = std::env::var_os("DAYTONA_TEST_ROOTFS").unwrap_or_else(|| {
        panic!(
            "set DAYTONA_TEST_ROOTFS to an unpacked Debian 12 root with bash, coreutils, \
             python3, sudo, procps and a user daytona (uid 1000) with passwordless sudo"
        )
    });
    let daemon = std::env::var_os("DAYTONA_DAEMON_BIN").unwrap_or_else(|| {
        panic!(
            "set DAYTONA_DAEMON_BIN to the static daemon, built with \
             RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build -p daytona-daemon \
             --target x86_64-unknown-linux-gnu"
        )
    });
    let env = TestEnv {
        rootfs: PathBuf::from(rootfs),
        daemon: PathBuf::from(daemon),
    };
    assert!(
        env.rootfs.join("usr/bin/bash").exists(),
        "no bash in {}",
        env.rootfs.display()
    );
    assert!(
        env.daemon.is_file(),
        "{} is not a file",
        env.daemon.display()
    );
    Some(env)
}

/// A sandbox of the test rootfs. Dropping it kills every process in its cgroups and removes
/// the cgroups and the temporary directory.
pub struct TestSandbox {
    pub spec: SandboxSpec,
    pub cgroups: SandboxCgroup,
    pub process: Option<SandboxProcess>,
    manager: CgroupManager,
    dir: TempDir,
}

impl TestSandbox {
    /// Creates a sandbox that runs `command` (confined like a workload) in place of the
    /// toolbox server, or the toolbox server if `command` is `None`.
    pub fn new(env: &TestEnv, command: Option<&[&str]>, limits: &Limits) -> Self {
        let index = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let sandbox_id = format!("test-{pid}-{index}");
        let dir = tempfile::Builder::new()
            .prefix("daytona-iso-")
            .tempdir()
            .expect("create temporary directory");

        let manager =
            CgroupManager::detect_in(&HostPaths::live(), &format!("daytona-test-{pid}-{index}"))
                .expect("detect cgroups");
        let cgroups = manager.create(&sandbox_id, limits).expect("create cgroups");

        let spec = SandboxSpec {
            sandbox_id: sandbox_id.clone(),
            hostname: format!("sbx-{index}"),
            layers: vec![env.rootfs.clone()],
            upper_dir: dir.path().join("upper"),
            overlay_work_dir: dir.path().join("work"),
            disk_image: None,
            volumes: Vec::new(),
            run_dir: dir.path().join("run"),
            id_map: IdMap {
                host_base: FIRST_HOST_BASE + index * ID_RANGE,
                size: ID_RANGE,
            },
            cgroup_dirs: cgroups.dirs(),
            daemon_binary: env.daemon.clone(),
            daemon: DaemonConfig {
                sandbox_id,
                user: "daytona".into(),
                env: BTreeMap::new(),
                output_limit: daytona_wire::daemon::DEFAULT_OUTPUT_LIMIT,
                confine_workloads: true,
                workload_env: None,
                work_dir: None,
            },
            init_command: command.map(|argv| argv.iter().map(|a| a.to_string()).collect()),
        };
        run_dir::prepare(&spec).expect("prepare run directory");
        Self {
            spec,
            cgroups,
            process: None,
            manager,
            dir,
        }
    }

    /// Creates a sandbox that runs a bash script as root, with its output in `/out`.
    pub fn script(env: &TestEnv, script: &str, limits: &Limits) -> Self {
        let wrapped = format!("exec > /out 2>&1\n{script}");
        Self::new(env, Some(&["/bin/bash", "-c", &wrapped]), limits)
    }

    pub async fn start(&mut self) -> Result<SandboxProcess, SpawnError> {
        let process = spawn::start(&self.spec).await?;
        self.process = Some(process.clone());
        Ok(process)
    }

    /// Starts the sandbox, waits until its command exits and returns `/out`.
    pub async fn run(&mut self) -> String {
        let process = self.start().await.expect("start sandbox");
        tokio::time::timeout(Duration::from_secs(60), spawn::wait_exit(&process))
            .await
            .expect("sandbox exits within 60 s")
            .expect("wait for sandbox");
        self.output()
    }

    /// `/out` of the sandbox, read from the upper directory.
    pub fn output(&self) -> String {
        fs::read_to_string(self.upper("out")).unwrap_or_else(|err| {
            let log = fs::read_to_string(self.spec.run_dir.join("sandbox.log")).unwrap_or_default();
            panic!("no /out in the sandbox ({err}); sandbox log:\n{log}")
        })
    }

    /// Returns a path in the upper directory.
    pub fn upper(&self, relative: &str) -> PathBuf {
        self.spec.upper_dir.join(relative)
    }

    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn host_base(&self) -> u32 {
        self.spec.id_map.host_base
    }
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = fs::read_to_string(self.spec.run_dir.join("sandbox.log")).unwrap_or_default();
            eprintln!("sandbox log of {}:\n{log}", self.spec.sandbox_id);
        }
        // Every process of the sandbox is in its cgroups, PID 1 included.
        if self.cgroups.exists() {
            if let Err(err) = self.cgroups.kill_all() {
                eprintln!("cleanup: kill sandbox processes: {err}");
            }
            wait_until(Duration::from_secs(5), || {
                self.cgroups.pids().map(|p| p.is_empty()).unwrap_or(true)
            });
            if let Err(err) = self.cgroups.remove() {
                eprintln!("cleanup: remove cgroups: {err}");
            }
        }
        if let Err(err) = self.manager.remove_parents_if_empty() {
            eprintln!("cleanup: remove parent cgroups: {err}");
        }
    }
}

/// Polls `condition` every few milliseconds until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Returns the value after `key=` on the line that starts with it.
pub fn field<'a>(output: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    output
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in output:\n{output}"))
}
