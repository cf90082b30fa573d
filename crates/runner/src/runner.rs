//! The runner's lifecycle operations.
//!
//! Operations on one sandbox are serialized by the lock on its runtime record, with one
//! exception: [`Runner::interrupt`] and [`Runner::destroy`] do not wait for a start that holds
//! the lock. They cancel it and kill the sandbox's processes, so that a start that hangs cannot
//! keep a delete, or the API's deadline, waiting.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Mutex as AsyncMutex;
use tokio_util::sync::CancellationToken;

use crate::daemon_client::DaemonRequestError;
use crate::disk::{self, DiskError};
use crate::instance::{InstanceDirs, InstanceRecord, Limits, SandboxRuntimeState};
use crate::network::{EgressPolicy, Network, NetworkConfig, NetworkError, SandboxNetwork};
use crate::pool::Pool;
use crate::runtime::{Runtime, RuntimeError};
use crate::slots::Slots;
use crate::usage::WorkloadUsage;
use daytona_isolation::spec::VolumeMount;

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
    #[error("the start of sandbox {sandbox_id} was interrupted")]
    Interrupted { sandbox_id: String },
    #[error("failed to capture the files of sandbox {sandbox_id} as image {image:?}")]
    Capture {
        sandbox_id: String,
        image: String,
        #[source]
        source: Box<daytona_images::Error>,
    },
    #[error("failed to open the writable layer of sandbox {sandbox_id}")]
    OpenLayer {
        sandbox_id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to copy the files of sandbox {from} to the new sandbox {sandbox_id}")]
    CopyLayer {
        sandbox_id: String,
        from: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to archive the writable layer of sandbox {sandbox_id}")]
    Archive {
        sandbox_id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to restore the writable layer of sandbox {sandbox_id}")]
    Restore {
        sandbox_id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox {sandbox_id} is archived: restore its writable layer before it starts")]
    Archived { sandbox_id: String },
    #[error("failed to prepare the disk of sandbox {sandbox_id}")]
    Disk {
        sandbox_id: String,
        #[source]
        source: DiskError,
    },
    #[error("failed to set up the network of sandbox {sandbox_id}")]
    Network {
        sandbox_id: String,
        #[source]
        source: Box<NetworkError>,
    },
    #[error("failed to set up sandbox networking")]
    NetworkSetup {
        #[source]
        source: Box<NetworkError>,
    },
    #[error("no free sandbox network address ({count} sandboxes have one)")]
    NoFreeAddress { count: usize },
}

/// Settings of the runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Directory with one subdirectory per sandbox.
    pub sandboxes_dir: PathBuf,
    /// Host path of the static `daytona-daemon` binary.
    pub daemon_binary: PathBuf,
    /// How many started sandboxes wait, unclaimed, for the next creates (0 disables the pool).
    pub warm_pool_size: usize,
    /// Test aid: while this file exists, starts of sandboxes
    /// that are not in the warm pool wait before they start anything, until the file is
    /// removed or the start is interrupted. Tests use it to hold a sandbox in `starting`.
    pub hang_start_file: Option<PathBuf>,
    /// Directory in which every runner on the host reserves its sandboxes' uid ranges
    /// ([`UID_SLOT_REGISTRY`] for root); `None` keeps them unique within this runner only.
    pub uid_slot_registry: Option<PathBuf>,
    /// Sandbox networking; `None` leaves sandboxes with loopback only.
    pub network: Option<NetworkConfig>,
}

/// The host-wide uid range registry of runners that run as root.
pub const UID_SLOT_REGISTRY: &str = "/var/lib/daytona/uid-slots";

/// What a new sandbox is made of.
#[derive(Debug, Clone)]
pub struct CreateParams {
    pub sandbox_id: String,
    /// Unpacked image layers, lowest first.
    pub layers: Vec<PathBuf>,
    pub user: String,
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    /// Host directories to mount into the sandbox; the caller has checked the mount paths
    /// with [`crate::check_mount_path`].
    pub volumes: Vec<VolumeMount>,
    /// Directory that commands start in; the user's home when `None`.
    pub work_dir: Option<String>,
    /// In force before the sandbox's first process runs; ignored without networking.
    pub egress: EgressPolicy,
}

/// A sandbox the runner owns.
pub(crate) struct Instance {
    pub(crate) dirs: InstanceDirs,
    /// The runtime record; its lock serializes the operations on the sandbox.
    pub(crate) record: AsyncMutex<InstanceRecord>,
    /// Cancelled by [`Runner::interrupt`]; each interrupt installs a fresh token for the next
    /// operation.
    interrupt: Mutex<CancellationToken>,
    /// Set once a destroy began: no operation may start the sandbox again.
    destroyed: AtomicBool,
}

impl Instance {
    fn new(dirs: InstanceDirs, record: InstanceRecord) -> Self {
        Self {
            dirs,
            record: AsyncMutex::new(record),
            interrupt: Mutex::new(CancellationToken::new()),
            destroyed: AtomicBool::new(false),
        }
    }

    /// The token that the next interrupt cancels.
    fn interrupt_token(&self) -> CancellationToken {
        self.interrupt.lock().expect("interrupt lock").clone()
    }

    /// Cancels the operation in progress and arms a fresh token for the next one.
    fn interrupt(&self) {
        let previous = std::mem::take(&mut *self.interrupt.lock().expect("interrupt lock"));
        previous.cancel();
    }
}

/// The sandboxes of this host.
pub struct Runner {
    pub(crate) config: RunnerConfig,
    pub(crate) runtime: Runtime,
    instances: Mutex<HashMap<String, Arc<Instance>>>,
    pub(crate) slots: Mutex<Slots>,
    pub(crate) pool: Mutex<Pool>,
    /// Whether new sandboxes get a disk image that bounds their writable layer.
    disk_images: bool,
    pub(crate) network: Option<Network>,
    /// Network indexes of the sandboxes that have one.
    network_indexes: Mutex<HashSet<u32>>,
}

impl Runner {
    /// Opens the runner: finds the sandboxes on disk, adopts those whose processes still run
    /// and marks the others stopped.
    pub async fn open(config: RunnerConfig) -> Result<Self, RunnerError> {
        std::fs::create_dir_all(&config.sandboxes_dir).map_err(|source| RunnerError::Prepare {
            sandbox_id: String::new(),
            source,
        })?;
        if let Some(registry) = &config.uid_slot_registry {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(registry)
                .map_err(|source| RunnerError::Prepare {
                    sandbox_id: String::new(),
                    source,
                })?;
        }
        let runtime = Runtime::new(&config.daemon_binary)?;
        let slots = Slots::new(config.uid_slot_registry.clone());
        let mut runner = Self {
            config,
            runtime,
            instances: Mutex::new(HashMap::new()),
            slots: Mutex::new(slots),
            pool: Mutex::new(Pool::default()),
            disk_images: disk::supported(),
            network: None,
            network_indexes: Mutex::new(HashSet::new()),
        };
        if !runner.disk_images {
            tracing::warn!(
                "sandbox disk limits are not enforced: they need root, /dev/loop-control, mkfs.ext4 and resize2fs"
            );
        }
        let running = runner.load_existing().await;
        if let Some(network) = runner.config.network.clone() {
            let network = Network::open(network, &running).await.map_err(|source| {
                RunnerError::NetworkSetup {
                    source: Box::new(source),
                }
            })?;
            runner.network = Some(network);
        }
        Ok(runner)
    }

    /// Adopts the sandboxes on disk; returns the network index and policy of each running
    /// one.
    async fn load_existing(&self) -> Vec<(u32, EgressPolicy)> {
        let mut running = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.config.sandboxes_dir) else {
            return running;
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
            if let Some(network) = &record.network {
                self.network_indexes
                    .lock()
                    .expect("network indexes lock")
                    .insert(network.index);
                if record.process.is_some() {
                    running.push((network.index, network.policy.clone()));
                }
            }
            self.slots
                .lock()
                .expect("slots lock")
                .mark_used(record.slot, &dirs.root);
            self.instances
                .lock()
                .expect("instances lock")
                .insert(sandbox_id, Arc::new(Instance::new(dirs, record)));
        }
        running
    }

    pub(crate) fn instance(&self, sandbox_id: &str) -> Result<Arc<Instance>, RunnerError> {
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

    /// Whether the runner has files of the sandbox.
    pub fn contains(&self, sandbox_id: &str) -> bool {
        self.instance(sandbox_id).is_ok()
    }

    /// Gives a new sandbox its uid range, directories and runtime record, without starting
    /// it. On failure nothing of it is left behind.
    pub fn prepare(&self, params: CreateParams) -> Result<(), RunnerError> {
        self.prepare_instance(params, false)
    }

    pub(crate) fn prepare_instance(
        &self,
        params: CreateParams,
        pooled: bool,
    ) -> Result<(), RunnerError> {
        let sandbox_id = params.sandbox_id.clone();
        let dirs = InstanceDirs::new(&self.config.sandboxes_dir, &sandbox_id);
        let slot = {
            let mut slots = self.slots.lock().expect("slots lock");
            slots
                .allocate(&dirs.root)
                .ok_or_else(|| RunnerError::NoFreeSlot {
                    count: self.instances.lock().expect("instances lock").len(),
                })?
        };
        let network = match self.allocate_network(&params.egress, pooled) {
            Ok(network) => network,
            Err(error) => {
                self.slots.lock().expect("slots lock").release(slot);
                return Err(error);
            }
        };
        let record = InstanceRecord {
            work_dir: params.work_dir,
            sandbox_id: sandbox_id.clone(),
            slot,
            layers: params.layers,
            user: params.user,
            env: params.env,
            limits: params.limits,
            process: None,
            pooled,
            volumes: params.volumes,
            disk_image: self.disk_images,
            archived: false,
            network,
        };
        let prepared = std::fs::create_dir_all(&dirs.root)
            .map_err(|source| RunnerError::Prepare {
                sandbox_id: sandbox_id.clone(),
                source,
            })
            .and_then(|()| {
                if !record.disk_image {
                    return Ok(());
                }
                disk::create(
                    &self.config.sandboxes_dir,
                    &dirs.disk_image(),
                    record.limits.disk_gib,
                )
                .map_err(|source| RunnerError::Disk {
                    sandbox_id: sandbox_id.clone(),
                    source,
                })
            })
            .and_then(|()| save(&record, &dirs));
        if let Err(error) = prepared {
            remove_dir(&dirs.root);
            self.slots.lock().expect("slots lock").release(slot);
            self.release_network_index(record.network.as_ref());
            return Err(error);
        }
        self.instances
            .lock()
            .expect("instances lock")
            .insert(sandbox_id, Arc::new(Instance::new(dirs, record)));
        Ok(())
    }

    /// Prepares and starts a sandbox; on failure it is destroyed again.
    pub(crate) async fn create_instance(
        &self,
        params: CreateParams,
        pooled: bool,
    ) -> Result<(), RunnerError> {
        let sandbox_id = params.sandbox_id.clone();
        self.prepare_instance(params, pooled)?;
        let started = self.start(&sandbox_id).await;
        if started.is_err() {
            self.destroy(&sandbox_id).await.ok();
        }
        started
    }

    /// Starts a sandbox with the files it has: a prepared one, or a stopped one.
    ///
    /// [`Runner::interrupt`] and [`Runner::destroy`] end a start early with
    /// [`RunnerError::Interrupted`]; whatever it started is stopped again.
    pub async fn start(&self, sandbox_id: &str) -> Result<(), RunnerError> {
        let instance = self.instance(sandbox_id)?;
        // Taken before the lock, so that an interrupt issued while this start waits for the
        // lock applies to it.
        let token = instance.interrupt_token();
        let mut record = instance.record.lock().await;
        if instance.destroyed.load(Ordering::Acquire) || token.is_cancelled() {
            return Err(interrupted(sandbox_id));
        }
        if let Some(process) = &record.process
            && self.runtime.is_running(process)
        {
            return Ok(());
        }
        if record.archived {
            return Err(RunnerError::Archived {
                sandbox_id: sandbox_id.to_owned(),
            });
        }
        record.process = None;
        self.runtime.release_cgroup(sandbox_id);

        if !record.pooled {
            self.hang_if_requested(sandbox_id, &token).await?;
        }

        // The runtime's start is not dropped half-way, which would leave its setup process
        // unreaped; an interrupt kills the sandbox's processes instead, which ends it.
        let nameserver = self
            .network
            .as_ref()
            .filter(|_| record.network.is_some())
            .map(Network::resolver_address);
        let started = self
            .runtime
            .start(&instance.dirs, &record, nameserver)
            .await;
        if token.is_cancelled() {
            if let Ok(process) = &started {
                self.runtime.stop(process, Duration::ZERO).await;
            }
            self.runtime.release_cgroup(sandbox_id);
            return Err(interrupted(sandbox_id));
        }
        let process = started?;

        // The sandbox's first workload runs on a toolbox request, which comes only after this
        // start returns, so the policy is in force before it.
        if let (Some(network), Some(sandbox_network)) = (&self.network, &record.network)
            && let Err(source) = network.attach(sandbox_network, process.pid).await
        {
            self.runtime.stop(&process, Duration::ZERO).await;
            self.runtime.release_cgroup(sandbox_id);
            return Err(RunnerError::Network {
                sandbox_id: sandbox_id.to_owned(),
                source: Box::new(source),
            });
        }
        record.process = Some(process);
        save(&record, &instance.dirs)
    }

    /// Picks the network index of a new sandbox; pooled sandboxes are denied everything until
    /// a create claims them.
    fn allocate_network(
        &self,
        egress: &EgressPolicy,
        pooled: bool,
    ) -> Result<Option<SandboxNetwork>, RunnerError> {
        let Some(network) = &self.network else {
            return Ok(None);
        };
        let mut used = self.network_indexes.lock().expect("network indexes lock");
        let index = (1..=network.addressing().max_index())
            .find(|index| !used.contains(index))
            .ok_or(RunnerError::NoFreeAddress { count: used.len() })?;
        used.insert(index);
        let policy = if pooled {
            EgressPolicy::deny()
        } else {
            egress.clone()
        };
        Ok(Some(SandboxNetwork { index, policy }))
    }

    fn release_network_index(&self, network: Option<&SandboxNetwork>) {
        if let Some(network) = network {
            self.network_indexes
                .lock()
                .expect("network indexes lock")
                .remove(&network.index);
        }
    }

    /// Removes a stopped sandbox's interface and rules.
    async fn detach_network(&self, record: &InstanceRecord) {
        if let (Some(network), Some(sandbox_network)) = (&self.network, &record.network) {
            network.detach(sandbox_network.index).await;
        }
    }

    /// Sets a sandbox's egress policy: at once when it runs, and in its record for the next
    /// start either way.
    pub async fn set_egress_policy(
        &self,
        sandbox_id: &str,
        policy: EgressPolicy,
    ) -> Result<(), RunnerError> {
        let instance = self.instance(sandbox_id)?;
        let mut record = instance.record.lock().await;
        self.replace_policy(&mut record, policy).await?;
        save(&record, &instance.dirs)
    }

    pub(crate) async fn replace_policy(
        &self,
        record: &mut InstanceRecord,
        policy: EgressPolicy,
    ) -> Result<(), RunnerError> {
        let (Some(network), Some(sandbox_network)) = (&self.network, &mut record.network) else {
            return Ok(());
        };
        sandbox_network.policy = policy;
        let running = record
            .process
            .as_ref()
            .is_some_and(|process| self.runtime.is_running(process));
        if running {
            network
                .set_policy(sandbox_network)
                .await
                .map_err(|source| RunnerError::Network {
                    sandbox_id: record.sandbox_id.clone(),
                    source: Box::new(source),
                })?;
        }
        Ok(())
    }

    /// Whether sandboxes get networking.
    pub fn has_network(&self) -> bool {
        self.network.is_some()
    }

    /// Stops the resolver, and removes the hub when no sandbox with networking runs any
    /// more; called when the server stops. Running sandboxes keep the hub, so they keep
    /// their policies until the next server adopts them.
    pub async fn shutdown_network(&self) {
        let Some(network) = &self.network else {
            return;
        };
        let instances: Vec<Arc<Instance>> = self
            .instances
            .lock()
            .expect("instances lock")
            .values()
            .cloned()
            .collect();
        let mut in_use = false;
        for instance in instances {
            let record = instance.record.lock().await;
            if record.network.is_some()
                && self.runtime_state(&record) == SandboxRuntimeState::Running
            {
                in_use = true;
            }
        }
        if let Err(error) = network.shutdown(!in_use) {
            tracing::warn!(%error, "failed to remove the sandbox network hub");
        }
    }

    /// Test aid: waits while [`RunnerConfig::hang_start_file`] exists.
    async fn hang_if_requested(
        &self,
        sandbox_id: &str,
        token: &CancellationToken,
    ) -> Result<(), RunnerError> {
        let Some(file) = &self.config.hang_start_file else {
            return Ok(());
        };
        if file.exists() {
            tracing::warn!(sandbox_id, file = %file.display(), "test aid: the start waits while this file exists");
        }
        while file.exists() {
            tokio::select! {
                () = token.cancelled() => return Err(interrupted(sandbox_id)),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        Ok(())
    }

    /// Stops a sandbox's processes and releases its cgroups; its files stay. Without `force`
    /// the processes get SIGTERM and a short grace time before SIGKILL.
    pub async fn stop(&self, sandbox_id: &str, force: bool) -> Result<(), RunnerError> {
        let instance = self.instance(sandbox_id)?;
        let mut record = instance.record.lock().await;
        let grace = if force { Duration::ZERO } else { STOP_GRACE };
        if let Some(process) = record.process.take() {
            self.runtime.stop(&process, grace).await;
        }
        self.runtime.release_cgroup(sandbox_id);
        self.detach_network(&record).await;
        save(&record, &instance.dirs)
    }

    /// Interrupts a start in progress, then kills the sandbox's processes and removes its
    /// cgroups, which frees its CPU and memory; its files stay, so it can start again.
    pub async fn release(&self, sandbox_id: &str) -> Result<(), RunnerError> {
        let instance = self.instance(sandbox_id)?;
        self.interrupt_instance(sandbox_id, &instance);
        let mut record = instance.record.lock().await;
        if let Some(process) = record.process.take() {
            self.runtime.stop(&process, Duration::ZERO).await;
        }
        self.runtime.release_cgroup(sandbox_id);
        self.detach_network(&record).await;
        save(&record, &instance.dirs)
    }

    /// Interrupts a start in progress: it returns [`RunnerError::Interrupted`] promptly and
    /// leaves nothing running. Without a start in progress this does nothing.
    pub fn interrupt(&self, sandbox_id: &str) {
        if let Ok(instance) = self.instance(sandbox_id) {
            self.interrupt_instance(sandbox_id, &instance);
        }
    }

    fn interrupt_instance(&self, sandbox_id: &str, instance: &Instance) {
        instance.interrupt();
        // A start blocked in the runtime ends when the processes it waits for die. Without a
        // start in progress the lock is free, and the caller does the same work under it.
        if instance.record.try_lock().is_err() {
            self.runtime.release_cgroup(sandbox_id);
        }
    }

    /// Destroys a sandbox: interrupts a start in progress, kills its processes at once,
    /// releases its cgroups and uid range and removes its files. Destroying an unknown
    /// sandbox succeeds, so retries are safe.
    pub async fn destroy(&self, sandbox_id: &str) -> Result<(), RunnerError> {
        let Ok(instance) = self.instance(sandbox_id) else {
            return Ok(());
        };
        instance.destroyed.store(true, Ordering::Release);
        self.interrupt_instance(sandbox_id, &instance);
        let record = instance.record.lock().await;
        if let Some(process) = &record.process {
            self.runtime.stop(process, Duration::ZERO).await;
        }
        self.runtime.release_cgroup(sandbox_id);
        self.detach_network(&record).await;
        self.release_network_index(record.network.as_ref());
        // A large upper directory takes a while to remove; that must not stall the runtime's
        // worker threads.
        let root = instance.dirs.root.clone();
        if tokio::task::spawn_blocking(move || remove_dir(&root))
            .await
            .is_err()
        {
            tracing::warn!(sandbox_id, "removing the sandbox directory panicked");
        }
        self.instances
            .lock()
            .expect("instances lock")
            .remove(sandbox_id);
        self.slots.lock().expect("slots lock").release(record.slot);
        Ok(())
    }

    /// Sets a sandbox's resource limits: at once on its cgroups when it runs, and in its
    /// record for the next start either way. A stopped sandbox's disk image grows to a larger
    /// disk limit; a running sandbox's disk limit is not changed (the API rejects that).
    pub async fn resize(&self, sandbox_id: &str, limits: Limits) -> Result<(), RunnerError> {
        let instance = self.instance(sandbox_id)?;
        let mut record = instance.record.lock().await;
        let running = record
            .process
            .as_ref()
            .is_some_and(|process| self.runtime.is_running(process));
        if running {
            self.runtime.set_limits(sandbox_id, &limits)?;
        } else if record.disk_image && limits.disk_gib > record.limits.disk_gib {
            let image = instance.dirs.disk_image();
            let grown = async {
                disk::wait_detached(&image).await?;
                let gib = limits.disk_gib;
                tokio::task::spawn_blocking(move || disk::grow(&image, gib))
                    .await
                    .expect("growing a disk image does not panic")
            };
            grown.await.map_err(|source| RunnerError::Disk {
                sandbox_id: sandbox_id.to_owned(),
                source,
            })?;
        }
        record.limits = limits;
        save(&record, &instance.dirs)
    }

    /// Whether a sandbox's processes run. Waits for an operation in progress on it.
    pub async fn state(&self, sandbox_id: &str) -> Result<SandboxRuntimeState, RunnerError> {
        let instance = self.instance(sandbox_id)?;
        let record = instance.record.lock().await;
        Ok(self.runtime_state(&record))
    }

    /// Whether a sandbox's processes run, without waiting: `None` while an operation holds
    /// the sandbox or when the runner does not know it.
    pub fn state_now(&self, sandbox_id: &str) -> Option<SandboxRuntimeState> {
        let instance = self.instance(sandbox_id).ok()?;
        let record = instance.record.try_lock().ok()?;
        Some(self.runtime_state(&record))
    }

    fn runtime_state(&self, record: &InstanceRecord) -> SandboxRuntimeState {
        match &record.process {
            Some(process) if self.runtime.is_running(process) => SandboxRuntimeState::Running,
            _ => SandboxRuntimeState::Stopped,
        }
    }

    /// CPU time and processes of a sandbox's workloads (everything but the daemon's own
    /// processes); `None` when the sandbox has no cgroups, which is when it does not run.
    pub fn workload_usage(&self, sandbox_id: &str) -> Option<WorkloadUsage> {
        self.runtime.workload_usage(sandbox_id)
    }

    /// Host path of a sandbox's toolbox socket.
    pub fn toolbox_socket(&self, sandbox_id: &str) -> Result<PathBuf, RunnerError> {
        Ok(self.instance(sandbox_id)?.dirs.toolbox_socket())
    }
}

fn interrupted(sandbox_id: &str) -> RunnerError {
    RunnerError::Interrupted {
        sandbox_id: sandbox_id.to_owned(),
    }
}

pub(crate) fn save(record: &InstanceRecord, dirs: &InstanceDirs) -> Result<(), RunnerError> {
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
