//! Organizations, API keys and organization limits (`/organizations`, `/api-keys`).
//!
//! This server has no user accounts: each organization acts as one user, so the `userId` of an
//! API key is its organization's id.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// Body of `POST /api-keys`. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateApiKey {
    pub name: String,
    /// Organization resource permissions of the new key, such as `write:sandboxes`.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// RFC 3339 time after which the key stops working; absent for a key that never expires.
    pub expires_at: Option<String>,
}

/// Response of `POST /api-keys` (201): the only time the key's value is shown.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyResponse {
    pub name: String,
    /// The key itself, to send as `Authorization: Bearer <value>`.
    pub value: String,
    pub created_at: String,
    pub permissions: Vec<String>,
    /// Always present, `null` for a key that never expires.
    pub expires_at: Option<String>,
}

/// An API key as `GET /api-keys` lists it, with its value masked.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyList {
    pub name: String,
    /// The key's first characters followed by asterisks.
    pub value: String,
    pub created_at: String,
    pub permissions: Vec<String>,
    /// Always present, `null` until the key is first used.
    pub last_used_at: Option<String>,
    /// Always present, `null` for a key that never expires.
    pub expires_at: Option<String>,
    /// The organization's id: this server has no users apart from organizations.
    pub user_id: String,
    pub organization_id: String,
}

/// Body of `POST /organizations`. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateOrganization {
    pub name: String,
    /// Accepted and ignored: this server has one region.
    pub default_region_id: Option<String>,
}

/// An organization, in the shape of Daytona's `Organization` with this server's limits added.
///
/// The published Python client requires `suspendedAt` and `suspendedUntil` to be timestamps
/// even for an organization that was never suspended. Both are then its creation time, which
/// is in the past and so means "not suspended".
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub created_by: String,
    pub personal: bool,
    pub created_at: String,
    pub updated_at: String,
    pub suspended: bool,
    pub suspended_at: String,
    pub suspension_reason: String,
    pub suspended_until: String,
    pub suspension_cleanup_grace_period_hours: i64,
    pub max_cpu_per_sandbox: i64,
    /// GiB.
    pub max_memory_per_sandbox: i64,
    /// GiB.
    pub max_disk_per_sandbox: i64,
    pub secret_quota: i64,
    pub max_secrets_per_sandbox: i64,
    pub snapshot_deactivation_timeout_minutes: i64,
    pub default_queue_timeout: Option<i64>,
    pub sandbox_limited_network_egress: bool,
    pub preview_warning_enabled: bool,
    pub sso_enabled: bool,
    pub scim_enabled: bool,
    pub default_region_id: Option<String>,
    pub authenticated_rate_limit: Option<i64>,
    pub sandbox_create_rate_limit: Option<i64>,
    pub sandbox_lifecycle_rate_limit: Option<i64>,
    #[schema(value_type = Object)]
    pub experimental_config: BTreeMap<String, serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub otel_config: Option<serde_json::Value>,
    pub authenticated_rate_limit_ttl_seconds: Option<i64>,
    pub sandbox_create_rate_limit_ttl_seconds: Option<i64>,
    pub sandbox_lifecycle_rate_limit_ttl_seconds: Option<i64>,
    /// The organization's limits in force (its own, or the server's defaults).
    pub limits: OrganizationLimits,
}

/// Limits on what an organization's sandboxes hold at once. Started sandboxes and creates or
/// starts in progress count; stopped, errored and deleted sandboxes do not. `null` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationLimits {
    pub max_sandboxes: Option<i64>,
    /// vCPUs.
    pub total_cpu: Option<i64>,
    /// GiB.
    pub total_memory: Option<i64>,
}

/// Body of `PATCH /organizations/{organizationId}/quota`. A field left out keeps its value,
/// `null` returns it to the server's default, 0 removes the limit. Unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateOrganizationQuota {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub max_sandboxes: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub total_cpu: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub total_memory: Option<Option<i64>>,
}

/// Tells a field that is present with `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(deserializer).map(Some)
}

/// Response of `GET /organizations/{organizationId}/usage`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationUsageOverview {
    pub region_usage: Vec<RegionUsageOverview>,
    pub total_snapshot_quota: i64,
    pub current_snapshot_usage: i64,
    pub total_volume_quota: i64,
    pub current_volume_usage: i64,
    /// Sandboxes that count toward the organization's limit now.
    pub current_sandboxes: i64,
    pub limits: OrganizationLimits,
}

/// Usage and quota of one region. A quota of 0 means no limit.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionUsageOverview {
    pub region_id: String,
    pub sandbox_class: String,
    pub total_cpu_quota: i64,
    pub current_cpu_usage: i64,
    /// GiB.
    pub total_memory_quota: i64,
    /// GiB.
    pub current_memory_usage: i64,
    pub total_disk_quota: i64,
    pub current_disk_usage: i64,
    pub total_gpu_quota: i64,
    pub current_gpu_usage: i64,
    pub max_cpu_per_sandbox: Option<i64>,
    pub max_memory_per_sandbox: Option<i64>,
    pub max_disk_per_sandbox: Option<i64>,
    pub max_disk_per_non_ephemeral_sandbox: Option<i64>,
    pub max_cpu_per_gpu: Option<i64>,
    pub max_memory_per_gpu: Option<i64>,
    pub max_disk_per_gpu: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_update_tells_null_from_absent() {
        let update: UpdateOrganizationQuota =
            serde_json::from_str(r#"{"maxSandboxes": null, "totalCpu": 4, "extra": 1}"#).unwrap();
        assert_eq!(update.max_sandboxes, Some(None));
        assert_eq!(update.total_cpu, Some(Some(4)));
        assert_eq!(update.total_memory, None);
    }

    #[test]
    fn api_key_list_keeps_null_fields() {
        let key = ApiKeyList {
            name: "ci".into(),
            value: "dtn_ab12********".into(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            permissions: vec![],
            last_used_at: None,
            expires_at: None,
            user_id: "org".into(),
            organization_id: "org".into(),
        };
        let json = serde_json::to_value(&key).unwrap();
        assert!(json["lastUsedAt"].is_null());
        assert!(json.as_object().unwrap().contains_key("expiresAt"));
        assert_eq!(json["userId"], "org");
    }
}
