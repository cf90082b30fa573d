//! The runner's lifecycle operations.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Mutex as AsyncMutex;

use crate::daemon_client::{self, DaemonRequestError};
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
    #[error("failed to hand pooled sandbox {sandbox_id} over")]
    Claim {
        sandbox_id: String,
        #[source]
        source: DaemonRequestError,
    },
}

/// Settings of the runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Directory that holds one subdirectory per sandbox.
    pub sandboxes_dir: PathBuf,
    /// Host path of the static `daytona-daemon` binary.
    pub daemon_binary: PathBuf,
    /// How many started sandboxes wait, unclaimed, for the next creates (0 disables the pool).
    pub warm_pool_size: usize,
}

/// What the sandboxes of the warm pool are made of; a create with other layers or another
/// user does not take one.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolTemplate {
    /// Unpacked image layers, lowest first.
    pub layers: Vec<PathBuf>,
    pub user: String,
    pub limits: Limits,
}

/// The warm pool: started sandboxes that a create takes instead of starting one.
#[derive(Debug, Default)]
struct Pool {
    template: Option<PoolTemplate>,
    /// Ids of ready sandboxes, oldest first.
    ready: VecDeque<String>,
    /// Sandboxes being started for the pool.
    filling: usize,
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
    pool: Mutex<Pool>,
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
            pool: Mutex::new(Pool::default()),
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

    /// Ids of every sandbox on this runner, except those waiting in the warm pool.
    pub fn sandbox_ids(&self) -> Vec<String> {
        let pool = self.pool.lock().expect("pool lock");
        self.instances
            .lock()
            .expect("instances lock")
            .keys()
            .filter(|id| !pool.ready.contains(id))
            .cloned()
            .collect()
    }

    /// Creates and starts a sandbox. On failure nothing of it is left behind.
    pub async fn create(&self, params: CreateParams) -> Result<(), RunnerError> {
        self.create_instance(params, false).await
    }

    async fn create_instance(&self, params: CreateParams, pooled: bool) -> Result<(), RunnerError> {
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
            pooled,
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

    /// Sets what the warm pool holds and starts filling it. Sandboxes already pooled with
    /// another template are destroyed.
    pub fn configure_pool(self: &Arc<Self>, template: PoolTemplate) {
        let stale: Vec<String> = {
            let mut pool = self.pool.lock().expect("pool lock");
            if pool.template.as_ref() == Some(&template) {
                Vec::new()
            } else {
                pool.template = Some(template);
                pool.ready.drain(..).collect()
            }
        };
        for sandbox_id in stale {
            let runner = self.clone();
            tokio::spawn(async move { runner.destroy(&sandbox_id).await });
        }
        self.refill_pool();
    }

    /// Starts sandboxes for the pool until it is full again.
    fn refill_pool(self: &Arc<Self>) {
        let (template, missing) = {
            let mut pool = self.pool.lock().expect("pool lock");
            let Some(template) = pool.template.clone() else {
                return;
            };
            let missing = self
                .config
                .warm_pool_size
                .saturating_sub(pool.ready.len() + pool.filling);
            pool.filling += missing;
            (template, missing)
        };
        for _ in 0..missing {
            let runner = self.clone();
            let template = template.clone();
            tokio::spawn(async move {
                let sandbox_id = uuid::Uuid::new_v4().to_string();
                let params = CreateParams {
                    sandbox_id: sandbox_id.clone(),
                    layers: template.layers.clone(),
                    user: template.user.clone(),
                    env: BTreeMap::new(),
                    limits: template.limits,
                };
                let result = runner.create_instance(params, true).await;
                let outdated = {
                    let mut pool = runner.pool.lock().expect("pool lock");
                    pool.filling -= 1;
                    match result {
                        Ok(()) if pool.template.as_ref() == Some(&template) => {
                            pool.ready.push_back(sandbox_id.clone());
                            false
                        }
                        Ok(()) => true,
                        // Creates from scratch report the same failure to their caller; the
                        // pool tries again at the next claim.
                        Err(error) => {
                            tracing::warn!(%error, "failed to start a sandbox for the warm pool");
                            false
                        }
                    }
                };
                if outdated {
                    runner.destroy(&sandbox_id).await.ok();
                }
            });
        }
    }

    /// Takes a ready sandbox out of the warm pool if it matches `layers` and `user`. The
    /// caller hands it over with [`Runner::finish_claim`], or gives it back with
    /// [`Runner::return_to_pool`].
    pub fn claim(&self, layers: &[PathBuf], user: &str) -> Option<String> {
        let mut pool = self.pool.lock().expect("pool lock");
        let template = pool.template.as_ref()?;
        if template.layers != layers || template.user != user {
            return None;
        }
        pool.ready.pop_front()
    }

    /// Gives a claimed sandbox back to the pool, untouched.
    pub fn return_to_pool(&self, sandbox_id: &str) {
        self.pool
            .lock()
            .expect("pool lock")
            .ready
            .push_front(sandbox_id.to_owned());
    }

    /// Turns a claimed pool sandbox into an ordinary one with `env` and `limits`, and starts a
    /// replacement for the pool. On failure the sandbox is destroyed.
    pub async fn finish_claim(
        self: &Arc<Self>,
        sandbox_id: &str,
        env: &BTreeMap<String, String>,
        limits: Limits,
    ) -> Result<(), RunnerError> {
        self.refill_pool();
        let result = self.hand_over(sandbox_id, env, limits).await;
        if result.is_err() {
            self.destroy(sandbox_id).await.ok();
        }
        result
    }

    async fn hand_over(
        &self,
        sandbox_id: &str,
        env: &BTreeMap<String, String>,
        limits: Limits,
    ) -> Result<(), RunnerError> {
        let instance = self.instance(sandbox_id)?;
        let mut record = instance.record.lock().await;
        if !env.is_empty() {
            let body = serde_json::json!({ "set": env });
            daemon_client::post_json(&instance.dirs.toolbox_socket(), "/env", &body)
                .await
                .map_err(|source| RunnerError::Claim {
                    sandbox_id: sandbox_id.to_owned(),
                    source,
                })?;
        }
        if limits != record.limits {
            self.runtime.set_limits(sandbox_id, &limits)?;
        }
        record.env = env.clone();
        record.limits = limits;
        record.pooled = false;
        save(&record, &instance.dirs)
    }

    /// Destroys the sandboxes waiting in the pool; called when the server stops, so that no
    /// unclaimed sandbox outlives it.
    pub async fn drain_pool(&self) {
        let ids: Vec<String> = {
            let mut pool = self.pool.lock().expect("pool lock");
            pool.template = None;
            pool.ready.drain(..).collect()
        };
        for sandbox_id in ids {
            self.destroy(&sandbox_id).await.ok();
        }
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
