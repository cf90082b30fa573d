//! Creates of sandboxes from an image definition (the SDK's `buildInfo`).
//!
//! ```text
//! pending_build -> building_snapshot -> starting -> started
//!                                    \-> build_failed (errorReason: the build's failure)
//! ```
//!
//! The create responds at once with `pending_build`; a task of its own builds the image with
//! [`crate::builds::build_image`] and then starts the sandbox on its layers. The image is
//! named after a digest of the build info, so a second create of the same definition reuses it
//! without building. The build log streams from `GET /sandbox/{id}/build-logs` and ends once
//! the image is built or the build failed.
//!
//! The task owns the sandbox's operation from the create on, so a delete interrupts the build:
//! the build future is dropped, which stops a `RUN` step's sandbox and drops its unfinished
//! layer, and the scratch directory is removed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use daytona_runner::{CreateParams, Limits, VolumeMount};
use daytona_wire::api::{CreateBuildInfo, SandboxState};

use super::operations::{AfterFailure, deleted_meanwhile, finish_start};
use super::{OperationGuard, OperationKind, transition};
use crate::builds::{self, BuildLog, BuildTarget};
use crate::dto;
use crate::error::ApiError;
use crate::quota::Reservation;
use crate::state::AppState;
use crate::store::SandboxRecord;

/// The inputs of a create from an image definition, besides the sandbox's record.
pub struct BuildPlan {
    pub build_info: CreateBuildInfo,
    /// Store name of the built image ([`builds::image_name_for`]).
    pub image_name: String,
    pub limits: Limits,
    pub volumes: Vec<VolumeMount>,
}

/// Stores `record` (state `pending_build`), starts its build in the background and returns
/// the record. The organization's limits are reserved here, so a create past them is 429 at
/// once, and the reservation is held until the sandbox is started or the create failed.
pub async fn create_from_build(
    state: &AppState,
    record: SandboxRecord,
    plan: BuildPlan,
) -> Result<SandboxRecord, ApiError> {
    let reservation = state
        .quotas
        .reserve(state, &record.organization_id, record.cpu, record.memory)
        .await?;
    let guard = state.lifecycle.begin(&record.id, OperationKind::Build)?;
    state.store.insert_sandbox(&record).await?;
    state.events.sandbox_created(&dto::sandbox(state, &record));
    tracing::info!(sandbox_id = %record.id, organization_id = %record.organization_id, image = %plan.image_name, "creating sandbox from an image definition");

    // The response is the stored `pending_build` record even when the task moves on first
    // (a reused image starts in milliseconds): the SDK streams the build log only after a
    // `pending_build` response.
    let log = state.builds.new_log(&record.id);
    let task_state = state.clone();
    let task_record = record.clone();
    tokio::spawn(async move {
        let sandbox_id = task_record.id.clone();
        if let Err(error) = run(&task_state, task_record, plan, guard, reservation, &log).await {
            tracing::warn!(sandbox_id, %error, "create from an image definition failed");
        }
        log.finish();
    });
    Ok(record)
}

async fn run(
    state: &AppState,
    mut record: SandboxRecord,
    plan: BuildPlan,
    guard: OperationGuard,
    reservation: Reservation,
    log: &BuildLog,
) -> Result<(), ApiError> {
    let id = record.id.clone();
    let scratch = builds::scratch_dir(state, &id);
    let built = tokio::select! {
        built = build(state, &mut record, &plan, &scratch, log) => Some(built),
        () = guard.cancelled() => None,
    };
    builds::remove_scratch(&scratch).await;
    let image = match built {
        None | Some(Err(BuildError::Changed)) => {
            log.line("Build cancelled: the sandbox was deleted");
            tracing::info!(sandbox_id = %id, "sandbox build cancelled by a delete");
            return Ok(());
        }
        Some(Err(BuildError::Failed(reason))) => {
            log.line(&format!("Build failed: {reason}"));
            return fail_build(state, &mut record, reason).await;
        }
        Some(Ok(image)) => image,
    };

    if let Err(error) = check_user_in_image(&image.layers, &record.os_user, &plan.image_name) {
        let reason = error.to_string();
        log.line(&format!("Build failed: {reason}"));
        return fail_build(state, &mut record, reason).await;
    }
    log.line(&format!(
        "Image {} is ready; starting the sandbox",
        plan.image_name
    ));
    log.finish();

    // The image's environment comes first; the variables of the request override it.
    record.env = with_image_env(&image.config.env, std::mem::take(&mut record.env));
    record.updated_at = daytona_wire::now_rfc3339();
    state.store.update_sandbox(&record).await?;
    let params = CreateParams {
        sandbox_id: id.clone(),
        layers: image.layers,
        user: record.os_user.clone(),
        env: record.env.clone(),
        limits: plan.limits,
        volumes: plan.volumes,
        work_dir: image.config.working_dir.filter(|dir| !dir.is_empty()),
        egress: crate::routes::sandboxes::network::record_policy(&record),
    };
    if let Err(error) = state.runner.prepare(params) {
        let reason = format!(
            "failed to create sandbox {id}: {}",
            crate::error::error_chain(&error)
        );
        return fail_build(state, &mut record, reason).await;
    }
    if guard.is_cancelled() || !transition(state, &mut record, SandboxState::Starting, None).await?
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
        AfterFailure::KeepInError,
    )
    .await
}

enum BuildError {
    /// The sandbox left `pending_build` meanwhile (a delete took it over).
    Changed,
    /// The build failed; the text becomes `errorReason`.
    Failed(String),
}

/// Moves the sandbox to `building_snapshot` and builds its image, or finds it built.
async fn build(
    state: &AppState,
    record: &mut SandboxRecord,
    plan: &BuildPlan,
    scratch: &std::path::Path,
    log: &BuildLog,
) -> Result<daytona_images::Image, BuildError> {
    match transition(state, record, SandboxState::BuildingSnapshot, None).await {
        Ok(true) => {}
        Ok(false) => return Err(BuildError::Changed),
        Err(error) => return Err(BuildError::Failed(error.to_string())),
    }
    log.line(&format!("Building the image of sandbox {}", record.id));
    let target = BuildTarget {
        image_name: &plan.image_name,
        organization_id: &record.organization_id,
        build_info: &plan.build_info,
        scratch,
    };
    builds::build_image(state, &target, log)
        .await
        .map_err(BuildError::Failed)
}

/// Moves the sandbox to `build_failed` with `reason`; removes what the runner has of it.
async fn fail_build(
    state: &AppState,
    record: &mut SandboxRecord,
    reason: String,
) -> Result<(), ApiError> {
    tracing::info!(sandbox_id = %record.id, %reason, "sandbox image build failed");
    if let Err(error) = state.runner.destroy(&record.id).await {
        tracing::warn!(sandbox_id = %record.id, %error, "failed to remove the files of a sandbox whose build failed");
    }
    transition(state, record, SandboxState::BuildFailed, Some(reason)).await?;
    Ok(())
}

/// Checks that the image has an account named `user`, in the `/etc/passwd` of the topmost
/// layer that has one, so that a create for a missing user is refused before anything starts.
pub fn check_user_in_image(layers: &[PathBuf], user: &str, snapshot: &str) -> Result<(), ApiError> {
    let Some(passwd) = layers
        .iter()
        .rev()
        .map(|layer| layer.join("etc/passwd"))
        .find(|path| path.is_file())
    else {
        return Err(ApiError::bad_request(format!(
            "snapshot {snapshot:?} has no /etc/passwd, so it has no user {user:?}"
        )));
    };
    let text = std::fs::read_to_string(&passwd)
        .map_err(|error| ApiError::internal("failed to read the image's user database", error))?;
    let found = text
        .lines()
        .any(|line| line.split(':').next() == Some(user));
    if found {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "snapshot {snapshot:?} has no user {user:?}; use a user its /etc/passwd lists, such as 'daytona' or 'root'"
        )))
    }
}

/// Returns the image's `NAME=value` entries with `env` on top.
pub fn with_image_env(
    image_env: &[String],
    env: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut merged: BTreeMap<String, String> = image_env
        .iter()
        .filter_map(|entry| entry.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    merged.extend(env);
    merged
}
