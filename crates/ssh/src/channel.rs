//! One session channel: the requests that configure it, then the process stream that carries
//! its data both ways.

use std::sync::Arc;

use daytona_runner::{StreamEvent, StreamReader, StreamWriter};
use daytona_wire::stream::{StreamRequest, TerminalRequest};
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};

use crate::connection::SFTP_SUBSYSTEM;
use crate::{Backend, Streams};

/// The SFTP server that the `sftp` subsystem runs, from Debian's `openssh-sftp-server`.
const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// Extended data type of standard error (RFC 4254, section 5.2).
const STDERR: u32 = 1;

/// Exit status reported when the command could not be started or its stream failed.
const FAILURE_STATUS: u32 = 255;

/// Largest number of columns or rows passed to the sandbox.
const MAX_SIZE: u32 = 1000;

/// Serves a session channel until it closes or its command exits.
pub async fn serve<B: Backend>(channel: Channel<Msg>, backend: Arc<B>, sandbox_id: String) {
    let (mut read, write) = channel.split();
    let Some(request) = read_request(&mut read).await else {
        return;
    };
    let Streams {
        output,
        input,
        hold: _hold,
    } = match backend.open(&sandbox_id, request).await {
        Ok(streams) => streams,
        Err(message) => {
            let _ = write
                .extended_data_bytes(STDERR, format!("{message}\r\n").into_bytes())
                .await;
            finish(&write, FAILURE_STATUS).await;
            return;
        }
    };

    tokio::select! {
        // The client closed the channel: dropping the stream kills the command.
        () = forward_input(&mut read, input) => {}
        status = forward_output(output, &write) => finish(&write, status).await,
    }
}

/// Reads the channel's requests until one starts a command: a shell, an exec or the SFTP
/// subsystem. Returns `None` when the channel closes first.
async fn read_request(read: &mut ChannelReadHalf) -> Option<StreamRequest> {
    let mut terminal = None;
    let mut env = Vec::new();
    let command = loop {
        match read.wait().await? {
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            } => {
                terminal = Some(TerminalRequest {
                    term,
                    cols: terminal_size(col_width),
                    rows: terminal_size(row_height),
                });
            }
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } if accepts_variable(&variable_name) => env.push((variable_name, variable_value)),
            ChannelMsg::RequestShell { .. } => break None,
            ChannelMsg::Exec { command, .. } => {
                break Some(String::from_utf8_lossy(&command).into_owned());
            }
            ChannelMsg::RequestSubsystem { name, .. } if name == SFTP_SUBSYSTEM => {
                break Some(SFTP_SERVER.to_owned());
            }
            _ => {}
        }
    };
    Some(StreamRequest {
        command,
        terminal,
        env,
    })
}

/// Clients report 0 for a size they do not know.
fn terminal_size(value: u32) -> u16 {
    let value = if value == 0 { 80 } else { value.min(MAX_SIZE) };
    u16::try_from(value).unwrap_or(80)
}

/// Returns whether a client's variable is passed on: only the locale, as Debian's sshd_config
/// accepts (`AcceptEnv LANG LC_*`).
fn accepts_variable(name: &str) -> bool {
    name == "LANG" || name.starts_with("LC_")
}

/// Sends the client's data, end of input and window changes to the command until the client
/// closes the channel.
async fn forward_input(read: &mut ChannelReadHalf, mut input: StreamWriter) {
    let mut open = true;
    while let Some(message) = read.wait().await {
        let sent = match message {
            ChannelMsg::Data { data } if open => input.stdin(&data).await,
            ChannelMsg::Eof if open => input.stdin_eof().await,
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            } if open => {
                input
                    .resize(terminal_size(col_width), terminal_size(row_height))
                    .await
            }
            ChannelMsg::Close => return,
            _ => Ok(()),
        };
        // The stream broke; its output side reports how.
        if sent.is_err() {
            open = false;
        }
    }
}

/// Sends the command's output to the client and returns its exit status.
async fn forward_output(mut output: StreamReader, write: &ChannelWriteHalf<Msg>) -> u32 {
    while let Some(event) = output.next().await {
        let sent = match event {
            StreamEvent::Stdout(bytes) => write.data_bytes(bytes).await,
            StreamEvent::Stderr(bytes) => write.extended_data_bytes(STDERR, bytes).await,
            // Like sshd: the low 8 bits, so that 128 + N reports signal N.
            StreamEvent::Exit(code) => return (code & 0xff) as u32,
            StreamEvent::Failed(message) => {
                let text = format!("the sandbox's toolbox failed: {message}\r\n");
                let _ = write.extended_data_bytes(STDERR, text.into_bytes()).await;
                return FAILURE_STATUS;
            }
        };
        if sent.is_err() {
            return FAILURE_STATUS;
        }
    }
    let text = "the connection to the sandbox ended before the command exited (the sandbox may have stopped)\r\n";
    let _ = write
        .extended_data_bytes(STDERR, text.as_bytes().to_vec())
        .await;
    FAILURE_STATUS
}

async fn finish(write: &ChannelWriteHalf<Msg>, status: u32) {
    let _ = write.exit_status(status).await;
    let _ = write.eof().await;
    let _ = write.close().await;
}
