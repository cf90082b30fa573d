//! `GET /version`, `/user-home-dir` and `/work-dir`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use daytona_wire::toolbox::{DirResponse, VersionResponse};

use super::state::Toolbox;

pub fn routes() -> Router<Arc<Toolbox>> {
    Router::new()
        .route("/version", get(version))
        .route("/user-home-dir", get(user_home_dir))
        .route("/work-dir", get(work_dir))
}

async fn version() -> Json<VersionResponse> {
    Json(VersionResponse {
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

async fn user_home_dir(State(toolbox): State<Arc<Toolbox>>) -> Json<DirResponse> {
    Json(DirResponse {
        dir: toolbox.home.display().to_string(),
    })
}

async fn work_dir(State(toolbox): State<Arc<Toolbox>>) -> Json<DirResponse> {
    Json(DirResponse {
        dir: toolbox.work_dir.display().to_string(),
    })
}
