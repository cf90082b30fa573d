//! `POST /process/code-run` for JavaScript and TypeScript: argv, env and timeout as for
//! Python, and TypeScript through esbuild and node, with no network at run time.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Daemon, assert_error_shape, which};
use serde_json::{Value, json};

async fn code_run(daemon: &Daemon, body: Value) -> Value {
    let reply = daemon.post_json("/process/code-run", &body).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    reply.json()
}

/// Starts a server whose workloads see `path` as `PATH`.
async fn daemon_with_path(path: &str) -> Daemon {
    Daemon::start_with(Some(json!({
        "sandboxId": "s",
        "user": common::current_user(),
        "env": {"PATH": path},
        "confineWorkloads": false,
    })))
    .await
}

/// Starts a server whose workloads get the test's `PATH`, where node and esbuild are.
async fn daemon() -> Daemon {
    daemon_with_path(&std::env::var("PATH").unwrap()).await
}

fn esbuild_missing() -> bool {
    if which("node").is_none() || which("esbuild").is_none() {
        eprintln!("SKIPPED: node and esbuild are not both installed");
        return true;
    }
    false
}

fn write_script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn javascript_env_and_timeout() {
    if which("node").is_none() {
        eprintln!("SKIPPED: node is not installed");
        return;
    }
    let daemon = daemon().await;
    let result = code_run(
        &daemon,
        json!({"code": "console.log(process.env.GREETING); console.error('to err'); process.exit(3)",
            "language": "javascript", "envs": {"GREETING": "hello"}}),
    )
    .await;
    assert_eq!(result["exitCode"], 3);
    assert_eq!(result["result"], "hello\nto err\n");

    let started = Instant::now();
    let reply = daemon
        .post_json(
            "/process/code-run",
            &json!({"code": "console.log('started'); setTimeout(() => {}, 60000)", "language": "javascript", "timeout": 1}),
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
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn typescript_runs_with_esbuild() {
    if esbuild_missing() {
        return;
    }
    let daemon = daemon().await;
    let code = "import * as os from 'os';\n\
        interface Point { x: number }\n\
        const p: Point = { x: 41 };\n\
        const fs = require('fs');\n\
        console.log(p.x + 1, process.argv.slice(2).join(','), process.env.GREETING, typeof os.cpus, typeof fs.readFileSync);\n\
        console.log(__filename);";
    let result = code_run(
        &daemon,
        json!({"code": code, "language": "typescript", "argv": ["a", "b c"], "envs": {"GREETING": "hi"}}),
    )
    .await;
    assert_eq!(result["exitCode"], 0, "{result}");
    let output = result["result"].as_str().unwrap();
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines[0], "42 a,b c hi function function", "{output}");

    // The compiled file next to the code file is removed with it.
    let compiled = Path::new(lines[1]);
    assert!(compiled.starts_with("/tmp"), "{output}");
    assert!(!compiled.exists(), "{} was left behind", compiled.display());
    assert!(!compiled.with_extension("ts").exists());
}

#[tokio::test]
async fn typescript_top_level_await_runs_as_module() {
    if esbuild_missing() {
        return;
    }
    let daemon = daemon().await;
    let code = "const value: number = await Promise.resolve(7);\n\
        console.log(value, import.meta.url.startsWith('file:'));";
    let result = code_run(&daemon, json!({"code": code, "language": "typescript"})).await;
    assert_eq!(result["exitCode"], 0, "{result}");
    assert_eq!(result["result"], "7 true\n");
}

#[tokio::test]
async fn typescript_errors_point_at_the_source() {
    if esbuild_missing() {
        return;
    }
    let daemon = daemon().await;
    let syntax = code_run(
        &daemon,
        json!({"code": "const x: number = ;", "language": "typescript"}),
    )
    .await;
    assert_eq!(syntax["exitCode"], 1, "{syntax}");
    assert!(
        syntax["result"]
            .as_str()
            .unwrap()
            .contains("Unexpected \";\""),
        "{syntax}"
    );

    let thrown = code_run(
        &daemon,
        json!({"code": "function fail(): never {\n  throw new Error('boom');\n}\n\nfail();", "language": "typescript"}),
    )
    .await;
    assert_eq!(thrown["exitCode"], 1, "{thrown}");
    let output = thrown["result"].as_str().unwrap();
    assert!(output.contains("Error: boom"), "{output}");
    // Source maps put the error at the TypeScript line.
    assert!(output.contains(".ts:2:"), "{output}");
}

#[tokio::test]
async fn typescript_timeout_is_408() {
    if esbuild_missing() {
        return;
    }
    let daemon = daemon().await;
    let reply = daemon
        .post_json(
            "/process/code-run",
            &json!({"code": "const wait: number = 60000;\nconsole.log('started');\nsetTimeout(() => {}, wait);", "language": "typescript", "timeout": 2}),
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

#[tokio::test]
async fn typescript_prefers_esbuild_over_tsx() {
    let bin = tempfile::tempdir().unwrap();
    write_script(
        bin.path(),
        "esbuild",
        "for arg; do case $arg in --outfile=*) echo compiled > \"${arg#--outfile=}\";; esac; done",
    );
    write_script(bin.path(), "node", "echo \"node ran ${2##*.} $3\"");
    write_script(bin.path(), "tsx", "echo tsx ran");
    let daemon = daemon_with_path(&bin.path().display().to_string()).await;
    let result = code_run(
        &daemon,
        json!({"code": "let x: number = 1", "language": "typescript", "argv": ["arg"]}),
    )
    .await;
    assert_eq!(result["result"], "node ran cjs arg\n");
}
