//! Repository routes: clone, init, add, commit, reset, restore and history.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use daytona_wire::ErrorBody;
use daytona_wire::git::{
    GitAddRequest, GitCloneRequest, GitCommitInfo, GitCommitRequest, GitCommitResponse,
    GitInitRequest, GitResetRequest, GitRestoreRequest,
};
use serde::Deserialize;

use super::cli::{Credentials, GitCommand};
use super::errors::{GitAction, classify};
use super::url::{credential_scope, take_credentials};
use super::{check_argument, repository, request_path};
use crate::toolbox::error::{ApiError, JsonBody, QueryParams};
use crate::toolbox::files::{log_truncated, truncation_headers};
use crate::toolbox::state::Toolbox;

/// Maximum number of commits `GET /git/history` returns. A longer history is cut, and the
/// response carries `X-Daytona-Truncated`.
const HISTORY_LIMIT: usize = 1000;

/// Reset modes git accepts.
const RESET_MODES: [&str; 5] = ["soft", "mixed", "hard", "merge", "keep"];

/// Clones a repository into `path`, which must not exist or be an empty directory.
///
/// Credentials come from `username` and `password`, or from a `user:password@` part of the
/// URL, which is removed so that the stored remote URL contains no secret. With `commit_id`, the
/// clone ends with HEAD detached at that commit. A commit that no branch contains is fetched by
/// its id when the remote allows it. A clone that fails leaves nothing behind.
#[utoipa::path(post, path = "/git/clone", tag = "git", request_body = GitCloneRequest,
    responses((status = 200, description = "Cloned"), (status = 400, body = ErrorBody),
        (status = 401, description = "The remote rejected the credentials", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 502, description = "The remote could not be reached", body = ErrorBody)))]
pub async fn clone(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<GitCloneRequest>,
) -> Result<StatusCode, ApiError> {
    let (url, embedded) = take_credentials(&request.url);
    check_argument("url", &url)?;
    let credentials =
        Credentials::from_request(request.username.as_deref(), request.password.as_deref())?
            .or(embedded);
    let target = request_path(&toolbox, "path", Some(&request.path))?;
    for (field, value) in [
        ("branch", &request.branch),
        ("commit_id", &request.commit_id),
    ] {
        if let Some(value) = value {
            check_argument(field, value)?;
        }
    }
    let depth = match request.depth {
        None => None,
        Some(depth) if depth >= 1 => Some(depth),
        Some(depth) => {
            return Err(ApiError::bad_request(format!(
                "invalid depth {depth}: a shallow clone needs at least 1 commit"
            )));
        }
    };
    let existed = check_clone_destination(&target)?;

    let remote = Remote {
        url: &url,
        credentials,
    };
    let mut command = remote.command(GitAction::Clone, Path::new("/"));
    if request.insecure_skip_tls == Some(true) {
        command = command.config("http.sslVerify", "false");
    }
    command = command.arg("clone");
    if let Some(branch) = &request.branch {
        command = command.args(["--branch", branch]);
    }
    if let Some(depth) = depth {
        command = command.arg(format!("--depth={depth}"));
    }
    if request.commit_id.is_some() {
        command = command.arg("--no-checkout");
    }
    command
        .arg("--")
        .arg(&url)
        .arg(&target)
        .run(&toolbox)
        .await?;

    if let Some(commit) = &request.commit_id
        && let Err(error) = check_out_commit(&toolbox, &target, &remote, commit, depth).await
    {
        remove_clone(target, existed).await;
        return Err(error);
    }
    Ok(StatusCode::OK)
}

/// The remote of a clone and the credentials for it.
struct Remote<'a> {
    url: &'a str,
    credentials: Option<Credentials>,
}

impl Remote<'_> {
    fn command(&self, action: GitAction, cwd: &Path) -> GitCommand {
        GitCommand::new(action, cwd)
            .network()
            .credentials(self.credentials.clone(), credential_scope(self.url))
    }
}

/// Checks that a clone may write to `target`; returns whether the directory exists already.
fn check_clone_destination(target: &Path) -> Result<bool, ApiError> {
    match std::fs::read_dir(target).map(|mut entries| entries.next().is_none()) {
        Ok(true) => Ok(true),
        Ok(false) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "CONFLICT",
            format!(
                "cannot clone into {}: the directory is not empty; choose another path or delete it",
                target.display()
            ),
        )),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) if error.kind() == std::io::ErrorKind::NotADirectory => Err(ApiError::new(
            StatusCode::CONFLICT,
            "CONFLICT",
            format!("cannot clone into {}: it is a file", target.display()),
        )),
        // Git reports the problem (such as a permission) in its own words.
        Err(_) => Ok(true),
    }
}

/// Detaches HEAD at `commit` in a fresh clone, fetching the commit if the clone lacks it.
async fn check_out_commit(
    toolbox: &Toolbox,
    repo: &Path,
    remote: &Remote<'_>,
    commit: &str,
    depth: Option<i64>,
) -> Result<(), ApiError> {
    let switch = |revision: &str| {
        GitCommand::new(GitAction::Checkout, repo)
            .config("advice.detachedHead", "false")
            .args(["switch", "--quiet", "--detach", revision])
    };
    if switch(commit).output(toolbox).await?.success() {
        return Ok(());
    }

    let mut fetch = remote
        .command(GitAction::Fetch, repo)
        .args(["fetch", "--quiet"]);
    if let Some(depth) = depth {
        fetch = fetch.arg(format!("--depth={depth}"));
    }
    let fetched = fetch.args(["origin", commit]).output(toolbox).await?;
    if !fetched.success() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "GIT_BRANCH_NOT_FOUND",
            format!(
                "commit {commit} not found in {}: {}",
                remote.url,
                fetched.stderr.trim()
            ),
        ));
    }
    switch("FETCH_HEAD").run(toolbox).await.map(drop)
}

/// Removes what a failed clone created.
async fn remove_clone(target: PathBuf, existed: bool) {
    let removed = tokio::task::spawn_blocking(move || {
        if !existed {
            return std::fs::remove_dir_all(&target);
        }
        for entry in std::fs::read_dir(&target)? {
            let path = entry?.path();
            if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    })
    .await;
    if let Ok(Err(error)) = removed {
        tracing::warn!(%error, "failed to remove the files of a failed clone");
    }
}

/// Creates a repository (or reinitializes an existing one, which keeps its history) at
/// `path`, creating missing parent directories.
#[utoipa::path(post, path = "/git/init", tag = "git", request_body = GitInitRequest,
    responses((status = 201, description = "Initialized"), (status = 400, body = ErrorBody)))]
pub async fn init(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<GitInitRequest>,
) -> Result<StatusCode, ApiError> {
    let path = request_path(&toolbox, "path", Some(&request.path))?;
    let mut command = GitCommand::new(GitAction::Init, "/").args(["init", "--quiet"]);
    if request.bare == Some(true) {
        command = command.arg("--bare");
    }
    if let Some(branch) = request.initial_branch.as_deref().filter(|b| !b.is_empty()) {
        check_argument("initial_branch", branch)?;
        command = command.arg(format!("--initial-branch={branch}"));
    }
    command.arg(&path).run(&toolbox).await?;
    Ok(StatusCode::CREATED)
}

/// Stages files: paths relative to the repository root, directories included; `.` stages
/// every change, deletions included.
#[utoipa::path(post, path = "/git/add", tag = "git", request_body = GitAddRequest,
    responses((status = 200, description = "Staged"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn add(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<GitAddRequest>,
) -> Result<StatusCode, ApiError> {
    let repo = repository(&toolbox, Some(&request.path))?;
    check_files(&request.files)?;
    GitCommand::new(GitAction::Add, repo)
        .args(["add", "--"])
        .args(&request.files)
        .run(&toolbox)
        .await?;
    Ok(StatusCode::OK)
}

fn check_files(files: &[String]) -> Result<(), ApiError> {
    if files.is_empty() {
        return Err(ApiError::bad_request(
            "files is empty: name at least one path, or . for everything",
        ));
    }
    for file in files {
        if file.is_empty() || file.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "invalid file {file:?}: paths must be non-empty and without NUL bytes"
            )));
        }
    }
    Ok(())
}

/// Commits the staged changes and returns the new commit's hash. `author` and `email` name
/// both the author and the committer; empty values fall back to `user.name` and
/// `user.email`. Hooks do not run.
#[utoipa::path(post, path = "/git/commit", tag = "git", request_body = GitCommitRequest,
    responses((status = 200, body = GitCommitResponse), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn commit(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<GitCommitRequest>,
) -> Result<Json<GitCommitResponse>, ApiError> {
    let repo = repository(&toolbox, Some(&request.path))?;
    for (field, value) in [("author", &request.author), ("email", &request.email)] {
        if value.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "invalid {field}: it contains a NUL byte"
            )));
        }
    }

    let mut command = GitCommand::new(GitAction::Commit, &repo)
        .args(["commit", "--quiet", "--file=-"])
        .stdin(request.message.into_bytes());
    if request.allow_empty == Some(true) {
        command = command.arg("--allow-empty");
    }
    if !request.author.is_empty() {
        command = command
            .env("GIT_AUTHOR_NAME", &request.author)
            .env("GIT_COMMITTER_NAME", &request.author);
    }
    if !request.email.is_empty() {
        command = command
            .env("GIT_AUTHOR_EMAIL", &request.email)
            .env("GIT_COMMITTER_EMAIL", &request.email);
    }
    command.run(&toolbox).await?;

    let head = GitCommand::new(GitAction::Inspect, &repo)
        .args(["rev-parse", "HEAD"])
        .run(&toolbox)
        .await?;
    Ok(Json(GitCommitResponse {
        hash: head.stdout.trim().to_owned(),
    }))
}

/// Moves HEAD (and the index and working tree, by mode) to `target`, HEAD by default. With
/// `files`, only their index entries are reset.
#[utoipa::path(post, path = "/git/reset", tag = "git", request_body = GitResetRequest,
    responses((status = 200, description = "Reset"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn reset(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<GitResetRequest>,
) -> Result<StatusCode, ApiError> {
    let repo = repository(&toolbox, Some(&request.path))?;
    let mode = request.mode.as_deref().filter(|mode| !mode.is_empty());
    if let Some(mode) = mode
        && !RESET_MODES.contains(&mode)
    {
        return Err(ApiError::bad_request(format!(
            "invalid mode {mode:?}: expected one of {}",
            RESET_MODES.join(", ")
        )));
    }
    let files = request.files.unwrap_or_default();
    if !files.is_empty() {
        check_files(&files)?;
        if mode.is_some_and(|mode| mode != "mixed") {
            return Err(ApiError::bad_request(
                "only a mixed reset can be limited to files: drop mode or files",
            ));
        }
    }
    let target = request
        .target
        .as_deref()
        .filter(|target| !target.is_empty());
    if let Some(target) = target {
        check_argument("target", target)?;
    }

    let mut command = GitCommand::new(GitAction::Reset, repo).args(["reset", "--quiet"]);
    if files.is_empty() {
        if let Some(mode) = mode {
            command = command.arg(format!("--{mode}"));
        }
        // The target is a revision; `--` keeps git from reading it as a path.
        command = command.args(target).arg("--");
    } else {
        command = command.args(target).arg("--").args(&files);
    }
    command.run(&toolbox).await?;
    Ok(StatusCode::OK)
}

/// Restores files in the working tree (the default) from the index, or in the index
/// (`staged`) from HEAD; `source` names another revision to restore from.
#[utoipa::path(post, path = "/git/restore", tag = "git", request_body = GitRestoreRequest,
    responses((status = 200, description = "Restored"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn restore(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<GitRestoreRequest>,
) -> Result<StatusCode, ApiError> {
    let repo = repository(&toolbox, Some(&request.path))?;
    check_files(&request.files)?;
    let staged = request.staged.unwrap_or(false);
    let worktree = request.worktree.unwrap_or(!staged);
    if !staged && !worktree {
        return Err(ApiError::bad_request(
            "nothing to restore: set staged, worktree, or both",
        ));
    }

    let mut command = GitCommand::new(GitAction::Restore, repo).arg("restore");
    if staged {
        command = command.arg("--staged");
    }
    if worktree {
        command = command.arg("--worktree");
    }
    if let Some(source) = request
        .source
        .as_deref()
        .filter(|source| !source.is_empty())
    {
        check_argument("source", source)?;
        command = command.arg(format!("--source={source}"));
    }
    command.arg("--").args(&request.files).run(&toolbox).await?;
    Ok(StatusCode::OK)
}

#[derive(Debug, Deserialize)]
pub struct PathQuery {
    path: Option<String>,
}

/// Lists the commits of HEAD, newest first, at most 1000; a longer history is cut and the
/// response carries `X-Daytona-Truncated`. A branch without commits has an empty history.
#[utoipa::path(get, path = "/git/history", tag = "git",
    params(("path" = String, Query, description = "Repository path")),
    responses((status = 200, body = Vec<GitCommitInfo>), (status = 404, body = ErrorBody)))]
pub async fn history(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(query): QueryParams<PathQuery>,
) -> Result<(HeaderMap, Json<Vec<GitCommitInfo>>), ApiError> {
    let repo = repository(&toolbox, query.path.as_deref())?;
    let output = GitCommand::new(GitAction::History, &repo)
        .args([
            "log",
            "-z",
            &format!("--max-count={}", HISTORY_LIMIT + 1),
            "--format=%H%x1f%an%x1f%ae%x1f%aI%x1f%B",
        ])
        .output(&toolbox)
        .await?;
    if !output.success() {
        if output.stderr.contains("does not have any commits yet") {
            return Ok((HeaderMap::new(), Json(Vec::new())));
        }
        return Err(classify(&output));
    }

    let mut commits = parse_history(output.complete_stdout()?);
    let mut headers = HeaderMap::new();
    if commits.len() > HISTORY_LIMIT {
        commits.truncate(HISTORY_LIMIT);
        headers = truncation_headers("maxCommits", HISTORY_LIMIT);
        log_truncated("git history", &repo, "maxCommits", HISTORY_LIMIT);
    }
    Ok((headers, Json(commits)))
}

/// Parses records of `hash, author, email, date, message` separated by unit separators.
fn parse_history(output: &str) -> Vec<GitCommitInfo> {
    output
        .split('\0')
        .filter(|record| !record.is_empty())
        .filter_map(|record| {
            let mut fields = record.splitn(5, '\u{1f}');
            Some(GitCommitInfo {
                hash: fields.next()?.trim_start_matches('\n').to_owned(),
                author: fields.next()?.to_owned(),
                email: fields.next()?.to_owned(),
                timestamp: fields.next()?.to_owned(),
                message: fields.next()?.trim_end().to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_records_parse() {
        let output = "aaa\u{1f}Ann\u{1f}ann@example.com\u{1f}2026-01-02T03:04:05+00:00\u{1f}first line\n\nbody\n\0\
                      bbb\u{1f}Bob\u{1f}bob@example.com\u{1f}2026-01-01T00:00:00+01:00\u{1f}root\n\0";
        let commits = parse_history(output);
        assert_eq!(commits.len(), 2);
        assert_eq!(commits[0].hash, "aaa");
        assert_eq!(commits[0].author, "Ann");
        assert_eq!(commits[0].email, "ann@example.com");
        assert_eq!(commits[0].timestamp, "2026-01-02T03:04:05+00:00");
        assert_eq!(commits[0].message, "first line\n\nbody");
        assert_eq!(commits[1].message, "root");
    }

    #[test]
    fn clone_destination_rules() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!check_clone_destination(&dir.path().join("new")).unwrap());
        assert!(check_clone_destination(dir.path()).unwrap());
        std::fs::write(dir.path().join("file"), "x").unwrap();
        assert!(check_clone_destination(dir.path()).is_err());
        assert!(check_clone_destination(&dir.path().join("file")).is_err());
    }

    #[test]
    fn file_lists_must_name_paths() {
        assert!(check_files(&[]).is_err());
        assert!(check_files(&["".to_owned()]).is_err());
        assert!(check_files(&[".".to_owned(), "a b.txt".to_owned()]).is_ok());
    }
}
