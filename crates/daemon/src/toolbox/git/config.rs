//! Configuration routes: `/git/config`, `/git/config/user` and `/git/credentials`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use daytona_wire::ErrorBody;
use daytona_wire::git::{
    GitAuthenticateRequest, GitConfigResponse, GitConfigureUserRequest, GitSetConfigRequest,
};
use serde::Deserialize;

use super::cli::GitCommand;
use super::errors::{GitAction, classify};
use super::{check_argument, repository};
use crate::toolbox::error::{ApiError, JsonBody, QueryParams};
use crate::toolbox::state::Toolbox;

/// Configuration file that a value is read from or written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The sandbox user's `~/.gitconfig`.
    Global,
    /// The repository's `.git/config`.
    Local,
    /// `/etc/gitconfig`, which the sandbox user can usually read but not write.
    System,
}

impl Scope {
    fn parse(scope: Option<&str>) -> Result<Self, ApiError> {
        match scope.unwrap_or("") {
            "" | "global" => Ok(Self::Global),
            "local" => Ok(Self::Local),
            "system" => Ok(Self::System),
            other => Err(ApiError::bad_request(format!(
                "invalid scope {other:?}: expected global, local or system"
            ))),
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Self::Global => "--global",
            Self::Local => "--local",
            Self::System => "--system",
        }
    }
}

/// Returns the directory git runs in for a scope: the repository for `local`, which needs
/// one, and the work directory otherwise.
fn config_dir(toolbox: &Toolbox, scope: Scope, path: Option<&str>) -> Result<PathBuf, ApiError> {
    match (scope, path.filter(|path| !path.is_empty())) {
        (Scope::Local, None) => Err(ApiError::bad_request(
            "the local scope needs path, the repository whose configuration to use",
        )),
        (Scope::Local, path) => repository(toolbox, path),
        _ => Ok(toolbox.work_dir.clone()),
    }
}

/// Sets `key` to `value` in one configuration file, `~/.gitconfig` by default.
async fn set_value(
    toolbox: &Toolbox,
    scope: Scope,
    dir: &PathBuf,
    key: &str,
    value: &str,
) -> Result<(), ApiError> {
    check_argument("key", key)?;
    if value.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "invalid value for {key}: it contains a NUL byte"
        )));
    }
    GitCommand::new(GitAction::Config, dir)
        .args(["config", scope.flag(), key, value])
        .run(toolbox)
        .await
        .map(drop)
}

/// Sets a configuration value.
#[utoipa::path(post, path = "/git/config", tag = "git", request_body = GitSetConfigRequest,
    responses((status = 200, description = "Set"), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn set_config(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<GitSetConfigRequest>,
) -> Result<StatusCode, ApiError> {
    let scope = Scope::parse(request.scope.as_deref())?;
    let dir = config_dir(&toolbox, scope, request.path.as_deref())?;
    set_value(&toolbox, scope, &dir, &request.key, &request.value).await?;
    Ok(StatusCode::OK)
}

#[derive(Debug, Deserialize)]
pub struct ConfigQuery {
    key: Option<String>,
    path: Option<String>,
    scope: Option<String>,
}

/// Reads a configuration value from one file; `null` when the key is not set there. A key
/// set several times reads as its last value, the one git uses.
#[utoipa::path(get, path = "/git/config", tag = "git",
    params(("key" = String, Query), ("path" = Option<String>, Query, description = "Repository path, for the local scope"),
        ("scope" = Option<String>, Query, description = "global (the default), local or system")),
    responses((status = 200, body = GitConfigResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_config(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(query): QueryParams<ConfigQuery>,
) -> Result<Json<GitConfigResponse>, ApiError> {
    let key = query.key.unwrap_or_default();
    check_argument("key", &key)?;
    let scope = Scope::parse(query.scope.as_deref())?;
    let dir = config_dir(&toolbox, scope, query.path.as_deref())?;

    let output = GitCommand::new(GitAction::Config, dir)
        .args(["config", scope.flag(), "--get", &key])
        .output(&toolbox)
        .await?;
    // Exit code 1 without a message: the key is not set.
    let value = match output.exit_code {
        0 => Some(
            output
                .stdout
                .strip_suffix('\n')
                .unwrap_or(&output.stdout)
                .to_owned(),
        ),
        1 if output.stderr.trim().is_empty() => None,
        _ => return Err(classify(&output)),
    };
    Ok(Json(GitConfigResponse { value }))
}

/// Sets `user.name` and `user.email`, the identity of commits that name no author.
#[utoipa::path(post, path = "/git/config/user", tag = "git", request_body = GitConfigureUserRequest,
    responses((status = 200, description = "Set"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn configure_user(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<GitConfigureUserRequest>,
) -> Result<StatusCode, ApiError> {
    let scope = Scope::parse(request.scope.as_deref())?;
    let dir = config_dir(&toolbox, scope, request.path.as_deref())?;
    set_value(&toolbox, scope, &dir, "user.name", &request.name).await?;
    set_value(&toolbox, scope, &dir, "user.email", &request.email).await?;
    Ok(StatusCode::OK)
}

/// Stores credentials for a host with git's `store` helper, so that later clones, pulls and
/// pushes to that host use them without passing them. The password is kept in plain text in
/// `~/.git-credentials` (mode 0600), readable by anything that runs as the sandbox user.
#[utoipa::path(post, path = "/git/credentials", tag = "git", request_body = GitAuthenticateRequest,
    responses((status = 200, description = "Stored"), (status = 400, body = ErrorBody)))]
pub async fn authenticate(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<GitAuthenticateRequest>,
) -> Result<StatusCode, ApiError> {
    let host = request
        .host
        .as_deref()
        .filter(|host| !host.is_empty())
        .unwrap_or("github.com");
    let protocol = request
        .protocol
        .as_deref()
        .filter(|protocol| !protocol.is_empty())
        .unwrap_or("https");
    if request.username.is_empty() || request.password.is_empty() {
        return Err(ApiError::bad_request(
            "username and password must not be empty",
        ));
    }
    for (field, value) in [
        ("username", request.username.as_str()),
        ("password", &request.password),
        ("host", host),
        ("protocol", protocol),
    ] {
        if value.contains(['\n', '\r', '\0']) {
            return Err(ApiError::bad_request(format!(
                "the {field} contains a line break or a NUL byte, which git's credential store cannot hold"
            )));
        }
    }

    let dir = toolbox.work_dir.clone();
    ensure_store_helper(&toolbox, &dir).await?;
    let input = format!(
        "protocol={protocol}\nhost={host}\nusername={}\npassword={}\n\n",
        request.username, request.password
    );
    GitCommand::new(GitAction::Credentials, dir)
        .args(["credential", "approve"])
        .stdin(input)
        .run(&toolbox)
        .await?;
    Ok(StatusCode::OK)
}

/// Adds the `store` helper to the user's global configuration unless it is there already;
/// other helpers stay.
async fn ensure_store_helper(toolbox: &Toolbox, dir: &PathBuf) -> Result<(), ApiError> {
    let helpers = GitCommand::new(GitAction::Config, dir)
        .args(["config", "--global", "--get-all", "credential.helper"])
        .output(toolbox)
        .await?;
    if helpers
        .stdout
        .lines()
        .any(|helper| helper.trim() == "store")
    {
        return Ok(());
    }
    GitCommand::new(GitAction::Config, dir)
        .args(["config", "--global", "--add", "credential.helper", "store"])
        .run(toolbox)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse() {
        assert_eq!(Scope::parse(None).unwrap(), Scope::Global);
        assert_eq!(Scope::parse(Some("")).unwrap(), Scope::Global);
        assert_eq!(Scope::parse(Some("local")).unwrap(), Scope::Local);
        assert_eq!(Scope::parse(Some("system")).unwrap(), Scope::System);
        assert!(Scope::parse(Some("worktree")).is_err());
    }
}
