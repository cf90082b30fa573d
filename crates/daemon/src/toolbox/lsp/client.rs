//! A language server process and the JSON-RPC connection to it over its standard streams.
//!
//! Messages are framed as LSP specifies: a `Content-Length` header, a blank line and the JSON
//! body. Requests carry increasing ids. The task that reads the server's output completes the
//! waiting request with the matching id. It also replies to the requests the server sends to
//! the client (configuration, capability registration, progress), and drops notifications
//! such as diagnostics.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use crate::toolbox::process::command::{CommandSpec, Launcher, Workload, launch_error_to_io};

/// Time allowed for `initialize`, which includes the server's start.
const INITIALIZE_TIMEOUT: Duration = Duration::from_secs(60);

/// Time allowed for any other request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Time allowed for `shutdown`, and then for the process to exit after `exit`.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest message body the server may send, in bytes.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Largest header line, in bytes.
const MAX_HEADER_LINE: u64 = 1024;

/// Bytes of the server's standard error kept for error messages.
const STDERR_TAIL: usize = 4096;

/// Maximum number of documents open in one server.
pub const MAX_OPEN_DOCUMENTS: usize = 4096;

/// JSON-RPC error code of a method the receiver does not implement.
pub const METHOD_NOT_FOUND: i64 = -32601;

/// Errors of a language server.
#[derive(Debug, thiserror::Error)]
pub enum LspError {
    #[error("failed to create the pipes of the language server")]
    Pipes {
        #[source]
        source: io::Error,
    },
    #[error("failed to start {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to send {method} to the language server")]
    Write {
        method: String,
        #[source]
        source: io::Error,
    },
    #[error("the language server exited; its last error output: {stderr}")]
    Exited { stderr: String },
    #[error("the language server did not reply to {method} within {timeout:?}")]
    Timeout { method: String, timeout: Duration },
    #[error("too many open documents ({MAX_OPEN_DOCUMENTS}): close some with POST /lsp/did-close")]
    TooManyDocuments,
    #[error("the language server failed {method}: {message} (code {code})")]
    Rpc {
        method: String,
        code: i64,
        message: String,
    },
}

/// The result of a request, or the code and message of its error response.
type Response = Result<Value, (i64, String)>;

/// Requests waiting for their response, by id; `None` once the server is gone.
type Pending = Mutex<Option<HashMap<i64, oneshot::Sender<Response>>>>;

/// A running language server. Dropping it kills the server's process group.
#[derive(Debug)]
pub struct LanguageServer {
    workload: Workload,
    writer: Arc<tokio::sync::Mutex<pipe::Sender>>,
    pending: Arc<Pending>,
    next_id: AtomicI64,
    stderr_tail: Arc<Mutex<VecDeque<u8>>>,
    /// The `capabilities` of the `initialize` result.
    capabilities: Value,
    /// Open documents and the version last sent for each, by URI.
    documents: Mutex<BTreeMap<String, i32>>,
    reader: tokio::task::JoinHandle<()>,
    stopped: AtomicBool,
}

impl LanguageServer {
    /// Starts the server as a workload in `project` and runs the `initialize` handshake.
    pub async fn start(
        launcher: &Launcher,
        program: PathBuf,
        args: &[&str],
        project: &Path,
        env: BTreeMap<String, String>,
    ) -> Result<Self, LspError> {
        let (stdin_read, stdin_write) = pipe_pair()?;
        let (stdout_read, stdout_write) = pipe_pair()?;
        let (stderr_read, stderr_write) = pipe_pair()?;
        let spec = CommandSpec {
            program: program.clone(),
            args: args.iter().map(Into::into).collect(),
            env,
            cwd: project.to_owned(),
            stdin: None,
            timeout: None,
            output_limit: 0,
        };
        let workload = launcher
            .spawn(
                &spec,
                [Some(stdin_read), Some(stdout_write), Some(stderr_write)],
            )
            .await
            .map_err(|error| LspError::Spawn {
                program,
                source: launch_error_to_io(error),
            })?;

        let pipes = || -> io::Result<_> {
            Ok((
                pipe::Sender::from_owned_fd(stdin_write)?,
                pipe::Receiver::from_owned_fd(stdout_read)?,
                pipe::Receiver::from_owned_fd(stderr_read)?,
            ))
        };
        let (writer, stdout, stderr) = pipes().map_err(|source| LspError::Pipes { source })?;
        let writer = Arc::new(tokio::sync::Mutex::new(writer));
        let pending: Arc<Pending> = Arc::new(Mutex::new(Some(HashMap::new())));
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn(keep_stderr_tail(stderr, stderr_tail.clone()));
        let reader = tokio::spawn(read_messages(
            stdout,
            writer.clone(),
            pending.clone(),
            project.to_owned(),
        ));

        let mut server = Self {
            workload,
            writer,
            pending,
            next_id: AtomicI64::new(1),
            stderr_tail,
            capabilities: Value::Null,
            documents: Mutex::new(BTreeMap::new()),
            reader,
            stopped: AtomicBool::new(false),
        };
        let root_uri = super::path_to_uri(project);
        let params = json!({
            // No process id: servers that watch it would exit when the toolbox server restarts,
            // and they exit anyway when their standard input closes.
            "processId": null,
            "clientInfo": {"name": "daytona-toolbox"},
            "rootPath": project.display().to_string(),
            "rootUri": root_uri,
            "workspaceFolders": [{"uri": root_uri, "name": folder_name(project)}],
            "capabilities": {
                "textDocument": {
                    "synchronization": {"dynamicRegistration": false, "didSave": false},
                    "completion": {
                        "contextSupport": true,
                        "completionItem": {
                            "snippetSupport": false,
                            "documentationFormat": ["markdown", "plaintext"],
                        },
                    },
                    "documentSymbol": {"hierarchicalDocumentSymbolSupport": false},
                },
                "workspace": {"symbol": {}, "workspaceFolders": true, "configuration": true},
                "window": {"workDoneProgress": false},
            },
        });
        let result = server
            .request_with_timeout("initialize", params, INITIALIZE_TIMEOUT)
            .await?;
        server.capabilities = result.get("capabilities").cloned().unwrap_or(Value::Null);
        server.notify("initialized", json!({})).await?;
        Ok(server)
    }

    pub fn pid(&self) -> i32 {
        self.workload.pid()
    }

    /// Checks whether the server advertises `capability` (any value but `false` or `null`).
    pub fn supports(&self, capability: &str) -> bool {
        !matches!(
            self.capabilities.get(capability),
            None | Some(Value::Null) | Some(Value::Bool(false))
        )
    }

    /// Checks whether the server's output ended, which means it exited or broke the protocol.
    pub fn has_exited(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// Sends a request and waits for its result.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, LspError> {
        self.request_with_timeout(method, params, REQUEST_TIMEOUT)
            .await
    }

    async fn request_with_timeout(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, LspError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        match self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            Some(pending) => pending.insert(id, sender),
            None => return Err(self.exited()),
        };
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        if let Err(error) = write_message(&self.writer, &message).await {
            self.forget(id);
            return Err(LspError::Write {
                method: method.to_owned(),
                source: error,
            });
        }
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err((code, message)))) => Err(LspError::Rpc {
                method: method.to_owned(),
                code,
                message,
            }),
            Ok(Err(_closed)) => Err(self.exited()),
            Err(_) => {
                self.forget(id);
                // The server may stop working on a request whose result is no longer needed.
                let _ = self.notify("$/cancelRequest", json!({"id": id})).await;
                Err(LspError::Timeout {
                    method: method.to_owned(),
                    timeout,
                })
            }
        }
    }

    fn forget(&self, id: i64) {
        if let Some(pending) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            pending.remove(&id);
        }
    }

    fn exited(&self) -> LspError {
        let tail = self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
        let bytes: Vec<u8> = tail.iter().copied().collect();
        LspError::Exited {
            stderr: String::from_utf8_lossy(&bytes).trim().to_owned(),
        }
    }

    /// Sends a notification.
    pub async fn notify(&self, method: &str, params: Value) -> Result<(), LspError> {
        let message = json!({"jsonrpc": "2.0", "method": method, "params": params});
        write_message(&self.writer, &message)
            .await
            .map_err(|source| {
                if self.has_exited() {
                    self.exited()
                } else {
                    LspError::Write {
                        method: method.to_owned(),
                        source,
                    }
                }
            })
    }

    /// Opens a document, or sends its new text when it is open already.
    pub async fn open_document(
        &self,
        uri: &str,
        language_id: &str,
        text: String,
    ) -> Result<(), LspError> {
        let version = {
            let mut documents = self.documents.lock().unwrap_or_else(|e| e.into_inner());
            if !documents.contains_key(uri) && documents.len() >= MAX_OPEN_DOCUMENTS {
                return Err(LspError::TooManyDocuments);
            }
            let version = documents.get(uri).map_or(1, |version| version + 1);
            documents.insert(uri.to_owned(), version);
            version
        };
        if version == 1 {
            self.notify(
                "textDocument/didOpen",
                json!({"textDocument": {"uri": uri, "languageId": language_id, "version": version, "text": text}}),
            )
            .await
        } else {
            self.notify(
                "textDocument/didChange",
                json!({"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"text": text}]}),
            )
            .await
        }
    }

    /// Closes a document; closing one that is not open does nothing.
    pub async fn close_document(&self, uri: &str) -> Result<(), LspError> {
        let was_open = self
            .documents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uri)
            .is_some();
        if !was_open {
            return Ok(());
        }
        self.notify(
            "textDocument/didClose",
            json!({"textDocument": {"uri": uri}}),
        )
        .await
    }

    pub fn is_open(&self, uri: &str) -> bool {
        self.documents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(uri)
    }

    /// URIs of the open documents.
    pub fn open_documents(&self) -> Vec<String> {
        self.documents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Asks the server to shut down and exit, waits up to [`SHUTDOWN_TIMEOUT`] for it, then
    /// kills what is left of its process group (helpers such as tsserver included) and reaps
    /// it.
    pub async fn stop(&self) {
        if !self.has_exited() {
            let _ = self
                .request_with_timeout("shutdown", Value::Null, SHUTDOWN_TIMEOUT)
                .await;
            let _ = self.notify("exit", Value::Null).await;
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_TIMEOUT;
        while !process_exited(&self.workload) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The server is not reaped yet, so its group id still names its group.
        let _ = self.workload.kill_group(libc::SIGKILL);
        let _ = self.workload.wait().await;
        self.stopped.store(true, Ordering::Relaxed);
        self.reader.abort();
    }
}

impl Drop for LanguageServer {
    fn drop(&mut self) {
        // Only `stop` reaps the server, so before it the group id is still its own.
        if !self.stopped.load(Ordering::Relaxed) {
            let _ = self.workload.kill_group(libc::SIGKILL);
        }
        self.reader.abort();
    }
}

/// Checks whether a workload has exited, without reaping it.
fn process_exited(workload: &Workload) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    // A pidfd becomes readable when its process exits.
    let mut fds = [PollFd::new(workload.pidfd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|ready| ready > 0)
}

fn folder_name(project: &Path) -> String {
    project.file_name().map_or_else(
        || "/".to_owned(),
        |name| name.to_string_lossy().into_owned(),
    )
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd), LspError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| LspError::Pipes {
        source: io::Error::from(errno),
    })
}

async fn write_message(
    writer: &tokio::sync::Mutex<pipe::Sender>,
    message: &Value,
) -> io::Result<()> {
    let body = serde_json::to_vec(message).expect("a JSON value always serializes");
    let mut frame = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    frame.extend_from_slice(&body);
    let mut writer = writer.lock().await;
    writer.write_all(&frame).await?;
    writer.flush().await
}

/// Keeps the last [`STDERR_TAIL`] bytes of the server's standard error.
async fn keep_stderr_tail(mut stderr: pipe::Receiver, tail: Arc<Mutex<VecDeque<u8>>>) {
    let mut buffer = [0; 4096];
    loop {
        match stderr.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                tail.extend(&buffer[..read]);
                let excess = tail.len().saturating_sub(STDERR_TAIL);
                tail.drain(..excess);
            }
        }
    }
}

/// Reads the server's messages until its output ends, then fails the requests still waiting.
async fn read_messages(
    stdout: pipe::Receiver,
    writer: Arc<tokio::sync::Mutex<pipe::Sender>>,
    pending: Arc<Pending>,
    project: PathBuf,
) {
    let mut reader = BufReader::new(stdout);
    loop {
        let message = match read_message(&mut reader).await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(%error, "language server sent an invalid message; dropping it");
                break;
            }
        };
        let method = message.get("method").and_then(Value::as_str);
        let id = message.get("id").filter(|id| !id.is_null());
        match (method, id) {
            (None, Some(id)) => complete(&pending, id, &message),
            (Some(method), Some(id)) => {
                let reply = reply_to_server_request(method, message.get("params"), &project);
                let mut response = json!({"jsonrpc": "2.0", "id": id});
                match reply {
                    Ok(result) => response["result"] = result,
                    Err(error) => response["error"] = error,
                }
                if write_message(&writer, &response).await.is_err() {
                    break;
                }
            }
            (Some(method), None) => tracing::trace!(method, "language server notification"),
            (None, None) => {}
        }
    }
    // Dropping the senders fails every waiting request.
    pending.lock().unwrap_or_else(|e| e.into_inner()).take();
}

fn complete(pending: &Pending, id: &Value, message: &Value) {
    let Some(id) = id.as_i64() else {
        return;
    };
    let sender = pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .and_then(|pending| pending.remove(&id));
    let Some(sender) = sender else {
        return;
    };
    let response = match message.get("error") {
        Some(error) if !error.is_null() => Err((
            error.get("code").and_then(Value::as_i64).unwrap_or(0),
            error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
                .to_owned(),
        )),
        _ => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
    };
    let _ = sender.send(response);
}

/// Returns the reply to a request that the server sends to the client.
fn reply_to_server_request(
    method: &str,
    params: Option<&Value>,
    project: &Path,
) -> Result<Value, Value> {
    match method {
        // No settings: one `null` per requested section makes servers use their defaults.
        "workspace/configuration" => {
            let items = params
                .and_then(|params| params.get("items"))
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            Ok(Value::Array(vec![Value::Null; items]))
        }
        "workspace/workspaceFolders" => {
            let uri = super::path_to_uri(project);
            Ok(json!([{"uri": uri, "name": folder_name(project)}]))
        }
        "client/registerCapability"
        | "client/unregisterCapability"
        | "window/workDoneProgress/create"
        | "window/showMessageRequest"
        | "workspace/applyEdit" => Ok(Value::Null),
        _ => Err(
            json!({"code": METHOD_NOT_FOUND, "message": format!("{method} is not supported by this client")}),
        ),
    }
}

/// Reads one framed message; `None` at end of file.
async fn read_message(reader: &mut BufReader<pipe::Receiver>) -> io::Result<Option<Value>> {
    let mut length: Option<usize> = None;
    loop {
        let mut line = Vec::new();
        let read = (&mut *reader)
            .take(MAX_HEADER_LINE)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            return Ok(None);
        }
        if !line.ends_with(b"\n") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "header line too long or cut off",
            ));
        }
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok();
        }
    }
    let length = length
        .filter(|length| *length <= MAX_MESSAGE)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "missing, invalid or too large Content-Length",
            )
        })?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_gets_one_null_per_item() {
        let params = json!({"items": [{"section": "a"}, {"section": "b"}]});
        let reply =
            reply_to_server_request("workspace/configuration", Some(&params), Path::new("/p"));
        assert_eq!(reply, Ok(json!([null, null])));
    }

    #[test]
    fn unknown_server_requests_get_method_not_found() {
        let reply = reply_to_server_request("x/unknown", None, Path::new("/p"));
        assert_eq!(reply.unwrap_err()["code"], METHOD_NOT_FOUND);
    }
}
