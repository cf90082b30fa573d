//! The OCI distribution API under `/v2/`, served from the image store, so that standard
//! clients (skopeo, docker, crane) push and pull images.
//!
//! Clients authenticate with HTTP basic auth whose password is an API key, and the user name is
//! ignored. A request without credentials gets 401 with a `Basic` challenge. Pulls need any
//! valid key, pushes the `write:snapshots` permission. A manifest pushed as `NAME:TAG` becomes
//! the image `NAME:TAG` of the store, which `POST /api/snapshots` registers as a snapshot;
//! `NAME:latest` also finds an image named just `NAME`, such as the default snapshot. Errors
//! use the distribution spec's JSON shape, `{"errors":[{"code","message"}]}`.
//!
//! Repository names share one namespace across organizations, as the image store does; a tag
//! that a snapshot uses cannot be moved to another manifest.

mod blobs;
mod error;
mod manifests;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, HeaderValue};
use axum::http::{HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use daytona_images::{Credentials, ImageStore};
use oci_spec::distribution::ErrorCode;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use error::RegistryError;

/// Header every response of the registry carries.
const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

/// Environment variable with `USER:PASSWORD` for pulls from other registries.
pub const PULL_AUTH_ENV: &str = "DAYTONA_REGISTRY_AUTH";

/// The `/v2` routes; every path under it goes to one handler, because repository names contain
/// slashes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2", any(handle))
        .route("/v2/", any(handle))
        .route("/v2/{*path}", any(handle))
}

/// The resource that a path under `/v2/` names.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Base,
    Tags { name: &'a str },
    Manifest { name: &'a str, reference: &'a str },
    Uploads { name: &'a str },
    Upload { name: &'a str, id: &'a str },
    Blob { name: &'a str, digest: &'a str },
}

fn parse_target(path: &str) -> Option<Target<'_>> {
    let rest = path.strip_prefix("/v2").unwrap_or(path);
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some(Target::Base);
    }
    let target = if let Some(name) = rest.strip_suffix("/tags/list") {
        Target::Tags { name }
    } else if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        Target::Manifest { name, reference }
    } else if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        Target::Uploads { name }
    } else if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
        Target::Upload { name, id }
    } else if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        Target::Blob { name, digest }
    } else {
        return None;
    };
    let name = match &target {
        Target::Base => "",
        Target::Tags { name }
        | Target::Manifest { name, .. }
        | Target::Uploads { name }
        | Target::Upload { name, .. }
        | Target::Blob { name, .. } => name,
    };
    is_valid_repository(name).then_some(target)
}

/// Checks that `name` is a repository name this registry accepts. That is 1 to 100 bytes of
/// components joined by `/`, each of lowercase letters, digits and `._-` and starting with a
/// letter or digit. The length limit makes `NAME:TAG` fit an image name.
fn is_valid_repository(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name.split('/').all(|component| {
            component
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && component
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        })
}

async fn handle(State(state): State<AppState>, request: Request) -> Response {
    let mut response = match dispatch(&state, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    response
        .headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    response
}

async fn dispatch(state: &AppState, request: Request) -> Result<Response, RegistryError> {
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let caller = authenticate(state, authorization.as_deref()).await?;

    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let method = request.method().clone();
    let target = parse_target(&path).ok_or_else(|| {
        RegistryError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NameInvalid,
            format!("{path} is not a registry path, or its repository name is invalid: use lowercase letters, digits and '._-' in components joined by '/'"),
        )
    })?;
    let writes = !matches!(method, Method::GET | Method::HEAD);
    if writes && !caller.has_permission("write:snapshots") {
        return Err(RegistryError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Denied,
            format!(
                "API key {:?} lacks the \"write:snapshots\" permission that pushes need",
                caller.key_name
            ),
        ));
    }

    let store = open_store(state).await?;
    let content_type = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.split(';').next().unwrap_or(value).trim().to_owned())
        .filter(|value| !value.is_empty());
    let body = request.into_body();
    match (target, method) {
        (Target::Base, Method::GET | Method::HEAD) => Ok((
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response()),
        (Target::Tags { name }, Method::GET) => manifests::tags(&store, name, &query).await,
        (Target::Manifest { name, reference }, Method::GET) => {
            manifests::get(&store, name, reference, true).await
        }
        (Target::Manifest { name, reference }, Method::HEAD) => {
            manifests::get(&store, name, reference, false).await
        }
        (Target::Manifest { name, reference }, Method::PUT) => {
            manifests::put(state, &store, name, reference, content_type, body).await
        }
        (Target::Blob { digest, .. }, Method::GET) => blobs::get(&store, digest, true).await,
        (Target::Blob { digest, .. }, Method::HEAD) => blobs::get(&store, digest, false).await,
        (Target::Uploads { name }, Method::POST) => blobs::start(&store, name, &query, body).await,
        (Target::Upload { name, id }, Method::PATCH) => blobs::append(&store, name, id, body).await,
        (Target::Upload { name, id }, Method::PUT) => {
            blobs::finish(&store, name, id, &query, body).await
        }
        (Target::Upload { name, id }, Method::GET) => blobs::status(&store, name, id).await,
        (Target::Upload { id, .. }, Method::DELETE) => blobs::cancel(&store, id).await,
        (_, method) => Err(RegistryError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unsupported,
            format!("{method} {path} is not supported by this registry"),
        )),
    }
}

/// Resolves the API key in the request's basic auth password (or a bearer token).
async fn authenticate(state: &AppState, header: Option<&str>) -> Result<Caller, RegistryError> {
    let Some(key) = header.and_then(api_key) else {
        return Err(RegistryError::unauthorized(
            "authentication required: use an API key as the password of HTTP basic auth (any user name)",
        ));
    };
    match state.keys.resolve(&state.store, &key).await {
        Ok(Some(caller)) => Ok(caller),
        Ok(None) => Err(RegistryError::unauthorized(
            "invalid, revoked or expired API key",
        )),
        Err(error) => Err(RegistryError::internal(
            "the state store failed",
            anyhow::Error::from(error),
        )),
    }
}

/// Extracts the API key of an `Authorization` header: the password of `Basic`, or a `Bearer`
/// token.
fn api_key(header: &str) -> Option<String> {
    let (scheme, value) = header.split_once(' ')?;
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!value.is_empty()).then(|| value.to_owned());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(value).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    (!password.is_empty()).then(|| password.to_owned())
}

async fn open_store(state: &AppState) -> Result<ImageStore, RegistryError> {
    let root = state.config.image_cache_dir.clone();
    tokio::task::spawn_blocking(move || ImageStore::open(&root))
        .await
        .map_err(|error| RegistryError::internal("the image store task failed", error.into()))?
        .map_err(|error| RegistryError::internal("failed to open the image store", error.into()))
}

/// Pulls `reference` (`host:port/name:tag`) into the image store under the same name, with the
/// credentials of [`PULL_AUTH_ENV`] when it is set. For `POST /snapshots` with an image that
/// is not in the store.
pub async fn pull_image(
    store: &ImageStore,
    reference: &str,
) -> Result<daytona_images::Image, ApiError> {
    let credentials = std::env::var(PULL_AUTH_ENV)
        .ok()
        .and_then(|text| Credentials::parse(&text));
    let progress = |line: &str| tracing::info!(reference, line, "pull");
    match store
        .pull(reference, reference, credentials.as_ref(), &progress)
        .await
    {
        Ok(image) => Ok(image),
        Err(
            error
            @ (daytona_images::Error::Pull { .. } | daytona_images::Error::InvalidName { .. }),
        ) => Err(ApiError::bad_request(format!(
            "image {reference:?} is not in the image store, and pulling it failed: {}",
            crate::error::error_chain(&error)
        ))),
        Err(error) => Err(ApiError::internal(
            format!("failed to store the image pulled from {reference}"),
            error,
        )),
    }
}

/// Returns an empty body, for responses that carry only headers.
fn empty() -> Body {
    Body::empty()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn paths_are_split_into_targets() {
        assert_eq!(parse_target("/v2/"), Some(Target::Base));
        assert_eq!(parse_target("/v2"), Some(Target::Base));
        assert_eq!(
            parse_target("/v2/a/b/tags/list"),
            Some(Target::Tags { name: "a/b" })
        );
        assert_eq!(
            parse_target("/v2/a/b/manifests/v1"),
            Some(Target::Manifest {
                name: "a/b",
                reference: "v1"
            })
        );
        assert_eq!(
            parse_target("/v2/a/blobs/uploads/"),
            Some(Target::Uploads { name: "a" })
        );
        assert_eq!(
            parse_target("/v2/a/blobs/uploads/123"),
            Some(Target::Upload {
                name: "a",
                id: "123"
            })
        );
        assert_eq!(
            parse_target("/v2/a/blobs/sha256:00"),
            Some(Target::Blob {
                name: "a",
                digest: "sha256:00"
            })
        );
        assert_eq!(parse_target("/v2/A/tags/list"), None);
        assert_eq!(parse_target("/v2/a//b/tags/list"), None);
        assert_eq!(parse_target("/v2/nothing"), None);
    }

    #[test]
    fn the_api_key_is_the_basic_auth_password() {
        let header = format!("Basic {}", STANDARD.encode("anyone:dtn_key"));
        assert_eq!(api_key(&header).as_deref(), Some("dtn_key"));
        assert_eq!(api_key("Bearer dtn_key").as_deref(), Some("dtn_key"));
        assert_eq!(
            api_key(&format!("Basic {}", STANDARD.encode("user:"))),
            None
        );
        assert_eq!(api_key("Digest x"), None);
    }
}
