//! API keys: generation, hashing, permissions, and the extractor that authenticates a request.
//!
//! Every key belongs to one organization and acts only on that organization's resources. The
//! admin key (the one `daytona server` seeds) belongs to the default organization, has every
//! permission, manages organizations, and manages the API keys of another organization by
//! naming it in the `X-Daytona-Organization-ID` header on `/api-keys` routes. Elsewhere the
//! header is ignored for API keys, as Daytona ignores it, because it selects the organization
//! of a JWT login. The published Python SDK even sends an SSH token in it from
//! `revoke_ssh_access`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{ApiKeyRecord, Store, StoreError};

/// How long a validated key is trusted without asking the store again. Revocation through the
/// API clears the cache, so it takes effect at once in this process.
const KEY_CACHE_TTL: Duration = Duration::from_secs(10);

/// Most keys the cache holds; past it the cache starts over.
const KEY_CACHE_CAPACITY: usize = 10_000;

/// Prefix of every API key this server issues.
pub const KEY_PREFIX: &str = "dtn_";

/// Header with which the admin key names the organization it acts in.
pub const ORGANIZATION_HEADER: &str = "x-daytona-organization-id";

/// Daytona's organization resource permissions, which API keys are created with.
pub const PERMISSIONS: [&str; 21] = [
    "write:registries",
    "delete:registries",
    "write:snapshots",
    "delete:snapshots",
    "write:sandboxes",
    "delete:sandboxes",
    "read:volumes",
    "write:volumes",
    "delete:volumes",
    "write:regions",
    "delete:regions",
    "read:runners",
    "write:runners",
    "delete:runners",
    "read:audit_logs",
    "manage:api_keys",
    "manage:secrets",
    "read:limits",
    "manage:sso",
    "read:billing",
    "manage:billing",
];

/// Generates a new API key: `dtn_` and 64 hex digits of randomness.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// Returns the stored form of a key: its SHA-256 in hex.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The authenticated caller of a request: an API key and the organization it acts in.
#[derive(Debug, Clone)]
pub struct Caller {
    pub organization_id: String,
    pub key_id: String,
    pub key_name: String,
    pub is_admin: bool,
    /// `None` grants every permission.
    permissions: Option<Vec<String>>,
}

impl From<&ApiKeyRecord> for Caller {
    fn from(key: &ApiKeyRecord) -> Self {
        Self {
            organization_id: key.organization_id.clone(),
            key_id: key.id.clone(),
            key_name: key.name.clone(),
            is_admin: key.is_admin,
            permissions: if key.is_admin {
                None
            } else {
                key.permissions.clone()
            },
        }
    }
}

impl Caller {
    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions
            .as_ref()
            .is_none_or(|granted| granted.iter().any(|p| p == permission))
    }

    /// Returns a 403 error unless the caller is the admin key.
    pub fn require_admin(&self, action: &str) -> Result<(), ApiError> {
        if self.is_admin {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                format!(
                    "only the admin API key can {action}; API key {:?} belongs to one organization",
                    self.key_name
                ),
            ))
        }
    }
}

struct CacheEntry {
    caller: Caller,
    checked: Instant,
    expires_at: Option<OffsetDateTime>,
}

/// Validated keys by hash, each with the time it was checked.
#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, CacheEntry>>,
}

impl KeyCache {
    /// Resolves a presented key to its caller, or `None` when it is unknown, revoked or
    /// expired.
    pub async fn resolve(&self, store: &Store, key: &str) -> Result<Option<Caller>, StoreError> {
        let hash = hash_key(key);
        if let Some(entry) = self.entries.lock().expect("key cache lock").get(&hash)
            && entry.checked.elapsed() < KEY_CACHE_TTL
            && entry
                .expires_at
                .is_none_or(|at| OffsetDateTime::now_utc() < at)
        {
            return Ok(Some(entry.caller.clone()));
        }

        let Some(record) = store.api_key_by_hash(&hash).await? else {
            self.entries.lock().expect("key cache lock").remove(&hash);
            return Ok(None);
        };
        // A failed write of the last use must not fail the request that used the key.
        if let Err(error) = store
            .touch_api_key(&record.id, &daytona_wire::now_rfc3339())
            .await
        {
            tracing::warn!(key_id = %record.id, error = format!("{error:#}"), "failed to record an API key's last use");
        }
        let caller = Caller::from(&record);
        let entry = CacheEntry {
            caller: caller.clone(),
            checked: Instant::now(),
            expires_at: record
                .expires_at
                .as_deref()
                .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok()),
        };
        let mut entries = self.entries.lock().expect("key cache lock");
        if entries.len() >= KEY_CACHE_CAPACITY {
            entries.clear();
        }
        entries.insert(hash, entry);
        Ok(Some(caller))
    }

    /// Forgets every validated key, so that the next request with each key reads the store again.
    pub fn clear(&self) {
        self.entries.lock().expect("key cache lock").clear();
    }
}

/// Extracts the bearer token of the `Authorization` header.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Returns the permission a request needs beyond a valid key of the organization, by Daytona's rules:
/// reading sandboxes and snapshots needs none, changing them needs `write:*`, deleting them
/// `delete:*`. Toolbox requests run code in the sandbox, so they need `write:sandboxes`.
/// `path` is relative to the API URL, or starts with `/toolbox/`.
pub fn required_permission(method: &Method, path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let read = method == Method::GET || method == Method::HEAD;
    let delete = method == Method::DELETE;
    match segments.first().copied()? {
        "toolbox" => Some("write:sandboxes"),
        "sandbox" if read => None,
        "sandbox" if delete && segments.len() == 2 => Some("delete:sandboxes"),
        "sandbox" => Some("write:sandboxes"),
        "snapshots" if read => None,
        "snapshots" if delete => Some("delete:snapshots"),
        "snapshots" => Some("write:snapshots"),
        "volumes" if read => Some("read:volumes"),
        "volumes" if delete => Some("delete:volumes"),
        "volumes" => Some("write:volumes"),
        "api-keys" if read && segments.get(1) == Some(&"current") => None,
        "api-keys" => Some("manage:api_keys"),
        "secret" => Some("manage:secrets"),
        // Push access uploads build contexts, which only snapshot builds use.
        "object-storage" => Some("write:snapshots"),
        _ => None,
    }
}

/// Returns the request path relative to the API URL (the `/api` prefix removed), or the toolbox
/// path.
fn request_path(parts: &Parts) -> &str {
    let path = parts
        .extensions
        .get::<OriginalUri>()
        .map_or_else(|| parts.uri.path(), |original| original.path());
    match path.strip_prefix("/api") {
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
}

/// Applies `X-Daytona-Organization-ID` on `/api-keys` routes: the admin key may manage the
/// keys of any existing organization; another key may only name its own.
async fn apply_organization_header(
    parts: &Parts,
    path: &str,
    state: &AppState,
    caller: &mut Caller,
) -> Result<(), ApiError> {
    if !path.starts_with("/api-keys") {
        return Ok(());
    }
    let Some(requested) = parts
        .headers
        .get(ORGANIZATION_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty() && *value != caller.organization_id)
    else {
        return Ok(());
    };
    if !caller.is_admin {
        return Err(forbidden(format!(
            "API key {:?} belongs to organization {}, not {requested}; leave out the X-Daytona-Organization-ID header or use a key of that organization",
            caller.key_name, caller.organization_id
        )));
    }
    if state.store.organization_by_id(requested).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "organization {requested:?} named by X-Daytona-Organization-ID not found"
        )));
    }
    caller.organization_id = requested.to_owned();
    Ok(())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = bearer_token(parts) else {
            return Err(ApiError::unauthorized(
                "missing API key: send it as 'Authorization: Bearer <key>'",
            ));
        };
        let Some(mut caller) = state.keys.resolve(&state.store, token).await? else {
            return Err(ApiError::unauthorized(
                "invalid, revoked or expired API key",
            ));
        };
        let path = request_path(parts);
        apply_organization_header(parts, path, state, &mut caller).await?;

        if let Some(permission) = required_permission(&parts.method, path)
            && !caller.has_permission(permission)
        {
            return Err(forbidden(format!(
                "API key {:?} lacks the {permission:?} permission that {} {path} needs; use a key created with it",
                caller.key_name, parts.method
            )));
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_rules() {
        let cases = [
            (Method::GET, "/sandbox", None),
            (Method::GET, "/sandbox/abc", None),
            (Method::POST, "/sandbox", Some("write:sandboxes")),
            (Method::POST, "/sandbox/abc/stop", Some("write:sandboxes")),
            (Method::DELETE, "/sandbox/abc", Some("delete:sandboxes")),
            (
                Method::DELETE,
                "/sandbox/abc/ssh-access",
                Some("write:sandboxes"),
            ),
            (Method::GET, "/toolbox/abc/files", Some("write:sandboxes")),
            (Method::GET, "/snapshots/x", None),
            (Method::POST, "/snapshots", Some("write:snapshots")),
            (Method::DELETE, "/snapshots/x", Some("delete:snapshots")),
            (Method::GET, "/volumes", Some("read:volumes")),
            (Method::GET, "/api-keys/current", None),
            (Method::GET, "/api-keys", Some("manage:api_keys")),
            (Method::DELETE, "/api-keys/ci", Some("manage:api_keys")),
            (Method::GET, "/organizations", None),
            (Method::GET, "/health", None),
        ];
        for (method, path, expected) in cases {
            assert_eq!(
                required_permission(&method, path),
                expected,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn admin_has_every_permission() {
        let record = ApiKeyRecord {
            id: "k".into(),
            organization_id: "o".into(),
            name: "admin".into(),
            key_prefix: "dtn_".into(),
            is_admin: true,
            created_at: String::new(),
            last_used_at: None,
            revoked_at: None,
            permissions: Some(vec![]),
            expires_at: None,
        };
        assert!(Caller::from(&record).has_permission("delete:sandboxes"));
        let limited = ApiKeyRecord {
            is_admin: false,
            permissions: Some(vec!["write:sandboxes".into()]),
            ..record
        };
        let caller = Caller::from(&limited);
        assert!(caller.has_permission("write:sandboxes"));
        assert!(!caller.has_permission("delete:sandboxes"));
    }
}
