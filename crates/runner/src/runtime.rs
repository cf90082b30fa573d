//! The runner's use of the isolation runtime.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use daytona_isolation::cgroup::{self, CgroupError, CgroupManager};
use daytona_isolation::run_dir::{self, RunDirError};
use daytona_isolation::spawn::{self, SandboxProcess, SpawnError};
use daytona_isolation::spec::{IdMap, SandboxSpec};
use daytona_wire::daemon::{DEFAULT_OUTPUT_LIMIT, DaemonConfig};

use crate::disk::{self, DiskError};
use crate::instance::{InstanceDirs, InstanceRecord, Limits};
use crate::slots;
use crate::usage::{self, WorkloadUsage};

const GIB: u64 = 1024 * 1024 * 1024;

/// Errors of the isolation runtime as the runner sees them.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the daemon binary {path} does not exist; build it or point --daemon-binary at it")]
    DaemonMissing { path: PathBuf },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error(transparent)]
    Disk(#[from] DiskError),
}

/// The isolation runtime of this host.
pub struct Runtime {
    daemon_binary: PathBuf,
    cgroups: CgroupManager,
}

impl Runtime {
    pub fn new(daemon_binary: &Path) -> Result<Self, RuntimeError> {
        if !daemon_binary.is_file() {
            return Err(RuntimeError::DaemonMissing {
                path: daemon_binary.to_owned(),
            });
        }
        let cgroups = CgroupManager::detect()?;
        tracing::info!(version = ?cgroups.version(), parents = ?cgroups.parent_dirs(), "sandbox cgroups");
        Ok(Self {
            daemon_binary: daemon_binary.to_owned(),
            cgroups,
        })
    }

    fn spec(
        &self,
        dirs: &InstanceDirs,
        record: &InstanceRecord,
        cgroup_dirs: Vec<PathBuf>,
    ) -> SandboxSpec {
        let (upper_dir, overlay_work_dir, disk_image) = if record.disk_image {
            (
                dirs.disk_upper(),
                dirs.disk_overlay_work(),
                Some(dirs.disk_image()),
            )
        } else {
            (dirs.upper(), dirs.overlay_work(), None)
        };
        SandboxSpec {
            sandbox_id: record.sandbox_id.clone(),
            hostname: record.sandbox_id.clone(),
            layers: record.layers.clone(),
            upper_dir,
            overlay_work_dir,
            disk_image,
            volumes: record.volumes.clone(),
            run_dir: dirs.run(),
            id_map: IdMap {
                host_base: slots::host_base(record.slot),
                size: slots::RANGE_SIZE,
            },
            cgroup_dirs,
            daemon_binary: self.daemon_binary.clone(),
            daemon: DaemonConfig {
                sandbox_id: record.sandbox_id.clone(),
                user: record.user.clone(),
                env: record.env.clone(),
                output_limit: DEFAULT_OUTPUT_LIMIT,
                confine_workloads: true,
                workload_env: None,
                work_dir: record.work_dir.clone(),
            },
            init_command: None,
        }
    }

    /// Starts the sandbox's processes: prepares its directories, creates its cgroups with
    /// their limits, and runs the setup stage. On failure the cgroups are removed again.
    pub async fn start(
        &self,
        dirs: &InstanceDirs,
        record: &InstanceRecord,
        nameserver: Option<Ipv4Addr>,
    ) -> Result<SandboxProcess, RuntimeError> {
        let limits = cgroup_limits(&record.limits);
        let mut spec = self.spec(dirs, record, Vec::new());
        // The previous run's filesystem must be gone before the image is mounted again.
        if let Some(image) = &spec.disk_image {
            disk::wait_detached(image).await?;
        }
        run_dir::prepare(&spec)?;
        if let Some(nameserver) = nameserver {
            run_dir::write_resolv_conf(&spec.run_dir, Some(nameserver))?;
        }
        let cgroup = self.cgroups.create(&record.sandbox_id, &limits)?;
        spec.cgroup_dirs = cgroup.dirs();
        match spawn::start(&spec).await {
            Ok(process) => Ok(process),
            Err(error) => {
                self.release_cgroup(&record.sandbox_id);
                Err(error.into())
            }
        }
    }

    pub(crate) fn cgroups(&self) -> &CgroupManager {
        &self.cgroups
    }

    pub(crate) fn daemon_binary(&self) -> &Path {
        &self.daemon_binary
    }

    /// Changes the limits of a running sandbox.
    pub fn set_limits(&self, sandbox_id: &str, limits: &Limits) -> Result<(), RuntimeError> {
        let cgroup = self.cgroups.sandbox(sandbox_id)?;
        cgroup.set_limits(&cgroup_limits(limits))?;
        Ok(())
    }

    /// CPU time and processes of the sandbox's workloads; `None` when it has no cgroups, which
    /// is when it does not run.
    pub fn workload_usage(&self, sandbox_id: &str) -> Option<WorkloadUsage> {
        let cgroup = self.cgroups.sandbox(sandbox_id).ok()?;
        usage::read(&cgroup, &self.daemon_binary)
    }

    /// Stops every process of a running sandbox until [`Runtime::thaw`].
    pub fn freeze(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        Ok(self.cgroups.sandbox(sandbox_id)?.freeze()?)
    }

    /// Lets the processes of a frozen sandbox run again.
    pub fn thaw(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        Ok(self.cgroups.sandbox(sandbox_id)?.thaw()?)
    }

    pub fn is_running(&self, process: &SandboxProcess) -> bool {
        spawn::is_running(process)
    }

    /// Stops a sandbox's PID 1: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&self, process: &SandboxProcess, grace: Duration) {
        if let Err(error) = spawn::stop(process, grace).await {
            tracing::warn!(pid = process.pid, %error, "failed to stop sandbox PID 1");
        }
    }

    /// Kills whatever still runs in the sandbox's cgroups and removes them.
    pub fn release_cgroup(&self, sandbox_id: &str) {
        let cgroup = match self.cgroups.sandbox(sandbox_id) {
            Ok(cgroup) => cgroup,
            Err(error) => {
                tracing::warn!(sandbox_id, %error, "invalid sandbox cgroup name");
                return;
            }
        };
        if !cgroup.exists() {
            return;
        }
        if let Err(error) = cgroup.kill_all() {
            tracing::warn!(sandbox_id, %error, "failed to kill the processes left in the sandbox's cgroups");
        }
        if let Err(error) = cgroup.remove() {
            tracing::warn!(sandbox_id, %error, "failed to remove the sandbox's cgroups");
        }
    }
}

fn cgroup_limits(limits: &Limits) -> cgroup::Limits {
    cgroup::Limits {
        cpus: limits.cpus,
        memory_bytes: u64::from(limits.memory_gib) * GIB,
        pids: u64::from(limits.pids),
    }
}
