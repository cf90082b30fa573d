//! `GET /files` (list a directory) and `GET /files/info` (one path).

use std::fs::{self, Metadata};
use std::ops::ControlFlow;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use daytona_wire::ErrorBody;
use daytona_wire::toolbox::FileInfo;
use serde::Deserialize;
use time::OffsetDateTime;

use super::walk::{WalkLimits, walk};
use super::{
    FileAction, blocking, checked_path, file_error, invalid_path, log_truncated, required_path,
    truncation_headers,
};
use crate::toolbox::error::{ApiError, QueryParams};
use crate::toolbox::state::Toolbox;

/// Most entries one listing returns.
const LIST_LIMIT: usize = 100_000;

#[derive(Debug, Deserialize)]
pub struct PathQuery {
    path: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    path: Option<String>,
    /// Levels listed: 1 (the default) is the directory's own entries, 2 adds theirs, and so on.
    depth: Option<u64>,
}

/// Lists a directory, sorted by name, to `depth` levels: each directory's entries follow it,
/// before its next sibling. Entries describe the entry itself: a symbolic link is reported as
/// a link, and a linked directory is not entered. Without `path`, lists the work directory.
/// A listing longer than 100000 entries is cut and carries `X-Daytona-Truncated`.
#[utoipa::path(get, path = "/files", tag = "files",
    params(("path" = String, Query, description = "Absolute, or relative to the work directory"),
        ("depth" = Option<u64>, Query, description = "Levels to list, at least 1 (the default)")),
    responses((status = 200, body = Vec<FileInfo>, headers(
            ("X-Daytona-Truncated" = String, description = "`true` when the entry limit cut the listing"),
            ("X-Daytona-Truncated-Limit" = String, description = "The limit, `maxEntries=100000`"))),
        (status = 404, body = ErrorBody), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<(HeaderMap, Json<Vec<FileInfo>>), ApiError> {
    let dir = match query.path.as_deref() {
        None | Some("") => toolbox.work_dir.clone(),
        Some(path) => checked_path(&toolbox, path)?,
    };
    let depth = match query.depth {
        None => 1,
        Some(0) => {
            return Err(ApiError::bad_request(
                "invalid depth 0: depth must be at least 1",
            ));
        }
        Some(depth) => usize::try_from(depth).unwrap_or(usize::MAX),
    };
    blocking(move || list_dir(&dir, depth)).await
}

fn list_dir(dir: &Path, depth: usize) -> Result<(HeaderMap, Json<Vec<FileInfo>>), ApiError> {
    let metadata = fs::metadata(dir).map_err(|error| file_error(FileAction::List, dir, error))?;
    if !metadata.is_dir() {
        return Err(invalid_path(format!(
            "{} is not a directory",
            dir.display()
        )));
    }

    let limits = WalkLimits {
        max_depth: depth,
        max_entries: LIST_LIMIT,
        include_skipped_dirs: true,
        // The requested depth is not a cut.
        detect_depth_cut: false,
    };
    let mut infos = Vec::new();
    let summary = walk(dir, limits, |entry| {
        infos.push(file_info(&entry.path, &entry.metadata));
        ControlFlow::Continue(())
    })
    .map_err(|error| file_error(FileAction::List, dir, error))?;

    let mut headers = HeaderMap::new();
    if summary.hit_entry_limit {
        log_truncated("list", dir, "maxEntries", LIST_LIMIT);
        headers = truncation_headers("maxEntries", LIST_LIMIT);
    }
    Ok((headers, Json(infos)))
}

/// Describes one path, following a symbolic link to its target.
#[utoipa::path(get, path = "/files/info", tag = "files", params(("path" = String, Query, description = "Absolute, or relative to the work directory")),
    responses((status = 200, body = FileInfo), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody)))]
pub async fn info(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(query): QueryParams<PathQuery>,
) -> Result<Json<FileInfo>, ApiError> {
    let path = required_path(&toolbox, query.path.as_deref())?;
    blocking(move || {
        let metadata =
            fs::metadata(&path).map_err(|error| file_error(FileAction::Read, &path, error))?;
        Ok(Json(file_info(&path, &metadata)))
    })
    .await
}

/// Builds the wire description of a path.
pub fn file_info(path: &Path, metadata: &Metadata) -> FileInfo {
    let modified = modification_time(metadata);
    FileInfo {
        name: file_name(path),
        is_dir: metadata.is_dir(),
        size: metadata.len(),
        mode: go_mode_string(metadata.mode()),
        permissions: format!("{:04o}", metadata.mode() & 0o777),
        owner: metadata.uid().to_string(),
        group: metadata.gid().to_string(),
        mod_time: go_time_string(modified),
        modified_at: daytona_wire::rfc3339(modified),
        path: path.display().to_string(),
    }
}

fn file_name(path: &Path) -> String {
    match path.file_name() {
        Some(name) => name.to_string_lossy().into_owned(),
        None => PathBuf::from(path).display().to_string(),
    }
}

fn modification_time(metadata: &Metadata) -> OffsetDateTime {
    let nanos = i128::from(metadata.mtime()) * 1_000_000_000 + i128::from(metadata.mtime_nsec());
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Formats a `st_mode` the way Go's `FileMode.String` does (`-rw-r--r--`, `drwxr-xr-x`,
/// `Lrwxrwxrwx`), because Daytona's daemon, written in Go, defined the field that way.
fn go_mode_string(st_mode: u32) -> String {
    // Go's mode letters, in Go's bit order, each with the condition that sets it.
    let file_type = st_mode & libc::S_IFMT;
    let letters = [
        ('d', file_type == libc::S_IFDIR),
        ('L', file_type == libc::S_IFLNK),
        (
            'D',
            file_type == libc::S_IFBLK || file_type == libc::S_IFCHR,
        ),
        ('p', file_type == libc::S_IFIFO),
        ('S', file_type == libc::S_IFSOCK),
        ('u', st_mode & libc::S_ISUID != 0),
        ('g', st_mode & libc::S_ISGID != 0),
        ('c', file_type == libc::S_IFCHR),
        ('t', st_mode & libc::S_ISVTX != 0),
    ];
    let mut text: String = letters
        .iter()
        .filter(|(_, set)| *set)
        .map(|(letter, _)| *letter)
        .collect();
    if text.is_empty() {
        text.push('-');
    }
    for (index, letter) in "rwxrwxrwx".chars().enumerate() {
        let bit = 1 << (8 - index);
        text.push(if st_mode & bit != 0 { letter } else { '-' });
    }
    text
}

/// Formats a time the way Go's `Time.String` does in UTC, such as
/// `2024-01-02 03:04:05.123456789 +0000 UTC`: fractional seconds without trailing zeros, and
/// none at all when zero.
fn go_time_string(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let mut fraction = String::new();
    if at.nanosecond() != 0 {
        fraction = format!(".{:09}", at.nanosecond());
        fraction.truncate(fraction.trim_end_matches('0').len());
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}{fraction} +0000 UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings_match_go() {
        let cases = [
            (libc::S_IFREG | 0o644, "-rw-r--r--"),
            (libc::S_IFDIR | 0o755, "drwxr-xr-x"),
            (libc::S_IFLNK | 0o777, "Lrwxrwxrwx"),
            (libc::S_IFDIR | libc::S_ISVTX | 0o777, "dtrwxrwxrwx"),
            (libc::S_IFREG | libc::S_ISUID | 0o755, "urwxr-xr-x"),
            (libc::S_IFCHR | 0o666, "Dcrw-rw-rw-"),
            (libc::S_IFBLK | 0o660, "Drw-rw----"),
            (libc::S_IFIFO | 0o600, "prw-------"),
            (libc::S_IFSOCK | 0o755, "Srwxr-xr-x"),
        ];
        for (mode, expected) in cases {
            assert_eq!(go_mode_string(mode), expected, "mode {mode:o}");
        }
    }

    #[test]
    fn time_strings_match_go() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_704_164_645_123_400_000).unwrap();
        assert_eq!(go_time_string(at), "2024-01-02 03:04:05.1234 +0000 UTC");
        let whole = OffsetDateTime::from_unix_timestamp(1_704_164_645).unwrap();
        assert_eq!(go_time_string(whole), "2024-01-02 03:04:05 +0000 UTC");
    }

    #[test]
    fn root_is_named_slash() {
        assert_eq!(file_name(Path::new("/")), "/");
        assert_eq!(file_name(Path::new("/a/b.txt")), "b.txt");
    }
}
