//! Archive and restore: a stopped sandbox's writable layer moves to object storage and back.
//!
//! ```text
//! archive:  stopped  -> archiving -> archived     (a failure goes back to stopped, files intact)
//! start:    archived -> restoring -> started      (a failed download or unpack goes back to archived)
//! ```
//!
//! The order of the steps makes a crash at any point recoverable:
//! 1. the runner packs the layer into a temporary file;
//! 2. the file goes to object storage;
//! 3. the runner marks its record archived and removes the local files;
//! 4. the store records `archived`.
//!
//! A restore downloads the object, unpacks it into a fresh writable layer, clears the
//! runner's archived mark, deletes the object, and starts the sandbox. After a restart,
//! [`settle`] finishes or rolls back whatever was in progress, using the runner's archived mark
//! as the truth about where the files are.

use std::path::PathBuf;

use daytona_objstore::ARCHIVES_BUCKET;
use daytona_wire::api::SandboxState;

use super::operations::{
    AfterFailure, answer, changed_meanwhile, deleted_meanwhile, finish_start, spawn_operation,
    wrong_state,
};
use super::{OperationKind, transition};
use crate::error::{ApiError, error_chain};
use crate::state::AppState;
use crate::store::SandboxRecord;

/// Maximum auto-archive interval, in minutes (30 days). An interval of 0 means this maximum.
pub const MAX_AUTO_ARCHIVE_MINUTES: i64 = 43_200;

/// Object key of a sandbox's archived writable layer.
fn archive_key(record: &SandboxRecord) -> String {
    format!("{}/{}/layer.tar.gz", record.organization_id, record.id)
}

/// Temporary file for a sandbox's archive on its way to or from object storage.
fn staging_file(state: &AppState, record: &SandboxRecord) -> std::io::Result<PathBuf> {
    let dir = state.config.data_dir.join("staging");
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join(format!("{}.tar.gz", record.id)))
}

/// Removes the temporary files of archives and restores that a stopped server left; at start,
/// before any operation runs.
pub(super) fn clear_staging(state: &AppState) {
    let dir = state.config.data_dir.join("staging");
    match std::fs::remove_dir_all(&dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %dir.display(), %error, "failed to remove the staging directory");
        }
        _ => {}
    }
}

/// Stops at the fault-injection step `step` when the server is built for crash tests.
fn fault(step: &'static str) -> Result<(), String> {
    daytona_images::fault::hit(step).map_err(|error| error.to_string())
}

/// Archives a stopped sandbox. An archived one is returned as it is.
pub async fn archive(state: &AppState, record: SandboxRecord) -> Result<SandboxRecord, ApiError> {
    match record.state {
        SandboxState::Archived => return Ok(record),
        SandboxState::Stopped => {}
        other => return Err(wrong_state(&record, other, "archive")),
    }
    let guard = state.lifecycle.begin(&record.id, OperationKind::Archive)?;
    let mut record = record;
    if !transition(state, &mut record, SandboxState::Archiving, None).await? {
        return Err(changed_meanwhile(&record.id));
    }
    tracing::info!(sandbox_id = %record.id, "archiving sandbox");

    let id = record.id.clone();
    let task_state = state.clone();
    let outcome = spawn_operation(async move {
        let state = &task_state;
        let uploaded = upload(state, &record).await;
        if guard.is_cancelled() {
            return Err(deleted_meanwhile(&record.id));
        }
        if let Err(reason) = uploaded {
            tracing::warn!(sandbox_id = %record.id, error = %reason, "archive failed; the sandbox stays stopped with its files");
            transition(
                state,
                &mut record,
                SandboxState::Stopped,
                Some(format!("archive failed: {reason}")),
            )
            .await?;
            return Ok(());
        }
        // The files go before the store records `archived`, so that an archived sandbox never
        // has them. A drop that failed before it marked the runner's record leaves the sandbox
        // stopped with its files.
        drop_local_files(state, &record.id).await;
        let dropped = state.runner.is_archived(&record.id).await.unwrap_or(false);
        if !dropped {
            forget(state, &record).await;
            transition(
                state,
                &mut record,
                SandboxState::Stopped,
                Some("archive failed: the local files could not be removed".to_owned()),
            )
            .await?;
            return Ok(());
        }
        if let Err(reason) = fault("archive.dropped") {
            tracing::warn!(sandbox_id = %record.id, error = %reason, "archive stopped before its state was recorded; the reconciler settles it");
            return Ok(());
        }
        if !transition(state, &mut record, SandboxState::Archived, None).await? {
            return Err(deleted_meanwhile(&record.id));
        }
        tracing::info!(sandbox_id = %record.id, "sandbox archived");
        Ok(())
    });
    answer(state, &id, outcome).await
}

/// Steps 1 and 2 of an archive: pack the layer and store it.
async fn upload(state: &AppState, record: &SandboxRecord) -> Result<(), String> {
    let staging = staging_file(state, record).map_err(|error| error.to_string())?;
    let stored = async {
        let packed = state
            .runner
            .pack_writable_layer(&record.id, &staging)
            .await
            .map_err(|error| error_chain(&error))?;
        fault("archive.packed")?;
        state
            .object_storage
            .put_file(ARCHIVES_BUCKET, &archive_key(record), &staging)
            .await
            .map_err(|error| error_chain(&error))?;
        tracing::info!(sandbox_id = %record.id, bytes = packed.compressed_bytes, entries = packed.entries, "sandbox layer stored");
        fault("archive.uploaded")
    }
    .await;
    remove_staging(&staging);
    stored
}

/// Step 3 of an archive. Files left by a failure after the runner's record was marked are
/// removed by the next restart or restore.
async fn drop_local_files(state: &AppState, sandbox_id: &str) {
    if let Err(error) = state.runner.drop_writable_layer(sandbox_id).await {
        tracing::warn!(sandbox_id, error = %error_chain(&error), "failed to remove the local files of an archived sandbox");
    }
}

/// Starts an archived sandbox: restores its writable layer, then starts it.
pub async fn restore(state: &AppState, record: SandboxRecord) -> Result<SandboxRecord, ApiError> {
    let guard = state.lifecycle.begin(&record.id, OperationKind::Start)?;
    let reservation = state
        .quotas
        .reserve(state, &record.organization_id, record.cpu, record.memory)
        .await?;
    let mut record = record;
    if !transition(state, &mut record, SandboxState::Restoring, None).await? {
        return Err(changed_meanwhile(&record.id));
    }
    tracing::info!(sandbox_id = %record.id, "restoring sandbox");

    let id = record.id.clone();
    let task_state = state.clone();
    let outcome = spawn_operation(async move {
        let state = &task_state;
        let restored = download(state, &record).await;
        if guard.is_cancelled() {
            return Err(deleted_meanwhile(&record.id));
        }
        if let Err(reason) = restored {
            tracing::warn!(sandbox_id = %record.id, error = %reason, "restore failed; the sandbox stays archived");
            transition(
                state,
                &mut record,
                SandboxState::Archived,
                Some(format!(
                    "restore failed: {reason}; start the sandbox to retry"
                )),
            )
            .await?;
            return Ok(());
        }
        if let Err(error) = state
            .object_storage
            .delete(ARCHIVES_BUCKET, &archive_key(&record))
            .await
        {
            tracing::warn!(sandbox_id = %record.id, error = %error_chain(&error), "failed to delete the archive of a restored sandbox");
        }
        let runner = state.runner.clone();
        let sandbox_id = record.id.clone();
        finish_start(
            state,
            record,
            guard,
            reservation,
            runner.start(&sandbox_id),
            AfterFailure::KeepInError,
        )
        .await
    });
    answer(state, &id, outcome).await
}

/// Downloads a sandbox's archive and unpacks it into a fresh writable layer.
async fn download(state: &AppState, record: &SandboxRecord) -> Result<(), String> {
    let staging = staging_file(state, record).map_err(|error| error.to_string())?;
    let restored = async {
        state
            .object_storage
            .get_to_file(ARCHIVES_BUCKET, &archive_key(record), &staging)
            .await
            .map_err(|error| error_chain(&error))?;
        fault("restore.downloaded")?;
        state
            .runner
            .restore_writable_layer(&record.id, &staging)
            .await
            .map_err(|error| error_chain(&error))?;
        fault("restore.unpacked")
    }
    .await;
    remove_staging(&staging);
    restored
}

fn remove_staging(path: &std::path::Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "failed to remove an archive's temporary file");
    }
}

/// Deletes the archive of a deleted sandbox, if it has one.
pub async fn forget(state: &AppState, record: &SandboxRecord) {
    if let Err(error) = state
        .object_storage
        .delete(ARCHIVES_BUCKET, &archive_key(record))
        .await
    {
        tracing::warn!(sandbox_id = %record.id, error = %error_chain(&error), "failed to delete the archive of a deleted sandbox");
    }
}

/// Finishes or rolls back an archive or restore that no operation drives any more (the server
/// stopped in the middle of it). Returns `false` for a sandbox in any other state.
pub(super) async fn settle(state: &AppState, record: &mut SandboxRecord) -> Result<bool, ApiError> {
    if !matches!(
        record.state,
        SandboxState::Archiving | SandboxState::Archived | SandboxState::Restoring
    ) {
        return Ok(false);
    }
    let archived_on_runner = state
        .runner
        .is_archived(&record.id)
        .await
        .map_err(|error| ApiError::internal("the runner failed", error))?;
    match (record.state, archived_on_runner) {
        (SandboxState::Archived, _) | (_, true) => {
            // What a crashed drop or restore left of the local files goes.
            drop_local_files(state, &record.id).await;
            if record.state != SandboxState::Archived {
                tracing::info!(sandbox_id = %record.id, from = %record.state, "the server stopped during a restore; the sandbox stays archived");
                transition(state, record, SandboxState::Archived, None).await?;
            }
        }
        (_, false) => {
            tracing::info!(sandbox_id = %record.id, from = %record.state, "the server stopped during an archive or restore; the sandbox has its files");
            // An archive may have stored the object already; a restore may not have deleted it.
            forget(state, record).await;
            // A restore may have started the sandbox before the server stopped.
            let running = state
                .runner
                .state(&record.id)
                .await
                .map_err(|error| ApiError::internal("the runner failed", error))?
                == daytona_runner::SandboxRuntimeState::Running;
            let target = if running {
                SandboxState::Started
            } else {
                SandboxState::Stopped
            };
            transition(state, record, target, None).await?;
        }
    }
    Ok(true)
}
