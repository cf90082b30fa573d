//! Types of the toolbox's file search, replace and signed-upload routes (`/files/find`,
//! `/files/search`, `/files/replace`, `/files/upload-v2`).

use serde::{Deserialize, Serialize};

/// One matching line of `GET /files/find`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Match {
    /// The file, in the form the request named the search path (absolute or relative).
    pub file: String,
    /// Line number, starting at 1.
    pub line: u64,
    /// The line without its line ending, cut at 4096 bytes.
    pub content: String,
}

/// Response of `GET /files/search`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SearchFilesResponse {
    /// Matching files and directories, in the form the request named the search path.
    pub files: Vec<String>,
}

/// Body of `POST /files/replace`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplaceRequest {
    pub files: Vec<String>,
    /// Literal text to replace; every occurrence is replaced.
    pub pattern: String,
    pub new_value: String,
}

/// Result for one file of `POST /files/replace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplaceResult {
    /// The file as the request named it.
    pub file: String,
    pub success: bool,
    /// Reason the file was left unchanged; absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Response of `POST /files/upload-v2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UploadedFile {
    /// Base name of the written file.
    pub name: String,
    /// Destination path as the request named it.
    pub path: String,
    /// Always `file`.
    #[serde(rename = "type")]
    pub kind: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    #[test]
    fn replace_request_reads_new_value() {
        let request: ReplaceRequest = serde_json::from_value(
            json!({"files": ["a"], "pattern": "x", "newValue": "y", "extra": true}),
        )
        .unwrap();
        assert_eq!(request.new_value, "y");
    }

    #[test]
    fn replace_result_omits_error_on_success() {
        let result = ReplaceResult {
            file: "a".to_owned(),
            success: true,
            error: None,
        };
        assert_eq!(
            serde_json::to_value(result).unwrap(),
            json!({"file": "a", "success": true})
        );
    }

    #[test]
    fn uploaded_file_has_type() {
        let uploaded = UploadedFile {
            name: "a.txt".to_owned(),
            path: "/tmp/a.txt".to_owned(),
            kind: "file".to_owned(),
        };
        assert_eq!(
            serde_json::to_value(uploaded).unwrap(),
            json!({"name": "a.txt", "path": "/tmp/a.txt", "type": "file"})
        );
    }
}
