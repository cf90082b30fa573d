//! A toolbox server started from the built binary, and an HTTP client for its Unix socket.

#![allow(dead_code)]

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

pub const BINARY: &str = env!("CARGO_BIN_EXE_daytona-daemon");

/// How long a test waits for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

pub type Body = BoxBody<Bytes, io::Error>;

/// A running `daytona-daemon toolbox --listen`, stopped when dropped.
pub struct Daemon {
    child: Child,
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts a server with the default configuration, as the current user.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts a server; `config` is the JSON of the daemon configuration, if any.
    pub async fn start_with(config: Option<Value>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let socket = dir.path().join("toolbox.sock");

        let mut command = Command::new(BINARY);
        command
            .arg("toolbox")
            .arg("--listen")
            .arg(&socket)
            .arg("--home")
            .arg(&home)
            .env("DAEMON_TEST_MARKER", "leaked")
            .stdin(Stdio::null());
        if let Some(config) = config {
            let path = dir.path().join("config.json");
            std::fs::write(&path, config.to_string()).unwrap();
            command.arg("--config").arg(path);
        }
        let child = command.spawn().unwrap();

        let daemon = Self {
            child,
            dir,
            home,
            socket,
        };
        daemon.wait_until_ready().await;
        daemon
    }

    /// Wraps a server started by the caller.
    pub async fn adopt(
        child: Child,
        dir: tempfile::TempDir,
        home: PathBuf,
        socket: PathBuf,
    ) -> Self {
        let daemon = Self {
            child,
            dir,
            home,
            socket,
        };
        daemon.wait_until_ready().await;
        daemon
    }

    async fn wait_until_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while UnixStream::connect(&self.socket).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the toolbox server did not accept connections on {} within {START_TIMEOUT:?}",
                self.socket.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory of the server, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub async fn request(&self, request: Request<Body>) -> Reply {
        let stream = UnixStream::connect(&self.socket).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn send(&self, method: Method, path: &str, body: Body) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "toolbox")
            .body(body)
            .unwrap();
        self.request(request).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, empty()).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, empty()).await
    }

    pub async fn post(&self, path: &str) -> Reply {
        self.send(Method::POST, path, empty()).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("host", "toolbox")
            .header("content-type", "application/json")
            .body(full(body.to_string()))
            .unwrap();
        self.request(request).await
    }

    /// Runs a command through `POST /process/execute` and expects HTTP 200.
    pub async fn exec(&self, body: Value) -> Value {
        let reply = self.post_json("/process/execute", &body).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()
    }

    /// Sends a multipart body to `path`.
    pub async fn post_multipart(&self, path: &str, multipart: Multipart) -> Reply {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("host", "toolbox")
            .header("content-type", multipart.content_type())
            .body(multipart.into_body())
            .unwrap();
        self.request(request).await
    }

    /// Uploads files with `POST /files/bulk-upload`: `(destination, content)` pairs.
    pub async fn upload(&self, files: &[(&str, &[u8])]) -> Reply {
        let mut multipart = Multipart::new();
        for (index, (path, _)) in files.iter().enumerate() {
            multipart = multipart.text(&format!("files[{index}].path"), path);
        }
        for (index, (path, content)) in files.iter().enumerate() {
            multipart = multipart.file(
                &format!("files[{index}].file"),
                path,
                Bytes::copy_from_slice(content),
            );
        }
        self.post_multipart("/files/bulk-upload", multipart).await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("response is not JSON ({error}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|value| value.to_str().unwrap())
            .unwrap_or_default()
    }
}

pub fn empty() -> Body {
    full(Bytes::new())
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Builds a body streamed from chunks.
pub fn streamed(chunks: impl Stream<Item = io::Result<Bytes>> + Send + Sync + 'static) -> Body {
    BodyExt::boxed(StreamBody::new(chunks.map(|chunk| chunk.map(Frame::data))))
}

/// A `multipart/form-data` body under construction; file contents may be streams.
pub struct Multipart {
    boundary: String,
    pieces: Vec<Body>,
}

impl Multipart {
    pub fn new() -> Self {
        Self {
            boundary: "test-boundary-7d2f1c".to_owned(),
            pieces: Vec::new(),
        }
    }

    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    pub fn text(mut self, name: &str, value: &str) -> Self {
        let part = format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n",
            self.boundary
        );
        self.pieces.push(full(part));
        self
    }

    pub fn file(self, name: &str, filename: &str, content: Bytes) -> Self {
        self.file_stream(name, filename, full(content))
    }

    pub fn file_stream(mut self, name: &str, filename: &str, content: Body) -> Self {
        let head = format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n",
            self.boundary
        );
        self.pieces.push(full(head));
        self.pieces.push(content);
        self.pieces.push(full("\r\n"));
        self
    }

    pub fn into_body(mut self) -> Body {
        self.pieces.push(full(format!("--{}--\r\n", self.boundary)));
        let frames = futures_util::stream::iter(self.pieces)
            .map(|body| body.into_data_stream())
            .flatten();
        BodyExt::boxed(StreamBody::new(frames.map(|chunk| chunk.map(Frame::data))))
    }
}

/// Polls `condition` until it holds, failing after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Computes the sha256 of a file with coreutils, which is fast even when the tests are built
/// without optimisation.
pub fn sha256_file(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()[..64].to_owned()
}

/// Checks whether the process exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// Checks a response body against Daytona's error shape.
pub fn assert_error_shape(reply: &Reply, status: u16, code: &str, method: &str, path: &str) {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.text());
    assert!(
        reply.header("content-type").starts_with("application/json"),
        "content type {}",
        reply.header("content-type")
    );
    let body = reply.json();
    assert_eq!(body["statusCode"], status);
    assert!(body["statusCode"].is_u64());
    assert_eq!(body["code"], code);
    assert_eq!(body["source"], "DAYTONA_DAEMON");
    assert_eq!(body["method"], method);
    assert_eq!(body["path"], path);
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    let timestamp = body["timestamp"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "timestamp {timestamp}"
    );
}

/// Name of the user running the tests.
pub fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Finds a program in `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}
