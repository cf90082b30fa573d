//! A toolbox server with its own session state directory, and a WebSocket client for its Unix
//! socket.

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::common::{BINARY, Daemon};

/// Starts a toolbox server whose sessions live in `state_dir`, with extra environment.
pub async fn start_in(
    dir: tempfile::TempDir,
    state_dir: &std::path::Path,
    config: Option<serde_json::Value>,
    env: &[(&str, &str)],
) -> Daemon {
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let socket = dir.path().join("toolbox.sock");
    let mut command = Command::new(BINARY);
    command
        .arg("toolbox")
        .arg("--listen")
        .arg(&socket)
        .arg("--home")
        .arg(&home)
        .env("DAYTONA_TOOLBOX_STATE_DIR", state_dir)
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    if let Some(config) = config {
        let path = dir.path().join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        command.arg("--config").arg(path);
    }
    let child = command.spawn().unwrap();
    Daemon::adopt(child, dir, home, socket).await
}

/// Starts a toolbox server with a fresh state directory.
pub async fn start(env: &[(&str, &str)]) -> Daemon {
    start_with_config(None, env).await
}

pub async fn start_with_config(config: Option<serde_json::Value>, env: &[(&str, &str)]) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    start_in(dir, &state, config, env).await
}

/// A WebSocket connected to the toolbox server.
pub struct Socket {
    pub stream: WebSocketStream<UnixStream>,
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
}

/// What a socket received until it closed.
#[derive(Debug, Default)]
pub struct Received {
    pub binary: Vec<u8>,
    pub texts: Vec<String>,
    pub close: Option<(u16, String)>,
}

impl Socket {
    /// Connects to `path`, offering `protocols`.
    pub async fn connect(daemon: &Daemon, path: &str, protocols: &[&str]) -> Self {
        Self::try_connect(daemon, path, protocols).await.unwrap()
    }

    /// Connects, returning the HTTP status of a refused upgrade as the error.
    pub async fn try_connect(daemon: &Daemon, path: &str, protocols: &[&str]) -> Result<Self, u16> {
        let stream = UnixStream::connect(&daemon.socket).await.unwrap();
        let mut request = format!("ws://toolbox{path}").into_client_request().unwrap();
        if !protocols.is_empty() {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                protocols.join(", ").parse().unwrap(),
            );
        }
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((stream, response)) => {
                let protocol = response
                    .headers()
                    .get("sec-websocket-protocol")
                    .map(|value| value.to_str().unwrap().to_owned());
                Ok(Self { stream, protocol })
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(error) => panic!("WebSocket connect to {path} failed: {error}"),
        }
    }

    pub async fn send_bytes(&mut self, data: &[u8]) {
        self.stream
            .send(Message::Binary(Bytes::copy_from_slice(data)))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::Text(text.into())).await.unwrap();
    }

    /// Receives frames until the server closes, within `timeout`.
    pub async fn read_to_close(&mut self, timeout: Duration) -> Received {
        let mut received = Received::default();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = tokio::time::timeout(left, self.stream.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("no close within {timeout:?}; received so far: {received:?}")
                });
            match message {
                Some(Ok(message)) => {
                    if record(&mut received, message) {
                        return received;
                    }
                }
                None | Some(Err(_)) => return received,
            }
        }
    }

    /// Receives frames until the binary data contains `needle`, within `timeout`.
    pub async fn read_until(&mut self, needle: &str, timeout: Duration) -> Received {
        let mut received = Received::default();
        let deadline = Instant::now() + timeout;
        while !String::from_utf8_lossy(&received.binary).contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = tokio::time::timeout(left, self.stream.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{needle:?} not received within {timeout:?}; received: {:?}",
                        String::from_utf8_lossy(&received.binary)
                    )
                });
            match message {
                Some(Ok(message)) => {
                    if record(&mut received, message) {
                        panic!(
                            "closed before {needle:?} arrived: {:?}; output {:?}",
                            received.close,
                            String::from_utf8_lossy(&received.binary)
                        );
                    }
                }
                None | Some(Err(_)) => panic!("socket ended before {needle:?} arrived"),
            }
        }
        received
    }

    /// Receives the next text frame, within `timeout`.
    pub async fn next_text(&mut self, timeout: Duration) -> String {
        loop {
            let message = tokio::time::timeout(timeout, self.stream.next())
                .await
                .expect("no text frame in time")
                .expect("socket ended")
                .unwrap();
            if let Message::Text(text) = message {
                return text.to_string();
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// Adds a frame to `received`; true for a close frame.
fn record(received: &mut Received, message: Message) -> bool {
    match message {
        Message::Binary(data) => received.binary.extend_from_slice(&data),
        Message::Text(text) => received.texts.push(text.to_string()),
        Message::Close(frame) => {
            received.close = Some(
                frame
                    .map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string()))
                    .unwrap_or((1005, String::new())),
            );
            return true;
        }
        _ => {}
    }
    false
}

/// Splits a marker-framed log into standard output and standard error.
pub fn demux(data: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut current = 0;
    let mut at = 0;
    while at < data.len() {
        if data[at..].starts_with(&[1, 1, 1]) {
            current = 1;
            at += 3;
        } else if data[at..].starts_with(&[2, 2, 2]) {
            current = 2;
            at += 3;
        } else {
            match current {
                1 => stdout.push(data[at]),
                2 => stderr.push(data[at]),
                _ => panic!("data before the first marker"),
            }
            at += 1;
        }
    }
    (stdout, stderr)
}
