//! Bringing the store in line with the runner when the server starts.
//!
//! Every operation writes the store before the runner acts, so after a crash at any point the
//! stored state names what was in progress, and the runner's records on disk tell how far it
//! got:
//!
//! | stored state | the runner has it running | it has only the files | it has nothing |
//! |---|---|---|---|
//! | `creating`, `starting` | `started` | `error` (recover works) | row removed |
//! | `started` | `started` (adopted) | `stopped` (as after a host reboot) | `error` |
//! | `stopping` | stopped, then `stopped` | `stopped` | `error` |
//! | `stopped` | `started` (adopted) | `stopped` | `error` |
//! | `error` | processes killed, `error` | `error` | `error` |
//! | `destroying` | the delete is finished | the delete is finished | row removed |
//! | `pending_build`, `building_snapshot` | — | — | `build_failed` |
//!
//! Archives and restores in progress are settled by [`archive::settle`]: the runner's archived
//! mark records whether the files are local (`stopped`) or only in object storage (`archived`).
//!
//! Sandboxes on disk that the store does not know are destroyed.

use std::collections::HashSet;

use daytona_runner::SandboxRuntimeState;
use daytona_wire::api::SandboxState;

use super::{add_route, archive, operations, transition};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::SandboxRecord;

/// `errorReason` of a sandbox whose image build a server restart interrupted.
const INTERRUPTED_BUILD: &str = "the server restarted while the sandbox's image was being built; delete the sandbox and create it again";

/// Reconciles every stored sandbox with the runner; see the module documentation.
pub async fn reconcile_after_restart(state: &AppState) -> anyhow::Result<()> {
    archive::clear_staging(state);
    let records = state.store.all_sandboxes().await?;
    let mut known = HashSet::new();
    for record in records {
        known.insert(record.id.clone());
        let sandbox_id = record.id.clone();
        if let Err(error) = reconcile_one(state, record).await {
            tracing::warn!(
                sandbox_id,
                %error,
                "failed to reconcile a sandbox at start; the reconciler retries"
            );
        }
    }
    for sandbox_id in state.runner.sandbox_ids() {
        if !known.contains(&sandbox_id) {
            tracing::warn!(sandbox_id, "destroying a sandbox the store does not know");
            state.runner.destroy(&sandbox_id).await?;
        }
    }
    Ok(())
}

async fn reconcile_one(state: &AppState, mut record: SandboxRecord) -> Result<(), ApiError> {
    if record.state == SandboxState::Destroying {
        tracing::info!(sandbox_id = %record.id, "finishing the delete the server stopped in the middle of");
        operations::delete(state, record).await?;
        return Ok(());
    }
    if matches!(
        record.state,
        SandboxState::PendingBuild | SandboxState::BuildingSnapshot
    ) {
        // The build ran in the server's process, so it ended with it. The runner prepares a
        // built sandbox's files only after the move to `starting`.
        tracing::info!(sandbox_id = %record.id, state = %record.state, "marking an interrupted sandbox build failed");
        transition(
            state,
            &mut record,
            SandboxState::BuildFailed,
            Some(INTERRUPTED_BUILD.to_owned()),
        )
        .await?;
        return Ok(());
    }
    if state.runner.contains(&record.id) && archive::settle(state, &mut record).await? {
        return Ok(());
    }

    let runtime = if state.runner.contains(&record.id) {
        Some(state.runner.state(&record.id).await.map_err(runner_error)?)
    } else {
        None
    };
    let (target, reason) = match (record.state, runtime) {
        (SandboxState::Creating | SandboxState::Starting, None) => {
            tracing::info!(sandbox_id = %record.id, "removing a sandbox whose create the server stopped before any file existed");
            transition(state, &mut record, SandboxState::Destroyed, None).await?;
            return Ok(());
        }
        (SandboxState::Error, Some(SandboxRuntimeState::Running)) => {
            state
                .runner
                .release(&record.id)
                .await
                .map_err(runner_error)?;
            return Ok(());
        }
        (SandboxState::Error, _) => return Ok(()),
        (_, None) => (
            SandboxState::Error,
            Some("the runner has no files of the sandbox; delete it".to_owned()),
        ),
        (SandboxState::Stopping, Some(SandboxRuntimeState::Running)) => {
            state
                .runner
                .stop(&record.id, false)
                .await
                .map_err(runner_error)?;
            (SandboxState::Stopped, None)
        }
        (_, Some(SandboxRuntimeState::Running)) => (SandboxState::Started, None),
        (SandboxState::Creating | SandboxState::Starting, Some(SandboxRuntimeState::Stopped)) => (
            SandboxState::Error,
            Some("the server stopped while the sandbox was starting; recover it".to_owned()),
        ),
        (_, Some(SandboxRuntimeState::Stopped)) => (SandboxState::Stopped, None),
    };

    if record.state == target {
        if target == SandboxState::Started {
            add_route(state, &record);
        }
        return Ok(());
    }
    tracing::info!(sandbox_id = %record.id, from = %record.state, to = %target, "reconciling sandbox state with the runner");
    transition(state, &mut record, target, reason).await?;
    Ok(())
}

fn runner_error(error: daytona_runner::RunnerError) -> ApiError {
    ApiError::internal("the runner failed", error)
}
