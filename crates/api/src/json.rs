//! A JSON body extractor whose rejections are Daytona error bodies.

use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest JSON body the API reads.
const MAX_JSON_BODY: usize = 1024 * 1024;

/// A JSON request body. An empty body reads as `{}`, so that every-field-optional bodies such
/// as `POST /sandbox` may be left out; unknown fields are ignored.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let body = match axum::body::to_bytes(request.into_body(), MAX_JSON_BODY).await {
            Ok(body) => body,
            Err(_) => {
                return Err(ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    format!("the request body is over the {MAX_JSON_BODY}-byte limit"),
                ));
            }
        };
        let _ = state;
        parse(&body).map(JsonBody)
    }
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(text)
        .map_err(|error| ApiError::invalid_body(format!("invalid JSON body: {error}")))
}
