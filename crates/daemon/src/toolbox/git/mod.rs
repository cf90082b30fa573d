//! Git operations on repositories in the sandbox.

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use super::state::Toolbox;

pub fn routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::new()
}
