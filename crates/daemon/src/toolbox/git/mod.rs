//! `/git/*`: repositories in the sandbox, through the `git` program.
//!
//! Git runs as the sandbox user through the launcher, like every other workload, so files it
//! writes belong to the user and it reads the user's `~/.gitconfig`. See [`cli`] for how runs
//! are set up (hooks, prompts, credentials) and [`errors`] for how failures map to Daytona's
//! error codes. Repository paths are absolute or relative to the work directory.

mod branches;
mod cli;
mod config;
mod errors;
mod remote;
mod repo;
mod status;
mod url;

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::state::Toolbox;

pub fn routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::new()
        .routes(routes!(repo::clone))
        .routes(routes!(repo::init))
        .routes(routes!(status::status))
        .routes(routes!(repo::add))
        .routes(routes!(repo::commit))
        .routes(routes!(repo::reset))
        .routes(routes!(repo::restore))
        .routes(routes!(repo::history))
        .routes(routes!(
            branches::list_branches,
            branches::create_branch,
            branches::delete_branch
        ))
        .routes(routes!(branches::checkout))
        .routes(routes!(remote::push))
        .routes(routes!(remote::pull))
        .routes(routes!(remote::list_remotes, remote::add_remote))
        .routes(routes!(config::get_config, config::set_config))
        .routes(routes!(config::configure_user))
        .routes(routes!(config::authenticate))
}

/// Resolves a path from a request: relative paths are relative to the work directory.
fn request_path(toolbox: &Toolbox, field: &str, path: Option<&str>) -> Result<PathBuf, ApiError> {
    match path {
        None | Some("") => Err(ApiError::bad_request(format!("missing {field}"))),
        Some(path) if path.contains('\0') => Err(ApiError::bad_request(format!(
            "invalid {field} {path:?}: it contains a NUL byte"
        ))),
        Some(path) => Ok(toolbox.resolve(path)),
    }
}

/// Resolves the path of an existing repository (or of a directory inside one).
fn repository(toolbox: &Toolbox, path: Option<&str>) -> Result<PathBuf, ApiError> {
    let path = request_path(toolbox, "path", path)?;
    let problem = match std::fs::metadata(&path) {
        Ok(metadata) if metadata.is_dir() => return Ok(path),
        Ok(_) => "it is a file, not a directory",
        Err(_) => "the directory does not exist",
    };
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "GIT_REPO_NOT_FOUND",
        format!("no repository at {}: {problem}", path.display()),
    ))
}

/// Rejects a value that git would read as an option, or that cannot be an argument.
fn check_argument(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(ApiError::bad_request(format!("missing {field}")));
    }
    if value.starts_with('-') {
        return Err(ApiError::bad_request(format!(
            "invalid {field} {value:?}: it must not start with '-'"
        )));
    }
    if value.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "invalid {field} {value:?}: it contains a NUL byte"
        )));
    }
    Ok(())
}
