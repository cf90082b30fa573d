//! `GET /version`, `/user-home-dir` and `/work-dir`.

use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::Json;
use axum::extract::State;
use daytona_wire::toolbox::{DirResponse, VersionResponse};

use super::state::Toolbox;

pub fn routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::new()
        .routes(routes!(version))
        .routes(routes!(user_home_dir))
        .routes(routes!(work_dir))
}

#[utoipa::path(get, path = "/version", tag = "info", responses((status = 200, body = VersionResponse)))]
async fn version() -> Json<VersionResponse> {
    Json(VersionResponse {
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

#[utoipa::path(get, path = "/user-home-dir", tag = "info", responses((status = 200, body = DirResponse)))]
async fn user_home_dir(State(toolbox): State<Arc<Toolbox>>) -> Json<DirResponse> {
    Json(DirResponse {
        dir: toolbox.home.display().to_string(),
    })
}

#[utoipa::path(get, path = "/work-dir", tag = "info", responses((status = 200, body = DirResponse)))]
async fn work_dir(State(toolbox): State<Arc<Toolbox>>) -> Json<DirResponse> {
    Json(DirResponse {
        dir: toolbox.work_dir.display().to_string(),
    })
}
