//! Types of the toolbox's git routes: `/git/*`.
//!
//! Request bodies of these routes use snake_case keys (`commit_id`, `allow_empty`,
//! `set_upstream`, `insecure_skip_tls`, `initial_branch`), unlike every other toolbox route;
//! responses use camelCase. Request types that carry a password print it as `<redacted>` in
//! their `Debug` output, so that a logged request never reveals it.

use serde::{Deserialize, Serialize};

/// Placeholder that `Debug` prints in place of a secret.
const REDACTED: &str = "<redacted>";

fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| REDACTED)
}

/// Body of `POST /git/clone`.
#[derive(Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitCloneRequest {
    pub url: String,
    /// Destination directory, created with its parents.
    pub path: String,
    #[serde(default)]
    pub branch: Option<String>,
    /// Commit to check out after cloning; HEAD is then detached.
    #[serde(default)]
    pub commit_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Skips TLS certificate verification for this clone.
    #[serde(default)]
    pub insecure_skip_tls: Option<bool>,
    /// Number of commits of a shallow clone.
    #[serde(default)]
    pub depth: Option<i64>,
}

impl std::fmt::Debug for GitCloneRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitCloneRequest")
            .field("url", &self.url)
            .field("path", &self.path)
            .field("branch", &self.branch)
            .field("commit_id", &self.commit_id)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("insecure_skip_tls", &self.insecure_skip_tls)
            .field("depth", &self.depth)
            .finish()
    }
}

/// State of a file in the index or the working tree, as Daytona names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum GitFileState {
    Unmodified,
    Untracked,
    Modified,
    Added,
    Deleted,
    Renamed,
    Copied,
    #[serde(rename = "Updated but unmerged")]
    UpdatedButUnmerged,
}

/// One changed or untracked file of `GET /git/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileStatus {
    /// Path relative to the repository root.
    pub name: String,
    /// State in the index, against HEAD.
    pub staging: GitFileState,
    /// State in the working tree, against the index.
    pub worktree: GitFileState,
    /// The original path of a renamed or copied file; empty otherwise.
    pub extra: String,
}

/// Response of `GET /git/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitStatus {
    /// The checked-out branch; `HEAD` when HEAD is detached.
    pub current_branch: String,
    pub file_status: Vec<FileStatus>,
    /// Commits on the branch that its upstream lacks; 0 without an upstream.
    pub ahead: u64,
    /// Commits on the upstream that the branch lacks; 0 without an upstream.
    pub behind: u64,
    /// Whether the upstream branch exists on the remote, as of the last fetch.
    pub branch_published: bool,
    /// The upstream branch, such as `origin/main`; empty when none is configured.
    pub upstream: String,
    pub detached: bool,
}

/// Body of `POST /git/add`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitAddRequest {
    pub path: String,
    /// Paths relative to the repository root; `.` stages everything.
    pub files: Vec<String>,
}

/// Body of `POST /git/commit`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitCommitRequest {
    pub path: String,
    pub message: String,
    /// Name of the author and committer; an empty value keeps the configured `user.name`.
    pub author: String,
    /// Email of the author and committer; an empty value keeps the configured `user.email`.
    pub email: String,
    #[serde(default)]
    pub allow_empty: Option<bool>,
}

/// Response of `POST /git/commit`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitCommitResponse {
    /// Full hash of the new commit.
    pub hash: String,
}

/// Response of `GET /git/branches`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ListBranchResponse {
    /// Local branches, sorted by name.
    pub branches: Vec<String>,
    /// The checked-out branch; empty when HEAD is detached.
    pub current: String,
}

/// Body of `POST /git/branches`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitBranchRequest {
    pub path: String,
    pub name: String,
}

/// Body of `DELETE /git/branches`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitDeleteBranchRequest {
    pub path: String,
    pub name: String,
}

/// Body of `POST /git/checkout`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitCheckoutRequest {
    pub path: String,
    /// A branch, or any revision (which detaches HEAD).
    pub branch: String,
}

/// Body of `POST /git/push`.
#[derive(Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitPushRequest {
    pub path: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Branch to push; the current branch when absent.
    #[serde(default)]
    pub branch: Option<String>,
    /// Remote name or URL; `origin` when absent.
    #[serde(default)]
    pub remote: Option<String>,
    /// Records the pushed branch as the upstream of the local branch.
    #[serde(default)]
    pub set_upstream: Option<bool>,
}

impl std::fmt::Debug for GitPushRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitPushRequest")
            .field("path", &self.path)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("branch", &self.branch)
            .field("remote", &self.remote)
            .field("set_upstream", &self.set_upstream)
            .finish()
    }
}

/// Body of `POST /git/pull`.
#[derive(Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitPullRequest {
    pub path: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Branch to pull; the upstream of the current branch when absent.
    #[serde(default)]
    pub branch: Option<String>,
    /// Remote name or URL; the upstream's remote, else `origin`, when absent.
    #[serde(default)]
    pub remote: Option<String>,
}

impl std::fmt::Debug for GitPullRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitPullRequest")
            .field("path", &self.path)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("branch", &self.branch)
            .field("remote", &self.remote)
            .finish()
    }
}

/// Body of `POST /git/init`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitInitRequest {
    pub path: String,
    #[serde(default)]
    pub bare: Option<bool>,
    #[serde(default)]
    pub initial_branch: Option<String>,
}

/// Body of `POST /git/reset`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitResetRequest {
    pub path: String,
    /// `soft`, `mixed` (the default), `hard`, `merge` or `keep`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Revision to reset to; HEAD when absent.
    #[serde(default)]
    pub target: Option<String>,
    /// Limits the reset to these paths, which only a mixed reset allows.
    #[serde(default)]
    pub files: Option<Vec<String>>,
}

/// Body of `POST /git/restore`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitRestoreRequest {
    pub path: String,
    pub files: Vec<String>,
    /// Restores the index; off unless set.
    #[serde(default)]
    pub staged: Option<bool>,
    /// Restores the working tree; on when neither `staged` nor `worktree` is set.
    #[serde(default)]
    pub worktree: Option<bool>,
    /// Revision to restore from, instead of the index (or HEAD for the index).
    #[serde(default)]
    pub source: Option<String>,
}

/// Body of `POST /git/remotes`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitAddRemoteRequest {
    pub path: String,
    pub name: String,
    pub url: String,
    /// Fetches from the remote once it is added.
    #[serde(default)]
    pub fetch: Option<bool>,
    /// Replaces the URL of an existing remote of that name.
    #[serde(default)]
    pub overwrite: Option<bool>,
}

/// One remote of `GET /git/remotes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitRemote {
    pub name: String,
    /// Fetch URL, with any password it embeds replaced by `***`.
    pub url: String,
}

/// Response of `GET /git/remotes`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ListRemotesResponse {
    pub remotes: Vec<GitRemote>,
}

/// Body of `POST /git/config`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitSetConfigRequest {
    /// Dotted key, such as `user.name` or `remote.origin.url`.
    pub key: String,
    pub value: String,
    /// Repository path; required when `scope` is `local`.
    #[serde(default)]
    pub path: Option<String>,
    /// `global` (the default), `local` or `system`.
    #[serde(default)]
    pub scope: Option<String>,
}

/// Response of `GET /git/config`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitConfigResponse {
    /// The value; `null` when the key is not set.
    pub value: Option<String>,
}

/// Body of `POST /git/config/user`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitConfigureUserRequest {
    pub name: String,
    pub email: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

/// Body of `POST /git/credentials`: credentials stored in plain text for later operations.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitAuthenticateRequest {
    pub username: String,
    pub password: String,
    /// Host the credentials are for; `github.com` when absent.
    #[serde(default)]
    pub host: Option<String>,
    /// `https` when absent.
    #[serde(default)]
    pub protocol: Option<String>,
}

impl std::fmt::Debug for GitAuthenticateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitAuthenticateRequest")
            .field("username", &self.username)
            .field("password", &REDACTED)
            .field("host", &self.host)
            .field("protocol", &self.protocol)
            .finish()
    }
}

/// One commit of `GET /git/history`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitCommitInfo {
    pub hash: String,
    pub author: String,
    pub email: String,
    pub message: String,
    /// Author date as RFC 3339.
    pub timestamp: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    #[test]
    fn status_uses_daytona_names() {
        let status = GitStatus {
            current_branch: "main".to_owned(),
            file_status: vec![FileStatus {
                name: "a.txt".to_owned(),
                staging: GitFileState::UpdatedButUnmerged,
                worktree: GitFileState::Untracked,
                extra: String::new(),
            }],
            ahead: 1,
            behind: 0,
            branch_published: true,
            upstream: "origin/main".to_owned(),
            detached: false,
        };
        assert_eq!(
            serde_json::to_value(status).unwrap(),
            json!({
                "currentBranch": "main",
                "fileStatus": [{"name": "a.txt", "staging": "Updated but unmerged",
                    "worktree": "Untracked", "extra": ""}],
                "ahead": 1, "behind": 0, "branchPublished": true,
                "upstream": "origin/main", "detached": false
            })
        );
    }

    #[test]
    fn requests_take_snake_case_and_unknown_keys() {
        let request: GitCloneRequest = serde_json::from_value(json!({
            "url": "https://example.com/r.git", "path": "r", "commit_id": "abc",
            "insecure_skip_tls": true, "depth": 1, "future_field": 1
        }))
        .unwrap();
        assert_eq!(request.commit_id.as_deref(), Some("abc"));
        assert_eq!(request.insecure_skip_tls, Some(true));
        assert_eq!(request.depth, Some(1));

        let push: GitPushRequest =
            serde_json::from_value(json!({"path": "r", "set_upstream": true})).unwrap();
        assert_eq!(push.set_upstream, Some(true));
    }

    #[test]
    fn debug_output_hides_passwords() {
        let clone = GitCloneRequest {
            password: Some("s3cret".to_owned()),
            ..Default::default()
        };
        let push = GitPushRequest {
            password: Some("s3cret".to_owned()),
            ..Default::default()
        };
        let authenticate = GitAuthenticateRequest {
            username: "u".to_owned(),
            password: "s3cret".to_owned(),
            host: None,
            protocol: None,
        };
        for text in [
            format!("{clone:?}"),
            format!("{push:?}"),
            format!("{authenticate:?}"),
        ] {
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains(REDACTED), "{text}");
        }
    }

    #[test]
    fn unset_config_value_is_null() {
        assert_eq!(
            serde_json::to_value(GitConfigResponse { value: None }).unwrap(),
            json!({"value": null})
        );
    }
}
