//! The code interpreter: contexts (`/process/interpreter/context`) and runs over the
//! WebSocket `GET /process/interpreter/execute`.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, assert_error_shape, process_alive, which};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::UnixStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// How long a run that should end at once may take, worker start included.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts a server with `config` (JSON), whose temporary directory, where it writes the
/// worker script, is inside the test's directory and goes with it.
async fn start(config: Option<Value>) -> Daemon {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // Workloads of another user must reach the home and the script below the directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    let temp = dir.path().join("tmp");
    std::fs::create_dir(&home).unwrap();
    std::fs::create_dir(&temp).unwrap();
    let socket = dir.path().join("toolbox.sock");
    let mut command = std::process::Command::new(common::BINARY);
    command
        .arg("toolbox")
        .arg("--listen")
        .arg(&socket)
        .arg("--home")
        .arg(&home)
        .env("TMPDIR", &temp)
        .stdin(std::process::Stdio::null());
    if let Some(config) = config {
        let path = dir.path().join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        command.arg("--config").arg(path);
    }
    let child = command.spawn().unwrap();
    Daemon::adopt(child, dir, home, socket).await
}

/// Frames of one run, until the server closed.
#[derive(Debug, Default)]
struct Run {
    frames: Vec<Value>,
    close_code: u16,
    close_reason: String,
    /// The subprotocol the server selected.
    protocol: Option<String>,
}

impl Run {
    fn text_of(&self, kind: &str) -> String {
        self.frames
            .iter()
            .filter(|frame| frame["type"] == kind)
            .map(|frame| frame["text"].as_str().unwrap().to_owned())
            .collect()
    }

    fn stdout(&self) -> String {
        self.text_of("stdout")
    }

    fn stderr(&self) -> String {
        self.text_of("stderr")
    }

    fn errors(&self) -> Vec<&Value> {
        self.frames
            .iter()
            .filter(|frame| frame["type"] == "error")
            .collect()
    }

    fn controls(&self) -> Vec<&str> {
        self.frames
            .iter()
            .filter(|frame| frame["type"] == "control")
            .map(|frame| frame["text"].as_str().unwrap())
            .collect()
    }
}

async fn connect(
    daemon: &Daemon,
    protocols: &[&str],
) -> (WebSocketStream<UnixStream>, Option<String>) {
    let stream = UnixStream::connect(&daemon.socket).await.unwrap();
    let mut request = "ws://toolbox/process/interpreter/execute"
        .into_client_request()
        .unwrap();
    if !protocols.is_empty() {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            protocols.join(", ").parse().unwrap(),
        );
    }
    let (socket, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|value| value.to_str().unwrap().to_owned());
    (socket, protocol)
}

/// Sends `request` as the first frame and collects the frames until the close.
async fn run_raw(daemon: &Daemon, request: &str, protocols: &[&str], timeout: Duration) -> Run {
    let (mut socket, protocol) = connect(daemon, protocols).await;
    socket.send(Message::Text(request.into())).await.unwrap();
    let mut run = Run {
        protocol,
        ..Run::default()
    };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no close within {timeout:?}; frames so far: {run:?}"));
        match message {
            Some(Ok(Message::Text(text))) => run.frames.push(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                if let Some(frame) = frame {
                    run.close_code = frame.code.into();
                    run.close_reason = frame.reason.to_string();
                }
                return run;
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => panic!("socket failed: {error}; frames so far: {run:?}"),
            None => panic!("socket ended without a close frame; frames so far: {run:?}"),
        }
    }
}

async fn run(daemon: &Daemon, request: Value) -> Run {
    run_raw(daemon, &request.to_string(), &[], RUN_TIMEOUT).await
}

async fn run_code(daemon: &Daemon, code: &str) -> Run {
    run(daemon, json!({"code": code})).await
}

async fn create_context(daemon: &Daemon, body: Value) -> Value {
    let reply = daemon
        .post_json("/process/interpreter/context", &body)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

async fn list_contexts(daemon: &Daemon) -> Vec<Value> {
    let reply = daemon.get("/process/interpreter/context").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["contexts"].as_array().unwrap().clone()
}

fn python_missing() -> bool {
    if which("python3").is_none() {
        eprintln!("SKIPPED: python3 is not installed");
        return true;
    }
    false
}

#[tokio::test]
async fn default_context_keeps_state() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;

    let first = run_code(&daemon, "x = 41\nprint('set')").await;
    assert_eq!(first.close_code, 1000, "{first:?}");
    assert_eq!(first.stdout(), "set\n");
    assert_eq!(first.controls(), ["completed"]);

    let second = run_code(&daemon, "print(x + 1)").await;
    assert_eq!(second.stdout(), "42\n");
    assert!(second.errors().is_empty(), "{second:?}");
}

#[tokio::test]
async fn frames_have_all_five_keys() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    let result = run_code(
        &daemon,
        "import sys\nprint('out')\nprint('err', file=sys.stderr)\n1/0",
    )
    .await;
    assert!(result.frames.len() >= 4, "{result:?}");
    for frame in &result.frames {
        let object = frame.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            ["name", "text", "traceback", "type", "value"],
            "{frame}"
        );
        assert!(object.values().all(Value::is_string), "{frame}");
    }
}

#[tokio::test]
async fn stdout_stderr_and_error() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    let result = run_code(
        &daemon,
        "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\n1/0",
    )
    .await;
    assert_eq!(result.close_code, 1000);
    assert_eq!(result.stdout(), "to out\n");
    assert_eq!(result.stderr(), "to err\n");
    let errors = result.errors();
    assert_eq!(errors.len(), 1, "{result:?}");
    assert_eq!(errors[0]["name"], "ZeroDivisionError");
    assert_eq!(errors[0]["value"], "division by zero");
    let traceback = errors[0]["traceback"].as_str().unwrap();
    assert!(traceback.contains("1/0"), "{traceback}");
    assert!(!traceback.contains("repl_worker"), "{traceback}");
    // The error arrives after the output that preceded it, and the run still completes.
    let error_at = result
        .frames
        .iter()
        .position(|f| f["type"] == "error")
        .unwrap();
    let out_at = result
        .frames
        .iter()
        .position(|f| f["type"] == "stdout")
        .unwrap();
    assert!(out_at < error_at);
    assert_eq!(result.controls(), ["completed"]);
}

#[tokio::test]
async fn syntax_error_is_reported() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    let result = run_code(&daemon, "def f(:\n    pass").await;
    let errors = result.errors();
    assert_eq!(errors.len(), 1, "{result:?}");
    assert_eq!(errors[0]["name"], "SyntaxError");
    assert_eq!(result.close_code, 1000);
}

#[tokio::test]
async fn child_process_output_arrives() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    let result = run_code(
        &daemon,
        "import os, subprocess\nprint('before', flush=True)\nos.system('echo from-shell')\nsubprocess.run(['sh', '-c', 'echo from-sh-err >&2'])\nprint('after')",
    )
    .await;
    assert_eq!(result.stdout(), "before\nfrom-shell\nafter\n");
    assert_eq!(result.stderr(), "from-sh-err\n");
}

#[tokio::test]
async fn stdin_is_empty() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    let result = run_code(&daemon, "import sys\nprint(repr(sys.stdin.read()))").await;
    assert_eq!(result.stdout(), "''\n");
}

#[tokio::test]
async fn envs_apply_to_one_run() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    let value = "quote\" $HOME `id` \\ end\nline";
    let with_env = run(
        &daemon,
        json!({"code": "import os, sys\nsys.stdout.write(os.environ['TRICKY'])", "envs": {"TRICKY": value}}),
    )
    .await;
    assert_eq!(with_env.stdout(), value);

    let after = run_code(&daemon, "import os\nprint(os.environ.get('TRICKY'))").await;
    assert_eq!(after.stdout(), "None\n");

    let invalid = run(&daemon, json!({"code": "1", "envs": {"A-B": "x"}})).await;
    assert_eq!(invalid.close_code, 1007, "{invalid:?}");
    assert!(invalid.close_reason.contains("A-B"), "{invalid:?}");
}

#[tokio::test]
async fn contexts_are_isolated() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    let first = create_context(&daemon, json!({})).await;
    let second = create_context(&daemon, json!({"language": "python"})).await;
    let first_id = first["id"].as_str().unwrap();
    let second_id = second["id"].as_str().unwrap();

    run(
        &daemon,
        json!({"code": "secret = 'one'", "contextId": first_id}),
    )
    .await;
    run(
        &daemon,
        json!({"code": "secret = 'two'", "contextId": second_id}),
    )
    .await;
    let read_first = run(
        &daemon,
        json!({"code": "print(secret)", "contextId": first_id}),
    )
    .await;
    let read_second = run(
        &daemon,
        json!({"code": "print(secret)", "contextId": second_id}),
    )
    .await;
    assert_eq!(read_first.stdout(), "one\n");
    assert_eq!(read_second.stdout(), "two\n");

    let default = run_code(&daemon, "print(secret)").await;
    assert_eq!(default.errors()[0]["name"], "NameError", "{default:?}");
}

#[tokio::test]
async fn context_create_list_and_delete() {
    let daemon = start(None).await;
    let cwd = daemon.dir.path().join("project");
    std::fs::create_dir(&cwd).unwrap();

    let context = create_context(&daemon, json!({"cwd": cwd.display().to_string()})).await;
    assert_eq!(context["cwd"], cwd.display().to_string());
    assert_eq!(context["language"], "python");
    assert_eq!(context["active"], false);
    assert!(
        context["createdAt"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z'))
    );
    let id = context["id"].as_str().unwrap();

    let listed = list_contexts(&daemon).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id);

    let deleted = daemon
        .delete(&format!("/process/interpreter/context/{id}"))
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert!(deleted.json()["message"].is_string());
    assert!(list_contexts(&daemon).await.is_empty());

    let again = daemon
        .delete(&format!("/process/interpreter/context/{id}"))
        .await;
    let path = format!("/process/interpreter/context/{id}");
    assert_error_shape(&again, 404, "NOT_FOUND", "DELETE", &path);
}

#[tokio::test]
async fn default_context_is_not_listed_nor_deletable() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    run_code(&daemon, "x = 1").await;
    assert!(list_contexts(&daemon).await.is_empty());
    let reply = daemon.delete("/process/interpreter/context/default").await;
    assert_error_shape(
        &reply,
        400,
        "BAD_REQUEST",
        "DELETE",
        "/process/interpreter/context/default",
    );
}

#[tokio::test]
async fn context_requests_are_checked() {
    let daemon = start(None).await;
    let path = "/process/interpreter/context";
    let missing = daemon
        .post_json(path, &json!({"cwd": "/definitely/not/here"}))
        .await;
    assert_error_shape(&missing, 400, "BAD_REQUEST", "POST", path);
    let ruby = daemon.post_json(path, &json!({"language": "ruby"})).await;
    assert_error_shape(&ruby, 400, "BAD_REQUEST", "POST", path);
    assert!(ruby.json()["message"].as_str().unwrap().contains("ruby"));
}

#[tokio::test]
async fn context_cwd_and_worker_process() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    let cwd = daemon.dir.path().join("work");
    std::fs::create_dir(&cwd).unwrap();
    std::fs::write(cwd.join("helper_module.py"), "VALUE = 7\n").unwrap();
    let context = create_context(&daemon, json!({"cwd": cwd.display().to_string()})).await;
    let id = context["id"].as_str().unwrap();

    let result = run(
        &daemon,
        json!({"code": "import os, sys, helper_module\nprint(os.getcwd())\nprint(helper_module.VALUE)\nprint(os.getpid())\nprint(os.path.abspath(sys.argv[0]))", "contextId": id}),
    )
    .await;
    let stdout = result.stdout();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], cwd.display().to_string(), "{result:?}");
    assert_eq!(lines[1], "7");
    let pid: u32 = lines[2].parse().unwrap();
    assert_ne!(pid, daemon.pid());

    // The worker script is read-only and outside the user's home.
    let script = std::path::Path::new(lines[3]);
    assert!(!script.starts_with(&daemon.home), "{}", script.display());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(script).unwrap().permissions());
    assert_eq!(mode & 0o222, 0, "script mode {mode:o}");

    let listed = list_contexts(&daemon).await;
    assert_eq!(listed[0]["active"], true);

    // Deleting the context kills its worker.
    daemon
        .delete(&format!("/process/interpreter/context/{id}"))
        .await;
    common::wait_for("the worker to exit", Duration::from_secs(10), || {
        !process_alive(pid)
    })
    .await;
}

#[tokio::test]
async fn timeout_interrupts_and_keeps_state() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    run_code(&daemon, "counter = 5").await;

    let started = Instant::now();
    let result = run(
        &daemon,
        json!({"code": "import time\nprint('sleeping', flush=True)\ntime.sleep(60)", "timeout": 2}),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(result.close_code, 4008, "{result:?}");
    assert!(result.close_reason.contains("kept its state"), "{result:?}");
    assert_eq!(result.stdout(), "sleeping\n");
    // No control frame: the TypeScript SDK would take one for success.
    assert!(result.controls().is_empty(), "{result:?}");
    assert!(result.errors().is_empty(), "{result:?}");
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_millis(3500),
        "timeout enforced after {elapsed:?}"
    );

    let after = run_code(&daemon, "print(counter)").await;
    assert_eq!(after.stdout(), "5\n", "{after:?}");
}

#[tokio::test]
async fn timeout_kills_child_processes() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    let marker = daemon.dir.path().join("child.pid");
    let code = format!(
        "import subprocess\np = subprocess.Popen(['sleep', '60'])\nopen({:?}, 'w').write(str(p.pid))\np.wait()",
        marker.display().to_string()
    );
    let result = run(&daemon, json!({"code": code, "timeout": 1})).await;
    assert_eq!(result.close_code, 4008, "{result:?}");
    let pid: u32 = std::fs::read_to_string(&marker).unwrap().parse().unwrap();
    common::wait_for("the child to exit", Duration::from_secs(10), || {
        !process_alive(pid)
    })
    .await;
}

#[tokio::test]
async fn ignored_interrupt_restarts_the_interpreter() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    let context = create_context(&daemon, json!({})).await;
    let id = context["id"].as_str().unwrap();
    run(&daemon, json!({"code": "kept = 1", "contextId": id})).await;

    let started = Instant::now();
    let result = run(
        &daemon,
        json!({"code": "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)", "contextId": id, "timeout": 1}),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(result.close_code, 4008, "{result:?}");
    let errors = result.errors();
    assert_eq!(errors.len(), 1, "{result:?}");
    assert_eq!(errors[0]["name"], "InterpreterRestarted");
    assert!(errors[0]["value"].as_str().unwrap().contains("lost"));
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");

    let listed = list_contexts(&daemon).await;
    assert_eq!(listed[0]["restarted"], true);
    assert_eq!(listed[0]["restartCount"], 1);
    assert_eq!(listed[0]["active"], true);

    let after = run(&daemon, json!({"code": "print(kept)", "contextId": id})).await;
    assert_eq!(after.errors()[0]["name"], "NameError", "{after:?}");
}

#[tokio::test]
async fn interrupt_that_kills_the_worker_is_a_timeout() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    let result = run(
        &daemon,
        json!({"code": "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_DFL)\ntime.sleep(60)", "timeout": 1}),
    )
    .await;
    assert_eq!(result.close_code, 4008, "{result:?}");
    assert_eq!(
        result.errors()[0]["name"],
        "InterpreterRestarted",
        "{result:?}"
    );
    let after = run_code(&daemon, "print('alive')").await;
    assert_eq!(after.stdout(), "alive\n");
}

#[tokio::test]
async fn worker_exit_is_reported_and_recovered() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    run_code(&daemon, "y = 2").await;
    let result = run_code(&daemon, "import os\nprint('bye', flush=True)\nos._exit(3)").await;
    assert_eq!(result.close_code, 1000, "{result:?}");
    assert_eq!(result.stdout(), "bye\n");
    let errors = result.errors();
    assert_eq!(errors.len(), 1, "{result:?}");
    assert_eq!(errors[0]["name"], "InterpreterExited");
    assert!(
        errors[0]["value"].as_str().unwrap().contains("exit code 3"),
        "{result:?}"
    );

    let after = run_code(&daemon, "print('alive')").await;
    assert_eq!(after.stdout(), "alive\n");
}

#[tokio::test]
async fn keyboard_interrupt_from_code_is_an_error() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    let result = run_code(&daemon, "raise KeyboardInterrupt").await;
    assert_eq!(result.close_code, 1000, "{result:?}");
    assert_eq!(result.errors()[0]["name"], "KeyboardInterrupt");
    assert_eq!(result.controls(), ["interrupted"]);
}

#[tokio::test]
async fn runs_in_one_context_take_turns() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    run_code(&daemon, "import time\nlog = []").await;
    let first = run_code(
        &daemon,
        "log.append('first start')\ntime.sleep(1)\nlog.append('first end')",
    );
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        run_code(&daemon, "log.append('second')\nprint(log)").await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.close_code, 1000);
    assert_eq!(
        second.stdout(),
        "['first start', 'first end', 'second']\n",
        "{second:?}"
    );
}

#[tokio::test]
async fn timeout_covers_the_wait_for_earlier_runs() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    run_code(&daemon, "waited = False").await;
    let long = run(
        &daemon,
        json!({"code": "import time\ntime.sleep(3)", "timeout": 10}),
    );
    let short = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let result = run(&daemon, json!({"code": "waited = True", "timeout": 1})).await;
        (result, started.elapsed())
    };
    let (long, (short, elapsed)) = tokio::join!(long, short);
    assert_eq!(long.close_code, 1000, "{long:?}");
    assert_eq!(short.close_code, 4008, "{short:?}");
    assert!(short.close_reason.contains("waiting"), "{short:?}");
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    // The run that timed out while waiting never ran.
    let after = run_code(&daemon, "print(waited)").await;
    assert_eq!(after.stdout(), "False\n");
}

#[tokio::test]
async fn delete_during_run_ends_the_run() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    let context = create_context(&daemon, json!({})).await;
    let id = context["id"].as_str().unwrap().to_owned();
    let running = run(
        &daemon,
        json!({"code": "import time\nprint('started', flush=True)\ntime.sleep(60)", "contextId": id}),
    );
    let queued = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        run(&daemon, json!({"code": "print('never')", "contextId": id})).await
    };
    let delete = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        daemon
            .delete(&format!("/process/interpreter/context/{id}"))
            .await
    };
    let started = Instant::now();
    let (running, queued, deleted) = tokio::join!(running, queued, delete);
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert!(started.elapsed() < Duration::from_secs(20));

    assert_eq!(running.close_code, 1000, "{running:?}");
    assert_eq!(running.stdout(), "started\n");
    assert_eq!(running.errors()[0]["name"], "ContextDeleted", "{running:?}");
    assert_eq!(queued.stdout(), "");
    assert_eq!(queued.errors()[0]["name"], "ContextDeleted", "{queued:?}");
}

#[tokio::test]
async fn unknown_context_closes_4004() {
    let daemon = start(None).await;
    let result = run(&daemon, json!({"code": "1", "contextId": "nope"})).await;
    assert_eq!(result.close_code, 4004, "{result:?}");
    assert_eq!(result.errors()[0]["name"], "ContextNotFound");
}

#[tokio::test]
async fn invalid_request_closes_1007() {
    let daemon = start(None).await;
    let result = run_raw(&daemon, "not json", &[], RUN_TIMEOUT).await;
    assert_eq!(result.close_code, 1007, "{result:?}");
    assert!(
        result.close_reason.starts_with("invalid request"),
        "{result:?}"
    );
}

#[tokio::test]
async fn offered_subprotocol_is_echoed() {
    if python_missing() {
        return;
    }
    let daemon = start(None).await;
    let result = run_raw(
        &daemon,
        &json!({"code": "print(1)"}).to_string(),
        &["X-Daytona-SDK-Version~0.218.0"],
        RUN_TIMEOUT,
    )
    .await;
    assert_eq!(
        result.protocol.as_deref(),
        Some("X-Daytona-SDK-Version~0.218.0")
    );
    assert_eq!(result.stdout(), "1\n");
}

#[tokio::test]
async fn missing_python_is_reported() {
    let daemon = start(Some(json!({
        "sandboxId": "s",
        "user": common::current_user(),
        "env": {"PATH": "/definitely/not/here"},
        "confineWorkloads": false,
    })))
    .await;
    let result = run_code(&daemon, "print(1)").await;
    assert_eq!(result.close_code, 1011, "{result:?}");
    assert_eq!(result.errors()[0]["name"], "InterpreterStartError");
    assert!(
        result.errors()[0]["value"]
            .as_str()
            .unwrap()
            .contains("python3"),
        "{result:?}"
    );
}

/// Starts a server as root whose confined workloads run as `nobody` (uid 65534).
async fn daemon_as_nobody() -> Option<Daemon> {
    if !common::is_root() {
        eprintln!("SKIPPED: switching users needs root");
        return None;
    }
    let daemon = start(Some(json!({
        "sandboxId": "s",
        "user": "nobody",
        "confineWorkloads": true,
    })))
    .await;
    std::os::unix::fs::chown(&daemon.home, Some(65534), Some(65534)).unwrap();
    Some(daemon)
}

#[tokio::test]
async fn confined_worker_runs_as_the_sandbox_user() {
    // Workloads get the default PATH, where the account `nobody` can run the system's Python.
    if !["/usr/local/bin/python3", "/usr/bin/python3"]
        .iter()
        .any(|path| std::path::Path::new(path).exists())
    {
        eprintln!("SKIPPED: python3 is not installed in /usr/bin or /usr/local/bin");
        return;
    }
    let Some(daemon) = daemon_as_nobody().await else {
        return;
    };
    let first = run_code(
        &daemon,
        "import os\nuid = os.getuid()\nprint(uid, os.getcwd())",
    )
    .await;
    assert_eq!(
        first.stdout(),
        format!("65534 {}\n", daemon.home.display()),
        "{first:?}"
    );

    // The worker cannot change the script that later contexts run.
    let tamper = run_code(
        &daemon,
        "import sys\ntry:\n    open(sys.argv[0], 'a').write('# changed')\n    print('changed')\nexcept OSError as error:\n    print(type(error).__name__)",
    )
    .await;
    assert_eq!(tamper.stdout(), "PermissionError\n", "{tamper:?}");

    // The interrupt reaches a worker of another user, and the state survives it.
    let timed_out = run(
        &daemon,
        json!({"code": "import time\ntime.sleep(60)", "timeout": 1}),
    )
    .await;
    assert_eq!(timed_out.close_code, 4008, "{timed_out:?}");
    let after = run_code(&daemon, "print(uid)").await;
    assert_eq!(after.stdout(), "65534\n");
}
