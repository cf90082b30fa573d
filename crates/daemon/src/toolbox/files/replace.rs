//! `POST /files/replace`: replaces text in files, each file atomically.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use daytona_wire::ErrorBody;
use daytona_wire::files::{ReplaceRequest, ReplaceResult};
use memchr::memmem;

use super::upload::{TempFile, resolve_symlinks};
use super::{FileAction, blocking, checked_path, file_error, invalid_path, set_owner};
use crate::toolbox::error::{ApiError, JsonBody};
use crate::toolbox::state::Toolbox;

/// Largest file a replace reads, in bytes: the file is rewritten from memory.
const MAX_FILE_SIZE: u64 = 100 * 1024 * 1024;

/// Replaces every occurrence of `pattern` (plain text) by `newValue` in each file.
///
/// Each file is rewritten atomically. The new content goes to a temporary file in the same
/// directory, which takes the old file's mode and owner and is then renamed over it. So a
/// reader sees the old or the new content, never a mix. A symbolic link is followed and its
/// target replaced. A file without the pattern is left untouched. Files are independent: the
/// result lists each file with `success`, and `error` for those that failed.
///
/// NOTE: the rename gives the file a new inode, so other hard links to it keep the old
/// content.
#[utoipa::path(post, path = "/files/replace", tag = "files", request_body = ReplaceRequest,
    responses((status = 200, body = Vec<ReplaceResult>), (status = 400, body = ErrorBody)))]
pub async fn replace(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<ReplaceRequest>,
) -> Result<Json<Vec<ReplaceResult>>, ApiError> {
    if request.pattern.is_empty() {
        return Err(ApiError::bad_request(
            "pattern is empty: name the text to replace",
        ));
    }
    let chown = toolbox.file_owner.is_some();
    let results = blocking(move || {
        let finder = memmem::Finder::new(request.pattern.as_bytes());
        let results = request
            .files
            .iter()
            .map(|file| {
                let replaced = checked_path(&toolbox, file).and_then(|path| {
                    replace_in_file(&path, &finder, request.new_value.as_bytes(), chown)
                });
                ReplaceResult {
                    file: file.clone(),
                    success: replaced.is_ok(),
                    error: replaced.err().map(|error| error.message().to_owned()),
                }
            })
            .collect();
        Ok(results)
    })
    .await?;
    Ok(Json(results))
}

/// Replaces the pattern in one file. `chown` gives the new file the old file's owner, which
/// only root can do.
fn replace_in_file(
    path: &Path,
    finder: &memmem::Finder<'_>,
    new_value: &[u8],
    chown: bool,
) -> Result<(), ApiError> {
    let target =
        resolve_symlinks(path).map_err(|error| file_error(FileAction::Read, path, error))?;
    let metadata =
        fs::metadata(&target).map_err(|error| file_error(FileAction::Read, path, error))?;
    if !metadata.is_file() {
        return Err(invalid_path(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if metadata.len() > MAX_FILE_SIZE {
        return Err(invalid_path(format!(
            "{} is larger than {} MiB, the most a replace rewrites",
            path.display(),
            MAX_FILE_SIZE / (1024 * 1024)
        )));
    }

    let content = fs::read(&target).map_err(|error| file_error(FileAction::Read, path, error))?;
    let Some(replaced) = replace_all(&content, finder, new_value) else {
        return Ok(());
    };

    let failed = |error| file_error(FileAction::Write, path, error);
    let dir = target.parent().unwrap_or(Path::new("/"));
    let (temp, mut file) = TempFile::create_std(dir).map_err(failed)?;
    file.write_all(&replaced).map_err(failed)?;
    drop(file);
    // Owner before mode: changing the owner clears the set-user-ID and set-group-ID bits.
    let owner = chown.then(|| (metadata.uid(), metadata.gid()));
    set_owner(temp.path(), owner).map_err(failed)?;
    fs::set_permissions(
        temp.path(),
        fs::Permissions::from_mode(metadata.mode() & 0o7777),
    )
    .map_err(failed)?;
    temp.commit(&target).map_err(failed)
}

/// Replaces every occurrence found by `finder`; `None` when there is none.
fn replace_all(content: &[u8], finder: &memmem::Finder<'_>, new_value: &[u8]) -> Option<Vec<u8>> {
    let mut occurrences = finder.find_iter(content).peekable();
    occurrences.peek()?;
    let pattern_len = finder.needle().len();
    let mut replaced = Vec::with_capacity(content.len());
    let mut copied_to = 0;
    for start in occurrences {
        replaced.extend_from_slice(&content[copied_to..start]);
        replaced.extend_from_slice(new_value);
        copied_to = start + pattern_len;
    }
    replaced.extend_from_slice(&content[copied_to..]);
    Some(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replace(content: &str, pattern: &str, new_value: &str) -> Option<String> {
        let finder = memmem::Finder::new(pattern.as_bytes());
        replace_all(content.as_bytes(), &finder, new_value.as_bytes())
            .map(|bytes| String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn every_occurrence_is_replaced() {
        assert_eq!(replace("a-b-c", "-", "+").unwrap(), "a+b+c");
        assert_eq!(replace("aaaa", "aa", "b").unwrap(), "bb");
        assert_eq!(replace("x.y", ".", "").unwrap(), "xy");
    }

    #[test]
    fn no_occurrence_changes_nothing() {
        assert_eq!(replace("abc", "z", "y"), None);
    }

    #[test]
    fn file_keeps_mode_and_replaces_through_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("script.sh");
        fs::write(&file, "echo old\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o750)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("script.sh", &link).unwrap();

        let finder = memmem::Finder::new(b"old");
        replace_in_file(&link, &finder, b"new", false).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "echo new\n");
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o7777, 0o750);
        assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".daytona-upload-")
            })
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn directory_and_missing_file_fail() {
        let dir = tempfile::tempdir().unwrap();
        let finder = memmem::Finder::new(b"x");
        assert!(replace_in_file(dir.path(), &finder, b"y", false).is_err());
        assert!(replace_in_file(&dir.path().join("none"), &finder, b"y", false).is_err());
    }
}
