//! System information of the sandbox, such as its resource use.

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use super::state::Toolbox;

pub fn routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::new()
}
