//! `POST /files/move`: moves or renames a file or directory.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use daytona_wire::ErrorBody;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use serde::Deserialize;

use super::{FileAction, blocking, checked_path, file_error, invalid_path};
use crate::toolbox::error::{ApiError, QueryParams};
use crate::toolbox::state::Toolbox;

/// Prefix of the copy a move across file systems makes before it renames it into place.
const COPY_PREFIX: &str = ".daytona-move-";

#[derive(Debug, Deserialize)]
pub struct MoveQuery {
    source: Option<String>,
    destination: Option<String>,
}

/// Moves `source` to `destination`, which must not exist and whose parent directory must.
///
/// Within one file system this is one atomic rename that never replaces an existing entry.
/// Across file systems (into a volume, say) the source is copied with its modes, owners and
/// modification times, the copy is renamed into place, and then the source is removed. A
/// failed copy leaves the destination absent and the source as it was.
#[utoipa::path(post, path = "/files/move", tag = "files",
    params(("source" = String, Query), ("destination" = String, Query)),
    responses((status = 200, description = "Moved"), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The destination exists", body = ErrorBody)))]
pub async fn move_file(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(query): QueryParams<MoveQuery>,
) -> Result<StatusCode, ApiError> {
    let source = query_path(&toolbox, "source", query.source.as_deref())?;
    let destination = query_path(&toolbox, "destination", query.destination.as_deref())?;
    let chown = toolbox.file_owner.is_some();
    blocking(move || move_path(&source, &destination, chown)).await?;
    Ok(StatusCode::OK)
}

fn query_path(toolbox: &Toolbox, name: &str, value: Option<&str>) -> Result<PathBuf, ApiError> {
    match value {
        None | Some("") => Err(invalid_path(format!("missing query parameter {name}"))),
        Some(path) => checked_path(toolbox, path),
    }
}

fn move_path(source: &Path, destination: &Path, chown: bool) -> Result<(), ApiError> {
    fs::symlink_metadata(source).map_err(|error| file_error(FileAction::Read, source, error))?;
    let parent = destination.parent().unwrap_or(Path::new("/"));
    match fs::metadata(parent) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => {
            return Err(invalid_path(format!(
                "{} is not a directory",
                parent.display()
            )));
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "FILE_NOT_FOUND",
                format!(
                    "destination directory {} does not exist: create it first",
                    parent.display()
                ),
            ));
        }
        Err(error) => return Err(file_error(FileAction::Write, parent, error)),
    }

    match rename_no_replace(source, destination) {
        Ok(()) => Ok(()),
        Err(error) if error.raw_os_error() == Some(libc::EXDEV) => {
            move_across_file_systems(source, destination, chown)
        }
        Err(error) => Err(move_error(destination, error)),
    }
}

/// Renames without replacing an existing destination (`RENAME_NOREPLACE`). On a file system
/// without the flag, checks first, which leaves a short window in which a file created at
/// the destination is replaced.
fn rename_no_replace(source: &Path, destination: &Path) -> io::Result<()> {
    match renameat2(
        AT_FDCWD,
        source,
        AT_FDCWD,
        destination,
        RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL | Errno::ENOSYS) if fs::symlink_metadata(source).is_ok() => {
            if fs::symlink_metadata(destination).is_ok() {
                return Err(io::Error::from_raw_os_error(libc::EEXIST));
            }
            fs::rename(source, destination)
        }
        Err(errno) => Err(io::Error::from(errno)),
    }
}

fn move_error(destination: &Path, error: io::Error) -> ApiError {
    if error.kind() == io::ErrorKind::AlreadyExists {
        return ApiError::new(
            StatusCode::CONFLICT,
            "CONFLICT",
            format!(
                "destination {} already exists: delete it first or choose another name",
                destination.display()
            ),
        );
    }
    file_error(FileAction::Write, destination, error)
}

/// Copies `source` next to `destination`, renames the copy into place and removes the source.
fn move_across_file_systems(
    source: &Path,
    destination: &Path,
    chown: bool,
) -> Result<(), ApiError> {
    let parent = destination.parent().unwrap_or(Path::new("/"));
    let copy = parent.join(format!("{COPY_PREFIX}{}", uuid::Uuid::new_v4().simple()));
    let placed =
        copy_tree(source, &copy, chown).and_then(|()| rename_no_replace(&copy, destination));
    if let Err(error) = placed {
        remove_tree(&copy);
        return Err(move_error(destination, error));
    }

    let removed = match fs::symlink_metadata(source) {
        Ok(metadata) if metadata.is_dir() => fs::remove_dir_all(source),
        _ => fs::remove_file(source),
    };
    removed.map_err(|error| {
        ApiError::internal(
            format!(
                "copied {} to {} but failed to remove the source; delete it to finish the move",
                source.display(),
                destination.display()
            ),
            &error,
        )
    })
}

/// Copies a file, symbolic link or directory tree with modes, modification times and (when
/// `chown`) owners.
fn copy_tree(source: &Path, destination: &Path, chown: bool) -> io::Result<()> {
    let metadata = fs::symlink_metadata(source)?;
    let file_type = metadata.file_type();
    if file_type.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(source)?, destination)?;
    } else if file_type.is_dir() {
        fs::create_dir(destination)?;
        for entry in fs::read_dir(source)? {
            let entry = entry?;
            copy_tree(&entry.path(), &destination.join(entry.file_name()), chown)?;
        }
    } else if file_type.is_file() {
        fs::copy(source, destination)?;
    } else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{} is a special file, which cannot be moved to another file system",
                source.display()
            ),
        ));
    }

    // Owner before mode: changing the owner clears the set-user-ID and set-group-ID bits.
    if chown {
        std::os::unix::fs::lchown(destination, Some(metadata.uid()), Some(metadata.gid()))?;
    }
    if !file_type.is_symlink() {
        fs::set_permissions(
            destination,
            fs::Permissions::from_mode(metadata.mode() & 0o7777),
        )?;
    }
    let accessed = TimeSpec::new(metadata.atime(), metadata.atime_nsec());
    let modified = TimeSpec::new(metadata.mtime(), metadata.mtime_nsec());
    utimensat(
        AT_FDCWD,
        destination,
        &accessed,
        &modified,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

fn remove_tree(path: &Path) {
    let removed = match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => return,
    };
    if let Err(error) = removed {
        tracing::warn!(path = %path.display(), %error, "failed to remove the copy of a failed move");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_refuses_to_replace() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, "a").unwrap();
        fs::write(&b, "b").unwrap();
        let error = rename_no_replace(&a, &b).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&b).unwrap(), "b");
    }

    #[test]
    fn copy_keeps_tree_modes_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        fs::create_dir_all(source.join("sub")).unwrap();
        fs::write(source.join("sub/run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(source.join("sub/run.sh"), fs::Permissions::from_mode(0o751)).unwrap();
        std::os::unix::fs::symlink("sub/run.sh", source.join("link")).unwrap();

        let copy = dir.path().join("copy");
        copy_tree(&source, &copy, false).unwrap();
        assert_eq!(
            fs::read_to_string(copy.join("sub/run.sh")).unwrap(),
            "#!/bin/sh\n"
        );
        assert_eq!(
            fs::metadata(copy.join("sub/run.sh")).unwrap().mode() & 0o7777,
            0o751
        );
        assert_eq!(
            fs::read_link(copy.join("link")).unwrap(),
            Path::new("sub/run.sh")
        );
        assert_eq!(
            fs::metadata(copy.join("sub/run.sh")).unwrap().mtime(),
            fs::metadata(source.join("sub/run.sh")).unwrap().mtime()
        );
    }

    #[test]
    fn cross_file_system_move_replaces_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("a");
        let destination = dir.path().join("b");
        fs::write(&source, "a").unwrap();
        fs::write(&destination, "b").unwrap();
        assert!(move_across_file_systems(&source, &destination, false).is_err());
        assert_eq!(fs::read_to_string(&destination).unwrap(), "b");
        assert!(source.exists());
        let leftovers = fs::read_dir(dir.path())
            .unwrap()
            .filter(|entry| {
                entry
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(COPY_PREFIX)
            })
            .count();
        assert_eq!(leftovers, 0);

        fs::remove_file(&destination).unwrap();
        move_across_file_systems(&source, &destination, false).unwrap();
        assert!(!source.exists());
        assert_eq!(fs::read_to_string(&destination).unwrap(), "a");
    }
}
