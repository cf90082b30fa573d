//! `/organizations` routes: create, list, read and delete organizations, their limits and
//! usage.
//!
//! Only the admin key creates and deletes organizations and sets limits (403 for any other
//! key). Every key reads its own organization; another organization is 404 to it, as if it
//! did not exist.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use daytona_wire::ErrorBody;
use daytona_wire::orgs::{
    CreateOrganization, Organization, OrganizationLimits as WireLimits, OrganizationUsageOverview,
    RegionUsageOverview, UpdateOrganizationQuota,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::config::{DEFAULT_ORGANIZATION, OrganizationLimits, TARGET};
use crate::error::ApiError;
use crate::json::JsonBody;
use crate::quota::{effective_limits, merge_limits};
use crate::socketio;
use crate::state::AppState;
use crate::store::{OrganizationRecord, STATES_HOLDING_RESOURCES, SandboxRecord};

/// Maximum length of an organization name.
const MAX_NAME_LEN: usize = 64;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, delete))
        .routes(routes!(usage))
        .routes(routes!(update_quota))
        .routes(routes!(sandbox_organization))
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid organization name {name:?}: use 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.'"
        )))
    }
}

/// Limits as the wire reports them: `null` for no limit.
fn wire_limits(limits: &OrganizationLimits) -> WireLimits {
    let limit = |value: i64| (value > 0).then_some(value);
    WireLimits {
        max_sandboxes: limit(limits.max_sandboxes),
        total_cpu: limit(limits.total_cpu),
        total_memory: limit(limits.total_memory),
    }
}

async fn organization(
    state: &AppState,
    record: &OrganizationRecord,
) -> Result<Organization, ApiError> {
    let limits = effective_limits(state, &record.id).await?;
    let sandbox_limits = &state.config.limits;
    Ok(Organization {
        id: record.id.clone(),
        name: record.name.clone(),
        created_by: record.id.clone(),
        personal: false,
        created_at: record.created_at.clone(),
        updated_at: record.updated_at.clone(),
        suspended: false,
        suspended_at: record.created_at.clone(),
        suspension_reason: String::new(),
        suspended_until: record.created_at.clone(),
        suspension_cleanup_grace_period_hours: 0,
        max_cpu_per_sandbox: sandbox_limits.max_cpu,
        max_memory_per_sandbox: sandbox_limits.max_memory,
        max_disk_per_sandbox: sandbox_limits.max_disk,
        secret_quota: 0,
        max_secrets_per_sandbox: 0,
        snapshot_deactivation_timeout_minutes: 0,
        default_queue_timeout: None,
        sandbox_limited_network_egress: false,
        preview_warning_enabled: false,
        sso_enabled: false,
        scim_enabled: false,
        default_region_id: Some(TARGET.to_owned()),
        authenticated_rate_limit: None,
        sandbox_create_rate_limit: None,
        sandbox_lifecycle_rate_limit: None,
        experimental_config: BTreeMap::new(),
        otel_config: None,
        authenticated_rate_limit_ttl_seconds: None,
        sandbox_create_rate_limit_ttl_seconds: None,
        sandbox_lifecycle_rate_limit_ttl_seconds: None,
        limits: wire_limits(&limits),
    })
}

/// Finds a sandbox of the caller's organization by id or name; a sandbox of another
/// organization is 404, as if it did not exist.
pub(super) async fn owned_sandbox(
    state: &AppState,
    caller: &Caller,
    id_or_name: &str,
) -> Result<SandboxRecord, ApiError> {
    state
        .store
        .sandbox_by_id_or_name(&caller.organization_id, id_or_name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("sandbox {id_or_name:?} not found")))
}

/// Finds an organization the caller may see: any for the admin key, else only its own.
async fn visible(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<OrganizationRecord, ApiError> {
    let not_found = || ApiError::not_found(format!("organization {id:?} not found"));
    if !caller.is_admin && id != caller.organization_id {
        return Err(not_found());
    }
    state
        .store
        .organization_by_id(id)
        .await?
        .ok_or_else(not_found)
}

/// `POST /organizations`: creates an organization (admin key only). Create keys for it with
/// `POST /api-keys` and the header `X-Daytona-Organization-ID: <id>`.
#[utoipa::path(post, path = "/organizations", tag = "organizations", request_body = CreateOrganization,
    responses((status = 201, body = Organization),
        (status = 400, body = ErrorBody),
        (status = 403, description = "Only the admin key creates organizations", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<CreateOrganization>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin("create organizations")?;
    let name = request.name.trim();
    validate_name(name)?;
    let Some(record) = state.store.create_organization(name).await? else {
        return Err(ApiError::conflict(format!(
            "an organization named {name:?} already exists; choose another name"
        )));
    };
    tracing::info!(organization_id = %record.id, name, "created an organization");
    Ok((
        StatusCode::CREATED,
        Json(organization(&state, &record).await?),
    ))
}

/// `GET /organizations`: every organization for the admin key, the caller's own otherwise.
#[utoipa::path(get, path = "/organizations", tag = "organizations",
    responses((status = 200, body = Vec<Organization>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Organization>>, ApiError> {
    let records = if caller.is_admin {
        state.store.list_organizations().await?
    } else {
        state
            .store
            .organization_by_id(&caller.organization_id)
            .await?
            .into_iter()
            .collect()
    };
    let mut organizations = Vec::with_capacity(records.len());
    for record in &records {
        organizations.push(organization(&state, record).await?);
    }
    Ok(Json(organizations))
}

/// `GET /organizations/{organizationId}`.
#[utoipa::path(get, path = "/organizations/{organizationId}", tag = "organizations",
    params(("organizationId" = String, Path, description = "Organization id")),
    responses((status = 200, body = Organization), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Organization>, ApiError> {
    let record = visible(&state, &caller, &id).await?;
    Ok(Json(organization(&state, &record).await?))
}

/// `DELETE /organizations/{organizationId}`: deletes an organization and its API keys (admin
/// key only). Its sandboxes must be deleted first; the default organization stays.
#[utoipa::path(delete, path = "/organizations/{organizationId}", tag = "organizations",
    params(("organizationId" = String, Path, description = "Organization id")),
    responses((status = 204, description = "Deleted"),
        (status = 400, description = "The default organization cannot be deleted", body = ErrorBody),
        (status = 403, description = "Only the admin key deletes organizations", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The organization still has sandboxes", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin("delete organizations")?;
    let record = visible(&state, &caller, &id).await?;
    if record.name == DEFAULT_ORGANIZATION {
        return Err(ApiError::bad_request(
            "the default organization, which the admin key belongs to, cannot be deleted",
        ));
    }
    if !state.store.delete_organization(&record.id).await? {
        return Err(ApiError::conflict(format!(
            "organization {} still has sandboxes; delete them first",
            record.id
        )));
    }
    state.keys.clear();
    socketio::disconnect_organization(&state, &record.id);
    tracing::info!(organization_id = %record.id, name = %record.name, "deleted an organization");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /organizations/{organizationId}/usage`: what the organization's sandboxes hold now,
/// against its limits. Creates and starts in progress count.
#[utoipa::path(get, path = "/organizations/{organizationId}/usage", tag = "organizations",
    params(("organizationId" = String, Path, description = "Organization id")),
    responses((status = 200, body = OrganizationUsageOverview), (status = 404, body = ErrorBody)))]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<OrganizationUsageOverview>, ApiError> {
    let record = visible(&state, &caller, &id).await?;
    let limits = effective_limits(&state, &record.id).await?;
    let running = state
        .store
        .organization_usage(&record.id, &STATES_HOLDING_RESOURCES)
        .await?;
    let pending = state.quotas.pending(&record.id);
    let sandbox_limits = &state.config.limits;
    Ok(Json(OrganizationUsageOverview {
        region_usage: vec![RegionUsageOverview {
            region_id: TARGET.to_owned(),
            sandbox_class: "container".to_owned(),
            total_cpu_quota: limits.total_cpu,
            current_cpu_usage: running.cpu + pending.cpu,
            total_memory_quota: limits.total_memory,
            current_memory_usage: running.memory + pending.memory,
            total_disk_quota: 0,
            current_disk_usage: 0,
            total_gpu_quota: 0,
            current_gpu_usage: 0,
            max_cpu_per_sandbox: Some(sandbox_limits.max_cpu),
            max_memory_per_sandbox: Some(sandbox_limits.max_memory),
            max_disk_per_sandbox: Some(sandbox_limits.max_disk),
            max_disk_per_non_ephemeral_sandbox: Some(sandbox_limits.max_disk),
            max_cpu_per_gpu: None,
            max_memory_per_gpu: None,
            max_disk_per_gpu: None,
        }],
        total_snapshot_quota: 0,
        current_snapshot_usage: 0,
        total_volume_quota: 0,
        current_volume_usage: 0,
        current_sandboxes: running.sandboxes + pending.sandboxes,
        limits: wire_limits(&limits),
    }))
}

/// `PATCH /organizations/{organizationId}/quota`: sets the organization's own limits (admin key
/// only). A field left out keeps its value, `null` returns to the server's default, and 0
/// removes the limit. Sandboxes that run already are not stopped by a lower limit; new
/// creates and starts are refused until the organization is below it.
#[utoipa::path(patch, path = "/organizations/{organizationId}/quota", tag = "organizations",
    request_body = UpdateOrganizationQuota,
    params(("organizationId" = String, Path, description = "Organization id")),
    responses((status = 200, description = "The organization with its limits in force", body = Organization),
        (status = 400, body = ErrorBody),
        (status = 403, description = "Only the admin key sets limits", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn update_quota(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<UpdateOrganizationQuota>,
) -> Result<Json<Organization>, ApiError> {
    caller.require_admin("set organization limits")?;
    let record = visible(&state, &caller, &id).await?;
    let mut own = state.store.organization_limits(&record.id).await?;
    for (name, requested, slot) in [
        (
            "maxSandboxes",
            request.max_sandboxes,
            &mut own.max_sandboxes,
        ),
        ("totalCpu", request.total_cpu, &mut own.total_cpu),
        ("totalMemory", request.total_memory, &mut own.total_memory),
    ] {
        let Some(value) = requested else {
            continue;
        };
        if value.is_some_and(|value| value < 0) {
            return Err(ApiError::bad_request(format!(
                "invalid {name} {}: use 0 for no limit, a positive number, or null for the server's default",
                value.unwrap_or_default()
            )));
        }
        *slot = value;
    }
    state
        .store
        .set_organization_limits(&record.id, &own)
        .await?;
    let limits = merge_limits(&state.config.organization_limits, &own);
    tracing::info!(organization_id = %record.id, max_sandboxes = limits.max_sandboxes, total_cpu = limits.total_cpu, total_memory = limits.total_memory, "set organization limits");
    let record = visible(&state, &caller, &id).await?;
    Ok(Json(organization(&state, &record).await?))
}

/// `GET /sandbox/{id}/organization`: the organization of a sandbox of the caller's
/// organization.
#[utoipa::path(get, path = "/sandbox/{id}/organization", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Organization), (status = 404, body = ErrorBody)))]
pub async fn sandbox_organization(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Json<Organization>, ApiError> {
    let sandbox = owned_sandbox(&state, &caller, &id_or_name).await?;
    let record = visible(&state, &caller, &sandbox.organization_id).await?;
    Ok(Json(organization(&state, &record).await?))
}
