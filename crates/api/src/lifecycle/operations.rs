//! The lifecycle operations: create, start, recover, stop, resize and delete.
//!
//! Each operation registers itself (see [`super::Lifecycle::begin`]) and runs the runner's
//! part in a task of its own, bounded by the transition deadline. The request waits for that
//! task up to [`RESPONSE_WAIT`] and then responds with the sandbox as it is, so that the
//! response to a slow start reports `starting` and the SDK waits for `started` itself. A
//! delete interrupts the task, which then ends without writing anything.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use daytona_runner::{CreateParams, Limits, RunnerError};
use daytona_wire::api::{ResizeSandbox, SandboxState};
use tokio::sync::oneshot;

use super::activity::record_activity;
use super::{DeleteClaim, OperationGuard, OperationKind, transition, wait_finished};
use crate::dto;
use crate::error::{ApiError, error_chain};
use crate::quota::Reservation;
use crate::state::AppState;
use crate::store::SandboxRecord;

/// Maximum time a lifecycle request waits for its operation before it responds with the
/// current state. Daytona's API waits as long in its create and start.
const RESPONSE_WAIT: Duration = Duration::from_secs(30);

/// How long a delete waits for the operation it interrupted to end.
const INTERRUPTED_OPERATION_WAIT: Duration = Duration::from_secs(15);

/// How often a delete retries moving a sandbox to `destroying` while an interrupted operation
/// still changes its state.
const DESTROYING_ATTEMPTS: usize = 10;

/// The source of a new sandbox's files.
#[derive(Debug, Clone)]
pub struct CreatePlan {
    /// Unpacked image layers, lowest first.
    pub layers: Vec<PathBuf>,
    pub limits: Limits,
    /// A sandbox taken from the warm pool, already running, whose id the new sandbox has.
    pub claimed: Option<String>,
    /// The volumes to mount; a sandbox with volumes is never taken from the warm pool.
    pub volumes: Vec<daytona_runner::VolumeMount>,
    /// The image's work directory, where commands start; the user's home when `None`.
    pub work_dir: Option<String>,
    /// The sandbox whose writable layer the new one starts with a copy of (a fork).
    pub fork_of: Option<String>,
}

/// The outcome of the runner's part of an operation.
enum RunnerOutcome {
    Done(Result<(), RunnerError>),
    TimedOut,
}

/// The outcome of a failed start for the sandbox.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterFailure {
    /// The sandbox existed before: it moves to `error` with its files, to be recovered.
    KeepInError,
    /// The sandbox is being created: nothing of it remains, and the create returns 500.
    Destroy,
}

/// Creates a sandbox from `record` (state `creating`, not stored yet) and returns once it is
/// started, has failed, or [`RESPONSE_WAIT`] has passed.
pub async fn create(
    state: &AppState,
    record: SandboxRecord,
    plan: CreatePlan,
) -> Result<SandboxRecord, ApiError> {
    let give_back = |state: &AppState| {
        if let Some(claimed) = &plan.claimed {
            state.runner.return_to_pool(claimed);
        }
    };
    let reservation = match state
        .quotas
        .reserve(state, &record.organization_id, record.cpu, record.memory)
        .await
    {
        Ok(reservation) => reservation,
        Err(error) => {
            give_back(state);
            return Err(error);
        }
    };
    let guard = match state.lifecycle.begin(&record.id, OperationKind::Create) {
        Ok(guard) => guard,
        Err(error) => {
            give_back(state);
            return Err(error);
        }
    };
    // The row comes first: it reserves the name, and a server that crashes in the middle of
    // the create finds the row at its next start and cleans up after it.
    if let Err(error) = state.store.insert_sandbox(&record).await {
        give_back(state);
        return Err(error.into());
    }
    state.events.sandbox_created(&dto::sandbox(state, &record));
    tracing::info!(sandbox_id = %record.id, organization_id = %record.organization_id, pooled = plan.claimed.is_some(), "creating sandbox");

    let id = record.id.clone();
    let task_state = state.clone();
    let outcome =
        spawn_operation(
            async move { run_create(&task_state, record, plan, guard, reservation).await },
        );
    answer(state, &id, outcome).await
}

async fn run_create(
    state: &AppState,
    mut record: SandboxRecord,
    plan: CreatePlan,
    guard: OperationGuard,
    reservation: Reservation,
) -> Result<(), ApiError> {
    let id = record.id.clone();
    match &plan.claimed {
        // A pooled sandbox runs already; it only takes the create's environment and limits.
        Some(_) => {
            if !transition(state, &mut record, SandboxState::Starting, None).await? {
                return Err(deleted_meanwhile(&id));
            }
            let claimed = state
                .runner
                .finish_claim(
                    &id,
                    &record.env,
                    plan.limits,
                    &crate::routes::sandboxes::network::record_policy(&record),
                )
                .await;
            if let Err(error) = claimed {
                // The runner destroyed the pooled sandbox, so there are no files to recover.
                transition(state, &mut record, SandboxState::Destroyed, None).await?;
                return Err(ApiError::internal(
                    format!("failed to create sandbox {id}"),
                    error,
                ));
            }
            finish_start(
                state,
                record,
                guard,
                reservation,
                async { Ok(()) },
                AfterFailure::Destroy,
            )
            .await
        }
        None => {
            let params = CreateParams {
                sandbox_id: id.clone(),
                layers: plan.layers,
                user: record.os_user.clone(),
                env: record.env.clone(),
                limits: plan.limits,
                volumes: plan.volumes,
                work_dir: plan.work_dir,
                egress: crate::routes::sandboxes::network::record_policy(&record),
            };
            let prepared = match &plan.fork_of {
                Some(from) => state.runner.fork(from, params).await,
                None => state.runner.prepare(params),
            };
            if let Err(error) = prepared {
                transition(state, &mut record, SandboxState::Destroyed, None).await?;
                return Err(ApiError::internal(
                    format!("failed to create sandbox {id}"),
                    error,
                ));
            }
            if guard.is_cancelled()
                || !transition(state, &mut record, SandboxState::Starting, None).await?
            {
                return Err(deleted_meanwhile(&id));
            }
            let runner = state.runner.clone();
            finish_start(
                state,
                record,
                guard,
                reservation,
                runner.start(&id),
                AfterFailure::Destroy,
            )
            .await
        }
    }
}

/// Starts a stopped sandbox.
pub async fn start(state: &AppState, record: SandboxRecord) -> Result<SandboxRecord, ApiError> {
    match record.state {
        SandboxState::Started => return Ok(record),
        SandboxState::Stopped => {}
        SandboxState::Archived => return super::archive::restore(state, record).await,
        SandboxState::Error => {
            return Err(ApiError::bad_request(format!(
                "sandbox {} is in an errored state ({}); recover it with POST /sandbox/{}/recover, or delete it",
                record.id,
                record
                    .error_reason
                    .as_deref()
                    .unwrap_or("no reason recorded"),
                record.id
            )));
        }
        other => return Err(wrong_state(&record, other, "start")),
    }
    begin_start(state, record, OperationKind::Start).await
}

/// Starts a sandbox in `error` again, with the files it has.
pub async fn recover(state: &AppState, record: SandboxRecord) -> Result<SandboxRecord, ApiError> {
    if record.state != SandboxState::Error {
        return Err(wrong_state(&record, record.state, "recover"));
    }
    begin_start(state, record, OperationKind::Recover).await
}

async fn begin_start(
    state: &AppState,
    mut record: SandboxRecord,
    kind: OperationKind,
) -> Result<SandboxRecord, ApiError> {
    let guard = state.lifecycle.begin(&record.id, kind)?;
    let reservation = state
        .quotas
        .reserve(state, &record.organization_id, record.cpu, record.memory)
        .await?;
    if !transition(state, &mut record, SandboxState::Starting, None).await? {
        return Err(changed_meanwhile(&record.id));
    }
    tracing::info!(sandbox_id = %record.id, operation = kind.noun(), "starting sandbox");

    let id = record.id.clone();
    let task_state = state.clone();
    let outcome = spawn_operation(async move {
        let runner = task_state.runner.clone();
        let sandbox_id = record.id.clone();
        finish_start(
            &task_state,
            record,
            guard,
            reservation,
            runner.start(&sandbox_id),
            AfterFailure::KeepInError,
        )
        .await
    });
    answer(state, &id, outcome).await
}

/// Waits for the runner's start of a `starting` sandbox and moves the sandbox to `started`.
/// When the start failed or passed its deadline, the sandbox moves to `error`, or is
/// destroyed and the operation fails, as `after_failure` selects.
pub(super) async fn finish_start(
    state: &AppState,
    mut record: SandboxRecord,
    guard: OperationGuard,
    reservation: Reservation,
    runner_start: impl Future<Output = Result<(), RunnerError>>,
    after_failure: AfterFailure,
) -> Result<(), ApiError> {
    let outcome = with_deadline(state, &record.id, runner_start).await;
    if guard.is_cancelled() {
        return Err(deleted_meanwhile(&record.id));
    }
    if after_failure == AfterFailure::Destroy {
        let reason = match &outcome {
            RunnerOutcome::Done(Ok(())) => None,
            RunnerOutcome::Done(Err(error)) => Some(format!(
                "sandbox {} failed to start: {}",
                record.id,
                error_chain(error)
            )),
            RunnerOutcome::TimedOut => Some(format!(
                "sandbox {} did not start within {} s",
                record.id,
                state.lifecycle.config().transition_timeout.as_secs()
            )),
        };
        if let Some(reason) = reason {
            return Err(discard_failed_create(state, &mut record, reason).await);
        }
    }
    match outcome {
        RunnerOutcome::Done(Ok(())) => {
            if !transition(state, &mut record, SandboxState::Started, None).await? {
                return Err(deleted_meanwhile(&record.id));
            }
            reservation.commit();
            state.lifecycle.activity.reset_usage(&record.id);
            record_activity(state, &record.id);
            tracing::info!(sandbox_id = %record.id, "sandbox started");
        }
        RunnerOutcome::Done(Err(error)) => {
            let reason = format!("failed to start: {}", error_chain(&error));
            tracing::warn!(sandbox_id = %record.id, error = %reason, "sandbox failed to start; moving it to error");
            fail(state, &mut record, reason).await;
        }
        RunnerOutcome::TimedOut => {
            let timeout = state.lifecycle.config().transition_timeout;
            tracing::warn!(sandbox_id = %record.id, timeout_secs = timeout.as_secs_f64(), "sandbox did not start in time; moving it to error");
            fail(
                state,
                &mut record,
                format!("the start did not finish within {} s", timeout.as_secs()),
            )
            .await;
        }
    }
    Ok(())
}

/// Stops a started sandbox. With `force` its processes get SIGKILL at once instead of
/// SIGTERM and a grace time.
pub async fn stop(
    state: &AppState,
    mut record: SandboxRecord,
    force: bool,
) -> Result<SandboxRecord, ApiError> {
    match record.state {
        SandboxState::Stopped => return Ok(record),
        SandboxState::Started => {}
        other => return Err(wrong_state(&record, other, "stop")),
    }
    let guard = state.lifecycle.begin(&record.id, OperationKind::Stop)?;
    if !transition(state, &mut record, SandboxState::Stopping, None).await? {
        return Err(changed_meanwhile(&record.id));
    }

    let id = record.id.clone();
    let task_state = state.clone();
    let outcome = spawn_operation(async move {
        let state = &task_state;
        let runner = state.runner.clone();
        let sandbox_id = record.id.clone();
        let outcome = with_deadline(state, &sandbox_id, runner.stop(&sandbox_id, force)).await;
        if guard.is_cancelled() {
            return Err(deleted_meanwhile(&sandbox_id));
        }
        match outcome {
            RunnerOutcome::Done(Ok(())) => {
                transition(state, &mut record, SandboxState::Stopped, None).await?;
                state.lifecycle.activity.reset_usage(&sandbox_id);
                tracing::info!(sandbox_id, force, "sandbox stopped");
            }
            RunnerOutcome::Done(Err(error)) => {
                let reason = format!("failed to stop: {}", error_chain(&error));
                tracing::warn!(sandbox_id, error = %reason, "sandbox failed to stop; moving it to error");
                fail(state, &mut record, reason).await;
            }
            RunnerOutcome::TimedOut => {
                let timeout = state.lifecycle.config().transition_timeout;
                tracing::warn!(
                    sandbox_id,
                    timeout_secs = timeout.as_secs_f64(),
                    "sandbox did not stop in time; moving it to error"
                );
                fail(
                    state,
                    &mut record,
                    format!("the stop did not finish within {} s", timeout.as_secs()),
                )
                .await;
            }
        }
        Ok(())
    });
    answer(state, &id, outcome).await
}

/// Changes the CPU, memory or disk of a sandbox. A started sandbox gets more CPU and memory
/// at once; lowering them, or changing the disk, needs a stopped sandbox. Disk only grows.
pub async fn resize(
    state: &AppState,
    record: SandboxRecord,
    request: &ResizeSandbox,
) -> Result<SandboxRecord, ApiError> {
    if request.cpu.is_none() && request.memory.is_none() && request.disk.is_none() {
        return Err(ApiError::bad_request(
            "resize needs at least one of cpu, memory and disk",
        ));
    }
    let _guard = state.lifecycle.begin(&record.id, OperationKind::Resize)?;
    // The state may have changed since the request read it.
    let mut record = state
        .store
        .sandbox_by_id(&record.id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("sandbox {:?} not found", record.id)))?;
    let running = match record.state {
        SandboxState::Started => true,
        SandboxState::Stopped => false,
        other => return Err(wrong_state(&record, other, "resize")),
    };

    let limits = &state.config.limits;
    let cpu = resized("cpu", request.cpu, record.cpu, limits.max_cpu, "vCPUs")?;
    let memory = resized(
        "memory",
        request.memory,
        record.memory,
        limits.max_memory,
        "GiB",
    )?;
    let disk = resized("disk", request.disk, record.disk, limits.max_disk, "GiB")?;
    if disk < record.disk {
        return Err(ApiError::bad_request(format!(
            "invalid disk {disk}: a sandbox's disk cannot shrink (it has {} GiB)",
            record.disk
        )));
    }
    if running && (cpu < record.cpu || memory < record.memory || disk != record.disk) {
        return Err(ApiError::bad_request(format!(
            "sandbox {} is started: a started sandbox can only get more CPU and memory; stop it to lower them or to resize its disk",
            record.id
        )));
    }
    // NOTE: the organization's CPU and memory limits are checked when a sandbox starts, not
    // when a started sandbox grows.

    let new_limits = Limits {
        cpus: u32::try_from(cpu).expect("validated to 1..=max"),
        memory_gib: u32::try_from(memory).expect("validated to 1..=max"),
        disk_gib: u32::try_from(disk).expect("validated to 1..=max"),
        pids: limits.pids,
    };
    if let Err(error) = state.runner.resize(&record.id, new_limits).await {
        return Err(match error {
            RunnerError::NotFound { .. } => {
                ApiError::internal("the runner lost the sandbox", error)
            }
            other => ApiError::bad_request(format!(
                "failed to apply the new limits to sandbox {}: {}; stop the sandbox and resize it",
                record.id,
                error_chain(&other)
            )),
        });
    }
    record.cpu = cpu;
    record.memory = memory;
    record.disk = disk;
    record.updated_at = daytona_wire::now_rfc3339();
    state.store.update_sandbox(&record).await?;
    tracing::info!(sandbox_id = %record.id, cpu, memory, disk, "sandbox resized");
    Ok(record)
}

fn resized(
    name: &str,
    requested: Option<i64>,
    current: i64,
    max: i64,
    unit: &str,
) -> Result<i64, ApiError> {
    let value = requested.unwrap_or(current);
    if (1..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::bad_request(format!(
            "invalid {name} {value}: a sandbox may have 1 to {max} {unit}"
        )))
    }
}

/// Deletes a sandbox in any state. An operation in progress is interrupted. The sandbox's
/// processes, cgroups, uid range, files, name and quota share are all released before this
/// returns.
pub async fn delete(state: &AppState, record: SandboxRecord) -> Result<SandboxRecord, ApiError> {
    let id = record.id.clone();
    let (guard, previous) = match state.lifecycle.begin_delete(&id) {
        DeleteClaim::AlreadyDeleting(mut finished) => {
            wait_finished(&mut finished, INTERRUPTED_OPERATION_WAIT).await;
            return Ok(destroyed(record));
        }
        DeleteClaim::Owned { guard, previous } => (guard, previous),
    };

    // 1. Mark the sandbox `destroying`, which takes its toolbox route away. An interrupted
    //    operation may still move the sandbox once, so this retries on a fresh copy.
    let mut record = record;
    let mut attempts = 0;
    while record.state != SandboxState::Destroying {
        if transition(state, &mut record, SandboxState::Destroying, None).await? {
            break;
        }
        attempts += 1;
        record = match state.store.sandbox_by_id(&id).await? {
            Some(fresh) if attempts < DESTROYING_ATTEMPTS => fresh,
            Some(_) => return Err(changed_meanwhile(&id)),
            None => return Ok(destroyed(record)),
        };
    }

    // 2. Processes, cgroups, uid range and files, local and archived. This also ends a start
    //    in progress.
    if let Err(error) = state.runner.destroy(&id).await {
        return Err(ApiError::internal(
            format!("failed to destroy sandbox {id}; the server retries"),
            error,
        ));
    }

    super::archive::forget(state, &record).await;

    // 3. The interrupted operation drops its quota reservation when it ends.
    if let Some(mut finished) = previous
        && !wait_finished(&mut finished, INTERRUPTED_OPERATION_WAIT).await
    {
        tracing::warn!(sandbox_id = %id, "the operation that the delete interrupted has not ended");
    }

    // 4. The row, which frees the name, and the build log of a sandbox built from an image
    //    definition.
    transition(state, &mut record, SandboxState::Destroyed, None).await?;
    state.builds.forget_log(&id);
    drop(guard);
    tracing::info!(sandbox_id = %id, "sandbox destroyed");
    Ok(record)
}

/// Moves a sandbox to `error` after a failed or timed-out operation: kills its processes and
/// removes its cgroups (its CPU and memory are free at once) and keeps its files.
pub(super) async fn fail(state: &AppState, record: &mut SandboxRecord, reason: String) {
    if let Err(error) = state.runner.release(&record.id).await {
        tracing::warn!(sandbox_id = %record.id, error = %error_chain(&error), "failed to release the resources of a failed sandbox");
    }
    match transition(state, record, SandboxState::Error, Some(reason)).await {
        Ok(_) => state.lifecycle.activity.reset_usage(&record.id),
        Err(error) => {
            tracing::warn!(sandbox_id = %record.id, ?error, "failed to record the error state")
        }
    }
}

/// Removes every trace of a sandbox whose create failed and returns the create's error. The
/// reason goes to the client, since a create failure is usually something the caller can act
/// on (a user the image lacks, a resource the host cannot give).
async fn discard_failed_create(
    state: &AppState,
    record: &mut SandboxRecord,
    reason: String,
) -> ApiError {
    tracing::warn!(sandbox_id = %record.id, error = %reason, "create failed; removing the sandbox");
    if let Err(error) = state.runner.destroy(&record.id).await {
        tracing::warn!(sandbox_id = %record.id, error = %error_chain(&error), "failed to remove a sandbox whose create failed; the reconciler retries");
        fail(state, record, reason.clone()).await;
    } else if let Err(error) = transition(state, record, SandboxState::Destroyed, None).await {
        tracing::warn!(sandbox_id = %record.id, %error, "failed to remove the row of a sandbox whose create failed");
    }
    state.lifecycle.activity.reset_usage(&record.id);
    ApiError::internal(reason, anyhow::anyhow!("create failed"))
}

/// Runs the runner's part of an operation, bounded by the transition deadline. Past the
/// deadline the runner is interrupted, and the runner's future is still awaited, so that
/// whatever it started is cleaned up before the operation moves on.
async fn with_deadline(
    state: &AppState,
    sandbox_id: &str,
    runner_part: impl Future<Output = Result<(), RunnerError>>,
) -> RunnerOutcome {
    let mut runner_part = std::pin::pin!(runner_part);
    let timeout = state.lifecycle.config().transition_timeout;
    tokio::select! {
        result = &mut runner_part => RunnerOutcome::Done(result),
        () = tokio::time::sleep(timeout) => {
            state.runner.interrupt(sandbox_id);
            let _ = runner_part.await;
            RunnerOutcome::TimedOut
        }
    }
}

/// Runs an operation's task; its result arrives on the receiver.
pub(super) fn spawn_operation(
    task: impl Future<Output = Result<(), ApiError>> + Send + 'static,
) -> oneshot::Receiver<Result<(), ApiError>> {
    let (sender, receiver) = oneshot::channel();
    tokio::spawn(async move {
        let _ = sender.send(task.await);
    });
    receiver
}

/// Waits for an operation up to [`RESPONSE_WAIT`] and returns the sandbox as it is then, or
/// the operation's error.
pub(super) async fn answer(
    state: &AppState,
    sandbox_id: &str,
    outcome: oneshot::Receiver<Result<(), ApiError>>,
) -> Result<SandboxRecord, ApiError> {
    if let Ok(Ok(Err(error))) = tokio::time::timeout(RESPONSE_WAIT, outcome).await {
        return Err(error);
    }
    answer_now(state, sandbox_id).await
}

/// Returns the sandbox as the store has it now, with its latest activity.
async fn answer_now(state: &AppState, sandbox_id: &str) -> Result<SandboxRecord, ApiError> {
    let mut record = state
        .store
        .sandbox_by_id(sandbox_id)
        .await?
        .ok_or_else(|| deleted_meanwhile(sandbox_id))?;
    state.lifecycle.activity.overlay(&mut record);
    Ok(record)
}

/// Returns the sandbox as a delete reports it.
fn destroyed(mut record: SandboxRecord) -> SandboxRecord {
    record.state = SandboxState::Destroyed;
    record.desired_state = Some("destroyed".to_owned());
    record
}

/// Returns the error for a request that the sandbox's current state does not allow: 409
/// while a transition is in progress, 400 otherwise.
pub(super) fn wrong_state(record: &SandboxRecord, current: SandboxState, action: &str) -> ApiError {
    if matches!(
        current,
        SandboxState::Creating
            | SandboxState::PendingBuild
            | SandboxState::BuildingSnapshot
            | SandboxState::Starting
            | SandboxState::Stopping
            | SandboxState::Destroying
            | SandboxState::Archiving
            | SandboxState::Restoring
    ) {
        ApiError::conflict(format!(
            "sandbox state change in progress: sandbox {} is {current}; retry the {action} when it has finished",
            record.id
        ))
    } else {
        let hint = match current {
            SandboxState::Error => "; recover it (POST /sandbox/{id}/recover) or delete it",
            _ => "",
        };
        ApiError::bad_request(format!(
            "cannot {action} sandbox {}: it is {current}{}",
            record.id,
            hint.replace("{id}", &record.id)
        ))
    }
}

pub(super) fn changed_meanwhile(sandbox_id: &str) -> ApiError {
    ApiError::conflict(format!(
        "sandbox state change in progress: sandbox {sandbox_id} changed state during the request; read it again and retry"
    ))
}

pub(super) fn deleted_meanwhile(sandbox_id: &str) -> ApiError {
    ApiError::conflict(format!(
        "sandbox {sandbox_id} was deleted while the operation was in progress"
    ))
}
