//! `GET /git/status`, from `git status --porcelain=v2 --branch -z`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use daytona_wire::ErrorBody;
use daytona_wire::git::{FileStatus, GitFileState, GitStatus};
use serde::Deserialize;

use super::cli::GitCommand;
use super::errors::GitAction;
use super::repository;
use crate::toolbox::error::{ApiError, QueryParams};
use crate::toolbox::state::Toolbox;

#[derive(Debug, Deserialize)]
pub struct PathQuery {
    path: Option<String>,
}

/// Reports the branch, its upstream, and every changed or untracked file (each untracked file
/// on its own, not collapsed into its directory). Ignored files are left out.
#[utoipa::path(get, path = "/git/status", tag = "git",
    params(("path" = String, Query, description = "Repository path, absolute or relative to the work directory")),
    responses((status = 200, body = GitStatus), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn status(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(query): QueryParams<PathQuery>,
) -> Result<Json<GitStatus>, ApiError> {
    let repo = repository(&toolbox, query.path.as_deref())?;
    let output = GitCommand::new(GitAction::Status, repo)
        .args([
            "--no-optional-locks",
            "status",
            "--porcelain=v2",
            "--branch",
            "-z",
            "--untracked-files=all",
        ])
        .run(&toolbox)
        .await?;
    Ok(Json(parse_status(output.complete_stdout()?)))
}

/// Parses porcelain v2 output with NUL-terminated records.
fn parse_status(output: &str) -> GitStatus {
    let mut status = GitStatus {
        current_branch: String::new(),
        file_status: Vec::new(),
        ahead: 0,
        behind: 0,
        branch_published: false,
        upstream: String::new(),
        detached: false,
    };
    let mut records = output.split('\0').filter(|record| !record.is_empty());
    while let Some(record) = records.next() {
        if let Some(header) = record.strip_prefix("# ") {
            apply_header(&mut status, header);
            continue;
        }
        let entry = match record.as_bytes().first() {
            Some(b'1') => changed_entry(record, 8, None),
            // A rename or copy is followed by a record with the original path.
            Some(b'2') => changed_entry(record, 9, records.next()),
            Some(b'u') => unmerged_entry(record),
            Some(b'?') => Some(FileStatus {
                name: record[2..].to_owned(),
                staging: GitFileState::Untracked,
                worktree: GitFileState::Untracked,
                extra: String::new(),
            }),
            _ => None,
        };
        status.file_status.extend(entry);
    }
    status
}

fn apply_header(status: &mut GitStatus, header: &str) {
    let Some((key, value)) = header.split_once(' ') else {
        return;
    };
    match key {
        "branch.head" if value == "(detached)" => {
            status.detached = true;
            status.current_branch = "HEAD".to_owned();
        }
        "branch.head" => status.current_branch = value.to_owned(),
        "branch.upstream" => status.upstream = value.to_owned(),
        // Present only when the upstream branch exists, which is what "published" means.
        "branch.ab" => {
            status.branch_published = true;
            for count in value.split(' ') {
                if let Some(ahead) = count.strip_prefix('+') {
                    status.ahead = ahead.parse().unwrap_or(0);
                } else if let Some(behind) = count.strip_prefix('-') {
                    status.behind = behind.parse().unwrap_or(0);
                }
            }
        }
        _ => {}
    }
}

/// Parses `1 XY sub mH mI mW hH hI path` (`fields_before_path` = 8) or
/// `2 XY sub mH mI mW hH hI Xscore path` (9), whose path may contain spaces.
fn changed_entry(
    record: &str,
    fields_before_path: usize,
    original: Option<&str>,
) -> Option<FileStatus> {
    let mut fields = record.splitn(fields_before_path + 1, ' ');
    let xy = fields.nth(1)?;
    let path = fields.nth(fields_before_path - 2)?;
    let mut states = xy.chars().map(state_of);
    Some(FileStatus {
        name: path.to_owned(),
        staging: states.next()?,
        worktree: states.next()?,
        extra: original.unwrap_or_default().to_owned(),
    })
}

/// Parses `u XY sub m1 m2 m3 mW h1 h2 h3 path`: a path with a merge conflict.
fn unmerged_entry(record: &str) -> Option<FileStatus> {
    let path = record.splitn(11, ' ').nth(10)?;
    Some(FileStatus {
        name: path.to_owned(),
        staging: GitFileState::UpdatedButUnmerged,
        worktree: GitFileState::UpdatedButUnmerged,
        extra: String::new(),
    })
}

fn state_of(letter: char) -> GitFileState {
    match letter {
        'M' | 'T' => GitFileState::Modified,
        'A' => GitFileState::Added,
        'D' => GitFileState::Deleted,
        'R' => GitFileState::Renamed,
        'C' => GitFileState::Copied,
        'U' => GitFileState::UpdatedButUnmerged,
        _ => GitFileState::Unmodified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "1111111111111111111111111111111111111111";

    #[test]
    fn branch_headers_fill_upstream_fields() {
        let output = format!(
            "# branch.oid {HASH}\0# branch.head main\0# branch.upstream origin/main\0# branch.ab +2 -1\0"
        );
        let status = parse_status(&output);
        assert_eq!(status.current_branch, "main");
        assert_eq!(status.upstream, "origin/main");
        assert!(status.branch_published);
        assert_eq!((status.ahead, status.behind), (2, 1));
        assert!(!status.detached);
        assert!(status.file_status.is_empty());
    }

    #[test]
    fn detached_head_and_unborn_branch() {
        let status = parse_status("# branch.oid abc\0# branch.head (detached)\0");
        assert!(status.detached);
        assert_eq!(status.current_branch, "HEAD");

        let status = parse_status("# branch.oid (initial)\0# branch.head main\0");
        assert_eq!(status.current_branch, "main");
        assert!(!status.branch_published);
    }

    #[test]
    fn entries_of_each_kind() {
        let output = format!(
            "# branch.head main\0\
             1 .M N... 100644 100644 100644 {HASH} {HASH} dir/a file.txt\0\
             1 A. N... 000000 100644 100644 {HASH} {HASH} new.txt\0\
             2 R. N... 100644 100644 100644 {HASH} {HASH} R100 moved name.txt\0old name.txt\0\
             u UU N... 100644 100644 100644 100644 {HASH} {HASH} {HASH} both.txt\0\
             ? untracked dir/x.txt\0"
        );
        let files = parse_status(&output).file_status;
        let expected = [
            (
                "dir/a file.txt",
                GitFileState::Unmodified,
                GitFileState::Modified,
                "",
            ),
            ("new.txt", GitFileState::Added, GitFileState::Unmodified, ""),
            (
                "moved name.txt",
                GitFileState::Renamed,
                GitFileState::Unmodified,
                "old name.txt",
            ),
            (
                "both.txt",
                GitFileState::UpdatedButUnmerged,
                GitFileState::UpdatedButUnmerged,
                "",
            ),
            (
                "untracked dir/x.txt",
                GitFileState::Untracked,
                GitFileState::Untracked,
                "",
            ),
        ];
        assert_eq!(files.len(), expected.len());
        for (file, (name, staging, worktree, extra)) in files.iter().zip(expected) {
            assert_eq!(file.name, name);
            assert_eq!(file.staging, staging, "{name}");
            assert_eq!(file.worktree, worktree, "{name}");
            assert_eq!(file.extra, extra, "{name}");
        }
    }
}
