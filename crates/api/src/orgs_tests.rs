//! Router tests of organizations, API keys, limits, the event channel, signed file URLs,
//! metrics and the routes of features that are not available yet.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use daytona_wire::api::SandboxState;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tower::ServiceExt;

use crate::config::LifecycleConfig;
use crate::state::ToolboxRoute;
use crate::store::{LimitOverrides, SandboxRecord};
use crate::tests::{Harness, KEY, assert_error, harness_with, sandbox_record};
use crate::{dto, routes, signing};

/// A response: status, headers and JSON body (`Null` when the body is not JSON).
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// Sends a request with an optional bearer key and extra headers.
async fn send(
    harness: &Harness,
    method: &str,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
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
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

async fn plain() -> Harness {
    harness_with(LifecycleConfig::default()).await
}

async fn default_organization(harness: &Harness) -> String {
    harness
        .state
        .store
        .organization_by_name("default")
        .await
        .unwrap()
        .unwrap()
        .id
}

/// Creates an organization through the API and a key for it with `permissions`; returns the
/// organization id and the key.
async fn organization_with_key(
    harness: &Harness,
    name: &str,
    permissions: Value,
) -> (String, String) {
    let created = send(
        harness,
        "POST",
        "/api/organizations",
        Some(json!({"name": name})),
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let organization_id = created.body["id"].as_str().unwrap().to_owned();
    let key = send(
        harness,
        "POST",
        "/api/api-keys",
        Some(json!({"name": "member", "permissions": permissions})),
        Some(KEY),
        &[("x-daytona-organization-id", &organization_id)],
    )
    .await;
    assert_eq!(key.status, StatusCode::CREATED, "{}", key.body);
    assert_eq!(key.body["name"], "member");
    (
        organization_id,
        key.body["value"].as_str().unwrap().to_owned(),
    )
}

/// Stores a sandbox of `organization_id` in `state` without touching the runner.
async fn stored(
    harness: &Harness,
    organization_id: &str,
    name: &str,
    state: SandboxState,
) -> SandboxRecord {
    let mut record = sandbox_record(
        &harness.state,
        organization_id,
        name,
        &daytona_wire::now_rfc3339(),
    );
    record.state = state;
    harness.state.store.insert_sandbox(&record).await.unwrap();
    record
}

fn status_of(error: crate::error::ApiError) -> StatusCode {
    axum::response::IntoResponse::into_response(error).status()
}

fn all_permissions() -> Value {
    json!([
        "write:sandboxes",
        "delete:sandboxes",
        "write:snapshots",
        "manage:api_keys"
    ])
}

#[tokio::test]
async fn api_keys_create_list_revoke() {
    let harness = plain().await;
    let created = send(
        &harness,
        "POST",
        "/api/api-keys",
        Some(json!({"name": "ci", "permissions": ["write:sandboxes"]})),
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let value = created.body["value"].as_str().unwrap().to_owned();
    assert!(value.starts_with("dtn_"), "{value}");
    assert_eq!(created.body["permissions"], json!(["write:sandboxes"]));
    assert!(created.body["expiresAt"].is_null());
    assert!(created.body["createdAt"].is_string());

    // Only the hash is stored.
    let stored = harness
        .state
        .store
        .api_key_by_hash(&crate::auth::hash_key(&value))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.name, "ci");

    let listed = send(&harness, "GET", "/api/api-keys", None, Some(KEY), &[]).await;
    assert_eq!(listed.status, StatusCode::OK);
    let keys = listed.body.as_array().unwrap();
    let names: Vec<&str> = keys.iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "ci"]);
    let ci = &keys[1];
    assert!(!ci["value"].as_str().unwrap().contains(&value[8..]), "{ci}");
    assert!(ci.as_object().unwrap().contains_key("lastUsedAt"));
    assert_eq!(ci["userId"], ci["organizationId"]);

    // The new key works, and is then in the key cache.
    let current = send(
        &harness,
        "GET",
        "/api/api-keys/current",
        None,
        Some(&value),
        &[],
    )
    .await;
    assert_eq!(current.status, StatusCode::OK, "{}", current.body);
    assert_eq!(current.body["name"], "ci");
    let one = send(&harness, "GET", "/api/api-keys/ci", None, Some(KEY), &[]).await;
    assert_eq!(one.body["name"], "ci");
    assert!(one.body["lastUsedAt"].is_string(), "{}", one.body);

    let revoked = send(&harness, "DELETE", "/api/api-keys/ci", None, Some(KEY), &[]).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);
    // Revocation is effective at once, although the key was cached.
    let after = send(&harness, "GET", "/api/sandbox", None, Some(&value), &[]).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_error(&after.body, after.status, "UNAUTHORIZED", "/api/sandbox");
    let missing = send(&harness, "GET", "/api/api-keys/ci", None, Some(KEY), &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    // The name is free again.
    let again = send(
        &harness,
        "POST",
        "/api/api-keys",
        Some(json!({"name": "ci", "permissions": []})),
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
}

#[tokio::test]
async fn api_key_requests_are_validated() {
    let harness = plain().await;
    let create = |body: Value| {
        let harness = &harness;
        async move { send(harness, "POST", "/api/api-keys", Some(body), Some(KEY), &[]).await }
    };
    let first = create(json!({"name": "dup", "permissions": []})).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let duplicate = create(json!({"name": "dup", "permissions": []})).await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT, "{}", duplicate.body);
    let unknown = create(json!({"name": "x", "permissions": ["write:everything"]})).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(
        unknown.body["message"]
            .as_str()
            .unwrap()
            .contains("write:everything")
    );
    let past =
        create(json!({"name": "old", "permissions": [], "expiresAt": "2001-01-01T00:00:00Z"}))
            .await;
    assert_eq!(past.status, StatusCode::BAD_REQUEST);
    let bad_name = create(json!({"name": "", "permissions": []})).await;
    assert_eq!(bad_name.status, StatusCode::BAD_REQUEST);

    let admin = send(
        &harness,
        "DELETE",
        "/api/api-keys/admin",
        None,
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(admin.status, StatusCode::BAD_REQUEST, "{}", admin.body);
}

#[tokio::test]
async fn expired_key_is_refused() {
    let harness = plain().await;
    let expires_at =
        daytona_wire::rfc3339(time::OffsetDateTime::now_utc() + Duration::from_secs(1));
    let created = send(
        &harness,
        "POST",
        "/api/api-keys",
        Some(json!({"name": "short", "permissions": [], "expiresAt": expires_at})),
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let value = created.body["value"].as_str().unwrap().to_owned();
    assert_eq!(created.body["expiresAt"], expires_at.as_str());

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = send(&harness, "GET", "/api/sandbox", None, Some(&value), &[]).await;
        if reply.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            Instant::now() < deadline,
            "the key still works after it expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn other_organization_is_404() {
    let harness = plain().await;
    let default_org = default_organization(&harness).await;
    let (_, member) = organization_with_key(&harness, "team-b", all_permissions()).await;
    let theirs = stored(&harness, &default_org, "private", SandboxState::Stopped).await;

    for (method, path) in [
        ("GET", format!("/api/sandbox/{}", theirs.id)),
        ("GET", "/api/sandbox/private".to_owned()),
        ("DELETE", format!("/api/sandbox/{}", theirs.id)),
        ("POST", format!("/api/sandbox/{}/start", theirs.id)),
        ("GET", format!("/api/sandbox/{}/signing-key", theirs.id)),
        (
            "POST",
            format!("/api/sandbox/{}/signing-key/rotate", theirs.id),
        ),
        ("GET", format!("/api/sandbox/{}/organization", theirs.id)),
        ("POST", format!("/api/sandbox/{}/archive", theirs.id)),
        ("GET", format!("/toolbox/{}/files?path=/", theirs.id)),
        ("GET", "/api/api-keys/admin".to_owned()),
        ("DELETE", format!("/api/api-keys/{default_org}/admin")),
        ("GET", format!("/api/organizations/{default_org}")),
        ("GET", format!("/api/organizations/{default_org}/usage")),
    ] {
        let reply = send(&harness, method, &path, None, Some(&member), &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            reply.body
        );
    }
    let list = send(&harness, "GET", "/api/sandbox", None, Some(&member), &[]).await;
    assert_eq!(list.body["items"], json!([]));
    let organizations = send(
        &harness,
        "GET",
        "/api/organizations",
        None,
        Some(&member),
        &[],
    )
    .await;
    let names: Vec<&str> = organizations
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["team-b"]);
    let keys = send(&harness, "GET", "/api/api-keys", None, Some(&member), &[]).await;
    assert_eq!(keys.body.as_array().unwrap().len(), 1);

    // A snapshot of another organization is as unknown as a missing one.
    let mut snapshot = harness
        .state
        .store
        .snapshot_by_id_or_name(&default_org, daytona_images::DEFAULT_SNAPSHOT)
        .await
        .unwrap()
        .unwrap();
    snapshot.id = "private-snapshot".into();
    snapshot.name = "private-snapshot".into();
    snapshot.general = false;
    snapshot.organization_id = Some(default_org.clone());
    harness
        .state
        .store
        .upsert_snapshot(&snapshot)
        .await
        .unwrap();
    let own = send(
        &harness,
        "GET",
        "/api/snapshots/private-snapshot",
        None,
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(own.status, StatusCode::OK);
    let other = send(
        &harness,
        "GET",
        "/api/snapshots/private-snapshot",
        None,
        Some(&member),
        &[],
    )
    .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);

    // The sandbox is untouched.
    let still = send(
        &harness,
        "GET",
        &format!("/api/sandbox/{}", theirs.id),
        None,
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(still.status, StatusCode::OK);
}

#[tokio::test]
async fn non_admin_cannot_manage_organizations() {
    let harness = plain().await;
    let default_org = default_organization(&harness).await;
    let (own_org, member) = organization_with_key(&harness, "team-c", all_permissions()).await;

    for (method, path, body) in [
        (
            "POST",
            "/api/organizations".to_owned(),
            Some(json!({"name": "mine"})),
        ),
        ("DELETE", format!("/api/organizations/{own_org}"), None),
        (
            "PATCH",
            format!("/api/organizations/{own_org}/quota"),
            Some(json!({"maxSandboxes": 100})),
        ),
    ] {
        let reply = send(&harness, method, &path, body, Some(&member), &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            reply.body
        );
        assert_error(&reply.body, reply.status, "FORBIDDEN", &path);
    }
    // Naming another organization in the header is refused on the key routes, and ignored
    // elsewhere, as Daytona ignores it for API keys.
    let header = [("x-daytona-organization-id", default_org.as_str())];
    let keys = send(
        &harness,
        "GET",
        "/api/api-keys",
        None,
        Some(&member),
        &header,
    )
    .await;
    assert_eq!(keys.status, StatusCode::FORBIDDEN);
    let sandboxes = send(
        &harness,
        "GET",
        "/api/sandbox",
        None,
        Some(&member),
        &header,
    )
    .await;
    assert_eq!(sandboxes.status, StatusCode::OK);
    let admin_elsewhere = send(
        &harness,
        "GET",
        "/api/sandbox",
        None,
        Some(KEY),
        &[("x-daytona-organization-id", "ssh-token")],
    )
    .await;
    assert_eq!(admin_elsewhere.status, StatusCode::OK);
    // Its own organization it can read.
    let own = send(
        &harness,
        "GET",
        &format!("/api/organizations/{own_org}"),
        None,
        Some(&member),
        &[],
    )
    .await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.body["name"], "team-c");
    for field in [
        "suspendedAt",
        "suspendedUntil",
        "createdBy",
        "maxCpuPerSandbox",
        "experimentalConfig",
    ] {
        assert!(!own.body[field].is_null(), "{field} missing: {}", own.body);
    }
}

#[tokio::test]
async fn admin_deletes_organization() {
    let harness = plain().await;
    let (org, member) = organization_with_key(&harness, "gone", all_permissions()).await;
    let record = stored(&harness, &org, "left", SandboxState::Stopped).await;
    let busy = send(
        &harness,
        "DELETE",
        &format!("/api/organizations/{org}"),
        None,
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.body);
    harness
        .state
        .store
        .delete_sandbox(&record.id)
        .await
        .unwrap();
    let deleted = send(
        &harness,
        "DELETE",
        &format!("/api/organizations/{org}"),
        None,
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    let key = send(&harness, "GET", "/api/sandbox", None, Some(&member), &[]).await;
    assert_eq!(key.status, StatusCode::UNAUTHORIZED);
    let default_org = default_organization(&harness).await;
    let default = send(
        &harness,
        "DELETE",
        &format!("/api/organizations/{default_org}"),
        None,
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(default.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn permissions_are_enforced() {
    let harness = plain().await;
    let (_, reader) = organization_with_key(&harness, "readers", json!([])).await;
    let list = send(&harness, "GET", "/api/sandbox", None, Some(&reader), &[]).await;
    assert_eq!(list.status, StatusCode::OK);
    let create = send(
        &harness,
        "POST",
        "/api/sandbox",
        Some(json!({})),
        Some(&reader),
        &[],
    )
    .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN, "{}", create.body);
    assert!(
        create.body["message"]
            .as_str()
            .unwrap()
            .contains("write:sandboxes")
    );
    let keys = send(
        &harness,
        "POST",
        "/api/api-keys",
        Some(json!({"name": "more", "permissions": []})),
        Some(&reader),
        &[],
    )
    .await;
    assert_eq!(keys.status, StatusCode::FORBIDDEN);

    // A key cannot hand out a permission it lacks.
    let (_, manager) =
        organization_with_key(&harness, "managers", json!(["manage:api_keys"])).await;
    let escalate = send(
        &harness,
        "POST",
        "/api/api-keys",
        Some(json!({"name": "more", "permissions": ["delete:sandboxes"]})),
        Some(&manager),
        &[],
    )
    .await;
    assert_eq!(escalate.status, StatusCode::FORBIDDEN, "{}", escalate.body);
}

#[tokio::test]
async fn quota_429_has_headers_and_frees_on_delete() {
    let harness = plain().await;
    let org = default_organization(&harness).await;
    let patched = send(
        &harness,
        "PATCH",
        &format!("/api/organizations/{org}/quota"),
        Some(json!({"maxSandboxes": 1, "totalCpu": 8})),
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(
        patched.body["limits"],
        json!({"maxSandboxes": 1, "totalCpu": 8, "totalMemory": null})
    );

    let running = stored(&harness, &org, "running", SandboxState::Started).await;
    let refused = send(
        &harness,
        "POST",
        "/api/sandbox",
        Some(json!({})),
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    assert_error(
        &refused.body,
        refused.status,
        "TOO_MANY_REQUESTS",
        "/api/sandbox",
    );
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("limit of 1 sandboxes"),
        "{}",
        refused.body
    );
    let header = |name: &str| {
        refused
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(header("retry-after").as_deref(), Some("5"));
    assert_eq!(header("x-ratelimit-limit-sandboxes").as_deref(), Some("1"));
    assert_eq!(
        header("x-ratelimit-remaining-sandboxes").as_deref(),
        Some("0")
    );
    assert_eq!(header("x-ratelimit-limit-cpu").as_deref(), Some("8"));
    assert_eq!(header("x-ratelimit-remaining-cpu").as_deref(), Some("7"));
    assert_eq!(header("x-ratelimit-limit-memory"), None);

    let usage = send(
        &harness,
        "GET",
        &format!("/api/organizations/{org}/usage"),
        None,
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(usage.body["currentSandboxes"], 1);
    assert_eq!(usage.body["regionUsage"][0]["currentCpuUsage"], 1);

    // Deleting the sandbox frees its share at once.
    let deleted = send(
        &harness,
        "DELETE",
        &format!("/api/sandbox/{}", running.id),
        None,
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    let reservation = harness
        .state
        .quotas
        .reserve(&harness.state, &org, 1, 1)
        .await;
    assert!(reservation.is_ok(), "still refused after the delete");
}

#[tokio::test]
async fn stopped_and_errored_sandboxes_do_not_count() {
    let harness = plain().await;
    let org = default_organization(&harness).await;
    harness
        .state
        .store
        .set_organization_limits(
            &org,
            &LimitOverrides {
                max_sandboxes: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for (name, state) in [
        ("stopped", SandboxState::Stopped),
        ("errored", SandboxState::Error),
        ("deleting", SandboxState::Destroying),
    ] {
        stored(&harness, &org, name, state).await;
    }
    let reservation = harness
        .state
        .quotas
        .reserve(&harness.state, &org, 1, 1)
        .await
        .unwrap();
    // The reservation counts while it is held...
    let second = harness
        .state
        .quotas
        .reserve(&harness.state, &org, 1, 1)
        .await;
    assert_eq!(
        status_of(second.unwrap_err()),
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...and a failed create (which drops it) frees it at once.
    drop(reservation);
    let again = harness
        .state
        .quotas
        .reserve(&harness.state, &org, 1, 1)
        .await;
    assert!(again.is_ok());
}

#[tokio::test]
async fn concurrent_reservations_cannot_overshoot() {
    let harness = plain().await;
    let org = default_organization(&harness).await;
    harness
        .state
        .store
        .set_organization_limits(
            &org,
            &LimitOverrides {
                max_sandboxes: Some(3),
                total_cpu: Some(5),
                total_memory: None,
            },
        )
        .await
        .unwrap();
    stored(&harness, &org, "one", SandboxState::Started).await;

    let attempts: Vec<_> = (0..12)
        .map(|_| {
            let state = harness.state.clone();
            let org = org.clone();
            tokio::spawn(async move { state.quotas.reserve(&state, &org, 2, 1).await })
        })
        .collect();
    let mut granted = Vec::new();
    let mut refused = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(reservation) => granted.push(reservation),
            Err(error) => {
                assert_eq!(status_of(error), StatusCode::TOO_MANY_REQUESTS);
                refused += 1;
            }
        }
    }
    // One started sandbox with 1 vCPU leaves room for two more of 2 vCPUs under 5 vCPUs.
    assert_eq!(granted.len(), 2);
    assert_eq!(refused, 10);
    assert_eq!(harness.state.quotas.pending(&org).cpu, 4);
    drop(granted);
    assert_eq!(harness.state.quotas.pending(&org).sandboxes, 0);
}

#[tokio::test]
async fn concurrent_creates_through_the_api_cannot_overshoot() {
    // Starts hang until the deadline, so the creates that got in hold their share meanwhile.
    let dir = tempfile::tempdir().unwrap();
    let hang = dir.path().join("hang");
    std::fs::write(&hang, b"").unwrap();
    let harness = harness_with(LifecycleConfig {
        transition_timeout: Duration::from_secs(3),
        hang_start_file: Some(hang.clone()),
        ..LifecycleConfig::default()
    })
    .await;
    let org = default_organization(&harness).await;
    harness
        .state
        .store
        .set_organization_limits(
            &org,
            &LimitOverrides {
                max_sandboxes: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    let creates: Vec<_> = (0..6)
        .map(|_| {
            let harness = Harness::from_state(harness.state.clone());
            tokio::spawn(async move {
                send(
                    &harness,
                    "POST",
                    "/api/sandbox",
                    Some(json!({})),
                    Some(KEY),
                    &[],
                )
                .await
                .status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for create in creates {
        statuses.push(create.await.unwrap());
    }
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(refused, 4, "{statuses:?}");
    // The two that got in went to `error` at the deadline, which frees their shares.
    assert_eq!(harness.state.quotas.pending(&org).sandboxes, 0);
    std::fs::remove_file(&hang).unwrap();
    let reservation = harness
        .state
        .quotas
        .reserve(&harness.state, &org, 1, 1)
        .await;
    assert!(reservation.is_ok());
}

/// Starts a stand-in daemon on a Unix socket that returns, for every request, its method,
/// path and query, and whether it carried an `Authorization` header.
async fn echo_daemon(dir: &std::path::Path) -> std::path::PathBuf {
    let socket = dir.join("toolbox.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let app = axum::Router::new().fallback(|request: axum::extract::Request| async move {
        axum::Json(json!({
            "method": request.method().as_str(),
            "uri": request.uri().to_string(),
            "authorization": request.headers().contains_key("authorization"),
        }))
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    socket
}

#[tokio::test]
async fn signed_urls_and_key_rotation() {
    let harness = plain().await;
    let org = default_organization(&harness).await;
    let record = stored(&harness, &org, "files", SandboxState::Started).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = echo_daemon(dir.path()).await;
    harness.state.add_route(
        &record.id,
        ToolboxRoute {
            organization_id: org.clone(),
            socket,
        },
    );

    let key_reply = send(
        &harness,
        "GET",
        &format!("/api/sandbox/{}/signing-key", record.id),
        None,
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(key_reply.status, StatusCode::OK);
    let key = key_reply.body.as_str().unwrap().to_owned();
    let again = send(
        &harness,
        "GET",
        &format!("/api/sandbox/{}/signing-key", record.id),
        None,
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(
        again.body,
        key.as_str(),
        "the key is stable until it is rotated"
    );

    let url = |key: &str, method: &str, operation: &str, path: &str, expires: i64| {
        let signature = signing::sign(key, method, path, expires);
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("path", path)
            .append_pair("expires", &expires.to_string())
            .append_pair("signature", &signature)
            .finish();
        format!("/toolbox/{}{operation}?{query}", record.id)
    };
    let in_an_hour = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;

    let download = send(
        &harness,
        "GET",
        &url(&key, "GET", "/files/download", "/tmp/a b.txt", in_an_hour),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(download.status, StatusCode::OK, "{}", download.body);
    assert_eq!(download.body["method"], "GET");
    assert_eq!(
        download.body["uri"],
        "/files/download?path=%2Ftmp%2Fa+b.txt"
    );
    assert_eq!(download.body["authorization"], false);
    let upload = send(
        &harness,
        "POST",
        &url(&key, "POST", "/files/upload-v2", "/tmp/up", 0),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(upload.status, StatusCode::OK, "{}", upload.body);
    assert_eq!(upload.body["uri"], "/files/upload-v2?path=%2Ftmp%2Fup");

    for (method, target, why) in [
        (
            "GET",
            url(&key, "POST", "/files/download", "/tmp/a", in_an_hour),
            "signed for another method",
        ),
        (
            "GET",
            url("wrong", "GET", "/files/download", "/tmp/a", in_an_hour),
            "signed with another key",
        ),
        (
            "GET",
            url(&key, "GET", "/files/download", "/tmp/a", 1_000),
            "expired",
        ),
        (
            "GET",
            url(&key, "GET", "/files/info", "/tmp/a", in_an_hour),
            "not a signable operation",
        ),
        (
            "GET",
            format!("/toolbox/{}/files/download?path=/tmp/a", record.id),
            "no signature and no key",
        ),
    ] {
        let reply = send(&harness, method, &target, None, None, &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{why}: {}",
            reply.body
        );
    }
    let tampered = url(&key, "GET", "/files/download", "/tmp/a", in_an_hour)
        .replace("%2Ftmp%2Fa", "%2Fetc%2Fshadow");
    let reply = send(&harness, "GET", &tampered, None, None, &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);

    let rotated = send(
        &harness,
        "POST",
        &format!("/api/sandbox/{}/signing-key/rotate", record.id),
        None,
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(rotated.status, StatusCode::OK);
    let new_key = rotated.body.as_str().unwrap().to_owned();
    assert_ne!(new_key, key);
    let old = send(
        &harness,
        "GET",
        &url(&key, "GET", "/files/download", "/tmp/a", 0),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    assert!(
        old.body["message"].as_str().unwrap().contains("rotated"),
        "{}",
        old.body
    );
    let new = send(
        &harness,
        "GET",
        &url(&new_key, "GET", "/files/download", "/tmp/a", 0),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(new.status, StatusCode::OK);

    // The toolbox forwards keyed requests as before, without the key.
    let keyed = send(
        &harness,
        "GET",
        &format!("/toolbox/{}/files/info?path=/x", record.id),
        None,
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(keyed.status, StatusCode::OK);
    assert_eq!(keyed.body["uri"], "/files/info?path=/x");
    assert_eq!(keyed.body["authorization"], false);
}

#[tokio::test]
async fn signed_url_of_stopped_sandbox_is_400() {
    let harness = plain().await;
    let org = default_organization(&harness).await;
    let record = stored(&harness, &org, "stopped", SandboxState::Stopped).await;
    let key = send(
        &harness,
        "GET",
        &format!("/api/sandbox/{}/signing-key", record.id),
        None,
        Some(KEY),
        &[],
    )
    .await;
    let key = key.body.as_str().unwrap().to_owned();
    let signature = signing::sign(&key, "GET", "/f", 0);
    let reply = send(
        &harness,
        "GET",
        &format!(
            "/toolbox/{}/files/download?path=%2Ff&expires=0&signature={signature}",
            record.id
        ),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(reply.body["message"].as_str().unwrap().contains("stopped"));
    let unknown = send(
        &harness,
        "GET",
        &format!("/toolbox/nope/files/download?path=%2Ff&expires=0&signature={signature}"),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn config_has_every_required_field() {
    let harness = plain().await;
    let reply = send(&harness, "GET", "/api/config", None, None, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    for field in [
        "version",
        "oidc",
        "linkedAccountsEnabled",
        "announcements",
        "proxyTemplateUrl",
        "proxyToolboxUrl",
        "defaultSnapshot",
        "dashboardUrl",
        "maxAutoArchiveInterval",
        "maintananceMode",
        "environment",
    ] {
        assert!(
            !reply.body[field].is_null(),
            "{field} missing: {}",
            reply.body
        );
    }
    for field in ["issuer", "clientId", "audience", "provider"] {
        assert!(reply.body["oidc"][field].is_string(), "oidc.{field}");
    }
    assert!(reply.body.get("analyticsApiUrl").is_none());
    assert_eq!(
        reply.body["proxyToolboxUrl"],
        "http://127.0.0.1:3000/toolbox"
    );
}

#[tokio::test]
async fn metrics_return_recorded_samples() {
    let harness = plain().await;
    let org = default_organization(&harness).await;
    let record = stored(&harness, &org, "measured", SandboxState::Started).await;
    let reading = crate::telemetry::Reading {
        cpu_time: Duration::from_secs(1),
        memory: 3 << 20,
        cache: Some(1 << 20),
    };
    harness.state.telemetry.record(&record.id, reading, 1, 1);
    let from = "2000-01-01T00:00:00.000000+0000";
    let to = daytona_wire::rfc3339(time::OffsetDateTime::now_utc() + Duration::from_secs(5));
    let path = format!(
        "/api/sandbox/{}/telemetry/metrics?from={}&to={}&metricNames=daytona.sandbox.memory.usage&metricNames=daytona.sandbox.cpu.limit",
        record.id,
        form_urlencoded::byte_serialize(from.as_bytes()).collect::<String>(),
        to
    );
    let reply = send(&harness, "GET", &path, None, Some(KEY), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let series = reply.body["series"].as_array().unwrap();
    assert_eq!(series.len(), 2, "{}", reply.body);
    assert_eq!(series[0]["metricName"], "daytona.sandbox.memory.usage");
    assert_eq!(
        series[0]["dataPoints"][0]["value"],
        json!((2u64 << 20) as f64)
    );
    assert!(series[0]["dataPoints"][0]["timestamp"].is_string());
    assert_eq!(series[1]["dataPoints"][0]["value"], json!(1.0));

    let missing_range = send(
        &harness,
        "GET",
        &format!("/api/sandbox/{}/telemetry/metrics", record.id),
        None,
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(missing_range.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unavailable_features_are_documented_400() {
    let harness = plain().await;
    let org = default_organization(&harness).await;
    let record = stored(&harness, &org, "plain", SandboxState::Stopped).await;
    let id = &record.id;
    let cases = [
        ("POST", format!("/api/sandbox/{id}/backup"), "backups"),
        ("PUT", format!("/api/sandbox/{id}/secrets"), "secrets"),
        ("GET", format!("/api/sandbox/{id}/secrets"), "secrets"),
        ("GET", "/api/warm-pools".to_owned(), "warm pools"),
        ("PATCH", "/api/warm-pools/p1".to_owned(), "warm pools"),
        ("GET", "/api/secret/paginated".to_owned(), "secrets"),
        ("POST", "/api/secret".to_owned(), "secrets"),
        ("DELETE", "/api/secret/s1".to_owned(), "secrets"),
    ];
    for (method, path, word) in cases {
        let reply = send(&harness, method, &path, Some(json!({})), Some(KEY), &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{method} {path}: {}",
            reply.body
        );
        let bare_path = path.split('?').next().unwrap();
        assert_error(
            &reply.body,
            reply.status,
            "FEATURE_NOT_AVAILABLE",
            bare_path,
        );
        let message = reply.body["message"].as_str().unwrap();
        assert!(
            message.contains(word)
                && (message.contains("not available yet") || message.contains("cannot be managed")),
            "{method} {path}: {message}"
        );
    }
    for (method, path) in [
        ("POST", "/api/sandbox/nope/fork".to_owned()),
        ("GET", "/api/sandbox/nope/ports/1/preview-url".to_owned()),
        ("DELETE", "/api/snapshots/nope".to_owned()),
    ] {
        let reply = send(&harness, method, &path, None, Some(KEY), &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            reply.body
        );
    }
    // Network settings are available: they are no longer among the refusals.
    let path = format!("/api/sandbox/{id}/network-settings");
    let reply = send(&harness, "POST", &path, Some(json!({})), Some(KEY), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[tokio::test]
async fn ssh_access_create_validate_revoke() {
    let harness = plain().await;
    let org = default_organization(&harness).await;
    let record = stored(&harness, &org, "ssh", SandboxState::Started).await;
    let id = &record.id;

    let created = send(
        &harness,
        "POST",
        &format!("/api/sandbox/{id}/ssh-access?expiresInMinutes=5"),
        None,
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let token = created.body["token"].as_str().unwrap().to_owned();
    for field in [
        "id",
        "sandboxId",
        "token",
        "expiresAt",
        "createdAt",
        "updatedAt",
        "sshCommand",
    ] {
        assert!(created.body[field].is_string(), "{field}: {}", created.body);
    }
    assert_eq!(created.body["sandboxId"], id.as_str());
    assert_eq!(
        created.body["sshCommand"],
        format!("ssh -p 2222 {token}@127.0.0.1")
    );
    // Only the hash is stored.
    let stored_access = harness
        .state
        .store
        .ssh_access_by_hash(&crate::auth::hash_key(&token))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(stored_access.token_hash, token);

    let validate = format!("/api/sandbox/ssh-access/validate?token={token}");
    let valid = send(&harness, "GET", &validate, None, Some(KEY), &[]).await;
    assert_eq!(valid.body, json!({"valid": true, "sandboxId": id}));

    // Another organization can neither see, revoke nor validate the token.
    let (_, other) = organization_with_key(&harness, "ssh-other", all_permissions()).await;
    let revoke = format!("/api/sandbox/{id}/ssh-access?token={token}");
    let refused = send(&harness, "DELETE", &revoke, None, Some(&other), &[]).await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.body);
    let hidden = send(&harness, "GET", &validate, None, Some(&other), &[]).await;
    assert_eq!(hidden.body, json!({"valid": false, "sandboxId": ""}));

    let revoked = send(&harness, "DELETE", &revoke, None, Some(KEY), &[]).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert_eq!(revoked.body["id"], id.as_str());
    let invalid = send(&harness, "GET", &validate, None, Some(KEY), &[]).await;
    assert_eq!(invalid.body, json!({"valid": false, "sandboxId": ""}));
    assert!(
        crate::ssh_access::find_usable(&harness.state.store, &token)
            .await
            .unwrap()
            .is_none()
    );

    for bad in ["0", "-3", "abc", "43201"] {
        let reply = send(
            &harness,
            "POST",
            &format!("/api/sandbox/{id}/ssh-access?expiresInMinutes={bad}"),
            None,
            Some(KEY),
            &[],
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            reply.body
        );
        assert!(
            reply.body["message"]
                .as_str()
                .unwrap()
                .contains("expiresInMinutes")
        );
    }
    let missing = send(
        &harness,
        "GET",
        "/api/sandbox/ssh-access/validate",
        None,
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST, "{}", missing.body);
    let unknown = send(
        &harness,
        "POST",
        "/api/sandbox/nope/ssh-access",
        None,
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

/// Reads WebSocket messages until a text message other than a ping arrives, at most 5 s.
async fn next_text<S>(socket: &mut S) -> String
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("no message within 5 s")
            .expect("the connection closed")
            .expect("the connection failed");
        // Engine.IO pings ("2") are not what the tests wait for.
        if let Message::Text(text) = message
            && text.as_str() != "2"
        {
            return text.to_string();
        }
    }
}

/// Opens an event connection with `token`. Returns it and the server's reply to CONNECT.
async fn connect_events(
    address: std::net::SocketAddr,
    token: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    String,
) {
    let url = format!("ws://{address}/api/socket.io/?EIO=4&transport=websocket&source=sdk-python");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let open = next_text(&mut socket).await;
    assert!(open.starts_with("0{"), "{open}");
    let handshake: Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(handshake["upgrades"], json!([]));
    assert!(handshake["pingInterval"].is_u64());
    socket
        .send(Message::text(format!("40{}", json!({"token": token}))))
        .await
        .unwrap();
    let answer = next_text(&mut socket).await;
    (socket, answer)
}

#[tokio::test]
async fn event_channel_authenticates_and_routes_by_organization() {
    let harness = plain().await;
    let default_org = default_organization(&harness).await;
    let (other_org, member) = organization_with_key(&harness, "events-b", all_permissions()).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = routes::router(harness.state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (_refused, answer) = connect_events(address, "dtn_not_a_key").await;
    assert!(answer.starts_with("44"), "{answer}");
    let refusal: Value = serde_json::from_str(&answer[2..]).unwrap();
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .contains("Unauthorized")
    );

    let (mut admin, answer) = connect_events(address, KEY).await;
    assert!(answer.starts_with("40{"), "{answer}");
    let (mut member_socket, answer) = connect_events(address, &member).await;
    assert!(answer.starts_with("40{"), "{answer}");

    let ours = sandbox_record(
        &harness.state,
        &default_org,
        "ours",
        &daytona_wire::now_rfc3339(),
    );
    let mut theirs = sandbox_record(
        &harness.state,
        &other_org,
        "theirs",
        &daytona_wire::now_rfc3339(),
    );
    harness
        .state
        .events
        .sandbox_created(&dto::sandbox(&harness.state, &ours));
    theirs.state = SandboxState::Started;
    harness.state.events.sandbox_state_updated(
        &dto::sandbox(&harness.state, &theirs),
        SandboxState::Starting,
    );

    let event = next_text(&mut admin).await;
    let payload: Value = serde_json::from_str(event.strip_prefix("42").unwrap()).unwrap();
    assert_eq!(payload[0], "sandbox.created");
    assert_eq!(payload[1]["id"], ours.id.as_str());
    assert_eq!(
        payload[1]["toolboxProxyUrl"],
        "http://127.0.0.1:3000/toolbox"
    );

    // The other organization's connection got its own event first: ours never reached it.
    let event = next_text(&mut member_socket).await;
    let payload: Value = serde_json::from_str(event.strip_prefix("42").unwrap()).unwrap();
    assert_eq!(payload[0], "sandbox.state.updated");
    assert_eq!(payload[1]["sandbox"]["id"], theirs.id.as_str());
    assert_eq!(payload[1]["oldState"], "starting");
    assert_eq!(payload[1]["newState"], "started");
    assert_eq!(payload[1]["sandbox"]["state"], "started");

    // Revoking the key disconnects it: a DISCONNECT packet, or the connection closes.
    let revoked = send(
        &harness,
        "DELETE",
        &format!("/api/api-keys/{other_org}/member"),
        None,
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, member_socket.next())
            .await
            .expect("the connection stayed open")
        {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Text(text))) if text.as_str() == "41" => break,
            Some(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn other_organizations_cannot_name_an_image() {
    let harness = harness_with(LifecycleConfig::default()).await;
    let source = tempfile::tempdir().unwrap();
    crate::snapshots_tests::write_layout(source.path());
    daytona_images::ImageStore::open(&harness.state.config.image_cache_dir)
        .unwrap()
        .import("img-private", &source.path().join("layout"), None, &|_| {})
        .unwrap();
    let (_, member) = organization_with_key(&harness, "thief", all_permissions()).await;
    let body = json!({"name": "stolen", "imageName": "img-private"});

    let reply = send(
        &harness,
        "POST",
        "/api/snapshots",
        Some(body.clone()),
        Some(&member),
        &[],
    )
    .await;
    assert_error(&reply.body, reply.status, "NOT_FOUND", "/api/snapshots");

    // The admin, who imports images, may name it.
    let reply = send(
        &harness,
        "POST",
        "/api/snapshots",
        Some(body),
        Some(KEY),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}
