//! Volumes: named directories that sandboxes of one organization mount and share
//! (`/volumes` routes).

use serde::{Deserialize, Serialize};

/// The states of a volume. This server creates and deletes a volume within the request, so
/// the API reports only `ready`; the others exist for the SDKs' sake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VolumeState {
    Creating,
    Ready,
    PendingCreate,
    PendingDelete,
    Deleting,
    Deleted,
    Error,
}

/// A volume as the `/volumes` routes return it. Every field is always serialized, `null`
/// included: the Python client requires `errorReason` to be present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub id: String,
    pub name: String,
    pub organization_id: String,
    pub state: VolumeState,
    pub created_at: String,
    pub updated_at: String,
    pub last_used_at: Option<String>,
    pub error_reason: Option<String>,
}

/// Body of `POST /volumes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateVolume {
    pub name: String,
}
