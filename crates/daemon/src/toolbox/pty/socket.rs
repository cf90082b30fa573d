//! A client attached to a PTY session over WebSocket.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::HeaderValue;
use axum::response::Response;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::terminal::{Event, Terminal, exit_reason};
use super::{ENVS_PROTOCOL_PREFIX, EXIT_CONTROL_PROTOCOL};

/// Echoes one of the subprotocols the client offered, as clients require: the PTY exit
/// control when offered, otherwise the first that does not carry variables.
pub fn select_protocol(mut upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
    let offered: Vec<HeaderValue> = upgrade.requested_protocols().cloned().collect();
    let chosen = offered
        .iter()
        .find(|value| value.as_bytes() == EXIT_CONTROL_PROTOCOL.as_bytes())
        .or_else(|| {
            offered.iter().find(|value| {
                !value
                    .as_bytes()
                    .starts_with(ENVS_PROTOCOL_PREFIX.as_bytes())
            })
        })
        .or(offered.first())
        .cloned();
    if let Some(chosen) = chosen {
        upgrade.set_selected_protocol(chosen);
    }
    upgrade
}

/// Upgrades the connection and serves the terminal on it.
pub fn attach(upgrade: WebSocketUpgrade, terminal: Arc<Terminal>) -> Response {
    let exit_control = upgrade
        .requested_protocols()
        .any(|value| value.as_bytes() == EXIT_CONTROL_PROTOCOL.as_bytes());
    select_protocol(upgrade).on_upgrade(move |socket| async move {
        serve(socket, &terminal, exit_control).await;
        terminal.detach();
    })
}

async fn serve(mut socket: WebSocket, terminal: &Terminal, exit_control: bool) {
    let attachment = terminal.attach();
    let connected = json!({"type": "control", "status": "connected"}).to_string();
    if socket.send(Message::Text(connected.into())).await.is_err() {
        return;
    }
    if !attachment.scrollback.is_empty()
        && socket
            .send(Message::Binary(attachment.scrollback.into()))
            .await
            .is_err()
    {
        return;
    }
    if let Some(code) = attachment.exited {
        send_exit(&mut socket, code, exit_control).await;
        return;
    }

    let mut events = attachment.events;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(Event::Output(bytes)) => {
                    if socket.send(Message::Binary(bytes)).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Exited(code)) => {
                    send_exit(&mut socket, code, exit_control).await;
                    return;
                }
                Err(RecvError::Lagged(_)) => {
                    let _ = socket.send(Message::Close(Some(CloseFrame {
                        code: close_code::AGAIN,
                        reason: "the client read the terminal too slowly: reconnect".into(),
                    }))).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(data))) => {
                    if terminal.write(&data).await.is_err() {
                        continue;
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    if terminal.write(text.as_bytes()).await.is_err() {
                        continue;
                    }
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return,
            },
        }
    }
}

/// Reports the shell's exit: the control frame for clients that asked for it, then the close
/// frame, whose reason carries the exit code too.
async fn send_exit(socket: &mut WebSocket, code: i32, exit_control: bool) {
    let reason = exit_reason(code);
    if exit_control {
        let mut control = json!({"type": "control", "status": "exited", "exitCode": code});
        if let Some(reason) = &reason {
            control["exitReason"] = json!(reason);
        }
        if socket
            .send(Message::Text(control.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
    let (close, text) = match &reason {
        None => (close_code::NORMAL, json!({"exitCode": code}).to_string()),
        Some(reason) => (
            close_code::ERROR,
            json!({"exitCode": code, "exitReason": reason}).to_string(),
        ),
    };
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: close,
            reason: text.into(),
        })))
        .await;
}
