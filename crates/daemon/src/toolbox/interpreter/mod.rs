//! The stateful code interpreter: contexts that keep their state between runs.

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use super::state::Toolbox;

/// State of this area, shared by its routes.
#[derive(Debug, Default)]
pub struct Interpreters {}

impl Interpreters {
    pub fn new() -> Self {
        Self::default()
    }
}

pub fn routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::new()
}
