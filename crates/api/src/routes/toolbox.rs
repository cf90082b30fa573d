//! The toolbox proxy route: `/toolbox/{sandboxId}/{path}`.
//!
//! A request is authorized in one of three ways. One is an API key of the sandbox's
//! organization. Without an `Authorization` header, the others are a signed file URL
//! (`GET /files/download` or `POST /files/upload-v2` with `path`, `expires` and `signature`,
//! see [`crate::signing`]) and the sandbox's preview token in the `x-daytona-preview-token`
//! header or the `DAYTONA_SANDBOX_AUTH_KEY` query parameter, which the TypeScript SDK sends
//! from runtimes that cannot set headers on WebSockets.

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use daytona_proxy::ProxyError;
use daytona_wire::api::SandboxState;

use super::signing::current_key;
use crate::auth::{Caller, bearer_token};
use crate::error::{ApiError, error_chain};
use crate::preview;
use crate::signing::{self, SignatureError};
use crate::state::{AppState, ToolboxRoute};

/// The toolbox operations a signed URL may call, with their methods.
const SIGNED_OPERATIONS: [(Method, &str); 2] = [
    (Method::GET, "/files/download"),
    (Method::POST, "/files/upload-v2"),
];

/// Forwards a toolbox request to the sandbox's daemon, after checking that the caller may use
/// the sandbox and that it is started.
pub async fn forward(
    State(state): State<AppState>,
    Path((sandbox_id, _rest)): Path<(String, String)>,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let (route, rest) = match SignedUrl::from_parts(&parts, &sandbox_id)? {
        Some(signed) => {
            let route = authorize_signed(&state, &sandbox_id, &signed).await?;
            (route, signed.forwarded_path())
        }
        None => match authorize_preview_token(&state, &parts, &sandbox_id).await? {
            Some(route) => (route, preview::without_token_query(&rest_of_path(&parts))),
            None => {
                let caller = Caller::from_request_parts(&mut parts, &state).await?;
                let route = authorize_caller(&state, &caller, &sandbox_id).await?;
                (route, rest_of_path(&parts))
            }
        },
    };
    let request = Request::from_parts(parts, body);

    const STRIPPED: [HeaderName; 2] = [
        AUTHORIZATION,
        HeaderName::from_static(preview::TOKEN_HEADER),
    ];
    match daytona_proxy::forward(&route.socket, request, &rest, &STRIPPED).await {
        Ok(response) => Ok(response.into_response()),
        Err(ProxyError::Unreachable { source }) => {
            tracing::warn!(sandbox_id, error = %source, "toolbox socket unreachable");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                format!(
                    "the toolbox of sandbox {sandbox_id} is not reachable; the sandbox may have stopped"
                ),
            ))
        }
        Err(error) => {
            let chain = error_chain(&error);
            tracing::warn!(sandbox_id, error = %chain, "toolbox exchange failed");
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "BAD_GATEWAY",
                format!("the toolbox of sandbox {sandbox_id} failed to answer: {chain}"),
            ))
        }
    }
}

/// Returns the path and query after `/toolbox/{sandboxId}`, which the daemon receives, as
/// the client wrote them (still percent-encoded). The id segment is skipped in its raw form,
/// which may be longer than the decoded id.
fn rest_of_path(parts: &Parts) -> String {
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let after_prefix = path_and_query
        .strip_prefix("/toolbox/")
        .unwrap_or(path_and_query);
    match after_prefix.find(['/', '?']) {
        Some(end) if after_prefix[end..].starts_with('/') => after_prefix[end..].to_owned(),
        Some(end) => format!("/{}", &after_prefix[end..]),
        None => "/".to_owned(),
    }
}

/// Returns the sandbox's route when a request without `Authorization` presents the sandbox's
/// preview token; `None` when it presents none, so that the API key check explains.
async fn authorize_preview_token(
    state: &AppState,
    parts: &Parts,
    sandbox_id: &str,
) -> Result<Option<ToolboxRoute>, ApiError> {
    if parts.headers.contains_key(AUTHORIZATION) {
        return Ok(None);
    }
    let header = parts
        .headers
        .get(preview::TOKEN_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let query = parts.uri.query().and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == preview::TOKEN_QUERY)
            .map(|(_, value)| value.into_owned())
    });
    let Some(token) = header.or(query) else {
        return Ok(None);
    };
    let valid = state
        .signing
        .is_preview_token(&state.config.data_dir, sandbox_id, &token)
        .map_err(|error| ApiError::internal("failed to check the preview token", error))?;
    if !valid {
        return Err(ApiError::unauthorized(format!(
            "the preview token is not valid for sandbox {sandbox_id}; get it from GET /sandbox/{sandbox_id}/ports/1/preview-url, or send an API key"
        )));
    }
    match state.route(sandbox_id) {
        Some(route) => Ok(Some(route)),
        None => match state.store.sandbox_by_id(sandbox_id).await? {
            Some(record) => Err(not_routable(state, &record.organization_id, sandbox_id).await),
            None => Err(ApiError::not_found(format!(
                "sandbox {sandbox_id:?} not found"
            ))),
        },
    }
}

async fn authorize_caller(
    state: &AppState,
    caller: &Caller,
    sandbox_id: &str,
) -> Result<ToolboxRoute, ApiError> {
    if let Some(route) = state
        .route(sandbox_id)
        .filter(|route| route.organization_id == caller.organization_id)
    {
        return Ok(route);
    }
    // The sandbox may be named rather than given by id.
    match state
        .store
        .sandbox_by_id_or_name(&caller.organization_id, sandbox_id)
        .await
    {
        Ok(Some(record)) if record.id != sandbox_id => match state
            .route(&record.id)
            .filter(|route| route.organization_id == caller.organization_id)
        {
            Some(route) => Ok(route),
            None => Err(not_routable(state, &caller.organization_id, sandbox_id).await),
        },
        Ok(_) => Err(not_routable(state, &caller.organization_id, sandbox_id).await),
        Err(error) => Err(error.into()),
    }
}

/// Explains why a sandbox has no toolbox route: unknown (404) or not started (400).
async fn not_routable(state: &AppState, organization_id: &str, sandbox_id: &str) -> ApiError {
    match state
        .store
        .sandbox_by_id_or_name(organization_id, sandbox_id)
        .await
    {
        Ok(Some(record)) if record.state != SandboxState::Started => {
            ApiError::bad_request(format!(
                "sandbox {sandbox_id} is {}; start it to use its toolbox",
                record.state
            ))
        }
        Ok(Some(_)) => ApiError::unavailable(format!(
            "sandbox {sandbox_id} is starting; retry in a moment"
        )),
        Ok(None) => ApiError::not_found(format!("sandbox {sandbox_id:?} not found")),
        Err(error) => error.into(),
    }
}

/// The parts of a signed file URL.
struct SignedUrl {
    operation: &'static str,
    method: Method,
    path: String,
    expires: i64,
    signature: String,
}

impl SignedUrl {
    /// Reads a signed URL from a request without `Authorization` whose query has a
    /// `signature`; `None` for any other request, which then needs an API key.
    fn from_parts(parts: &Parts, sandbox_id: &str) -> Result<Option<Self>, ApiError> {
        if bearer_token(parts).is_some() || parts.headers.contains_key(AUTHORIZATION) {
            return Ok(None);
        }
        let query = parts.uri.query().unwrap_or("");
        let mut path = None;
        let mut expires = None;
        let mut signature = None;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "path" => path = Some(value.into_owned()),
                "expires" => expires = Some(value.into_owned()),
                "signature" => signature = Some(value.into_owned()),
                _ => {}
            }
        }
        let Some(signature) = signature else {
            return Ok(None);
        };

        let operation = parts
            .uri
            .path()
            .strip_prefix("/toolbox/")
            .and_then(|rest| rest.strip_prefix(sandbox_id))
            .unwrap_or("");
        let Some((method, operation)) = SIGNED_OPERATIONS
            .iter()
            .find(|(method, path)| *method == parts.method && *path == operation)
            .cloned()
        else {
            return Err(ApiError::unauthorized(format!(
                "signed URLs work only for GET /files/download and POST /files/upload-v2, not {} {operation}; send an API key",
                parts.method
            )));
        };
        let path = path.filter(|p| !p.is_empty()).ok_or_else(|| {
            ApiError::bad_request("invalid signed URL: the path parameter is missing")
        })?;
        let expires = expires
            .as_deref()
            .and_then(|text| text.parse::<i64>().ok())
            .filter(|expires| *expires >= 0)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid signed URL: expires must be Unix seconds, or 0 for no expiry",
                )
            })?;
        Ok(Some(Self {
            operation,
            method,
            path,
            expires,
            signature,
        }))
    }

    /// Returns the daemon's path and query: the operation and the file path, without the
    /// signature.
    fn forwarded_path(&self) -> String {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("path", &self.path)
            .finish();
        format!("{}?{query}", self.operation)
    }
}

/// Checks a signed URL against the sandbox's current signing key and returns the sandbox's
/// toolbox route.
async fn authorize_signed(
    state: &AppState,
    sandbox_id: &str,
    signed: &SignedUrl,
) -> Result<ToolboxRoute, ApiError> {
    let Some(record) = state.store.sandbox_by_id(sandbox_id).await? else {
        return Err(ApiError::not_found(format!(
            "sandbox {sandbox_id:?} not found"
        )));
    };
    let key = current_key(state, &record.id).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if let Err(error) = signing::verify(
        &key,
        signed.method.as_str(),
        &signed.path,
        signed.expires,
        &signed.signature,
        now,
    ) {
        let message = match error {
            SignatureError::Expired => format!(
                "the signed URL for {} expired at {}; make a new one",
                signed.path,
                time::OffsetDateTime::from_unix_timestamp(signed.expires)
                    .map(daytona_wire::rfc3339)
                    .unwrap_or_else(|_| signed.expires.to_string())
            ),
            other => format!("invalid signed URL for {}: {other}", signed.path),
        };
        return Err(ApiError::unauthorized(message));
    }
    match state.route(&record.id) {
        Some(route) => Ok(route),
        None => Err(not_routable(state, &record.organization_id, &record.id).await),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::rest_of_path;

    fn rest(uri: &str) -> String {
        let (parts, ()) = Request::get(uri).body(()).unwrap().into_parts();
        rest_of_path(&parts)
    }

    #[test]
    fn rest_of_path_skips_the_raw_id_segment() {
        assert_eq!(rest("/toolbox/abc/files?path=%2Ftmp"), "/files?path=%2Ftmp");
        // An encoded id is longer in the URI than decoded; the rest must not lose characters.
        assert_eq!(
            rest("/toolbox/my%2Dbox/process/execute"),
            "/process/execute"
        );
        assert_eq!(rest("/toolbox/%61%62%63/files/"), "/files/");
    }
}
