//! Sandbox settings that are not state changes: labels, the auto-stop, auto-archive,
//! auto-delete and auto-pause intervals, the TTL, activity, whether previews are public, and
//! the documented refusal of pause.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use daytona_wire::ErrorBody;
use daytona_wire::api::{Sandbox, SandboxLabels};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{find, validate_labels};
use crate::auth::Caller;
use crate::dto;
use crate::error::ApiError;
use crate::json::JsonBody;
use crate::lifecycle::record_activity;
use crate::state::AppState;
use crate::store::SandboxRecord;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(replace_labels))
        .routes(routes!(set_autostop_interval))
        .routes(routes!(set_auto_archive_interval))
        .routes(routes!(set_auto_delete_interval))
        .routes(routes!(set_auto_pause_interval))
        .routes(routes!(set_ttl))
        .routes(routes!(update_last_activity))
        .routes(routes!(pause))
        .routes(routes!(update_public_status))
}

/// `PUT /sandbox/{idOrName}/labels`: replaces the whole label map.
#[utoipa::path(put, path = "/sandbox/{id}/labels", tag = "sandbox", request_body = SandboxLabels,
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "The sandbox's labels now", body = SandboxLabels),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn replace_labels(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
    JsonBody(body): JsonBody<SandboxLabels>,
) -> Result<Json<SandboxLabels>, ApiError> {
    validate_labels(&body.labels)?;
    let mut record = find(&state, &caller, &id_or_name).await?;
    record.labels = body.labels;
    save(&state, &mut record).await?;
    Ok(Json(SandboxLabels {
        labels: record.labels,
    }))
}

/// Parses an interval in minutes from a path, at least `min`.
fn minutes(name: &str, text: &str, min: i64) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|value| *value >= min)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid {name} {text:?}: use a whole number of minutes, at least {min}"
            ))
        })
}

/// `POST /sandbox/{idOrName}/autostop/{interval}`.
#[utoipa::path(post, path = "/sandbox/{id}/autostop/{interval}", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name"),
        ("interval" = i64, Path, description = "Minutes without activity before the sandbox stops; 0 never stops it")),
    responses((status = 200, body = Sandbox), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn set_autostop_interval(
    State(state): State<AppState>,
    caller: Caller,
    Path((id_or_name, interval)): Path<(String, String)>,
) -> Result<Json<Sandbox>, ApiError> {
    let interval = minutes("autostop interval", &interval, 0)?;
    update(&state, &caller, &id_or_name, |record| {
        record.auto_stop_interval = interval;
    })
    .await
}

/// `POST /sandbox/{idOrName}/autoarchive/{interval}`. Stored and reported; this server does
/// not archive sandboxes.
#[utoipa::path(post, path = "/sandbox/{id}/autoarchive/{interval}", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name"),
        ("interval" = i64, Path, description = "Minutes stopped before the sandbox is archived; 0 means the maximum. Stored only: this server does not archive")),
    responses((status = 200, body = Sandbox), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn set_auto_archive_interval(
    State(state): State<AppState>,
    caller: Caller,
    Path((id_or_name, interval)): Path<(String, String)>,
) -> Result<Json<Sandbox>, ApiError> {
    let interval = minutes("auto-archive interval", &interval, 0)?;
    update(&state, &caller, &id_or_name, |record| {
        record.auto_archive_interval = interval;
    })
    .await
}

/// `POST /sandbox/{idOrName}/autodelete/{interval}`.
#[utoipa::path(post, path = "/sandbox/{id}/autodelete/{interval}", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name"),
        ("interval" = i64, Path, description = "Minutes stopped before the sandbox is deleted; 0 deletes it when it stops, -1 never")),
    responses((status = 200, body = Sandbox), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn set_auto_delete_interval(
    State(state): State<AppState>,
    caller: Caller,
    Path((id_or_name, interval)): Path<(String, String)>,
) -> Result<Json<Sandbox>, ApiError> {
    let interval = minutes("auto-delete interval", &interval, -1)?;
    update(&state, &caller, &id_or_name, |record| {
        record.auto_delete_interval = interval;
    })
    .await
}

/// `POST /sandbox/{idOrName}/autopause/{interval}`. Stored and reported; container sandboxes
/// cannot pause.
#[utoipa::path(post, path = "/sandbox/{id}/autopause/{interval}", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name"),
        ("interval" = i64, Path, description = "Minutes without activity before the sandbox pauses; 0 never. Stored only: container sandboxes cannot pause")),
    responses((status = 200, body = Sandbox), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn set_auto_pause_interval(
    State(state): State<AppState>,
    caller: Caller,
    Path((id_or_name, interval)): Path<(String, String)>,
) -> Result<Json<Sandbox>, ApiError> {
    let interval = minutes("auto-pause interval", &interval, 0)?;
    update(&state, &caller, &id_or_name, |record| {
        record.auto_pause_interval = interval;
    })
    .await
}

/// `POST /sandbox/{idOrName}/ttl/{ttlMinutes}`: deletes the sandbox that many minutes from
/// now, whatever its state (`autoDestroyAt`); 0 removes the TTL.
#[utoipa::path(post, path = "/sandbox/{id}/ttl/{ttlMinutes}", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name"),
        ("ttlMinutes" = i64, Path, description = "Minutes from now until the sandbox is deleted; 0 removes the TTL")),
    responses((status = 200, body = Sandbox), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn set_ttl(
    State(state): State<AppState>,
    caller: Caller,
    Path((id_or_name, ttl)): Path<(String, String)>,
) -> Result<Json<Sandbox>, ApiError> {
    let ttl = minutes("TTL", &ttl, 0)?;
    let deadline = ttl_deadline(&state, ttl);
    update(&state, &caller, &id_or_name, |record| {
        record.auto_destroy_at = deadline;
    })
    .await
}

/// Returns the `autoDestroyAt` of a TTL of `minutes` from now, or `None` for 0.
pub fn ttl_deadline(state: &AppState, minutes: i64) -> Option<String> {
    (minutes > 0).then(|| {
        let deadline = time::OffsetDateTime::now_utc() + state.lifecycle.minutes(minutes);
        daytona_wire::rfc3339(deadline)
    })
}

/// `POST /sandbox/{idOrName}/last-activity`: records activity now, which restarts the
/// auto-stop timer (`refresh_activity` in the SDKs).
#[utoipa::path(post, path = "/sandbox/{id}/last-activity", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 201, description = "Activity recorded"), (status = 404, body = ErrorBody)))]
pub async fn update_last_activity(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let record = find(&state, &caller, &id_or_name).await?;
    record_activity(&state, &record.id);
    // An explicit refresh is stored at once, not only at the next throttled write.
    state
        .store
        .set_last_activity(&record.id, &daytona_wire::now_rfc3339())
        .await?;
    Ok(StatusCode::CREATED)
}

/// `POST /sandbox/{idOrName}/pause`: always 400. Pausing keeps a sandbox's memory, which only
/// VM sandbox classes can do; this server runs container sandboxes.
#[utoipa::path(post, path = "/sandbox/{id}/pause", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 400, description = "Container sandboxes cannot pause; stop the sandbox instead, which keeps its files", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Response, ApiError> {
    let record = find(&state, &caller, &id_or_name).await?;
    Err(ApiError::bad_request(format!(
        "sandbox {} cannot be paused: pause keeps a sandbox's memory, which only VM sandbox classes support, and this is a container sandbox; stop it instead (POST /sandbox/{}/stop), which keeps its files",
        record.id, record.id
    )))
}

/// `POST /sandbox/{idOrName}/public/{isPublic}`: whether the sandbox's preview URLs work
/// without a token.
#[utoipa::path(post, path = "/sandbox/{id}/public/{isPublic}", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name"),
        ("isPublic" = bool, Path, description = "Whether preview URLs need no token")),
    responses((status = 200, body = Sandbox), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_public_status(
    State(state): State<AppState>,
    caller: Caller,
    Path((id_or_name, is_public)): Path<(String, String)>,
) -> Result<Json<Sandbox>, ApiError> {
    let is_public = match is_public.as_str() {
        "true" => true,
        "false" => false,
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid isPublic {other:?}: use true or false"
            )));
        }
    };
    let sandbox = update(&state, &caller, &id_or_name, |record| {
        record.public = is_public;
    })
    .await?;
    // The preview proxy's cached decisions assumed the old setting.
    state.previews.forget_access(&sandbox.id);
    Ok(sandbox)
}

/// Changes settings of a sandbox and returns it.
async fn update(
    state: &AppState,
    caller: &Caller,
    id_or_name: &str,
    change: impl FnOnce(&mut SandboxRecord),
) -> Result<Json<Sandbox>, ApiError> {
    let mut record = find(state, caller, id_or_name).await?;
    change(&mut record);
    save(state, &mut record).await?;
    Ok(Json(dto::sandbox(state, &record)))
}

async fn save(state: &AppState, record: &mut SandboxRecord) -> Result<(), ApiError> {
    record.updated_at = daytona_wire::now_rfc3339();
    state.store.update_sandbox(record).await?;
    // A shorter interval or TTL may be due at once.
    state.lifecycle.wake_reconciler();
    Ok(())
}
