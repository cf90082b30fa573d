//! `POST /env`: changes the environment of processes started afterwards.

use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::Json;
use axum::extract::State;
use daytona_wire::ErrorBody;
use daytona_wire::toolbox::UpdateEnvRequest;

use super::error::{ApiError, JsonBody};
use super::state::{Toolbox, check_env_var};

pub fn routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::new().routes(routes!(update_env))
}

/// Applies `unset`, then `unsetValuePrefix`, then `set` to the workload environment, and
/// returns the resulting environment. The change is all or nothing: an invalid name rejects the
/// whole request.
#[utoipa::path(post, path = "/env", tag = "process", request_body = UpdateEnvRequest,
    responses((status = 200, description = "The environment of later processes", body = BTreeMap<String, String>),
        (status = 400, body = ErrorBody)))]
async fn update_env(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<UpdateEnvRequest>,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    let set = request.set.unwrap_or_default();
    for (name, value) in &set {
        check_env_var(name, value)?;
    }

    let mut env = toolbox.workload_env.write().expect("workload env lock");
    for name in request.unset.iter().flatten() {
        env.remove(name);
    }
    if let Some(prefix) = request
        .unset_value_prefix
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        env.retain(|name, value| set.contains_key(name) || !value.starts_with(prefix));
    }
    env.extend(set);

    // Keep the change across a restart of the toolbox server.
    let mut config = toolbox.config.lock().expect("config lock");
    let (config, store) = &mut *config;
    config.workload_env = Some(env.clone());
    if let Some(store) = store
        && let Err(error) = store.save(config)
    {
        tracing::warn!(%error, "failed to keep the changed environment for a restart of the toolbox server");
    }
    Ok(Json(env.clone()))
}
