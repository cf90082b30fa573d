//! Workloads and files as the sandbox user, when the daemon runs as root.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};

use common::{Daemon, which};
use hyper::StatusCode;
use serde_json::json;

/// The unprivileged account every Debian image has.
const USER: &str = "nobody";
const UID: u32 = 65534;

/// Starts a server as root whose workloads run as `nobody`, with a home that `nobody` owns.
async fn daemon_as_nobody() -> Option<Daemon> {
    start_as_nobody(false).await
}

async fn start_as_nobody(confine_workloads: bool) -> Option<Daemon> {
    if !common::is_root() {
        eprintln!("SKIPPED: switching users needs root");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    // The workload must be able to reach its home inside the test's directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(UID), Some(UID)).unwrap();
    let socket = dir.path().join("toolbox.sock");
    let config = dir.path().join("config.json");
    let config_json = json!({
        "sandboxId": "s",
        "user": USER,
        "confineWorkloads": confine_workloads,
    });
    std::fs::write(&config, config_json.to_string()).unwrap();

    let child = Command::new(common::BINARY)
        .arg("toolbox")
        .arg("--listen")
        .arg(&socket)
        .arg("--home")
        .arg(&home)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Some(Daemon::adopt(child, dir, home, socket).await)
}

#[tokio::test]
async fn commands_run_as_the_sandbox_user() {
    let Some(daemon) = daemon_as_nobody().await else {
        return;
    };
    let result = daemon
        .exec(json!({"command": "id -u; id -g; echo $USER $HOME; pwd"}))
        .await;
    let home = daemon.home.display();
    assert_eq!(
        result["result"],
        format!("{UID}\n{UID}\n{USER} {home}\n{home}\n")
    );

    let denied = daemon
        .exec(json!({"command": "touch /root/daytona-test"}))
        .await;
    assert_ne!(denied["exitCode"], 0, "the workload could write as root");
}

#[tokio::test]
async fn created_files_belong_to_the_sandbox_user() {
    let Some(daemon) = daemon_as_nobody().await else {
        return;
    };
    let reply = daemon.upload(&[("dir/file.txt", b"content")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    for path in ["dir", "dir/file.txt"] {
        let metadata = std::fs::metadata(daemon.home.join(path)).unwrap();
        assert_eq!((metadata.uid(), metadata.gid()), (UID, UID), "{path}");
    }

    let folder = daemon.post("/files/folder?path=made/here").await;
    assert_eq!(folder.status, StatusCode::CREATED);
    let metadata = std::fs::metadata(daemon.home.join("made/here")).unwrap();
    assert_eq!(metadata.uid(), UID);

    // Replacing a file keeps its owner.
    let root_file = daemon.home.join("root-owned.txt");
    std::fs::write(&root_file, "old").unwrap();
    let reply = daemon.upload(&[("root-owned.txt", b"new")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(std::fs::metadata(&root_file).unwrap().uid(), 0);
}

#[tokio::test]
async fn code_runs_as_the_sandbox_user() {
    if which("python3").is_none() {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let Some(daemon) = daemon_as_nobody().await else {
        return;
    };
    let reply = daemon
        .post_json(
            "/process/code-run",
            &json!({"code": "import os\nprint(os.getuid(), os.stat(__file__).st_uid)", "language": "python"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["result"], format!("{UID} {UID}\n"));
}

#[tokio::test]
async fn confined_workloads_get_seccomp_and_docker_caps() {
    let Some(daemon) = start_as_nobody(true).await else {
        return;
    };
    let status = daemon
        .exec(json!({"command": "grep -E '^(Seccomp|CapBnd|CapEff):' /proc/self/status"}))
        .await;
    let text = status["result"].as_str().unwrap();
    assert!(text.contains("Seccomp:\t2"), "{text}");
    assert!(text.contains("CapBnd:\t00000000a80425fb"), "{text}");
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");

    let unshare = daemon.exec(json!({"command": "unshare -U true"})).await;
    assert_ne!(
        unshare["exitCode"], 0,
        "a confined workload created a user namespace"
    );

    let id = daemon.exec(json!({"command": "id -u"})).await;
    assert_eq!(id["result"], format!("{UID}\n"));
}
