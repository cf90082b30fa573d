//! `/api-keys` routes: create, list, read and revoke the API keys of the caller's
//! organization.
//!
//! A key's value is shown once, in the response of its creation; the store keeps its SHA-256
//! hash. A revoked key stops working at once: revocation clears the key cache and closes the
//! key's event connections.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use daytona_wire::ErrorBody;
use daytona_wire::orgs::{ApiKeyList, ApiKeyResponse, CreateApiKey};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, Caller, PERMISSIONS};
use crate::error::ApiError;
use crate::json::JsonBody;
use crate::socketio;
use crate::state::AppState;
use crate::store::ApiKeyRecord;

/// Maximum length of an API key name.
const MAX_NAME_LEN: usize = 64;

/// Characters of a key shown in listings.
const SHOWN_PREFIX_LEN: usize = 8;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(current))
        .routes(routes!(get, delete))
        .routes(routes!(delete_for_organization))
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '));
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid API key name {name:?}: use 1 to {MAX_NAME_LEN} letters, digits, spaces, '-', '_' or '.'"
        )))
    }
}

/// Checks the requested permissions: each must be one of Daytona's, and a key that is not the
/// admin key can only pass on permissions it has itself.
fn validate_permissions(caller: &Caller, permissions: &[String]) -> Result<Vec<String>, ApiError> {
    let mut accepted: Vec<String> = Vec::new();
    for permission in permissions {
        if !PERMISSIONS.contains(&permission.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown permission {permission:?}; valid permissions are {}",
                PERMISSIONS.join(", ")
            )));
        }
        if !caller.has_permission(permission) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                format!(
                    "API key {:?} cannot create a key with {permission:?}, a permission it does not have itself",
                    caller.key_name
                ),
            ));
        }
        if !accepted.contains(permission) {
            accepted.push(permission.clone());
        }
    }
    Ok(accepted)
}

/// Parses `expiresAt` and returns it in the store's format; it must be in the future.
fn parse_expiry(expires_at: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(text) = expires_at else {
        return Ok(None);
    };
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        ApiError::bad_request(format!(
            "invalid expiresAt {text:?}: use an RFC 3339 time such as 2030-01-01T00:00:00Z"
        ))
    })?;
    if at <= OffsetDateTime::now_utc() {
        return Err(ApiError::bad_request(format!(
            "invalid expiresAt {text:?}: it is in the past"
        )));
    }
    Ok(Some(daytona_wire::rfc3339(at)))
}

pub(super) fn listing(record: &ApiKeyRecord) -> ApiKeyList {
    ApiKeyList {
        name: record.name.clone(),
        value: format!("{}{}", record.key_prefix, "*".repeat(12)),
        created_at: record.created_at.clone(),
        permissions: granted_permissions(record),
        last_used_at: record.last_used_at.clone(),
        expires_at: record.expires_at.clone(),
        user_id: record.organization_id.clone(),
        organization_id: record.organization_id.clone(),
    }
}

/// Returns the permissions a key has: its own list, or all of them.
fn granted_permissions(record: &ApiKeyRecord) -> Vec<String> {
    match &record.permissions {
        Some(permissions) if !record.is_admin => permissions.clone(),
        _ => PERMISSIONS.iter().map(|p| (*p).to_owned()).collect(),
    }
}

/// `POST /api-keys`: creates a key in the caller's organization.
#[utoipa::path(post, path = "/api-keys", tag = "api-keys", request_body = CreateApiKey,
    responses((status = 201, description = "The new key; its value is shown only here", body = ApiKeyResponse),
        (status = 400, body = ErrorBody),
        (status = 403, description = "The caller lacks `manage:api_keys` or a requested permission", body = ErrorBody),
        (status = 409, description = "The organization has a key of that name", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<CreateApiKey>,
) -> Result<impl IntoResponse, ApiError> {
    let name = request.name.trim();
    validate_name(name)?;
    let permissions = validate_permissions(&caller, &request.permissions)?;
    let expires_at = parse_expiry(request.expires_at.as_deref())?;

    let value = auth::generate_key();
    let record = ApiKeyRecord {
        id: uuid::Uuid::new_v4().to_string(),
        organization_id: caller.organization_id.clone(),
        name: name.to_owned(),
        key_prefix: value.chars().take(SHOWN_PREFIX_LEN).collect(),
        is_admin: false,
        created_at: daytona_wire::now_rfc3339(),
        last_used_at: None,
        revoked_at: None,
        permissions: Some(permissions.clone()),
        expires_at: expires_at.clone(),
    };
    if !state
        .store
        .insert_named_api_key(&record, &auth::hash_key(&value))
        .await?
    {
        return Err(ApiError::conflict(format!(
            "an API key named {name:?} already exists in this organization; choose another name or revoke it first"
        )));
    }
    tracing::info!(organization_id = %record.organization_id, key_name = %record.name, created_by = %caller.key_name, "created an API key");
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyResponse {
            name: record.name,
            value,
            created_at: record.created_at,
            permissions,
            expires_at,
        }),
    ))
}

/// `GET /api-keys`: the unrevoked keys of the caller's organization, values masked.
#[utoipa::path(get, path = "/api-keys", tag = "api-keys",
    responses((status = 200, body = Vec<ApiKeyList>), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ApiKeyList>>, ApiError> {
    let keys = state.store.list_api_keys(&caller.organization_id).await?;
    Ok(Json(keys.iter().map(listing).collect()))
}

/// `GET /api-keys/current`: the key that authenticated this request.
#[utoipa::path(get, path = "/api-keys/current", tag = "api-keys",
    responses((status = 200, body = ApiKeyList), (status = 401, body = ErrorBody)))]
pub async fn current(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ApiKeyList>, ApiError> {
    let record = state
        .store
        .api_key_by_id(&caller.key_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the API key was revoked during the request"))?;
    Ok(Json(listing(&record)))
}

/// `GET /api-keys/{name}`: one key of the caller's organization.
#[utoipa::path(get, path = "/api-keys/{name}", tag = "api-keys",
    params(("name" = String, Path, description = "Name of the API key")),
    responses((status = 200, body = ApiKeyList), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let record = find(&state, &caller.organization_id, &name).await?;
    Ok(Json(listing(&record)))
}

/// `DELETE /api-keys/{name}`: revokes a key of the caller's organization at once.
#[utoipa::path(delete, path = "/api-keys/{name}", tag = "api-keys",
    params(("name" = String, Path, description = "Name of the API key")),
    responses((status = 204, description = "Revoked"),
        (status = 400, description = "The admin key cannot be revoked through the API", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let organization_id = caller.organization_id.clone();
    revoke(&state, &caller, &organization_id, &name).await
}

/// `DELETE /api-keys/{userId}/{name}`: revokes a key of the organization `userId` (this
/// server's users are its organizations). Only the admin key may name another organization.
#[utoipa::path(delete, path = "/api-keys/{userId}/{name}", tag = "api-keys",
    params(("userId" = String, Path, description = "Id of the key's organization"),
        ("name" = String, Path, description = "Name of the API key")),
    responses((status = 204, description = "Revoked"),
        (status = 400, description = "The admin key cannot be revoked through the API", body = ErrorBody),
        (status = 404, description = "No such key, or an organization other than the caller's and the caller is not the admin key", body = ErrorBody)))]
pub async fn delete_for_organization(
    State(state): State<AppState>,
    caller: Caller,
    Path((organization_id, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if organization_id != caller.organization_id && !caller.is_admin {
        return Err(not_found(&name));
    }
    revoke(&state, &caller, &organization_id, &name).await
}

async fn revoke(
    state: &AppState,
    caller: &Caller,
    organization_id: &str,
    name: &str,
) -> Result<StatusCode, ApiError> {
    let record = find(state, organization_id, name).await?;
    if record.is_admin {
        return Err(ApiError::bad_request(
            "the admin API key cannot be revoked through the API; restart the server with another DAYTONA_ADMIN_API_KEY to replace it",
        ));
    }
    state.store.revoke_api_key(&record.id).await?;
    state.keys.clear();
    socketio::disconnect_key(state, &record.id);
    tracing::info!(organization_id, key_name = name, revoked_by = %caller.key_name, "revoked an API key");
    Ok(StatusCode::NO_CONTENT)
}

async fn find(
    state: &AppState,
    organization_id: &str,
    name: &str,
) -> Result<ApiKeyRecord, ApiError> {
    state
        .store
        .api_key_by_name(organization_id, name)
        .await?
        .ok_or_else(|| not_found(name))
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("API key {name:?} not found"))
}
