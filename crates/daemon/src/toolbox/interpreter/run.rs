//! One run of code in an interpreter context, over the WebSocket of
//! `GET /process/interpreter/execute`.
//!
//! How a run ends, and what the client receives:
//!
//! | End | Frames | Close |
//! |---|---|---|
//! | the code finished, with or without an exception | `control: completed` | 1000 |
//! | the code raised KeyboardInterrupt itself | `error: KeyboardInterrupt`, `control: interrupted` | 1000 |
//! | timeout; the interrupt stopped the code | none | 4008 |
//! | timeout; the worker ignored the interrupt, or died of it, and was restarted | `error: InterpreterRestarted` | 4008 |
//! | the worker exited during the run and was restarted | `error: InterpreterExited` | 1000 |
//! | the context was deleted during the run | `error: ContextDeleted` | 1000 |
//! | the worker could not start | `error: InterpreterStartError` | 1011 |
//! | unknown context id | `error: ContextNotFound` | 4004 |
//! | invalid first frame | none | 1007 |
//!
//! A timeout sends no `control` frame, because the TypeScript SDK treats one as success and
//! would not raise its timeout error on the 4008 close that follows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use daytona_wire::interpreter::{ExecuteCodeRequest, ExecutionChunk};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;

use super::worker::{WorkerEvent, WorkerMessage};
use super::{Context, DEFAULT_CONTEXT_ID};
use crate::toolbox::error::ErrorChain;
use crate::toolbox::state::{Toolbox, check_env_var};

/// Timeout of a run that sets none; 0 disables it.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// How long the worker may take to stop after the interrupt before it is killed.
const INTERRUPT_GRACE: Duration = Duration::from_secs(3);

/// How long the client may take to send its request after the upgrade.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Interval of the pings that keep a quiet run's connection open through proxies.
const PING_INTERVAL: Duration = Duration::from_secs(20);

/// How long sending one frame may take before the client counts as gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the server waits for the client to reply to its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest close reason a close frame carries, in bytes (RFC 6455 allows 123).
const MAX_CLOSE_REASON: usize = 123;

/// Close code of a run that completed.
const CLOSE_NORMAL: u16 = 1000;
/// Close code of a first frame that is not a valid request.
const CLOSE_INVALID_REQUEST: u16 = 1007;
/// Close code of a server-side failure.
const CLOSE_INTERNAL: u16 = 1011;
/// Close code of an unknown context id.
const CLOSE_NOT_FOUND: u16 = 4004;
/// Close code that the SDKs turn into their timeout error.
const CLOSE_TIMEOUT_CODE: u16 = 4008;

/// Upgrades the connection and serves one run on it.
pub fn accept(mut upgrade: WebSocketUpgrade, toolbox: Arc<Toolbox>) -> Response {
    // Clients that offer subprotocols require one of them back.
    let offered = upgrade.requested_protocols().next().cloned();
    if let Some(offered) = offered {
        upgrade.set_selected_protocol(offered);
    }
    upgrade.on_upgrade(move |socket| serve(socket, toolbox))
}

async fn serve(socket: WebSocket, toolbox: Arc<Toolbox>) {
    let mut client = Client::new(socket);
    let request = match client.read_request().await {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(reason) => return client.close(CLOSE_INVALID_REQUEST, &reason).await,
    };
    let envs = request.envs.clone().unwrap_or_default();
    for (name, value) in &envs {
        if let Err(error) = check_env_var(name, value) {
            return client.close(CLOSE_INVALID_REQUEST, error.message()).await;
        }
    }

    let context = match request.context_id.as_deref().filter(|id| !id.is_empty()) {
        None | Some(DEFAULT_CONTEXT_ID) => toolbox.interpreters.default_context(&toolbox),
        Some(id) => match toolbox.interpreters.get(id) {
            Some(context) => context,
            None => {
                let message = format!(
                    "interpreter context {id} not found: create one with POST \
                     /process/interpreter/context"
                );
                client
                    .send(&ExecutionChunk::error("ContextNotFound", &message, ""))
                    .await;
                return client.close(CLOSE_NOT_FOUND, &message).await;
            }
        },
    };

    let timeout = match request.timeout {
        None => Some(DEFAULT_TIMEOUT),
        Some(0) => None,
        Some(seconds) => Some(Duration::from_secs(seconds)),
    };
    let outcome = execute(
        &toolbox,
        &context,
        &request.code,
        &envs,
        timeout,
        &mut client,
    )
    .await;
    report(outcome, timeout, client).await;
}

/// The end of a run.
#[derive(Debug)]
enum Outcome {
    Completed,
    /// The code raised KeyboardInterrupt, and not because of the timeout.
    Interrupted,
    /// The deadline passed while earlier runs of the context still ran.
    TimedOutWaiting,
    /// The deadline passed and the interrupt stopped the code.
    TimedOut,
    /// The deadline passed and the worker had to be replaced. `restart` is the result of
    /// starting a new one.
    TimedOutRestarted {
        /// How the old worker ended, when the interrupt itself ended it; `None` when it ignored
        /// the interrupt and was killed.
        ended_by_interrupt: Option<String>,
        restart: Result<(), String>,
    },
    /// The worker exited during the run.
    Exited {
        status: String,
        restart: Result<(), String>,
    },
    Deleted,
    StartFailed(String),
}

/// The end of the worker's part of a run.
enum RunEnd {
    Completed,
    Interrupted,
    Exited,
    Unresponsive,
}

async fn execute(
    toolbox: &Toolbox,
    context: &Context,
    code: &str,
    envs: &BTreeMap<String, String>,
    timeout: Option<Duration>,
    client: &mut Client,
) -> Outcome {
    let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));

    // 1. Wait for the runs that arrived earlier. The deadline covers the wait, so that the
    //    caller's timeout counts from the moment of its request.
    let mut slot = match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline, context.worker.lock()).await {
            Ok(slot) => slot,
            Err(_) => return Outcome::TimedOutWaiting,
        },
        None => context.worker.lock().await,
    };
    if context.is_deleted() {
        return Outcome::Deleted;
    }

    // 2. Replace a worker that exited since the last run, and start one if there is none.
    if let Some(worker) = slot.as_mut()
        && !worker.discard_pending()
    {
        let status = slot.take().expect("checked above").kill().await;
        tracing::warn!(context = %context.id, %status, "interpreter exited between runs; restarting it");
        context.mark_restarted();
        client
            .send(&ExecutionChunk::stderr(format!(
                "[daytona] the interpreter of this context had exited ({status}) and was \
                 restarted: variables, imports and functions of earlier runs are lost\n"
            )))
            .await;
    }
    if slot.is_none() {
        match context.start_worker(toolbox).await {
            Ok(worker) => *slot = Some(worker),
            Err(error) => return Outcome::StartFailed(ErrorChain(&error).to_string()),
        }
    }
    let worker = slot.as_mut().expect("started above");

    // 3. Run, forwarding output, until the worker reports the end, the deadline passes and
    //    the interrupt goes unanswered, or the worker exits.
    let mut timed_out = false;
    let end = if worker.send_run(code, envs).await.is_err() {
        RunEnd::Exited
    } else {
        let mut interrupted_at: Option<Instant> = None;
        let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
        let end = loop {
            tokio::select! {
                event = worker.next_event() => match event {
                    WorkerEvent::Stdout(text) => client.send(&ExecutionChunk::stdout(text)).await,
                    WorkerEvent::Stderr(text) => client.send(&ExecutionChunk::stderr(text)).await,
                    WorkerEvent::Message(WorkerMessage::Error { name, value, traceback }) => {
                        client.send(&ExecutionChunk::error(name, value, traceback)).await;
                    }
                    WorkerEvent::Message(WorkerMessage::Control { text }) if text == "interrupted" => {
                        break RunEnd::Interrupted;
                    }
                    WorkerEvent::Message(WorkerMessage::Control { .. }) => break RunEnd::Completed,
                    WorkerEvent::Message(WorkerMessage::Ready) => {}
                    WorkerEvent::Closed => break RunEnd::Exited,
                },
                () = sleep_until(deadline), if interrupted_at.is_none() => {
                    tracing::info!(context = %context.id, "run timed out; interrupting it");
                    worker.interrupt();
                    interrupted_at = Some(Instant::now());
                }
                () = sleep_until(interrupted_at.map(|at| at + INTERRUPT_GRACE)) => {
                    break RunEnd::Unresponsive;
                }
                _ = ping.tick() => client.ping().await,
                () = client.wait_gone(), if !client.gone => {}
            }
        };
        // A reply to the interrupt, or code that finished within the grace period, still
        // makes a timed-out run.
        timed_out = interrupted_at.is_some();
        if timed_out && matches!(end, RunEnd::Completed | RunEnd::Interrupted) {
            return Outcome::TimedOut;
        }
        end
    };

    // 4. Replace a worker that exited or ignored the interrupt.
    match end {
        RunEnd::Completed => Outcome::Completed,
        RunEnd::Interrupted => Outcome::Interrupted,
        RunEnd::Exited | RunEnd::Unresponsive => {
            let worker = slot.take().expect("the run owned a worker");
            *context.process() = None;
            let status = worker.kill().await;
            if context.is_deleted() {
                return Outcome::Deleted;
            }
            context.mark_restarted();
            let restart = match context.start_worker(toolbox).await {
                Ok(worker) => {
                    *slot = Some(worker);
                    Ok(())
                }
                Err(error) => Err(ErrorChain(&error).to_string()),
            };
            tracing::warn!(
                context = %context.id,
                %status,
                unresponsive = matches!(end, RunEnd::Unresponsive),
                restarted = restart.is_ok(),
                "interpreter killed during a run"
            );
            // A worker that the interrupt killed (code that restored SIGINT's default action)
            // ends a timed-out run as one that ignored it does.
            if timed_out {
                let ended_by_interrupt = matches!(end, RunEnd::Exited).then_some(status);
                Outcome::TimedOutRestarted {
                    ended_by_interrupt,
                    restart,
                }
            } else {
                Outcome::Exited { status, restart }
            }
        }
    }
}

/// Sends the frames and the close that end a run.
async fn report(outcome: Outcome, timeout: Option<Duration>, mut client: Client) {
    let seconds = timeout.map_or(0, |timeout| timeout.as_secs());
    match outcome {
        Outcome::Completed => {
            client.send(&ExecutionChunk::control("completed")).await;
            client.close(CLOSE_NORMAL, "").await;
        }
        Outcome::Interrupted => {
            client
                .send(&ExecutionChunk::error("KeyboardInterrupt", "", ""))
                .await;
            client.send(&ExecutionChunk::control("interrupted")).await;
            client.close(CLOSE_NORMAL, "").await;
        }
        Outcome::TimedOutWaiting => {
            let reason = format!(
                "execution timed out after {seconds} s while waiting for earlier runs of the \
                 context"
            );
            client.close(CLOSE_TIMEOUT_CODE, &reason).await;
        }
        Outcome::TimedOut => {
            let reason = format!(
                "execution timed out after {seconds} s; the run was interrupted and the \
                 context kept its state"
            );
            client.close(CLOSE_TIMEOUT_CODE, &reason).await;
        }
        Outcome::TimedOutRestarted {
            ended_by_interrupt,
            restart,
        } => {
            let value = match ended_by_interrupt {
                None => format!(
                    "execution timed out after {seconds} s and the interpreter did not stop \
                     within {} s of the interrupt (SIGINT), so it was killed. {}",
                    INTERRUPT_GRACE.as_secs(),
                    restart_text(&restart)
                ),
                Some(status) => format!(
                    "execution timed out after {seconds} s and the interrupt (SIGINT) ended the \
                     interpreter process ({status}). {}",
                    restart_text(&restart)
                ),
            };
            client
                .send(&ExecutionChunk::error("InterpreterRestarted", value, ""))
                .await;
            let reason = format!(
                "execution timed out after {seconds} s; the interpreter ignored the interrupt \
                 and was restarted, losing its state"
            );
            client.close(CLOSE_TIMEOUT_CODE, &reason).await;
        }
        Outcome::Exited { status, restart } => {
            let value = format!(
                "the interpreter process ended during the run ({status}). {}",
                restart_text(&restart)
            );
            client
                .send(&ExecutionChunk::error("InterpreterExited", value, ""))
                .await;
            client.close(CLOSE_NORMAL, "").await;
        }
        Outcome::Deleted => {
            client
                .send(&ExecutionChunk::error(
                    "ContextDeleted",
                    "the interpreter context was deleted",
                    "",
                ))
                .await;
            client.close(CLOSE_NORMAL, "").await;
        }
        Outcome::StartFailed(message) => {
            let value = format!("failed to start the Python interpreter: {message}");
            client
                .send(&ExecutionChunk::error("InterpreterStartError", &value, ""))
                .await;
            client.close(CLOSE_INTERNAL, &value).await;
        }
    }
}

fn restart_text(restart: &Result<(), String>) -> String {
    match restart {
        Ok(()) => "A new interpreter was started, so the context's variables, imports and \
                   functions are lost."
            .to_owned(),
        Err(error) => format!(
            "Starting a new interpreter failed ({error}), so the context's state is lost. The \
             next run tries again."
        ),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The WebSocket of one run. Once the client is gone, frames are dropped: the run goes on to
/// its end, so that the context's state stays consistent.
struct Client {
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
    gone: bool,
}

impl Client {
    fn new(socket: WebSocket) -> Self {
        let (sink, stream) = socket.split();
        Self {
            sink,
            stream,
            gone: false,
        }
    }

    /// Reads the request frame. `Ok(None)` when the client left first; `Err` with the close
    /// reason when the frame is not a valid request.
    async fn read_request(&mut self) -> Result<Option<ExecuteCodeRequest>, String> {
        let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Text(text))) => return Some(text.as_str().to_owned()),
                    Some(Ok(Message::Binary(bytes))) => {
                        return Some(String::from_utf8_lossy(&bytes).into_owned());
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                }
            }
        })
        .await;
        let text = match read {
            Ok(Some(text)) => text,
            Ok(None) => {
                self.gone = true;
                return Ok(None);
            }
            Err(_) => {
                return Err(format!(
                    "no request within {} s: send {{\"code\": ...}} as the first frame",
                    REQUEST_TIMEOUT.as_secs()
                ));
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|error| format!("invalid request: {error}"))
    }

    async fn send(&mut self, chunk: &ExecutionChunk) {
        let text = serde_json::to_string(chunk).expect("a chunk always serializes");
        self.send_message(Message::Text(text.into())).await;
    }

    async fn ping(&mut self) {
        self.send_message(Message::Ping(Default::default())).await;
    }

    async fn send_message(&mut self, message: Message) {
        if self.gone {
            return;
        }
        match tokio::time::timeout(SEND_TIMEOUT, self.sink.send(message)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => self.gone = true,
        }
    }

    /// Waits until the client closes the connection; frames it sends meanwhile are ignored.
    async fn wait_gone(&mut self) {
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    self.gone = true;
                    return;
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Sends a close frame and waits briefly for the client's close frame.
    async fn close(mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: truncate_reason(reason).into(),
        };
        self.send_message(Message::Close(Some(frame))).await;
        if !self.gone {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.wait_gone()).await;
        }
    }
}

/// Cuts a close reason to the length a close frame allows, at a character boundary.
fn truncate_reason(reason: &str) -> String {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason.to_owned();
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_frame() {
        assert_eq!(truncate_reason("short"), "short");
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON);
        assert!(long.starts_with(&cut));
    }

    #[test]
    fn timeout_reasons_fit_a_frame() {
        let seconds = u64::MAX;
        let reasons = [
            format!(
                "execution timed out after {seconds} s; the run was interrupted and the \
                 context kept its state"
            ),
            format!(
                "execution timed out after {seconds} s; the interpreter ignored the interrupt \
                 and was restarted, losing its state"
            ),
            format!(
                "execution timed out after {seconds} s while waiting for earlier runs of the \
                 context"
            ),
        ];
        for reason in reasons {
            assert!(
                reason.len() <= MAX_CLOSE_REASON,
                "{} bytes: {reason}",
                reason.len()
            );
        }
    }
}
