//! Router tests that need neither root nor a sandbox runtime: authentication, error shapes,
//! validation, listing, and a create that fails without leaving anything behind.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use daytona_runner::{Runner, RunnerConfig};
use daytona_wire::api::SnapshotState;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::config::{LifecycleConfig, ObjectStorageConfig, SandboxLimits, ServerConfig};
use crate::state::{AppState, Shared};
use crate::store::{SandboxRecord, SnapshotRecord, Store};
use crate::{auth, routes};
use daytona_objstore::{EmbeddedConfig, ObjectStorage};

pub(crate) const KEY: &str = "dtn_test_key_0123456789";

pub(crate) struct Harness {
    pub(crate) state: AppState,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Another handle on the same server, for requests from concurrent tasks.
    pub(crate) fn from_state(state: AppState) -> Self {
        Self {
            state,
            _dir: tempfile::tempdir().unwrap(),
        }
    }
}

async fn harness() -> Harness {
    harness_with(LifecycleConfig::default()).await
}

/// A router over a fresh store and a runner whose daemon binary is `/bin/true`, so that every
/// sandbox start fails in the runtime.
pub(crate) async fn harness_with(lifecycle: LifecycleConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("daytona.db"))
        .await
        .unwrap();
    let org = store.ensure_organization("default").await.unwrap();
    store
        .insert_api_key(
            &crate::store::ApiKeyRecord {
                id: "key-1".into(),
                organization_id: org.id.clone(),
                name: "admin".into(),
                key_prefix: "dtn_test".into(),
                is_admin: true,
                created_at: daytona_wire::now_rfc3339(),
                last_used_at: None,
                revoked_at: None,
                permissions: None,
                expires_at: None,
            },
            &auth::hash_key(KEY),
        )
        .await
        .unwrap();
    // A daemon binary that starts nothing: every sandbox create fails in the runtime.
    let runner = Runner::open(RunnerConfig {
        sandboxes_dir: dir.path().join("sandboxes"),
        daemon_binary: "/bin/true".into(),
        warm_pool_size: 0,
        hang_start_file: lifecycle.hang_start_file.clone(),
        uid_slot_registry: None,
        network: None,
    })
    .await
    .unwrap();
    let config = ServerConfig {
        data_dir: dir.path().to_owned(),
        image_cache_dir: dir.path().join("images"),
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: "http://127.0.0.1:3000".into(),
        daemon_binary: "/bin/true".into(),
        admin_api_key: None,
        limits: SandboxLimits::default(),
        warm_pool_size: 0,
        lifecycle,
        organization_limits: Default::default(),
        metrics_interval: std::time::Duration::from_secs(10),
        object_storage: ObjectStorageConfig::embedded(dir.path(), "127.0.0.1:0".parse().unwrap()),
        ssh_gateway: crate::config::SshGatewayConfig {
            listen: "127.0.0.1:2222".parse().unwrap(),
            public_host: "127.0.0.1".into(),
        },
        network: None,
        preview: crate::config::PreviewConfig::local("127.0.0.1:0".parse().unwrap()),
    };
    let object_storage = ObjectStorage::open_embedded(EmbeddedConfig {
        data_dir: dir.path().to_owned(),
        tls_dir: dir.path().join("tls"),
        tls_names: Vec::new(),
    })
    .unwrap();
    let state: AppState = Arc::new(Shared::new(config, store, Arc::new(runner), object_storage));
    let now = daytona_wire::now_rfc3339();
    state
        .store
        .upsert_snapshot(&SnapshotRecord {
            id: "snapshot-1".into(),
            organization_id: None,
            name: daytona_images::DEFAULT_SNAPSHOT.into(),
            image_name: None,
            image_digest: Some("sha256:00".into()),
            state: SnapshotState::Active,
            general: true,
            size_bytes: Some(1 << 20),
            cpu: 1,
            gpu: 0,
            memory: 1,
            disk: 3,
            entrypoint: None,
            error_reason: None,
            created_at: now.clone(),
            updated_at: now,
            last_used_at: None,
        })
        .await
        .unwrap();
    // A layer with only the user database, which creates check the user against.
    let layer = dir.path().join("layer");
    std::fs::create_dir_all(layer.join("etc")).unwrap();
    std::fs::write(
        layer.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\ndaytona:x:1000:1000::/home/daytona:/bin/bash\n",
    )
    .unwrap();
    state
        .images
        .write()
        .unwrap()
        .insert(daytona_images::DEFAULT_SNAPSHOT.into(), vec![layer]);
    state.set_ready();
    Harness { state, _dir: dir }
}

pub(crate) async fn call(
    harness: &Harness,
    method: &str,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let body = match body {
        Some(json) => Body::from(serde_json::to_vec(&json).unwrap()),
        None => Body::empty(),
    };
    let response = routes::router(harness.state.clone())
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

pub(crate) fn assert_error(body: &Value, status: StatusCode, code: &str, path: &str) {
    assert_eq!(body["statusCode"], status.as_u16());
    assert_eq!(body["code"], code);
    assert_eq!(body["source"], "DAYTONA_API");
    assert_eq!(body["path"], path);
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(body["timestamp"].is_string());
    assert!(body["method"].is_string());
}

pub(crate) fn sandbox_record(
    state: &AppState,
    organization_id: &str,
    name: &str,
    created_at: &str,
) -> SandboxRecord {
    let _ = state;
    SandboxRecord {
        id: uuid::Uuid::new_v4().to_string(),
        organization_id: organization_id.into(),
        name: name.into(),
        snapshot: Some("daytona-default".into()),
        os_user: "daytona".into(),
        env: Default::default(),
        labels: [("team".to_owned(), name.to_owned())].into(),
        public: false,
        network_block_all: false,
        network_allow_list: None,
        domain_allow_list: None,
        target: "local".into(),
        cpu: 1,
        gpu: 0,
        memory: 1,
        disk: 3,
        state: daytona_wire::api::SandboxState::Stopped,
        desired_state: None,
        error_reason: None,
        auto_stop_interval: 15,
        auto_archive_interval: 10080,
        auto_delete_interval: -1,
        auto_pause_interval: 0,
        volumes: Vec::new(),
        created_at: created_at.into(),
        updated_at: created_at.into(),
        last_activity_at: None,
        auto_destroy_at: None,
        state_changed_at: Some(created_at.into()),
    }
}

#[tokio::test]
async fn missing_key_is_401() {
    let harness = harness().await;
    let (status, body) = call(&harness, "GET", "/api/sandbox", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&body, status, "UNAUTHORIZED", "/api/sandbox");
}

#[tokio::test]
async fn wrong_key_is_401() {
    let harness = harness().await;
    let (status, body) = call(&harness, "GET", "/api/sandbox", None, Some("dtn_nope")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&body, status, "UNAUTHORIZED", "/api/sandbox");
}

#[tokio::test]
async fn health_needs_no_key() {
    let harness = harness().await;
    let (status, body) = call(&harness, "GET", "/api/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn unknown_route_and_sandbox_are_404() {
    let harness = harness().await;
    let (status, body) = call(&harness, "GET", "/api/nope", None, Some(KEY)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, status, "NOT_FOUND", "/api/nope");
    let (status, body) = call(&harness, "GET", "/api/sandbox/missing", None, Some(KEY)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, status, "NOT_FOUND", "/api/sandbox/missing");
}

#[tokio::test]
async fn bad_json_is_400() {
    let harness = harness().await;
    let request = Request::builder()
        .method("POST")
        .uri("/api/sandbox")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::from("{oops"))
        .unwrap();
    let response = routes::router(harness.state.clone())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_error(
        &body,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST_BODY",
        "/api/sandbox",
    );
}

#[tokio::test]
async fn invalid_create_fields_are_400() {
    let harness = harness().await;
    for body in [
        json!({"cpu": 1.5}),
        json!({"cpu": 99}),
        json!({"memory": 0}),
        json!({"name": "has space"}),
        json!({"name": ".."}),
        json!({"name": "."}),
        json!({"user": "Root!"}),
        json!({"env": {"1BAD": "x"}}),
        json!({"labels": {"code-toolbox-language": "cobol"}}),
        json!({"gpu": 1}),
        json!({"volumes": [{"volumeId": "v", "mountPath": "data"}]}),
        json!({"volumes": [{"volumeId": "v", "mountPath": "/proc/x"}]}),
        json!({"volumes": [{"volumeId": "v", "mountPath": "/data", "subpath": "../x"}]}),
        json!({"buildInfo": {"dockerfileContent": "FROM x"}, "snapshot": "daytona-default"}),
        json!({"buildInfo": {"dockerfileContent": ""}}),
        json!({"buildInfo": {"dockerfileContent": "RUN true"}}),
        json!({"buildInfo": {"dockerfileContent": "FROM x"}, "cpu": 99}),
        json!({"autoDeleteInterval": -5}),
    ] {
        let (status, response) = call(
            &harness,
            "POST",
            "/api/sandbox",
            Some(body.clone()),
            Some(KEY),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} gave {response}");
    }
    let (_, list) = call(&harness, "GET", "/api/sandbox", None, Some(KEY)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn unknown_snapshot_is_404() {
    let harness = harness().await;
    let (status, body) = call(
        &harness,
        "POST",
        "/api/sandbox",
        Some(json!({"snapshot": "nope"})),
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, status, "NOT_FOUND", "/api/sandbox");
}

#[tokio::test]
async fn failed_create_keeps_neither_name_nor_files() {
    let harness = harness().await;
    // The start fails in the runtime, so the create fails, and nothing of the sandbox stays:
    // the name is free for the next try, which fails the same way rather than with 409.
    for _ in 0..2 {
        let (status, body) = call(
            &harness,
            "POST",
            "/api/sandbox",
            Some(json!({"name": "doomed"})),
            Some(KEY),
        )
        .await;
        assert_error(&body, status, "INTERNAL_SERVER_ERROR", "/api/sandbox");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("failed to start")
        );
        let (_, list) = call(&harness, "GET", "/api/sandbox", None, Some(KEY)).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 0);
        assert!(harness.state.runner.sandbox_ids().is_empty());
        let sandboxes_dir = harness.state.config.data_dir.join("sandboxes");
        assert_eq!(std::fs::read_dir(sandboxes_dir).unwrap().count(), 0);
    }
}

#[tokio::test]
async fn user_missing_from_the_image_is_400() {
    let harness = harness().await;
    let body = json!({"user": "ghost"});
    let (status, body) = call(&harness, "POST", "/api/sandbox", Some(body), Some(KEY)).await;
    assert_error(&body, status, "BAD_REQUEST", "/api/sandbox");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no user \"ghost\""),
        "{body}"
    );
    assert!(harness.state.runner.sandbox_ids().is_empty());
}

#[tokio::test]
async fn create_refused_until_ready() {
    let dir_harness = harness().await;
    let state = Arc::new(Shared::new(
        dir_harness.state.config.clone(),
        dir_harness.state.store.clone(),
        dir_harness.state.runner.clone(),
        dir_harness.state.object_storage.clone(),
    ));
    let harness = Harness {
        state,
        _dir: tempfile::tempdir().unwrap(),
    };
    let (status, body) = call(&harness, "POST", "/api/sandbox", None, Some(KEY)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_error(&body, status, "SERVICE_UNAVAILABLE", "/api/sandbox");
    let (status, _) = call(&harness, "GET", "/api/health", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn list_filters_sorts_and_pages() {
    let harness = harness().await;
    let org = harness
        .state
        .store
        .organization_by_name("default")
        .await
        .unwrap()
        .unwrap();
    for (index, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        let record = sandbox_record(
            &harness.state,
            &org.id,
            name,
            &format!("2026-01-0{}T00:00:00.000Z", index + 1),
        );
        harness.state.store.insert_sandbox(&record).await.unwrap();
    }
    // Another organization's sandbox is invisible.
    let other = harness
        .state
        .store
        .ensure_organization("other")
        .await
        .unwrap();
    let foreign = sandbox_record(&harness.state, &other.id, "a", "2026-01-09T00:00:00.000Z");
    harness.state.store.insert_sandbox(&foreign).await.unwrap();

    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/sandbox?limit=2&cursor={cursor}"),
            None => "/api/sandbox?limit=2".to_owned(),
        };
        let (status, page) = call(&harness, "GET", &path, None, Some(KEY)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.as_object().unwrap().contains_key("nextCursor"));
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_owned()),
        );
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(names, ["e", "d", "c", "b", "a"]);

    let labels = form_urlencoded::byte_serialize(br#"{"team":"c"}"#).collect::<String>();
    let (_, page) = call(
        &harness,
        "GET",
        &format!("/api/sandbox?labels={labels}"),
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["name"], "c");

    let (_, page) = call(
        &harness,
        "GET",
        "/api/sandbox?sort=name&order=asc&states=stopped&states=started",
        None,
        Some(KEY),
    )
    .await;
    let sorted: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(sorted, ["a", "b", "c", "d", "e"]);

    let (_, page) = call(
        &harness,
        "GET",
        "/api/sandbox?states=started",
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0);

    let (status, _) = call(
        &harness,
        "GET",
        "/api/sandbox?states=bogus",
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(
        &harness,
        "GET",
        "/api/sandbox?cursor=garbage",
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Get by name within the organization only.
    let (status, body) = call(&harness, "GET", "/api/sandbox/c", None, Some(KEY)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "c");
    assert_eq!(body["toolboxProxyUrl"], "http://127.0.0.1:3000/toolbox");
    let (status, _) = call(
        &harness,
        "GET",
        &format!("/api/sandbox/{}", foreign.id),
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn snapshots_list_and_get() {
    let harness = harness().await;
    let (status, page) = call(&harness, "GET", "/api/snapshots", None, Some(KEY)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 1);
    assert_eq!(page["totalPages"], 1);
    assert_eq!(page["items"][0]["name"], "daytona-default");
    assert_eq!(page["items"][0]["state"], "active");
    let (status, snapshot) = call(
        &harness,
        "GET",
        "/api/snapshots/daytona-default",
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(snapshot["mem"], 1);
    let (status, _) = call(&harness, "GET", "/api/snapshots/none", None, Some(KEY)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn toolbox_of_stopped_sandbox_is_400() {
    let harness = harness().await;
    let org = harness
        .state
        .store
        .organization_by_name("default")
        .await
        .unwrap()
        .unwrap();
    let record = sandbox_record(
        &harness.state,
        &org.id,
        "stopped-one",
        "2026-01-01T00:00:00.000Z",
    );
    harness.state.store.insert_sandbox(&record).await.unwrap();
    let path = format!("/toolbox/{}/process/execute", record.id);
    let (status, body) = call(
        &harness,
        "POST",
        &path,
        Some(json!({"command": "true"})),
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, status, "BAD_REQUEST", &path);
    let (status, _) = call(
        &harness,
        "POST",
        "/toolbox/unknown/process/execute",
        Some(json!({})),
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&harness, "POST", &path, Some(json!({})), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn store_rejects_duplicate_live_name() {
    let harness = harness().await;
    let org = harness
        .state
        .store
        .organization_by_name("default")
        .await
        .unwrap()
        .unwrap();
    let first = sandbox_record(&harness.state, &org.id, "same", "2026-01-01T00:00:00.000Z");
    harness.state.store.insert_sandbox(&first).await.unwrap();
    let second = sandbox_record(&harness.state, &org.id, "same", "2026-01-01T00:00:00.000Z");
    assert!(matches!(
        harness.state.store.insert_sandbox(&second).await,
        Err(crate::store::StoreError::NameTaken { .. })
    ));
    harness.state.store.delete_sandbox(&first.id).await.unwrap();
    harness.state.store.insert_sandbox(&second).await.unwrap();
}

#[tokio::test]
async fn openapi_paths_are_all_routed() {
    let harness = harness().await;
    let openapi = routes::openapi();
    let mut checked = 0;
    for (path, item) in &openapi.paths.paths {
        let concrete = path.replace("{id}", "some-id");
        let methods = [
            ("GET", item.get.is_some()),
            ("POST", item.post.is_some()),
            ("PUT", item.put.is_some()),
            ("DELETE", item.delete.is_some()),
        ];
        for (method, present) in methods {
            if !present {
                continue;
            }
            let (status, body) = call(
                &harness,
                method,
                &format!("/api{concrete}"),
                None,
                Some(KEY),
            )
            .await;
            let unrouted = body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("no route for") || m.starts_with("method "));
            assert!(
                !unrouted,
                "{method} {path} is documented but not routed: {status} {body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} operations documented");
}

#[tokio::test]
async fn openapi_document_is_served() {
    let harness = harness().await;
    let (status, body) = call(&harness, "GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["paths"]["/sandbox"]["post"].is_object());
    assert!(body["components"]["schemas"]["Sandbox"].is_object());
    assert!(body["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn push_access_returns_storage_access() {
    let harness = harness().await;
    let (status, body) = call(
        &harness,
        "GET",
        "/api/object-storage/push-access",
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    harness
        .state
        .object_storage_address
        .set("127.0.0.1:3009".parse().unwrap())
        .unwrap();
    let (status, body) = call(
        &harness,
        "GET",
        "/api/object-storage/push-access",
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access: daytona_wire::object_storage::StorageAccess =
        serde_json::from_value(body.clone()).unwrap();
    assert_eq!(access.bucket, daytona_objstore::BUILDS_BUCKET);
    assert_eq!(access.region, daytona_objstore::DEFAULT_REGION);
    // Requests without a Host header get the name the certificate always covers.
    assert_eq!(access.storage_url, "https://localhost:3009");
    assert!(!access.session_token.is_empty());
    assert!(!access.organization_id.is_empty());
    for field in [
        "accessKey",
        "secret",
        "sessionToken",
        "storageUrl",
        "organizationId",
        "bucket",
        "region",
    ] {
        assert!(body[field].is_string(), "{field} in {body}");
    }

    let (status, _) = call(
        &harness,
        "GET",
        "/api/object-storage/push-access",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
