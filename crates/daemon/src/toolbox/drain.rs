//! Reads what a handler left of a request body before the response goes out.
//!
//! A handler may respond before the body has ended: a multipart parser stops at the closing
//! boundary and leaves the trailing line break, and an error response comes before the rest of
//! an upload. The HTTP server then closes the connection, and the proxy, which may still be
//! writing the body, gets a broken pipe instead of the response. Draining a bounded remainder
//! keeps the exchange whole.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::Request;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::{Stream, StreamExt};

/// Maximum number of bytes read and discarded after the handler responded.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// Maximum wait for the rest of a body.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A request body that the handler reads while the middleware keeps a handle to it.
#[derive(Clone)]
struct SharedBody(Arc<Mutex<BodyDataStream>>);

impl Stream for SharedBody {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut inner = self.0.lock().expect("request body lock");
        inner.poll_next_unpin(cx)
    }
}

/// Runs the handler, then reads up to [`DRAIN_LIMIT`] bytes of the request body
/// that it did not read, for at most [`DRAIN_TIMEOUT`].
pub async fn drain_request_body(request: Request, next: Next) -> Response {
    let has_body = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) && !request.headers().contains_key(header::UPGRADE);
    if !has_body {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let shared = SharedBody(Arc::new(Mutex::new(body.into_data_stream())));
    let request = Request::from_parts(parts, Body::from_stream(shared.clone()));
    let response = next.run(request).await;

    let mut rest = shared;
    let mut drained = 0;
    let drain = async {
        while let Some(Ok(chunk)) = rest.next().await {
            drained += chunk.len();
            if drained > DRAIN_LIMIT {
                break;
            }
        }
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::debug!("the rest of a request body did not arrive in time; the connection closes");
    }
    response
}
