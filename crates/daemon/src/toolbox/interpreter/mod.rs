//! The stateful code interpreter: contexts that keep their state between runs.
//!
//! A context is one long-lived Python worker process (see [`worker`]), started through the
//! launcher as the sandbox user in the context's working directory. Runs arrive over the
//! WebSocket `GET /process/interpreter/execute` (see [`run`]) and take turns: a context runs
//! one at a time, in the order they arrived, and each run streams its output to its own
//! client. The `default` context is created by the first run that names no context; it is
//! not listed and cannot be deleted.
//!
//! A run's timeout interrupts it with SIGINT, which raises KeyboardInterrupt and keeps the
//! context's state. Only a worker that ignores the interrupt is killed and started again,
//! which loses the state. The run's client then gets an error frame that names the restart,
//! and the context is marked restarted.

mod run;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use daytona_wire::ErrorBody;
use daytona_wire::interpreter::{CreateContextRequest, InterpreterContext, ListContextsResponse};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::worker::{Worker, WorkerError, WorkerScript};
use super::error::{ApiError, JsonBody};
use super::process::command::Workload;
use super::state::{DEFAULT_PATH, Toolbox, find_in_path};

/// Id of the context that runs without a context id use.
pub const DEFAULT_CONTEXT_ID: &str = "default";

/// Maximum number of contexts created through the API; each is a Python process.
pub const MAX_CONTEXTS: usize = 64;

/// The only language of interpreter contexts.
const PYTHON: &str = "python";

/// Every interpreter context of the sandbox.
#[derive(Debug, Default)]
pub struct Interpreters {
    contexts: Mutex<BTreeMap<String, Arc<Context>>>,
    script: WorkerScript,
}

impl Interpreters {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Context>>> {
        self.contexts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: &str) -> Option<Arc<Context>> {
        self.map().get(id).cloned()
    }

    /// Returns the default context, creating it in the work directory on first use.
    fn default_context(&self, toolbox: &Toolbox) -> Arc<Context> {
        self.map()
            .entry(DEFAULT_CONTEXT_ID.to_owned())
            .or_insert_with(|| {
                Arc::new(Context::new(
                    DEFAULT_CONTEXT_ID.to_owned(),
                    toolbox.work_dir.clone(),
                ))
            })
            .clone()
    }

    fn insert(&self, context: Context) -> Result<Arc<Context>, ApiError> {
        let mut map = self.map();
        let created = map
            .keys()
            .filter(|id| id.as_str() != DEFAULT_CONTEXT_ID)
            .count();
        if created >= MAX_CONTEXTS {
            return Err(ApiError::bad_request(format!(
                "too many interpreter contexts ({MAX_CONTEXTS}): delete contexts that are no \
                 longer needed"
            )));
        }
        let context = Arc::new(context);
        map.insert(context.id.clone(), context.clone());
        Ok(context)
    }
}

/// One interpreter context.
#[derive(Debug)]
pub struct Context {
    pub id: String,
    pub cwd: PathBuf,
    created_at: String,
    /// The worker, owned by the run in progress. Runs wait for this lock in turn, in the
    /// order they asked for it (tokio's mutex is fair).
    worker: tokio::sync::Mutex<Option<Worker>>,
    /// The current worker's process, to kill it on delete while a run owns the worker.
    process: Mutex<Option<Arc<Workload>>>,
    restart_count: AtomicU32,
    deleted: AtomicBool,
}

impl Context {
    fn new(id: String, cwd: PathBuf) -> Self {
        Self {
            id,
            cwd,
            created_at: daytona_wire::now_rfc3339(),
            worker: tokio::sync::Mutex::new(None),
            process: Mutex::new(None),
            restart_count: AtomicU32::new(0),
            deleted: AtomicBool::new(false),
        }
    }

    fn process(&self) -> std::sync::MutexGuard<'_, Option<Arc<Workload>>> {
        self.process.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn info(&self) -> InterpreterContext {
        let active = self
            .process()
            .as_ref()
            .is_some_and(|process| !has_exited(process));
        let restart_count = self.restart_count.load(Ordering::Relaxed);
        InterpreterContext {
            id: self.id.clone(),
            cwd: self.cwd.display().to_string(),
            language: PYTHON.to_owned(),
            created_at: self.created_at.clone(),
            active,
            restarted: restart_count > 0,
            restart_count,
        }
    }

    fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Relaxed)
    }

    /// Starts a worker for this context and records its process.
    async fn start_worker(&self, toolbox: &Toolbox) -> Result<Worker, WorkerError> {
        let env = toolbox
            .command_env(None)
            .expect("the base environment has only valid variables");
        let path_var = env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
        let Some(python) = find_in_path("python3", path_var) else {
            return Err(WorkerError::Spawn {
                program: "python3".into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "python3 not found in PATH ({path_var}): install Python 3 in the image"
                    ),
                ),
            });
        };
        let script = toolbox.interpreters.script.ensure()?;
        let worker =
            Worker::start(&toolbox.launcher, python, &script, self.cwd.clone(), env).await?;
        *self.process() = Some(worker.workload());
        tracing::info!(context = %self.id, pid = worker.workload().pid(), "interpreter started");
        Ok(worker)
    }

    /// Records that the worker was replaced and its state lost.
    fn mark_restarted(&self) {
        self.restart_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks the context deleted and kills its worker. A run that owns the worker then sees the
    /// worker exit. An idle worker is killed with its group when the last reference to the
    /// context is dropped.
    fn delete(&self) {
        self.deleted.store(true, Ordering::Relaxed);
        if let Some(process) = self.process().take()
            && let Err(error) = process.signal(libc::SIGKILL)
            && error.raw_os_error() != Some(libc::ESRCH)
        {
            tracing::warn!(context = %self.id, %error, "failed to kill the interpreter");
        }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        tracing::debug!(context = %self.id, "interpreter context dropped");
    }
}

/// Checks whether a workload has exited, without reaping it: only the run that owns the
/// worker reaps it, after killing its process group.
fn has_exited(workload: &Workload) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    // A pidfd becomes readable when its process exits.
    let mut fds = [PollFd::new(workload.pidfd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(ready) => ready > 0,
        Err(_) => false,
    }
}

pub fn routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::new()
        .routes(routes!(create_context, list_contexts))
        .routes(routes!(delete_context))
        .routes(routes!(execute))
}

/// Creates a context. Its worker starts with the first run, so that creating contexts is
/// cheap and a failure to start Python is reported where the code runs.
#[utoipa::path(post, path = "/process/interpreter/context", tag = "interpreter",
    request_body = CreateContextRequest,
    responses((status = 200, body = InterpreterContext), (status = 400, body = ErrorBody)))]
async fn create_context(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<CreateContextRequest>,
) -> Result<Json<InterpreterContext>, ApiError> {
    if let Some(language) = request.language.as_deref()
        && !language.is_empty()
        && !language.eq_ignore_ascii_case(PYTHON)
    {
        return Err(ApiError::bad_request(format!(
            "unsupported interpreter language {language:?}: contexts run python; run \
             javascript or typescript with POST /process/code-run"
        )));
    }
    let cwd = toolbox.command_cwd(request.cwd.as_deref())?;
    let id = uuid::Uuid::new_v4().to_string();
    let context = toolbox.interpreters.insert(Context::new(id, cwd))?;
    tracing::info!(context = %context.id, cwd = %context.cwd.display(), "interpreter context created");
    Ok(Json(context.info()))
}

/// Lists the contexts created through the API, oldest first; the default context is not
/// among them.
#[utoipa::path(get, path = "/process/interpreter/context", tag = "interpreter",
    responses((status = 200, body = ListContextsResponse)))]
async fn list_contexts(State(toolbox): State<Arc<Toolbox>>) -> Json<ListContextsResponse> {
    let mut contexts: Vec<InterpreterContext> = toolbox
        .interpreters
        .map()
        .values()
        .filter(|context| context.id != DEFAULT_CONTEXT_ID)
        .map(|context| context.info())
        .collect();
    contexts.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    Json(ListContextsResponse { contexts })
}

/// Deletes a context and kills its interpreter process.
#[utoipa::path(delete, path = "/process/interpreter/context/{id}", tag = "interpreter",
    params(("id" = String, Path, description = "Context id")),
    responses((status = 200, body = BTreeMap<String, String>), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn delete_context(
    State(toolbox): State<Arc<Toolbox>>,
    Path(id): Path<String>,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    if id == DEFAULT_CONTEXT_ID {
        return Err(ApiError::bad_request(
            "the default interpreter context cannot be deleted",
        ));
    }
    let context = toolbox.interpreters.map().remove(&id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("interpreter context {id} not found"),
        )
    })?;
    context.delete();
    tracing::info!(context = %id, "interpreter context deleted");
    Ok(Json(BTreeMap::from([(
        "message".to_owned(),
        format!("interpreter context {id} deleted"),
    )])))
}

/// Runs code in a context over a WebSocket. The client sends one text frame
/// `{code, contextId?, envs?, timeout?}`; the server streams
/// `{type, text, name, value, traceback}` frames of type `stdout`, `stderr`, `error` and
/// `control`, then closes with 1000. A timeout closes with 4008.
#[utoipa::path(get, path = "/process/interpreter/execute", tag = "interpreter",
    responses((status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, body = ErrorBody)))]
async fn execute(State(toolbox): State<Arc<Toolbox>>, upgrade: WebSocketUpgrade) -> Response {
    run::accept(upgrade, toolbox)
}
