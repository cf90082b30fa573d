//! `/process/session/*`: sessions, their commands, logs and input.

mod common;
mod ws;

use std::time::{Duration, Instant};

use common::{Daemon, assert_error_shape, process_alive, wait_for};
use serde_json::{Value, json};
use ws::Socket;

async fn create(daemon: &Daemon, id: &str) {
    let reply = daemon
        .post_json("/process/session", &json!({"sessionId": id}))
        .await;
    assert_eq!(reply.status.as_u16(), 201, "{}", reply.text());
}

/// Runs a command to its end and returns the 200 response.
async fn exec(daemon: &Daemon, session: &str, body: Value) -> Value {
    let reply = daemon
        .post_json(&format!("/process/session/{session}/exec"), &body)
        .await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    reply.json()
}

async fn exec_sync(daemon: &Daemon, session: &str, command: &str) -> Value {
    exec(daemon, session, json!({"command": command})).await
}

/// Starts a command in the background and returns its id.
async fn exec_async(daemon: &Daemon, session: &str, command: &str) -> String {
    let reply = daemon
        .post_json(
            &format!("/process/session/{session}/exec"),
            &json!({"command": command, "runAsync": true}),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 202, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    body["cmdId"].as_str().unwrap().to_owned()
}

async fn command(daemon: &Daemon, session: &str, id: &str) -> Value {
    let reply = daemon
        .get(&format!("/process/session/{session}/command/{id}"))
        .await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    reply.json()
}

async fn wait_exit(daemon: &Daemon, session: &str, id: &str, timeout: Duration) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let body = command(daemon, session, id).await;
        if let Some(code) = body["exitCode"].as_i64() {
            return code;
        }
        assert!(Instant::now() < deadline, "command {id} still runs: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn logs(daemon: &Daemon, session: &str, id: &str) -> Value {
    let reply = daemon
        .get(&format!("/process/session/{session}/command/{id}/logs"))
        .await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    assert!(reply.header("content-type").starts_with("application/json"));
    reply.json()
}

#[tokio::test]
async fn session_lifecycle_and_shapes() {
    let daemon = ws::start(&[]).await;
    create(&daemon, "s1").await;

    let again = daemon
        .post_json("/process/session", &json!({"sessionId": "s1"}))
        .await;
    assert_error_shape(&again, 409, "CONFLICT", "POST", "/process/session");

    let session = daemon.get("/process/session/s1").await.json();
    assert_eq!(session, json!({"sessionId": "s1", "commands": []}));
    let list = daemon.get("/process/session").await.json();
    assert_eq!(list, json!([{"sessionId": "s1", "commands": []}]));

    let result = exec_sync(&daemon, "s1", "echo hi").await;
    let id = result["cmdId"].as_str().unwrap();
    let session = daemon.get("/process/session/s1").await.json();
    assert_eq!(
        session["commands"],
        json!([{"id": id, "command": "echo hi", "exitCode": 0}])
    );

    let deleted = daemon.delete("/process/session/s1").await;
    assert_eq!(deleted.status.as_u16(), 204, "{}", deleted.text());
    let gone = daemon.get("/process/session/s1").await;
    assert_error_shape(&gone, 404, "NOT_FOUND", "GET", "/process/session/s1");
    let gone = daemon.delete("/process/session/s1").await;
    assert_eq!(gone.status.as_u16(), 404);
}

#[tokio::test]
async fn sync_command_returns_output_and_exit_code() {
    let daemon = ws::start(&[]).await;
    create(&daemon, "s").await;
    let result = exec_sync(&daemon, "s", "echo out; echo err >&2; exit 3").await;
    assert_eq!(result["exitCode"], 3);
    assert!(result["exitCode"].is_i64());
    assert_eq!(result["stdout"], "out\n");
    assert_eq!(result["stderr"], "err\n");
    assert_eq!(result["output"], "out\nerr\n");

    let missing = exec_sync(&daemon, "s", "definitely-not-a-binary").await;
    assert_eq!(missing["exitCode"], 127);
    assert!(missing["stderr"].as_str().unwrap().contains("not found"));
}

#[tokio::test]
async fn sync_commands_carry_directory_and_exported_environment() {
    let daemon = ws::start(&[]).await;
    create(&daemon, "s").await;
    exec_sync(
        &daemon,
        "s",
        "mkdir -p /tmp/session-cwd-test && cd /tmp/session-cwd-test",
    )
    .await;
    exec_sync(&daemon, "s", "export GREETING='hello world'").await;
    let result = exec_sync(&daemon, "s", "pwd; echo \"$GREETING\"").await;
    assert_eq!(result["output"], "/tmp/session-cwd-test\nhello world\n");

    // `exit` in the command still keeps its state.
    let result = exec_sync(&daemon, "s", "cd /; unset GREETING; exit 4").await;
    assert_eq!(result["exitCode"], 4);
    let result = exec_sync(&daemon, "s", "pwd; echo \"[${GREETING-unset}]\"").await;
    assert_eq!(result["output"], "/\n[unset]\n");

    // Another session has its own state.
    create(&daemon, "other").await;
    let result = exec_sync(&daemon, "other", "pwd").await;
    assert_eq!(result["output"], format!("{}\n", daemon.home.display()));
}

#[tokio::test]
async fn async_commands_run_side_by_side_from_the_state_at_their_start() {
    let daemon = ws::start(&[]).await;
    create(&daemon, "s").await;
    exec_sync(&daemon, "s", "cd /tmp && export MARK=before").await;

    let started = Instant::now();
    let first = exec_async(&daemon, "s", "sleep 2; echo \"first $MARK $(pwd)\"").await;
    let second = exec_async(&daemon, "s", "sleep 2; echo second").await;
    // A sync command does not wait for the background ones either.
    let quick = exec_sync(&daemon, "s", "echo quick").await;
    assert_eq!(quick["output"], "quick\n");
    assert!(started.elapsed() < Duration::from_secs(2));

    let running = command(&daemon, "s", &first).await;
    assert!(running["exitCode"].is_null(), "{running}");
    assert_eq!(running["command"], "sleep 2; echo \"first $MARK $(pwd)\"");

    assert_eq!(
        wait_exit(&daemon, "s", &first, Duration::from_secs(10)).await,
        0
    );
    assert_eq!(
        wait_exit(&daemon, "s", &second, Duration::from_secs(10)).await,
        0
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(3500),
        "two 2-second commands took {elapsed:?}: they ran one after the other"
    );
    assert_eq!(
        logs(&daemon, "s", &first).await["stdout"],
        "first before /tmp\n"
    );

    // Background commands do not change the session's state.
    let id = exec_async(&daemon, "s", "cd / && export MARK=after").await;
    wait_exit(&daemon, "s", &id, Duration::from_secs(10)).await;
    let result = exec_sync(&daemon, "s", "echo \"$MARK $(pwd)\"").await;
    assert_eq!(result["output"], "before /tmp\n");
}

#[tokio::test]
async fn logs_are_binary_safe_and_add_nothing() {
    let daemon = ws::start(&[]).await;
    create(&daemon, "s").await;
    let id = exec_async(&daemon, "s", "printf 'no newline'; printf 'e1\\ne2' >&2").await;
    wait_exit(&daemon, "s", &id, Duration::from_secs(10)).await;
    let body = logs(&daemon, "s", &id).await;
    assert_eq!(body["stdout"], "no newline");
    assert_eq!(body["stderr"], "e1\ne2");
    assert_eq!(body["output"], "no newlinee1\ne2");

    // Bytes that look like markers or NULs come through the stream unchanged.
    let id = exec_async(&daemon, "s", "printf 'a\\000b\\377c'").await;
    wait_exit(&daemon, "s", &id, Duration::from_secs(10)).await;
    let mut socket = Socket::connect(
        &daemon,
        &format!("/process/session/s/command/{id}/logs?follow=true"),
        &[],
    )
    .await;
    let received = socket.read_to_close(Duration::from_secs(10)).await;
    assert_eq!(received.close.as_ref().map(|c| c.0), Some(1000));
    let (stdout, stderr) = ws::demux(&received.binary);
    assert_eq!(stdout, b"a\x00b\xffc");
    assert!(stderr.is_empty());
}

#[tokio::test]
async fn follow_streams_until_the_command_ends() {
    let daemon = ws::start(&[]).await;
    create(&daemon, "s").await;
    let id = exec_async(
        &daemon,
        "s",
        "echo one; sleep 1; echo two >&2; sleep 1; echo three",
    )
    .await;
    let started = Instant::now();
    let mut socket = Socket::connect(
        &daemon,
        &format!("/process/session/s/command/{id}/logs?follow=true"),
        &[],
    )
    .await;
    let first = socket.read_until("one", Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "output came late"
    );
    let rest = socket.read_to_close(Duration::from_secs(10)).await;
    assert_eq!(rest.close.as_ref().map(|c| c.0), Some(1000), "{rest:?}");
    let mut all = first.binary;
    all.extend(rest.binary);
    let (stdout, stderr) = ws::demux(&all);
    assert_eq!(String::from_utf8(stdout).unwrap(), "one\nthree\n");
    assert_eq!(String::from_utf8(stderr).unwrap(), "two\n");
    assert_eq!(command(&daemon, "s", &id).await["exitCode"], 0);

    // Without the upgrade, follow=true returns the JSON logs.
    let body = daemon
        .get(&format!("/process/session/s/command/{id}/logs?follow=true"))
        .await
        .json();
    assert_eq!(body["stdout"], "one\nthree\n");
}

#[tokio::test]
async fn input_reaches_a_background_command() {
    let daemon = ws::start(&[]).await;
    create(&daemon, "s").await;
    let id = exec_async(&daemon, "s", "read line; echo \"got:$line\"").await;
    let reply = daemon
        .post_json(
            &format!("/process/session/s/command/{id}/input"),
            &json!({"data": "hello\n"}),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 204, "{}", reply.text());
    assert_eq!(
        wait_exit(&daemon, "s", &id, Duration::from_secs(10)).await,
        0
    );
    let body = logs(&daemon, "s", &id).await;
    // The input is echoed into the log, then the command's output follows.
    assert_eq!(body["stdout"], "hello\ngot:hello\n");

    let reply = daemon
        .post_json(
            &format!("/process/session/s/command/{id}/input"),
            &json!({"data": "late\n"}),
        )
        .await;
    assert_error_shape(
        &reply,
        410,
        "COMMAND_ALREADY_COMPLETED",
        "POST",
        &format!("/process/session/s/command/{id}/input"),
    );

    let quiet = daemon
        .post_json(
            "/process/session/s/exec",
            &json!({"command": "read line; echo \"got:$line\"", "runAsync": true, "suppressInputEcho": true}),
        )
        .await
        .json();
    let quiet = quiet["cmdId"].as_str().unwrap();
    daemon
        .post_json(
            &format!("/process/session/s/command/{quiet}/input"),
            &json!({"data": "secret\n"}),
        )
        .await;
    wait_exit(&daemon, "s", quiet, Duration::from_secs(10)).await;
    assert_eq!(logs(&daemon, "s", quiet).await["stdout"], "got:secret\n");
}

/// Per-command variables arrive verbatim and only in their command.
#[tokio::test]
async fn per_command_env_is_verbatim_and_scoped() {
    let daemon = ws::start(&[]).await;
    create(&daemon, "s").await;
    let value = "quote\" 'single' $HOME `id` \\ new\nline";
    let result = exec(
        &daemon,
        "s",
        json!({"command": "printf %s \"$TRICKY\"", "envs": {"TRICKY": value}}),
    )
    .await;
    assert_eq!(result["stdout"], value);

    let result = exec_sync(&daemon, "s", "echo \"[${TRICKY-unset}]\"").await;
    assert_eq!(result["stdout"], "[unset]\n");

    // A session variable overridden for one command keeps its session value afterwards.
    exec_sync(&daemon, "s", "export MODE=session").await;
    let result = exec(
        &daemon,
        "s",
        json!({"command": "echo $MODE", "envs": {"MODE": "command"}}),
    )
    .await;
    assert_eq!(result["stdout"], "command\n");
    assert_eq!(
        exec_sync(&daemon, "s", "echo $MODE").await["stdout"],
        "session\n"
    );

    let bad = daemon
        .post_json(
            "/process/session/s/exec",
            &json!({"command": "true", "envs": {"BAD-NAME": "x"}}),
        )
        .await;
    assert_error_shape(&bad, 400, "BAD_REQUEST", "POST", "/process/session/s/exec");
}

/// An ended command's exit code and logs stay readable for the time to live
/// (shortened here), and are forgotten after it.
#[tokio::test]
async fn ended_commands_stay_readable_for_their_time_to_live() {
    let daemon = ws::start(&[("DAYTONA_SESSION_COMMAND_TTL", "3")]).await;
    create(&daemon, "s").await;
    let result = exec_sync(&daemon, "s", "echo kept; exit 7").await;
    let id = result["cmdId"].as_str().unwrap().to_owned();

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(command(&daemon, "s", &id).await["exitCode"], 7);
    assert_eq!(logs(&daemon, "s", &id).await["stdout"], "kept\n");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let path = format!("/process/session/s/command/{id}");
    let gone = daemon.get(&path).await;
    assert_error_shape(&gone, 404, "PROCESS_NOT_FOUND", "GET", &path);
    // The session itself stays.
    assert_eq!(daemon.get("/process/session/s").await.status.as_u16(), 200);
}

#[tokio::test]
async fn output_flood_is_truncated_with_a_notice() {
    let daemon = ws::start_with_config(
        Some(
            json!({"sandboxId": "s", "user": "", "outputLimit": 10000, "confineWorkloads": false}),
        ),
        &[],
    )
    .await;
    create(&daemon, "s").await;
    let result = exec_sync(
        &daemon,
        "s",
        "head -c 1000000 /dev/zero | tr '\\0' x; echo done",
    )
    .await;
    assert_eq!(result["exitCode"], 0);
    let stdout = result["stdout"].as_str().unwrap();
    assert!(stdout.len() < 11000, "{} bytes", stdout.len());
    assert!(stdout.starts_with("xxxx"));
    assert!(
        stdout.ends_with("[output truncated: the log of this command is limited to 10000 bytes]\n"),
        "{}",
        &stdout[stdout.len() - 100..]
    );
}

#[tokio::test]
async fn deleting_a_session_kills_its_processes() {
    let daemon = ws::start(&[]).await;
    create(&daemon, "s").await;
    let pid_file = daemon.dir.path().join("pid");
    exec_async(
        &daemon,
        "s",
        &format!("sleep 300 & echo $! > {}; wait", pid_file.display()),
    )
    .await;
    wait_for("the pid file", Duration::from_secs(10), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|pid| pid.ends_with('\n'))
    })
    .await;
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(process_alive(pid));
    assert_eq!(
        daemon.delete("/process/session/s").await.status.as_u16(),
        204
    );
    wait_for("the session's sleep to die", Duration::from_secs(8), || {
        !process_alive(pid)
    })
    .await;
}

#[tokio::test]
async fn entrypoint_session_is_empty_without_an_entrypoint() {
    let daemon = ws::start(&[]).await;
    let session = daemon.get("/process/session/entrypoint").await;
    assert_eq!(session.status.as_u16(), 200);
    assert_eq!(
        session.json(),
        json!({"sessionId": "entrypoint", "commands": []})
    );
    let logs = daemon.get("/process/session/entrypoint/logs").await;
    assert_eq!(
        logs.json(),
        json!({"output": "", "stdout": "", "stderr": ""})
    );
    let mut socket =
        Socket::connect(&daemon, "/process/session/entrypoint/logs?follow=true", &[]).await;
    let received = socket.read_to_close(Duration::from_secs(5)).await;
    assert_eq!(received.close.map(|c| c.0), Some(1000));
    assert!(received.binary.is_empty());
}

#[tokio::test]
async fn unknown_session_and_command_are_404() {
    let daemon = ws::start(&[]).await;
    let reply = daemon
        .post_json("/process/session/nope/exec", &json!({"command": "true"}))
        .await;
    assert_error_shape(
        &reply,
        404,
        "NOT_FOUND",
        "POST",
        "/process/session/nope/exec",
    );
    create(&daemon, "s").await;
    let reply = daemon.get("/process/session/s/command/nope/logs").await;
    assert_error_shape(
        &reply,
        404,
        "PROCESS_NOT_FOUND",
        "GET",
        "/process/session/s/command/nope/logs",
    );
    let reply = daemon
        .post_json("/process/session", &json!({"sessionId": ""}))
        .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/process/session");
}

/// A restarted toolbox server finds its sessions, their ended commands and their state.
#[tokio::test]
async fn sessions_survive_a_restart_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut daemon = ws::start_in(dir, &state, None, &[]).await;
    create(&daemon, "s").await;
    let result = exec_sync(&daemon, "s", "cd /tmp && export KEPT=yes && echo before").await;
    let id = result["cmdId"].as_str().unwrap().to_owned();
    let pid_file = daemon.dir.path().join("sleep.pid");
    let running = exec_async(
        &daemon,
        "s",
        &format!("sleep 60 & echo $! > {}; wait", pid_file.display()),
    )
    .await;
    wait_for("the pid file", Duration::from_secs(10), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|pid| pid.ends_with('\n'))
    })
    .await;
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // Stop the server and start another on the same state directory.
    let dir = std::mem::replace(&mut daemon.dir, tempfile::tempdir().unwrap());
    drop(daemon);
    let daemon = ws::start_in(dir, &state, None, &[]).await;
    assert_eq!(command(&daemon, "s", &id).await["exitCode"], 0);
    assert_eq!(logs(&daemon, "s", &id).await["stdout"], "before\n");
    // The command that ran lost its exit status with the old server.
    assert_eq!(command(&daemon, "s", &running).await["exitCode"], -1);
    let result = exec_sync(&daemon, "s", "echo \"$KEPT $(pwd)\"").await;
    assert_eq!(result["stdout"], "yes /tmp\n");

    // The new server still knows the process group of the command that ran.
    assert!(process_alive(pid));
    assert_eq!(
        daemon.delete("/process/session/s").await.status.as_u16(),
        204
    );
    wait_for(
        "the old command's sleep to die",
        Duration::from_secs(5),
        || !process_alive(pid),
    )
    .await;
}

#[tokio::test]
async fn openapi_documents_session_and_pty_routes() {
    let daemon = ws::start(&[]).await;
    let document = daemon.get("/openapi.json").await.json();
    let paths = document["paths"].as_object().unwrap();
    for expected in [
        "/process/session",
        "/process/session/entrypoint",
        "/process/session/entrypoint/logs",
        "/process/session/{sessionId}",
        "/process/session/{sessionId}/exec",
        "/process/session/{sessionId}/command/{commandId}",
        "/process/session/{sessionId}/command/{commandId}/logs",
        "/process/session/{sessionId}/command/{commandId}/input",
        "/process/pty",
        "/process/pty/create-connect",
        "/process/pty/{sessionId}",
        "/process/pty/{sessionId}/connect",
        "/process/pty/{sessionId}/resize",
    ] {
        assert!(paths.contains_key(expected), "{expected} is not documented");
    }
    let exec = &paths["/process/session/{sessionId}/exec"]["post"]["responses"];
    assert!(exec.get("200").is_some());
    assert!(exec.get("202").is_some());
    assert!(
        paths["/process/session"]["post"]["responses"]
            .get("201")
            .is_some()
    );
    assert!(
        paths["/process/pty"]["post"]["responses"]
            .get("201")
            .is_some()
    );
}
