//! Types of the toolbox's sessions (`/process/session/*`) and pseudo-terminals
//! (`/process/pty/*`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Body of `POST /process/session`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateSessionRequest {
    pub session_id: String,
}

/// A session and the commands it ran, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub session_id: String,
    pub commands: Vec<Command>,
}

/// One command of a session.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    pub id: String,
    pub command: String,
    /// `null` while the command runs; 128 + N when signal N ended it; -1 when it could not
    /// start or its status was lost.
    pub exit_code: Option<i32>,
}

/// Body of `POST /process/session/{sessionId}/exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionExecuteRequest {
    pub command: String,
    #[serde(default)]
    pub run_async: Option<bool>,
    /// Deprecated name of `runAsync`.
    #[serde(default, rename = "async")]
    pub var_async: Option<bool>,
    /// Keeps the input sent to the command out of its log.
    #[serde(default)]
    pub suppress_input_echo: Option<bool>,
    /// Variables for this command only, passed verbatim (an addition to Daytona's shape).
    #[serde(default)]
    pub envs: Option<BTreeMap<String, String>>,
}

impl SessionExecuteRequest {
    /// Whether the command runs in the background: `runAsync`, or the older `async`.
    pub fn is_async(&self) -> bool {
        self.run_async.or(self.var_async).unwrap_or(false)
    }
}

/// Response of `POST /process/session/{sessionId}/exec`: the command id alone for a
/// command run in the background (HTTP 202), and its output and exit code otherwise (200).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionExecuteResponse {
    pub cmd_id: String,
    /// Standard output and standard error, interleaved in the order they were written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// Response of `GET /process/session/{sessionId}/command/{commandId}/logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionCommandLogsResponse {
    /// Standard output and standard error, interleaved in the order they were written.
    pub output: String,
    pub stdout: String,
    pub stderr: String,
}

/// Body of `POST /process/session/{sessionId}/command/{commandId}/input`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionSendInputRequest {
    pub data: String,
}

/// Body of `POST /process/pty`, the older way to create a PTY session.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PtyCreateRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub envs: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub cols: Option<u16>,
    #[serde(default)]
    pub rows: Option<u16>,
    /// Starts the shell when the first client connects instead of now.
    #[serde(default)]
    pub lazy_start: Option<bool>,
}

/// Response of `POST /process/pty` (HTTP 201).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PtyCreateResponse {
    pub session_id: String,
}

/// A PTY session.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PtySessionInfo {
    pub id: String,
    pub cwd: String,
    /// The variables the session was created with.
    pub envs: BTreeMap<String, String>,
    pub cols: u16,
    pub rows: u16,
    /// RFC 3339.
    pub created_at: String,
    /// Whether the shell runs.
    pub active: bool,
    pub lazy_start: bool,
}

/// Response of `GET /process/pty`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PtyListResponse {
    pub sessions: Vec<PtySessionInfo>,
}

/// Body of `POST /process/pty/{sessionId}/resize`; both sizes are 1 to 1000.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PtyResizeRequest {
    pub cols: u16,
    pub rows: u16,
}

/// A response that only reports what was done, such as `DELETE /process/pty/{sessionId}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageResponse {
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    #[test]
    fn running_command_has_null_exit_code() {
        let command = Command {
            id: "c".to_owned(),
            command: "sleep 1".to_owned(),
            exit_code: None,
        };
        assert_eq!(
            serde_json::to_value(command).unwrap(),
            json!({"id": "c", "command": "sleep 1", "exitCode": null})
        );
    }

    #[test]
    fn async_response_has_only_the_command_id() {
        let response = SessionExecuteResponse {
            cmd_id: "c".to_owned(),
            output: None,
            stdout: None,
            stderr: None,
            exit_code: None,
        };
        assert_eq!(
            serde_json::to_value(response).unwrap(),
            json!({"cmdId": "c"})
        );
    }

    #[test]
    fn execute_request_takes_either_async_name_and_unknown_fields() {
        let request: SessionExecuteRequest =
            serde_json::from_value(json!({"command": "ls", "async": true, "newField": 1})).unwrap();
        assert!(request.is_async());
        let request: SessionExecuteRequest =
            serde_json::from_value(json!({"command": "ls", "runAsync": false, "async": true}))
                .unwrap();
        assert!(!request.is_async());
    }

    #[test]
    fn pty_info_has_every_required_field() {
        let info = PtySessionInfo {
            id: "p".to_owned(),
            cwd: "/home".to_owned(),
            envs: BTreeMap::new(),
            cols: 80,
            rows: 24,
            created_at: "2026-01-01T00:00:00.000Z".to_owned(),
            active: true,
            lazy_start: false,
        };
        assert_eq!(
            serde_json::to_value(info).unwrap(),
            json!({"id": "p", "cwd": "/home", "envs": {}, "cols": 80, "rows": 24,
                "createdAt": "2026-01-01T00:00:00.000Z", "active": true, "lazyStart": false})
        );
    }
}
