//! The HTTP routes of the server.

mod sandboxes;
mod snapshots;
mod toolbox;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use daytona_wire::api::Health;

use crate::error;
use crate::state::AppState;

/// `GET /api/health`: 200 once the server accepts sandbox creates, 503 before.
async fn health(State(state): State<AppState>) -> Response {
    if state.is_ready() {
        Json(Health {
            status: "ok".to_owned(),
        })
        .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "preparing the default snapshot".to_owned(),
            }),
        )
            .into_response()
    }
}

/// Builds the router of the whole server: the API under `/api` and the toolbox proxy under
/// `/toolbox`.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .route("/sandbox", post(sandboxes::create).get(sandboxes::list))
        .route(
            "/sandbox/{id}",
            get(sandboxes::get).delete(sandboxes::delete),
        )
        .route("/sandbox/{id}/start", post(sandboxes::start))
        .route("/sandbox/{id}/stop", post(sandboxes::stop))
        .route(
            "/sandbox/{id}/toolbox-proxy-url",
            get(sandboxes::toolbox_proxy_url),
        )
        .route("/snapshots", get(snapshots::list))
        .route("/snapshots/{id}", get(snapshots::get));

    Router::new()
        .nest("/api", api)
        .route("/toolbox/{id}/{*path}", any(toolbox::forward))
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn(error::complete_error_bodies))
        .with_state(state)
}
