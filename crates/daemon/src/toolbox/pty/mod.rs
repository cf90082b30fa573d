//! Pseudo-terminal sessions, reached over WebSocket.

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use super::state::Toolbox;

/// State of this area, shared by its routes.
#[derive(Debug, Default)]
pub struct Ptys {}

impl Ptys {
    pub fn new() -> Self {
        Self::default()
    }
}

pub fn routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::new()
}
