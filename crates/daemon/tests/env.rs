//! `POST /env`.

mod common;

use common::{Daemon, assert_error_shape};
use serde_json::json;

async fn echo(daemon: &Daemon, name: &str) -> String {
    let result = daemon
        .exec(json!({ "command": format!("printf '%s' \"${name}\"") }))
        .await;
    result["result"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn set_applies_to_later_commands() {
    let daemon = Daemon::start().await;
    let reply = daemon
        .post_json(
            "/env",
            &json!({"set": {"GREETING": "hi there", "OTHER": "1"}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let env = reply.json();
    assert_eq!(env["GREETING"], "hi there");
    assert!(env["PATH"].is_string());
    assert_eq!(echo(&daemon, "GREETING").await, "hi there");
}

#[tokio::test]
async fn request_env_still_wins() {
    let daemon = Daemon::start().await;
    daemon
        .post_json("/env", &json!({"set": {"MODE": "sandbox"}}))
        .await;
    let result = daemon
        .exec(json!({"command": "printf '%s' \"$MODE\"", "envs": {"MODE": "request"}}))
        .await;
    assert_eq!(result["result"], "request");
}

#[tokio::test]
async fn unset_and_value_prefix() {
    let daemon = Daemon::start().await;
    daemon
        .post_json(
            "/env",
            &json!({"set": {"A": "keep", "B": "secret:1", "C": "secret:2", "D": "x"}}),
        )
        .await;
    let reply = daemon
        .post_json(
            "/env",
            &json!({"unset": ["D"], "unsetValuePrefix": "secret:", "set": {"C": "secret:3"}}),
        )
        .await;
    let env = reply.json();
    assert_eq!(env["A"], "keep");
    assert!(env.get("B").is_none());
    assert_eq!(env["C"], "secret:3");
    assert!(env.get("D").is_none());
    assert_eq!(echo(&daemon, "B").await, "");
}

#[tokio::test]
async fn invalid_name_changes_nothing() {
    let daemon = Daemon::start().await;
    let reply = daemon
        .post_json("/env", &json!({"set": {"GOOD": "1", "1BAD": "2"}}))
        .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/env");
    assert_eq!(echo(&daemon, "GOOD").await, "");
}
