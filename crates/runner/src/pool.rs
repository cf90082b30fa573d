//! The warm pool: started sandboxes of the default snapshot that a create takes instead of
//! starting one.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use crate::daemon_client;
use crate::instance::{Limits, SandboxRuntimeState};
use crate::network::EgressPolicy;
use crate::runner::{CreateParams, Runner, RunnerError, save};

/// What the sandboxes of the warm pool are made of; a create with other layers or another
/// user does not take one.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolTemplate {
    /// Unpacked image layers, lowest first.
    pub layers: Vec<PathBuf>,
    pub user: String,
    pub limits: Limits,
}

/// The pool's bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    pub(crate) template: Option<PoolTemplate>,
    /// Ids of ready sandboxes, oldest first.
    pub(crate) ready: VecDeque<String>,
    /// Sandboxes being started for the pool.
    pub(crate) filling: usize,
}

impl Runner {
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
                    volumes: Vec::new(),
                    work_dir: None,
                    egress: EgressPolicy::deny(),
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

    /// Takes a ready sandbox out of the warm pool if it matches `layers`, `user` and the disk
    /// size `disk_gib`, which a running sandbox cannot change. The
    /// caller hands it over with [`Runner::finish_claim`], or gives it back with
    /// [`Runner::return_to_pool`].
    /// A pooled sandbox whose processes died is destroyed and replaced; one that an
    /// operation has locked at this moment is left in the pool.
    pub fn claim(
        self: &Arc<Self>,
        layers: &[PathBuf],
        user: &str,
        disk_gib: u32,
    ) -> Option<String> {
        let mut busy = Vec::new();
        let claimed = loop {
            let candidate = {
                let mut pool = self.pool.lock().expect("pool lock");
                let Some(template) = pool.template.as_ref() else {
                    break None;
                };
                if template.layers != layers
                    || template.user != user
                    || template.limits.disk_gib != disk_gib
                {
                    break None;
                }
                match pool.ready.pop_front() {
                    Some(candidate) => candidate,
                    None => break None,
                }
            };
            match self.state_now(&candidate) {
                Some(SandboxRuntimeState::Running) => break Some(candidate),
                Some(SandboxRuntimeState::Stopped) => {
                    tracing::warn!(
                        sandbox_id = candidate,
                        "a warm pool sandbox is not running; replacing it"
                    );
                    let runner = self.clone();
                    tokio::spawn(async move {
                        runner.destroy(&candidate).await.ok();
                        runner.refill_pool();
                    });
                }
                None => busy.push(candidate),
            }
        };
        self.pool.lock().expect("pool lock").ready.extend(busy);
        claimed
    }

    /// Gives a claimed sandbox back to the pool, untouched.
    pub fn return_to_pool(&self, sandbox_id: &str) {
        self.pool
            .lock()
            .expect("pool lock")
            .ready
            .push_front(sandbox_id.to_owned());
    }

    /// Turns a claimed pool sandbox into an ordinary one with `env`, `limits` and the egress
    /// policy `egress` (until then it had no egress), and starts a replacement for the pool.
    /// On failure the sandbox is destroyed.
    pub async fn finish_claim(
        self: &Arc<Self>,
        sandbox_id: &str,
        env: &BTreeMap<String, String>,
        limits: Limits,
        egress: &EgressPolicy,
    ) -> Result<(), RunnerError> {
        self.refill_pool();
        let result = self.hand_over(sandbox_id, env, limits, egress).await;
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
        egress: &EgressPolicy,
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
        self.replace_policy(&mut record, egress.clone()).await?;
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
}
