//! The preview proxy's request handler: finds the target port, authorizes the request,
//! and forwards it to the app over a connection that the runner opens inside the sandbox.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use daytona_runner::PortError;
use daytona_wire::api::SandboxState;

use super::{
    TOKEN_HEADER, Target, TokenSource, cookies, is_signed_token, presented_tokens,
    without_token_query,
};
use crate::error::{ApiError, error_chain};
use crate::lifecycle::PreviewConnection;
use crate::state::AppState;
use crate::store::SandboxRecord;

/// Builds the router of the preview listener, which sends every request to [`handle`].
pub fn router(state: AppState) -> Router {
    Router::new()
        .fallback(handle)
        .layer(axum::middleware::from_fn(
            crate::error::complete_error_bodies,
        ))
        .with_state(state)
}

/// The authorization of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Access {
    /// The sandbox is public.
    Public,
    /// An API key of the sandbox's organization.
    ApiKey,
    /// A valid token; `remember` contains it when the response should set the token cookie,
    /// because the token came in the URL (query or signed host) and later requests of a
    /// browser carry only the cookie.
    Token { remember: Option<String> },
    /// No valid token: the reason, for the 401.
    Denied(String),
}

/// Handles one request on the preview listener.
async fn handle(State(state): State<AppState>, mut request: Request) -> Response {
    let host = request_host(&request);
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let Some(target) = Target::parse(host.as_deref(), &path_and_query) else {
        return ApiError::not_found(format!(
            "no preview target in host {:?} or path {path_and_query:?}; use http://{{port}}-{{sandboxId}}.<preview domain>/ or /preview/{{sandboxId}}/{{port}}/",
            host.unwrap_or_default()
        ))
        .into_response();
    };

    let (record, access) =
        match authorize(&state, &target, request.headers(), request.uri().query()).await {
            Ok(found) => found,
            Err(error) => return error.into_response(),
        };

    let origin = request.headers().get(header::ORIGIN).cloned();
    if is_preflight(&request) && access_is_denied(&access) {
        // Browsers send preflights without credentials, so they cannot carry the token
        // header that the real request will. The response reveals nothing about the sandbox.
        return preflight_response(request.headers());
    }
    if let Access::Denied(reason) = &access {
        return unauthorized(request.headers(), &record.id, target.port, reason);
    }
    if record.state != SandboxState::Started {
        state.previews.forget(&record.id);
        return ApiError::bad_request(format!(
            "sandbox {} is {}; start it to reach its port {}",
            record.id, record.state, target.port
        ))
        .into_response();
    }

    let preflight_headers = is_preflight(&request).then(|| request.headers().clone());
    if access == Access::ApiKey {
        // The key goes no further than the proxy, as a token does.
        request.headers_mut().remove(header::AUTHORIZATION);
    }
    let connection = PreviewConnection::attach(&state, &record.id, &mut request);
    let mut response = match forward(&state, &record.id, &target, request, host).await {
        Ok(response) => connection.finish(response),
        Err(error) => return error.into_response(),
    };

    if let Some(request_headers) = preflight_headers
        && !response
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    {
        // The app does not handle CORS preflights (many servers return 404 or 501 for
        // OPTIONS), so the proxy responds in its place.
        return preflight_response(&request_headers);
    }
    add_cors_headers(response.headers_mut(), origin);
    if let Access::Token {
        remember: Some(token),
    } = &access
    {
        set_token_cookie(response.headers_mut(), &target, &record.id, token);
    }
    response
}

/// Returns the host the request was sent to: the `Host` header in HTTP/1.1, the URI's
/// authority in HTTP/2.
fn request_host(request: &Request) -> Option<String> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()))
}

fn is_preflight(request: &Request) -> bool {
    request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ORIGIN)
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn access_is_denied(access: &Access) -> bool {
    matches!(access, Access::Denied(_))
}

/// Finds the sandbox of a target and decides whether the request may reach it, reusing a
/// recent decision for the same target and credentials that let a request through.
async fn authorize(
    state: &AppState,
    target: &Target,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(SandboxRecord, Access), ApiError> {
    let key = access_key(target, headers, query);
    if let Some(found) = state.previews.cached_access(&key) {
        return Ok(found);
    }
    let (record, access) = decide(state, target, headers, query).await?;
    if !access_is_denied(&access) && record.state == SandboxState::Started {
        state.previews.cache_access(key, &record, &access);
    }
    Ok((record, access))
}

/// The key of a decision in the cache: everything [`decide`] reads from the request.
fn access_key(target: &Target, headers: &HeaderMap, query: Option<&str>) -> String {
    let mut key = format!("{}\n{}", target.key, target.port);
    let credentials = headers
        .get_all(super::TOKEN_HEADER)
        .iter()
        .chain(headers.get_all(header::COOKIE))
        .chain(headers.get_all(header::AUTHORIZATION));
    for value in credentials {
        key.push('\n');
        key.push_str(&String::from_utf8_lossy(value.as_bytes()));
    }
    if let Some(query) = query {
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if name == super::TOKEN_QUERY {
                key.push_str("\nq=");
                key.push_str(&value);
            }
        }
    }
    key
}

/// Finds the sandbox of a target and decides whether the request may reach it.
async fn decide(
    state: &AppState,
    target: &Target,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(SandboxRecord, Access), ApiError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    // A signed token in the URL replaces the sandbox id.
    if is_signed_token(&target.key) {
        let Some(signed) = state.store.signed_preview_token(&target.key).await? else {
            return Err(ApiError::not_found(
                "signed preview URL not found; make a new one",
            ));
        };
        let record = sandbox(state, &signed.sandbox_id).await?;
        let access = if signed.port != target.port {
            Access::Denied(format!(
                "the signed preview URL is for port {}, not {}",
                signed.port, target.port
            ))
        } else if signed.expires_at <= now {
            Access::Denied("the signed preview URL expired; make a new one".to_owned())
        } else {
            Access::Token {
                remember: Some(signed.token),
            }
        };
        return Ok((record, access));
    }

    let record = sandbox(state, &target.key).await?;
    if record.public {
        return Ok((record, Access::Public));
    }
    let presented = presented_tokens(headers, query, &target.cookie_name(&record.id));
    // An API key counts only without a token, so that an app's own `Authorization` header
    // passes when a token opens the preview.
    if presented.is_empty()
        && let Some(key) = bearer(headers)
    {
        let caller = state.keys.resolve(&state.store, key).await?;
        return Ok(match caller {
            Some(caller) if caller.organization_id == record.organization_id => {
                (record, Access::ApiKey)
            }
            _ => (
                record,
                Access::Denied(
                    "the API key is invalid or belongs to another organization".to_owned(),
                ),
            ),
        });
    }
    if presented.is_empty() {
        return Ok((
            record,
            Access::Denied(format!(
                "this preview URL needs a token: send the sandbox's preview token in the {TOKEN_HEADER} header or the {} query parameter, or use a signed preview URL",
                super::TOKEN_QUERY
            )),
        ));
    }
    for (source, token) in presented {
        if token_opens(state, &record.id, target.port, &token, now).await? {
            let remember = (source == TokenSource::Query).then_some(token);
            return Ok((record, Access::Token { remember }));
        }
    }
    Ok((
        record,
        Access::Denied(
            "the preview token is invalid for this sandbox and port, or it expired".to_owned(),
        ),
    ))
}

/// Checks whether `token` is the sandbox's preview token, or an unexpired signed token of the
/// port.
async fn token_opens(
    state: &AppState,
    sandbox_id: &str,
    port: u16,
    token: &str,
    now: i64,
) -> Result<bool, ApiError> {
    if is_signed_token(token) {
        let signed = state.store.signed_preview_token(token).await?;
        return Ok(signed.is_some_and(|signed| {
            signed.sandbox_id == sandbox_id && signed.port == port && signed.expires_at > now
        }));
    }
    state
        .signing
        .is_preview_token(&state.config.data_dir, sandbox_id, token)
        .map_err(|error| ApiError::internal("failed to check the preview token", error))
}

/// Returns the API key of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim())
        .filter(|key| !key.is_empty())
}

async fn sandbox(state: &AppState, sandbox_id: &str) -> Result<SandboxRecord, ApiError> {
    state
        .store
        .sandbox_by_id(sandbox_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("sandbox {sandbox_id:?} not found")))
}

/// Opens a connection to the target port inside the sandbox and forwards the request.
async fn forward(
    state: &AppState,
    sandbox_id: &str,
    target: &Target,
    mut request: Request,
    host: Option<String>,
) -> Result<Response, ApiError> {
    remove_token_cookie(request.headers_mut(), &target.cookie_name(sandbox_id));
    let path_and_query = without_token_query(&target.path_and_query);
    let host = host
        .and_then(|host| HeaderValue::from_str(&host).ok())
        .unwrap_or_else(|| HeaderValue::from_static("localhost"));
    let removed = [HeaderName::from_static(TOKEN_HEADER)];
    let pool = state.previews.pool(sandbox_id);
    let authority = format!("app:{}", target.port);
    match daytona_proxy::forward_pooled(&pool, &authority, request, &path_and_query, &removed, host)
        .await
    {
        Ok(response) => Ok(response.into_response()),
        Err(error) => Err(exchange_error(sandbox_id, target.port, &error)),
    }
}

/// The response to a failed exchange with the app: the connector's error when there was no
/// connection, else a 502 that says what failed.
fn exchange_error(sandbox_id: &str, port: u16, error: &daytona_proxy::PooledError) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(port_error) = current.downcast_ref::<PortError>() {
            return port_error_response(sandbox_id, port, port_error);
        }
        source = current.source();
    }
    let chain = error_chain(error);
    tracing::debug!(sandbox_id, port, error = %chain, "preview exchange failed");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "BAD_GATEWAY",
        format!("the app on port {port} of sandbox {sandbox_id} failed to answer: {chain}"),
    )
}

fn port_error_response(sandbox_id: &str, port: u16, error: &PortError) -> ApiError {
    match error {
        PortError::Refused { .. } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "BAD_GATEWAY",
            format!(
                "nothing listens on port {port} in sandbox {sandbox_id}; start a server on that port (on any address, 127.0.0.1 and ::1 included)"
            ),
        ),
        PortError::NotRunning { .. } => ApiError::unavailable(format!(
            "sandbox {sandbox_id} is not running; start it and retry"
        )),
        PortError::Socket { .. } => ApiError::internal(
            format!("failed to connect to port {port} of sandbox {sandbox_id}"),
            anyhow::anyhow!(error_chain(error)),
        ),
    }
}

/// Removes the proxy's token cookie from the request, so the token never reaches the app.
fn remove_token_cookie(headers: &mut HeaderMap, cookie_name: &str) {
    if !cookies(headers).any(|(name, _)| name == cookie_name) {
        return;
    }
    let kept: Vec<String> = cookies(headers)
        .filter(|(name, _)| *name != cookie_name)
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    headers.remove(header::COOKIE);
    if let Ok(value) = HeaderValue::from_str(&kept.join("; "))
        && !kept.is_empty()
    {
        headers.insert(header::COOKIE, value);
    }
}

fn set_token_cookie(headers: &mut HeaderMap, target: &Target, sandbox_id: &str, token: &str) {
    let cookie = format!(
        "{}={token}; Path={}; HttpOnly; SameSite=Lax",
        target.cookie_name(sandbox_id),
        target.cookie_path()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        headers.append(header::SET_COOKIE, value);
    }
}

/// Adds the CORS headers that the app's response lacks, for a request with an `Origin`.
/// Headers the app set pass untouched, so none is ever sent twice.
///
/// The proxy never allows credentials itself: with `Access-Control-Allow-Credentials`, a page
/// of any origin (another sandbox's preview under the same domain, say) could read a private
/// preview with the token cookie that the browser holds for it. Cross-origin callers send the
/// token header instead; an app that wants credentialed CORS sets its own headers.
fn add_cors_headers(headers: &mut HeaderMap, origin: Option<HeaderValue>) {
    let Some(origin) = origin else {
        return;
    };
    if headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        return;
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// Answers a CORS preflight: allows the origin, the requested method and every requested
/// header, so that headers such as `Cache-Control` or the token header are accepted.
fn preflight_response(request_headers: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    let copies = [
        (header::ORIGIN, header::ACCESS_CONTROL_ALLOW_ORIGIN),
        (
            header::ACCESS_CONTROL_REQUEST_METHOD,
            header::ACCESS_CONTROL_ALLOW_METHODS,
        ),
        (
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
        ),
    ];
    for (from, to) in copies {
        if let Some(value) = request_headers.get(&from) {
            headers.insert(to, value.clone());
        }
    }
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    response
}

/// Answers 401: an HTML page for requests that accept HTML (a browser navigating to the URL),
/// Daytona's error body for any other. Never a redirect, which WebSocket and API clients
/// cannot follow.
fn unauthorized(
    request_headers: &HeaderMap,
    sandbox_id: &str,
    port: u16,
    reason: &str,
) -> Response {
    let accepts_html = request_headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if !accepts_html {
        return ApiError::unauthorized(reason.to_owned()).into_response();
    }
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Preview token missing</title></head>\n<body>\n<h1>401: this preview needs a token</h1>\n<p>Port {port} of sandbox <code>{}</code> is private. {}.</p>\n<p>Open the URL with <code>?{}=&lt;token&gt;</code>, or use a signed preview URL, or make the sandbox public.</p>\n</body>\n</html>\n",
        html_escape(sandbox_id),
        html_escape(reason),
        super::TOKEN_QUERY,
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        Body::from(page),
    )
        .into_response()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
