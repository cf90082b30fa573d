//! Server-wide behaviour: info routes, error shapes, the fd 3 listener.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::{Daemon, assert_error_shape};
use hyper::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn version_home_and_work_dir() {
    let daemon = Daemon::start().await;

    let version = daemon.get("/version").await;
    assert_eq!(version.status, StatusCode::OK);
    assert!(version.json()["version"].is_string());

    let home = daemon.get("/user-home-dir").await.json();
    assert_eq!(home["dir"], daemon.home.display().to_string());

    let work_dir = daemon.get("/work-dir").await.json();
    assert_eq!(work_dir["dir"], daemon.home.display().to_string());
}

#[tokio::test]
async fn unknown_route_is_404_error_shape() {
    let daemon = Daemon::start().await;
    let reply = daemon.get("/no/such/route").await;
    assert_error_shape(&reply, 404, "NOT_FOUND", "GET", "/no/such/route");
}

#[tokio::test]
async fn wrong_method_has_error_shape() {
    let daemon = Daemon::start().await;
    let reply = daemon.delete("/process/execute").await;
    assert_error_shape(
        &reply,
        405,
        "METHOD_NOT_ALLOWED",
        "DELETE",
        "/process/execute",
    );
}

#[tokio::test]
async fn malformed_json_is_invalid_request_body() {
    let daemon = Daemon::start().await;
    let reply = daemon
        .send(Method::POST, "/process/execute", common::full("{not json"))
        .await;
    assert_error_shape(
        &reply,
        400,
        "INVALID_REQUEST_BODY",
        "POST",
        "/process/execute",
    );

    let missing_field = daemon
        .post_json("/process/execute", &json!({"cwd": "/"}))
        .await;
    assert_error_shape(
        &missing_field,
        400,
        "INVALID_REQUEST_BODY",
        "POST",
        "/process/execute",
    );

    let wrong_type = daemon
        .post_json(
            "/process/execute",
            &json!({"command": "true", "timeout": "soon"}),
        )
        .await;
    assert_error_shape(
        &wrong_type,
        400,
        "INVALID_REQUEST_BODY",
        "POST",
        "/process/execute",
    );
}

#[tokio::test]
async fn request_bodies_tolerate_unknown_fields() {
    let daemon = Daemon::start().await;
    let result = daemon
        .exec(json!({"command": "echo ok", "someFutureField": {"x": 1}}))
        .await;
    assert_eq!(result["result"], "ok\n");
}

#[tokio::test]
async fn bad_query_is_400_error_shape() {
    let daemon = Daemon::start().await;
    let reply = daemon.delete("/files?path=x&recursive=maybe").await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "DELETE", "/files");
}

/// The sandbox's way of starting the server: fd 3 is a listening socket and the
/// configuration comes in `DAYTONA_DAEMON_CONFIG`, which workloads must not see. Neither must
/// they inherit the listening socket.
#[tokio::test]
async fn inherited_listener_and_config_variable() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let socket = dir.path().join("toolbox.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let listener_fd = listener.as_raw_fd();

    let config = json!({
        "sandboxId": "sandbox-1",
        "user": common::current_user(),
        "env": {"FROM_CREATE": "yes"},
        "confineWorkloads": false,
    });
    let mut command = Command::new(common::BINARY);
    command
        .arg("toolbox")
        .arg("--home")
        .arg(&home)
        .env("DAYTONA_DAEMON_CONFIG", config.to_string())
        .stdin(Stdio::null());
    // SAFETY: dup2 is async-signal-safe and both descriptors are valid in the child.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(listener_fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().unwrap();
    drop(listener);
    let daemon = Daemon::adopt(child, dir, home, socket).await;

    let result = daemon
        .exec(json!({"command": "echo \"[$FROM_CREATE][${DAYTONA_DAEMON_CONFIG-unset}]\""}))
        .await;
    assert_eq!(result["result"], "[yes][unset]\n");

    let descriptors = daemon.exec(json!({"command": "ls /proc/$$/fd"})).await;
    assert_eq!(
        descriptors["result"], "0\n1\n2\n",
        "the workload inherited descriptors beyond standard input, output and error"
    );
}

#[tokio::test]
async fn missing_config_outside_listen_mode_fails() {
    let output = Command::new(common::BINARY)
        .arg("toolbox")
        .env_remove("DAYTONA_DAEMON_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DAYTONA_DAEMON_CONFIG"), "{stderr}");
}

#[tokio::test]
async fn openapi_document_lists_routed_paths() {
    let daemon = Daemon::start().await;
    let reply = daemon.get("/openapi.json").await;
    assert_eq!(reply.status, 200);
    let document = reply.json();
    let paths = document["paths"].as_object().expect("paths");
    for expected in [
        "/process/execute",
        "/files",
        "/files/bulk-download",
        "/env",
        "/work-dir",
    ] {
        assert!(paths.contains_key(expected), "{expected} is not documented");
    }
    for (path, item) in paths {
        for method in ["get", "post", "put", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let method = hyper::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let reply = daemon.send(method.clone(), path, common::empty()).await;
            let text = reply.text();
            assert!(
                !text.contains("no route for"),
                "{method} {path} is documented but not routed: {text}"
            );
        }
    }
}
