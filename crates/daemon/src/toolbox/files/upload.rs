//! `POST /files/upload` and `POST /files/bulk-upload`: multipart uploads, streamed to disk.
//!
//! Every file is written atomically: into a temporary file in the destination's directory,
//! which is then renamed over the destination. A failed or interrupted upload leaves the old
//! file as it was and removes the temporary file.

use std::collections::BTreeMap;
use std::fs::{self, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use daytona_wire::ErrorBody;
use daytona_wire::files::UploadedFile;
use daytona_wire::toolbox::{FsFileResult, UploadFilesResponse};
use futures_util::{Stream, StreamExt};
use multer::{Field, Multipart};
use serde::Deserialize;
use tokio::io::{AsyncWriteExt, BufWriter};

use super::manage::{DEFAULT_DIR_MODE, create_dir_all};
use super::{FileAction, blocking, file_error, invalid_path, required_path, set_owner};
use crate::toolbox::error::{ApiError, ErrorChain, QueryParams};
use crate::toolbox::state::Toolbox;

/// Mode of files an upload creates; a replaced file keeps its mode.
const NEW_FILE_MODE: u32 = 0o644;

/// How long an upload may go without receiving a byte before it is abandoned.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Size of the write buffer between the request body and the file.
const WRITE_BUFFER: usize = 1024 * 1024;

/// Prefix of the temporary files of uploads in progress.
pub const TEMP_PREFIX: &str = ".daytona-upload-";

/// Directory where file parts that arrive before their destination path wait for it.
const STAGING_DIR: &str = "/tmp";

/// Most symbolic links followed to find the file an upload replaces, as Linux's own limit.
const MAX_SYMLINK_HOPS: usize = 40;

#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    path: Option<String>,
}

/// Uploads one file from the multipart field `file` to `path`.
#[utoipa::path(post, path = "/files/upload", tag = "files", params(("path" = String, Query)),
    request_body(content_type = "multipart/form-data", description = "One file field named `file`"),
    responses((status = 200, description = "Uploaded"), (status = 400, body = ErrorBody)))]
pub async fn upload(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(query): QueryParams<UploadQuery>,
    request: Request,
) -> Result<Json<FsFileResult>, ApiError> {
    let destination = required_path(&toolbox, query.path.as_deref())?;
    let bytes = write_file_field(&toolbox, &destination, multipart(request)?).await?;
    Ok(Json(FsFileResult {
        path: destination.display().to_string(),
        bytes,
    }))
}

/// Uploads one file to `path`, from the multipart field `file`, or from the whole body when
/// it is not `multipart/form-data`. Signed upload URLs lead here; the API checks the
/// signature before it forwards the request, so for the toolbox this is an ordinary route.
/// The write follows the rules of every upload: atomic, through symbolic links, parents
/// created, new files with mode 0644.
#[utoipa::path(post, path = "/files/upload-v2", tag = "files", params(("path" = String, Query)),
    request_body(content_type = "multipart/form-data",
        description = "One file field named `file`; a body of any other content type is the file's content"),
    responses((status = 200, body = UploadedFile), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn upload_v2(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(query): QueryParams<UploadQuery>,
    request: Request,
) -> Result<Json<UploadedFile>, ApiError> {
    let destination = required_path(&toolbox, query.path.as_deref())?;
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if is_multipart {
        write_file_field(&toolbox, &destination, multipart(request)?).await?;
    } else {
        let body = request.into_body().into_data_stream();
        write_atomically(&destination, toolbox.file_owner, body)
            .await
            .map_err(WriteError::into_api_error)?;
    }

    let name = destination
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Json(UploadedFile {
        name,
        path: query.path.unwrap_or_default(),
        kind: "file".to_owned(),
    }))
}

/// Writes the content of the first field named `file` to `destination`; other fields are
/// skipped.
async fn write_file_field(
    toolbox: &Toolbox,
    destination: &Path,
    mut multipart: Multipart<'static>,
) -> Result<u64, ApiError> {
    loop {
        let field = match next_field(&mut multipart).await {
            Ok(Some(field)) => field,
            Ok(None) => {
                return Err(ApiError::bad_request(
                    "missing multipart field file with the content",
                ));
            }
            Err(message) => return Err(ApiError::bad_request(message)),
        };
        if field.name() != Some("file") {
            continue;
        }
        return write_atomically(destination, toolbox.file_owner, field)
            .await
            .map_err(WriteError::into_api_error);
    }
}

/// Uploads every file of a multipart body: for each index `i`, the text field
/// `files[i].path` names the destination and the file field `files[i].file` carries the
/// content. A file that fails does not stop the others; the response lists what was written
/// and what failed, with status 400 when anything failed.
#[utoipa::path(post, path = "/files/bulk-upload", tag = "files",
    request_body(content_type = "multipart/form-data", description = "Fields `files[i].path` and `files[i].file` for each file i"),
    responses((status = 200, body = UploadFilesResponse), (status = 400, body = UploadFilesResponse)))]
pub async fn bulk_upload(State(toolbox): State<Arc<Toolbox>>, request: Request) -> Response {
    let mut multipart = match multipart(request) {
        Ok(multipart) => multipart,
        Err(error) => return error.into_response(),
    };
    let mut upload = BulkUpload::new(toolbox);
    loop {
        match next_field(&mut multipart).await {
            Ok(Some(field)) => {
                if let Err(message) = upload.accept(field).await {
                    // The body itself is broken; nothing after this point can be read.
                    upload.errors.push(message);
                    break;
                }
            }
            Ok(None) => break,
            Err(message) => {
                upload.errors.push(message);
                break;
            }
        }
    }
    upload.finish().await
}

fn multipart(request: Request) -> Result<Multipart<'static>, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        ApiError::bad_request(format!(
            "expected a multipart/form-data body, got content type {content_type:?}"
        ))
    })?;
    Ok(Multipart::new(
        request.into_body().into_data_stream(),
        boundary,
    ))
}

async fn next_field(multipart: &mut Multipart<'static>) -> Result<Option<Field<'static>>, String> {
    match tokio::time::timeout(IDLE_TIMEOUT, multipart.next_field()).await {
        Ok(Ok(field)) => Ok(field),
        Ok(Err(error)) => Err(format!("invalid multipart body: {error}")),
        Err(_) => Err(idle_message()),
    }
}

fn idle_message() -> String {
    format!(
        "upload abandoned: no data received for {} seconds",
        IDLE_TIMEOUT.as_secs()
    )
}

/// The role of a bulk-upload field, parsed from its name.
#[derive(Debug, PartialEq, Eq)]
enum FieldRole {
    Path(usize),
    File(usize),
}

fn field_role(name: &str) -> Option<FieldRole> {
    let rest = name.strip_prefix("files[")?;
    let (index, suffix) = rest.split_once(']')?;
    let index = index.parse().ok()?;
    match suffix {
        ".path" => Some(FieldRole::Path(index)),
        ".file" => Some(FieldRole::File(index)),
        _ => None,
    }
}

/// State of one bulk upload.
struct BulkUpload {
    toolbox: Arc<Toolbox>,
    /// Destinations by index, as requested.
    paths: BTreeMap<usize, String>,
    /// File parts that arrived before their path.
    staged: BTreeMap<usize, StagedFile>,
    files: Vec<FsFileResult>,
    errors: Vec<String>,
}

impl BulkUpload {
    fn new(toolbox: Arc<Toolbox>) -> Self {
        Self {
            toolbox,
            paths: BTreeMap::new(),
            staged: BTreeMap::new(),
            files: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Handles one field. `Err` means the body broke and the upload cannot continue.
    async fn accept(&mut self, field: Field<'static>) -> Result<(), String> {
        match field.name().and_then(field_role) {
            Some(FieldRole::Path(index)) => {
                let path = field
                    .text()
                    .await
                    .map_err(|error| format!("invalid multipart body: {error}"))?;
                self.paths.insert(index, path.clone());
                if let Some(staged) = self.staged.remove(&index) {
                    self.install_staged(&path, staged).await;
                }
                Ok(())
            }
            Some(FieldRole::File(index)) => match self.paths.get(&index).cloned() {
                Some(path) => self.write(&path, field).await,
                None => self.stage(index, field).await,
            },
            // Unknown fields are skipped; multer discards their data with the field.
            None => Ok(()),
        }
    }

    async fn write(&mut self, requested: &str, field: Field<'static>) -> Result<(), String> {
        let destination = match super::checked_path(&self.toolbox, requested) {
            Ok(destination) => destination,
            Err(error) => {
                self.errors
                    .push(format!("{requested}: {}", error.message()));
                return Ok(());
            }
        };
        match write_atomically(&destination, self.toolbox.file_owner, field).await {
            Ok(bytes) => {
                self.files.push(FsFileResult {
                    path: requested.to_owned(),
                    bytes,
                });
                Ok(())
            }
            Err(WriteError::Destination(error)) => {
                self.errors
                    .push(format!("{requested}: {}", error.message()));
                Ok(())
            }
            Err(WriteError::Body(message)) => Err(format!("{requested}: {message}")),
        }
    }

    async fn stage(&mut self, index: usize, field: Field<'static>) -> Result<(), String> {
        match StagedFile::receive(field).await {
            Ok(staged) => {
                self.staged.insert(index, staged);
                Ok(())
            }
            Err(WriteError::Destination(error)) => {
                self.errors
                    .push(format!("files[{index}].file: {}", error.message()));
                Ok(())
            }
            Err(WriteError::Body(message)) => Err(format!("files[{index}].file: {message}")),
        }
    }

    async fn install_staged(&mut self, requested: &str, staged: StagedFile) {
        let stream = match staged.open().await {
            Ok(stream) => stream,
            Err(error) => {
                self.errors.push(format!(
                    "{requested}: failed to read the staged upload: {error}"
                ));
                return;
            }
        };
        let destination = match super::checked_path(&self.toolbox, requested) {
            Ok(destination) => destination,
            Err(error) => {
                self.errors
                    .push(format!("{requested}: {}", error.message()));
                return;
            }
        };
        match write_atomically(&destination, self.toolbox.file_owner, stream).await {
            Ok(bytes) => self.files.push(FsFileResult {
                path: requested.to_owned(),
                bytes,
            }),
            Err(WriteError::Destination(error)) => self
                .errors
                .push(format!("{requested}: {}", error.message())),
            Err(WriteError::Body(message)) => self.errors.push(format!("{requested}: {message}")),
        }
    }

    async fn finish(mut self) -> Response {
        for index in std::mem::take(&mut self.staged).into_keys() {
            self.errors.push(format!(
                "files[{index}].file has no files[{index}].path field naming its destination"
            ));
        }
        let status = if self.errors.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        let body = UploadFilesResponse {
            files: self.files,
            errors: self.errors,
        };
        (status, Json(body)).into_response()
    }
}

/// Failure to write an upload.
#[derive(Debug)]
enum WriteError {
    /// The destination cannot be written; other files of the same request may still succeed.
    Destination(ApiError),
    /// The request body failed (broken, truncated or idle); nothing more can be read from it.
    Body(String),
}

impl WriteError {
    fn into_api_error(self) -> ApiError {
        match self {
            Self::Destination(error) => error,
            Self::Body(message) => ApiError::bad_request(message),
        }
    }
}

/// Writes a stream of bytes to `destination` atomically and returns the number of bytes.
///
/// A symbolic link at the destination is followed, even when dangling, and its target is
/// replaced. Missing parent directories are created. A new file gets mode 0644 and belongs to
/// `owner`; a replaced file keeps its mode and owner.
async fn write_atomically<S, E>(
    destination: &Path,
    owner: Option<(u32, u32)>,
    content: S,
) -> Result<u64, WriteError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error,
{
    let prepared = {
        let destination = destination.to_owned();
        blocking(move || prepare_destination(&destination, owner)).await
    };
    let (target, existing) = prepared.map_err(WriteError::Destination)?;
    let dir = target.parent().unwrap_or(Path::new("/")).to_owned();
    let (temp, file) = TempFile::create(&dir)
        .map_err(|error| WriteError::Destination(file_error(FileAction::Write, &target, error)))?;

    let bytes = copy_stream(content, file, &target).await?;

    let final_mode = existing
        .as_ref()
        .map_or(NEW_FILE_MODE, |metadata| metadata.mode() & 0o7777);
    let final_owner = match &existing {
        Some(metadata) => owner.map(|_| (metadata.uid(), metadata.gid())),
        None => owner,
    };
    blocking(move || {
        // Owner before mode: changing the owner clears the set-user-ID and set-group-ID bits.
        let failed = |error| file_error(FileAction::Write, &target, error);
        set_owner(&temp.path, final_owner).map_err(failed)?;
        fs::set_permissions(&temp.path, fs::Permissions::from_mode(final_mode)).map_err(failed)?;
        temp.commit(&target).map_err(failed)
    })
    .await
    .map_err(WriteError::Destination)?;
    Ok(bytes)
}

/// Finds the file to replace and creates its missing parent directories. Returns the target
/// (the destination with symbolic links resolved) and the metadata of the file it replaces.
fn prepare_destination(
    destination: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(PathBuf, Option<Metadata>), ApiError> {
    let target = resolve_symlinks(destination)
        .map_err(|error| file_error(FileAction::Write, destination, error))?;
    match fs::metadata(&target) {
        Ok(metadata) if metadata.is_dir() => Err(invalid_path(format!(
            "destination {} is a directory",
            destination.display()
        ))),
        Ok(metadata) => Ok((target, Some(metadata))),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = target.parent() {
                create_dir_all(parent, DEFAULT_DIR_MODE, owner)
                    .map_err(|error| file_error(FileAction::CreateDirectory, parent, error))?;
            }
            Ok((target, None))
        }
        Err(error) => Err(file_error(FileAction::Write, destination, error)),
    }
}

/// Follows symbolic links at the last component of `path`, including a dangling last link.
pub(super) fn resolve_symlinks(path: &Path) -> io::Result<PathBuf> {
    let mut current = path.to_owned();
    for _ in 0..MAX_SYMLINK_HOPS {
        match fs::symlink_metadata(&current) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                let link = fs::read_link(&current)?;
                current = match current.parent() {
                    Some(parent) => parent.join(link),
                    None => link,
                };
            }
            Ok(_) => return Ok(current),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(current),
            Err(error) => return Err(error),
        }
    }
    Err(io::Error::from_raw_os_error(libc::ELOOP))
}

/// Copies the body stream into the file and flushes it.
async fn copy_stream<S, E>(
    mut content: S,
    file: tokio::fs::File,
    target: &Path,
) -> Result<u64, WriteError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error,
{
    let write_failed =
        |error| WriteError::Destination(file_error(FileAction::Write, target, error));
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut bytes = 0u64;
    loop {
        let chunk = match tokio::time::timeout(IDLE_TIMEOUT, content.next()).await {
            Err(_) => return Err(WriteError::Body(idle_message())),
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                return Err(WriteError::Body(format!(
                    "upload interrupted: {}",
                    ErrorChain(&error)
                )));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        writer.write_all(&chunk).await.map_err(write_failed)?;
        bytes += chunk.len() as u64;
    }
    // No fsync: the rename makes the upload atomic for readers, and a host crash right after
    // an upload is not worth a disk flush per file.
    writer.flush().await.map_err(write_failed)?;
    Ok(bytes)
}

/// A temporary file of a write in progress (an upload, a replace); removed when dropped
/// unless committed.
pub(super) struct TempFile {
    path: PathBuf,
    committed: bool,
}

impl TempFile {
    fn create(dir: &Path) -> io::Result<(Self, tokio::fs::File)> {
        let (temp, file) = Self::create_std(dir)?;
        Ok((temp, tokio::fs::File::from_std(file)))
    }

    /// Creates an empty file, readable and writable by its owner only, in `dir`.
    pub(super) fn create_std(dir: &Path) -> io::Result<(Self, fs::File)> {
        let path = dir.join(format!(
            "{TEMP_PREFIX}{}.tmp",
            uuid::Uuid::new_v4().simple()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let temp = Self {
            path,
            committed: false,
        };
        Ok((temp, file))
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the file over `target`.
    pub(super) fn commit(mut self, target: &Path) -> io::Result<()> {
        fs::rename(&self.path, target)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Err(error) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "failed to remove an upload's temporary file");
        }
    }
}

/// A file part received before the field naming its destination.
struct StagedFile {
    temp: TempFile,
}

impl StagedFile {
    async fn receive(field: Field<'static>) -> Result<Self, WriteError> {
        let staging = Path::new(STAGING_DIR);
        let (temp, file) = TempFile::create(staging).map_err(|error| {
            WriteError::Destination(file_error(FileAction::Write, staging, error))
        })?;
        copy_stream(field, file, &temp.path).await?;
        Ok(Self { temp })
    }

    /// Opens the staged content as a stream; the staged file is removed when the stream ends
    /// or is dropped.
    async fn open(self) -> io::Result<impl Stream<Item = io::Result<Bytes>> + Unpin> {
        let file = tokio::fs::File::open(&self.temp.path).await?;
        let reader = tokio_util::io::ReaderStream::new(file);
        let temp = self.temp;
        Ok(reader.map(move |chunk| {
            let _keep_until_read = &temp;
            chunk
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_roles_parse() {
        assert_eq!(field_role("files[0].path"), Some(FieldRole::Path(0)));
        assert_eq!(field_role("files[12].file"), Some(FieldRole::File(12)));
        assert_eq!(field_role("files[x].file"), None);
        assert_eq!(field_role("files[1].other"), None);
        assert_eq!(field_role("file"), None);
    }

    #[test]
    fn dangling_symlink_resolves_to_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("sub/target.txt", &link).unwrap();
        assert_eq!(
            resolve_symlinks(&link).unwrap(),
            dir.path().join("sub/target.txt")
        );
    }

    #[test]
    fn symlink_loop_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::os::unix::fs::symlink("b", &a).unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("b")).unwrap();
        assert!(resolve_symlinks(&a).is_err());
    }
}
