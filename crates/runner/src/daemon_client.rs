//! Requests the runner itself sends to a sandbox's toolbox over its Unix socket, and the
//! process streams of the SSH gateway.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use daytona_wire::stream::{
    MAX_FRAME, REQUEST_HEADER, StreamRequest, UPGRADE_PROTOCOL, frame_header, parse_frame_header,
    tag,
};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
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

/// Opens a process stream: starts a command in the sandbox whose toolbox listens on `socket`
/// and returns its standard streams, as described in [`daytona_wire::stream`].
pub async fn open_process_stream(
    socket: &Path,
    request: &StreamRequest,
) -> Result<(StreamReader, StreamWriter), DaemonRequestError> {
    let path = daytona_wire::stream::PATH;
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
    tokio::spawn(connection.with_upgrades());

    let json = serde_json::to_vec(request).expect("a stream request always serializes");
    let encoded = base64::engine::general_purpose::STANDARD.encode(json);
    let request = Request::post(path)
        .header(hyper::header::HOST, "sandbox")
        .header(hyper::header::CONNECTION, "upgrade")
        .header(hyper::header::UPGRADE, UPGRADE_PROTOCOL)
        .header(REQUEST_HEADER, encoded)
        .body(Full::new(Bytes::new()))
        .expect("a path and valid headers always build a request");
    let response = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| DaemonRequestError::Timeout {
            path: path.to_owned(),
            timeout: REQUEST_TIMEOUT,
        })?
        .map_err(exchange_error)?;
    let status = response.status();
    if status != hyper::StatusCode::SWITCHING_PROTOCOLS {
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(exchange_error)?;
        return Err(DaemonRequestError::Status {
            path: path.to_owned(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        });
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(exchange_error)?;
    let (reader, writer) = tokio::io::split(TokioIo::new(upgraded));
    Ok((StreamReader { reader }, StreamWriter { writer }))
}

type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// An event of a process stream's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    Stdout(Bytes),
    Stderr(Bytes),
    /// The command exited with this code; no event follows.
    Exit(i32),
    /// The toolbox failed while streaming; no event follows.
    Failed(String),
}

/// The receiving half of a process stream.
pub struct StreamReader {
    reader: ReadHalf<Upgraded>,
}

impl StreamReader {
    /// Returns the next event; `None` when the stream ended without an exit code.
    pub async fn next(&mut self) -> Option<StreamEvent> {
        let mut header = [0; 5];
        self.reader.read_exact(&mut header).await.ok()?;
        let (frame_tag, length) = parse_frame_header(header);
        if length > MAX_FRAME {
            return Some(StreamEvent::Failed(format!(
                "the toolbox sent a frame of {length} bytes, more than {MAX_FRAME}"
            )));
        }
        let mut payload = vec![0; length];
        self.reader.read_exact(&mut payload).await.ok()?;
        let event = match frame_tag {
            tag::STDOUT => StreamEvent::Stdout(payload.into()),
            tag::STDERR => StreamEvent::Stderr(payload.into()),
            tag::EXIT => match <[u8; 4]>::try_from(payload) {
                Ok(code) => StreamEvent::Exit(i32::from_be_bytes(code)),
                Err(_) => StreamEvent::Failed("the toolbox sent a malformed exit code".into()),
            },
            tag::ERROR => StreamEvent::Failed(String::from_utf8_lossy(&payload).into_owned()),
            other => StreamEvent::Failed(format!("the toolbox sent an unknown frame tag {other}")),
        };
        Some(event)
    }
}

/// The sending half of a process stream. Dropping it ends the stream, which kills the command
/// if it still runs.
pub struct StreamWriter {
    writer: WriteHalf<Upgraded>,
}

impl StreamWriter {
    /// Sends bytes to the command's standard input, in frames of at most [`MAX_FRAME`] bytes.
    pub async fn stdin(&mut self, data: &[u8]) -> std::io::Result<()> {
        for chunk in data.chunks(MAX_FRAME) {
            self.frame(tag::STDIN, chunk).await?;
        }
        Ok(())
    }

    /// Closes the command's standard input.
    pub async fn stdin_eof(&mut self) -> std::io::Result<()> {
        self.frame(tag::STDIN_EOF, &[]).await
    }

    /// Changes the size of the command's terminal.
    pub async fn resize(&mut self, cols: u16, rows: u16) -> std::io::Result<()> {
        let [c1, c2] = cols.to_be_bytes();
        let [r1, r2] = rows.to_be_bytes();
        self.frame(tag::RESIZE, &[c1, c2, r1, r2]).await
    }

    async fn frame(&mut self, frame_tag: u8, payload: &[u8]) -> std::io::Result<()> {
        self.writer
            .write_all(&frame_header(frame_tag, payload.len()))
            .await?;
        self.writer.write_all(payload).await?;
        self.writer.flush().await
    }
}
