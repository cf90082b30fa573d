//! `POST /sandbox/{id}/snapshot` and `POST /sandbox/{id}/fork`: new snapshots and new
//! sandboxes from the files of a sandbox.
//!
//! A snapshot freezes a started sandbox, packs its writable layer as a new image layer on top
//! of the layers it started from, thaws it, and registers the image as an active snapshot of
//! the organization, which `POST /sandbox` starts new sandboxes from. A fork freezes the
//! sandbox for a copy of its writable layer and starts a new sandbox with the copy; the two
//! diverge from then on. Both answer once done, with the sandbox back in its state.

use axum::Json;
use axum::extract::{Path, State};
use daytona_images::ImageStore;
use daytona_runner::RunnerError;
use daytona_wire::ErrorBody;
use daytona_wire::api::{CreateSandboxSnapshot, ForkSandbox, Sandbox, SandboxState, SnapshotState};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{find, validate_name};
use crate::auth::Caller;
use crate::dto;
use crate::error::ApiError;
use crate::json::JsonBody;
use crate::lifecycle::{self, CreatePlan, OperationKind};
use crate::state::AppState;
use crate::store::{SandboxRecord, SnapshotRecord};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_snapshot))
        .routes(routes!(fork))
}

/// `POST /sandbox/{idOrName}/snapshot`: captures the sandbox's files as a new snapshot.
#[utoipa::path(post, path = "/sandbox/{id}/snapshot", tag = "sandbox",
    request_body = CreateSandboxSnapshot,
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "The sandbox, in its state from before; the snapshot is active", body = Sandbox),
        (status = 400, description = "An invalid name, `includeMemory`, or a sandbox that is neither started nor stopped", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "A snapshot has this name, or another state change of the sandbox is in progress", body = ErrorBody)))]
pub async fn create_snapshot(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
    JsonBody(body): JsonBody<CreateSandboxSnapshot>,
) -> Result<Json<Sandbox>, ApiError> {
    let record = find(&state, &caller, &id_or_name).await?;
    if body.include_memory == Some(true) {
        return Err(ApiError::bad_request(
            "memory snapshots are for VM sandboxes, and this server's sandboxes are containers; leave includeMemory out to snapshot the files",
        ));
    }
    if !daytona_images::is_valid_name(&body.name) {
        return Err(ApiError::bad_request(format!(
            "invalid snapshot name {:?}: use 1 to 128 letters, digits and '.', '_', '-', ':', '/', starting with a letter or digit",
            body.name
        )));
    }
    check_copyable(&record, "snapshotted")?;
    let name_taken = || {
        ApiError::conflict(format!(
            "a snapshot named {:?} already exists; choose another name",
            body.name
        ))
    };
    if state.store.snapshot_name_taken(&body.name).await? {
        return Err(name_taken());
    }
    let guard = state.lifecycle.begin(&record.id, OperationKind::Snapshot)?;

    let root = state.config.image_cache_dir.clone();
    let store = tokio::task::spawn_blocking(move || ImageStore::open(&root))
        .await
        .map_err(|error| ApiError::internal("the image store task failed", error))?
        .map_err(|error| ApiError::internal("failed to open the image store", error))?;
    let image = match state.runner.snapshot(&record.id, &store, &body.name).await {
        Ok(image) => image,
        Err(RunnerError::Capture { source, .. })
            if matches!(*source, daytona_images::Error::ImageExists { .. }) =>
        {
            return Err(name_taken());
        }
        Err(error) => {
            return Err(ApiError::internal(
                format!("failed to snapshot sandbox {}", record.id),
                error,
            ));
        }
    };

    let now = daytona_wire::now_rfc3339();
    let snapshot = SnapshotRecord {
        id: uuid::Uuid::new_v4().to_string(),
        organization_id: Some(caller.organization_id.clone()),
        name: body.name.clone(),
        image_name: Some(body.name.clone()),
        image_digest: Some(image.manifest_digest.clone()),
        state: SnapshotState::Active,
        general: false,
        size_bytes: i64::try_from(image.size_bytes).ok(),
        cpu: record.cpu,
        gpu: 0,
        memory: record.memory,
        disk: record.disk,
        entrypoint: None,
        error_reason: None,
        created_at: now.clone(),
        updated_at: now,
        last_used_at: None,
    };
    if let Err(error) = state.store.insert_snapshot(&snapshot).await {
        tracing::warn!(sandbox_id = %record.id, snapshot = %body.name, %error, "failed to record a sandbox snapshot; removing its image");
        // The image has no snapshot, so nothing could use it.
        let name = body.name.clone();
        let _ = tokio::task::spawn_blocking(move || store.remove(&name)).await;
        if state.store.snapshot_name_taken(&body.name).await? {
            return Err(name_taken());
        }
        return Err(error.into());
    }
    drop(guard);
    tracing::info!(sandbox_id = %record.id, snapshot = %snapshot.name, manifest = %image.manifest_digest, "sandbox snapshot created");
    let record = find(&state, &caller, &record.id).await?;
    Ok(Json(dto::sandbox(&state, &record)))
}

/// `POST /sandbox/{idOrName}/fork`: a new sandbox, started, with a copy of the sandbox's files.
#[utoipa::path(post, path = "/sandbox/{id}/fork", tag = "sandbox",
    request_body = ForkSandbox,
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "The new sandbox: `started`, or `starting` when its start takes longer than 30 s", body = Sandbox),
        (status = 400, description = "An invalid name, or a sandbox that is neither started nor stopped", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "A live sandbox has the name, or another state change of the sandbox is in progress", body = ErrorBody),
        (status = 429, description = "The organization is at one of its limits", body = ErrorBody)))]
pub async fn fork(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
    JsonBody(body): JsonBody<ForkSandbox>,
) -> Result<Json<Sandbox>, ApiError> {
    let source = find(&state, &caller, &id_or_name).await?;
    if let Some(name) = &body.name {
        validate_name(name)?;
    }
    check_copyable(&source, "forked")?;
    let guard = state.lifecycle.begin(&source.id, OperationKind::Fork)?;

    let id = uuid::Uuid::new_v4().to_string();
    let params = state
        .runner
        .fork_params(&source.id, &id)
        .await
        .map_err(|error| {
            ApiError::internal(format!("failed to fork sandbox {}", source.id), error)
        })?;
    let now = daytona_wire::now_rfc3339();
    let record = SandboxRecord {
        id: id.clone(),
        name: body.name.clone().unwrap_or_else(|| id.clone()),
        state: SandboxState::Creating,
        desired_state: Some("started".to_owned()),
        error_reason: None,
        created_at: now.clone(),
        updated_at: now.clone(),
        last_activity_at: Some(now.clone()),
        auto_destroy_at: None,
        state_changed_at: Some(now),
        ..source.clone()
    };
    let plan = CreatePlan {
        layers: params.layers,
        limits: params.limits,
        claimed: None,
        volumes: params.volumes,
        work_dir: params.work_dir,
        fork_of: Some(source.id.clone()),
    };
    let record = lifecycle::create(&state, record, plan).await?;
    drop(guard);
    tracing::info!(sandbox_id = %record.id, from = %source.id, "sandbox forked");
    Ok(Json(dto::sandbox(&state, &record)))
}

/// Only a started or a stopped sandbox has files in a state that can be copied.
fn check_copyable(record: &SandboxRecord, done: &str) -> Result<(), ApiError> {
    match record.state {
        SandboxState::Started | SandboxState::Stopped => Ok(()),
        other => Err(ApiError::bad_request(format!(
            "sandbox {} is {other}; only a started or stopped sandbox can be {done}",
            record.id
        ))),
    }
}
