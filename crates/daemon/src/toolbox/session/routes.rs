//! `/process/session/*`: the session routes.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use daytona_wire::ErrorBody;
use daytona_wire::sessions::{
    CreateSessionRequest, Session as WireSession, SessionCommandLogsResponse,
    SessionExecuteRequest, SessionExecuteResponse, SessionSendInputRequest,
};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::log::{CommandLog, Records};
use super::run::{self, Launch};
use super::{Command, Live, Session, ShellState, TERM_GRACE};
use crate::toolbox::error::{ApiError, JsonBody, QueryParams};
use crate::toolbox::process::interleave::Stream;
use crate::toolbox::pty::select_protocol;
use crate::toolbox::state::{Toolbox, check_env_var};

/// Id of the session that runs the image's entrypoint.
const ENTRYPOINT_SESSION: &str = "entrypoint";

/// Maximum length of a session id, in bytes.
const MAX_SESSION_ID: usize = 256;

/// Maximum bytes in one WebSocket frame of a followed log.
const FRAME_SIZE: usize = 64 * 1024;

/// How long writing input may wait for a command that does not read it.
const INPUT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::new()
        .routes(routes!(create_session, list_sessions))
        .routes(routes!(get_entrypoint_session))
        .routes(routes!(get_entrypoint_logs))
        .routes(routes!(get_session, delete_session))
        .routes(routes!(execute))
        .routes(routes!(get_command))
        .routes(routes!(get_command_logs))
        .routes(routes!(send_input))
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    #[serde(default)]
    follow: Option<bool>,
}

/// Creates an empty session whose commands start in the work directory with the sandbox's
/// environment.
#[utoipa::path(post, path = "/process/session", tag = "process", request_body = CreateSessionRequest,
    responses((status = 201, description = "Created"), (status = 400, body = ErrorBody),
        (status = 409, description = "A session with this id exists", body = ErrorBody)))]
async fn create_session(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<CreateSessionRequest>,
) -> Result<StatusCode, ApiError> {
    let id = request.session_id;
    if id.is_empty() || id.len() > MAX_SESSION_ID || id.contains('/') {
        return Err(ApiError::bad_request(format!(
            "invalid session id {id:?}: use 1 to {MAX_SESSION_ID} bytes without '/'"
        )));
    }
    let state = ShellState {
        cwd: toolbox.work_dir.clone(),
        env: toolbox
            .workload_env
            .read()
            .expect("workload env lock")
            .clone(),
    };
    let session = Session::new(id.clone(), state);
    let sessions = &toolbox.sessions;
    sessions
        .store
        .ensure()
        .and_then(|()| std::fs::create_dir(sessions.store.session_dir(&session.dir)))
        .map_err(|error| ApiError::internal("failed to create the session's directory", &error))?;
    match sessions.insert(session) {
        Ok(Some(session)) => {
            sessions.store.save(&session.record());
            Ok(StatusCode::CREATED)
        }
        Ok(None) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "CONFLICT",
            format!("session {id} already exists: delete it first or use another id"),
        )),
        Err(limit) => Err(ApiError::bad_request(format!(
            "the sandbox has {limit} sessions, the most it keeps: delete one first"
        ))),
    }
}

#[utoipa::path(get, path = "/process/session", tag = "process",
    responses((status = 200, body = Vec<WireSession>)))]
async fn list_sessions(State(toolbox): State<Arc<Toolbox>>) -> Json<Vec<WireSession>> {
    Json(
        toolbox
            .sessions
            .list()
            .iter()
            .map(|session| session.to_wire())
            .collect(),
    )
}

#[utoipa::path(get, path = "/process/session/{sessionId}", tag = "process",
    params(("sessionId" = String, Path)),
    responses((status = 200, body = WireSession), (status = 404, body = ErrorBody)))]
async fn get_session(
    State(toolbox): State<Arc<Toolbox>>,
    Path(session_id): Path<String>,
) -> Result<Json<WireSession>, ApiError> {
    Ok(Json(find_session(&toolbox, &session_id)?.to_wire()))
}

/// The session of the image's entrypoint. The default image has no entrypoint: the session
/// is then empty.
#[utoipa::path(get, path = "/process/session/entrypoint", tag = "process",
    responses((status = 200, body = WireSession)))]
async fn get_entrypoint_session(State(toolbox): State<Arc<Toolbox>>) -> Json<WireSession> {
    Json(match toolbox.sessions.get(ENTRYPOINT_SESSION) {
        Some(session) => session.to_wire(),
        None => WireSession {
            session_id: ENTRYPOINT_SESSION.to_owned(),
            commands: Vec::new(),
        },
    })
}

/// Kills the processes of the session's commands (SIGTERM, then SIGKILL after 5 seconds)
/// and removes its logs.
#[utoipa::path(delete, path = "/process/session/{sessionId}", tag = "process",
    params(("sessionId" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)))]
async fn delete_session(
    State(toolbox): State<Arc<Toolbox>>,
    Path(session_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let session = toolbox
        .sessions
        .remove(&session_id)
        .ok_or_else(|| session_not_found(&session_id))?;
    for command in session.commands() {
        run::terminate(&command, TERM_GRACE);
    }
    let dir = toolbox.sessions.store.session_dir(&session.dir);
    // Logs still being written are removed with the directory; their files live on until
    // their commands end.
    tokio::task::spawn_blocking(move || {
        if let Err(error) = std::fs::remove_dir_all(&dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), %error, "failed to remove a session's files");
        }
    });
    Ok(StatusCode::NO_CONTENT)
}

/// Runs a command in the session. With `runAsync` it starts in the background and the
/// response (202) carries its id. Otherwise the response (200) comes when it ended, with its
/// output and exit code, and its final directory and exported environment become the
/// session's.
#[utoipa::path(post, path = "/process/session/{sessionId}/exec", tag = "process",
    params(("sessionId" = String, Path)), request_body = SessionExecuteRequest,
    responses((status = 200, description = "Ran to its end", body = SessionExecuteResponse),
        (status = 202, description = "Started in the background", body = SessionExecuteResponse),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn execute(
    State(toolbox): State<Arc<Toolbox>>,
    Path(session_id): Path<String>,
    JsonBody(request): JsonBody<SessionExecuteRequest>,
) -> Result<Response, ApiError> {
    let session = find_session(&toolbox, &session_id)?;
    let envs = request.envs.clone().unwrap_or_default();
    for (name, value) in &envs {
        check_env_var(name, value)?;
    }
    if request.command.trim().is_empty() {
        return Err(ApiError::bad_request(
            "command is empty: give a command to run",
        ));
    }
    let sync = !request.is_async();

    let command_id = uuid::Uuid::new_v4().to_string();
    let log_path = toolbox
        .sessions
        .store
        .session_dir(&session.dir)
        .join(format!("{command_id}.log"));
    let log = CommandLog::create(log_path, toolbox.output_limit as u64)
        .map_err(|error| ApiError::internal("failed to create the command's log", &error))?;
    let (exit, _) = watch::channel(None);
    let command = Arc::new(Command {
        id: command_id.clone(),
        command: request.command.clone(),
        log: Arc::new(log),
        echo_input: !request.suppress_input_echo.unwrap_or(false),
        takes_input: !sync,
        live: std::sync::Mutex::new(Live::default()),
        exit,
    });
    session.add_command(Arc::clone(&command));
    toolbox.sessions.store.save(&session.record());

    // The start runs in its own task, so that a client that leaves does not cancel it halfway
    // and leave a command that never ends.
    let mut exit = command.subscribe_exit();
    let launch = Launch {
        command: Arc::clone(&command),
        session: Arc::clone(&session),
        sync,
        envs,
    };
    let starter = Arc::clone(&toolbox);
    let started = tokio::spawn(async move { run::start(&starter, launch).await });
    started
        .await
        .map_err(|error| ApiError::internal("failed to start the command", &error))?;

    if !sync {
        let body = SessionExecuteResponse {
            cmd_id: command_id,
            output: None,
            stdout: None,
            stderr: None,
            exit_code: None,
        };
        return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
    }

    // The command goes on if the client leaves; its result stays readable.
    let exit_code = match exit.wait_for(Option::is_some).await {
        Ok(code) => code.unwrap_or(-1),
        Err(_) => -1,
    };
    let logs = read_logs(&command.log).await?;
    let body = SessionExecuteResponse {
        cmd_id: command_id,
        output: Some(logs.output),
        stdout: Some(logs.stdout),
        stderr: Some(logs.stderr),
        exit_code: Some(exit_code),
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}

#[utoipa::path(get, path = "/process/session/{sessionId}/command/{commandId}", tag = "process",
    params(("sessionId" = String, Path), ("commandId" = String, Path)),
    responses((status = 200, body = daytona_wire::sessions::Command), (status = 404, body = ErrorBody)))]
async fn get_command(
    State(toolbox): State<Arc<Toolbox>>,
    Path((session_id, command_id)): Path<(String, String)>,
) -> Result<Json<daytona_wire::sessions::Command>, ApiError> {
    let (_, command) = find_command(&toolbox, &session_id, &command_id)?;
    Ok(Json(command.to_wire()))
}

/// Returns the command's output so far as JSON. With `follow=true` on a WebSocket upgrade, it
/// streams the output as binary frames in which `01 01 01` starts standard output and
/// `02 02 02` standard error. The server closes the stream with code 1000 once the command
/// ended and all its output was sent.
#[utoipa::path(get, path = "/process/session/{sessionId}/command/{commandId}/logs", tag = "process",
    params(("sessionId" = String, Path), ("commandId" = String, Path), ("follow" = Option<bool>, Query)),
    responses((status = 200, body = SessionCommandLogsResponse),
        (status = 101, description = "WebSocket stream of the log, with follow=true"),
        (status = 404, body = ErrorBody)))]
async fn get_command_logs(
    State(toolbox): State<Arc<Toolbox>>,
    Path((session_id, command_id)): Path<(String, String)>,
    QueryParams(query): QueryParams<LogsQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (_, command) = find_command(&toolbox, &session_id, &command_id)?;
    logs_response(Some(Arc::clone(&command.log)), query, upgrade).await
}

/// The entrypoint's log, as for a command; empty when the image has no entrypoint.
#[utoipa::path(get, path = "/process/session/entrypoint/logs", tag = "process",
    params(("follow" = Option<bool>, Query)),
    responses((status = 200, body = SessionCommandLogsResponse),
        (status = 101, description = "WebSocket stream of the log, with follow=true")))]
async fn get_entrypoint_logs(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(query): QueryParams<LogsQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let log = toolbox
        .sessions
        .get(ENTRYPOINT_SESSION)
        .and_then(|session| session.commands().first().cloned())
        .map(|command| Arc::clone(&command.log));
    logs_response(log, query, upgrade).await
}

/// Writes to the standard input of a command running in the background, and to its log
/// unless the command was started with `suppressInputEcho`.
#[utoipa::path(post, path = "/process/session/{sessionId}/command/{commandId}/input", tag = "process",
    params(("sessionId" = String, Path), ("commandId" = String, Path)),
    request_body = SessionSendInputRequest,
    responses((status = 204, description = "Sent"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 410, description = "The command ended", body = ErrorBody)))]
async fn send_input(
    State(toolbox): State<Arc<Toolbox>>,
    Path((session_id, command_id)): Path<(String, String)>,
    JsonBody(request): JsonBody<SessionSendInputRequest>,
) -> Result<StatusCode, ApiError> {
    let (_, command) = find_command(&toolbox, &session_id, &command_id)?;
    if !command.takes_input {
        return Err(ApiError::bad_request(format!(
            "command {command_id} was not started with runAsync and reads no input"
        )));
    }
    let gone = || {
        ApiError::new(
            StatusCode::GONE,
            "COMMAND_ALREADY_COMPLETED",
            format!("command {command_id} has ended and takes no more input"),
        )
    };
    let input = command.input().ok_or_else(gone)?;
    let mut input = input.lock().await;
    // The echo goes first, where a terminal shows typed input: before the output it causes.
    if command.echo_input {
        command.log.append(Stream::Stdout, request.data.as_bytes());
    }
    match tokio::time::timeout(INPUT_TIMEOUT, input.write_all(request.data.as_bytes())).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(gone()),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                format!(
                    "command {command_id} did not read its input within {} seconds",
                    INPUT_TIMEOUT.as_secs()
                ),
            ));
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

fn find_session(toolbox: &Toolbox, session_id: &str) -> Result<Arc<Session>, ApiError> {
    toolbox
        .sessions
        .get(session_id)
        .ok_or_else(|| session_not_found(session_id))
}

fn session_not_found(session_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("session {session_id} not found: create it with POST /process/session"),
    )
}

fn find_command(
    toolbox: &Toolbox,
    session_id: &str,
    command_id: &str,
) -> Result<(Arc<Session>, Arc<Command>), ApiError> {
    let session = find_session(toolbox, session_id)?;
    let command = session.command(command_id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "PROCESS_NOT_FOUND",
            format!(
                "command {command_id} not found in session {session_id}: it never ran there, or it ended more than {} seconds ago",
                toolbox.sessions.command_ttl().as_secs()
            ),
        )
    })?;
    Ok((session, command))
}

async fn read_logs(log: &Arc<CommandLog>) -> Result<SessionCommandLogsResponse, ApiError> {
    let log = Arc::clone(log);
    tokio::task::spawn_blocking(move || log.read_text())
        .await
        .map_err(|error| ApiError::internal("failed to read the command's log", &error))?
        .map_err(|error| ApiError::internal("failed to read the command's log", &error))
}

async fn logs_response(
    log: Option<Arc<CommandLog>>,
    query: LogsQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if query.follow.unwrap_or(false)
        && let Ok(upgrade) = upgrade
    {
        let upgrade = select_protocol(upgrade);
        return Ok(upgrade.on_upgrade(move |socket| follow(socket, log)));
    }
    let logs = match &log {
        Some(log) => read_logs(log).await?,
        None => SessionCommandLogsResponse::default(),
    };
    Ok(Json(logs).into_response())
}

/// Sends the log as it grows, then closes with 1000 once it is complete. An absent log is
/// complete and empty.
async fn follow(mut socket: WebSocket, log: Option<Arc<CommandLog>>) {
    if let Some(log) = log
        && !send_log(&mut socket, &log).await
    {
        return;
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: close_code::NORMAL,
            reason: "".into(),
        })))
        .await;
}

/// Streams the log until it is complete; false when the client left first.
async fn send_log(socket: &mut WebSocket, log: &Arc<CommandLog>) -> bool {
    let mut progress = log.subscribe();
    let mut offset = 0;
    let mut records = Records::default();
    loop {
        let current = *progress.borrow_and_update();
        while offset < current.len {
            let chunk = {
                let log = Arc::clone(log);
                let mut chunk_records = std::mem::take(&mut records);
                let mut chunk_offset = offset;
                let read = tokio::task::spawn_blocking(move || {
                    let chunk = log.read_wire(&mut chunk_offset, FRAME_SIZE, &mut chunk_records);
                    (chunk, chunk_offset, chunk_records)
                })
                .await;
                let Ok((chunk, new_offset, new_records)) = read else {
                    return false;
                };
                offset = new_offset;
                records = new_records;
                match chunk {
                    Ok(chunk) => chunk,
                    // The log was removed (its session was deleted): nothing more to send.
                    Err(_) => return true,
                }
            };
            if !chunk.is_empty() && socket.send(Message::Binary(chunk.into())).await.is_err() {
                return false;
            }
        }
        if current.done {
            return true;
        }
        tokio::select! {
            changed = progress.changed() => {
                if changed.is_err() {
                    return true;
                }
            }
            message = socket.recv() => match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return false,
                Some(Ok(_)) => {}
            },
        }
    }
}
