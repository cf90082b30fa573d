//! `POST /files/folder` and `DELETE /files`.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use daytona_wire::ErrorBody;
use serde::Deserialize;

use super::{FileAction, blocking, file_error, invalid_path, required_path, set_owner};
use crate::toolbox::error::{ApiError, QueryParams};
use crate::toolbox::state::Toolbox;

/// Mode of directories created without an explicit one, and of missing parent directories.
pub const DEFAULT_DIR_MODE: u32 = 0o755;

#[derive(Debug, Deserialize)]
pub struct FolderQuery {
    path: Option<String>,
    /// Octal permission bits, such as `755`.
    mode: Option<String>,
}

/// Creates a directory and its missing parents (`mkdir -p`). New directories get the
/// requested mode and belong to the sandbox user; directories that exist are left as they are.
#[utoipa::path(post, path = "/files/folder", tag = "files",
    params(("path" = String, Query), ("mode" = Option<String>, Query, description = "Octal mode, such as 755")),
    responses((status = 201, description = "Created"), (status = 400, body = ErrorBody)))]
pub async fn create_folder(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(query): QueryParams<FolderQuery>,
) -> Result<StatusCode, ApiError> {
    let path = required_path(&toolbox, query.path.as_deref())?;
    let mode = match query.mode.as_deref() {
        None | Some("") => DEFAULT_DIR_MODE,
        Some(mode) => parse_mode(mode)?,
    };
    let owner = toolbox.file_owner;
    blocking(move || {
        create_dir_all(&path, mode, owner)
            .map_err(|error| file_error(FileAction::CreateDirectory, &path, error))
    })
    .await?;
    Ok(StatusCode::CREATED)
}

pub(super) fn parse_mode(mode: &str) -> Result<u32, ApiError> {
    u32::from_str_radix(mode, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid mode {mode:?}: expected octal permission bits such as 755"
            ))
        })
}

/// Creates `path` and its missing parents with `mode`, owned by `owner`.
pub fn create_dir_all(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    let missing: Vec<PathBuf> = path
        .ancestors()
        .take_while(|ancestor| fs::symlink_metadata(ancestor).is_err())
        .map(Path::to_owned)
        .collect();
    if missing.is_empty() && !fs::metadata(path)?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "it exists and is not a directory",
        ));
    }

    for dir in missing.iter().rev() {
        match DirBuilder::new().mode(mode).create(dir) {
            Ok(()) => {}
            // Another request created it meanwhile.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => continue,
            Err(error) => return Err(error),
        }
        set_owner(dir, owner)?;
        // The umask may have cleared bits of the mode at creation.
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    path: Option<String>,
    #[serde(default)]
    recursive: bool,
}

/// Deletes a file, a symbolic link (not its target) or a directory. A directory that is not
/// empty needs `recursive=true`.
#[utoipa::path(delete, path = "/files", tag = "files",
    params(("path" = String, Query), ("recursive" = Option<bool>, Query)),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody)))]
pub async fn delete(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(query): QueryParams<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let path = required_path(&toolbox, query.path.as_deref())?;
    if path.parent().is_none() {
        return Err(invalid_path("refusing to delete the root directory"));
    }
    blocking(move || delete_path(&path, query.recursive)).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn delete_path(path: &Path, recursive: bool) -> Result<(), ApiError> {
    let failed = |error| file_error(FileAction::Delete, path, error);
    let metadata = fs::symlink_metadata(path).map_err(failed)?;
    if !metadata.is_dir() {
        return fs::remove_file(path).map_err(failed);
    }
    if recursive {
        return fs::remove_dir_all(path).map_err(failed);
    }
    fs::remove_dir(path).map_err(|error| match error.kind() {
        io::ErrorKind::DirectoryNotEmpty => invalid_path(format!(
            "directory {} is not empty: pass recursive=true to delete it with its contents",
            path.display()
        )),
        _ => failed(error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_octal() {
        assert_eq!(parse_mode("755").unwrap(), 0o755);
        assert_eq!(parse_mode("0700").unwrap(), 0o700);
        assert!(parse_mode("789").is_err());
        assert!(parse_mode("17777").is_err());
        assert!(parse_mode("rwx").is_err());
    }
}
