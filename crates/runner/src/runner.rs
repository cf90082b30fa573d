//! The runner's lifecycle operations.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Mutex as AsyncMutex;

use crate::instance::{InstanceDirs, InstanceRecord, Limits, SandboxRuntimeState};
use crate::runtime::{Runtime, RuntimeError};
use crate::slots::Slots;

/// How long a stopping sandbox gets to end its processes after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Errors of runner operations.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("sandbox {sandbox_id} is not known to this runner")]
    NotFound { sandbox_id: String },
    #[error("no free uid range for a new sandbox ({count} sandboxes exist)")]
    NoFreeSlot { count: usize },
    #[error("failed to prepare the directories of sandbox {sandbox_id}")]
    Prepare {
        sandbox_id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write the runtime record of sandbox {sandbox_id}")]
    Record {
        sandbox_id: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Settings of the runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Directory that holds one subdirectory per sandbox.
    pub sandboxes_dir: PathBuf,
    /// Host path of the static `daytona-daemon` binary.
    pub daemon_binary: PathBuf,
}

/// What a new sandbox is made of.
#[derive(Debug, Clone)]
pub struct CreateParams {
    pub sandbox_id: String,
    /// Unpacked image layers, lowest first.
    pub layers: Vec<PathBuf>,
    pub user: String,
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
}

/// A sandbox the runner owns; operations on one sandbox are serialized by its lock.
struct Instance {
    dirs: InstanceDirs,
    record: AsyncMutex<InstanceRecord>,
}

/// The sandboxes of this host.
pub struct Runner {
    config: RunnerConfig,
    runtime: Runtime,
    instances: Mutex<HashMap<String, Arc<Instance>>>,
    slots: Mutex<Slots>,
}

impl Runner {
    /// Opens the runner: finds the sandboxes on disk, adopts those whose processes still run
    /// and marks the others stopped.
    pub async fn open(config: RunnerConfig) -> Result<Self, RunnerError> {
        std::fs::create_dir_all(&config.sandboxes_dir).map_err(|source| RunnerError::Prepare {
            sandbox_id: String::new(),
            source,
        })?;
        let runtime = Runtime::new(&config.daemon_binary)?;
        let runner = Self {
            config,
            runtime,
            instances: Mutex::new(HashMap::new()),
            slots: Mutex::new(Slots::default()),
        };
        runner.load_existing().await;
        Ok(runner)
    }

    async fn load_existing(&self) {
        let Ok(entries) = std::fs::read_dir(&self.config.sandboxes_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Some(sandbox_id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let dirs = InstanceDirs::new(&self.config.sandboxes_dir, &sandbox_id);
            let mut record = match InstanceRecord::load(&dirs) {
                Ok(record) => record,
                Err(error) => {
                    tracing::warn!(sandbox_id, %error, "skipping a sandbox directory without a readable runtime record");
                    continue;
                }
            };
            if let Some(process) = &record.process {
                if self.runtime.is_running(process) {
                    tracing::info!(sandbox_id, pid = process.pid, "adopted running sandbox");
                } else {
                    tracing::info!(sandbox_id, "sandbox stopped while the server was down");
                    self.runtime.release_cgroup(&sandbox_id);
                    record.process = None;
                    if let Err(error) = record.save(&dirs) {
                        tracing::warn!(sandbox_id, %error, "failed to record that the sandbox stopped");
                    }
                }
            }
            self.slots
                .lock()
                .expect("slots lock")
                .mark_used(record.slot);
            self.instances.lock().expect("instances lock").insert(
                sandbox_id,
                Arc::new(Instance {
                    dirs,
                    record: AsyncMutex::new(record),
                }),
            );
        }
    }

    fn instance(&self, sandbox_id: &str) -> Result<Arc<Instance>, RunnerError> {
        self.instances
            .lock()
            .expect("instances lock")
            .get(sandbox_id)
            .cloned()
            .ok_or_else(|| RunnerError::NotFound {
                sandbox_id: sandbox_id.to_owned(),
            })
    }

    /// Ids of every sandbox on this runner.
    pub fn sandbox_ids(&self) -> Vec<String> {
        self.instances
            .lock()
            .expect("instances lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Creates and starts a sandbox. On failure nothing of it is left behind.
    pub async fn create(&self, params: CreateParams) -> Result<(), RunnerError> {
        let sandbox_id = params.sandbox_id.clone();
        let slot = {
            let mut slots = self.slots.lock().expect("slots lock");
            slots.allocate().ok_or_else(|| RunnerError::NoFreeSlot {
                count: self.instances.lock().expect("instances lock").len(),
            })?
        };
        let dirs = InstanceDirs::new(&self.config.sandboxes_dir, &sandbox_id);
        let mut record = InstanceRecord {
            sandbox_id: sandbox_id.clone(),
            slot,
            layers: params.layers,
            user: params.user,
            env: params.env,
            limits: params.limits,
            process: None,
        };

        let result = self.create_on_disk(&dirs, &mut record).await;
        if let Err(error) = result {
            self.runtime.release_cgroup(&sandbox_id);
            remove_dir(&dirs.root);
            self.slots.lock().expect("slots lock").release(slot);
            return Err(error);
        }
        self.instances.lock().expect("instances lock").insert(
            sandbox_id,
            Arc::new(Instance {
                dirs,
                record: AsyncMutex::new(record),
            }),
        );
        Ok(())
    }

    async fn create_on_disk(
        &self,
        dirs: &InstanceDirs,
        record: &mut InstanceRecord,
    ) -> Result<(), RunnerError> {
        let prepare_error = |source| RunnerError::Prepare {
            sandbox_id: record.sandbox_id.clone(),
            source,
        };
        std::fs::create_dir_all(&dirs.root).map_err(prepare_error)?;
        save(record, dirs)?;
        self.start_process(dirs, record).await
    }

    async fn start_process(
        &self,
        dirs: &InstanceDirs,
        record: &mut InstanceRecord,
    ) -> Result<(), RunnerError> {
        let process = self.runtime.start(dirs, record).await?;
        record.process = Some(process);
        save(record, dirs)
    }

    /// Starts a stopped sandbox with the files it had.
    pub async fn start(&self, sandbox_id: &str) -> Result<(), RunnerError> {
        let instance = self.instance(sandbox_id)?;
        let mut record = instance.record.lock().await;
        if let Some(process) = &record.process
            && self.runtime.is_running(process)
        {
            return Ok(());
        }
        record.process = None;
        self.runtime.release_cgroup(sandbox_id);
        self.start_process(&instance.dirs, &mut record).await
    }

    /// Stops a sandbox's processes and releases its cgroups; its files stay.
    pub async fn stop(&self, sandbox_id: &str) -> Result<(), RunnerError> {
        let instance = self.instance(sandbox_id)?;
        let mut record = instance.record.lock().await;
        if let Some(process) = record.process.take() {
            self.runtime.stop(&process, STOP_GRACE).await;
        }
        self.runtime.release_cgroup(sandbox_id);
        save(&record, &instance.dirs)
    }

    /// Destroys a sandbox: kills its processes at once, releases its cgroups and removes its
    /// files. Destroying an unknown sandbox succeeds, so retries are safe.
    pub async fn destroy(&self, sandbox_id: &str) -> Result<(), RunnerError> {
        let Ok(instance) = self.instance(sandbox_id) else {
            return Ok(());
        };
        let record = instance.record.lock().await;
        if let Some(process) = &record.process {
            self.runtime.stop(process, Duration::ZERO).await;
        }
        self.runtime.release_cgroup(sandbox_id);
        remove_dir(&instance.dirs.root);
        self.instances
            .lock()
            .expect("instances lock")
            .remove(sandbox_id);
        self.slots.lock().expect("slots lock").release(record.slot);
        Ok(())
    }

    /// Whether a sandbox's processes run.
    pub async fn state(&self, sandbox_id: &str) -> Result<SandboxRuntimeState, RunnerError> {
        let instance = self.instance(sandbox_id)?;
        let record = instance.record.lock().await;
        Ok(match &record.process {
            Some(process) if self.runtime.is_running(process) => SandboxRuntimeState::Running,
            _ => SandboxRuntimeState::Stopped,
        })
    }

    /// Host path of a sandbox's toolbox socket.
    pub fn toolbox_socket(&self, sandbox_id: &str) -> Result<PathBuf, RunnerError> {
        Ok(self.instance(sandbox_id)?.dirs.toolbox_socket())
    }
}

fn save(record: &InstanceRecord, dirs: &InstanceDirs) -> Result<(), RunnerError> {
    record.save(dirs).map_err(|source| RunnerError::Record {
        sandbox_id: record.sandbox_id.clone(),
        source,
    })
}

/// Removes a sandbox directory, logging instead of failing: a leftover directory wastes disk
/// but must not keep a delete from completing.
fn remove_dir(path: &Path) {
    match std::fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "failed to remove sandbox directory")
        }
    }
}
