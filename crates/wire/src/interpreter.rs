//! Types of the stateful code interpreter: `/process/interpreter/*`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Body of `POST /process/interpreter/context`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateContextRequest {
    /// Working directory of the context; the sandbox's work directory when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Language of the context; `python` when absent.
    #[serde(default)]
    pub language: Option<String>,
}

/// One interpreter context, as `POST` and `GET /process/interpreter/context` return it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterpreterContext {
    pub id: String,
    pub cwd: String,
    pub language: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Whether the context's interpreter process is running.
    pub active: bool,
    /// Whether the interpreter process was ever killed and started again, which lost the
    /// variables, imports and functions defined before (an addition to Daytona's shape).
    #[serde(default)]
    pub restarted: bool,
    /// Number of such restarts (an addition to Daytona's shape).
    #[serde(default)]
    pub restart_count: u32,
}

/// Response of `GET /process/interpreter/context`: the contexts created through the API,
/// without the implicit `default` context.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ListContextsResponse {
    pub contexts: Vec<InterpreterContext>,
}

/// The first (and only) text frame a client sends on `GET /process/interpreter/execute`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteCodeRequest {
    pub code: String,
    /// Context to run in; the `default` context when absent or empty.
    #[serde(default)]
    pub context_id: Option<String>,
    /// Environment variables set for this run only.
    #[serde(default)]
    pub envs: Option<BTreeMap<String, String>>,
    /// Seconds; 0 means no timeout, and absent means the server's default of 10 minutes.
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// Kind of an [`ExecutionChunk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChunkType {
    Stdout,
    Stderr,
    Error,
    Control,
}

/// A frame the server sends on `GET /process/interpreter/execute`. Every field is present in
/// every frame, empty when it does not apply to the frame's type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecutionChunk {
    #[serde(rename = "type")]
    pub chunk_type: ChunkType,
    /// Output text of a `stdout` or `stderr` frame, or the state of a `control` frame
    /// (`completed`).
    pub text: String,
    /// Exception class of an `error` frame, such as `ZeroDivisionError`.
    pub name: String,
    /// Exception message of an `error` frame.
    pub value: String,
    /// Formatted traceback of an `error` frame.
    pub traceback: String,
}

impl ExecutionChunk {
    fn new(chunk_type: ChunkType) -> Self {
        Self {
            chunk_type,
            text: String::new(),
            name: String::new(),
            value: String::new(),
            traceback: String::new(),
        }
    }

    pub fn stdout(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::new(ChunkType::Stdout)
        }
    }

    pub fn stderr(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::new(ChunkType::Stderr)
        }
    }

    pub fn error(
        name: impl Into<String>,
        value: impl Into<String>,
        traceback: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            traceback: traceback.into(),
            ..Self::new(ChunkType::Error)
        }
    }

    pub fn control(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::new(ChunkType::Control)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_has_all_five_keys() {
        let json = serde_json::to_value(ExecutionChunk::stdout("hi\n")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "stdout", "text": "hi\n", "name": "", "value": "", "traceback": ""})
        );
    }

    #[test]
    fn execute_request_tolerates_unknown_fields() {
        let request: ExecuteCodeRequest =
            serde_json::from_str(r#"{"code":"1","contextId":"c","future":true}"#).unwrap();
        assert_eq!(request.context_id.as_deref(), Some("c"));
        assert_eq!(request.timeout, None);
    }

    #[test]
    fn context_serializes_camel_case() {
        let context = InterpreterContext {
            id: "c".to_owned(),
            cwd: "/home".to_owned(),
            language: "python".to_owned(),
            created_at: "2026-01-01T00:00:00.000Z".to_owned(),
            active: true,
            restarted: false,
            restart_count: 0,
        };
        let json = serde_json::to_value(context).unwrap();
        assert_eq!(json["createdAt"], "2026-01-01T00:00:00.000Z");
        assert_eq!(json["restartCount"], 0);
        assert_eq!(json["active"], true);
    }
}
