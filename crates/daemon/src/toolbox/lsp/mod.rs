//! Language servers (Python and TypeScript) behind the LSP routes.

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use super::state::Toolbox;

/// State of this area, shared by its routes.
#[derive(Debug, Default)]
pub struct LspServers {}

impl LspServers {
    pub fn new() -> Self {
        Self::default()
    }
}

pub fn routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::new()
}
