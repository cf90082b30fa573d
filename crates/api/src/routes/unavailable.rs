//! Routes of Daytona features this server does not offer yet. Each returns 400 in Daytona's
//! error shape with code `FEATURE_NOT_AVAILABLE` and a message that names the feature and what
//! to do instead.
//!
//! 400 is chosen because the SDKs turn it into a clear exception (`DaytonaBadRequestError` in
//! Python, `DaytonaError` with status 400 in TypeScript), while 501 maps to no exception class
//! of its own. Routes about one sandbox or snapshot look it up first, so that an unknown one,
//! or one of another organization, is still 404.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use daytona_wire::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::organizations::owned_sandbox;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Error code of every route here.
pub const CODE: &str = "FEATURE_NOT_AVAILABLE";

/// The reason and the way around it, for each feature.
mod message {
    pub const BACKUP: &str = "sandbox backups are not available yet on this server: they need object storage; a stopped sandbox keeps its files on this host";
    pub const SECRETS: &str = "secrets are not available yet on this server; pass values as environment variables at create (env_vars) or per command (env)";
    pub const WARM_POOLS: &str = "warm pools cannot be managed through the API yet; the server keeps one for the default snapshot, sized by `daytona server --warm-pool-size`";
}

/// Description shared by every 400 here.
const NOT_AVAILABLE: &str = "The feature is not available yet (code FEATURE_NOT_AVAILABLE). 400, not 501, because the SDKs map 400 to a clear exception";

fn not_available(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, CODE, message)
}

async fn sandbox_feature(
    state: &AppState,
    caller: &Caller,
    id_or_name: &str,
    message: &'static str,
) -> ApiError {
    match owned_sandbox(state, caller, id_or_name).await {
        Ok(_) => not_available(message),
        Err(error) => error,
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(backup_sandbox))
        .routes(routes!(update_sandbox_secrets, sandbox_secrets))
        .routes(routes!(list_warm_pools, create_warm_pool))
        .routes(routes!(update_warm_pool, delete_warm_pool))
        .routes(routes!(list_secrets, create_secret))
        .routes(routes!(list_secrets_paginated))
        .routes(routes!(get_secret, update_secret, delete_secret))
}

/// `POST /sandbox/{id}/backup`: not available yet.
#[utoipa::path(post, path = "/sandbox/{id}/backup", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 400, description = NOT_AVAILABLE, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn backup_sandbox(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiError {
    sandbox_feature(&state, &caller, &id, message::BACKUP).await
}

/// `PUT /sandbox/{id}/secrets`: not available yet.
#[utoipa::path(put, path = "/sandbox/{id}/secrets", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 400, description = NOT_AVAILABLE, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_sandbox_secrets(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiError {
    sandbox_feature(&state, &caller, &id, message::SECRETS).await
}

/// `GET /sandbox/{id}/secrets`: not available yet.
#[utoipa::path(get, path = "/sandbox/{id}/secrets", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 400, description = NOT_AVAILABLE, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn sandbox_secrets(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiError {
    sandbox_feature(&state, &caller, &id, message::SECRETS).await
}

/// `GET /warm-pools`: not available yet.
#[utoipa::path(get, path = "/warm-pools", tag = "warm-pools",
    responses((status = 400, description = NOT_AVAILABLE, body = ErrorBody)))]
pub async fn list_warm_pools(_caller: Caller) -> ApiError {
    not_available(message::WARM_POOLS)
}

/// `POST /warm-pools`: not available yet.
#[utoipa::path(post, path = "/warm-pools", tag = "warm-pools",
    responses((status = 400, description = NOT_AVAILABLE, body = ErrorBody)))]
pub async fn create_warm_pool(_caller: Caller) -> ApiError {
    not_available(message::WARM_POOLS)
}

/// `PATCH /warm-pools/{id}`: not available yet.
#[utoipa::path(patch, path = "/warm-pools/{id}", tag = "warm-pools",
    params(("id" = String, Path, description = "Warm pool id")),
    responses((status = 400, description = NOT_AVAILABLE, body = ErrorBody)))]
pub async fn update_warm_pool(_caller: Caller, Path(_id): Path<String>) -> ApiError {
    not_available(message::WARM_POOLS)
}

/// `DELETE /warm-pools/{id}`: not available yet.
#[utoipa::path(delete, path = "/warm-pools/{id}", tag = "warm-pools",
    params(("id" = String, Path, description = "Warm pool id")),
    responses((status = 400, description = NOT_AVAILABLE, body = ErrorBody)))]
pub async fn delete_warm_pool(_caller: Caller, Path(_id): Path<String>) -> ApiError {
    not_available(message::WARM_POOLS)
}

/// `GET /secret`: not available yet.
#[utoipa::path(get, path = "/secret", tag = "secrets",
    responses((status = 400, description = NOT_AVAILABLE, body = ErrorBody)))]
pub async fn list_secrets(_caller: Caller) -> ApiError {
    not_available(message::SECRETS)
}

/// `POST /secret`: not available yet.
#[utoipa::path(post, path = "/secret", tag = "secrets",
    responses((status = 400, description = NOT_AVAILABLE, body = ErrorBody)))]
pub async fn create_secret(_caller: Caller) -> ApiError {
    not_available(message::SECRETS)
}

/// `GET /secret/paginated`: not available yet.
#[utoipa::path(get, path = "/secret/paginated", tag = "secrets",
    responses((status = 400, description = NOT_AVAILABLE, body = ErrorBody)))]
pub async fn list_secrets_paginated(_caller: Caller) -> ApiError {
    not_available(message::SECRETS)
}

/// `GET /secret/{secretId}`: not available yet.
#[utoipa::path(get, path = "/secret/{secretId}", tag = "secrets",
    params(("secretId" = String, Path, description = "Secret id")),
    responses((status = 400, description = NOT_AVAILABLE, body = ErrorBody)))]
pub async fn get_secret(_caller: Caller, Path(_id): Path<String>) -> ApiError {
    not_available(message::SECRETS)
}

/// `PATCH /secret/{secretId}`: not available yet.
#[utoipa::path(patch, path = "/secret/{secretId}", tag = "secrets",
    params(("secretId" = String, Path, description = "Secret id")),
    responses((status = 400, description = NOT_AVAILABLE, body = ErrorBody)))]
pub async fn update_secret(_caller: Caller, Path(_id): Path<String>) -> ApiError {
    not_available(message::SECRETS)
}

/// `DELETE /secret/{secretId}`: not available yet.
#[utoipa::path(delete, path = "/secret/{secretId}", tag = "secrets",
    params(("secretId" = String, Path, description = "Secret id")),
    responses((status = 400, description = NOT_AVAILABLE, body = ErrorBody)))]
pub async fn delete_secret(_caller: Caller, Path(_id): Path<String>) -> ApiError {
    not_available(message::SECRETS)
}
