//! Sessions: long-lived shells that run commands one after another or side by side, with
//! logs kept for later reads and streaming.

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use super::state::Toolbox;

/// State of this area, shared by its routes.
#[derive(Debug, Default)]
pub struct Sessions {}

impl Sessions {
    pub fn new() -> Self {
        Self::default()
    }
}

pub fn routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::new()
}
