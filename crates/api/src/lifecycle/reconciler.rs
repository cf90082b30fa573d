//! The reconciler: the background task that applies the automatic parts of the lifecycle.
//!
//! It sweeps every sandbox when something changed (a transition wakes it) and at least every
//! [`MAX_SWEEP_INTERVAL`]. A sweep:
//! - deletes sandboxes whose TTL (`autoDestroyAt`) has passed, in any state;
//! - checks each started sandbox's activity (see [`super::activity`]) and stops it after
//!   `autoStopInterval` minutes without any, or never when the interval is 0. A sandbox whose
//!   `autoDeleteInterval` is 0 is deleted instead of stopped;
//! - deletes stopped sandboxes after `autoDeleteInterval` minutes stopped (-1 never), and
//!   archives the others after `autoArchiveInterval` minutes stopped (0 means the maximum,
//!   30 days);
//! - settles archives and restores that no operation drives (see [`settle`]);
//! - moves sandboxes whose processes died to `error`, and sandboxes left in `creating`,
//!   `starting` or `stopping` by no operation past the transition deadline too;
//! - retries deletes left in `destroying`.
//!
//! `autoPauseInterval` is stored and reported but has no effect: this server does not pause
//! container sandboxes.

use std::time::Duration;

use daytona_runner::SandboxRuntimeState;
use daytona_wire::api::SandboxState;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::activity::record_activity;
use super::archive::{MAX_AUTO_ARCHIVE_MINUTES, archive, settle};
use super::operations::{delete, fail, stop};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::SandboxRecord;

/// Maximum time between two sweeps.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Minimum time between two sweeps, which bounds the cost of the activity checks when tests
/// shrink the lifecycle minute.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// Runs the reconciler until the process ends.
pub async fn run(state: AppState) {
    let interval = sweep_interval(state.lifecycle.config().minute);
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "sandbox reconciler running"
    );
    loop {
        if let Err(error) = sweep(&state).await {
            tracing::warn!(%error, "sandbox reconciler sweep failed");
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = state.lifecycle.wake.notified() => {
                // Several transitions in a row wake it once.
                tokio::time::sleep(MIN_SWEEP_INTERVAL).await;
            }
        }
    }
}

/// Returns a quarter of a lifecycle minute, kept between [`MIN_SWEEP_INTERVAL`] and
/// [`MAX_SWEEP_INTERVAL`].
fn sweep_interval(minute: Duration) -> Duration {
    (minute / 4).clamp(MIN_SWEEP_INTERVAL, MAX_SWEEP_INTERVAL)
}

/// Applies the automatic transitions that are due.
pub async fn sweep(state: &AppState) -> Result<(), ApiError> {
    let now = OffsetDateTime::now_utc();
    let records = state.store.all_sandboxes().await?;
    let live = records.iter().map(|record| record.id.clone()).collect();
    state.lifecycle.activity.retain(&live);
    for record in records {
        // A sandbox with an operation in progress belongs to that operation.
        if state.lifecycle.operation(&record.id).is_some() {
            continue;
        }
        let sandbox_id = record.id.clone();
        if let Err(error) = reconcile(state, record, now).await {
            tracing::warn!(sandbox_id, %error, "failed to reconcile a sandbox");
        }
    }
    Ok(())
}

async fn reconcile(
    state: &AppState,
    record: SandboxRecord,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    let lifecycle = &state.lifecycle;
    if let Some(at) = record.auto_destroy_at.as_deref().and_then(parse_time)
        && at <= now
    {
        tracing::info!(sandbox_id = %record.id, "deleting sandbox: its TTL has passed");
        delete(state, record).await?;
        return Ok(());
    }

    let since_change = record
        .state_changed_at
        .as_deref()
        .and_then(parse_time)
        .map(|at| elapsed(at, now));
    match record.state {
        SandboxState::Started => reconcile_started(state, record, now).await?,
        SandboxState::Stopped => {
            let stopped_for = since_change.unwrap_or(Duration::MAX);
            let archive_after = match record.auto_archive_interval {
                0 => MAX_AUTO_ARCHIVE_MINUTES,
                minutes => minutes,
            };
            if record.auto_delete_interval >= 0
                && stopped_for >= lifecycle.minutes(record.auto_delete_interval)
            {
                tracing::info!(sandbox_id = %record.id, auto_delete_minutes = record.auto_delete_interval, "deleting sandbox: auto-delete interval passed");
                delete(state, record).await?;
            } else if stopped_for >= lifecycle.minutes(archive_after) {
                tracing::info!(sandbox_id = %record.id, auto_archive_minutes = archive_after, "archiving sandbox: auto-archive interval passed");
                // The archive can take a while; the sweep goes on meanwhile.
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(error) = archive(&state, record).await {
                        tracing::warn!(%error, "auto-archive failed");
                    }
                });
            }
        }
        SandboxState::Archiving | SandboxState::Restoring => {
            let mut record = record;
            settle(state, &mut record).await?;
        }
        SandboxState::Creating | SandboxState::Starting | SandboxState::Stopping => {
            let timeout = lifecycle.config().transition_timeout;
            if since_change.is_none_or(|stuck_for| stuck_for >= timeout) {
                let mut record = record;
                tracing::warn!(sandbox_id = %record.id, state = %record.state, timeout_secs = timeout.as_secs_f64(), "sandbox stuck in a transition with no operation in progress; moving it to error");
                let reason = format!(
                    "the sandbox was {} for longer than {} s",
                    record.state,
                    timeout.as_secs()
                );
                fail(state, &mut record, reason).await;
            }
        }
        SandboxState::Destroying => {
            tracing::warn!(sandbox_id = %record.id, "retrying the delete of a sandbox left in destroying");
            delete(state, record).await?;
        }
        _ => {}
    }
    Ok(())
}

/// Checks a started sandbox: that its processes still run, its activity, and auto-stop.
async fn reconcile_started(
    state: &AppState,
    mut record: SandboxRecord,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    let lifecycle = &state.lifecycle;
    let failure = if !state.runner.contains(&record.id) {
        Some("the runner has no files of the sandbox; delete it")
    } else if state.runner.state_now(&record.id) == Some(SandboxRuntimeState::Stopped) {
        Some("the sandbox's PID 1 exited; recover or delete the sandbox")
    } else {
        None
    };
    if let Some(reason) = failure {
        tracing::warn!(sandbox_id = %record.id, reason, "a started sandbox does not run; moving it to error");
        fail(state, &mut record, reason.to_owned()).await;
        return Ok(());
    }

    let usage = state.runner.workload_usage(&record.id);
    if lifecycle.activity.observe(&record.id, usage) {
        record_activity(state, &record.id);
    }
    if record.auto_stop_interval <= 0 {
        return Ok(());
    }
    let last_activity = [
        lifecycle.activity.last(&record.id),
        record.last_activity_at.as_deref().and_then(parse_time),
        record.state_changed_at.as_deref().and_then(parse_time),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(now);
    if elapsed(last_activity, now) < lifecycle.minutes(record.auto_stop_interval) {
        return Ok(());
    }

    if record.auto_delete_interval == 0 {
        tracing::info!(sandbox_id = %record.id, auto_stop_minutes = record.auto_stop_interval, "deleting ephemeral sandbox: no activity for its auto-stop interval");
        delete(state, record).await?;
    } else {
        tracing::info!(sandbox_id = %record.id, auto_stop_minutes = record.auto_stop_interval, "stopping sandbox: no activity for its auto-stop interval");
        stop(state, record, false).await?;
    }
    Ok(())
}

fn elapsed(since: OffsetDateTime, now: OffsetDateTime) -> Duration {
    Duration::try_from(now - since).unwrap_or(Duration::ZERO)
}

/// Parses an RFC 3339 time as the store keeps it.
pub fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_interval_is_bounded() {
        assert_eq!(sweep_interval(Duration::from_secs(60)), MAX_SWEEP_INTERVAL);
        assert_eq!(
            sweep_interval(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            sweep_interval(Duration::from_millis(100)),
            MIN_SWEEP_INTERVAL
        );
    }

    #[test]
    fn stored_times_parse() {
        let at = parse_time("2026-01-02T03:04:05.678Z").unwrap();
        assert_eq!(at.year(), 2026);
        assert_eq!(at.millisecond(), 678);
        assert!(parse_time("yesterday").is_none());
    }
}
