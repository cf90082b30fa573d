//! SSH access: tokens with which `ssh -p <port> <token>@<host>` opens a shell in a sandbox
//! through the SSH gateway.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use daytona_wire::ErrorBody;
use daytona_wire::api::Sandbox;
use daytona_wire::ssh::{SshAccess, SshAccessValidation};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::organizations::owned_sandbox;
use crate::auth::{Caller, ORGANIZATION_HEADER, hash_key};
use crate::dto;
use crate::error::ApiError;
use crate::ssh_access;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_ssh_access, revoke_ssh_access))
        .routes(routes!(validate_ssh_access))
}

/// Query parameters are read as text, so that a bad value gets a 400 that names it.
#[derive(Debug, Deserialize)]
struct CreateQuery {
    #[serde(rename = "expiresInMinutes")]
    expires_in_minutes: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// `POST /sandbox/{id}/ssh-access`: creates a token for the sandbox, valid for
/// `expiresInMinutes` (1 to 43200, 60 by default).
#[utoipa::path(post, path = "/sandbox/{id}/ssh-access", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name"),
        ("expiresInMinutes" = Option<i64>, Query, description = "Lifetime of the token in minutes, 1 to 43200; 60 by default")),
    responses((status = 200, body = SshAccess), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn create_ssh_access(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<CreateQuery>,
) -> Result<Json<SshAccess>, ApiError> {
    let minutes = ssh_access::parse_expires_in_minutes(query.expires_in_minutes.as_deref())
        .map_err(ApiError::bad_request)?;
    let sandbox = owned_sandbox(&state, &caller, &id).await?;

    let token = ssh_access::generate_token();
    let record = ssh_access::new_record(
        &sandbox.id,
        &sandbox.organization_id,
        &token,
        minutes,
        OffsetDateTime::now_utc(),
    );
    state.store.insert_ssh_access(&record).await?;
    tracing::info!(sandbox_id = %sandbox.id, ssh_access_id = %record.id, expires_at = %record.expires_at, "SSH access created");

    let gateway = &state.config.ssh_gateway;
    Ok(Json(SshAccess {
        id: record.id,
        sandbox_id: record.sandbox_id,
        ssh_command: ssh_access::ssh_command(&gateway.public_host, gateway.listen.port(), &token),
        token,
        expires_at: record.expires_at,
        created_at: record.created_at,
        updated_at: record.updated_at,
    }))
}

/// `DELETE /sandbox/{id}/ssh-access?token=T`: revokes the token, or every token of the
/// sandbox when none is given. SSH sessions opened with a revoked token end within seconds.
#[utoipa::path(delete, path = "/sandbox/{id}/ssh-access", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name"),
        ("token" = Option<String>, Query, description = "The token to revoke; all of the sandbox's when left out")),
    responses((status = 200, description = "The sandbox, which the generated clients read", body = Sandbox),
        (status = 404, body = ErrorBody)))]
async fn revoke_ssh_access(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Json<Sandbox>, ApiError> {
    let sandbox = owned_sandbox(&state, &caller, &id).await?;
    let token = query
        .token
        .filter(|token| !token.is_empty())
        .or_else(|| token_in_organization_header(&headers));
    let token_hash = token.as_deref().map(hash_key);
    let revoked = state
        .store
        .revoke_ssh_access(&sandbox.id, token_hash.as_deref())
        .await?;
    tracing::info!(sandbox_id = %sandbox.id, revoked, "SSH access revoked");
    Ok(Json(dto::sandbox(&state, &sandbox)))
}

/// Returns the token that the Python SDK (0.226.1) sends in place of an organization id.
///
/// NOTE: its `revoke_ssh_access(token)` passes the token as the generated client's second
/// positional argument, which is the `X-Daytona-Organization-ID` header, so no `token` query
/// parameter arrives. Without this, the call would revoke every token of the sandbox. The
/// header means nothing else on this route, and only a value shaped like a token is taken.
fn token_in_organization_header(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(ORGANIZATION_HEADER)?.to_str().ok()?;
    ssh_access::is_token_shaped(value).then(|| value.to_owned())
}

/// `GET /sandbox/ssh-access/validate?token=T`: whether the token is valid (known, neither
/// expired nor revoked, of the caller's organization) and its sandbox.
#[utoipa::path(get, path = "/sandbox/ssh-access/validate", tag = "sandbox",
    params(("token" = String, Query, description = "The token to check")),
    responses((status = 200, body = SshAccessValidation), (status = 400, body = ErrorBody)))]
async fn validate_ssh_access(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<TokenQuery>,
) -> Result<Json<SshAccessValidation>, ApiError> {
    let token = query
        .token
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "missing query parameter token: pass the SSH access token to check",
            )
        })?;
    let record = ssh_access::find_usable(&state.store, &token)
        .await?
        .filter(|record| caller.is_admin || record.organization_id == caller.organization_id);
    Ok(Json(match record {
        Some(record) => SshAccessValidation {
            valid: true,
            sandbox_id: record.sandbox_id,
        },
        None => SshAccessValidation {
            valid: false,
            sandbox_id: String::new(),
        },
    }))
}
