//! The sandbox lifecycle: the state machine, the operations that drive it, and the reconciler
//! that applies the automatic ones (auto-stop, auto-delete, TTL, deadlines).
//!
//! The states the API reports, and the moves between them:
//!
//! ```text
//! create:   creating -> starting -> started
//! build:    pending_build -> building_snapshot -> starting -> started (see [`build`](self::build))
//! start:    stopped  -> starting -> started
//! recover:  error    -> starting -> started
//! stop:     started  -> stopping -> stopped
//! archive:  stopped  -> archiving -> archived (see [`archive`](self::archive))
//! start:    archived -> restoring -> started
//! delete:   any state -> destroying -> destroyed (the row is removed, so GET returns 404)
//! failure:  creating | starting | stopping | started -> error
//!           pending_build | building_snapshot -> build_failed
//! ```
//!
//! Rules:
//! - Every state change goes through [`transition`]. It writes the store with a
//!   compare-and-set on the previous state, publishes `sandbox.state.updated`, and keeps the
//!   toolbox route table in step: a sandbox has a route exactly while it is `started`.
//! - One operation at a time per sandbox. A start, stop, recover or resize while another
//!   operation is in progress is rejected with 409 ("sandbox state change in progress"). A
//!   delete is accepted in every state. It interrupts the operation in progress and releases
//!   everything before it responds.
//! - A request that the current state does not allow is rejected with 400, and the message
//!   names the state.
//! - `creating`, `starting` and `stopping` end within
//!   [`LifecycleConfig::transition_timeout`]; past it the sandbox goes to `error`, with a
//!   warning in the log.
//! - Entering `error` kills the sandbox's processes and removes its cgroups, so its CPU,
//!   memory and quota share are free at once. Its files stay, so that `recover` can start it.

mod activity;
mod archive;
mod build;
mod operations;
mod reconciler;
mod recovery;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use daytona_wire::api::SandboxState;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

pub use activity::{
    Activity, PreviewConnection, hold_active, record_activity, track_toolbox_request,
};
pub use archive::{MAX_AUTO_ARCHIVE_MINUTES, archive};
pub use build::{BuildPlan, check_user_in_image, create_from_build, with_image_env};
pub use operations::{CreatePlan, create, delete, recover, resize, start, stop};
pub use reconciler::run as run_reconciler;
pub use recovery::reconcile_after_restart;

use crate::config::LifecycleConfig;
use crate::dto;
use crate::error::ApiError;
use crate::state::{AppState, ToolboxRoute};
use crate::store::{SandboxRecord, StateChange};

/// The kinds of operation that hold a sandbox while they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    Create,
    Start,
    Stop,
    Recover,
    Resize,
    Delete,
    Snapshot,
    Fork,
    Archive,
    /// A create from an image definition, from the build until the sandbox is started.
    Build,
}

impl OperationKind {
    fn noun(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Recover => "recover",
            Self::Resize => "resize",
            Self::Delete => "delete",
            Self::Snapshot => "snapshot",
            Self::Fork => "fork",
            Self::Archive => "archive",
            Self::Build => "build",
        }
    }
}

/// An operation in progress on one sandbox.
struct OperationEntry {
    serial: u64,
    kind: OperationKind,
    /// Cancelled by a delete that takes the sandbox over.
    cancel: CancellationToken,
    /// Turns `true` when the operation ended.
    finished: watch::Receiver<bool>,
}

type Registry = Arc<Mutex<HashMap<String, OperationEntry>>>;

/// The lifecycle's bookkeeping, shared by the request handlers and the reconciler.
pub struct Lifecycle {
    config: LifecycleConfig,
    operations: Registry,
    next_serial: Mutex<u64>,
    pub activity: Activity,
    /// Wakes the reconciler before its next sweep is due.
    wake: Notify,
}

/// The registration of an operation in progress. Dropping it ends the operation.
pub struct OperationGuard {
    registry: Registry,
    sandbox_id: String,
    serial: u64,
    cancel: CancellationToken,
    finished: watch::Sender<bool>,
}

impl OperationGuard {
    /// Returns whether a delete took the sandbox over. The operation then stops without
    /// writing anything.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when a delete takes the sandbox over.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }
}

impl Drop for OperationGuard {
    fn drop(&mut self) {
        let mut operations = self.registry.lock().expect("operations lock");
        if operations
            .get(&self.sandbox_id)
            .is_some_and(|entry| entry.serial == self.serial)
        {
            operations.remove(&self.sandbox_id);
        }
        drop(operations);
        let _ = self.finished.send(true);
    }
}

/// The outcome of registering a delete.
pub enum DeleteClaim {
    /// The delete owns the sandbox; `previous` is the operation that it interrupted.
    Owned {
        guard: OperationGuard,
        previous: Option<watch::Receiver<bool>>,
    },
    /// Another delete is in progress; it ends when this receiver turns `true`.
    AlreadyDeleting(watch::Receiver<bool>),
}

impl Lifecycle {
    pub fn new(config: LifecycleConfig) -> Self {
        Self {
            config,
            operations: Arc::default(),
            next_serial: Mutex::new(0),
            activity: Activity::default(),
            wake: Notify::new(),
        }
    }

    pub fn config(&self) -> &LifecycleConfig {
        &self.config
    }

    /// Registers an operation on a sandbox, or returns a 409 error while another one runs.
    pub fn begin(&self, sandbox_id: &str, kind: OperationKind) -> Result<OperationGuard, ApiError> {
        let mut operations = self.operations.lock().expect("operations lock");
        if let Some(running) = operations.get(sandbox_id) {
            return Err(ApiError::conflict(format!(
                "sandbox state change in progress: a {} of sandbox {sandbox_id} is running; retry when it has finished",
                running.kind.noun()
            )));
        }
        let (guard, entry) = self.new_operation(sandbox_id, kind);
        operations.insert(sandbox_id.to_owned(), entry);
        Ok(guard)
    }

    /// Registers a delete, which interrupts any other operation in progress.
    pub fn begin_delete(&self, sandbox_id: &str) -> DeleteClaim {
        let mut operations = self.operations.lock().expect("operations lock");
        let previous = match operations.get(sandbox_id) {
            Some(running) if running.kind == OperationKind::Delete => {
                return DeleteClaim::AlreadyDeleting(running.finished.clone());
            }
            Some(running) => {
                running.cancel.cancel();
                Some(running.finished.clone())
            }
            None => None,
        };
        let (guard, entry) = self.new_operation(sandbox_id, OperationKind::Delete);
        operations.insert(sandbox_id.to_owned(), entry);
        DeleteClaim::Owned { guard, previous }
    }

    fn new_operation(
        &self,
        sandbox_id: &str,
        kind: OperationKind,
    ) -> (OperationGuard, OperationEntry) {
        let serial = {
            let mut next = self.next_serial.lock().expect("serial lock");
            *next += 1;
            *next
        };
        let cancel = CancellationToken::new();
        let (finished_sender, finished) = watch::channel(false);
        let guard = OperationGuard {
            registry: self.operations.clone(),
            sandbox_id: sandbox_id.to_owned(),
            serial,
            cancel: cancel.clone(),
            finished: finished_sender,
        };
        let entry = OperationEntry {
            serial,
            kind,
            cancel,
            finished,
        };
        (guard, entry)
    }

    /// Returns the operation in progress on a sandbox, if any.
    pub fn operation(&self, sandbox_id: &str) -> Option<OperationKind> {
        self.operations
            .lock()
            .expect("operations lock")
            .get(sandbox_id)
            .map(|entry| entry.kind)
    }

    /// Makes the reconciler sweep now.
    pub fn wake_reconciler(&self) {
        self.wake.notify_one();
    }

    /// Real duration of `minutes` lifecycle minutes (see [`LifecycleConfig::minute`]).
    pub fn minutes(&self, minutes: i64) -> Duration {
        self.config.minute * u32::try_from(minutes.max(0)).unwrap_or(u32::MAX)
    }
}

/// Waits until `finished` turns `true`, at most `limit`. Returns whether it did.
pub async fn wait_finished(finished: &mut watch::Receiver<bool>, limit: Duration) -> bool {
    tokio::time::timeout(limit, finished.wait_for(|done| *done))
        .await
        .is_ok_and(|result| result.is_ok())
}

/// Returns the desired state that a state implies, as Daytona reports it beside the state.
fn desired_state(state: SandboxState, previous: Option<&str>) -> Option<String> {
    let desired = match state {
        SandboxState::Creating
        | SandboxState::PendingBuild
        | SandboxState::BuildingSnapshot
        | SandboxState::Starting
        | SandboxState::Started
        | SandboxState::Restoring => "started",
        SandboxState::Archiving | SandboxState::Archived => "archived",
        SandboxState::Stopping | SandboxState::Stopped => "stopped",
        SandboxState::Destroying | SandboxState::Destroyed => "destroyed",
        _ => return previous.map(str::to_owned),
    };
    Some(desired.to_owned())
}

/// Moves a sandbox from the state in `record` to `to`: the one place where a sandbox's
/// state changes.
///
/// The store is written only if the sandbox is still in `record.state` (a compare-and-set),
/// so a move that lost a race with another writer changes nothing and returns `false`. On
/// success `record` is updated, `sandbox.state.updated` is published, and the toolbox route
/// is added (entering `started`) or removed (any other state). Moving to `destroyed` removes
/// the row.
pub async fn transition(
    state: &AppState,
    record: &mut SandboxRecord,
    to: SandboxState,
    error_reason: Option<String>,
) -> Result<bool, ApiError> {
    let from = record.state;
    let at = daytona_wire::now_rfc3339();
    let desired = desired_state(to, record.desired_state.as_deref());

    let applied = if to == SandboxState::Destroyed {
        state
            .store
            .delete_sandbox_in_state(&record.id, from)
            .await?
    } else {
        let change = StateChange {
            state: to,
            desired_state: desired.as_deref(),
            error_reason: error_reason.as_deref(),
            at: &at,
        };
        state
            .store
            .transition_sandbox(&record.id, from, &change)
            .await?
    };
    if !applied {
        return Ok(false);
    }

    record.state = to;
    record.desired_state = desired;
    record.error_reason = error_reason;
    record.updated_at = at.clone();
    record.state_changed_at = Some(at);
    if to == SandboxState::Started {
        add_route(state, record);
    } else {
        state.remove_route(&record.id);
    }
    if to == SandboxState::Destroyed {
        state.lifecycle.activity.forget(&record.id);
    }
    tracing::debug!(sandbox_id = %record.id, from = %from, to = %to, "sandbox state changed");
    state
        .events
        .sandbox_state_updated(&dto::sandbox(state, record), from);
    state.lifecycle.wake_reconciler();
    Ok(true)
}

/// Routes the toolbox proxy to a started sandbox. A runner that lost the sandbox leaves it
/// without a route, so the proxy responds with 503.
pub(super) fn add_route(state: &AppState, record: &SandboxRecord) {
    match state.runner.toolbox_socket(&record.id) {
        Ok(socket) => state.add_route(
            &record.id,
            ToolboxRoute {
                organization_id: record.organization_id.clone(),
                socket,
            },
        ),
        Err(error) => {
            tracing::warn!(sandbox_id = %record.id, %error, "started sandbox has no toolbox socket")
        }
    }
}
