//! SSH access: tokens that let `ssh <token>@host` into one sandbox.

use serde::{Deserialize, Serialize};

/// `POST /sandbox/{id}/ssh-access`: a new token and the command that uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SshAccess {
    pub id: String,
    pub sandbox_id: String,
    /// The token, shown only in this response; the server keeps its hash.
    pub token: String,
    pub expires_at: String,
    pub created_at: String,
    pub updated_at: String,
    /// `ssh -p <port> <token>@<host>`.
    pub ssh_command: String,
}

/// `GET /sandbox/ssh-access/validate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SshAccessValidation {
    pub valid: bool,
    /// The token's sandbox; empty when the token is not valid.
    pub sandbox_id: String,
}
