//! Object storage access for SDK uploads (`GET /object-storage/push-access`).

use serde::{Deserialize, Serialize};

/// Temporary S3 credentials with which the SDK uploads build contexts to
/// `<organizationId>/<hash>/context.tar` in `bucket`. Every field is a required string
/// (`StorageAccessDto` of the Python client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageAccess {
    pub access_key: String,
    pub secret: String,
    pub session_token: String,
    /// S3 endpoint URL, for example `https://localhost:3009`.
    pub storage_url: String,
    pub organization_id: String,
    pub bucket: String,
    pub region: String,
}
