//! `POST /process/code-run`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Daemon, assert_error_shape, which};
use serde_json::{Value, json};

async fn code_run(daemon: &Daemon, body: Value) -> Value {
    let reply = daemon.post_json("/process/code-run", &body).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    reply.json()
}

/// Starts a server whose workloads see `PATH` = `bin_dir`.
async fn daemon_with_path(bin_dir: &Path) -> Daemon {
    Daemon::start_with(Some(json!({
        "sandboxId": "s",
        "user": common::current_user(),
        "env": {"PATH": bin_dir.display().to_string()},
        "confineWorkloads": false,
    })))
    .await
}

fn write_script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn python_gets_argv_env_and_empty_stdin() {
    if which("python3").is_none() {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let daemon = Daemon::start().await;
    let code = "import os, sys\n\
                print(sys.argv[1:])\n\
                print(os.environ['GREETING'])\n\
                print(repr(sys.stdin.read()))\n\
                print(os.getcwd())\n\
                print(__file__)";
    let result = code_run(
        &daemon,
        json!({"code": code, "language": "python", "argv": ["a", "b c"], "envs": {"GREETING": "hello"}}),
    )
    .await;
    assert_eq!(result["exitCode"], 0);
    let output = result["result"].as_str().unwrap();
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "['a', 'b c']",
            "hello",
            "''",
            &daemon.home.display().to_string()
        ]
    );

    let code_file = Path::new(lines[4]);
    assert!(code_file.starts_with("/tmp"), "{}", code_file.display());
    assert!(!code_file.exists(), "the code file was not removed");
}

#[tokio::test]
async fn python_error_exit_code_and_traceback() {
    if which("python3").is_none() {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let daemon = Daemon::start().await;
    let result = code_run(
        &daemon,
        json!({"code": "print('before')\nraise SystemExit(4)", "language": "python"}),
    )
    .await;
    assert_eq!(result["exitCode"], 4);
    assert_eq!(result["result"], "before\n");

    let failed = code_run(&daemon, json!({"code": "1/0", "language": "python"})).await;
    assert_eq!(failed["exitCode"], 1);
    assert!(
        failed["result"]
            .as_str()
            .unwrap()
            .contains("ZeroDivisionError")
    );
}

#[tokio::test]
async fn chart_lines_become_artifacts() {
    if which("python3").is_none() {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let daemon = Daemon::start().await;
    let code = r#"import json
print("before")
print("dtn_artifact_k39fd2:" + json.dumps({"type": "chart", "value": {"type": "line", "title": "T", "elements": []}}))
print("after")"#;
    let result = code_run(&daemon, json!({"code": code, "language": "python"})).await;
    assert_eq!(result["result"], "before\nafter\n");
    assert_eq!(
        result["artifacts"]["charts"],
        json!([{"type": "line", "title": "T", "elements": []}])
    );
}

#[tokio::test]
async fn no_charts_give_empty_list() {
    if which("python3").is_none() {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let daemon = Daemon::start().await;
    let result = code_run(&daemon, json!({"code": "print(1)", "language": "python"})).await;
    assert_eq!(result["artifacts"], json!({"charts": []}));
}

#[tokio::test]
async fn javascript_runs_with_node() {
    if which("node").is_none() {
        eprintln!("SKIPPED: node is not installed");
        return;
    }
    let daemon = Daemon::start().await;
    let result = code_run(
        &daemon,
        json!({"code": "console.log(process.argv.slice(2).join(','), 6 * 7)", "language": "javascript", "argv": ["x", "y"]}),
    )
    .await;
    assert_eq!(result["exitCode"], 0);
    assert_eq!(result["result"], "x,y 42\n");
}

#[tokio::test]
async fn typescript_without_runner_is_400() {
    let bin = tempfile::tempdir().unwrap();
    write_script(bin.path(), "node", "echo v20.1.0");
    let daemon = daemon_with_path(bin.path()).await;
    let reply = daemon
        .post_json(
            "/process/code-run",
            &json!({"code": "let x: number = 1", "language": "typescript"}),
        )
        .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/process/code-run");
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("TypeScript")
    );
}

#[tokio::test]
async fn typescript_prefers_tsx() {
    let bin = tempfile::tempdir().unwrap();
    write_script(
        bin.path(),
        "tsx",
        "file=$1; echo \"tsx ran ${file##*.} $2\"",
    );
    let daemon = daemon_with_path(bin.path()).await;
    let result = code_run(
        &daemon,
        json!({"code": "let x: number = 1", "language": "typescript", "argv": ["arg"]}),
    )
    .await;
    assert_eq!(result["result"], "tsx ran ts arg\n");
}

#[tokio::test]
async fn typescript_with_new_node_strips_types() {
    let bin = tempfile::tempdir().unwrap();
    write_script(
        bin.path(),
        "node",
        "if [ \"$1\" = --version ]; then echo v22.6.0; else echo \"node $1\"; fi",
    );
    let daemon = daemon_with_path(bin.path()).await;
    let result = code_run(
        &daemon,
        json!({"code": "let x: number = 1", "language": "typescript"}),
    )
    .await;
    assert_eq!(result["result"], "node --experimental-strip-types\n");
}

#[tokio::test]
async fn missing_interpreter_is_exit_minus_one() {
    let bin = tempfile::tempdir().unwrap();
    let daemon = daemon_with_path(bin.path()).await;
    let result = code_run(&daemon, json!({"code": "print(1)", "language": "python"})).await;
    assert_eq!(result["exitCode"], -1);
    assert!(result["result"].as_str().unwrap().contains("python3"));
}

#[tokio::test]
async fn unknown_language_is_400() {
    let daemon = Daemon::start().await;
    let reply = daemon
        .post_json(
            "/process/code-run",
            &json!({"code": "puts 1", "language": "ruby"}),
        )
        .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/process/code-run");
}

#[tokio::test]
async fn code_run_timeout_is_408() {
    if which("python3").is_none() {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let daemon = Daemon::start().await;
    let reply = daemon
        .post_json(
            "/process/code-run",
            &json!({"code": "import time\nprint('started', flush=True)\ntime.sleep(60)", "language": "python", "timeout": 1}),
        )
        .await;
    assert_error_shape(
        &reply,
        408,
        "PROCESS_EXECUTION_TIMEOUT",
        "POST",
        "/process/code-run",
    );
    assert_eq!(reply.json()["output"], "started\n");
}
