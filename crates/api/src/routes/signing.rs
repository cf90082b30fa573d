//! `/sandbox/{id}/signing-key` routes: the key that signs a sandbox's file URLs, and its
//! rotation. See [`crate::signing`] for the URLs and how keys are kept.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use daytona_wire::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::organizations::owned_sandbox;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::{AppState, Shared};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_signing_key))
        .routes(routes!(rotate_signing_key))
}

/// Returns the current signing key of a sandbox.
pub async fn current_key(state: &Shared, sandbox_id: &str) -> Result<String, ApiError> {
    let generation = state.store.signing_key_generation(sandbox_id).await?;
    derive(state, sandbox_id, generation)
}

fn derive(state: &Shared, sandbox_id: &str, generation: i64) -> Result<String, ApiError> {
    state
        .signing
        .sandbox_key(&state.config.data_dir, sandbox_id, generation)
        .map_err(|error| ApiError::internal("failed to derive the sandbox's signing key", error))
}

/// Requires `write:sandboxes`: a signing key lets its holder upload files, so reading it needs
/// what uploading needs.
fn require_write(caller: &Caller) -> Result<(), ApiError> {
    if caller.has_permission("write:sandboxes") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            format!(
                "API key {:?} lacks the \"write:sandboxes\" permission that signing keys need",
                caller.key_name
            ),
        ))
    }
}

/// `GET /sandbox/{id}/signing-key`: the key, as a JSON string, that signs the sandbox's file
/// URLs. It lasts across stops and starts until it is rotated.
#[utoipa::path(get, path = "/sandbox/{id}/signing-key", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "The signing key", body = String),
        (status = 403, description = "The key lacks `write:sandboxes`", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_signing_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Json<String>, ApiError> {
    require_write(&caller)?;
    let sandbox = owned_sandbox(&state, &caller, &id_or_name).await?;
    Ok(Json(current_key(&state, &sandbox.id).await?))
}

/// `POST /sandbox/{id}/signing-key/rotate`: replaces the sandbox's signing key, which makes
/// every URL signed with the old one fail with 401, and returns the new key.
#[utoipa::path(post, path = "/sandbox/{id}/signing-key/rotate", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "The new signing key", body = String),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn rotate_signing_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Json<String>, ApiError> {
    let sandbox = owned_sandbox(&state, &caller, &id_or_name).await?;
    let generation = state.store.rotate_signing_key(&sandbox.id).await?;
    tracing::info!(sandbox_id = %sandbox.id, generation, rotated_by = %caller.key_name, "rotated a sandbox's signing key");
    Ok(Json(derive(&state, &sandbox.id, generation)?))
}
