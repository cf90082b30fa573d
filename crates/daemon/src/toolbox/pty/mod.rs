//! Pseudo-terminal sessions, reached over WebSocket.
//!
//! Each PTY session is a login shell (`<shell> -i -l`) of the sandbox user on its own
//! pseudo-terminal, the leader of a new session with the terminal as its controlling
//! terminal. Clients attach over WebSocket: after `{"type":"control","status":"connected"}`
//! they get the terminal's output as binary frames and send keystrokes as binary or text
//! frames. Output written while no client is attached is kept, up to
//! [`terminal::SCROLLBACK_LIMIT`] bytes, and sent to the next client that attaches. When the
//! shell exits, clients that offered the `X-Daytona-Pty-Exit-Control` subprotocol get an
//! `exited` control frame, then every client gets a close frame: 1000 for exit code 0, 1011
//! with the exit code and reason as JSON otherwise.

mod socket;
mod terminal;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use daytona_wire::ErrorBody;
use daytona_wire::sessions::{
    MessageResponse, PtyCreateRequest, PtyCreateResponse, PtyListResponse, PtyResizeRequest,
    PtySessionInfo,
};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::terminal::{Settings, Terminal};
use super::error::{ApiError, JsonBody, QueryParams};
use super::state::{Toolbox, check_env_var};

pub use socket::select_protocol;
pub use terminal::{open_pty, session_members, set_size, write_to};

/// Maximum number of PTY sessions at once, exited ones included.
pub const MAX_PTYS: usize = 64;

/// Largest number of columns or rows.
const MAX_SIZE: u16 = 1000;

/// Subprotocol with which a client asks for the `exited` control frame.
pub const EXIT_CONTROL_PROTOCOL: &str = "X-Daytona-Pty-Exit-Control";

/// Prefix of the subprotocol that carries the session's variables: base64url without padding
/// of a JSON object.
const ENVS_PROTOCOL_PREFIX: &str = "X-Daytona-Pty-Envs~";

/// Maximum length of a PTY session id, in bytes.
const MAX_ID: usize = 256;

/// Every PTY session of the sandbox.
#[derive(Debug, Default)]
pub struct Ptys {
    terminals: Mutex<BTreeMap<String, Arc<Terminal>>>,
}

impl Ptys {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Terminal>>> {
        self.terminals.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: &str) -> Option<Arc<Terminal>> {
        self.map().get(id).cloned()
    }

    /// Adds a terminal, making room by forgetting exited ones.
    fn insert(&self, terminal: Arc<Terminal>) -> Result<(), ApiError> {
        let id = terminal.settings.id.clone();
        let mut map = self.map();
        if map.contains_key(&id) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "CONFLICT",
                format!("PTY session {id} already exists: connect to it or use another id"),
            ));
        }
        if map.len() >= MAX_PTYS {
            map.retain(|_, terminal| terminal.exit_code().is_none());
        }
        if map.len() >= MAX_PTYS {
            return Err(ApiError::bad_request(format!(
                "the sandbox has {MAX_PTYS} PTY sessions, the most it keeps: delete one first"
            )));
        }
        map.insert(id, terminal);
        Ok(())
    }
}

pub fn routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::new()
        .routes(routes!(create_pty, list_ptys))
        .routes(routes!(create_connect))
        .routes(routes!(get_pty, delete_pty))
        .routes(routes!(connect))
        .routes(routes!(resize))
}

#[derive(Debug, Deserialize)]
struct CreateConnectQuery {
    id: String,
    #[serde(default)]
    cols: Option<u16>,
    #[serde(default)]
    rows: Option<u16>,
    #[serde(default)]
    cwd: Option<String>,
}

/// Creates a PTY session and attaches to it in one round trip. The session's variables travel
/// in the subprotocol `X-Daytona-Pty-Envs~<base64url JSON object>`.
#[utoipa::path(get, path = "/process/pty/create-connect", tag = "process",
    params(("id" = String, Query), ("cols" = Option<u16>, Query), ("rows" = Option<u16>, Query),
        ("cwd" = Option<String>, Query)),
    responses((status = 101, description = "Attached to the new session"),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_connect(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(query): QueryParams<CreateConnectQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let envs = envs_from_protocols(&upgrade)?;
    let request = PtyCreateRequest {
        id: Some(query.id),
        cwd: query.cwd,
        envs: Some(envs),
        cols: query.cols,
        rows: query.rows,
        lazy_start: Some(false),
    };
    let terminal = create(&toolbox, request).await?;
    Ok(socket::attach(upgrade, terminal))
}

/// Creates a PTY session (older SDKs); clients then attach with `GET /process/pty/{id}/connect`.
#[utoipa::path(post, path = "/process/pty", tag = "process", request_body = PtyCreateRequest,
    responses((status = 201, body = PtyCreateResponse), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn create_pty(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<PtyCreateRequest>,
) -> Result<(StatusCode, Json<PtyCreateResponse>), ApiError> {
    let terminal = create(&toolbox, request).await?;
    Ok((
        StatusCode::CREATED,
        Json(PtyCreateResponse {
            session_id: terminal.settings.id.clone(),
        }),
    ))
}

#[utoipa::path(get, path = "/process/pty", tag = "process",
    responses((status = 200, body = PtyListResponse)))]
async fn list_ptys(State(toolbox): State<Arc<Toolbox>>) -> Json<PtyListResponse> {
    let terminals: Vec<Arc<Terminal>> = toolbox.ptys.map().values().cloned().collect();
    Json(PtyListResponse {
        sessions: terminals.iter().map(info).collect(),
    })
}

#[utoipa::path(get, path = "/process/pty/{sessionId}", tag = "process",
    params(("sessionId" = String, Path)),
    responses((status = 200, body = PtySessionInfo), (status = 404, body = ErrorBody)))]
async fn get_pty(
    State(toolbox): State<Arc<Toolbox>>,
    Path(session_id): Path<String>,
) -> Result<Json<PtySessionInfo>, ApiError> {
    Ok(Json(info(&find(&toolbox, &session_id)?)))
}

/// Kills the shell and every process of its terminal session, and removes the session.
#[utoipa::path(delete, path = "/process/pty/{sessionId}", tag = "process",
    params(("sessionId" = String, Path)),
    responses((status = 200, body = MessageResponse), (status = 404, body = ErrorBody)))]
async fn delete_pty(
    State(toolbox): State<Arc<Toolbox>>,
    Path(session_id): Path<String>,
) -> Result<Json<MessageResponse>, ApiError> {
    let terminal = toolbox
        .ptys
        .map()
        .remove(&session_id)
        .ok_or_else(|| not_found(&session_id))?;
    terminal.kill();
    Ok(Json(MessageResponse {
        message: format!("PTY session {session_id} deleted"),
    }))
}

/// Attaches to a PTY session, starting its shell if it was created with `lazyStart`.
#[utoipa::path(get, path = "/process/pty/{sessionId}/connect", tag = "process",
    params(("sessionId" = String, Path)),
    responses((status = 101, description = "Attached"), (status = 404, body = ErrorBody)))]
async fn connect(
    State(toolbox): State<Arc<Toolbox>>,
    Path(session_id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let terminal = find(&toolbox, &session_id)?;
    terminal
        .start(&toolbox)
        .await
        .map_err(|error| ApiError::internal("failed to start the PTY session's shell", &error))?;
    Ok(socket::attach(upgrade, terminal))
}

/// Changes the terminal's size (1 to 1000 columns and rows).
#[utoipa::path(post, path = "/process/pty/{sessionId}/resize", tag = "process",
    params(("sessionId" = String, Path)), request_body = PtyResizeRequest,
    responses((status = 200, body = PtySessionInfo), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 410, description = "The shell exited", body = ErrorBody)))]
async fn resize(
    State(toolbox): State<Arc<Toolbox>>,
    Path(session_id): Path<String>,
    JsonBody(request): JsonBody<PtyResizeRequest>,
) -> Result<Json<PtySessionInfo>, ApiError> {
    check_size(request.cols, request.rows)?;
    let terminal = find(&toolbox, &session_id)?;
    if let Some(code) = terminal.exit_code() {
        return Err(ApiError::new(
            StatusCode::GONE,
            "SESSION_ENDED",
            format!("PTY session {session_id} ended with exit code {code}: create a new one"),
        ));
    }
    terminal
        .resize(request.cols, request.rows)
        .map_err(|error| ApiError::internal("failed to resize the terminal", &error))?;
    Ok(Json(info(&terminal)))
}

/// Creates and registers a terminal, and starts its shell unless it starts lazily.
async fn create(
    toolbox: &Arc<Toolbox>,
    request: PtyCreateRequest,
) -> Result<Arc<Terminal>, ApiError> {
    let id = request
        .id
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if id.len() > MAX_ID || id.contains('/') {
        return Err(ApiError::bad_request(format!(
            "invalid PTY session id {id:?}: use 1 to {MAX_ID} bytes without '/'"
        )));
    }
    let cols = request.cols.unwrap_or(80);
    let rows = request.rows.unwrap_or(24);
    check_size(cols, rows)?;
    let envs = request.envs.unwrap_or_default();
    for (name, value) in &envs {
        check_env_var(name, value)?;
    }
    let cwd = toolbox.command_cwd(request.cwd.as_deref())?;
    let lazy_start = request.lazy_start.unwrap_or(false);

    let terminal = Terminal::new(Settings {
        id,
        cwd,
        envs,
        cols,
        rows,
        lazy_start,
    });
    toolbox.ptys.insert(Arc::clone(&terminal))?;
    if !lazy_start && let Err(error) = terminal.start(toolbox).await {
        toolbox.ptys.map().remove(&terminal.settings.id);
        return Err(ApiError::internal(
            "failed to start the PTY session's shell",
            &error,
        ));
    }
    Ok(terminal)
}

fn check_size(cols: u16, rows: u16) -> Result<(), ApiError> {
    if !(1..=MAX_SIZE).contains(&cols) || !(1..=MAX_SIZE).contains(&rows) {
        return Err(ApiError::bad_request(format!(
            "invalid terminal size {cols}x{rows}: columns and rows must be 1 to {MAX_SIZE}"
        )));
    }
    Ok(())
}

fn find(toolbox: &Toolbox, session_id: &str) -> Result<Arc<Terminal>, ApiError> {
    toolbox
        .ptys
        .get(session_id)
        .ok_or_else(|| not_found(session_id))
}

fn not_found(session_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("PTY session {session_id} not found: create it first"),
    )
}

fn info(terminal: &Arc<Terminal>) -> PtySessionInfo {
    let (cols, rows) = terminal.size();
    PtySessionInfo {
        id: terminal.settings.id.clone(),
        cwd: terminal.settings.cwd.display().to_string(),
        envs: terminal.settings.envs.clone(),
        cols,
        rows,
        created_at: terminal.created_at.clone(),
        active: terminal.is_active(),
        lazy_start: terminal.settings.lazy_start,
    }
}

/// Decodes the variables of the `X-Daytona-Pty-Envs~` subprotocol, if offered.
fn envs_from_protocols(upgrade: &WebSocketUpgrade) -> Result<BTreeMap<String, String>, ApiError> {
    let offered: Vec<&HeaderValue> = upgrade.requested_protocols().collect();
    let Some(encoded) = offered.iter().find_map(|value| {
        value
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix(ENVS_PROTOCOL_PREFIX))
    }) else {
        return Ok(BTreeMap::new());
    };
    let invalid = |reason: String| {
        ApiError::bad_request(format!(
            "invalid {ENVS_PROTOCOL_PREFIX} subprotocol: {reason}; send base64url without padding of a JSON object of strings"
        ))
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .map_err(|error| invalid(error.to_string()))?;
    let envs: BTreeMap<String, String> =
        serde_json::from_slice(&json).map_err(|error| invalid(error.to_string()))?;
    for (name, value) in &envs {
        check_env_var(name, value)?;
    }
    Ok(envs)
}
