//! The toolbox proxy route: `/toolbox/{sandboxId}/{path}`.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use daytona_proxy::ProxyError;
use daytona_wire::api::SandboxState;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Forwards a toolbox request to the sandbox's daemon, after checking that the caller's
/// organization owns the sandbox and that it is started.
pub async fn forward(
    State(state): State<AppState>,
    caller: Caller,
    Path((sandbox_id, _rest)): Path<(String, String)>,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let Some(route) = state
        .route(&sandbox_id)
        .filter(|route| route.organization_id == caller.organization_id)
    else {
        return Err(not_routable(&state, &caller, &sandbox_id).await);
    };

    let prefix_len = "/toolbox/".len() + sandbox_id.len();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let rest = path_and_query.get(prefix_len..).unwrap_or("/");
    let rest = if rest.starts_with('/') {
        rest.to_owned()
    } else {
        format!("/{rest}")
    };

    const STRIPPED: [HeaderName; 1] = [AUTHORIZATION];
    match daytona_proxy::forward(&route.socket, request, &rest, &STRIPPED).await {
        Ok(response) => Ok(response.into_response()),
        Err(ProxyError::Unreachable { source }) => {
            tracing::warn!(sandbox_id, error = %source, "toolbox socket unreachable");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                format!(
                    "the toolbox of sandbox {sandbox_id} is not reachable; the sandbox may have stopped"
                ),
            ))
        }
        Err(error) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "BAD_GATEWAY",
            format!("the toolbox of sandbox {sandbox_id} failed to answer: {error}"),
        )),
    }
}

/// Explains why a sandbox has no toolbox route: unknown (404) or not started (400).
async fn not_routable(state: &AppState, caller: &Caller, sandbox_id: &str) -> ApiError {
    match state
        .store
        .sandbox_by_id_or_name(&caller.organization_id, sandbox_id)
        .await
    {
        Ok(Some(record)) if record.state != SandboxState::Started => {
            ApiError::bad_request(format!(
                "sandbox {sandbox_id} is {}; start it to use its toolbox",
                record.state
            ))
        }
        Ok(Some(_)) => ApiError::unavailable(format!(
            "sandbox {sandbox_id} is starting; retry in a moment"
        )),
        Ok(None) => ApiError::not_found(format!("sandbox {sandbox_id:?} not found")),
        Err(error) => error.into(),
    }
}
