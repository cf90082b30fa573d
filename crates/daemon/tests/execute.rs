//! `POST /process/execute`.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, assert_error_shape, process_alive, wait_for};
use serde_json::{Value, json};

/// Exit code and combined output of a command.
async fn run(daemon: &Daemon, command: &str) -> (i64, String) {
    let result = daemon.exec(json!({ "command": command })).await;
    (
        result["exitCode"].as_i64().unwrap(),
        result["result"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn response_has_strict_types() {
    let daemon = Daemon::start().await;
    let result = daemon.exec(json!({"command": "echo hi"})).await;
    assert!(result["exitCode"].is_i64());
    assert_eq!(result["exitCode"], 0);
    assert_eq!(result["result"], "hi\n");
    assert_eq!(result["stdout"], "hi\n");
    assert_eq!(result["stderr"], "");
}

#[tokio::test]
async fn missing_binary_is_127_with_message() {
    let daemon = Daemon::start().await;
    let (exit_code, output) = run(&daemon, "definitely-not-a-binary --version").await;
    assert_eq!(exit_code, 127);
    assert!(
        output.contains("definitely-not-a-binary: command not found"),
        "{output}"
    );
}

#[tokio::test]
async fn streams_are_separate_and_combined_in_order() {
    let daemon = Daemon::start().await;
    let result = daemon
        .exec(json!({"command": "sh -c 'echo to-out; echo to-err 1>&2; exit 3'"}))
        .await;
    assert_eq!(result["exitCode"], 3);
    assert_eq!(result["stdout"], "to-out\n");
    assert_eq!(result["stderr"], "to-err\n");
    assert_eq!(result["result"], "to-out\nto-err\n");

    let reversed = daemon
        .exec(json!({"command": "echo first >&2; echo second"}))
        .await;
    assert_eq!(reversed["result"], "first\nsecond\n");
}

#[tokio::test]
async fn alternating_writes_keep_their_order() {
    let daemon = Daemon::start().await;
    let command =
        "for i in 1 2 3; do echo out$i; echo more$i; sleep 0.05; echo err$i >&2; sleep 0.05; done";
    let result = daemon.exec(json!({ "command": command })).await;
    let expected: String = (1..=3)
        .map(|i| format!("out{i}\nmore{i}\nerr{i}\n"))
        .collect();
    assert_eq!(result["result"], expected);
    assert_eq!(result["stdout"], "out1\nmore1\nout2\nmore2\nout3\nmore3\n");
    assert_eq!(result["stderr"], "err1\nerr2\nerr3\n");
}

#[tokio::test]
async fn heredoc_runs() {
    let daemon = Daemon::start().await;
    assert_eq!(
        run(&daemon, "cat <<'EOF'\nhello\nEOF").await,
        (0, "hello\n".into())
    );
}

#[tokio::test]
async fn trailing_comment_runs() {
    let daemon = Daemon::start().await;
    assert_eq!(
        run(&daemon, "echo hi # a comment").await,
        (0, "hi\n".into())
    );
}

#[tokio::test]
async fn crlf_line_endings_run() {
    let daemon = Daemon::start().await;
    assert_eq!(
        run(
            &daemon,
            "cd /tmp\r\necho one\r\ncat <<'EOF'\r\nhello\r\nEOF\r\npwd\r\n"
        )
        .await,
        (0, "one\nhello\n/tmp\n".into())
    );
}

#[tokio::test]
async fn unterminated_quote_fails_with_2() {
    let daemon = Daemon::start().await;
    let started = Instant::now();
    let (exit_code, output) = run(&daemon, "echo 'unterminated").await;
    assert_eq!(exit_code, 2);
    assert!(output.contains("unexpected EOF"), "{output}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn command_longer_than_arg_max_runs() {
    let daemon = Daemon::start().await;
    // One assignment of a 1 MiB literal, then a line that proves the shell read all of it.
    let length = 1024 * 1024;
    let command = format!("x='{}'\necho ${{#x}}", "y".repeat(length));
    let (exit_code, output) = run(&daemon, &command).await;
    assert_eq!(exit_code, 0, "{output}");
    assert_eq!(output, format!("{length}\n"));
}

#[tokio::test]
async fn standard_input_ends_after_the_command() {
    let daemon = Daemon::start().await;
    let result = daemon
        .exec(json!({"command": "cat; echo done", "timeout": 10}))
        .await;
    assert_eq!(result["result"], "done\n");
}

#[tokio::test]
async fn env_precedence_and_clean_base() {
    let daemon = Daemon::start_with(Some(json!({
        "sandboxId": "s",
        "user": common::current_user(),
        "env": {"FOO": "create", "BAR": "create", "LANG": "en_US.UTF-8"},
        "confineWorkloads": false,
    })))
    .await;

    let result = daemon
        .exec(json!({
            "command": "echo \"[$FOO][$BAR][$LANG][$TERM][${DAEMON_TEST_MARKER-unset}]\"",
            "envs": {"FOO": "request"},
        }))
        .await;
    assert_eq!(
        result["result"],
        "[request][create][en_US.UTF-8][xterm-256color][unset]\n"
    );

    let base = daemon
        .exec(json!({"command": "echo \"$HOME|$USER|$LOGNAME|$SHELL\"; echo \"$PATH\""}))
        .await;
    let text = base["result"].as_str().unwrap();
    let user = common::current_user();
    assert!(
        text.starts_with(&format!("{}|{user}|{user}|/", daemon.home.display())),
        "{text}"
    );
    assert!(text.contains("/usr/bin"), "{text}");
}

#[tokio::test]
async fn env_values_arrive_verbatim() {
    let daemon = Daemon::start().await;
    let value = "it's \"quoted\"\n$HOME `date` \\ end";
    let result = daemon
        .exec(json!({"command": "printf '%s' \"$V\"", "envs": {"V": value}}))
        .await;
    assert_eq!(result["result"], value);
}

#[tokio::test]
async fn default_lang_is_c_utf8() {
    let daemon = Daemon::start().await;
    assert_eq!(run(&daemon, "echo $LANG").await.1, "C.UTF-8\n");
}

#[tokio::test]
async fn invalid_env_name_is_400() {
    let daemon = Daemon::start().await;
    for name in ["1ABC", "A-B", "A=B", ""] {
        let reply = daemon
            .post_json(
                "/process/execute",
                &json!({"command": "true", "envs": {name: "x"}}),
            )
            .await;
        assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/process/execute");
    }
}

#[tokio::test]
async fn cwd_defaults_to_work_dir_and_resolves_relative() {
    let daemon = Daemon::start().await;
    std::fs::create_dir(daemon.home.join("sub")).unwrap();
    let home = daemon.home.display().to_string();

    assert_eq!(run(&daemon, "pwd").await.1, format!("{home}\n"));
    let relative = daemon.exec(json!({"command": "pwd", "cwd": "sub"})).await;
    assert_eq!(relative["result"], format!("{home}/sub\n"));
    let absolute = daemon.exec(json!({"command": "pwd", "cwd": "/tmp"})).await;
    assert_eq!(absolute["result"], "/tmp\n");
}

#[tokio::test]
async fn missing_cwd_is_400() {
    let daemon = Daemon::start().await;
    let reply = daemon
        .post_json(
            "/process/execute",
            &json!({"command": "pwd", "cwd": "/no/such/dir"}),
        )
        .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/process/execute");
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("/no/such/dir")
    );
}

#[tokio::test]
async fn signal_exit_is_128_plus_signal() {
    let daemon = Daemon::start().await;
    assert_eq!(run(&daemon, "kill -KILL $$").await.0, 137);
    assert_eq!(run(&daemon, "kill -TERM $$").await.0, 143);
}

#[tokio::test]
async fn timeout_kills_process_group() {
    let daemon = Daemon::start().await;
    let started = Instant::now();
    let reply = daemon
        .post_json(
            "/process/execute",
            &json!({"command": "sleep 300 & echo \"child=$!\"; sleep 300", "timeout": 1}),
        )
        .await;
    let elapsed = started.elapsed();
    assert_error_shape(
        &reply,
        408,
        "PROCESS_EXECUTION_TIMEOUT",
        "POST",
        "/process/execute",
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");

    let body = reply.json();
    assert!(body["message"].as_str().unwrap().contains("1 second"));
    let output = body["output"].as_str().unwrap();
    let child: u32 = output
        .trim()
        .strip_prefix("child=")
        .unwrap_or_else(|| panic!("unexpected output {output:?}"))
        .parse()
        .unwrap();
    wait_for(
        "the background child to die",
        Duration::from_secs(5),
        || !process_alive(child),
    )
    .await;
}

#[tokio::test]
async fn client_disconnect_kills_the_command() {
    let daemon = Daemon::start().await;
    let pid_file = daemon.home.join("pid");
    let body = json!({"command": "echo $$ > pid.tmp; mv pid.tmp pid; sleep 300"});
    let request = daemon.post_json("/process/execute", &body);
    let cancelled = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            _ = request => panic!("the command ended early"),
            () = wait_for("the command to start", Duration::from_secs(10), || pid_file.exists()) => {}
        }
    });
    cancelled.await.unwrap();

    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for("the command to be killed", Duration::from_secs(5), || {
        !process_alive(pid)
    })
    .await;
}

#[tokio::test]
async fn background_process_holding_output_does_not_block() {
    let daemon = Daemon::start().await;
    let started = Instant::now();
    let result = daemon
        .exec(json!({"command": "sleep 300 & echo \"child=$!\""}))
        .await;
    assert!(started.elapsed() < Duration::from_secs(3));
    let output = result["result"].as_str().unwrap();
    let child: i32 = output
        .trim()
        .strip_prefix("child=")
        .unwrap()
        .parse()
        .unwrap();

    // The background process outlives the command, as it would in a terminal.
    assert!(process_alive(child as u32));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), nix::sys::signal::SIGKILL).unwrap();
}

#[tokio::test]
async fn output_over_limit_is_truncated_with_marker() {
    let daemon = Daemon::start_with(Some(json!({
        "sandboxId": "s",
        "user": common::current_user(),
        "outputLimit": 1000,
        "confineWorkloads": false,
    })))
    .await;
    let result = daemon
        .exec(json!({"command": "head -c 5000 /dev/zero | tr '\\0' a; echo done >&2"}))
        .await;
    let expected = format!(
        "{}\n[output truncated: 4005 bytes omitted]\n",
        "a".repeat(1000)
    );
    assert_eq!(result["result"], expected);
    assert_eq!(result["exitCode"], 0);
    assert_eq!(result["stderr"], "done\n");
}

#[tokio::test]
async fn huge_output_keeps_memory_bounded() {
    let daemon = Daemon::start_with(Some(json!({
        "sandboxId": "s",
        "user": common::current_user(),
        "outputLimit": 1024 * 1024,
        "confineWorkloads": false,
    })))
    .await;
    let result = daemon
        .exec(json!({"command": "head -c 300000000 /dev/zero; echo end"}))
        .await;
    let output = result["result"].as_str().unwrap();
    assert!(
        output.ends_with("[output truncated: 298951428 bytes omitted]\n"),
        "{}",
        &output[output.len() - 80..]
    );
    let peak = daemon.peak_rss_kib();
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
}

#[tokio::test]
async fn many_commands_run_at_once() {
    let daemon = Daemon::start().await;
    let started = Instant::now();
    let runs = (0..8).map(|_| daemon.exec(json!({"command": "sleep 1; echo ok"})));
    let results: Vec<Value> = futures_util::future::join_all(runs).await;
    assert!(results.iter().all(|result| result["result"] == "ok\n"));
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
}

#[tokio::test]
async fn invalid_utf8_output_is_replaced() {
    let daemon = Daemon::start().await;
    let result = daemon.exec(json!({"command": "printf 'a\\377b'"})).await;
    assert_eq!(result["result"], "a\u{fffd}b");
    assert_eq!(result["exitCode"], 0);
}
