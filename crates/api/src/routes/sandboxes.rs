//! `/sandbox` routes: create, read, list, delete, start and stop.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use daytona_runner::{CreateParams, Limits};
use daytona_wire::ErrorBody;
use daytona_wire::api::{
    CreateSandbox, ListSandboxes, Sandbox, SandboxState, SnapshotState, ToolboxProxyUrl,
};

use crate::auth::Caller;
use crate::config::{
    DEFAULT_AUTO_ARCHIVE_MINUTES, DEFAULT_AUTO_DELETE_MINUTES, DEFAULT_AUTO_STOP_MINUTES,
    DEFAULT_USER, TARGET,
};
use crate::dto;
use crate::error::ApiError;
use crate::json::JsonBody;
use crate::state::{AppState, ToolboxRoute};
use crate::store::{SandboxFilter, SandboxRecord};

/// Label the SDKs set to pick the language of `code_run`.
const LANGUAGE_LABEL: &str = "code-toolbox-language";
const LANGUAGES: [&str; 3] = ["python", "typescript", "javascript"];

/// Longest sandbox name accepted.
const MAX_NAME_LEN: usize = 255;

fn validate_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid sandbox name {name:?}: use 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.'"
        )))
    }
}

fn validate_user(user: &str) -> Result<(), ApiError> {
    let mut chars = user.chars();
    let valid = user.len() <= 32
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid user {user:?}: use a POSIX user name such as 'daytona' or 'root'"
        )))
    }
}

/// Checks that environment variable names are portable shell names.
pub fn validate_env(env: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for name in env.keys() {
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ApiError::bad_request(format!(
                "invalid environment variable name {name:?}: use letters, digits and '_', not starting with a digit"
            )));
        }
    }
    Ok(())
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if let Some(language) = labels.get(LANGUAGE_LABEL)
        && !LANGUAGES.contains(&language.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "invalid label {LANGUAGE_LABEL}={language:?}: use one of python, typescript, javascript"
        )));
    }
    Ok(())
}

fn resource(
    name: &str,
    requested: Option<i64>,
    default: i64,
    max: i64,
    unit: &str,
) -> Result<i64, ApiError> {
    let value = requested.unwrap_or(default);
    if (1..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::bad_request(format!(
            "invalid {name} {value}: a sandbox may have 1 to {max} {unit}"
        )))
    }
}

fn interval(name: &str, value: Option<i64>, default: i64, min: i64) -> Result<i64, ApiError> {
    let value = value.unwrap_or(default);
    if value < min {
        return Err(ApiError::bad_request(format!(
            "invalid {name} {value}: it must be at least {min} (minutes)"
        )));
    }
    Ok(value)
}

/// `POST /sandbox`: creates a sandbox and answers once it is started.
#[utoipa::path(post, path = "/sandbox", tag = "sandbox", request_body = CreateSandbox,
    responses((status = 200, description = "The sandbox, already started", body = Sandbox),
        (status = 400, body = ErrorBody), (status = 404, description = "Unknown snapshot", body = ErrorBody),
        (status = 409, description = "A live sandbox has this name", body = ErrorBody),
        (status = 503, description = "The default snapshot is not ready yet", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateSandbox>,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    if !state.is_ready() {
        return Err(ApiError::unavailable(
            "the server is still preparing the default snapshot; GET /api/health answers 200 once creates are accepted",
        ));
    }
    if body.build_info.is_some() {
        return Err(ApiError::bad_request(
            "creating a sandbox from an image build is not supported yet; create it from a snapshot",
        ));
    }
    if body.volumes.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::bad_request("volumes are not supported yet"));
    }
    if body.gpu.unwrap_or(0) > 0 || body.gpu_type.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::bad_request(
            "GPUs are not available on this server",
        ));
    }
    if body.kvm == Some(true) {
        return Err(ApiError::bad_request("KVM is not available on this server"));
    }

    if let Some(name) = &body.name {
        validate_name(name)?;
    }
    let user = body.user.clone().unwrap_or_else(|| DEFAULT_USER.to_owned());
    validate_user(&user)?;
    let env = body.env.clone().unwrap_or_default();
    validate_env(&env)?;
    let labels = body.labels.clone().unwrap_or_default();
    validate_labels(&labels)?;

    let snapshot_name = body
        .snapshot
        .clone()
        .unwrap_or_else(|| daytona_images::DEFAULT_SNAPSHOT.to_owned());
    let snapshot = state
        .store
        .snapshot_by_id_or_name(&caller.organization_id, &snapshot_name)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "snapshot {snapshot_name:?} not found; GET /api/snapshots lists the available ones"
            ))
        })?;
    if snapshot.state != SnapshotState::Active {
        return Err(ApiError::bad_request(format!(
            "snapshot {:?} is not active (it is {:?})",
            snapshot.name, snapshot.state
        )));
    }
    let layers = state
        .images
        .read()
        .expect("images lock")
        .get(&snapshot.name)
        .cloned()
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "snapshot {:?} has no image on this runner",
                snapshot.name
            ))
        })?;

    let limits = &state.config.limits;
    let cpu = resource(
        "cpu",
        body.cpu,
        snapshot.cpu.max(limits.default_cpu),
        limits.max_cpu,
        "vCPUs",
    )?;
    let memory = resource(
        "memory",
        body.memory,
        snapshot.memory.max(limits.default_memory),
        limits.max_memory,
        "GiB",
    )?;
    let disk = resource(
        "disk",
        body.disk,
        snapshot.disk.max(limits.default_disk),
        limits.max_disk,
        "GiB",
    )?;
    let auto_stop_interval = interval(
        "autoStopInterval",
        body.auto_stop_interval,
        DEFAULT_AUTO_STOP_MINUTES,
        0,
    )?;
    let auto_archive_interval = interval(
        "autoArchiveInterval",
        body.auto_archive_interval,
        DEFAULT_AUTO_ARCHIVE_MINUTES,
        0,
    )?;
    let auto_delete_interval = interval(
        "autoDeleteInterval",
        body.auto_delete_interval,
        DEFAULT_AUTO_DELETE_MINUTES,
        -1,
    )?;
    let auto_pause_interval = interval("autoPauseInterval", body.auto_pause_interval, 0, 0)?;

    let sandbox_limits = Limits {
        cpus: cpu as u32,
        memory_gib: memory as u32,
        disk_gib: disk as u32,
        pids: limits.pids,
    };

    // A sandbox from the warm pool is already started; its id becomes the sandbox's.
    let claimed = state.runner.claim(&layers, &user);
    let id = claimed
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let name = body.name.clone().unwrap_or_else(|| id.clone());

    let now = daytona_wire::now_rfc3339();
    let mut record = SandboxRecord {
        id: id.clone(),
        organization_id: caller.organization_id.clone(),
        name,
        snapshot: Some(snapshot.name.clone()),
        os_user: user.clone(),
        env: env.clone(),
        labels,
        public: body.public.unwrap_or(false),
        network_block_all: body.network_block_all.unwrap_or(false),
        network_allow_list: body.network_allow_list.clone(),
        domain_allow_list: body.domain_allow_list.clone(),
        target: TARGET.to_owned(),
        cpu,
        gpu: 0,
        memory,
        disk,
        state: SandboxState::Creating,
        desired_state: Some("started".to_owned()),
        error_reason: None,
        auto_stop_interval,
        auto_archive_interval,
        auto_delete_interval,
        auto_pause_interval,
        volumes: Vec::new(),
        created_at: now.clone(),
        updated_at: now.clone(),
        last_activity_at: Some(now),
    };
    // The row comes first: it reserves the name, and a server that crashes mid-create finds
    // a `creating` row at start and cleans up after it.
    if let Err(error) = state.store.insert_sandbox(&record).await {
        if let Some(id) = &claimed {
            state.runner.return_to_pool(id);
        }
        return Err(error.into());
    }

    let runtime_started = Instant::now();
    let created = match &claimed {
        Some(id) => state.runner.finish_claim(id, &env, sandbox_limits).await,
        None => {
            let params = CreateParams {
                sandbox_id: id.clone(),
                layers,
                user,
                env,
                limits: sandbox_limits,
            };
            state.runner.create(params).await
        }
    };
    let runtime_elapsed = runtime_started.elapsed();
    if let Err(error) = created {
        state.store.delete_sandbox(&id).await?;
        return Err(ApiError::internal(
            format!("failed to create the sandbox: {error}"),
            error,
        ));
    }

    record.state = SandboxState::Started;
    record.updated_at = daytona_wire::now_rfc3339();
    state
        .store
        .set_sandbox_state(&id, SandboxState::Started, None)
        .await?;
    add_route(&state, &record)?;
    tracing::info!(sandbox_id = %id, organization_id = %caller.organization_id, "sandbox created");
    let mut response = Json(dto::sandbox(&state, &record)).into_response();
    // Lets clients and benchmarks see the server-side time apart from the network's.
    let timing = format!(
        "runtime;dur={:.3}, total;dur={:.3}",
        runtime_elapsed.as_secs_f64() * 1000.0,
        received.elapsed().as_secs_f64() * 1000.0
    );
    if let Ok(value) = HeaderValue::from_str(&timing) {
        response.headers_mut().insert("server-timing", value);
    }
    Ok(response)
}

fn add_route(state: &AppState, record: &SandboxRecord) -> Result<(), ApiError> {
    let socket = state
        .runner
        .toolbox_socket(&record.id)
        .map_err(|error| ApiError::internal("the runner lost the sandbox", error))?;
    state.add_route(
        &record.id,
        ToolboxRoute {
            organization_id: record.organization_id.clone(),
            socket,
        },
    );
    Ok(())
}

/// Loads a sandbox of the caller's organization by id or name, or answers 404.
pub async fn find(
    state: &AppState,
    caller: &Caller,
    id_or_name: &str,
) -> Result<SandboxRecord, ApiError> {
    state
        .store
        .sandbox_by_id_or_name(&caller.organization_id, id_or_name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("sandbox {id_or_name:?} not found")))
}

/// `GET /sandbox/{idOrName}`.
#[utoipa::path(get, path = "/sandbox/{id}", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    let record = find(&state, &caller, &id_or_name).await?;
    Ok(Json(dto::sandbox(&state, &record)))
}

/// `GET /sandbox/{id}/toolbox-proxy-url`.
#[utoipa::path(get, path = "/sandbox/{id}/toolbox-proxy-url", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = ToolboxProxyUrl), (status = 404, body = ErrorBody)))]
pub async fn toolbox_proxy_url(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Json<ToolboxProxyUrl>, ApiError> {
    find(&state, &caller, &id_or_name).await?;
    Ok(Json(ToolboxProxyUrl {
        url: state.toolbox_proxy_url(),
    }))
}

/// `DELETE /sandbox/{idOrName}`: destroys the sandbox and releases everything it held before
/// answering, so that its name and its share of the limits are free at once.
#[utoipa::path(delete, path = "/sandbox/{id}", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "The sandbox, destroyed", body = Sandbox), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    let mut record = find(&state, &caller, &id_or_name).await?;
    state.remove_route(&record.id);
    state
        .store
        .set_sandbox_state(&record.id, SandboxState::Destroying, None)
        .await?;
    if let Err(error) = state.runner.destroy(&record.id).await {
        return Err(ApiError::internal(
            format!("failed to destroy the sandbox: {error}"),
            error,
        ));
    }
    state.store.delete_sandbox(&record.id).await?;
    tracing::info!(sandbox_id = %record.id, "sandbox destroyed");
    record.state = SandboxState::Destroyed;
    record.desired_state = Some("destroyed".to_owned());
    record.updated_at = daytona_wire::now_rfc3339();
    Ok(Json(dto::sandbox(&state, &record)))
}

/// `POST /sandbox/{idOrName}/start`.
#[utoipa::path(post, path = "/sandbox/{id}/start", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    let mut record = find(&state, &caller, &id_or_name).await?;
    match record.state {
        SandboxState::Started => return Ok(Json(dto::sandbox(&state, &record))),
        SandboxState::Stopped | SandboxState::Error => {}
        other => {
            return Err(ApiError::conflict(format!(
                "sandbox state change in progress: the sandbox is {other}"
            )));
        }
    }
    state
        .store
        .set_sandbox_state(&record.id, SandboxState::Starting, None)
        .await?;
    if let Err(error) = state.runner.start(&record.id).await {
        let reason = format!("failed to start: {error}");
        state
            .store
            .set_sandbox_state(&record.id, SandboxState::Error, Some(&reason))
            .await?;
        return Err(ApiError::internal(
            format!("failed to start the sandbox: {error}"),
            error,
        ));
    }
    state
        .store
        .set_sandbox_state(&record.id, SandboxState::Started, None)
        .await?;
    record.state = SandboxState::Started;
    record.error_reason = None;
    record.desired_state = Some("started".to_owned());
    add_route(&state, &record)?;
    Ok(Json(dto::sandbox(&state, &record)))
}

/// `POST /sandbox/{idOrName}/stop`.
#[utoipa::path(post, path = "/sandbox/{id}/stop", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    let mut record = find(&state, &caller, &id_or_name).await?;
    match record.state {
        SandboxState::Stopped => return Ok(Json(dto::sandbox(&state, &record))),
        SandboxState::Started | SandboxState::Error => {}
        other => {
            return Err(ApiError::conflict(format!(
                "sandbox state change in progress: the sandbox is {other}"
            )));
        }
    }
    state.remove_route(&record.id);
    state
        .store
        .set_sandbox_state(&record.id, SandboxState::Stopping, None)
        .await?;
    if let Err(error) = state.runner.stop(&record.id).await {
        let reason = format!("failed to stop: {error}");
        state
            .store
            .set_sandbox_state(&record.id, SandboxState::Error, Some(&reason))
            .await?;
        return Err(ApiError::internal(
            format!("failed to stop the sandbox: {error}"),
            error,
        ));
    }
    state
        .store
        .set_sandbox_state(&record.id, SandboxState::Stopped, None)
        .await?;
    record.state = SandboxState::Stopped;
    record.error_reason = None;
    record.desired_state = Some("stopped".to_owned());
    Ok(Json(dto::sandbox(&state, &record)))
}

/// Query of `GET /sandbox`, parsed by hand because list parameters repeat (`states=a&states=b`).
#[derive(Debug, Default)]
struct ListQuery {
    cursor: Option<String>,
    limit: usize,
    filter: SandboxFilter,
    labels: BTreeMap<String, String>,
    sort: SortField,
    descending: bool,
}

#[derive(Debug, Default, Clone, Copy)]
enum SortField {
    #[default]
    CreatedAt,
    Name,
    UpdatedAt,
    LastActivityAt,
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

fn parse_list_query(raw: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut query = ListQuery {
        limit: DEFAULT_PAGE,
        descending: true,
        ..ListQuery::default()
    };
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "cursor" if !value.is_empty() => query.cursor = Some(value.into_owned()),
            "limit" => {
                query.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "invalid limit {value:?}: use 1 to {MAX_PAGE}"
                        ))
                    })?;
            }
            "id" => query.filter.id = Some(value.into_owned()),
            "name" => query.filter.name = Some(value.into_owned()),
            "states" | "state" => {
                for name in value.split(',').filter(|s| !s.is_empty()) {
                    let state = SandboxState::parse(name)
                        .ok_or_else(|| ApiError::bad_request(format!("invalid state {name:?}")))?;
                    query.filter.states.push(state);
                }
            }
            "labels" => {
                query.labels = serde_json::from_str(&value).map_err(|_| {
                    ApiError::bad_request(format!(
                        "invalid labels filter {value:?}: use a JSON object of strings, such as {{\"team\":\"a\"}}"
                    ))
                })?;
            }
            "sort" => {
                query.sort = match value.as_ref() {
                    "createdAt" => SortField::CreatedAt,
                    "name" => SortField::Name,
                    "updatedAt" => SortField::UpdatedAt,
                    "lastActivityAt" => SortField::LastActivityAt,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "invalid sort {other:?}: use createdAt, name, updatedAt or lastActivityAt"
                        )));
                    }
                }
            }
            "order" => {
                query.descending = match value.as_ref() {
                    "desc" => true,
                    "asc" => false,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "invalid order {other:?}: use asc or desc"
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(query)
}

fn sort_key(record: &SandboxRecord, field: SortField) -> String {
    match field {
        SortField::CreatedAt => record.created_at.clone(),
        SortField::Name => record.name.clone(),
        SortField::UpdatedAt => record.updated_at.clone(),
        SortField::LastActivityAt => record.last_activity_at.clone().unwrap_or_default(),
    }
}

fn encode_cursor(key: &str, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&(key, id)).expect("two strings always serialize"))
}

fn decode_cursor(cursor: &str) -> Result<(String, String), ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            ApiError::bad_request("invalid cursor: pass back the nextCursor of a previous page")
        })
}

/// `GET /sandbox`: a page of the organization's sandboxes with a cursor to the next.
#[utoipa::path(get, path = "/sandbox", tag = "sandbox",
    params(
        ("cursor" = Option<String>, Query, description = "nextCursor of the previous page"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"),
        ("id" = Option<String>, Query), ("name" = Option<String>, Query),
        ("labels" = Option<String>, Query, description = "JSON object of labels that must all match"),
        ("states" = Option<Vec<String>>, Query, description = "States to include (repeatable)"),
        ("sort" = Option<String>, Query, description = "createdAt, name, updatedAt or lastActivityAt"),
        ("order" = Option<String>, Query, description = "asc or desc (default desc)")),
    responses((status = 200, body = ListSandboxes), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<ListSandboxes>, ApiError> {
    let query = parse_list_query(raw.as_deref())?;
    let mut records = state
        .store
        .list_sandboxes(&caller.organization_id, &query.filter)
        .await?;
    records.retain(|record| {
        query
            .labels
            .iter()
            .all(|(key, value)| record.labels.get(key) == Some(value))
    });

    let mut keyed: Vec<((String, String), SandboxRecord)> = records
        .into_iter()
        .map(|record| ((sort_key(&record, query.sort), record.id.clone()), record))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    if query.descending {
        keyed.reverse();
    }
    if let Some(cursor) = &query.cursor {
        let after = decode_cursor(cursor)?;
        keyed.retain(|(key, _)| {
            if query.descending {
                *key < after
            } else {
                *key > after
            }
        });
    }
    let has_more = keyed.len() > query.limit;
    keyed.truncate(query.limit);
    let next_cursor = if has_more {
        keyed.last().map(|((key, id), _)| encode_cursor(key, id))
    } else {
        None
    };
    let items = keyed
        .iter()
        .map(|(_, record)| dto::sandbox(&state, record))
        .collect();
    Ok(Json(ListSandboxes { items, next_cursor }))
}
