//! Manifests by tag or digest, and the tags of a repository.
//!
//! A tag `T` of repository `R` is the image `R:T` of the store; `R:latest` also finds an image
//! named just `R`.

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use axum::response::{IntoResponse, Response};
use daytona_images::{ImageStore, MANIFEST_MEDIA_TYPES, StoredManifest};
use oci_spec::distribution::{ErrorCode, TagListBuilder};

use super::blobs::query_value;
use super::error::RegistryError;
use crate::state::AppState;

const DIGEST_HEADER: &str = "docker-content-digest";

/// Largest manifest accepted.
const MAX_MANIFEST: usize = 4 << 20;

/// Checks that `tag` is 1 to 128 letters, digits and `._-`, not starting with `.` or `-`.
fn is_valid_tag(tag: &str) -> bool {
    tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn is_digest(reference: &str) -> bool {
    reference.contains(':')
}

/// `GET`/`HEAD /v2/<name>/manifests/<reference>`.
pub async fn get(
    store: &ImageStore,
    name: &str,
    reference: &str,
    with_body: bool,
) -> Result<Response, RegistryError> {
    let found = find(store, name, reference).await?;
    let Some(manifest) = found else {
        return Err(RegistryError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::ManifestUnknown,
            format!("manifest {name}:{reference} is not in this registry"),
        ));
    };
    let length = manifest.bytes.len().to_string();
    let body = if with_body {
        Body::from(manifest.bytes)
    } else {
        Body::empty()
    };
    Ok((
        StatusCode::OK,
        [
            (CONTENT_TYPE, manifest.media_type),
            (CONTENT_LENGTH, length),
            (
                DIGEST_HEADER.parse().expect("valid header name"),
                manifest.digest,
            ),
        ],
        body,
    )
        .into_response())
}

async fn find(
    store: &ImageStore,
    name: &str,
    reference: &str,
) -> Result<Option<StoredManifest>, RegistryError> {
    let store = store.clone();
    let (name, reference) = (name.to_owned(), reference.to_owned());
    let found = tokio::task::spawn_blocking(move || {
        if is_digest(&reference) {
            return store.manifest_by_digest(&reference);
        }
        if !is_valid_tag(&reference) {
            return Ok(None);
        }
        match store.manifest(&format!("{name}:{reference}"))? {
            Some(manifest) => Ok(Some(manifest)),
            None if reference == "latest" => store.manifest(&name),
            None => Ok(None),
        }
    })
    .await
    .map_err(|error| RegistryError::internal("the image store task failed", error.into()))?;
    Ok(found?)
}

/// `PUT /v2/<name>/manifests/<reference>`: stores an image manifest whose blobs were pushed,
/// and by tag names the image `<name>:<tag>`.
pub async fn put(
    state: &AppState,
    store: &ImageStore,
    name: &str,
    reference: &str,
    content_type: Option<String>,
    body: Body,
) -> Result<Response, RegistryError> {
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST)
        .await
        .map_err(|_| {
            RegistryError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::ManifestInvalid,
                format!("a manifest may have at most {MAX_MANIFEST} bytes"),
            )
        })?;
    let digest = daytona_images::sha256_digest(&bytes);
    let media_type = content_type
        .or_else(|| {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()?
                .get("mediaType")?
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_default();
    if !MANIFEST_MEDIA_TYPES.contains(&media_type.as_str()) {
        return Err(RegistryError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::ManifestInvalid,
            format!(
                "manifest media type {media_type:?} is not supported; push an image manifest of type {}",
                MANIFEST_MEDIA_TYPES.join(" or ")
            ),
        ));
    }
    let image_name = if is_digest(reference) {
        if reference != digest {
            return Err(RegistryError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::DigestInvalid,
                format!("the manifest has digest {digest}, not {reference}"),
            ));
        }
        None
    } else if is_valid_tag(reference) {
        Some(format!("{name}:{reference}"))
    } else {
        return Err(RegistryError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::ManifestInvalid,
            format!(
                "invalid tag {reference:?}: use 1 to 128 letters, digits and '._-', starting with a letter, digit or '_'"
            ),
        ));
    };

    if let Some(image_name) = &image_name {
        refuse_moving_a_used_tag(state, store, image_name, &digest).await?;
    }
    let blocking_store = store.clone();
    let bytes = bytes.to_vec();
    let stored_name = image_name.clone();
    let result = tokio::task::spawn_blocking(move || {
        blocking_store.put_manifest(stored_name.as_deref(), &bytes, &media_type)
    })
    .await
    .map_err(|error| RegistryError::internal("the image store task failed", error.into()))?;
    let digest = result?;
    tracing::info!(image = ?image_name, manifest = %digest, "manifest pushed");
    Ok((
        StatusCode::CREATED,
        [
            (LOCATION, format!("/v2/{name}/manifests/{digest}")),
            (DIGEST_HEADER.parse().expect("valid header name"), digest),
            (CONTENT_LENGTH, "0".to_owned()),
        ],
    )
        .into_response())
}

/// A snapshot reads its image by name, so a tag that snapshots use must keep its manifest.
async fn refuse_moving_a_used_tag(
    state: &AppState,
    store: &ImageStore,
    image_name: &str,
    digest: &str,
) -> Result<(), RegistryError> {
    let lookup = (store.clone(), image_name.to_owned());
    let current = tokio::task::spawn_blocking(move || lookup.0.manifest(&lookup.1))
        .await
        .map_err(|error| RegistryError::internal("the image store task failed", error.into()))??;
    let Some(current) = current else {
        return Ok(());
    };
    if current.digest == digest {
        return Ok(());
    }
    let users = state
        .store
        .snapshots_using_image(image_name)
        .await
        .map_err(|error| RegistryError::internal("the state store failed", error.into()))?;
    if users > 0 || image_name == daytona_images::DEFAULT_SNAPSHOT {
        return Err(RegistryError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Denied,
            format!(
                "image {image_name} is used by {users} snapshot(s), so its tag cannot move to another manifest; push under a new tag"
            ),
        ));
    }
    Ok(())
}

/// `GET /v2/<name>/tags/list?n=&last=`.
pub async fn tags(store: &ImageStore, name: &str, query: &str) -> Result<Response, RegistryError> {
    let blocking_store = store.clone();
    let names = tokio::task::spawn_blocking(move || blocking_store.names())
        .await
        .map_err(|error| RegistryError::internal("the image store task failed", error.into()))??;
    let prefix = format!("{name}:");
    let mut tags: Vec<String> = names
        .iter()
        .filter_map(|image| {
            if image == name {
                Some("latest".to_owned())
            } else {
                image.strip_prefix(&prefix).map(str::to_owned)
            }
        })
        .collect();
    if tags.is_empty() {
        return Err(RegistryError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NameUnknown,
            format!("repository {name} is not in this registry"),
        ));
    }
    tags.sort();
    tags.dedup();
    if let Some(last) = query_value(query, "last") {
        tags.retain(|tag| *tag > last);
    }
    if let Some(limit) = query_value(query, "n").and_then(|n| n.parse::<usize>().ok()) {
        tags.truncate(limit);
    }
    let list = TagListBuilder::default()
        .name(name)
        .tags(tags)
        .build()
        .expect("a tag list with a name and tags always builds");
    Ok(axum::Json(list).into_response())
}
