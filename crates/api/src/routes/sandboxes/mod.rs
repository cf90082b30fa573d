//! `/sandbox` routes: create, read, delete, the lifecycle operations and the settings.
//!
//! The handlers parse and check requests; the state machine and its operations are in
//! [`crate::lifecycle`].

mod list;
pub(crate) mod network;
mod settings;
mod snapshot;

use std::collections::BTreeMap;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use daytona_runner::Limits;
use daytona_wire::ErrorBody;
use daytona_wire::api::{
    CreateBuildInfo, CreateSandbox, ResizeSandbox, Sandbox, SandboxState, SnapshotState,
    ToolboxProxyUrl,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::config::{
    DEFAULT_AUTO_ARCHIVE_MINUTES, DEFAULT_AUTO_DELETE_MINUTES, DEFAULT_AUTO_STOP_MINUTES,
    DEFAULT_USER, TARGET,
};
use crate::dto;
use crate::error::ApiError;
use crate::json::JsonBody;
use crate::lifecycle::{self, CreatePlan};
use crate::state::AppState;
use crate::store::SandboxRecord;

/// Returns the `/sandbox` routes with their OpenAPI description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list::list))
        .routes(routes!(get, delete))
        .routes(routes!(start))
        .routes(routes!(stop))
        .routes(routes!(archive))
        .routes(routes!(recover))
        .routes(routes!(resize))
        .routes(routes!(toolbox_proxy_url))
        .routes(routes!(build_logs_url))
        .routes(routes!(build_logs))
        .merge(settings::routes())
        .merge(network::routes())
        .merge(snapshot::routes())
}

/// Label the SDKs set to pick the language of `code_run`.
const LANGUAGE_LABEL: &str = "code-toolbox-language";
const LANGUAGES: [&str; 3] = ["python", "typescript", "javascript"];

/// Longest sandbox name accepted.
const MAX_NAME_LEN: usize = 255;

fn validate_name(name: &str) -> Result<(), ApiError> {
    validate_resource_name("sandbox", name)
}

/// Checks the name of a sandbox, volume or other named resource: letters, digits, `-`, `_`
/// and `.`, at most [`MAX_NAME_LEN`] bytes.
pub(crate) fn validate_resource_name(kind: &str, name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        // `.` and `..` would read as path segments in URLs that carry the name.
        && !name.chars().all(|c| c == '.');
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid {kind} name {name:?}: use 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.', not only dots"
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

/// Longest `NAME=value` string the kernel passes to a program (`MAX_ARG_STRLEN`, 32 pages),
/// less its terminating NUL.
const MAX_ENV_ENTRY: usize = 128 * 1024 - 1;

/// Most bytes of environment a sandbox may have in all, well under the kernel's limit on the
/// arguments and environment of one program (a quarter of the 8 MiB default stack).
const MAX_ENV_TOTAL: usize = 1024 * 1024;

/// Checks that environment variable names are portable shell names, and that every variable
/// fits what the kernel passes to a program.
pub fn validate_env(env: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let mut total = 0;
    for (name, value) in env {
        let entry = name.len() + 1 + value.len();
        if entry > MAX_ENV_ENTRY {
            return Err(ApiError::bad_request(format!(
                "environment variable {name} is {entry} bytes long with its name; the limit is {MAX_ENV_ENTRY} bytes, which is what Linux passes to a program"
            )));
        }
        if value.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "environment variable {name} contains a NUL byte"
            )));
        }
        total += entry + 1;
    }
    if total > MAX_ENV_TOTAL {
        return Err(ApiError::bad_request(format!(
            "the environment is {total} bytes; the limit is {MAX_ENV_TOTAL} bytes"
        )));
    }
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

/// `POST /sandbox`: creates a sandbox and responds once it is started, has failed, or 30 s
/// have passed (the SDK then waits for the rest).
#[utoipa::path(post, path = "/sandbox", tag = "sandbox", request_body = CreateSandbox,
    responses((status = 200, description = "The sandbox: `started`, `error` when its start failed, or `starting` when the start takes longer than 30 s", body = Sandbox),
        (status = 400, body = ErrorBody), (status = 404, description = "Unknown snapshot", body = ErrorBody),
        (status = 409, description = "A live sandbox has this name", body = ErrorBody),
        (status = 429, description = "The organization is at one of its limits", body = ErrorBody),
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
    if body.build_info.is_some() && body.snapshot.is_some() {
        return Err(ApiError::bad_request(
            "snapshot and buildInfo cannot be used together: create the sandbox either from a snapshot or from an image definition",
        ));
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
    let (volumes, volume_mounts) = super::volumes::resolve_mounts(
        &state,
        &caller,
        body.volumes.as_deref().unwrap_or_default(),
    )
    .await?;

    if let Some(build_info) = body.build_info.clone() {
        let request = BuildRequest {
            user,
            env,
            labels,
            volumes,
            volume_mounts,
        };
        return create_from_build_info(&state, &caller, &body, build_info, request).await;
    }

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
    let image = super::snapshots::image_for(&state, &snapshot).await?;
    let layers = image.layers;
    lifecycle::check_user_in_image(&layers, &user, &snapshot.name)?;
    // The image's environment comes first; the variables of the request override it.
    let env = lifecycle::with_image_env(&image.config.env, env);
    // Imported images start commands in their WorkingDir. The default snapshot keeps the
    // user's home, so that root starts in /root.
    let work_dir = if snapshot.name == daytona_images::DEFAULT_SNAPSHOT {
        None
    } else {
        image
            .config
            .working_dir
            .clone()
            .filter(|dir| !dir.is_empty())
    };

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
    let intervals = Intervals::from_request(&body)?;
    network::egress_policy(
        body.network_block_all.unwrap_or(false),
        body.network_allow_list.as_deref(),
        body.domain_allow_list.as_deref(),
    )?;

    let sandbox_limits = Limits {
        cpus: cpu as u32,
        memory_gib: memory as u32,
        disk_gib: disk as u32,
        pids: limits.pids,
    };

    // A sandbox from the warm pool is already started; its id becomes the sandbox's.
    // A pooled sandbox has no volumes and the pool's disk size, which it cannot change.
    let claimed = if volume_mounts.is_empty() && work_dir.is_none() {
        state.runner.claim(&layers, &user, sandbox_limits.disk_gib)
    } else {
        None
    };
    let id = claimed
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let name = body.name.clone().unwrap_or_else(|| id.clone());

    let now = daytona_wire::now_rfc3339();
    let record = SandboxRecord {
        id: id.clone(),
        organization_id: caller.organization_id.clone(),
        name,
        snapshot: Some(snapshot.name.clone()),
        os_user: user,
        env,
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
        auto_stop_interval: intervals.auto_stop,
        auto_archive_interval: intervals.auto_archive,
        auto_delete_interval: intervals.auto_delete,
        auto_pause_interval: intervals.auto_pause,
        volumes,
        created_at: now.clone(),
        updated_at: now.clone(),
        last_activity_at: Some(now.clone()),
        auto_destroy_at: settings::ttl_deadline(&state, intervals.ttl),
        state_changed_at: Some(now),
    };
    let plan = CreatePlan {
        layers,
        limits: sandbox_limits,
        claimed,
        volumes: volume_mounts,
        work_dir,
        fork_of: None,
    };

    let runtime_started = Instant::now();
    let record = lifecycle::create(&state, record, plan).await?;
    let runtime_elapsed = runtime_started.elapsed();

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

/// The automatic-lifecycle intervals of a create, in minutes.
struct Intervals {
    auto_stop: i64,
    auto_archive: i64,
    auto_delete: i64,
    auto_pause: i64,
    ttl: i64,
}

impl Intervals {
    fn from_request(body: &CreateSandbox) -> Result<Self, ApiError> {
        Ok(Self {
            auto_stop: interval(
                "autoStopInterval",
                body.auto_stop_interval,
                DEFAULT_AUTO_STOP_MINUTES,
                0,
            )?,
            auto_archive: interval(
                "autoArchiveInterval",
                body.auto_archive_interval,
                DEFAULT_AUTO_ARCHIVE_MINUTES,
                0,
            )?,
            auto_delete: interval(
                "autoDeleteInterval",
                body.auto_delete_interval,
                DEFAULT_AUTO_DELETE_MINUTES,
                -1,
            )?,
            auto_pause: interval("autoPauseInterval", body.auto_pause_interval, 0, 0)?,
            ttl: interval("ttlMinutes", body.ttl_minutes, 0, 0)?,
        })
    }
}

/// The checked parts of a create request that a create from an image definition uses.
struct BuildRequest {
    user: String,
    env: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    volumes: Vec<daytona_wire::api::SandboxVolume>,
    volume_mounts: Vec<daytona_runner::VolumeMount>,
}

/// Creates a sandbox from an image definition: responds at once with `pending_build` while
/// the image builds in the background (see [`lifecycle::create_from_build`]).
async fn create_from_build_info(
    state: &AppState,
    caller: &Caller,
    body: &CreateSandbox,
    build_info: CreateBuildInfo,
    request: BuildRequest,
) -> Result<Response, ApiError> {
    if build_info.dockerfile_content.trim().is_empty() {
        return Err(ApiError::bad_request(
            "buildInfo.dockerfileContent is empty; it must hold a Dockerfile with a FROM line",
        ));
    }
    daytona_images::build::dockerfile::parse(&build_info.dockerfile_content).map_err(|error| {
        ApiError::bad_request(format!("invalid Dockerfile in buildInfo: {error}"))
    })?;
    let limits = &state.config.limits;
    let cpu = resource("cpu", body.cpu, limits.default_cpu, limits.max_cpu, "vCPUs")?;
    let memory = resource(
        "memory",
        body.memory,
        limits.default_memory,
        limits.max_memory,
        "GiB",
    )?;
    let disk = resource(
        "disk",
        body.disk,
        limits.default_disk,
        limits.max_disk,
        "GiB",
    )?;
    let intervals = Intervals::from_request(body)?;
    network::egress_policy(
        body.network_block_all.unwrap_or(false),
        body.network_allow_list.as_deref(),
        body.domain_allow_list.as_deref(),
    )?;

    let image_name = crate::builds::image_name_for(&build_info);
    let id = uuid::Uuid::new_v4().to_string();
    let now = daytona_wire::now_rfc3339();
    let record = SandboxRecord {
        id: id.clone(),
        organization_id: caller.organization_id.clone(),
        name: body.name.clone().unwrap_or_else(|| id.clone()),
        snapshot: Some(image_name.clone()),
        os_user: request.user,
        env: request.env,
        labels: request.labels,
        public: body.public.unwrap_or(false),
        network_block_all: body.network_block_all.unwrap_or(false),
        network_allow_list: body.network_allow_list.clone(),
        domain_allow_list: body.domain_allow_list.clone(),
        target: TARGET.to_owned(),
        cpu,
        gpu: 0,
        memory,
        disk,
        state: SandboxState::PendingBuild,
        desired_state: Some("started".to_owned()),
        error_reason: None,
        auto_stop_interval: intervals.auto_stop,
        auto_archive_interval: intervals.auto_archive,
        auto_delete_interval: intervals.auto_delete,
        auto_pause_interval: intervals.auto_pause,
        volumes: request.volumes,
        created_at: now.clone(),
        updated_at: now.clone(),
        last_activity_at: Some(now.clone()),
        auto_destroy_at: settings::ttl_deadline(state, intervals.ttl),
        state_changed_at: Some(now),
    };
    let plan = lifecycle::BuildPlan {
        build_info,
        image_name,
        limits: Limits {
            cpus: cpu as u32,
            memory_gib: memory as u32,
            disk_gib: disk as u32,
            pids: limits.pids,
        },
        volumes: request.volume_mounts,
    };
    let record = lifecycle::create_from_build(state, record, plan).await?;
    Ok(Json(dto::sandbox(state, &record)).into_response())
}

/// Loads a sandbox of the caller's organization by id or name, or returns a 404 error. The
/// sandbox's latest activity is filled in from memory.
pub async fn find(
    state: &AppState,
    caller: &Caller,
    id_or_name: &str,
) -> Result<SandboxRecord, ApiError> {
    let mut record = state
        .store
        .sandbox_by_id_or_name(&caller.organization_id, id_or_name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("sandbox {id_or_name:?} not found")))?;
    state.lifecycle.activity.overlay(&mut record);
    Ok(record)
}

/// `GET /sandbox/{idOrName}`: the sandbox as it is now; 404 once it is deleted.
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

/// `GET /sandbox/{id}/build-logs-url`: where the build log of a sandbox created from an
/// image definition streams from.
#[utoipa::path(get, path = "/sandbox/{id}/build-logs-url", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "`{\"url\": ...}`"), (status = 404, body = ErrorBody)))]
pub async fn build_logs_url(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let record = find(&state, &caller, &id_or_name).await?;
    let url = format!(
        "{}/api/sandbox/{}/build-logs",
        state.config.public_url, record.id
    );
    Ok(Json(serde_json::json!({ "url": url })))
}

#[derive(Debug, serde::Deserialize)]
pub struct BuildLogQuery {
    follow: Option<bool>,
}

/// `GET /sandbox/{id}/build-logs?follow=true`: the build log as plain text. With `follow` the
/// body stays open and grows until the build ends. A sandbox created from a snapshot, or
/// built before the server's last start, has an empty log.
#[utoipa::path(get, path = "/sandbox/{id}/build-logs", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name"),
        ("follow" = Option<bool>, Query, description = "Stream until the build ends")),
    responses((status = 200, description = "The build log, text/plain"), (status = 404, body = ErrorBody)))]
pub async fn build_logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
    axum::extract::Query(query): axum::extract::Query<BuildLogQuery>,
) -> Result<Response, ApiError> {
    let record = find(&state, &caller, &id_or_name).await?;
    let log = state.builds.log(&record.id);
    Ok(crate::builds::log_response(
        log,
        query.follow.unwrap_or(false),
    ))
}

/// `DELETE /sandbox/{idOrName}`: destroys the sandbox in any state, interrupting a start or
/// stop in progress, and releases everything it held (processes, cgroups, files, name, quota
/// share) before responding.
#[utoipa::path(delete, path = "/sandbox/{id}", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "The sandbox, destroyed", body = Sandbox), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    let record = find(&state, &caller, &id_or_name).await?;
    let record = lifecycle::delete(&state, record).await?;
    Ok(Json(dto::sandbox(&state, &record)))
}

/// `POST /sandbox/{idOrName}/start`: starts a stopped sandbox with its files.
#[utoipa::path(post, path = "/sandbox/{id}/start", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "The sandbox: `started`, `error` when the start failed, or `starting` when it takes longer than 30 s", body = Sandbox),
        (status = 400, description = "The sandbox is in `error` (recover it) or another state that cannot start", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Another state change is in progress", body = ErrorBody),
        (status = 429, description = "The organization is at one of its limits", body = ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    let record = find(&state, &caller, &id_or_name).await?;
    let record = lifecycle::start(&state, record).await?;
    Ok(Json(dto::sandbox(&state, &record)))
}

/// `POST /sandbox/{idOrName}/stop`: stops the sandbox's processes and keeps its files.
#[utoipa::path(post, path = "/sandbox/{id}/stop", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name"),
        ("force" = Option<bool>, Query, description = "SIGKILL the sandbox's processes at once instead of SIGTERM and a grace time of 3 s")),
    responses((status = 200, description = "The sandbox, `stopped`", body = Sandbox),
        (status = 400, description = "The sandbox is in a state that cannot stop", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Another state change is in progress", body = ErrorBody)))]
pub async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Sandbox>, ApiError> {
    let mut force = false;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key == "force" {
            force = parse_bool("force", &value)?;
        }
    }
    let record = find(&state, &caller, &id_or_name).await?;
    let record = lifecycle::stop(&state, record, force).await?;
    Ok(Json(dto::sandbox(&state, &record)))
}

/// `POST /sandbox/{idOrName}/archive`: moves a stopped sandbox's files to object storage and
/// removes them from the host; a start brings them back.
#[utoipa::path(post, path = "/sandbox/{id}/archive", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "The sandbox: `archived`, `archiving` when it takes longer than 30 s, or `stopped` with an `errorReason` when the archive failed", body = Sandbox),
        (status = 400, description = "The sandbox is not stopped", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Another state change is in progress", body = ErrorBody)))]
pub async fn archive(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    let record = find(&state, &caller, &id_or_name).await?;
    let record = lifecycle::archive(&state, record).await?;
    Ok(Json(dto::sandbox(&state, &record)))
}

/// Parses a query boolean as the SDKs send it (`true` or `false`).
fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(ApiError::bad_request(format!(
            "invalid {name} {other:?}: use true or false"
        ))),
    }
}

/// `POST /sandbox/{idOrName}/recover`: starts a sandbox in `error` again, with its files.
#[utoipa::path(post, path = "/sandbox/{id}/recover", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "The sandbox: `started`, or `error` again when the start failed", body = Sandbox),
        (status = 400, description = "The sandbox is not in `error`", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Another state change is in progress", body = ErrorBody),
        (status = 429, description = "The organization is at one of its limits", body = ErrorBody)))]
pub async fn recover(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    let record = find(&state, &caller, &id_or_name).await?;
    let record = lifecycle::recover(&state, record).await?;
    Ok(Json(dto::sandbox(&state, &record)))
}

/// `POST /sandbox/{idOrName}/resize`: changes CPU, memory or disk. A started sandbox gets
/// more CPU and memory at once, because its cgroup limits change. Lowering them or changing
/// the disk needs a stopped sandbox, whose new limits apply at its next start. The disk
/// cannot shrink.
#[utoipa::path(post, path = "/sandbox/{id}/resize", tag = "sandbox", request_body = ResizeSandbox,
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "The sandbox with its new resources", body = Sandbox),
        (status = 400, description = "Invalid values, a shrinking disk, or a change a started sandbox cannot take", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Another state change is in progress", body = ErrorBody)))]
pub async fn resize(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
    JsonBody(body): JsonBody<ResizeSandbox>,
) -> Result<Json<Sandbox>, ApiError> {
    let record = find(&state, &caller, &id_or_name).await?;
    let record = lifecycle::resize(&state, record, &body).await?;
    Ok(Json(dto::sandbox(&state, &record)))
}
