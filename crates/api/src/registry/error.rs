//! Errors of the registry in the distribution spec's JSON shape.

use axum::Json;
use axum::http::StatusCode;
use axum::http::header::{HeaderValue, WWW_AUTHENTICATE};
use axum::response::{IntoResponse, Response};
use oci_spec::distribution::{ErrorCode, ErrorInfoBuilder, ErrorResponseBuilder};

/// The challenge of a 401: basic auth with an API key as the password.
const CHALLENGE: &str = "Basic realm=\"daytona\"";

/// An error returned to a registry client.
#[derive(Debug)]
pub struct RegistryError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    internal: Option<anyhow::Error>,
}

impl RegistryError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            internal: None,
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    /// Creates an unexpected failure. The client sees `message` and a request id, and the log
    /// gets the error.
    pub fn internal(message: impl Into<String>, error: anyhow::Error) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: ErrorCode::Unsupported,
            message: message.into(),
            internal: Some(error),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let mut message = self.message;
        if let Some(error) = &self.internal {
            let id = uuid::Uuid::new_v4().to_string();
            tracing::error!(request_id = %id, error = format!("{error:#}"), "{message}");
            message = format!("{message} (request id {id})");
        }
        let body = ErrorInfoBuilder::default()
            .code(self.code)
            .message(message)
            .build()
            .and_then(|info| ErrorResponseBuilder::default().errors(vec![info]).build())
            .expect("an error with a code and a message always builds");
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
        }
        response
    }
}

impl From<daytona_images::Error> for RegistryError {
    fn from(error: daytona_images::Error) -> Self {
        use daytona_images::Error as E;
        let message = crate::error::error_chain(&error);
        match error {
            E::InvalidDigest { .. } | E::UploadDigestMismatch { .. } => {
                Self::new(StatusCode::BAD_REQUEST, ErrorCode::DigestInvalid, message)
            }
            E::UploadNotFound { .. } => {
                Self::new(StatusCode::NOT_FOUND, ErrorCode::BlobUploadUnknown, message)
            }
            E::ManifestBlobMissing { .. } => Self::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::ManifestBlobUnknown,
                message,
            ),
            E::InvalidManifest { .. }
            | E::UnsupportedMediaType { .. }
            | E::LayerCountMismatch { .. }
            | E::DiffIdMismatch { .. }
            | E::Unpack { .. } => {
                Self::new(StatusCode::BAD_REQUEST, ErrorCode::ManifestInvalid, message)
            }
            E::InvalidName { .. } => {
                Self::new(StatusCode::BAD_REQUEST, ErrorCode::NameInvalid, message)
            }
            other => Self::internal("the image store failed", other.into()),
        }
    }
}
