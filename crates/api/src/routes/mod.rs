//! The HTTP routes of the server.
//!
//! Every API route is registered through [`OpenApiRouter`] with its `#[utoipa::path]`
//! description, so the OpenAPI document at `/api/openapi.json` is generated from the same
//! list that routes requests.

mod keys;
mod metrics;
mod object_storage;
mod organizations;
mod preview;
pub(crate) mod sandboxes;
mod signing;
mod snapshots;
mod ssh_access;
mod toolbox;
mod unavailable;
mod volumes;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use daytona_wire::api::Health;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error;
use crate::state::AppState;

/// Metadata of the API's OpenAPI document; the paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Daytona API",
        description = "Sandboxes for AI-generated code. Authenticate with `Authorization: Bearer <API key>`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

/// Declares the bearer API key scheme that every operation uses.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /api/health`: 200 once the server accepts sandbox creates, 503 before.
#[utoipa::path(get, path = "/health", tag = "health", security(()),
    responses((status = 200, body = Health), (status = 503, body = Health)))]
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

/// The API routes under `/api`, with their OpenAPI description.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .merge(sandboxes::routes())
        .routes(routes!(snapshots::list, snapshots::create))
        .routes(routes!(snapshots::get, snapshots::delete))
        .routes(routes!(snapshots::activate))
        .routes(routes!(snapshots::deactivate))
        .routes(routes!(snapshots::build_logs_url))
        .routes(routes!(snapshots::build_logs))
        .merge(keys::routes())
        .merge(organizations::routes())
        .merge(signing::routes())
        .merge(preview::routes())
        .merge(metrics::routes())
        .merge(volumes::routes())
        .merge(object_storage::routes())
        .merge(ssh_access::routes())
        .merge(unavailable::routes())
}

/// The OpenAPI document of the API, with paths relative to the API URL (`.../api`).
#[cfg(test)]
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, openapi) = api_routes().split_for_parts();
    openapi
}

/// Builds the router of the whole server: the API under `/api` and the toolbox proxy under
/// `/toolbox`.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = api_routes().split_for_parts();
    let openapi_json = openapi
        .to_json()
        .expect("the generated OpenAPI document always serializes");
    let api = api.route(
        "/openapi.json",
        get(move || async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                openapi_json,
            )
        }),
    );

    Router::new()
        .nest("/api", api)
        .route(
            "/toolbox/{id}/{*path}",
            any(toolbox::forward).layer(axum::middleware::from_fn_with_state(
                state.clone(),
                crate::lifecycle::track_toolbox_request,
            )),
        )
        .merge(crate::registry::routes())
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn(error::complete_error_bodies))
        .layer(crate::socketio::layer(&state))
        .with_state(state)
}
