//! Sandbox egress policies: their checks at create and `POST /sandbox/{id}/network-settings`.

use axum::Json;
use axum::extract::{Path, State};
use daytona_runner::network::EgressPolicy;
use daytona_wire::ErrorBody;
use daytona_wire::api::Sandbox;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::find;
use crate::auth::Caller;
use crate::dto;
use crate::error::ApiError;
use crate::json::JsonBody;
use crate::state::AppState;
use crate::store::SandboxRecord;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(update_network_settings))
}

/// Body of `POST /sandbox/{id}/network-settings`; an absent field keeps its value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateNetworkSettings {
    pub network_block_all: Option<bool>,
    /// Comma-separated IPv4 CIDRs; an empty string clears the list.
    pub network_allow_list: Option<String>,
    /// Comma-separated domains; `example.com` allows it and every name below it,
    /// `*.example.com` only the names below it. An empty string clears the list.
    pub domain_allow_list: Option<String>,
}

/// Parses Daytona's three network fields, or rejects them with 400.
pub fn egress_policy(
    block_all: bool,
    allow_list: Option<&str>,
    domain_list: Option<&str>,
) -> Result<EgressPolicy, ApiError> {
    EgressPolicy::parse(block_all, allow_list, domain_list).map_err(ApiError::bad_request)
}

/// The policy a stored sandbox asks for. Its fields were checked when they were stored;
/// should they not parse any more, the sandbox gets no egress rather than all of it.
pub fn record_policy(record: &SandboxRecord) -> EgressPolicy {
    EgressPolicy::parse(
        record.network_block_all,
        record.network_allow_list.as_deref(),
        record.domain_allow_list.as_deref(),
    )
    .unwrap_or_else(|error| {
        tracing::warn!(sandbox_id = %record.id, error, "stored network settings do not parse; blocking all egress");
        EgressPolicy::deny()
    })
}

/// Applies a settings change as the SDK documents it: an allow list implies not blocking
/// all, and `networkBlockAll: false` alone restores open egress, clearing both lists.
fn apply_settings(record: &mut SandboxRecord, body: UpdateNetworkSettings) {
    let lists_given = body.network_allow_list.is_some() || body.domain_allow_list.is_some();
    match body.network_block_all {
        Some(true) => record.network_block_all = true,
        Some(false) if !lists_given => {
            record.network_block_all = false;
            record.network_allow_list = None;
            record.domain_allow_list = None;
        }
        _ if lists_given => record.network_block_all = false,
        _ => {}
    }
    if let Some(list) = body.network_allow_list {
        record.network_allow_list = Some(list);
    }
    if let Some(list) = body.domain_allow_list {
        record.domain_allow_list = Some(list);
    }
}

/// `POST /sandbox/{idOrName}/network-settings`: changes the egress policy, at once when the
/// sandbox runs.
#[utoipa::path(post, path = "/sandbox/{id}/network-settings", tag = "sandbox",
    request_body = UpdateNetworkSettings,
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "The sandbox with its new network settings", body = Sandbox),
        (status = 400, description = "An invalid CIDR or domain", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn update_network_settings(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
    JsonBody(body): JsonBody<UpdateNetworkSettings>,
) -> Result<Json<Sandbox>, ApiError> {
    let mut record = find(&state, &caller, &id_or_name).await?;
    apply_settings(&mut record, body);
    let policy = egress_policy(
        record.network_block_all,
        record.network_allow_list.as_deref(),
        record.domain_allow_list.as_deref(),
    )?;

    // The rules change first: a sandbox must not keep egress that the stored record no
    // longer grants.
    if state.runner.contains(&record.id) {
        state
            .runner
            .set_egress_policy(&record.id, policy)
            .await
            .map_err(|error| {
                ApiError::internal(
                    format!(
                        "failed to change the network settings of sandbox {}",
                        record.id
                    ),
                    error,
                )
            })?;
    }
    record.updated_at = daytona_wire::now_rfc3339();
    state.store.update_sandbox(&record).await?;
    tracing::info!(sandbox_id = %record.id, "changed network settings");
    Ok(Json(dto::sandbox(&state, &record)))
}
