//! Requests the runner itself sends to a sandbox's toolbox over its Unix socket.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Maximum time a request to a toolbox may take, so that a toolbox that does not respond
/// cannot hold a sandbox's operation forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of a request to a sandbox's toolbox.
#[derive(Debug, thiserror::Error)]
pub enum DaemonRequestError {
    #[error("failed to connect to the toolbox socket {socket}")]
    Connect {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the toolbox request {path} failed")]
    Exchange {
        path: String,
        #[source]
        source: hyper::Error,
    },
    #[error("the toolbox did not respond to {path} within {timeout:?}")]
    Timeout { path: String, timeout: Duration },
    #[error("the toolbox answered {path} with {status}: {body}")]
    Status {
        path: String,
        status: u16,
        body: String,
    },
}

/// Sends `POST path` with a JSON body and returns the response body of a 2xx answer, within
/// [`REQUEST_TIMEOUT`].
pub async fn post_json(
    socket: &Path,
    path: &str,
    body: &serde_json::Value,
) -> Result<Bytes, DaemonRequestError> {
    tokio::time::timeout(REQUEST_TIMEOUT, exchange(socket, path, body))
        .await
        .unwrap_or_else(|_| {
            Err(DaemonRequestError::Timeout {
                path: path.to_owned(),
                timeout: REQUEST_TIMEOUT,
            })
        })
}

async fn exchange(
    socket: &Path,
    path: &str,
    body: &serde_json::Value,
) -> Result<Bytes, DaemonRequestError> {
    let stream =
        UnixStream::connect(socket)
            .await
            .map_err(|source| DaemonRequestError::Connect {
                socket: socket.display().to_string(),
                source,
            })?;
    let exchange_error = |source| DaemonRequestError::Exchange {
        path: path.to_owned(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(exchange_error)?;
    tokio::spawn(connection);

    let request = Request::post(path)
        .header(hyper::header::HOST, "sandbox")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a path and fixed headers always build a request");
    let response = sender.send_request(request).await.map_err(exchange_error)?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(exchange_error)?
        .to_bytes();
    if !status.is_success() {
        return Err(DaemonRequestError::Status {
            path: path.to_owned(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    Ok(bytes)
}
