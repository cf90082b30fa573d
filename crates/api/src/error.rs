//! The API's error type and its rendering as Daytona's error body.

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use daytona_wire::{ErrorBody, ErrorSource};

use crate::store::StoreError;

/// An error answered to an API client.
///
/// Client mistakes carry a message for the client and are not logged; internal errors are
/// logged once, with a request id that the response also carries, and their detail stays in
/// the log.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    internal: Option<anyhow::Error>,
    /// Extra response headers, such as `Retry-After` on a 429.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            internal: None,
            headers: Vec::new(),
        }
    }

    /// Adds a header to the error response.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST_BODY", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "CONFLICT", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            message,
        )
    }

    /// An unexpected failure: the client sees `message` and a request id, the log sees `error`.
    pub fn internal(message: impl Into<String>, error: impl Into<anyhow::Error>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "INTERNAL_SERVER_ERROR",
            message: message.into(),
            internal: Some(error.into()),
            headers: Vec::new(),
        }
    }
}

/// Joins an error and its sources on one line, for logs and error reasons.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The message, and the internal error's chain when there is one; for logs.
impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(internal) = &self.internal {
            write!(f, ": {internal:#}")?;
        }
        Ok(())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NameTaken { name } => Self::conflict(format!(
                "a sandbox named {name:?} already exists; choose another name or delete it first"
            )),
            other => Self::internal("the state store failed", other),
        }
    }
}

/// The part of an error response that the path-and-method middleware completes.
#[derive(Clone)]
struct PendingErrorBody(ErrorBody);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut request_id = None;
        if let Some(error) = &self.internal {
            let id = uuid::Uuid::new_v4().to_string();
            tracing::error!(request_id = %id, error = format!("{error:#}"), "{}", self.message);
            request_id = Some(id);
        }
        let body = ErrorBody {
            status_code: self.status.as_u16(),
            message: self.message,
            code: self.code.to_owned(),
            source: ErrorSource::Api,
            timestamp: daytona_wire::now_rfc3339(),
            path: String::new(),
            method: String::new(),
            request_id,
            output: None,
        };
        let mut response = (self.status, Json(body.clone())).into_response();
        response.headers_mut().extend(self.headers);
        response.extensions_mut().insert(PendingErrorBody(body));
        response
    }
}

/// Completes error bodies with the request's path and method.
pub async fn complete_error_bodies(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let method = request.method().to_string();
    let response = next.run(request).await;

    let Some(PendingErrorBody(mut body)) = response.extensions().get::<PendingErrorBody>().cloned()
    else {
        return response;
    };
    body.path = path;
    body.method = method;
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    (parts, Json(body)).into_response()
}

/// Answers a request that matched no route.
pub async fn route_not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        request.method(),
        request.uri().path()
    ))
}

/// Answers a request whose route exists with other methods.
pub async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!(
            "method {} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}
