//! `/snapshots` routes: list, get, create from an imported image, delete, activate and
//! deactivate.
//!
//! A snapshot names an image of the server's image store. Images get there through
//! `daytona snapshot import` (docker-archive or OCI layout); `POST /snapshots` with `imageName`
//! registers one for the organization. With `buildInfo` (the SDK's `Image` definition as a
//! Dockerfile) it builds the image in the background: the snapshot is `building`, then
//! `active` or `build_failed`, and its build log streams from
//! `GET /snapshots/{id}/build-logs`.
//!
//! Deleting a snapshot that sandboxes still use is refused with 409; deleting the last
//! snapshot of an image removes the image from the store with every blob and unpacked layer
//! that no other image uses.

use std::path::PathBuf;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use daytona_images::{ImageConfig, ImageStore};
use daytona_wire::ErrorBody;
use daytona_wire::api::{CreateSnapshot, PaginatedSnapshots, Snapshot, SnapshotState};
use serde::Deserialize;

use crate::auth::Caller;
use crate::dto;
use crate::error::ApiError;
use crate::json::JsonBody;
use crate::state::AppState;
use crate::store::SnapshotRecord;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    page: Option<i64>,
    limit: Option<i64>,
}

/// `GET /snapshots?page&limit`: the snapshots the organization can use, by name.
#[utoipa::path(get, path = "/snapshots", tag = "snapshots",
    params(("page" = Option<i64>, Query, description = "Page number, from 1"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 200")),
    responses((status = 200, body = PaginatedSnapshots), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<PageQuery>,
) -> Result<Json<PaginatedSnapshots>, ApiError> {
    let page = query.page.unwrap_or(1);
    let limit = query.limit.unwrap_or(100);
    if page < 1 || !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid page or limit: page starts at 1, limit is 1 to 200",
        ));
    }
    let all = state.store.list_snapshots(&caller.organization_id).await?;
    let total = all.len() as i64;
    let total_pages = (total + limit - 1) / limit;
    let items = all
        .iter()
        .skip(((page - 1) * limit) as usize)
        .take(limit as usize)
        .map(dto::snapshot)
        .collect();
    Ok(Json(PaginatedSnapshots {
        items,
        total,
        page,
        total_pages,
    }))
}

/// `GET /snapshots/{idOrName}`.
#[utoipa::path(get, path = "/snapshots/{id}", tag = "snapshots",
    params(("id" = String, Path, description = "Snapshot id or name")),
    responses((status = 200, body = Snapshot), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Json<Snapshot>, ApiError> {
    let record = visible(&state, &caller, &id_or_name).await?;
    Ok(Json(dto::snapshot(&record)))
}

/// `POST /snapshots`: registers an image of the image store as a snapshot of the organization;
/// it is `active` at once.
#[utoipa::path(post, path = "/snapshots", tag = "snapshots", request_body = CreateSnapshot,
    responses((status = 200, description = "The snapshot, active", body = Snapshot),
        (status = 400, description = "Invalid name or resources, an image that is not in the image store, or `buildInfo` (code FEATURE_NOT_AVAILABLE: builds are not available yet)", body = ErrorBody),
        (status = 409, description = "A snapshot has this name", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateSnapshot>,
) -> Result<Json<Snapshot>, ApiError> {
    if !daytona_images::is_valid_name(&body.name) {
        return Err(ApiError::bad_request(format!(
            "invalid snapshot name {:?}: use 1 to 128 letters, digits and '.', '_', '-', ':', '/', starting with a letter or digit",
            body.name
        )));
    }
    if body.gpu.unwrap_or(0) > 0 {
        return Err(ApiError::bad_request(
            "GPUs are not available on this server",
        ));
    }
    let limits = &state.config.limits;
    let cpu = resource("cpu", body.cpu, limits.default_cpu, limits.max_cpu)?;
    let memory = resource(
        "memory",
        body.memory,
        limits.default_memory,
        limits.max_memory,
    )?;
    let disk = resource("disk", body.disk, limits.default_disk, limits.max_disk)?;
    if let Some(build_info) = body.build_info.clone() {
        let build_info: daytona_wire::api::CreateBuildInfo = serde_json::from_value(build_info)
            .map_err(|error| {
                ApiError::invalid_body(format!(
                    "invalid buildInfo: {error}; expected {{\"dockerfileContent\": string, \"contextHashes\": [string]}}"
                ))
            })?;
        let record = SnapshotRecord {
            id: uuid::Uuid::new_v4().to_string(),
            organization_id: Some(caller.organization_id.clone()),
            name: body.name.clone(),
            image_name: Some(crate::builds::image_name_for(&build_info)),
            image_digest: None,
            // `building` at once, not `pending`: the SDK streams the build log only once it
            // sees a state other than `pending`, and a quick build would be over by its
            // first poll.
            state: SnapshotState::Building,
            general: false,
            size_bytes: None,
            cpu,
            gpu: 0,
            memory,
            disk,
            entrypoint: body.entrypoint.clone(),
            error_reason: None,
            created_at: daytona_wire::now_rfc3339(),
            updated_at: daytona_wire::now_rfc3339(),
            last_used_at: None,
        };
        insert_new(&state, &record).await?;
        tracing::info!(snapshot = %record.name, image = ?record.image_name, "snapshot build requested");
        crate::builds::start(&state, record.clone(), build_info);
        return Ok(Json(dto::snapshot(&record)));
    }
    let image_name = body.image_name.clone().ok_or_else(|| {
        ApiError::bad_request(
            "imageName or buildInfo is required: imageName names an image imported with `daytona snapshot import`",
        )
    })?;
    // The image store is the host's: an organization may name only the images it has
    // snapshots of already, and the admin (who imports images) any of them.
    if !caller.is_admin
        && image_name != daytona_images::DEFAULT_SNAPSHOT
        && !state
            .store
            .organization_uses_image(&caller.organization_id, &image_name)
            .await?
    {
        tracing::info!(organization_id = %caller.organization_id, image = %image_name, "snapshot of another organization's image rejected");
        return Err(ApiError::not_found(format!(
            "image {image_name:?} not found for this organization; ask the administrator to import it and create the snapshot with the admin API key"
        )));
    }
    if state.store.snapshot_name_taken(&body.name).await? {
        return Err(name_taken(&body.name));
    }

    let store = image_store(&state).await?;
    let lookup = image_name.clone();
    let blocking_store = store.clone();
    let found = tokio::task::spawn_blocking(move || blocking_store.get(&lookup))
        .await
        .map_err(|error| ApiError::internal("the image store task failed", error))?
        .map_err(|error| ApiError::internal("failed to read the image store", error))?;
    let image = match found {
        Some(image) => image,
        // A registry reference (`host:port/name:tag`) is pulled into the store first.
        None if daytona_images::is_registry_reference(&image_name) => {
            crate::registry::pull_image(&store, &image_name).await?
        }
        None => {
            return Err(ApiError::bad_request(format!(
                "image {image_name:?} is not in the server's image store; import it first with `daytona snapshot import --name {image_name} FILE` (a docker save tarball or an OCI image layout), or name it by registry reference (HOST:PORT/NAME:TAG)"
            )));
        }
    };

    let now = daytona_wire::now_rfc3339();
    let entrypoint = body
        .entrypoint
        .clone()
        .or_else(|| (!image.config.entrypoint.is_empty()).then(|| image.config.entrypoint.clone()));
    let record = SnapshotRecord {
        id: uuid::Uuid::new_v4().to_string(),
        organization_id: Some(caller.organization_id.clone()),
        name: body.name.clone(),
        image_name: Some(image_name),
        image_digest: Some(image.manifest_digest.clone()),
        state: SnapshotState::Active,
        general: false,
        size_bytes: i64::try_from(image.size_bytes).ok(),
        cpu,
        gpu: 0,
        memory,
        disk,
        entrypoint,
        error_reason: None,
        created_at: now.clone(),
        updated_at: now,
        last_used_at: None,
    };
    insert_new(&state, &record).await?;
    tracing::info!(snapshot = %record.name, image = ?record.image_name, "snapshot created");
    Ok(Json(dto::snapshot(&record)))
}

/// Inserts a new snapshot, or returns 409 when its name is taken.
async fn insert_new(state: &AppState, record: &SnapshotRecord) -> Result<(), ApiError> {
    if state.store.snapshot_name_taken(&record.name).await? {
        return Err(name_taken(&record.name));
    }
    if let Err(error) = state.store.insert_snapshot(record).await {
        // The name check above and this insert race with another create of the same name.
        if state.store.snapshot_name_taken(&record.name).await? {
            return Err(name_taken(&record.name));
        }
        return Err(error.into());
    }
    Ok(())
}

fn name_taken(name: &str) -> ApiError {
    ApiError::conflict(format!(
        "a snapshot named {name:?} already exists; choose another name"
    ))
}

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    follow: Option<bool>,
}

/// `GET /snapshots/{id}/build-logs-url`: where the build log of the snapshot streams from.
#[utoipa::path(get, path = "/snapshots/{id}/build-logs-url", tag = "snapshots",
    params(("id" = String, Path, description = "Snapshot id or name")),
    responses((status = 200, description = "`{\"url\": ...}`"), (status = 404, body = ErrorBody)))]
pub async fn build_logs_url(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let record = visible(&state, &caller, &id_or_name).await?;
    let url = format!(
        "{}/api/snapshots/{}/build-logs",
        state.config.public_url, record.id
    );
    Ok(Json(serde_json::json!({ "url": url })))
}

/// `GET /snapshots/{id}/build-logs?follow=true`: the build log as plain text. With `follow`
/// the body stays open and grows until the build ends; without it, it contains the log so far.
/// A snapshot without a build in this server's run has an empty log.
#[utoipa::path(get, path = "/snapshots/{id}/build-logs", tag = "snapshots",
    params(("id" = String, Path, description = "Snapshot id or name"),
        ("follow" = Option<bool>, Query, description = "Stream until the build ends")),
    responses((status = 200, description = "The build log, text/plain"), (status = 404, body = ErrorBody)))]
pub async fn build_logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
    Query(query): Query<LogQuery>,
) -> Result<axum::response::Response, ApiError> {
    let record = visible(&state, &caller, &id_or_name).await?;
    let log = state.builds.log(&record.id);
    Ok(crate::builds::log_response(
        log,
        query.follow.unwrap_or(false),
    ))
}

/// `DELETE /snapshots/{id}`: deletes a snapshot of the organization that no sandbox uses, and
/// its image once no snapshot names it.
#[utoipa::path(delete, path = "/snapshots/{id}", tag = "snapshots",
    params(("id" = String, Path, description = "Snapshot id or name")),
    responses((status = 200, description = "Deleted"),
        (status = 400, description = "A snapshot the server provides, such as the default one", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Sandboxes use the snapshot; delete them first", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let record = owned(&state, &caller, &id_or_name).await?;
    let users = state.store.sandboxes_using_snapshot(&record.name).await?;
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "snapshot {:?} is used by {} sandbox(es) ({}); delete them first",
            record.name,
            users.len(),
            users.join(", ")
        )));
    }
    state.builds.cancel(&record.id);
    state.store.delete_snapshot(&record.id).await?;
    state
        .images
        .write()
        .expect("images lock")
        .remove(&record.name);
    tracing::info!(snapshot = %record.name, "snapshot deleted");

    if let Some(image_name) = &record.image_name {
        remove_unused_image(&state, image_name).await;
    }
    Ok(StatusCode::OK)
}

/// `POST /snapshots/{id}/activate`.
#[utoipa::path(post, path = "/snapshots/{id}/activate", tag = "snapshots",
    params(("id" = String, Path, description = "Snapshot id or name")),
    responses((status = 200, description = "The snapshot, active", body = Snapshot),
        (status = 400, description = "A snapshot the server provides, or one that is not inactive", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn activate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Json<Snapshot>, ApiError> {
    let mut record = owned(&state, &caller, &id_or_name).await?;
    match record.state {
        SnapshotState::Active => {}
        SnapshotState::Inactive => {
            record.state = SnapshotState::Active;
            record.updated_at = daytona_wire::now_rfc3339();
            state
                .store
                .set_snapshot_state(&record.id, record.state, &record.updated_at)
                .await?;
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "snapshot {:?} is {}, so it cannot be activated; only an inactive snapshot can",
                record.name,
                state_word(other)
            )));
        }
    }
    Ok(Json(dto::snapshot(&record)))
}

/// `POST /snapshots/{id}/deactivate`: sandboxes can no longer be created from the snapshot
/// until it is activated again.
#[utoipa::path(post, path = "/snapshots/{id}/deactivate", tag = "snapshots",
    params(("id" = String, Path, description = "Snapshot id or name")),
    responses((status = 204, description = "Deactivated"),
        (status = 400, description = "A snapshot the server provides", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn deactivate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let record = owned(&state, &caller, &id_or_name).await?;
    if matches!(
        record.state,
        SnapshotState::Active | SnapshotState::Inactive
    ) {
        state
            .store
            .set_snapshot_state(
                &record.id,
                SnapshotState::Inactive,
                &daytona_wire::now_rfc3339(),
            )
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The layers and runtime defaults a sandbox from `snapshot` starts with.
pub struct SnapshotImage {
    /// Unpacked layer directories, lowest first.
    pub layers: Vec<PathBuf>,
    pub config: ImageConfig,
}

/// Finds the image of `snapshot`: the prepared default snapshot from memory, any other from
/// the image store.
pub async fn image_for(
    state: &AppState,
    snapshot: &SnapshotRecord,
) -> Result<SnapshotImage, ApiError> {
    let prepared = state
        .images
        .read()
        .expect("images lock")
        .get(&snapshot.name)
        .cloned();
    if let Some(layers) = prepared {
        return Ok(SnapshotImage {
            layers,
            config: ImageConfig::default(),
        });
    }
    let image_name = snapshot
        .image_name
        .clone()
        .unwrap_or_else(|| snapshot.name.clone());
    let store = image_store(state).await?;
    let lookup = image_name.clone();
    let image = tokio::task::spawn_blocking(move || store.get(&lookup))
        .await
        .map_err(|error| ApiError::internal("the image store task failed", error))?
        .map_err(|error| ApiError::internal("failed to read the image store", error))?
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "snapshot {:?} has no image {image_name:?} in the image store of this runner; import it with `daytona snapshot import --name {image_name} FILE`",
                snapshot.name
            ))
        })?;
    Ok(SnapshotImage {
        layers: image.layers,
        config: image.config,
    })
}

/// Removes image `image_name` from the store when no snapshot names it any more. Failures are
/// logged: the snapshot is gone either way, and the next removal collects what is left.
async fn remove_unused_image(state: &AppState, image_name: &str) {
    if image_name == daytona_images::DEFAULT_SNAPSHOT {
        return;
    }
    match state.store.snapshots_using_image(image_name).await {
        Ok(0) => {}
        Ok(_) => return,
        Err(error) => {
            tracing::warn!(image = image_name, error = %error, "failed to check whether other snapshots use an image; keeping it");
            return;
        }
    }
    // A sandbox created from an image definition names its built image as its snapshot and
    // runs on the image's layers.
    match state.store.sandboxes_using_snapshot(image_name).await {
        Ok(users) if users.is_empty() => {}
        Ok(_) => return,
        Err(error) => {
            tracing::warn!(image = image_name, error = %error, "failed to check whether other snapshots use an image; keeping it");
            return;
        }
    }
    let Ok(store) = image_store(state).await else {
        return;
    };
    let name = image_name.to_owned();
    match tokio::task::spawn_blocking(move || store.remove(&name)).await {
        Ok(Ok(removal)) => tracing::info!(
            image = image_name,
            blobs = removal.blobs,
            layers = removal.layers,
            "removed the image of a deleted snapshot"
        ),
        Ok(Err(daytona_images::Error::ImageNotFound { .. })) => {}
        Ok(Err(error)) => {
            tracing::warn!(image = image_name, error = %format!("{:#}", anyhow::Error::from(error)), "failed to remove the image of a deleted snapshot")
        }
        Err(error) => {
            tracing::warn!(image = image_name, error = %error, "the image removal task failed")
        }
    }
}

async fn image_store(state: &AppState) -> Result<ImageStore, ApiError> {
    let root = state.config.image_cache_dir.clone();
    tokio::task::spawn_blocking(move || ImageStore::open(&root))
        .await
        .map_err(|error| ApiError::internal("the image store task failed", error))?
        .map_err(|error| ApiError::internal("failed to open the image store", error))
}

/// A snapshot the organization can see, or 404.
async fn visible(
    state: &AppState,
    caller: &Caller,
    id_or_name: &str,
) -> Result<SnapshotRecord, ApiError> {
    state
        .store
        .snapshot_by_id_or_name(&caller.organization_id, id_or_name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("snapshot {id_or_name:?} not found")))
}

/// A snapshot of the caller's organization, or 404; the server's own snapshots are 400.
async fn owned(
    state: &AppState,
    caller: &Caller,
    id_or_name: &str,
) -> Result<SnapshotRecord, ApiError> {
    let record = visible(state, caller, id_or_name).await?;
    if record.general || record.organization_id.as_deref() != Some(&caller.organization_id) {
        return Err(ApiError::bad_request(format!(
            "snapshot {:?} is provided by the server for every organization and cannot be changed",
            record.name
        )));
    }
    Ok(record)
}

/// A resource of a new snapshot: `default` when absent, else 1 to `max`.
fn resource(name: &str, value: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    let value = value.unwrap_or(default);
    if !(1..=max).contains(&value) {
        return Err(ApiError::bad_request(format!(
            "invalid {name} {value}: it must be 1 to {max}"
        )));
    }
    Ok(value)
}

fn state_word(state: SnapshotState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}
