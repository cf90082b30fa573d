//! Blobs: reads by digest, and uploads (monolithic, chunked, and cross-repository mounts).
//!
//! An upload is a file in the image store's `uploads/` directory, named by a random id. When
//! the client finishes it, its content is checked against the digest the client names, and only
//! then does it become a blob.

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RANGE};
use axum::response::{IntoResponse, Response};
use daytona_images::ImageStore;
use futures_util::StreamExt;
use oci_spec::distribution::ErrorCode;
use tokio::io::AsyncWriteExt;

use super::empty;
use super::error::RegistryError;

const DIGEST_HEADER: &str = "docker-content-digest";
const UPLOAD_HEADER: &str = "docker-upload-uuid";

/// Largest upload accepted, so that one client cannot fill the disk with one blob.
const MAX_UPLOAD: u64 = 32 << 30;

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`.
pub async fn get(
    store: &ImageStore,
    digest: &str,
    with_body: bool,
) -> Result<Response, RegistryError> {
    let Some((path, size)) = store.blob_file(digest)? else {
        return Err(blob_unknown(digest));
    };
    let body = if with_body {
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|error| RegistryError::internal("failed to open a blob", error.into()))?;
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 16))
    } else {
        empty()
    };
    Ok((
        StatusCode::OK,
        [
            (CONTENT_TYPE, "application/octet-stream".to_owned()),
            (CONTENT_LENGTH, size.to_string()),
            (
                DIGEST_HEADER.parse().expect("valid header name"),
                digest.to_owned(),
            ),
        ],
        body,
    )
        .into_response())
}

/// `POST /v2/<name>/blobs/uploads/`: a mount (`?mount=&from=`), a monolithic upload
/// (`?digest=` with the content), or the start of a chunked one.
pub async fn start(
    store: &ImageStore,
    name: &str,
    query: &str,
    body: Body,
) -> Result<Response, RegistryError> {
    if let Some(digest) = query_value(query, "mount")
        && store.blob_file(&digest)?.is_some()
    {
        return Ok(created(name, &digest));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let blocking_store = store.clone();
    let upload = id.clone();
    let path = tokio::task::spawn_blocking(move || blocking_store.create_upload(&upload))
        .await
        .map_err(|error| RegistryError::internal("the image store task failed", error.into()))??;
    if let Some(digest) = query_value(query, "digest") {
        append_body(&path, 0, body).await?;
        commit(store, &id, &digest).await?;
        return Ok(created(name, &digest));
    }
    Ok(accepted(name, &id, 0))
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: appends a chunk.
pub async fn append(
    store: &ImageStore,
    name: &str,
    id: &str,
    body: Body,
) -> Result<Response, RegistryError> {
    let size = store.upload_size(id)?;
    let upload = store.upload_path(id)?;
    let size = append_body(&upload, size, body).await?;
    Ok(accepted(name, id, size))
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: appends the last chunk, if any, and stores
/// the blob once its content has that digest.
pub async fn finish(
    store: &ImageStore,
    name: &str,
    id: &str,
    query: &str,
    body: Body,
) -> Result<Response, RegistryError> {
    let Some(digest) = query_value(query, "digest") else {
        return Err(RegistryError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::DigestInvalid,
            "the digest query parameter is required to finish an upload",
        ));
    };
    let size = store.upload_size(id)?;
    let upload = store.upload_path(id)?;
    append_body(&upload, size, body).await?;
    commit(store, id, &digest).await?;
    Ok(created(name, &digest))
}

/// `GET /v2/<name>/blobs/uploads/<id>`: returns how much of the upload the server has.
pub async fn status(store: &ImageStore, name: &str, id: &str) -> Result<Response, RegistryError> {
    let size = store.upload_size(id)?;
    let mut response = accepted(name, id, size);
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`.
pub async fn cancel(store: &ImageStore, id: &str) -> Result<Response, RegistryError> {
    store.upload_size(id)?;
    store.remove_upload(id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn commit(store: &ImageStore, id: &str, digest: &str) -> Result<u64, RegistryError> {
    let store = store.clone();
    let (id, digest) = (id.to_owned(), digest.to_owned());
    let result = tokio::task::spawn_blocking(move || store.commit_upload(&id, &digest))
        .await
        .map_err(|error| RegistryError::internal("the image store task failed", error.into()))?;
    Ok(result?)
}

/// Appends the request body to the upload at `path`, which contains `size` bytes, and returns
/// the new size.
async fn append_body(
    path: &std::path::Path,
    mut size: u64,
    body: Body,
) -> Result<u64, RegistryError> {
    let write_error =
        |error: std::io::Error| RegistryError::internal("failed to write an upload", error.into());
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .await
        .map_err(write_error)?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| {
            RegistryError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::BlobUploadInvalid,
                format!("failed to read the upload body: {error}"),
            )
        })?;
        size += chunk.len() as u64;
        if size > MAX_UPLOAD {
            return Err(RegistryError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::SizeInvalid,
                format!("a blob may have at most {MAX_UPLOAD} bytes"),
            ));
        }
        file.write_all(&chunk).await.map_err(write_error)?;
    }
    file.flush().await.map_err(write_error)?;
    Ok(size)
}

fn accepted(name: &str, id: &str, size: u64) -> Response {
    let range = format!("0-{}", size.saturating_sub(1));
    (
        StatusCode::ACCEPTED,
        [
            (LOCATION, format!("/v2/{name}/blobs/uploads/{id}")),
            (RANGE, range),
            (
                UPLOAD_HEADER.parse().expect("valid header name"),
                id.to_owned(),
            ),
            (CONTENT_LENGTH, "0".to_owned()),
        ],
        empty(),
    )
        .into_response()
}

fn created(name: &str, digest: &str) -> Response {
    (
        StatusCode::CREATED,
        [
            (LOCATION, format!("/v2/{name}/blobs/{digest}")),
            (
                DIGEST_HEADER.parse().expect("valid header name"),
                digest.to_owned(),
            ),
            (CONTENT_LENGTH, "0".to_owned()),
        ],
        empty(),
    )
        .into_response()
}

fn blob_unknown(digest: &str) -> RegistryError {
    RegistryError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::BlobUnknown,
        format!("blob {digest} is not in this registry"),
    )
}

/// Returns the value of `key` in a query string.
pub fn query_value(query: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.into_owned())
        .filter(|value| !value.is_empty())
}
