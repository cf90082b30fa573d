//! `GET /files/download` (one file) and `POST /files/bulk-download` (a multipart stream of
//! files), both streamed from disk byte for byte.

use std::fs::Metadata;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use daytona_wire::ErrorBody;
use daytona_wire::toolbox::FilesDownloadRequest;
use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use tokio_util::io::ReaderStream;

use super::{FileAction, blocking, checked_path, file_error, invalid_path, required_path};
use crate::toolbox::error::{ApiError, JsonBody, QueryParams};
use crate::toolbox::state::Toolbox;

/// Size of one read from a downloaded file.
const READ_CHUNK: usize = 256 * 1024;

/// Path of the bulk-download route, as error parts report it.
const BULK_DOWNLOAD_PATH: &str = "/files/bulk-download";

#[derive(Debug, Deserialize)]
pub struct DownloadQuery {
    path: Option<String>,
}

/// Sends one file as `application/octet-stream`.
#[utoipa::path(get, path = "/files/download", tag = "files", params(("path" = String, Query)),
    responses((status = 200, description = "The file's bytes", content_type = "application/octet-stream"),
        (status = 404, body = ErrorBody)))]
pub async fn download(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(query): QueryParams<DownloadQuery>,
) -> Result<Response, ApiError> {
    let path = required_path(&toolbox, query.path.as_deref())?;
    let (file, metadata) = open_file(path.clone()).await?;

    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let disposition = format!(
        "attachment; filename=\"{}\"; filename*=UTF-8''{}",
        quote_filename(&name),
        percent_encode(&name)
    );
    let mut response =
        Body::from_stream(ReaderStream::with_capacity(file, READ_CHUNK)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(metadata.len()));
    // The quoted name may hold UTF-8, which HTTP allows in header values as opaque bytes;
    // clients that need it exactly read `filename*`.
    if let Ok(disposition) = HeaderValue::from_bytes(disposition.as_bytes()) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}

/// Opens a regular file for reading. Anything else is a client error: a directory has no
/// content, and a FIFO or device could block the read or never end.
async fn open_file(path: PathBuf) -> Result<(tokio::fs::File, Metadata), ApiError> {
    blocking(move || {
        let failed = |error| file_error(FileAction::Read, &path, error);
        // O_NONBLOCK keeps the open from waiting for a writer if the path became a FIFO;
        // reads from a regular file ignore the flag.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(failed)?;
        let metadata = file.metadata().map_err(failed)?;
        if metadata.is_dir() {
            return Err(invalid_path(format!(
                "{} is a directory, not a file",
                path.display()
            )));
        }
        if !metadata.is_file() {
            return Err(invalid_path(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        Ok((tokio::fs::File::from_std(file), metadata))
    })
    .await
}

/// Sends the requested files as one `multipart/form-data` stream: a part named `file` per
/// file that could be read, a part named `error` with Daytona's JSON error body per file that
/// could not. Each part's `filename` is the path exactly as requested, which is how clients
/// match parts to requests, and file parts carry a `Content-Length`. The stream always ends
/// with the closing boundary unless reading a file fails midway, in which case the response
/// is cut short so that the client sees it as incomplete.
#[utoipa::path(post, path = "/files/bulk-download", tag = "files", request_body = FilesDownloadRequest,
    responses((status = 200, description = "multipart/form-data: a `file` or `error` part per path", content_type = "multipart/form-data"),
        (status = 400, body = ErrorBody)))]
pub async fn bulk_download(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<FilesDownloadRequest>,
) -> Response {
    let boundary = format!("DAYTONA-FILE-BOUNDARY-{}", uuid::Uuid::new_v4().simple());
    let closing = Bytes::from(format!("--{boundary}--\r\n"));

    let parts_boundary = boundary.clone();
    let parts = stream::iter(request.paths)
        .then(move |requested| {
            let toolbox = Arc::clone(&toolbox);
            let boundary = parts_boundary.clone();
            async move { part(&toolbox, &boundary, requested).await }
        })
        .flatten();
    let body = parts.chain(stream::once(async move { Ok(closing) }));

    let content_type = format!("multipart/form-data; boundary={boundary}");
    let mut response = Body::from_stream(body).into_response();
    if let Ok(content_type) = HeaderValue::from_str(&content_type) {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

/// Builds one part of a bulk download: the file's bytes, or an error body.
async fn part(
    toolbox: &Toolbox,
    boundary: &str,
    requested: String,
) -> BoxStream<'static, std::io::Result<Bytes>> {
    let opened = match checked_path(toolbox, &requested) {
        Ok(path) => open_file(path).await,
        Err(error) => Err(error),
    };
    match opened {
        Ok((file, metadata)) => {
            // The part is as long as the file was when opened, so that its Content-Length
            // stays true even if the file grows meanwhile; clients use it to report progress.
            let length = metadata.len();
            let head = part_head(
                boundary,
                "file",
                &requested,
                "application/octet-stream",
                Some(length),
            );
            let content = tokio::io::AsyncReadExt::take(file, length);
            stream::once(async move { Ok(head) })
                .chain(ReaderStream::with_capacity(content, READ_CHUNK))
                .chain(stream::once(async { Ok(Bytes::from_static(b"\r\n")) }))
                .boxed()
        }
        Err(error) => {
            let body = error.to_body("POST", BULK_DOWNLOAD_PATH);
            let json = serde_json::to_vec(&body).unwrap_or_default();
            let mut bytes =
                part_head(boundary, "error", &requested, "application/json", None).to_vec();
            bytes.extend_from_slice(&json);
            bytes.extend_from_slice(b"\r\n");
            stream::once(async move { Ok(Bytes::from(bytes)) }).boxed()
        }
    }
    .map_err(|error| {
        tracing::warn!(%error, "bulk download cut short by a read error");
        error
    })
    .boxed()
}

fn part_head(
    boundary: &str,
    name: &str,
    filename: &str,
    content_type: &str,
    length: Option<u64>,
) -> Bytes {
    let length = length
        .map(|length| format!("Content-Length: {length}\r\n"))
        .unwrap_or_default();
    Bytes::from(format!(
        "--{boundary}\r\n\
         Content-Disposition: form-data; name=\"{name}\"; filename=\"{}\"; filename*=utf-8''{}\r\n\
         Content-Type: {content_type}\r\n{length}\r\n",
        quote_filename(filename),
        percent_encode(filename),
    ))
}

/// Escapes a file name for a quoted header parameter. Line breaks cannot appear in a header at
/// all, so they are percent-encoded; clients that need the exact name read `filename*`.
fn quote_filename(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            '\r' => quoted.push_str("%0D"),
            '\n' => quoted.push_str("%0A"),
            _ => quoted.push(c),
        }
    }
    quoted
}

/// Percent-encodes a file name for an RFC 5987 `filename*` parameter: every byte of its UTF-8
/// form outside the attribute characters becomes `%XX`.
fn percent_encode(name: &str) -> String {
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_attribute_characters() {
        assert_eq!(percent_encode("a-b_c.txt"), "a-b_c.txt");
        assert_eq!(percent_encode("/tmp/a b.txt"), "%2Ftmp%2Fa%20b.txt");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quote_filename(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(quote_filename("a\nb"), "a%0Ab");
    }

    #[test]
    fn part_head_names_the_requested_path() {
        let head = part_head("B", "file", "dir/x.bin", "application/octet-stream", None);
        assert_eq!(
            head,
            "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"dir/x.bin\"; \
             filename*=utf-8''dir%2Fx.bin\r\nContent-Type: application/octet-stream\r\n\r\n"
        );
        let head = part_head("B", "file", "x", "application/octet-stream", Some(12));
        assert!(
            head.ends_with(b"Content-Type: application/octet-stream\r\nContent-Length: 12\r\n\r\n")
        );
    }
}
