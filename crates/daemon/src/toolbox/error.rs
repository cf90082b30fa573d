//! Daytona's error body for every toolbox route, and the extractors that produce it.
//!
//! Handlers return [`ApiError`], which carries the status, code and message. The
//! [`error_body`] middleware has the request's method and path, and turns the error into the
//! JSON body the SDKs parse. It also rewrites any other error response (a rejection from
//! axum, a 405) into the same shape.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use daytona_wire::{ErrorBody, ErrorSource};
use serde::de::DeserializeOwned;

/// Largest error body of another layer that is read to reuse its text as the message.
const FOREIGN_BODY_LIMIT: usize = 64 * 1024;

/// An error a toolbox route returns.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    output: Option<String>,
    /// Cause of a server-side failure, written to the log and never sent to the client.
    cause: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            output: None,
            cause: None,
        }
    }

    /// Creates a client error with the generic `BAD_REQUEST` code.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    /// Creates the error for a request body that is not valid JSON of the expected shape.
    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST_BODY", message)
    }

    /// Creates a server-side error. The message goes to the client, and `cause` goes only to
    /// the log, next to the request id that the response carries.
    pub fn internal(message: impl Into<String>, cause: &dyn std::error::Error) -> Self {
        let mut error = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERROR",
            message,
        );
        error.cause = Some(ErrorChain(cause).to_string());
        error
    }

    /// Replaces the code with a finer one.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    /// Attaches the output a command produced before it timed out.
    pub fn with_output(mut self, output: String) -> Self {
        self.output = Some(output);
        self
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Builds the full error body for a request.
    pub fn to_body(&self, method: &str, path: &str) -> ErrorBody {
        ErrorBody {
            status_code: self.status.as_u16(),
            message: self.message.clone(),
            code: self.code.to_owned(),
            source: ErrorSource::Daemon,
            timestamp: daytona_wire::now_rfc3339(),
            path: path.to_owned(),
            method: method.to_owned(),
            request_id: None,
            output: self.output.clone(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    /// Produces a response without a body. [`error_body`] writes the body, because only the
    /// middleware has the request's method and path.
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// Middleware that gives every error response Daytona's JSON error body.
pub async fn error_body(request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;

    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let error = match response.extensions_mut().remove::<ApiError>() {
        Some(error) => error,
        None if is_json(&response) => return response,
        None => foreign_error(response).await,
    };

    let mut body = error.to_body(&method, &path);
    if status.is_server_error() {
        let request_id = uuid::Uuid::new_v4().to_string();
        tracing::error!(
            %request_id,
            %method,
            %path,
            status = status.as_u16(),
            message = %body.message,
            cause = error.cause.as_deref().unwrap_or(""),
            "request failed"
        );
        body.request_id = Some(request_id);
    }
    (status, Json(body)).into_response()
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"))
}

/// Converts an error response made by another layer into an [`ApiError`], keeping its text
/// as the message.
async fn foreign_error(response: Response) -> ApiError {
    let status = response.status();
    let text = axum::body::to_bytes(response.into_body(), FOREIGN_BODY_LIMIT)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_owned()
    } else {
        text
    };
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        _ => daytona_wire::error::generic_code(status.as_u16()),
    };
    ApiError::new(status, code, message)
}

/// Returns the 404 error for a request that matches no route.
pub async fn route_not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

/// JSON request body. Unlike [`axum::Json`], it ignores the `Content-Type` header and rejects
/// with Daytona's `INVALID_REQUEST_BODY` error.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request<Body>, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(body_rejection)?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| ApiError::invalid_body(format!("invalid request body: {error}")))
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    let status = rejection.status();
    let code = daytona_wire::error::generic_code(status.as_u16());
    ApiError::new(status, code, rejection.body_text())
}

/// Query string parameters, rejected with Daytona's `BAD_REQUEST` error.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(params)| QueryParams(params))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// Displays an error with its chain of sources, each once.
pub struct ErrorChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
