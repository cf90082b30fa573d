//! `/process/pty/*`: pseudo-terminal sessions over WebSocket.

mod common;
mod ws;

use std::time::Duration;

use base64::Engine;
use common::{Daemon, assert_error_shape};
use serde_json::{Value, json};
use ws::Socket;

const EXIT_CONTROL: &str = "X-Daytona-Pty-Exit-Control";
const WAIT: Duration = Duration::from_secs(10);

fn envs_protocol(envs: &Value) -> String {
    let encoded =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(envs.to_string().as_bytes());
    format!("X-Daytona-Pty-Envs~{encoded}")
}

/// Creates a PTY session with create-connect and waits for the connected frame.
async fn create_connect(daemon: &Daemon, query: &str, protocols: &[&str]) -> Socket {
    let mut socket = Socket::connect(
        daemon,
        &format!("/process/pty/create-connect?{query}"),
        protocols,
    )
    .await;
    let control: Value = serde_json::from_str(&socket.next_text(WAIT).await).unwrap();
    assert_eq!(control, json!({"type": "control", "status": "connected"}));
    socket
}

async fn info(daemon: &Daemon, id: &str) -> Value {
    let reply = daemon.get(&format!("/process/pty/{id}")).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    reply.json()
}

#[tokio::test]
async fn create_connect_runs_a_shell_with_env_and_exit_code() {
    let daemon = ws::start(&[]).await;
    let envs = envs_protocol(&json!({"PTY_VAR": "from envs"}));
    let mut socket = create_connect(
        &daemon,
        "id=p1&cols=120&rows=40&cwd=/tmp",
        &[EXIT_CONTROL, &envs],
    )
    .await;
    assert_eq!(socket.protocol.as_deref(), Some(EXIT_CONTROL));

    socket
        .send_bytes(b"echo \"[$PTY_VAR][$TERM][$(pwd)]\"; stty size; tty\n")
        .await;
    // `tty` prints last.
    let output = socket.read_until("/dev/pts/", WAIT).await;
    let text = String::from_utf8_lossy(&output.binary).into_owned();
    assert!(text.contains("[from envs][xterm-256color][/tmp]"), "{text}");
    assert!(text.contains("40 120"), "{text}");

    let body = info(&daemon, "p1").await;
    assert_eq!(body["id"], "p1");
    assert_eq!(body["cwd"], "/tmp");
    assert_eq!(body["envs"], json!({"PTY_VAR": "from envs"}));
    assert_eq!(body["cols"], 120);
    assert_eq!(body["rows"], 40);
    assert_eq!(body["active"], true);
    assert_eq!(body["lazyStart"], false);
    assert!(body["createdAt"].as_str().unwrap().ends_with('Z'));

    // Text frames are keystrokes too.
    socket.send_text("exit 3\n").await;
    let end = socket.read_to_close(WAIT).await;
    let exited: Value = serde_json::from_str(end.texts.last().unwrap()).unwrap();
    assert_eq!(
        exited,
        json!({"type": "control", "status": "exited", "exitCode": 3, "exitReason": "non-zero exit"})
    );
    let (code, reason) = end.close.unwrap();
    assert_eq!(code, 1011);
    let reason: Value = serde_json::from_str(&reason).unwrap();
    assert_eq!(reason["exitCode"], 3);

    assert_eq!(info(&daemon, "p1").await["active"], false);
    let resize = daemon
        .post_json("/process/pty/p1/resize", &json!({"cols": 10, "rows": 10}))
        .await;
    assert_error_shape(
        &resize,
        410,
        "SESSION_ENDED",
        "POST",
        "/process/pty/p1/resize",
    );
}

#[tokio::test]
async fn clean_exit_closes_with_1000() {
    let daemon = ws::start(&[]).await;
    let mut socket = create_connect(&daemon, "id=p&cols=80&rows=24", &[EXIT_CONTROL]).await;
    socket.send_bytes(b"exit\n").await;
    let end = socket.read_to_close(WAIT).await;
    assert_eq!(end.close.as_ref().unwrap().0, 1000, "{end:?}");
    let exited: Value = serde_json::from_str(end.texts.last().unwrap()).unwrap();
    assert_eq!(exited["exitCode"], 0);
    assert!(exited.get("exitReason").is_none());
}

#[tokio::test]
async fn resize_reaches_the_shell() {
    let daemon = ws::start(&[]).await;
    let mut socket = create_connect(&daemon, "id=r&cols=80&rows=24", &[EXIT_CONTROL]).await;
    let reply = daemon
        .post_json("/process/pty/r/resize", &json!({"cols": 132, "rows": 50}))
        .await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    assert_eq!(reply.json()["cols"], 132);
    socket.send_bytes(b"stty size\n").await;
    socket.read_until("50 132", WAIT).await;

    for (cols, rows) in [(0, 10), (10, 1001)] {
        let reply = daemon
            .post_json(
                "/process/pty/r/resize",
                &json!({"cols": cols, "rows": rows}),
            )
            .await;
        assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/process/pty/r/resize");
    }
    socket.close().await;
}

#[tokio::test]
async fn output_while_detached_is_replayed_on_connect() {
    let daemon = ws::start(&[]).await;
    let mut socket = create_connect(&daemon, "id=s&cols=80&rows=24", &[EXIT_CONTROL]).await;
    socket
        .send_bytes(b"sleep 1; echo \"detached\"\"-output\"\n")
        .await;
    socket.read_until("sleep 1", WAIT).await;
    socket.close().await;
    tokio::time::sleep(Duration::from_millis(1800)).await;

    let mut socket = Socket::connect(&daemon, "/process/pty/s/connect", &[EXIT_CONTROL]).await;
    assert_eq!(socket.protocol.as_deref(), Some(EXIT_CONTROL));
    let control: Value = serde_json::from_str(&socket.next_text(WAIT).await).unwrap();
    assert_eq!(control["status"], "connected");
    socket.read_until("detached-output", WAIT).await;
    socket.close().await;
}

#[tokio::test]
async fn older_create_list_and_delete() {
    let daemon = ws::start(&[]).await;
    let reply = daemon
        .post_json(
            "/process/pty",
            &json!({"id": "old", "cols": 100, "rows": 30, "lazyStart": true, "envs": {"A": "1"}}),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 201, "{}", reply.text());
    assert_eq!(reply.json(), json!({"sessionId": "old"}));
    let again = daemon
        .post_json("/process/pty", &json!({"id": "old"}))
        .await;
    assert_error_shape(&again, 409, "CONFLICT", "POST", "/process/pty");

    let body = info(&daemon, "old").await;
    assert_eq!(body["active"], false);
    assert_eq!(body["lazyStart"], true);
    assert_eq!(body["cwd"], daemon.home.display().to_string());

    // The first client starts the shell.
    let mut socket = Socket::connect(&daemon, "/process/pty/old/connect", &[]).await;
    assert_eq!(socket.protocol, None);
    socket.next_text(WAIT).await;
    socket.send_bytes(b"echo \"[$A]\"\"x\"\n").await;
    socket.read_until("[1]x", WAIT).await;
    assert_eq!(info(&daemon, "old").await["active"], true);

    let list = daemon.get("/process/pty").await.json();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(list["sessions"][0]["id"], "old");

    let deleted = daemon.delete("/process/pty/old").await;
    assert_eq!(deleted.status.as_u16(), 200);
    assert!(deleted.json()["message"].is_string());
    // The attached client learns that the shell was killed.
    let end = socket.read_to_close(WAIT).await;
    assert_eq!(end.close.as_ref().unwrap().0, 1011, "{end:?}");
    assert_eq!(
        daemon.get("/process/pty").await.json(),
        json!({"sessions": []})
    );
    let gone = daemon.get("/process/pty/old").await;
    assert_error_shape(&gone, 404, "NOT_FOUND", "GET", "/process/pty/old");
    let refused = Socket::try_connect(&daemon, "/process/pty/old/connect", &[]).await;
    assert_eq!(refused.err(), Some(404));
}

#[tokio::test]
async fn delete_kills_every_process_of_the_terminal() {
    let daemon = ws::start(&[]).await;
    let mut socket = create_connect(&daemon, "id=k&cols=80&rows=24", &[EXIT_CONTROL]).await;
    let pid_file = daemon.dir.path().join("bg.pid");
    socket
        .send_bytes(format!("sleep 300 & echo $! > {}\n", pid_file.display()).as_bytes())
        .await;
    common::wait_for("the pid file", WAIT, || {
        std::fs::read_to_string(&pid_file).is_ok_and(|pid| pid.ends_with('\n'))
    })
    .await;
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(daemon.delete("/process/pty/k").await.status.as_u16(), 200);
    common::wait_for("the background sleep to die", WAIT, || {
        !common::process_alive(pid)
    })
    .await;
    let end = socket.read_to_close(WAIT).await;
    let exited: Value = serde_json::from_str(end.texts.last().unwrap()).unwrap();
    assert_eq!(exited["exitCode"], 137);
    assert_eq!(exited["exitReason"], "SIGKILL");
}

#[tokio::test]
async fn bad_requests_are_refused_before_the_upgrade() {
    let daemon = ws::start(&[]).await;
    let refused = Socket::try_connect(
        &daemon,
        "/process/pty/create-connect?id=x&cols=0&rows=24",
        &[EXIT_CONTROL],
    )
    .await;
    assert_eq!(refused.err(), Some(400));
    let refused = Socket::try_connect(
        &daemon,
        "/process/pty/create-connect?id=x&cols=80&rows=24",
        &[EXIT_CONTROL, "X-Daytona-Pty-Envs~not-base64!"],
    )
    .await;
    assert_eq!(refused.err(), Some(400));
    let socket = create_connect(&daemon, "id=dup", &[EXIT_CONTROL]).await;
    let refused = Socket::try_connect(
        &daemon,
        "/process/pty/create-connect?id=dup",
        &[EXIT_CONTROL],
    )
    .await;
    assert_eq!(refused.err(), Some(409));
    socket.close().await;
}
