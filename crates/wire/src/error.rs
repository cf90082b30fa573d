//! The error body every API, proxy and toolbox route returns on a 4xx or 5xx.

use serde::{Deserialize, Serialize};

/// Which component produced an error. The SDKs use it with `code` to pick an exception class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ErrorSource {
    #[serde(rename = "DAYTONA_API")]
    Api,
    #[serde(rename = "DAYTONA_DAEMON")]
    Daemon,
    #[serde(rename = "DAYTONA_PROXY")]
    Proxy,
}

/// Daytona's error shape, also declared as `ErrorResponse` by the toolbox client.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub status_code: u16,
    pub message: String,
    pub code: String,
    pub source: ErrorSource,
    pub timestamp: String,
    pub path: String,
    pub method: String,
    /// Request id of a 5xx, so a user can quote it and an operator can find the log line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Output a command produced before it timed out (`PROCESS_EXECUTION_TIMEOUT` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// The generic error code Daytona uses for an HTTP status when no finer code applies.
pub fn generic_code(status: u16) -> &'static str {
    match status {
        400 => "BAD_REQUEST",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        408 => "REQUEST_TIMEOUT",
        409 => "CONFLICT",
        410 => "GONE",
        413 => "PAYLOAD_TOO_LARGE",
        422 => "UNPROCESSABLE_ENTITY",
        429 => "TOO_MANY_REQUESTS",
        503 => "SERVICE_UNAVAILABLE",
        _ => "INTERNAL_SERVER_ERROR",
    }
}
