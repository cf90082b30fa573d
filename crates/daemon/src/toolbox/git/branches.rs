//! Branch routes: list, create, delete and check out.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use daytona_wire::ErrorBody;
use daytona_wire::git::{
    GitBranchRequest, GitCheckoutRequest, GitDeleteBranchRequest, ListBranchResponse,
};
use serde::Deserialize;

use super::cli::GitCommand;
use super::errors::GitAction;
use super::{check_argument, repository};
use crate::toolbox::error::{ApiError, JsonBody, QueryParams};
use crate::toolbox::state::Toolbox;

/// Prefix of local branch references.
const HEADS: &str = "refs/heads/";

#[derive(Debug, Deserialize)]
pub struct PathQuery {
    path: Option<String>,
}

/// Lists the local branches and names the checked-out one (empty when HEAD is detached).
#[utoipa::path(get, path = "/git/branches", tag = "git",
    params(("path" = String, Query, description = "Repository path")),
    responses((status = 200, body = ListBranchResponse), (status = 404, body = ErrorBody)))]
pub async fn list_branches(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(query): QueryParams<PathQuery>,
) -> Result<Json<ListBranchResponse>, ApiError> {
    let repo = repository(&toolbox, query.path.as_deref())?;
    let refs = GitCommand::new(GitAction::ListBranches, &repo)
        .args(["for-each-ref", "--format=%(refname)", HEADS])
        .run(&toolbox)
        .await?;
    let branches = refs
        .complete_stdout()?
        .lines()
        .filter_map(|line| line.strip_prefix(HEADS))
        .map(str::to_owned)
        .collect();

    // Exit code 1 and no output: HEAD is detached.
    let head = GitCommand::new(GitAction::ListBranches, &repo)
        .args(["symbolic-ref", "--quiet", "HEAD"])
        .output(&toolbox)
        .await?;
    let current = head
        .stdout
        .trim()
        .strip_prefix(HEADS)
        .unwrap_or_default()
        .to_owned();
    Ok(Json(ListBranchResponse { branches, current }))
}

/// Creates a branch at HEAD and checks it out, as Daytona's daemon does.
#[utoipa::path(post, path = "/git/branches", tag = "git", request_body = GitBranchRequest,
    responses((status = 201, description = "Created and checked out"), (status = 400, body = ErrorBody),
        (status = 409, description = "The branch exists", body = ErrorBody)))]
pub async fn create_branch(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<GitBranchRequest>,
) -> Result<StatusCode, ApiError> {
    let repo = repository(&toolbox, Some(&request.path))?;
    check_argument("name", &request.name)?;
    GitCommand::new(GitAction::CreateBranch, repo)
        .args(["switch", "--quiet", "--create", &request.name])
        .run(&toolbox)
        .await?;
    Ok(StatusCode::CREATED)
}

/// Deletes a local branch, merged or not. The checked-out branch cannot be deleted.
#[utoipa::path(delete, path = "/git/branches", tag = "git", request_body = GitDeleteBranchRequest,
    responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_branch(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<GitDeleteBranchRequest>,
) -> Result<StatusCode, ApiError> {
    let repo = repository(&toolbox, Some(&request.path))?;
    check_argument("name", &request.name)?;
    GitCommand::new(GitAction::DeleteBranch, repo)
        .args(["branch", "--delete", "--force", &request.name])
        .run(&toolbox)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Checks out a branch. A branch that exists only on one remote is created to track it; any
/// other revision (a tag, a commit) detaches HEAD there. Local changes that the checkout would
/// overwrite make it fail with `GIT_DIRTY_WORKTREE`.
#[utoipa::path(post, path = "/git/checkout", tag = "git", request_body = GitCheckoutRequest,
    responses((status = 200, description = "Checked out"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn checkout(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<GitCheckoutRequest>,
) -> Result<StatusCode, ApiError> {
    let repo = repository(&toolbox, Some(&request.path))?;
    check_argument("branch", &request.branch)?;
    let switched = GitCommand::new(GitAction::Checkout, &repo)
        .args(["switch", "--quiet", &request.branch])
        .output(&toolbox)
        .await?;
    if switched.success() {
        return Ok(StatusCode::OK);
    }
    if !switched.stderr.contains("a branch is expected") {
        return Err(super::errors::classify(&switched));
    }
    GitCommand::new(GitAction::Checkout, &repo)
        .config("advice.detachedHead", "false")
        .args(["switch", "--quiet", "--detach", &request.branch])
        .run(&toolbox)
        .await?;
    Ok(StatusCode::OK)
}
