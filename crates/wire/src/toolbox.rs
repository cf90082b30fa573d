//! Types of the toolbox API that the daemon serves inside each sandbox.
//!
//! Paths are relative to `{toolboxProxyUrl}/{sandboxId}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Body of `POST /process/execute`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecuteRequest {
    pub command: String,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub envs: Option<BTreeMap<String, String>>,
    /// Seconds; absent or 0 means no timeout.
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// Response of `POST /process/execute`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteResponse {
    /// Exit status; 128 + N when signal N ended the shell; -1 when the shell could not start.
    pub exit_code: i32,
    /// Standard output and standard error, interleaved in the order they were written.
    pub result: String,
    /// Standard output alone (an addition to Daytona's shape; older clients ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// Standard error alone (an addition to Daytona's shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
}

/// Languages `POST /process/code-run` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CodeLanguage {
    Python,
    Javascript,
    Typescript,
}

/// Body of `POST /process/code-run`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CodeRunRequest {
    pub code: String,
    #[serde(default = "default_language")]
    pub language: String,
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    #[serde(default)]
    pub envs: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub timeout: Option<u64>,
}

fn default_language() -> String {
    "python".to_owned()
}

/// Response of `POST /process/code-run`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CodeRunResponse {
    pub exit_code: i32,
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<CodeRunArtifacts>,
}

/// Charts a run produced.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CodeRunArtifacts {
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub charts: Vec<serde_json::Value>,
}

/// One entry of `GET /files` and the response of `GET /files/info`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
    /// Go-style mode string, such as `-rw-r--r--` or `drwxr-xr-x`.
    pub mode: String,
    /// Four octal digits, such as `0644`.
    pub permissions: String,
    /// Numeric uid as text.
    pub owner: String,
    /// Numeric gid as text.
    pub group: String,
    /// Modification time as Go's `time.String()` prints it (deprecated by Daytona).
    pub mod_time: String,
    /// Modification time as RFC 3339.
    pub modified_at: String,
    /// Absolute path of the entry.
    pub path: String,
}

/// Body of `POST /files/bulk-download`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FilesDownloadRequest {
    pub paths: Vec<String>,
}

/// Response of `GET /user-home-dir` and `GET /work-dir`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DirResponse {
    pub dir: String,
}

/// Response of `GET /version`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionResponse {
    pub version: String,
}

/// One written file in the response of `POST /files/bulk-upload` (Daytona's `FsFileResult`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FsFileResult {
    /// Destination path as the request named it.
    pub path: String,
    /// Number of bytes written.
    pub bytes: u64,
}

/// Response of `POST /files/bulk-upload`, with status 200 when every file was written and 400
/// when any failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UploadFilesResponse {
    pub files: Vec<FsFileResult>,
    /// One message per file or body failure, each naming the destination.
    pub errors: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    #[test]
    fn upload_response_has_files_and_errors() {
        let response = UploadFilesResponse {
            files: vec![FsFileResult {
                path: "a.txt".to_owned(),
                bytes: 3,
            }],
            errors: vec!["b.txt: permission denied".to_owned()],
        };
        assert_eq!(
            serde_json::to_value(response).unwrap(),
            json!({"files": [{"path": "a.txt", "bytes": 3}], "errors": ["b.txt: permission denied"]})
        );
    }

    #[test]
    fn execute_response_is_camel_case_with_optional_streams() {
        let response = ExecuteResponse {
            exit_code: -1,
            result: "r".to_owned(),
            stdout: None,
            stderr: Some("e".to_owned()),
        };
        assert_eq!(
            serde_json::to_value(response).unwrap(),
            json!({"exitCode": -1, "result": "r", "stderr": "e"})
        );
    }
}

/// Body of `POST /env`: changes the environment of every process started afterwards.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateEnvRequest {
    /// Variables to set, applied last.
    #[serde(default)]
    pub set: Option<BTreeMap<String, String>>,
    /// Variables to remove, before `set` is applied.
    #[serde(default)]
    pub unset: Option<Vec<String>>,
    /// Removes every variable whose value starts with this prefix and whose name `set` does
    /// not name, before `set` is applied.
    #[serde(default)]
    pub unset_value_prefix: Option<String>,
}
