//! The language server routes `/lsp/*`, with pylsp and typescript-language-server when they
//! are installed on the host (found through the test's `PATH`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, assert_error_shape, process_alive, which};
use serde_json::{Value, json};

const PYTHON_SOURCE: &str = "import os\n\
\n\
class Greeter:\n    def greet(self, name):\n        return 'hi ' + name\n\
\n\
def helper_function(x):\n    return x * 2\n\
\n\
value = helper_function(3)\n\
os.pa\n";

const TYPESCRIPT_SOURCE: &str = "export interface Point { x: number; y: number }\n\
export class Shape { area(): number { return 0 } }\n\
export function distance(a: Point, b: Point): number { return Math.hypot(a.x - b.x, a.y - b.y) }\n\
const p: Point = { x: 1, y: 2 };\n\
p.\n";

/// Starts a server whose workloads get the test's `PATH`, where the language servers are.
async fn daemon() -> Daemon {
    Daemon::start_with(Some(json!({
        "sandboxId": "s",
        "user": common::current_user(),
        "env": {"PATH": std::env::var("PATH").unwrap()},
        "confineWorkloads": false,
    })))
    .await
}

fn project(daemon: &Daemon, file: &str, source: &str) -> String {
    let project = daemon.home.join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join(file), source).unwrap();
    project.display().to_string()
}

async fn post_ok(daemon: &Daemon, path: &str, body: Value) -> Value {
    let reply = daemon.post_json(path, &body).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    if reply.body.is_empty() {
        Value::Null
    } else {
        reply.json()
    }
}

async fn get_ok(daemon: &Daemon, path: &str) -> Value {
    let reply = daemon.get(path).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    reply.json()
}

fn query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={}", encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn names(symbols: &Value) -> Vec<String> {
    symbols
        .as_array()
        .unwrap()
        .iter()
        .map(|symbol| symbol["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Checks every symbol against the shape the Python client requires.
fn assert_symbol_shape(symbols: &Value) {
    for symbol in symbols.as_array().unwrap() {
        assert!(symbol["name"].is_string(), "{symbol}");
        assert!(symbol["kind"].is_u64(), "{symbol}");
        assert!(
            symbol["location"]["uri"]
                .as_str()
                .unwrap()
                .starts_with("file:///")
        );
        for end in ["start", "end"] {
            assert!(
                symbol["location"]["range"][end]["line"].is_u64(),
                "{symbol}"
            );
            assert!(
                symbol["location"]["range"][end]["character"].is_u64(),
                "{symbol}"
            );
        }
    }
}

/// Finds the process ids of the daemon's children whose command line contains `needle`.
fn children_running(daemon: &Daemon, needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let parent: u32 = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse().ok())
            .unwrap_or(0);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if parent == daemon.pid() && String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test]
async fn requests_before_start_are_rejected() {
    let daemon = daemon().await;
    let project = project(&daemon, "main.py", PYTHON_SOURCE);
    let uri = format!("file://{project}/main.py");
    let document = json!({"languageId": "python", "pathToProject": project, "uri": uri});

    for path in ["/lsp/did-open", "/lsp/did-close"] {
        let reply = daemon.post_json(path, &document).await;
        assert_error_shape(&reply, 400, "LSP_SERVER_NOT_INITIALIZED", "POST", path);
    }
    let reply = daemon
        .post_json(
            "/lsp/stop",
            &json!({"languageId": "python", "pathToProject": project}),
        )
        .await;
    assert_error_shape(
        &reply,
        400,
        "LSP_SERVER_NOT_INITIALIZED",
        "POST",
        "/lsp/stop",
    );
    let reply = daemon
        .post_json(
            "/lsp/completions",
            &json!({"languageId": "python", "pathToProject": project, "uri": uri,
                "position": {"line": 0, "character": 0}}),
        )
        .await;
    assert_error_shape(
        &reply,
        400,
        "LSP_SERVER_NOT_INITIALIZED",
        "POST",
        "/lsp/completions",
    );
    let symbols = format!(
        "/lsp/document-symbols?{}",
        query(&[
            ("languageId", "python"),
            ("pathToProject", &project),
            ("uri", &uri)
        ])
    );
    let reply = daemon.get(&symbols).await;
    assert_error_shape(
        &reply,
        400,
        "LSP_SERVER_NOT_INITIALIZED",
        "GET",
        "/lsp/document-symbols",
    );
    let workspace = format!(
        "/lsp/workspacesymbols?{}",
        query(&[
            ("query", "x"),
            ("languageId", "python"),
            ("pathToProject", &project)
        ])
    );
    let reply = daemon.get(&workspace).await;
    assert_error_shape(
        &reply,
        400,
        "LSP_SERVER_NOT_INITIALIZED",
        "GET",
        "/lsp/workspacesymbols",
    );
}

#[tokio::test]
async fn start_checks_language_and_project() {
    let daemon = daemon().await;
    let project = project(&daemon, "main.py", PYTHON_SOURCE);
    let ruby = daemon
        .post_json(
            "/lsp/start",
            &json!({"languageId": "ruby", "pathToProject": project}),
        )
        .await;
    assert_error_shape(&ruby, 400, "BAD_REQUEST", "POST", "/lsp/start");
    let missing = daemon
        .post_json(
            "/lsp/start",
            &json!({"languageId": "python", "pathToProject": "/definitely/not/here"}),
        )
        .await;
    assert_error_shape(&missing, 400, "BAD_REQUEST", "POST", "/lsp/start");
}

#[tokio::test]
async fn missing_server_program_is_named() {
    let daemon = Daemon::start_with(Some(json!({
        "sandboxId": "s",
        "user": common::current_user(),
        "env": {"PATH": "/definitely/not/here"},
        "confineWorkloads": false,
    })))
    .await;
    let project = project(&daemon, "main.py", PYTHON_SOURCE);
    for (language, program) in [
        ("python", "pylsp"),
        ("typescript", "typescript-language-server"),
    ] {
        let reply = daemon
            .post_json(
                "/lsp/start",
                &json!({"languageId": language, "pathToProject": project}),
            )
            .await;
        assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/lsp/start");
        let message = reply.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains(program), "{message}");
    }
}

#[tokio::test]
async fn python_server_answers() {
    if which("pylsp").is_none() {
        eprintln!("SKIPPED: pylsp is not installed");
        return;
    }
    let daemon = daemon().await;
    let project = project(&daemon, "main.py", PYTHON_SOURCE);
    let server = json!({"languageId": "python", "pathToProject": project});
    post_ok(&daemon, "/lsp/start", server.clone()).await;
    // A second start finds the running server.
    post_ok(&daemon, "/lsp/start", server.clone()).await;

    // The Python server is pylsp, never the TypeScript server, running in the project.
    let pids = children_running(&daemon, "pylsp");
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert!(children_running(&daemon, "typescript-language-server").is_empty());
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", pids[0])).unwrap();
    assert_eq!(cwd, Path::new(&project));

    let uri = format!("file://{project}/main.py");
    let document = json!({"languageId": "python", "pathToProject": project, "uri": uri});
    post_ok(&daemon, "/lsp/did-open", document.clone()).await;

    let symbols = get_ok(
        &daemon,
        &format!(
            "/lsp/document-symbols?{}",
            query(&[
                ("languageId", "python"),
                ("pathToProject", &project),
                ("uri", &uri)
            ])
        ),
    )
    .await;
    assert_symbol_shape(&symbols);
    let found = names(&symbols);
    for expected in ["Greeter", "greet", "helper_function", "value"] {
        assert!(found.iter().any(|name| name == expected), "{found:?}");
    }
    let helper = symbols
        .as_array()
        .unwrap()
        .iter()
        .find(|symbol| symbol["name"] == "helper_function")
        .unwrap();
    assert_eq!(helper["kind"], 12);
    assert_eq!(helper["location"]["uri"], uri);
    assert_eq!(helper["location"]["range"]["start"]["line"], 6);

    let workspace = get_ok(
        &daemon,
        &format!(
            "/lsp/workspacesymbols?{}",
            query(&[
                ("query", "helper"),
                ("languageId", "python"),
                ("pathToProject", &project)
            ])
        ),
    )
    .await;
    assert_symbol_shape(&workspace);
    assert_eq!(names(&workspace), ["helper_function"]);

    let completions = post_ok(
        &daemon,
        "/lsp/completions",
        json!({"languageId": "python", "pathToProject": project, "uri": uri,
            "position": {"line": 10, "character": 5}, "context": {"triggerKind": 1}}),
    )
    .await;
    assert!(completions["isIncomplete"].is_boolean());
    let items = completions["items"].as_array().unwrap();
    assert!(
        items.iter().any(|item| item["label"] == "path"),
        "{completions}"
    );
    for item in items {
        assert!(item["label"].is_string());
        if let Some(documentation) = item.get("documentation") {
            assert!(documentation.is_object(), "{item}");
        }
    }

    post_ok(&daemon, "/lsp/did-close", document).await;
    post_ok(&daemon, "/lsp/stop", server.clone()).await;
    common::wait_for("pylsp to exit", Duration::from_secs(10), || {
        !process_alive(pids[0])
    })
    .await;
    let after = daemon.post_json("/lsp/stop", &server).await;
    assert_error_shape(
        &after,
        400,
        "LSP_SERVER_NOT_INITIALIZED",
        "POST",
        "/lsp/stop",
    );
}

#[tokio::test]
async fn relative_uris_and_unopened_documents() {
    if which("pylsp").is_none() {
        eprintln!("SKIPPED: pylsp is not installed");
        return;
    }
    let daemon = daemon().await;
    let project = project(&daemon, "main.py", PYTHON_SOURCE);
    std::fs::create_dir_all(Path::new(&project).join("pkg dir")).unwrap();
    std::fs::write(
        Path::new(&project).join("pkg dir/other.py"),
        "def other_function():\n    pass\n",
    )
    .unwrap();
    post_ok(
        &daemon,
        "/lsp/start",
        json!({"languageId": "python", "pathToProject": project}),
    )
    .await;

    // `file://` plus a path relative to the project, never opened: the server still returns its symbols.
    let symbols = get_ok(
        &daemon,
        &format!(
            "/lsp/document-symbols?{}",
            query(&[
                ("languageId", "python"),
                ("pathToProject", &project),
                ("uri", "file://pkg dir/other.py")
            ])
        ),
    )
    .await;
    assert_eq!(names(&symbols), ["other_function"]);
    assert_eq!(
        symbols[0]["location"]["uri"],
        format!("file://{project}/pkg dir/other.py")
    );

    let missing = daemon
        .post_json(
            "/lsp/did-open",
            &json!({"languageId": "python", "pathToProject": project, "uri": "file:///definitely/not/here.py"}),
        )
        .await;
    assert_error_shape(&missing, 404, "FILE_NOT_FOUND", "POST", "/lsp/did-open");
}

#[tokio::test]
async fn typescript_server_answers() {
    if which("typescript-language-server").is_none() {
        eprintln!("SKIPPED: typescript-language-server is not installed");
        return;
    }
    let daemon = daemon().await;
    let project = project(&daemon, "index.ts", TYPESCRIPT_SOURCE);
    let server = json!({"languageId": "typescript", "pathToProject": project});
    post_ok(&daemon, "/lsp/start", server.clone()).await;
    assert!(children_running(&daemon, "pylsp").is_empty());
    let pids = children_running(&daemon, "typescript-language-server");
    assert_eq!(pids.len(), 1, "{pids:?}");

    let uri = format!("file://{project}/index.ts");
    let document = json!({"languageId": "typescript", "pathToProject": project, "uri": uri});
    post_ok(&daemon, "/lsp/did-open", document.clone()).await;

    let symbols = get_ok(
        &daemon,
        &format!(
            "/lsp/document-symbols?{}",
            query(&[
                ("languageId", "typescript"),
                ("pathToProject", &project),
                ("uri", &uri)
            ])
        ),
    )
    .await;
    assert_symbol_shape(&symbols);
    let found = names(&symbols);
    for expected in ["Point", "Shape", "area", "distance", "p"] {
        assert!(found.iter().any(|name| name == expected), "{found:?}");
    }

    let workspace = get_ok(
        &daemon,
        &format!(
            "/lsp/workspacesymbols?{}",
            query(&[
                ("query", "dist"),
                ("languageId", "typescript"),
                ("pathToProject", &project)
            ])
        ),
    )
    .await;
    assert_symbol_shape(&workspace);
    assert!(
        names(&workspace).contains(&"distance".to_owned()),
        "{workspace}"
    );

    let completions = post_ok(
        &daemon,
        "/lsp/completions",
        json!({"languageId": "typescript", "pathToProject": project, "uri": uri,
            "position": {"line": 4, "character": 2},
            "context": {"triggerKind": 2, "triggerCharacter": "."}}),
    )
    .await;
    let labels: Vec<&str> = completions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["label"].as_str().unwrap())
        .collect();
    assert!(labels.contains(&"x"), "{labels:?}");
    assert!(labels.contains(&"y"), "{labels:?}");

    // JavaScript in the same project shares the TypeScript server.
    post_ok(
        &daemon,
        "/lsp/start",
        json!({"languageId": "javascript", "pathToProject": project}),
    )
    .await;
    assert_eq!(
        children_running(&daemon, "typescript-language-server"),
        pids
    );

    post_ok(&daemon, "/lsp/did-close", document).await;
    post_ok(&daemon, "/lsp/stop", server).await;
    common::wait_for(
        "the TypeScript server to exit",
        Duration::from_secs(10),
        || !process_alive(pids[0]),
    )
    .await;
}

#[tokio::test]
async fn exited_server_needs_a_new_start() {
    if which("pylsp").is_none() {
        eprintln!("SKIPPED: pylsp is not installed");
        return;
    }
    let daemon = daemon().await;
    let project = project(&daemon, "main.py", PYTHON_SOURCE);
    let server = json!({"languageId": "python", "pathToProject": project});
    post_ok(&daemon, "/lsp/start", server.clone()).await;
    let pids = children_running(&daemon, "pylsp");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let uri = format!("file://{project}/main.py");
    let path = format!(
        "/lsp/document-symbols?{}",
        query(&[
            ("languageId", "python"),
            ("pathToProject", &project),
            ("uri", &uri)
        ])
    );
    let mut status = 0;
    for _ in 0..100 {
        status = daemon.get(&path).await.status.as_u16();
        if status == 400 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 400);
    post_ok(&daemon, "/lsp/start", server).await;
    let symbols = get_ok(&daemon, &path).await;
    assert!(names(&symbols).contains(&"Greeter".to_owned()));
}

#[tokio::test]
async fn confined_server_runs_as_the_sandbox_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    if which("pylsp").is_none() {
        eprintln!("SKIPPED: pylsp is not installed");
        return;
    }
    if !common::is_root() {
        eprintln!("SKIPPED: switching users needs root");
        return;
    }
    let runs_as_nobody = std::process::Command::new("pylsp")
        .arg("--version")
        .uid(65534)
        .gid(65534)
        .output()
        .is_ok_and(|output| output.status.success());
    if !runs_as_nobody {
        eprintln!("SKIPPED: the pylsp in PATH cannot run as nobody");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let socket = dir.path().join("toolbox.sock");
    let config = dir.path().join("config.json");
    let config_json = json!({
        "sandboxId": "s",
        "user": "nobody",
        "env": {"PATH": std::env::var("PATH").unwrap()},
        "confineWorkloads": true,
    });
    std::fs::write(&config, config_json.to_string()).unwrap();
    let child = std::process::Command::new(common::BINARY)
        .arg("toolbox")
        .arg("--listen")
        .arg(&socket)
        .arg("--home")
        .arg(&home)
        .arg("--config")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon::adopt(child, dir, home, socket).await;

    let project = project(&daemon, "main.py", PYTHON_SOURCE);
    post_ok(
        &daemon,
        "/lsp/start",
        json!({"languageId": "python", "pathToProject": project}),
    )
    .await;
    let pids = children_running(&daemon, "pylsp");
    assert_eq!(pids.len(), 1, "{pids:?}");
    let owner = std::fs::metadata(format!("/proc/{}", pids[0]))
        .unwrap()
        .uid();
    assert_eq!(owner, 65534);

    let uri = format!("file://{project}/main.py");
    let symbols = get_ok(
        &daemon,
        &format!(
            "/lsp/document-symbols?{}",
            query(&[
                ("languageId", "python"),
                ("pathToProject", &project),
                ("uri", &uri)
            ])
        ),
    )
    .await;
    assert!(names(&symbols).contains(&"Greeter".to_owned()), "{symbols}");
}
