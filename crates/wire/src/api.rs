//! Types of the REST API under `/api`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Sandbox states as the SDKs know them. The API reports a subset; the rest exist so that
/// every value the SDK can send or read back has a name here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Creating,
    Restoring,
    Destroyed,
    Destroying,
    Started,
    Stopped,
    Starting,
    Stopping,
    Error,
    BuildFailed,
    PendingBuild,
    BuildingSnapshot,
    Unknown,
    PullingSnapshot,
    Archived,
    Archiving,
    Resizing,
    Snapshotting,
    Forking,
    Pausing,
    Paused,
    Resuming,
}

impl SandboxState {
    /// The wire name, as used in query filters and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Restoring => "restoring",
            Self::Destroyed => "destroyed",
            Self::Destroying => "destroying",
            Self::Started => "started",
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Stopping => "stopping",
            Self::Error => "error",
            Self::BuildFailed => "build_failed",
            Self::PendingBuild => "pending_build",
            Self::BuildingSnapshot => "building_snapshot",
            Self::Unknown => "unknown",
            Self::PullingSnapshot => "pulling_snapshot",
            Self::Archived => "archived",
            Self::Archiving => "archiving",
            Self::Resizing => "resizing",
            Self::Snapshotting => "snapshotting",
            Self::Forking => "forking",
            Self::Pausing => "pausing",
            Self::Paused => "paused",
            Self::Resuming => "resuming",
        }
    }

    /// Parses a wire name; `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
    }
}

impl std::fmt::Display for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad` honours width and alignment, which tables of states use.
        f.pad(self.as_str())
    }
}

/// A volume mount of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxVolume {
    pub volume_id: String,
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subpath: Option<String>,
}

/// Build information sent with `POST /sandbox` for image-based creation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateBuildInfo {
    pub dockerfile_content: String,
    #[serde(default)]
    pub context_hashes: Option<Vec<String>>,
}

/// Body of `POST /sandbox`. Every field is optional; unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateSandbox {
    pub name: Option<String>,
    pub snapshot: Option<String>,
    pub user: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub public: Option<bool>,
    pub network_block_all: Option<bool>,
    pub network_allow_list: Option<String>,
    pub domain_allow_list: Option<String>,
    pub kvm: Option<bool>,
    pub spot: Option<bool>,
    pub outbound_proxy_url: Option<String>,
    pub otel_endpoint_override: Option<String>,
    pub target: Option<String>,
    pub cpu: Option<i64>,
    pub gpu: Option<i64>,
    pub gpu_type: Option<Vec<String>>,
    pub memory: Option<i64>,
    pub disk: Option<i64>,
    pub auto_stop_interval: Option<i64>,
    pub auto_pause_interval: Option<i64>,
    pub auto_archive_interval: Option<i64>,
    pub auto_delete_interval: Option<i64>,
    pub ttl_minutes: Option<i64>,
    pub queue_timeout: Option<i64>,
    pub volumes: Option<Vec<SandboxVolume>>,
    pub build_info: Option<CreateBuildInfo>,
    pub linked_sandbox: Option<String>,
    pub secrets: Option<Vec<BTreeMap<String, String>>>,
}

/// The sandbox as `POST/GET/DELETE /sandbox...` return it and as list items carry it.
///
/// Every field is always serialized, `null` included: the published Python client requires
/// some nullable fields to be present, and emitting all of them is the safe rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub snapshot: Option<String>,
    pub user: String,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub public: bool,
    pub network_block_all: bool,
    pub kvm: bool,
    pub network_allow_list: Option<String>,
    pub domain_allow_list: Option<String>,
    pub outbound_proxy_url: Option<String>,
    pub otel_endpoint_override: Option<String>,
    pub target: String,
    pub cpu: i64,
    pub gpu: i64,
    pub spot: bool,
    pub spot_evicted_at: Option<String>,
    pub queue_timed_out_at: Option<String>,
    pub gpu_type: Option<String>,
    /// Memory limit in GiB.
    pub memory: i64,
    /// Disk limit in GiB.
    pub disk: i64,
    pub state: SandboxState,
    pub desired_state: Option<String>,
    pub error_reason: Option<String>,
    pub recoverable: Option<bool>,
    pub warm_pool_id: Option<String>,
    pub backup_state: Option<String>,
    pub backup_created_at: Option<String>,
    /// Minutes of inactivity before the sandbox stops; 0 disables.
    pub auto_stop_interval: i64,
    pub auto_pause_interval: i64,
    pub auto_archive_interval: i64,
    /// Minutes after stop before the sandbox is deleted; -1 disables, 0 deletes on stop.
    pub auto_delete_interval: i64,
    pub auto_destroy_at: Option<String>,
    pub queue_timeout: Option<i64>,
    pub volumes: Vec<SandboxVolume>,
    #[schema(value_type = Option<Object>)]
    pub build_info: Option<serde_json::Value>,
    pub created_at: String,
    pub updated_at: String,
    pub last_activity_at: Option<String>,
    pub sandbox_class: String,
    pub daemon_version: Option<String>,
    pub runner_id: Option<String>,
    pub linked_sandbox_id: Option<String>,
    pub toolbox_proxy_url: String,
}

/// Response of `GET /sandbox`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListSandboxes {
    pub items: Vec<Sandbox>,
    /// Opaque cursor of the next page; `null` on the last page. Always present.
    pub next_cursor: Option<String>,
}

/// Response of `GET /sandbox/{id}/toolbox-proxy-url`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolboxProxyUrl {
    pub url: String,
}

/// Response of `GET /sandbox/{id}/ports/{port}/preview-url`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortPreviewUrl {
    pub sandbox_id: String,
    pub url: String,
    /// The sandbox's preview token, for the `x-daytona-preview-token` header or the
    /// `DAYTONA_SANDBOX_AUTH_KEY` query parameter.
    pub token: String,
}

/// Response of `GET /sandbox/{id}/ports/{port}/signed-preview-url`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignedPortPreviewUrl {
    pub sandbox_id: String,
    pub port: u16,
    /// The token that the URL carries in place of the sandbox id.
    pub token: String,
    pub url: String,
}

/// Body and response of `PUT /sandbox/{id}/labels`: the sandbox's whole label map.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SandboxLabels {
    pub labels: BTreeMap<String, String>,
}

/// Body of `POST /sandbox/{id}/resize`. Fields left out keep their value; unknown fields are
/// ignored.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResizeSandbox {
    /// vCPUs.
    pub cpu: Option<i64>,
    /// Memory in GiB.
    pub memory: Option<i64>,
    /// Disk in GiB; it can only grow.
    pub disk: Option<i64>,
}

/// Body of `POST /sandbox/{id}/snapshot`; unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateSandboxSnapshot {
    /// Name of the new snapshot.
    pub name: String,
    /// Whether to include the memory of a VM sandbox; this server's sandboxes are containers,
    /// so only `false` is accepted.
    pub include_memory: Option<bool>,
}

/// Body of `POST /sandbox/{id}/fork`; unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForkSandbox {
    /// Name of the new sandbox; its id when left out.
    pub name: Option<String>,
}

/// Snapshot states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    Building,
    Pending,
    Pulling,
    Active,
    Inactive,
    Error,
    BuildFailed,
    Removing,
    Snapshotting,
}

/// A snapshot as `GET /snapshots` and `GET /snapshots/{id}` return it.
///
/// Note that the snapshot uses `mem` where the sandbox uses `memory`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub id: String,
    pub organization_id: Option<String>,
    pub general: bool,
    pub name: String,
    pub image_name: Option<String>,
    pub state: SnapshotState,
    /// Size in GiB.
    pub size: Option<f64>,
    pub entrypoint: Option<Vec<String>>,
    pub cpu: i64,
    pub gpu: i64,
    pub gpu_type: Option<String>,
    pub mem: i64,
    pub disk: i64,
    pub error_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub last_used_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub build_info: Option<serde_json::Value>,
    pub region_ids: Option<Vec<String>>,
    pub initial_runner_id: Option<String>,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub source_sandbox_id: Option<String>,
    pub sandbox_class: Option<String>,
}

/// Body of `POST /snapshots`. `imageName` names an image already in the server's image store
/// (`daytona snapshot import`); `buildInfo` (the SDK's `Image` builder) is not built yet.
/// Unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateSnapshot {
    pub name: String,
    #[serde(default)]
    pub image_name: Option<String>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cpu: Option<i64>,
    #[serde(default)]
    pub gpu: Option<i64>,
    /// GiB.
    #[serde(default)]
    pub memory: Option<i64>,
    /// GiB.
    #[serde(default)]
    pub disk: Option<i64>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub build_info: Option<serde_json::Value>,
    #[serde(default)]
    pub region_id: Option<String>,
}

/// Response of `GET /snapshots`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaginatedSnapshots {
    pub items: Vec<Snapshot>,
    pub total: i64,
    pub page: i64,
    pub total_pages: i64,
}

/// Response of `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    pub status: String,
}
