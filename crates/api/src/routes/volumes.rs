//! `/volumes` routes: create, list, read and delete the volumes of the caller's
//! organization, and the resolution of a sandbox's volume mounts at create.
//!
//! A volume is a directory `<data-dir>/volumes/<id>` on this host. A sandbox mounts it, or a
//! subdirectory of it, read-write at a path of its choice; several sandboxes can mount one
//! volume at the same time. The runtime ID-maps the mount for each sandbox, so the owners
//! that files have on disk are the owners every sandbox sees. A volume of another
//! organization answers 404, as an unknown one does.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use axum::Json;
use axum::extract::{Path as UrlPath, RawQuery, State};
use daytona_runner::VolumeMount;
use daytona_wire::ErrorBody;
use daytona_wire::api::SandboxVolume;
use daytona_wire::volumes::{CreateVolume, Volume, VolumeState};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::JsonBody;
use crate::state::AppState;
use crate::store::{StoreError, VolumeRecord};

/// Most volumes one sandbox may mount.
const MAX_MOUNTS: usize = 16;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, delete))
        .routes(routes!(by_name))
}

/// The directory that contains every volume.
pub fn volumes_dir(state: &AppState) -> PathBuf {
    state.config.data_dir.join("volumes")
}

fn volume_dir(state: &AppState, id: &str) -> PathBuf {
    volumes_dir(state).join(id)
}

fn dto(record: &VolumeRecord) -> Volume {
    Volume {
        id: record.id.clone(),
        name: record.name.clone(),
        organization_id: record.organization_id.clone(),
        state: record.state,
        created_at: record.created_at.clone(),
        updated_at: record.updated_at.clone(),
        last_used_at: record.last_used_at.clone(),
        error_reason: record.error_reason.clone(),
    }
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    super::sandboxes::validate_resource_name("volume", name)
}

fn not_found(id_or_name: &str) -> ApiError {
    ApiError::not_found(format!(
        "volume {id_or_name:?} not found; GET /api/volumes lists the organization's volumes"
    ))
}

/// `GET /volumes`: the organization's volumes, oldest first. `includeDeleted` is accepted
/// and changes nothing: a deleted volume is gone at once.
#[utoipa::path(get, path = "/volumes", tag = "volumes",
    params(("includeDeleted" = Option<bool>, Query, description = "Accepted for the SDKs; deleted volumes are removed at once, so there are none to include")),
    responses((status = 200, body = Vec<Volume>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(_query): RawQuery,
) -> Result<Json<Vec<Volume>>, ApiError> {
    let volumes = state.store.list_volumes(&caller.organization_id).await?;
    Ok(Json(volumes.iter().map(dto).collect()))
}

/// `POST /volumes`: creates an empty volume, `ready` at once. Its root directory has mode
/// 0777, so that every user of every sandbox can write to it.
#[utoipa::path(post, path = "/volumes", tag = "volumes", request_body = CreateVolume,
    responses((status = 200, body = Volume), (status = 400, body = ErrorBody),
        (status = 409, description = "The organization has a volume with this name", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateVolume>,
) -> Result<Json<Volume>, ApiError> {
    validate_name(&body.name)?;
    let now = daytona_wire::now_rfc3339();
    let record = VolumeRecord {
        id: uuid::Uuid::new_v4().to_string(),
        organization_id: caller.organization_id.clone(),
        name: body.name.clone(),
        state: VolumeState::Ready,
        error_reason: None,
        created_at: now.clone(),
        updated_at: now,
        last_used_at: None,
    };
    // The directory comes first: a row is never without its directory, and a directory
    // without a row (after a crash) is only unused space.
    let dir = volume_dir(&state, &record.id);
    let made = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || make_volume_dir(&dir)
    })
    .await
    .expect("creating a directory does not panic");
    made.map_err(|error| {
        ApiError::internal(
            format!("failed to create the volume directory {}", dir.display()),
            error,
        )
    })?;
    match state.store.insert_volume(&record).await {
        Ok(()) => {}
        Err(error) => {
            let _ = std::fs::remove_dir(&dir);
            return Err(match error {
                StoreError::VolumeNameTaken { name } => ApiError::conflict(format!(
                    "a volume named {name:?} already exists; choose another name or use the existing volume"
                )),
                other => other.into(),
            });
        }
    }
    tracing::info!(volume_id = %record.id, name = %record.name, organization_id = %record.organization_id, "volume created");
    Ok(Json(dto(&record)))
}

/// Creates a volume's directory, owned by the sandboxes' root as volumes store it (see
/// [`daytona_runner::VOLUME_UID_BASE`]) and writable by every user of a sandbox. Only root
/// owns the directories above it, which no other host user can enter.
fn make_volume_dir(dir: &Path) -> std::io::Result<()> {
    let parent = dir.parent().expect("a volume directory has a parent");
    std::fs::create_dir_all(parent)?;
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))?;
    std::fs::create_dir(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))?;
    if nix::unistd::geteuid().is_root() {
        let root = daytona_runner::VOLUME_UID_BASE;
        std::os::unix::fs::chown(dir, Some(root), Some(root))?;
    }
    Ok(())
}

/// `GET /volumes/{volumeId}`.
#[utoipa::path(get, path = "/volumes/{volumeId}", tag = "volumes",
    params(("volumeId" = String, Path, description = "Volume id")),
    responses((status = 200, body = Volume), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Volume>, ApiError> {
    let record = state
        .store
        .volume_by_id_or_name(&caller.organization_id, &id)
        .await?
        .filter(|record| record.id == id)
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(dto(&record)))
}

/// `GET /volumes/by-name/{name}`.
#[utoipa::path(get, path = "/volumes/by-name/{name}", tag = "volumes",
    params(("name" = String, Path, description = "Volume name")),
    responses((status = 200, body = Volume), (status = 404, body = ErrorBody)))]
pub async fn by_name(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Volume>, ApiError> {
    let record = state
        .store
        .volume_by_name(&caller.organization_id, &name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    Ok(Json(dto(&record)))
}

/// `DELETE /volumes/{volumeId}`: removes the volume and its files. A volume that a sandbox
/// mounts, in any state, gets 409; delete those sandboxes first.
#[utoipa::path(delete, path = "/volumes/{volumeId}", tag = "volumes",
    params(("volumeId" = String, Path, description = "Volume id")),
    responses((status = 200, description = "The volume and its files are gone"),
        (status = 404, body = ErrorBody),
        (status = 409, description = "A sandbox mounts the volume", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<(), ApiError> {
    let record = state
        .store
        .volume_by_id_or_name(&caller.organization_id, &id)
        .await?
        .filter(|record| record.id == id)
        .ok_or_else(|| not_found(&id))?;
    let users = state
        .store
        .sandboxes_using_volume(&caller.organization_id, &record.id)
        .await?;
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "volume {:?} is in use by sandboxes {}; delete them first",
            record.name,
            users.join(", ")
        )));
    }
    state.store.delete_volume(&record.id).await?;
    let dir = volume_dir(&state, &record.id);
    let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir))
        .await
        .expect("removing a directory does not panic");
    if let Err(error) = removed
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(volume_id = %record.id, %error, "failed to remove the files of a deleted volume");
    }
    tracing::info!(volume_id = %record.id, name = %record.name, "volume deleted");
    Ok(())
}

/// Checks a sandbox's volume mounts and resolves them: each volume, given by id or name,
/// must be one of the organization's; mount paths must be valid and must not lie inside each
/// other; subpaths must be relative without `..`. Returns the mounts as the sandbox records
/// them (with volume ids) and as the runner mounts them.
pub async fn resolve_mounts(
    state: &AppState,
    caller: &Caller,
    requested: &[SandboxVolume],
) -> Result<(Vec<SandboxVolume>, Vec<VolumeMount>), ApiError> {
    if requested.len() > MAX_MOUNTS {
        return Err(ApiError::bad_request(format!(
            "a sandbox may mount at most {MAX_MOUNTS} volumes; {} were given",
            requested.len()
        )));
    }
    let mut recorded = Vec::new();
    let mut mounts: Vec<VolumeMount> = Vec::new();
    for volume in requested {
        daytona_runner::check_mount_path(&volume.mount_path)
            .map_err(|error| ApiError::bad_request(format!("invalid volume mount: {error}")))?;
        let target = PathBuf::from(volume.mount_path.trim_end_matches('/'));
        if let Some(other) = mounts
            .iter()
            .find(|other| other.target.starts_with(&target) || target.starts_with(&other.target))
        {
            return Err(ApiError::bad_request(format!(
                "volume mount paths {} and {} overlap: a mount path must not be inside another",
                other.target.display(),
                target.display()
            )));
        }
        let subpath = volume
            .subpath
            .as_deref()
            .map(check_subpath)
            .transpose()?
            .flatten();
        let record = state
            .store
            .volume_by_id_or_name(&caller.organization_id, &volume.volume_id)
            .await?
            .ok_or_else(|| not_found(&volume.volume_id))?;
        if record.state != VolumeState::Ready {
            return Err(ApiError::bad_request(format!(
                "volume {:?} is not ready (it is {:?})",
                record.name, record.state
            )));
        }
        recorded.push(SandboxVolume {
            volume_id: record.id.clone(),
            mount_path: volume.mount_path.clone(),
            subpath: volume.subpath.clone(),
        });
        mounts.push(VolumeMount {
            source: volume_dir(state, &record.id),
            subpath,
            target,
        });
    }
    let now = daytona_wire::now_rfc3339();
    for volume in &recorded {
        state.store.touch_volume(&volume.volume_id, &now).await?;
    }
    Ok((recorded, mounts))
}

/// Checks a subpath: relative components without `.` or `..`. Leading and trailing slashes
/// are ignored, as for an S3 prefix; an empty subpath is the whole volume.
fn check_subpath(subpath: &str) -> Result<Option<PathBuf>, ApiError> {
    let trimmed = subpath.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(None);
    }
    let valid = trimmed
        .split('/')
        .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
    if valid {
        Ok(Some(PathBuf::from(trimmed)))
    } else {
        Err(ApiError::bad_request(format!(
            "invalid volume subpath {subpath:?}: use a relative path without '.', '..' or empty components"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subpaths_checked() {
        assert_eq!(check_subpath("").unwrap(), None);
        assert_eq!(check_subpath("/").unwrap(), None);
        assert_eq!(check_subpath("a/b/").unwrap(), Some(PathBuf::from("a/b")));
        for bad in ["..", "a/../b", "a//b", "./a"] {
            assert!(check_subpath(bad).is_err(), "{bad}");
        }
    }
}
