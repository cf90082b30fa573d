//! Preview URL routes: `GET /sandbox/{id}/ports/{port}/preview-url` and the signed preview
//! URLs. The URLs lead to the preview proxy's listener (see [`crate::preview`]).

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use daytona_wire::ErrorBody;
use daytona_wire::api::{PortPreviewUrl, SignedPortPreviewUrl};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::organizations::owned_sandbox;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::preview;
use crate::state::AppState;
use crate::store::SignedPreviewToken;

/// Lifetime of a signed preview URL when the request names none, in seconds.
const DEFAULT_SIGNED_SECONDS: i64 = 60;

/// Maximum lifetime of a signed preview URL: 24 hours, as in Daytona.
const MAX_SIGNED_SECONDS: i64 = 24 * 60 * 60;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(preview_url))
        .routes(routes!(signed_preview_url))
        .routes(routes!(expire_signed_preview_url))
}

/// Parses a port of a path: 1 to 65535.
fn parse_port(text: &str) -> Result<u16, ApiError> {
    text.parse::<u16>()
        .ok()
        .filter(|port| *port > 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid port {text:?}: use a whole number from 1 to 65535"
            ))
        })
}

/// Parses `expiresInSeconds` from a query: 1 s to 24 h, 60 s when absent.
fn parse_expiry(query: Option<&str>) -> Result<i64, ApiError> {
    let value = query.and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "expiresInSeconds")
            .map(|(_, value)| value.into_owned())
    });
    let Some(text) = value else {
        return Ok(DEFAULT_SIGNED_SECONDS);
    };
    text.parse::<i64>()
        .ok()
        .filter(|seconds| (1..=MAX_SIGNED_SECONDS).contains(seconds))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid expiresInSeconds {text:?}: use a whole number of seconds from 1 to {MAX_SIGNED_SECONDS} (24 hours)"
            ))
        })
}

/// `GET /sandbox/{id}/ports/{port}/preview-url`: the port's preview URL and the sandbox's
/// preview token, which private sandboxes need.
#[utoipa::path(get, path = "/sandbox/{id}/ports/{port}/preview-url", tag = "preview",
    params(("id" = String, Path, description = "Sandbox id or name"), ("port" = u16, Path, description = "Port inside the sandbox")),
    responses((status = 200, body = PortPreviewUrl), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn preview_url(
    State(state): State<AppState>,
    caller: Caller,
    Path((id_or_name, port)): Path<(String, String)>,
) -> Result<Json<PortPreviewUrl>, ApiError> {
    let port = parse_port(&port)?;
    let record = owned_sandbox(&state, &caller, &id_or_name).await?;
    let token = state
        .signing
        .preview_token(&state.config.data_dir, &record.id)
        .map_err(|error| ApiError::internal("failed to derive the preview token", error))?;
    Ok(Json(PortPreviewUrl {
        url: preview::url(&state.config.preview, &record.id, port),
        sandbox_id: record.id,
        token,
    }))
}

/// `GET /sandbox/{id}/ports/{port}/signed-preview-url?expiresInSeconds=N`: a URL that opens
/// the port without any other token until it expires (1 s to 24 h, 60 s by default) or is
/// expired through the API.
#[utoipa::path(get, path = "/sandbox/{id}/ports/{port}/signed-preview-url", tag = "preview",
    params(("id" = String, Path, description = "Sandbox id or name"), ("port" = u16, Path, description = "Port inside the sandbox"),
        ("expiresInSeconds" = Option<i64>, Query, description = "Seconds the URL works, 1 to 86400; 60 by default")),
    responses((status = 200, body = SignedPortPreviewUrl), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn signed_preview_url(
    State(state): State<AppState>,
    caller: Caller,
    Path((id_or_name, port)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<SignedPortPreviewUrl>, ApiError> {
    let port = parse_port(&port)?;
    let seconds = parse_expiry(query.as_deref())?;
    let record = owned_sandbox(&state, &caller, &id_or_name).await?;

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let signed = SignedPreviewToken {
        token: preview::new_signed_token(),
        sandbox_id: record.id.clone(),
        port,
        expires_at: now + seconds,
    };
    state
        .store
        .insert_signed_preview_token(&signed, now)
        .await?;
    Ok(Json(SignedPortPreviewUrl {
        url: preview::url(&state.config.preview, &signed.token, port),
        sandbox_id: record.id,
        port,
        token: signed.token,
    }))
}

/// `POST /sandbox/{id}/ports/{port}/signed-preview-url/{token}/expire`: ends a signed preview
/// URL now.
#[utoipa::path(post, path = "/sandbox/{id}/ports/{port}/signed-preview-url/{token}/expire", tag = "preview",
    params(("id" = String, Path, description = "Sandbox id or name"), ("port" = u16, Path, description = "Port inside the sandbox"),
        ("token" = String, Path, description = "Token of the signed preview URL")),
    responses((status = 200, description = "The URL no longer works"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn expire_signed_preview_url(
    State(state): State<AppState>,
    caller: Caller,
    Path((id_or_name, port, token)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let port = parse_port(&port)?;
    let record = owned_sandbox(&state, &caller, &id_or_name).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if state
        .store
        .expire_signed_preview_token(&record.id, port, &token, now)
        .await?
    {
        // A cached decision may rest on the token.
        state.previews.forget_access(&record.id);
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::not_found(format!(
            "no signed preview URL with token {token:?} for port {port} of sandbox {}",
            record.id
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_bounds() {
        assert_eq!(parse_expiry(None).unwrap(), 60);
        assert_eq!(parse_expiry(Some("expiresInSeconds=1")).unwrap(), 1);
        assert_eq!(
            parse_expiry(Some("expiresInSeconds=86400")).unwrap(),
            86_400
        );
        for bad in ["0", "86401", "-5", "x", ""] {
            assert!(
                parse_expiry(Some(&format!("expiresInSeconds={bad}"))).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn port_bounds() {
        assert_eq!(parse_port("1").unwrap(), 1);
        assert_eq!(parse_port("65535").unwrap(), 65535);
        for bad in ["0", "65536", "-1", "http"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }
}
