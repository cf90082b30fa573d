//! Pins the JSON shapes the official SDKs read. The published Python client rejects a response
//! with a required field missing or null, or with a float where it expects an integer.

use std::collections::BTreeMap;

use daytona_wire::api::{ListSandboxes, Sandbox, SandboxState, Snapshot, SnapshotState};
use daytona_wire::toolbox::{ExecuteResponse, FileInfo};
use daytona_wire::{ErrorBody, ErrorSource};
use serde_json::Value;

fn sandbox() -> Sandbox {
    Sandbox {
        id: "id-1".into(),
        organization_id: "org-1".into(),
        name: "name-1".into(),
        snapshot: Some("daytona-default".into()),
        user: "daytona".into(),
        env: BTreeMap::new(),
        labels: BTreeMap::from([("code-toolbox-language".into(), "python".into())]),
        public: false,
        network_block_all: false,
        kvm: false,
        network_allow_list: None,
        domain_allow_list: None,
        outbound_proxy_url: None,
        otel_endpoint_override: None,
        target: "local".into(),
        cpu: 1,
        gpu: 0,
        spot: false,
        spot_evicted_at: None,
        queue_timed_out_at: None,
        gpu_type: None,
        memory: 1,
        disk: 3,
        state: SandboxState::Started,
        desired_state: Some("started".into()),
        error_reason: None,
        recoverable: None,
        warm_pool_id: None,
        backup_state: None,
        backup_created_at: None,
        auto_stop_interval: 15,
        auto_pause_interval: 0,
        auto_archive_interval: 10080,
        auto_delete_interval: -1,
        auto_destroy_at: None,
        queue_timeout: None,
        volumes: Vec::new(),
        build_info: None,
        created_at: "2026-01-01T00:00:00.000Z".into(),
        updated_at: "2026-01-01T00:00:00.000Z".into(),
        last_activity_at: None,
        sandbox_class: "container".into(),
        daemon_version: None,
        runner_id: None,
        linked_sandbox_id: None,
        toolbox_proxy_url: "http://127.0.0.1:3000/toolbox".into(),
    }
}

fn object(value: &Value) -> &serde_json::Map<String, Value> {
    value.as_object().expect("a JSON object")
}

/// Fields the published Python `Sandbox` model requires, with their JSON types.
const SANDBOX_REQUIRED: [(&str, &str); 15] = [
    ("id", "string"),
    ("organizationId", "string"),
    ("name", "string"),
    ("user", "string"),
    ("env", "object"),
    ("labels", "object"),
    ("public", "bool"),
    ("networkBlockAll", "bool"),
    ("kvm", "bool"),
    ("target", "string"),
    ("cpu", "int"),
    ("gpu", "int"),
    ("memory", "int"),
    ("disk", "int"),
    ("toolboxProxyUrl", "string"),
];

fn has_type(value: &Value, kind: &str) -> bool {
    match kind {
        "string" => value.is_string(),
        "object" => value.is_object(),
        "bool" => value.is_boolean(),
        "int" => value.is_i64() || value.is_u64(),
        _ => unreachable!("unknown kind {kind}"),
    }
}

#[test]
fn sandbox_required_fields_typed() {
    let json = serde_json::to_value(sandbox()).unwrap();
    for (field, kind) in SANDBOX_REQUIRED {
        let value = object(&json)
            .get(field)
            .unwrap_or_else(|| panic!("{field} missing"));
        assert!(has_type(value, kind), "{field} is {value}, not {kind}");
    }
}

#[test]
fn sandbox_state_is_snake_case() {
    let json = serde_json::to_value(sandbox()).unwrap();
    assert_eq!(json["state"], "started");
    assert_eq!(
        serde_json::to_value(SandboxState::BuildFailed).unwrap(),
        "build_failed"
    );
    assert_eq!(
        SandboxState::parse("pending_build"),
        Some(SandboxState::PendingBuild)
    );
    assert_eq!(SandboxState::parse("nope"), None);
}

#[test]
fn sandbox_nullable_fields_are_present() {
    let json = serde_json::to_value(sandbox()).unwrap();
    for field in [
        "errorReason",
        "networkAllowList",
        "buildInfo",
        "lastActivityAt",
    ] {
        assert_eq!(object(&json).get(field), Some(&Value::Null), "{field}");
    }
}

#[test]
fn list_next_cursor_always_present() {
    let json = serde_json::to_value(ListSandboxes {
        items: vec![sandbox()],
        next_cursor: None,
    })
    .unwrap();
    assert_eq!(object(&json).get("nextCursor"), Some(&Value::Null));
    assert!(json["items"].is_array());
}

#[test]
fn snapshot_uses_mem_and_required_nullables() {
    let snapshot = Snapshot {
        id: "s".into(),
        organization_id: None,
        general: true,
        name: "daytona-default".into(),
        image_name: None,
        state: SnapshotState::Active,
        size: None,
        entrypoint: None,
        cpu: 1,
        gpu: 0,
        gpu_type: None,
        mem: 1,
        disk: 3,
        error_reason: None,
        created_at: "2026-01-01T00:00:00.000Z".into(),
        updated_at: "2026-01-01T00:00:00.000Z".into(),
        last_used_at: None,
        build_info: None,
        region_ids: None,
        initial_runner_id: None,
        reference: None,
        source_sandbox_id: None,
        sandbox_class: None,
    };
    let json = serde_json::to_value(snapshot).unwrap();
    assert_eq!(json["mem"], 1);
    assert!(object(&json).get("memory").is_none());
    // Required but nullable in the published client: present as null.
    for field in [
        "errorReason",
        "lastUsedAt",
        "sourceSandboxId",
        "size",
        "entrypoint",
    ] {
        assert_eq!(object(&json).get(field), Some(&Value::Null), "{field}");
    }
    assert_eq!(json["state"], "active");
    assert_eq!(json["ref"], Value::Null);
}

#[test]
fn error_body_fields() {
    let body = ErrorBody {
        status_code: 404,
        message: "file not found: /x".into(),
        code: "FILE_NOT_FOUND".into(),
        source: ErrorSource::Daemon,
        timestamp: daytona_wire::now_rfc3339(),
        path: "/files/info".into(),
        method: "GET".into(),
        request_id: None,
        output: None,
    };
    let json = serde_json::to_value(body).unwrap();
    assert_eq!(json["statusCode"], 404);
    assert_eq!(json["source"], "DAYTONA_DAEMON");
    for field in ["message", "code", "timestamp", "path", "method"] {
        assert!(json[field].is_string(), "{field}");
    }
    assert!(object(&json).get("requestId").is_none());
}

#[test]
fn execute_response_exit_code_is_int() {
    let json = serde_json::to_value(ExecuteResponse {
        exit_code: 127,
        result: "x".into(),
        stdout: None,
        stderr: None,
    })
    .unwrap();
    assert_eq!(json["exitCode"], 127);
    assert!(json["result"].is_string());
}

#[test]
fn file_info_fields() {
    let json = serde_json::to_value(FileInfo {
        name: "a".into(),
        is_dir: false,
        size: 3,
        mode: "-rw-r--r--".into(),
        permissions: "0644".into(),
        owner: "1000".into(),
        group: "1000".into(),
        mod_time: "t".into(),
        modified_at: "t".into(),
        path: "/a".into(),
    })
    .unwrap();
    for (field, kind) in [
        ("name", "string"),
        ("isDir", "bool"),
        ("size", "int"),
        ("mode", "string"),
        ("permissions", "string"),
        ("owner", "string"),
        ("group", "string"),
        ("modTime", "string"),
    ] {
        assert!(has_type(&json[field], kind), "{field}");
    }
}

#[test]
fn rfc3339_has_milliseconds_and_z() {
    let at = time::macros::datetime!(2026-01-02 03:04:05.678 UTC);
    assert_eq!(daytona_wire::rfc3339(at), "2026-01-02T03:04:05.678Z");
}
