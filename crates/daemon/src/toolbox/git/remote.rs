//! Remote routes: push, pull, and listing and adding remotes.

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use daytona_wire::ErrorBody;
use daytona_wire::git::{
    GitAddRemoteRequest, GitPullRequest, GitPushRequest, GitRemote, ListRemotesResponse,
};
use serde::Deserialize;

use super::cli::{Credentials, GitCommand};
use super::errors::{GitAction, classify};
use super::url::{credential_scope, redact_urls, take_credentials};
use super::{check_argument, repository};
use crate::toolbox::error::{ApiError, JsonBody, QueryParams};
use crate::toolbox::state::Toolbox;

const DEFAULT_REMOTE: &str = "origin";
const HEADS: &str = "refs/heads/";

/// Pushes a branch (the current one by default) to the branch of the same name on the
/// remote (`origin` by default). A branch the remote has moved ahead is rejected with
/// `GIT_PUSH_REJECTED`, a push the remote's rules refuse with `GIT_REMOTE_REJECTED`.
#[utoipa::path(post, path = "/git/push", tag = "git", request_body = GitPushRequest,
    responses((status = 200, description = "Pushed"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Rejected: the remote has commits the branch lacks", body = ErrorBody),
        (status = 422, description = "Rejected by the remote's rules", body = ErrorBody),
        (status = 502, body = ErrorBody)))]
pub async fn push(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<GitPushRequest>,
) -> Result<StatusCode, ApiError> {
    let repo = repository(&toolbox, Some(&request.path))?;
    let credentials =
        Credentials::from_request(request.username.as_deref(), request.password.as_deref())?;
    let requested_remote = non_empty(request.remote.as_deref()).unwrap_or(DEFAULT_REMOTE);
    check_argument("remote", requested_remote)?;
    let (remote, credentials) = remote_without_credentials(requested_remote, credentials);
    let remote = remote.as_str();
    let branch = match non_empty(request.branch.as_deref()) {
        Some(branch) => {
            check_argument("branch", branch)?;
            branch.strip_prefix(HEADS).unwrap_or(branch).to_owned()
        }
        None => current_branch(&toolbox, &repo).await?.ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "GIT_BRANCH_NOT_FOUND",
                "HEAD is detached, so there is no current branch to push: pass branch",
            )
        })?,
    };

    let mut command = remote_command(&toolbox, &repo, GitAction::Push, remote, credentials, true)
        .await?
        .args(["push", "--quiet"]);
    if request.set_upstream == Some(true) {
        command = command.arg("--set-upstream");
    }
    command
        .arg(remote)
        .arg(format!("{HEADS}{branch}:{HEADS}{branch}"))
        .run(&toolbox)
        .await?;
    Ok(StatusCode::OK)
}

/// Fetches a branch and merges it into the current branch (never a rebase). Without
/// `branch` and `remote`, pulls the current branch's upstream; without an upstream, the
/// branch of the same name on `origin`. Conflicts fail with `GIT_MERGE_CONFLICT` and leave
/// the merge in progress for resolution; local changes in the way fail with
/// `GIT_DIRTY_WORKTREE`.
#[utoipa::path(post, path = "/git/pull", tag = "git", request_body = GitPullRequest,
    responses((status = 200, description = "Pulled"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn pull(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<GitPullRequest>,
) -> Result<StatusCode, ApiError> {
    let repo = repository(&toolbox, Some(&request.path))?;
    let credentials =
        Credentials::from_request(request.username.as_deref(), request.password.as_deref())?;
    for (field, value) in [("remote", &request.remote), ("branch", &request.branch)] {
        if let Some(value) = non_empty(value.as_deref()) {
            check_argument(field, value)?;
        }
    }
    let (remote, branch) = pull_source(&toolbox, &repo, &request).await?;
    let (remote, credentials) = remote_without_credentials(&remote, credentials);

    remote_command(
        &toolbox,
        &repo,
        GitAction::Pull,
        &remote,
        credentials,
        false,
    )
    .await?
    .args(["pull", "--quiet", "--no-rebase", "--no-edit"])
    .arg(&remote)
    .arg(&branch)
    .run(&toolbox)
    .await?;
    Ok(StatusCode::OK)
}

/// Chooses the remote and branch to pull: the request's, else the upstream's, else `origin`
/// and the current branch.
async fn pull_source(
    toolbox: &Toolbox,
    repo: &Path,
    request: &GitPullRequest,
) -> Result<(String, String), ApiError> {
    let requested_remote = non_empty(request.remote.as_deref());
    let requested_branch = non_empty(request.branch.as_deref());
    if let (Some(remote), Some(branch)) = (requested_remote, requested_branch) {
        return Ok((remote.to_owned(), branch.to_owned()));
    }

    let current = current_branch(toolbox, repo).await?;
    let upstream = match &current {
        Some(current) => upstream_of(toolbox, repo, current).await?,
        None => None,
    };
    let remote = requested_remote
        .map(str::to_owned)
        .or_else(|| upstream.as_ref().map(|(remote, _)| remote.clone()))
        .unwrap_or_else(|| DEFAULT_REMOTE.to_owned());
    let branch = match (requested_branch, &upstream) {
        (Some(branch), _) => branch.to_owned(),
        (None, Some((upstream_remote, branch))) if *upstream_remote == remote => branch.clone(),
        _ => current.ok_or_else(|| {
            ApiError::bad_request("HEAD is detached and has no upstream: pass branch to pull")
        })?,
    };
    Ok((remote, branch))
}

/// Returns the upstream of a local branch: its remote and the branch name there.
async fn upstream_of(
    toolbox: &Toolbox,
    repo: &Path,
    branch: &str,
) -> Result<Option<(String, String)>, ApiError> {
    let output = GitCommand::new(GitAction::Inspect, repo)
        .args([
            "for-each-ref",
            "--format=%(upstream:remotename)%00%(upstream:remoteref)",
            &format!("{HEADS}{branch}"),
        ])
        .run(toolbox)
        .await?;
    let line = output.stdout.trim_end_matches('\n');
    Ok(line.split_once('\0').and_then(|(remote, reference)| {
        let branch = reference.strip_prefix(HEADS)?;
        (!remote.is_empty()).then(|| (remote.to_owned(), branch.to_owned()))
    }))
}

/// Returns the checked-out branch, or `None` when HEAD is detached.
async fn current_branch(toolbox: &Toolbox, repo: &Path) -> Result<Option<String>, ApiError> {
    let output = GitCommand::new(GitAction::Inspect, repo)
        .args(["symbolic-ref", "--quiet", "HEAD"])
        .output(toolbox)
        .await?;
    match output.exit_code {
        0 => Ok(output.stdout.trim().strip_prefix(HEADS).map(str::to_owned)),
        1 => Ok(None),
        _ => Err(classify(&output)),
    }
}

/// Builds a git run that talks to `remote`, with the request's credentials scoped to the
/// remote's host. Finding the host takes the remote's URL, so it is looked up only when there
/// are credentials to pass.
async fn remote_command(
    toolbox: &Toolbox,
    repo: &Path,
    action: GitAction,
    remote: &str,
    credentials: Option<Credentials>,
    push: bool,
) -> Result<GitCommand, ApiError> {
    let command = GitCommand::new(action, repo).network();
    let Some(credentials) = credentials else {
        return Ok(command);
    };
    let url = if is_url(remote) {
        remote.to_owned()
    } else {
        remote_url(toolbox, repo, remote, push).await?
    };
    Ok(command.credentials(Some(credentials), credential_scope(&url)))
}

/// Takes the credentials out of a remote given as a URL with a `user:password@` part, so that
/// they do not appear in git's arguments. The request's own credentials take precedence.
fn remote_without_credentials(
    remote: &str,
    credentials: Option<Credentials>,
) -> (String, Option<Credentials>) {
    if !is_url(remote) {
        return (remote.to_owned(), credentials);
    }
    let (clean, embedded) = take_credentials(remote);
    (clean, credentials.or(embedded))
}

/// Checks whether a push or pull names a URL rather than a configured remote.
fn is_url(remote: &str) -> bool {
    remote.contains("://") || remote.starts_with('/') || remote.starts_with('.')
}

/// Returns the URL git uses for a configured remote (its push URL for a push).
async fn remote_url(
    toolbox: &Toolbox,
    repo: &Path,
    remote: &str,
    push: bool,
) -> Result<String, ApiError> {
    let mut command = GitCommand::new(GitAction::Remotes, repo).args(["remote", "get-url"]);
    if push {
        command = command.arg("--push");
    }
    let output = command.arg(remote).output(toolbox).await?;
    if output.success() {
        return Ok(output.stdout.trim().to_owned());
    }
    if output.stderr.contains("No such remote") {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!(
                "no remote named {remote:?} in {}: add it with POST /git/remotes",
                repo.display()
            ),
        ));
    }
    Err(classify(&output))
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|value| !value.is_empty())
}

#[derive(Debug, Deserialize)]
pub struct PathQuery {
    path: Option<String>,
}

/// Lists the remotes with their fetch URLs; passwords embedded in URLs are replaced by `***`.
#[utoipa::path(get, path = "/git/remotes", tag = "git",
    params(("path" = String, Query, description = "Repository path")),
    responses((status = 200, body = ListRemotesResponse), (status = 404, body = ErrorBody)))]
pub async fn list_remotes(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(query): QueryParams<PathQuery>,
) -> Result<Json<ListRemotesResponse>, ApiError> {
    let repo = repository(&toolbox, query.path.as_deref())?;
    let output = GitCommand::new(GitAction::Remotes, repo)
        .args(["remote", "--verbose"])
        .run(&toolbox)
        .await?;
    Ok(Json(ListRemotesResponse {
        remotes: parse_remotes(output.complete_stdout()?),
    }))
}

/// Parses `git remote --verbose`: a `name<TAB>url (fetch)` and a `(push)` line per remote.
fn parse_remotes(output: &str) -> Vec<GitRemote> {
    output
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once('\t')?;
            let url = rest.strip_suffix(" (fetch)")?;
            Some(GitRemote {
                name: name.to_owned(),
                url: redact_urls(url),
            })
        })
        .collect()
}

/// Adds a remote. An existing remote of that name is a conflict unless `overwrite` is set,
/// which replaces its URL and keeps its other settings. With `fetch`, the remote's branches
/// are fetched at once.
#[utoipa::path(post, path = "/git/remotes", tag = "git", request_body = GitAddRemoteRequest,
    responses((status = 201, description = "Added"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_remote(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<GitAddRemoteRequest>,
) -> Result<StatusCode, ApiError> {
    let repo = repository(&toolbox, Some(&request.path))?;
    check_argument("name", &request.name)?;
    check_argument("url", &request.url)?;

    let added = GitCommand::new(GitAction::Remotes, &repo)
        .args(["remote", "add", &request.name, &request.url])
        .output(&toolbox)
        .await?;
    if !added.success() {
        if !added.stderr.contains("already exists") {
            return Err(classify(&added));
        }
        if request.overwrite != Some(true) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "CONFLICT",
                format!(
                    "remote {:?} already exists: set overwrite to replace its URL",
                    request.name
                ),
            ));
        }
        GitCommand::new(GitAction::Remotes, &repo)
            .args(["remote", "set-url", &request.name, &request.url])
            .run(&toolbox)
            .await?;
    }

    if request.fetch == Some(true) {
        GitCommand::new(GitAction::Fetch, &repo)
            .network()
            .args(["fetch", "--quiet", &request.name])
            .run(&toolbox)
            .await?;
    }
    Ok(StatusCode::CREATED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_parse_fetch_lines() {
        let output = "origin\thttps://u:secret@host/r.git (fetch)\norigin\thttps://u:secret@host/r.git (push)\n\
                      upstream\t/srv/r.git (fetch)\nupstream\t/srv/r.git (push)\n";
        assert_eq!(
            parse_remotes(output),
            [
                GitRemote {
                    name: "origin".to_owned(),
                    url: "https://u:***@host/r.git".to_owned()
                },
                GitRemote {
                    name: "upstream".to_owned(),
                    url: "/srv/r.git".to_owned()
                },
            ]
        );
    }

    #[test]
    fn url_remotes_give_up_their_credentials() {
        let (remote, credentials) = remote_without_credentials("https://u:p%40ss@host/r.git", None);
        assert_eq!(remote, "https://host/r.git");
        assert_eq!(credentials.unwrap().password, "p@ss");

        let given = Credentials {
            username: "given".to_owned(),
            password: "given-password".to_owned(),
        };
        let (_, credentials) = remote_without_credentials("https://u:p@host/r.git", Some(given));
        assert_eq!(credentials.unwrap().username, "given");

        let (remote, credentials) = remote_without_credentials("origin", None);
        assert_eq!(remote, "origin");
        assert!(credentials.is_none());
    }

    #[test]
    fn urls_are_told_from_remote_names() {
        assert!(is_url("https://host/r.git"));
        assert!(is_url("/srv/r.git"));
        assert!(is_url("../r.git"));
        assert!(!is_url("origin"));
        assert!(!is_url("upstream"));
    }
}
