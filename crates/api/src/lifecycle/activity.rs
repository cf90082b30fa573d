//! Activity: what resets a sandbox's auto-stop timer and moves its `lastActivityAt`.
//!
//! These signals count as activity of a sandbox (the README has the same list):
//!
//! 1. A request through the toolbox proxy (`/toolbox/{id}/...`: files, processes, sessions,
//!    git, PTY, ...) that was not refused with 401, 403 or 404.
//! 2. A toolbox connection that is still open: a blocking `process/execute`, a response that
//!    is still streaming, a followed log or a PTY WebSocket. The sandbox stays active for as
//!    long as the connection is open, however long that is.
//! 3. `POST /sandbox/{id}/last-activity` (`refresh_activity` in the SDKs), and the create,
//!    start and recover that start the sandbox.
//! 4. Work inside the sandbox, checked at every reconciler sweep. A live process other than
//!    the daemon's own (PID 1 `init`, the toolbox server and the launcher) counts: a
//!    background job, an async session command, a PTY shell, an interpreter context or a
//!    language server. CPU time that such processes used since the previous sweep counts
//!    too, which catches processes that started and ended between two sweeps. So a sandbox
//!    with an idle PTY shell or interpreter context stays running until they end.
//!
//! Reading a sandbox (`GET /sandbox/{id}`, the list) and changing its settings do not count,
//! so polling a sandbox's state does not keep it running.
//!
//! The latest activity is kept in memory and written to the store at most every
//! [`STORE_WRITE_INTERVAL`] per sandbox; responses show the in-memory value.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use daytona_runner::WorkloadUsage;
use http_body_util::BodyExt;
use time::OffsetDateTime;

use crate::state::AppState;
use crate::store::SandboxRecord;

/// Shortest time between two writes of one sandbox's `lastActivityAt` to the store.
pub const STORE_WRITE_INTERVAL: Duration = Duration::from_secs(5);

/// Workload CPU time per sweep below which a sandbox with no workload process counts as idle.
/// It absorbs the rounding of the daemon's CPU time, which `/proc` counts in clock ticks.
const CPU_ACTIVITY_THRESHOLD: Duration = Duration::from_millis(50);

/// The activity record of one sandbox.
#[derive(Debug)]
struct Entry {
    last: OffsetDateTime,
    /// When `last` was last written to the store.
    written: Option<Instant>,
    /// Toolbox connections open now.
    open_connections: usize,
    /// The workload usage seen at the previous sweep.
    usage: Option<WorkloadUsage>,
}

impl Entry {
    fn new() -> Self {
        Self {
            last: OffsetDateTime::UNIX_EPOCH,
            written: None,
            open_connections: 0,
            usage: None,
        }
    }
}

/// The activity of every sandbox, in memory.
#[derive(Debug, Default)]
pub struct Activity {
    sandboxes: Mutex<HashMap<String, Entry>>,
}

impl Activity {
    /// Records activity now. Returns whether the store's copy is due for a write.
    pub fn touch(&self, sandbox_id: &str) -> bool {
        let mut sandboxes = self.sandboxes.lock().expect("activity lock");
        let entry = sandboxes
            .entry(sandbox_id.to_owned())
            .or_insert_with(Entry::new);
        entry.last = OffsetDateTime::now_utc();
        let due = entry
            .written
            .is_none_or(|written| written.elapsed() >= STORE_WRITE_INTERVAL);
        if due {
            entry.written = Some(Instant::now());
        }
        due
    }

    /// Returns the latest activity seen in memory.
    pub fn last(&self, sandbox_id: &str) -> Option<OffsetDateTime> {
        self.sandboxes
            .lock()
            .expect("activity lock")
            .get(sandbox_id)
            .map(|entry| entry.last)
            .filter(|last| *last > OffsetDateTime::UNIX_EPOCH)
    }

    /// Compares a sandbox's workload usage with the previous sweep's and returns whether the
    /// sandbox is active: a workload process lives, workloads used CPU since the previous
    /// sweep, or a toolbox connection is open.
    pub fn observe(&self, sandbox_id: &str, usage: Option<WorkloadUsage>) -> bool {
        let mut sandboxes = self.sandboxes.lock().expect("activity lock");
        let entry = sandboxes
            .entry(sandbox_id.to_owned())
            .or_insert_with(Entry::new);
        let previous = std::mem::replace(&mut entry.usage, usage);
        let working = usage.is_some_and(|now| {
            let used_cpu = previous
                .is_some_and(|before| now.cpu.saturating_sub(before.cpu) >= CPU_ACTIVITY_THRESHOLD);
            now.processes > 0 || used_cpu
        });
        working || entry.open_connections > 0
    }

    /// Forgets the workload usage seen so far, as when a sandbox stops: its next start
    /// begins new cgroups.
    pub fn reset_usage(&self, sandbox_id: &str) {
        if let Some(entry) = self
            .sandboxes
            .lock()
            .expect("activity lock")
            .get_mut(sandbox_id)
        {
            entry.usage = None;
        }
    }

    /// Forgets every sandbox but those in `live`, so that the records of deleted sandboxes do
    /// not pile up.
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        self.sandboxes
            .lock()
            .expect("activity lock")
            .retain(|sandbox_id, _| live.contains(sandbox_id));
    }

    /// Forgets a deleted sandbox.
    pub fn forget(&self, sandbox_id: &str) {
        self.sandboxes
            .lock()
            .expect("activity lock")
            .remove(sandbox_id);
    }

    fn open(&self, sandbox_id: &str) {
        let mut sandboxes = self.sandboxes.lock().expect("activity lock");
        sandboxes
            .entry(sandbox_id.to_owned())
            .or_insert_with(Entry::new)
            .open_connections += 1;
    }

    fn close(&self, sandbox_id: &str) {
        let mut sandboxes = self.sandboxes.lock().expect("activity lock");
        if let Some(entry) = sandboxes.get_mut(sandbox_id) {
            entry.open_connections = entry.open_connections.saturating_sub(1);
        }
    }

    /// Shows the in-memory activity in `record` when it is later than the stored one.
    pub fn overlay(&self, record: &mut SandboxRecord) {
        let Some(last) = self.last(&record.id) else {
            return;
        };
        let stored = record
            .last_activity_at
            .as_deref()
            .and_then(super::reconciler::parse_time);
        if stored.is_none_or(|stored| stored < last) {
            record.last_activity_at = Some(daytona_wire::rfc3339(last));
        }
    }
}

/// Records activity of a sandbox, and writes it to the store when the write is due.
pub fn record_activity(state: &AppState, sandbox_id: &str) {
    if !state.lifecycle.activity.touch(sandbox_id) {
        return;
    }
    let state = state.clone();
    let sandbox_id = sandbox_id.to_owned();
    tokio::spawn(async move {
        let at = daytona_wire::now_rfc3339();
        if let Err(error) = state.store.set_last_activity(&sandbox_id, &at).await {
            tracing::warn!(
                sandbox_id,
                error = format!("{error:#}"),
                "failed to store the sandbox's last activity"
            );
        }
    });
}

/// An open toolbox connection; the count drops when the last clone of it is dropped.
struct OpenConnection {
    state: AppState,
    sandbox_id: String,
    /// Whether the request reached the sandbox (it was not refused).
    accepted: AtomicBool,
}

impl OpenConnection {
    fn new(state: &AppState, sandbox_id: &str) -> Arc<Self> {
        state.lifecycle.activity.open(sandbox_id);
        Arc::new(Self {
            state: state.clone(),
            sandbox_id: sandbox_id.to_owned(),
            accepted: AtomicBool::new(false),
        })
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.state.lifecycle.activity.close(&self.sandbox_id);
        // The end of a long connection is activity too: the idle time counts from here.
        if self.accepted.load(Ordering::Relaxed) {
            self.state.lifecycle.activity.touch(&self.sandbox_id);
        }
    }
}

/// Keeps a sandbox counted active until the returned value is dropped, as an open toolbox
/// connection does; the SSH gateway holds one per channel.
pub fn hold_active(state: &AppState, sandbox_id: &str) -> impl Send + Sync + 'static {
    let connection = OpenConnection::new(state, sandbox_id);
    connection.accepted.store(true, Ordering::Relaxed);
    connection
}

/// Middleware of the toolbox proxy route: counts a request as activity of its sandbox, and
/// keeps the sandbox active while the connection is open (until the response body ends, or,
/// for a WebSocket upgrade, until the upgraded connection closes).
pub async fn track_toolbox_request(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(sandbox_id) = toolbox_sandbox_id(request.uri().path()).map(str::to_owned) else {
        return next.run(request).await;
    };
    let connection = OpenConnection::new(&state, &sandbox_id);
    // The proxy keeps this until an upgraded connection closes.
    request
        .extensions_mut()
        .insert(daytona_proxy::HoldWhileOpen::new(connection.clone()));

    let response = next.run(request).await;
    let refused = matches!(
        response.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
    );
    if !refused {
        connection.accepted.store(true, Ordering::Relaxed);
        record_activity(&state, &sandbox_id);
    }
    response.map(move |body| {
        Body::new(body.map_frame(move |frame| {
            let _open = &connection;
            frame
        }))
    })
}

/// An open preview connection of an authorized request, counted as the toolbox proxy's
/// connections are: the sandbox stays active until the response body ends or, for a
/// WebSocket upgrade, until the upgraded connection closes.
pub struct PreviewConnection(Arc<OpenConnection>);

impl PreviewConnection {
    /// Counts the connection as open and attaches it to the request, which the proxy keeps
    /// until an upgraded connection closes.
    pub fn attach(state: &AppState, sandbox_id: &str, request: &mut Request) -> Self {
        let connection = OpenConnection::new(state, sandbox_id);
        request
            .extensions_mut()
            .insert(daytona_proxy::HoldWhileOpen::new(connection.clone()));
        Self(connection)
    }

    /// Records the request as activity and keeps the connection counted until the body of
    /// `response` ends.
    pub fn finish(self, response: Response) -> Response {
        let connection = self.0;
        connection.accepted.store(true, Ordering::Relaxed);
        record_activity(&connection.state, &connection.sandbox_id);
        response.map(move |body| {
            Body::new(body.map_frame(move |frame| {
                let _open = &connection;
                frame
            }))
        })
    }
}

/// Returns the sandbox id of a toolbox proxy path, `/toolbox/{id}/...`.
fn toolbox_sandbox_id(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/toolbox/")?;
    let id = rest.split('/').next()?;
    (!id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(cpu_ms: u64, processes: usize) -> Option<WorkloadUsage> {
        Some(WorkloadUsage {
            cpu: Duration::from_millis(cpu_ms),
            processes,
        })
    }

    #[test]
    fn live_workload_process_is_activity() {
        let activity = Activity::default();
        assert!(activity.observe("s", usage(0, 1)));
        assert!(activity.observe("s", usage(0, 1)));
    }

    #[test]
    fn cpu_between_sweeps_is_activity() {
        let activity = Activity::default();
        assert!(!activity.observe("s", usage(100, 0)));
        assert!(!activity.observe("s", usage(120, 0)));
        assert!(activity.observe("s", usage(500, 0)));
        assert!(!activity.observe("s", usage(500, 0)));
    }

    #[test]
    fn stopped_sandbox_is_idle() {
        let activity = Activity::default();
        assert!(!activity.observe("s", None));
    }

    #[test]
    fn open_connection_is_activity() {
        let activity = Activity::default();
        activity.open("s");
        assert!(activity.observe("s", usage(0, 0)));
        activity.close("s");
        assert!(!activity.observe("s", usage(0, 0)));
    }

    #[test]
    fn store_writes_are_throttled() {
        let activity = Activity::default();
        assert!(activity.touch("s"));
        assert!(!activity.touch("s"));
        assert!(activity.last("s").is_some());
        assert!(activity.last("other").is_none());
    }

    #[test]
    fn sandbox_id_of_toolbox_path() {
        assert_eq!(toolbox_sandbox_id("/toolbox/abc/files"), Some("abc"));
        assert_eq!(toolbox_sandbox_id("/toolbox/abc"), Some("abc"));
        assert_eq!(toolbox_sandbox_id("/toolbox/"), None);
        assert_eq!(toolbox_sandbox_id("/api/sandbox"), None);
    }
}
