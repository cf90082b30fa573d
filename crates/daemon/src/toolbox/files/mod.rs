//! `/files/*`: listing, inspecting, creating, deleting, moving, searching, uploading and
//! downloading files.
//!
//! Relative paths are relative to the work directory. Files and directories the daemon creates
//! belong to the sandbox user. Results that a limit cuts short (listings, searches) carry the
//! headers `X-Daytona-Truncated: true` and `X-Daytona-Truncated-Limit`.

mod download;
mod info;
mod manage;
mod move_file;
mod permissions;
mod replace;
mod search;
mod upload;
mod walk;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::http::{HeaderMap, HeaderValue, StatusCode};

use super::error::ApiError;
use super::state::Toolbox;

pub fn routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::new()
        .routes(routes!(info::list, manage::delete))
        .routes(routes!(info::info))
        .routes(routes!(manage::create_folder))
        .routes(routes!(upload::upload))
        .routes(routes!(upload::bulk_upload))
        .routes(routes!(download::download))
        .routes(routes!(download::bulk_download))
        .routes(routes!(upload::upload_v2))
        .routes(routes!(move_file::move_file))
        .routes(routes!(permissions::set_permissions))
        .routes(routes!(search::find))
        .routes(routes!(search::search))
        .routes(routes!(replace::replace))
}

/// Header set to `true` on a result that a limit cut short.
const TRUNCATED_HEADER: &str = "x-daytona-truncated";
/// Header naming the limit that cut a result, as `name=value`.
const TRUNCATED_LIMIT_HEADER: &str = "x-daytona-truncated-limit";

/// Minimum time between two log lines about cut results, which clients can cause at will.
const TRUNCATION_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Builds the headers of a result that the limit `name` (whose value is `value`) cut short.
pub(crate) fn truncation_headers(name: &str, value: usize) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(TRUNCATED_HEADER, HeaderValue::from_static("true"));
    if let Ok(limit) = HeaderValue::from_str(&format!("{name}={value}")) {
        headers.insert(TRUNCATED_LIMIT_HEADER, limit);
    }
    headers
}

/// Logs that a limit cut a result, at most once per [`TRUNCATION_LOG_INTERVAL`]; the line
/// counts the cuts left unlogged since the previous one.
pub(crate) fn log_truncated(route: &'static str, path: &Path, limit: &'static str, value: usize) {
    static LAST: Mutex<Option<(Instant, u64)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let now = Instant::now();
    match &mut *last {
        Some((at, unlogged)) if now.duration_since(*at) < TRUNCATION_LOG_INTERVAL => {
            *unlogged += 1;
        }
        _ => {
            let unlogged = last.map_or(0, |(_, unlogged)| unlogged);
            tracing::info!(
                route,
                path = %path.display(),
                limit,
                value,
                unlogged,
                "result cut at a limit"
            );
            *last = Some((now, 0));
        }
    }
}

/// Resolves the `path` query parameter of a file route.
fn required_path(toolbox: &Toolbox, path: Option<&str>) -> Result<PathBuf, ApiError> {
    match path {
        None | Some("") => Err(invalid_path("missing query parameter path")),
        Some(path) => checked_path(toolbox, path),
    }
}

/// Resolves a path from a request: relative paths are relative to the work directory.
fn checked_path(toolbox: &Toolbox, path: &str) -> Result<PathBuf, ApiError> {
    if path.contains('\0') {
        return Err(invalid_path(format!(
            "invalid path {path:?}: it contains a NUL byte"
        )));
    }
    Ok(toolbox.resolve(path))
}

fn invalid_path(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_FILE_PATH", message)
}

/// Operation of a file route whose file system call failed. It sets the verb of the message
/// and the code of a server-side failure.
#[derive(Debug, Clone, Copy)]
enum FileAction {
    Read,
    List,
    Write,
    CreateDirectory,
    Delete,
}

impl FileAction {
    fn verb(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::List => "list",
            Self::Write => "write",
            Self::CreateDirectory => "create directory",
            Self::Delete => "delete",
        }
    }
}

/// Maps a failed file system call to Daytona's file error codes.
fn file_error(action: FileAction, path: &Path, error: io::Error) -> ApiError {
    use io::ErrorKind;

    let path = path.display();
    if error.raw_os_error() == Some(libc::ELOOP) {
        return invalid_path(format!("cannot {} {path}: {error}", action.verb()));
    }
    match error.kind() {
        ErrorKind::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "FILE_NOT_FOUND",
            format!("file not found: {path}"),
        ),
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => ApiError::new(
            StatusCode::FORBIDDEN,
            "FILE_ACCESS_DENIED",
            format!(
                "permission denied: cannot {} {path}: {error}",
                action.verb()
            ),
        ),
        ErrorKind::NotADirectory
        | ErrorKind::IsADirectory
        | ErrorKind::DirectoryNotEmpty
        | ErrorKind::AlreadyExists
        | ErrorKind::InvalidInput
        | ErrorKind::InvalidFilename => {
            invalid_path(format!("cannot {} {path}: {error}", action.verb()))
        }
        _ => {
            let message = format!("failed to {} {path}: {error}", action.verb());
            match action {
                FileAction::Read | FileAction::List => {
                    ApiError::internal(message, &error).with_code("FILE_READ_FAILED")
                }
                _ => ApiError::internal(message, &error),
            }
        }
    }
}

/// Runs blocking file system work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ApiError::internal("a file operation failed unexpectedly", &error))?
}

/// Changes the owner of a path the daemon created, when the daemon can.
fn set_owner(path: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    match owner {
        Some((uid, gid)) => std::os::unix::fs::lchown(path, Some(uid), Some(gid)),
        None => Ok(()),
    }
}
