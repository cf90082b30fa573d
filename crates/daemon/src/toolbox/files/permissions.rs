//! `POST /files/permissions`: changes the mode and owner of a file or directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use daytona_wire::ErrorBody;
use serde::Deserialize;

use super::manage::parse_mode;
use super::{FileAction, blocking, file_error, required_path};
use crate::toolbox::error::{ApiError, QueryParams};
use crate::toolbox::state::Toolbox;
use crate::toolbox::user::{GROUP_PATH, SandboxUser, UserError};

#[derive(Debug, Deserialize)]
pub struct PermissionsQuery {
    path: Option<String>,
    /// Octal permission bits, such as `644`.
    mode: Option<String>,
    /// User name or numeric uid.
    owner: Option<String>,
    /// Group name or numeric gid.
    group: Option<String>,
}

/// Sets the mode, the owner and the group of a path; parameters that are absent stay as
/// they are. Names are looked up in the sandbox's `/etc/passwd` and `/etc/group`. A symbolic
/// link is followed. Changing the owner needs the daemon to run as root, as it does in a
/// sandbox.
#[utoipa::path(post, path = "/files/permissions", tag = "files",
    params(("path" = String, Query), ("mode" = Option<String>, Query, description = "Octal mode, such as 644"),
        ("owner" = Option<String>, Query, description = "User name or uid"),
        ("group" = Option<String>, Query, description = "Group name or gid")),
    responses((status = 200, description = "Changed"), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn set_permissions(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(query): QueryParams<PermissionsQuery>,
) -> Result<StatusCode, ApiError> {
    let path = required_path(&toolbox, query.path.as_deref())?;
    let mode = non_empty(&query.mode).map(parse_mode).transpose()?;
    let uid = non_empty(&query.owner).map(user_id).transpose()?;
    let gid = non_empty(&query.group).map(group_id).transpose()?;
    blocking(move || apply(&path, mode, uid, gid)).await?;
    Ok(StatusCode::OK)
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|value| !value.is_empty())
}

fn apply(
    path: &Path,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<(), ApiError> {
    let failed = |error| file_error(FileAction::Write, path, error);
    fs::metadata(path).map_err(|error| file_error(FileAction::Read, path, error))?;
    // Owner before mode: changing the owner clears the set-user-ID and set-group-ID bits.
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(path, uid, gid).map_err(failed)?;
    }
    if let Some(mode) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(failed)?;
    }
    Ok(())
}

/// Resolves a user name or a numeric uid.
fn user_id(owner: &str) -> Result<u32, ApiError> {
    if let Ok(uid) = owner.parse() {
        return Ok(uid);
    }
    match SandboxUser::by_name(owner) {
        Ok(user) => Ok(user.uid),
        Err(UserError::NameNotFound { path, .. }) => Err(ApiError::bad_request(format!(
            "unknown user {owner:?}: it is not in {}; pass a user name from it or a uid",
            path.display()
        ))),
        Err(error) => Err(ApiError::internal(
            format!("failed to look up the user {owner:?}"),
            &error,
        )),
    }
}

/// Resolves a group name or a numeric gid.
fn group_id(group: &str) -> Result<u32, ApiError> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let text = fs::read_to_string(GROUP_PATH)
        .map_err(|error| ApiError::internal(format!("failed to read {GROUP_PATH}"), &error))?;
    find_group(&text, group).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown group {group:?}: it is not in {GROUP_PATH}; pass a group name from it or a gid"
        ))
    })
}

/// Finds the gid of a group in `/etc/group` text.
fn find_group(text: &str, name: &str) -> Option<u32> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let mut fields = line.split(':');
            let entry_name = fields.next()?;
            let gid = fields.nth(1)?;
            (entry_name == name).then(|| gid.parse().ok()).flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_found_by_name() {
        let text = "root:x:0:\n# comment\nusers:x:100:a,b\nbroken\ndaytona:x:1000:\n";
        assert_eq!(find_group(text, "users"), Some(100));
        assert_eq!(find_group(text, "daytona"), Some(1000));
        assert_eq!(find_group(text, "nobody"), None);
    }

    #[test]
    fn numeric_ids_need_no_lookup() {
        assert_eq!(user_id("1234").unwrap(), 1234);
        assert_eq!(group_id("4321").unwrap(), 4321);
    }

    #[test]
    fn mode_and_missing_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "x").unwrap();
        apply(&file, Some(0o700), None, None).unwrap();
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
            0o700
        );
        assert!(apply(&dir.path().join("none"), Some(0o700), None, None).is_err());
    }
}
