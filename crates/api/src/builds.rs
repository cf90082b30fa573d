//! Snapshot builds from the SDK's `buildInfo` (a Dockerfile and the hashes of its build
//! contexts), run in the background, with their logs kept in memory for the build-logs
//! routes.
//!
//! The built image is named after a digest of the Dockerfile and the context hashes
//! ([`image_name_for`]), so a second build of the same definition reuses the image without
//! building. A snapshot is `building` from its create on, then `active` or `build_failed`
//! with the failure as `errorReason`. A server that stops mid-build marks the snapshot
//! `build_failed` at its next start ([`fail_unfinished`]), and the image store's journals
//! drop the half-written layer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::response::IntoResponse;
use daytona_images::ImageStore;
use daytona_images::build::context::{self, ContextError, ContextSource};
use daytona_images::build::{self as builder, BuildRequest, dockerfile};
use daytona_objstore::{BUILDS_BUCKET, ObjectStorage};
use daytona_wire::api::{CreateBuildInfo, SnapshotState};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::state::AppState;
use crate::store::SnapshotRecord;

/// Prefix of the store names of built images.
const IMAGE_PREFIX: &str = "daytona-build:";

/// The log of one build: text that grows, and whether the build has ended.
#[derive(Debug)]
pub struct BuildLog {
    text: Mutex<Vec<u8>>,
    /// Length of `text` and whether it is final; followers wait on changes.
    progress: watch::Sender<(usize, bool)>,
}

impl BuildLog {
    fn new() -> Self {
        Self {
            text: Mutex::new(Vec::new()),
            progress: watch::Sender::new((0, false)),
        }
    }

    /// Appends one line.
    pub fn line(&self, line: &str) {
        let length = {
            let mut text = self.text.lock().expect("build log lock");
            text.extend_from_slice(line.as_bytes());
            text.push(b'\n');
            text.len()
        };
        self.progress.send_replace((length, false));
    }

    /// Marks the log final: followers read what is left and stop.
    pub fn finish(&self) {
        let length = self.text.lock().expect("build log lock").len();
        self.progress.send_replace((length, true));
    }

    /// The text from byte `offset` on.
    pub fn read_from(&self, offset: usize) -> Vec<u8> {
        let text = self.text.lock().expect("build log lock");
        text.get(offset..).unwrap_or_default().to_vec()
    }

    pub fn subscribe(&self) -> watch::Receiver<(usize, bool)> {
        self.progress.subscribe()
    }
}

/// The builds of this server: their logs and running tasks, by snapshot id.
pub struct Builds {
    logs: Mutex<HashMap<String, Arc<BuildLog>>>,
    tasks: Mutex<HashMap<String, AbortHandle>>,
    contexts: Arc<dyn ContextSource>,
}

impl Builds {
    /// Builds whose contexts come from `object_storage`.
    pub fn new(object_storage: ObjectStorage) -> Self {
        Self {
            logs: Mutex::new(HashMap::new()),
            tasks: Mutex::new(HashMap::new()),
            contexts: Arc::new(ObjectStorageContexts { object_storage }),
        }
    }

    pub fn log(&self, id: &str) -> Option<Arc<BuildLog>> {
        self.logs.lock().expect("build logs lock").get(id).cloned()
    }

    /// Starts an empty log for the build of snapshot or sandbox `id`.
    pub fn new_log(&self, id: &str) -> Arc<BuildLog> {
        let log = Arc::new(BuildLog::new());
        self.logs
            .lock()
            .expect("build logs lock")
            .insert(id.to_owned(), log.clone());
        log
    }

    /// Drops the log of a deleted sandbox or snapshot.
    pub fn forget_log(&self, id: &str) {
        self.logs.lock().expect("build logs lock").remove(id);
    }

    /// Stops the build of snapshot `id`, if one runs. Dropping the task's future stops the
    /// step's sandbox and drops the step's unfinished layer.
    pub fn cancel(&self, id: &str) {
        if let Some(task) = self.tasks.lock().expect("build tasks lock").remove(id) {
            task.abort();
            tracing::info!(snapshot_id = id, "build cancelled");
        }
        if let Some(log) = self.log(id) {
            log.line("Build cancelled: the snapshot was deleted");
            log.finish();
        }
    }
}

/// Build contexts as the SDKs upload them: `{organizationId}/{hash}/context.tar` in bucket
/// [`BUILDS_BUCKET`].
struct ObjectStorageContexts {
    object_storage: ObjectStorage,
}

impl ContextSource for ObjectStorageContexts {
    fn fetch<'a>(
        &'a self,
        organization_id: &'a str,
        hash: &'a str,
        dest: &'a Path,
    ) -> context::FetchFuture<'a> {
        Box::pin(async move {
            let key = format!("{organization_id}/{hash}/context.tar");
            match self
                .object_storage
                .get_to_file(BUILDS_BUCKET, &key, dest)
                .await
            {
                Ok(()) => Ok(()),
                Err(daytona_objstore::Error::NotFound { .. }) => Err(ContextError::NotFound {
                    organization_id: organization_id.to_owned(),
                    hash: hash.to_owned(),
                }),
                Err(error) => Err(ContextError::Fetch {
                    hash: hash.to_owned(),
                    source: std::io::Error::other(error),
                }),
            }
        })
    }
}

/// The response of the build-logs route: `log` from its start, and with `follow` every
/// later line until the build ends. Plain text without framing, as the SDKs read it.
pub fn log_response(log: Option<Arc<BuildLog>>, follow: bool) -> axum::response::Response {
    use axum::body::Body;
    use axum::http::header::CONTENT_TYPE;

    let Some(log) = log else {
        return ([(CONTENT_TYPE, "text/plain; charset=utf-8")], Body::empty()).into_response();
    };
    if !follow {
        return (
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            log.read_from(0),
        )
            .into_response();
    }
    let receiver = log.subscribe();
    let stream = futures_util::stream::unfold(
        (log, receiver, 0usize),
        |(log, mut receiver, offset)| async move {
            loop {
                let (length, finished) = *receiver.borrow_and_update();
                if length > offset {
                    let chunk = log.read_from(offset);
                    let next = offset + chunk.len();
                    let item = Ok::<_, std::convert::Infallible>(bytes::Bytes::from(chunk));
                    return Some((item, (log, receiver, next)));
                }
                if finished || receiver.changed().await.is_err() {
                    return None;
                }
            }
        },
    );
    (
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The store name of the image that `build_info` describes.
pub fn image_name_for(build_info: &CreateBuildInfo) -> String {
    let mut hasher = Sha256::new();
    hasher.update(build_info.dockerfile_content.as_bytes());
    for hash in build_info.context_hashes.iter().flatten() {
        hasher.update([0]);
        hasher.update(hash.as_bytes());
    }
    format!("{IMAGE_PREFIX}{}", hex::encode(hasher.finalize()))
}

/// Starts the background build of `record`, a `building` snapshot whose `image_name` is
/// [`image_name_for`] `build_info`.
pub fn start(state: &AppState, record: SnapshotRecord, build_info: CreateBuildInfo) {
    let id = record.id.clone();
    let log = state.builds.new_log(&id);
    let task_state = state.clone();
    let task_id = id.clone();
    let mut tasks = state.builds.tasks.lock().expect("build tasks lock");
    let task = tokio::spawn(async move {
        run(&task_state, record, build_info, &log).await;
        log.finish();
        task_state
            .builds
            .tasks
            .lock()
            .expect("build tasks lock")
            .remove(&task_id);
    });
    tasks.insert(id, task.abort_handle());
}

async fn run(
    state: &AppState,
    mut record: SnapshotRecord,
    build_info: CreateBuildInfo,
    log: &BuildLog,
) {
    log.line(&format!("Building snapshot {}", record.name));

    let scratch = scratch_dir(state, &record.id);
    let target = BuildTarget {
        image_name: record.image_name.as_deref().unwrap_or_default(),
        organization_id: record.organization_id.as_deref().unwrap_or_default(),
        build_info: &build_info,
        scratch: &scratch,
    };
    let result = build_image(state, &target, log).await;
    remove_scratch(&scratch).await;

    record.updated_at = daytona_wire::now_rfc3339();
    match result {
        Ok(image) => {
            record.state = SnapshotState::Active;
            record.image_digest = Some(image.manifest_digest.clone());
            record.size_bytes = i64::try_from(image.size_bytes).ok();
            if record.entrypoint.is_none() && !image.config.entrypoint.is_empty() {
                record.entrypoint = Some(image.config.entrypoint.clone());
            }
            log.line(&format!("Snapshot {} is active", record.name));
            tracing::info!(snapshot = %record.name, image = ?record.image_name, "snapshot built");
        }
        Err(reason) => {
            log.line(&format!("Build failed: {reason}"));
            tracing::info!(snapshot = %record.name, %reason, "snapshot build failed");
            record.state = SnapshotState::BuildFailed;
            record.error_reason = Some(reason);
        }
    }
    if let Err(error) = state.store.upsert_snapshot(&record).await {
        tracing::warn!(snapshot = %record.name, %error, "failed to record the end of a build");
    }
}

/// What one build makes, and where it works.
pub struct BuildTarget<'a> {
    /// Store name of the image, [`image_name_for`] `build_info`.
    pub image_name: &'a str,
    /// Owner of the build contexts in object storage.
    pub organization_id: &'a str,
    pub build_info: &'a CreateBuildInfo,
    /// Directory for the contexts and unfinished layers, removed by the caller afterwards.
    pub scratch: &'a Path,
}

/// The scratch directory of the build of snapshot or sandbox `id`.
pub fn scratch_dir(state: &AppState, id: &str) -> PathBuf {
    state.config.data_dir.join("builds").join(id)
}

/// Removes a build's scratch directory; a failure is logged, since the next server start
/// removes every scratch directory.
pub async fn remove_scratch(scratch: &Path) {
    if let Err(error) = tokio::fs::remove_dir_all(scratch).await
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %scratch.display(), %error, "failed to remove a build's scratch directory");
    }
}

/// Builds the image, or finds it built already; returns the failure as the text for
/// `errorReason`.
pub async fn build_image(
    state: &AppState,
    target: &BuildTarget<'_>,
    log: &BuildLog,
) -> Result<daytona_images::Image, String> {
    let image_name = target.image_name.to_owned();
    let build_info = target.build_info;
    let scratch = target.scratch;
    let root = state.config.image_cache_dir.clone();
    let store = tokio::task::spawn_blocking(move || ImageStore::open(&root))
        .await
        .map_err(|error| format!("the image store task failed: {error}"))?
        .map_err(|error| format!("failed to open the image store: {error}"))?;
    let lookup_store = store.clone();
    let lookup = image_name.clone();
    if let Ok(Ok(Some(image))) =
        tokio::task::spawn_blocking(move || lookup_store.get(&lookup)).await
    {
        log.line("The image of this definition is built already; reusing it");
        return Ok(image);
    }

    let parsed = dockerfile::parse(&build_info.dockerfile_content)
        .map_err(|error| format!("invalid Dockerfile: {error}"))?;
    tokio::fs::create_dir_all(scratch)
        .await
        .map_err(|error| format!("failed to create the build directory: {error}"))?;

    // A base named by registry reference is pulled first, as `POST /snapshots` does.
    if daytona_images::is_registry_reference(&parsed.base) {
        let probe = store.clone();
        let base = parsed.base.clone();
        let present = tokio::task::spawn_blocking(move || probe.get(&base))
            .await
            .is_ok_and(|found| matches!(found, Ok(Some(_))));
        if !present {
            log.line(&format!("Pulling {}", parsed.base));
            crate::registry::pull_image(&store, &parsed.base)
                .await
                .map_err(|error| format!("failed to pull base image {}: {error}", parsed.base))?;
        }
    }

    let context_dir = fetch_contexts(state, target.organization_id, build_info, scratch, log)
        .await
        .map_err(|error| crate::error::error_chain(&error))?;
    log.line("The build has no network access: RUN steps see loopback only");
    let request = BuildRequest {
        image_name: &image_name,
        dockerfile: &parsed,
        context_dir: context_dir.as_deref(),
        scratch_dir: scratch,
    };
    let progress = |line: &str| log.line(line);
    builder::build(&store, &request, &*state.runner, &progress)
        .await
        .map_err(|error| error.to_string())
}

/// Fetches and unpacks the build contexts into one directory; `None` without contexts.
async fn fetch_contexts(
    state: &AppState,
    organization_id: &str,
    build_info: &CreateBuildInfo,
    scratch: &Path,
    log: &BuildLog,
) -> Result<Option<PathBuf>, ContextError> {
    let hashes = build_info.context_hashes.clone().unwrap_or_default();
    if hashes.is_empty() {
        return Ok(None);
    }
    let context_dir = scratch.join("context");
    std::fs::create_dir_all(&context_dir).map_err(|source| ContextError::Unpack {
        hash: String::new(),
        source,
    })?;
    for hash in hashes {
        context::check_key_part(&hash)?;
        log.line(&format!("Fetching build context {hash}"));
        let archive = scratch.join(format!("{hash}.tar"));
        state
            .builds
            .contexts
            .fetch(organization_id, &hash, &archive)
            .await?;
        let dest = context_dir.clone();
        let unpack_hash = hash.clone();
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&archive).map_err(|source| ContextError::Fetch {
                hash: unpack_hash.clone(),
                source,
            })?;
            context::unpack_context(&unpack_hash, std::io::BufReader::new(file), &dest)
        })
        .await
        .map_err(|error| ContextError::Unpack {
            hash: hash.clone(),
            source: std::io::Error::other(error),
        })??;
    }
    Ok(Some(context_dir))
}

/// Marks the builds that a previous run of the server left unfinished as `build_failed`, and
/// removes their scratch directories.
pub async fn fail_unfinished(state: &AppState) {
    let unfinished = match state.store.unfinished_builds().await {
        Ok(unfinished) => unfinished,
        Err(error) => {
            tracing::warn!(%error, "failed to list unfinished builds");
            return;
        }
    };
    for mut record in unfinished {
        record.state = SnapshotState::BuildFailed;
        record.error_reason = Some(
            "the server stopped while the image was being built; delete the snapshot and create it again".to_owned(),
        );
        record.updated_at = daytona_wire::now_rfc3339();
        match state.store.upsert_snapshot(&record).await {
            Ok(()) => tracing::info!(snapshot = %record.name, "marked an interrupted build failed"),
            Err(error) => {
                tracing::warn!(snapshot = %record.name, %error, "failed to mark an interrupted build failed")
            }
        }
    }
    let scratch = state.config.data_dir.join("builds");
    if let Err(error) = tokio::fs::remove_dir_all(&scratch).await
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %scratch.display(), %error, "failed to remove old build directories");
    }
}
