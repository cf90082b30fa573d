//! The server's configuration (`GET /config`) and sandbox metrics
//! (`GET /sandbox/{id}/telemetry/metrics`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Metric names of the samples the server records, as the SDKs' `get_metrics` requests them.
pub mod metric {
    /// CPU use as a percentage of the sandbox's CPU limit, over the last sampling interval.
    pub const CPU_UTILIZATION: &str = "daytona.sandbox.cpu.utilization";
    /// The sandbox's CPU limit in vCPUs.
    pub const CPU_LIMIT: &str = "daytona.sandbox.cpu.limit";
    /// Memory in use in bytes, page cache left out.
    pub const MEMORY_USAGE: &str = "daytona.sandbox.memory.usage";
    /// The sandbox's memory limit in bytes.
    pub const MEMORY_LIMIT: &str = "daytona.sandbox.memory.limit";
    /// Page cache charged to the sandbox, in bytes.
    pub const MEMORY_CACHE: &str = "daytona.sandbox.memory.cache";

    /// Every metric the server records.
    pub const ALL: [&str; 5] = [
        CPU_UTILIZATION,
        CPU_LIMIT,
        MEMORY_USAGE,
        MEMORY_LIMIT,
        MEMORY_CACHE,
    ];
}

/// Response of `GET /sandbox/{id}/telemetry/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsResponse {
    pub series: Vec<MetricSeries>,
}

/// The samples of one metric, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricSeries {
    pub metric_name: String,
    pub data_points: Vec<MetricDataPoint>,
}

/// One sample of a metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricDataPoint {
    /// RFC 3339 time of the sample.
    pub timestamp: String,
    pub value: f64,
}

/// Response of `GET /config`: Daytona's `DaytonaConfiguration`, every required field present.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaytonaConfiguration {
    pub version: String,
    /// This server has no OpenID Connect login; every field is empty.
    pub oidc: OidcConfig,
    pub linked_accounts_enabled: bool,
    #[schema(value_type = Object)]
    pub announcements: BTreeMap<String, serde_json::Value>,
    /// Preview URL with `{{PORT}}` and `{{sandboxId}}` in place of the port and the id.
    pub proxy_template_url: String,
    pub proxy_toolbox_url: String,
    pub default_snapshot: String,
    pub dashboard_url: String,
    /// Minutes.
    pub max_auto_archive_interval: i64,
    /// Daytona's spelling.
    pub maintanance_mode: bool,
    pub environment: String,
    /// Absent: the SDKs then read metrics from `GET /sandbox/{id}/telemetry/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analytics_api_url: Option<String>,
}

/// OpenID Connect settings of the dashboard login.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub audience: String,
    pub provider: String,
}
