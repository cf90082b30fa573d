//! Lifecycle tests through the router, with a runner whose daemon binary is `/bin/true`: every
//! start fails in the runtime, and the runner's hang aid keeps starts in `starting`. Started
//! sandboxes are covered by the SDK suites, which run real ones.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use daytona_runner::{CreateParams, Limits};
use daytona_wire::api::SandboxState;
use serde_json::{Value, json};

use super::reconciler::sweep;
use super::recovery::reconcile_after_restart;
use crate::config::LifecycleConfig;
use crate::events::Event;
use crate::store::SandboxRecord;
use crate::tests::{Harness, KEY, assert_error, call, harness_with, sandbox_record};

/// Builds a harness whose starts hang while the returned file exists.
async fn hanging(timeout: Duration) -> (Harness, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let hang = dir.path().join("hang");
    std::fs::write(&hang, b"").unwrap();
    let harness = harness_with(LifecycleConfig {
        transition_timeout: timeout,
        hang_start_file: Some(hang.clone()),
        ..LifecycleConfig::default()
    })
    .await;
    (harness, dir, hang)
}

async fn plain() -> Harness {
    harness_with(LifecycleConfig::default()).await
}

async fn organization_id(harness: &Harness) -> String {
    harness
        .state
        .store
        .organization_by_name("default")
        .await
        .unwrap()
        .unwrap()
        .id
}

/// Stores a sandbox in `state`, with files on the runner, as a stopped sandbox has them.
async fn stored(harness: &Harness, name: &str, state: SandboxState) -> SandboxRecord {
    let org = organization_id(harness).await;
    let mut record = sandbox_record(&harness.state, &org, name, &daytona_wire::now_rfc3339());
    record.state = state;
    harness
        .state
        .runner
        .prepare(CreateParams {
            sandbox_id: record.id.clone(),
            layers: Vec::new(),
            user: "daytona".into(),
            env: Default::default(),
            limits: Limits::default(),
            volumes: Vec::new(),
            work_dir: None,
            egress: Default::default(),
        })
        .unwrap();
    harness.state.store.insert_sandbox(&record).await.unwrap();
    record
}

async fn state_of(harness: &Harness, id: &str) -> Option<String> {
    let (status, body) = call(
        harness,
        "GET",
        &format!("/api/sandbox/{id}"),
        None,
        Some(KEY),
    )
    .await;
    (status == StatusCode::OK).then(|| body["state"].as_str().unwrap().to_owned())
}

/// Polls until the sandbox is in `state`, at most 10 s.
async fn wait_for_state(harness: &Harness, id: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let current = state_of(harness, id).await;
        if current.as_deref() == Some(state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sandbox {id} is {current:?}, not {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Finds the one sandbox of the list, for creates still in flight.
async fn only_sandbox(harness: &Harness) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, list) = call(harness, "GET", "/api/sandbox", None, Some(KEY)).await;
        if let Some(item) = list["items"].as_array().and_then(|items| items.first()) {
            return item.clone();
        }
        assert!(Instant::now() < deadline, "no sandbox appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn delete_in_starting_interrupts_the_start() {
    let (harness, _dir, _hang) = hanging(Duration::from_secs(60)).await;
    let state = harness.state.clone();
    let create = tokio::spawn(async move {
        let harness = Harness::from_state(state);
        call(
            &harness,
            "POST",
            "/api/sandbox",
            Some(json!({"name": "stuck"})),
            Some(KEY),
        )
        .await
    });
    let id = only_sandbox(&harness).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for_state(&harness, &id, "starting").await;

    // Other transitions are rejected while the start runs, and the message names the conflict.
    for action in ["start", "stop", "recover"] {
        let path = format!("/api/sandbox/{id}/{action}");
        let (status, body) = call(&harness, "POST", &path, None, Some(KEY)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{action}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("state change in progress")
        );
        assert_error(&body, status, "CONFLICT", &path);
    }

    let started = Instant::now();
    let (status, body) = call(&harness, "DELETE", "/api/sandbox/stuck", None, Some(KEY)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "destroyed");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "delete took {:?}",
        started.elapsed()
    );
    assert!(harness.state.runner.sandbox_ids().is_empty());
    assert!(state_of(&harness, &id).await.is_none());

    // The create that was waiting learns that its sandbox is gone.
    let (status, body) = create.await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["message"].as_str().unwrap().contains("deleted"));
}

#[tokio::test]
async fn failed_create_answers_500_and_leaves_nothing() {
    for hang in [true, false] {
        let (harness, _dir, hang_file) = hanging(Duration::from_millis(500)).await;
        if !hang {
            // The runtime itself fails: the daemon binary is /bin/true.
            std::fs::remove_file(&hang_file).unwrap();
        }
        let (status, body) = call(&harness, "POST", "/api/sandbox", None, Some(KEY)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        let expected = if hang {
            "did not start within"
        } else {
            "failed to start"
        };
        assert!(
            body["message"].as_str().unwrap().contains(expected),
            "{body}"
        );
        assert!(harness.state.runner.sandbox_ids().is_empty());
        let (status, body) = call(&harness, "GET", "/api/sandbox", None, Some(KEY)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["items"].as_array().unwrap().len(), 0, "{body}");
    }
}

#[tokio::test]
async fn starting_past_deadline_becomes_error() {
    let (harness, _dir, hang) = hanging(Duration::from_millis(500)).await;
    let id = stored(&harness, "slow", SandboxState::Stopped).await.id;
    let started = Instant::now();
    let path = format!("/api/sandbox/{id}/start");
    let (status, body) = call(&harness, "POST", &path, None, Some(KEY)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(body["state"], "error");
    assert!(
        body["errorReason"]
            .as_str()
            .unwrap()
            .contains("did not finish within"),
        "{body}"
    );

    // Entering error released CPU and memory (no cgroups) and kept the files.
    assert!(harness.state.runner.workload_usage(&id).is_none());
    assert_eq!(
        harness.state.runner.sandbox_ids(),
        std::slice::from_ref(&id)
    );
    assert!(harness.state.route(&id).is_none());

    // Recover tries again; with the hang aid gone the runtime fails, which is error again.
    std::fs::remove_file(&hang).unwrap();
    let path = format!("/api/sandbox/{id}/recover");
    let (status, body) = call(&harness, "POST", &path, None, Some(KEY)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "error");
    assert!(
        body["errorReason"]
            .as_str()
            .unwrap()
            .contains("failed to start")
    );

    let (status, _) = call(
        &harness,
        "DELETE",
        &format!("/api/sandbox/{id}"),
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(harness.state.runner.sandbox_ids().is_empty());
}

#[tokio::test]
async fn wrong_state_is_400_with_the_state() {
    let harness = plain().await;
    let errored = stored(&harness, "broken", SandboxState::Error).await;
    let stopped = stored(&harness, "resting", SandboxState::Stopped).await;
    for (id, action, state) in [
        (&errored.id, "start", "error"),
        (&errored.id, "stop", "error"),
        (&stopped.id, "recover", "stopped"),
    ] {
        let path = format!("/api/sandbox/{id}/{action}");
        let (status, body) = call(&harness, "POST", &path, None, Some(KEY)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{action}: {body}");
        assert_error(&body, status, "BAD_REQUEST", &path);
        assert!(body["message"].as_str().unwrap().contains(state), "{body}");
    }
    let path = format!("/api/sandbox/{}/resize", errored.id);
    let (status, body) = call(&harness, "POST", &path, Some(json!({"cpu": 2})), Some(KEY)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Stopping a stopped sandbox changes nothing and returns 200.
    let path = format!("/api/sandbox/{}/stop", stopped.id);
    let (status, body) = call(&harness, "POST", &path, None, Some(KEY)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["state"], "stopped");
}

#[tokio::test]
async fn unsupported_actions_are_documented_400() {
    let harness = plain().await;
    let record = stored(&harness, "plain", SandboxState::Stopped).await;
    for (path, word) in [(format!("/api/sandbox/{}/pause", record.id), "paused")] {
        let (status, body) = call(&harness, "POST", &path, Some(json!({})), Some(KEY)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_error(&body, status, "BAD_REQUEST", &path);
        assert!(body["message"].as_str().unwrap().contains(word), "{body}");
    }
    let (status, _) = call(&harness, "POST", "/api/sandbox/nope/pause", None, Some(KEY)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn network_settings_stored_and_validated() {
    let harness = plain().await;
    let record = stored(&harness, "fenced", SandboxState::Stopped).await;
    let path = format!("/api/sandbox/{}/network-settings", record.id);

    let body = json!({"networkAllowList": "198.51.100.0/24", "domainAllowList": "*.example.com"});
    let (status, body) = call(&harness, "POST", &path, Some(body), Some(KEY)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["networkAllowList"], "198.51.100.0/24");
    assert_eq!(body["domainAllowList"], "*.example.com");
    assert_eq!(body["networkBlockAll"], false);

    let (status, body) = call(
        &harness,
        "POST",
        &path,
        Some(json!({"networkBlockAll": true})),
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["networkBlockAll"], true);
    assert_eq!(body["networkAllowList"], "198.51.100.0/24");

    // `networkBlockAll: false` alone restores open egress, as the SDK documents.
    let (status, body) = call(
        &harness,
        "POST",
        &path,
        Some(json!({"networkBlockAll": false})),
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["networkBlockAll"], false);
    assert!(body["networkAllowList"].is_null(), "{body}");
    assert!(body["domainAllowList"].is_null(), "{body}");

    for invalid in [
        json!({"networkAllowList": "10.0.0.0/33"}),
        json!({"networkAllowList": "example.com"}),
        json!({"domainAllowList": "not a domain"}),
    ] {
        let (status, body) = call(&harness, "POST", &path, Some(invalid), Some(KEY)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_error(&body, status, "BAD_REQUEST", &path);
        assert!(
            body["message"].as_str().unwrap().contains("invalid"),
            "{body}"
        );
    }
    // A rejected change leaves the stored settings as they were.
    let stored = harness
        .state
        .store
        .sandbox_by_id(&record.id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.network_allow_list.is_none());
}

#[tokio::test]
async fn settings_are_stored_and_validated() {
    let harness = plain().await;
    let record = stored(&harness, "tuned", SandboxState::Stopped).await;
    let base = format!("/api/sandbox/{}", record.id);

    let (status, body) = call(
        &harness,
        "PUT",
        &format!("{base}/labels"),
        Some(json!({"labels": {"code-toolbox-language": "typescript", "team": "b"}})),
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"labels": {"code-toolbox-language": "typescript", "team": "b"}})
    );
    let (status, _) = call(
        &harness,
        "PUT",
        &format!("{base}/labels"),
        Some(json!({"labels": {"code-toolbox-language": "cobol"}})),
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    for (path, field, value) in [
        ("autostop/30", "autoStopInterval", json!(30)),
        ("autostop/0", "autoStopInterval", json!(0)),
        ("autoarchive/60", "autoArchiveInterval", json!(60)),
        ("autodelete/-1", "autoDeleteInterval", json!(-1)),
        ("autodelete/0", "autoDeleteInterval", json!(0)),
        ("autopause/5", "autoPauseInterval", json!(5)),
    ] {
        let (status, body) =
            call(&harness, "POST", &format!("{base}/{path}"), None, Some(KEY)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body[field], value, "{path}");
    }
    for path in [
        "autostop/-1",
        "autostop/soon",
        "autodelete/-2",
        "autoarchive/-1",
        "ttl/-5",
    ] {
        let (status, body) =
            call(&harness, "POST", &format!("{base}/{path}"), None, Some(KEY)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
    }

    let (_, body) = call(&harness, "POST", &format!("{base}/ttl/30"), None, Some(KEY)).await;
    let at = super::reconciler::parse_time(body["autoDestroyAt"].as_str().unwrap()).unwrap();
    let ahead = at - time::OffsetDateTime::now_utc();
    assert!(ahead > time::Duration::minutes(29), "{ahead}");
    assert!(ahead <= time::Duration::minutes(30), "{ahead}");
    let (_, body) = call(&harness, "POST", &format!("{base}/ttl/0"), None, Some(KEY)).await;
    assert!(body["autoDestroyAt"].is_null());

    let (status, _) = call(
        &harness,
        "POST",
        &format!("{base}/last-activity"),
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, body) = call(&harness, "GET", &base, None, Some(KEY)).await;
    let last = super::reconciler::parse_time(body["lastActivityAt"].as_str().unwrap()).unwrap();
    assert!(time::OffsetDateTime::now_utc() - last < time::Duration::seconds(5));
}

#[tokio::test]
async fn resize_of_stopped_sandbox() {
    let harness = plain().await;
    let record = stored(&harness, "sized", SandboxState::Stopped).await;
    let path = format!("/api/sandbox/{}/resize", record.id);

    let body = json!({"cpu": 2, "memory": 3, "disk": 5});
    let (status, body) = call(&harness, "POST", &path, Some(body), Some(KEY)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cpu"], 2);
    assert_eq!(body["memory"], 3);
    assert_eq!(body["disk"], 5);

    // Lower CPU is fine on a stopped sandbox; a smaller disk never is.
    let (status, body) = call(&harness, "POST", &path, Some(json!({"cpu": 1})), Some(KEY)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cpu"], 1);
    for body in [
        json!({"disk": 4}),
        json!({"cpu": 99}),
        json!({"memory": 0}),
        json!({}),
    ] {
        let (status, response) = call(&harness, "POST", &path, Some(body.clone()), Some(KEY)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {response}");
    }

    let get = format!("/api/sandbox/{}", record.id);
    let (_, body) = call(&harness, "GET", &get, None, Some(KEY)).await;
    assert_eq!(body["disk"], 5);
}

#[tokio::test]
async fn reconciler_applies_ttl_auto_delete_and_deadlines() {
    let harness = plain().await;
    let long_ago = "2020-01-01T00:00:00.000Z";

    let mut ttl = stored(&harness, "ttl", SandboxState::Stopped).await;
    ttl.auto_destroy_at = Some(long_ago.into());
    harness.state.store.update_sandbox(&ttl).await.unwrap();

    let mut ephemeral = stored(&harness, "ephemeral", SandboxState::Stopped).await;
    ephemeral.auto_delete_interval = 0;
    harness
        .state
        .store
        .update_sandbox(&ephemeral)
        .await
        .unwrap();

    let mut fresh = stored(&harness, "fresh", SandboxState::Stopped).await;
    fresh.auto_delete_interval = 60;
    harness.state.store.update_sandbox(&fresh).await.unwrap();

    let org = organization_id(&harness).await;
    let mut stuck = sandbox_record(&harness.state, &org, "stuck", long_ago);
    stuck.state = SandboxState::Starting;
    harness.state.store.insert_sandbox(&stuck).await.unwrap();
    let mut dying = sandbox_record(&harness.state, &org, "dying", long_ago);
    dying.state = SandboxState::Destroying;
    harness.state.store.insert_sandbox(&dying).await.unwrap();
    let mut lost = sandbox_record(&harness.state, &org, "lost", long_ago);
    lost.state = SandboxState::Started;
    harness.state.store.insert_sandbox(&lost).await.unwrap();

    sweep(&harness.state).await.unwrap();

    assert!(state_of(&harness, &ttl.id).await.is_none(), "TTL passed");
    assert!(
        state_of(&harness, &ephemeral.id).await.is_none(),
        "auto-delete 0"
    );
    assert!(
        state_of(&harness, &dying.id).await.is_none(),
        "destroying retried"
    );
    assert_eq!(
        state_of(&harness, &fresh.id).await.as_deref(),
        Some("stopped")
    );
    assert_eq!(
        state_of(&harness, &stuck.id).await.as_deref(),
        Some("error")
    );
    assert_eq!(state_of(&harness, &lost.id).await.as_deref(), Some("error"));
    assert_eq!(harness.state.runner.sandbox_ids(), [fresh.id.clone()]);
}

#[tokio::test]
async fn restart_reconcile_matches_store_and_runner() {
    let harness = plain().await;
    let org = organization_id(&harness).await;
    let now = daytona_wire::now_rfc3339();

    let mut half_created = sandbox_record(&harness.state, &org, "half", &now);
    half_created.state = SandboxState::Creating;
    harness
        .state
        .store
        .insert_sandbox(&half_created)
        .await
        .unwrap();
    let starting = stored(&harness, "starting", SandboxState::Starting).await;
    let stopping = stored(&harness, "stopping", SandboxState::Stopping).await;
    let started = stored(&harness, "started", SandboxState::Started).await;
    let deleting = stored(&harness, "deleting", SandboxState::Destroying).await;
    let mut filesless = sandbox_record(&harness.state, &org, "filesless", &now);
    filesless.state = SandboxState::Stopped;
    harness
        .state
        .store
        .insert_sandbox(&filesless)
        .await
        .unwrap();
    // Files of a sandbox the store does not know.
    harness
        .state
        .runner
        .prepare(CreateParams {
            sandbox_id: "orphan".into(),
            layers: Vec::new(),
            user: "daytona".into(),
            env: Default::default(),
            limits: Limits::default(),
            volumes: Vec::new(),
            work_dir: None,
            egress: Default::default(),
        })
        .unwrap();

    reconcile_after_restart(&harness.state).await.unwrap();

    assert!(state_of(&harness, &half_created.id).await.is_none());
    assert!(state_of(&harness, &deleting.id).await.is_none());
    assert_eq!(
        state_of(&harness, &starting.id).await.as_deref(),
        Some("error")
    );
    assert_eq!(
        state_of(&harness, &stopping.id).await.as_deref(),
        Some("stopped")
    );
    // Its processes are gone, as after a host reboot.
    assert_eq!(
        state_of(&harness, &started.id).await.as_deref(),
        Some("stopped")
    );
    assert_eq!(
        state_of(&harness, &filesless.id).await.as_deref(),
        Some("error")
    );
    let mut ids = harness.state.runner.sandbox_ids();
    ids.sort();
    let mut expected = vec![starting.id, stopping.id, started.id];
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn every_transition_publishes_an_event() {
    let harness = plain().await;
    let mut events = harness.state.events.subscribe();
    // The create fails in the runtime and leaves nothing.
    let (status, _) = call(&harness, "POST", "/api/sandbox", None, Some(KEY)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let mut created = None;
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(describe(&event));
        if let Event::Created { sandbox } = event {
            created = Some(sandbox.id);
        }
    }
    assert!(created.is_some());
    assert_eq!(
        seen,
        ["created", "creating->starting", "starting->destroyed"]
    );

    // A start that fails moves the sandbox to error; a delete ends it.
    let id = stored(&harness, "events", SandboxState::Stopped).await.id;
    let path = format!("/api/sandbox/{id}/start");
    let (status, body) = call(&harness, "POST", &path, None, Some(KEY)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    call(
        &harness,
        "DELETE",
        &format!("/api/sandbox/{id}"),
        None,
        Some(KEY),
    )
    .await;

    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(describe(&event));
    }
    assert_eq!(
        seen,
        [
            "stopped->starting",
            "starting->error",
            "error->destroying",
            "destroying->destroyed"
        ]
    );
}

/// Names an event as `created` or `old->new`, checking that the sandbox it carries is in the
/// new state.
fn describe(event: &Event) -> String {
    match event {
        Event::Created { .. } => "created".to_owned(),
        Event::StateUpdated {
            sandbox,
            old_state,
            new_state,
        } => {
            assert_eq!(sandbox.state, *new_state);
            format!("{old_state}->{new_state}")
        }
    }
}

#[tokio::test]
async fn concurrent_creates_and_deletes_leave_nothing() {
    let harness = plain().await;
    let state = harness.state.clone();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(15));
    let mut tasks = Vec::new();
    for index in 0..40 {
        let state = state.clone();
        let semaphore = semaphore.clone();
        // Half create (which fails in this runtime and cleans up after itself); half start a
        // stopped sandbox and delete it while the start may still run.
        let stopped = if index % 2 == 0 {
            None
        } else {
            Some(stored(&harness, &format!("racer-{index}"), SandboxState::Stopped).await)
        };
        tasks.push(tokio::spawn(async move {
            let _permit = semaphore.acquire().await.unwrap();
            let harness = Harness::from_state(state);
            let Some(record) = stopped else {
                let (status, body) = call(&harness, "POST", "/api/sandbox", None, Some(KEY)).await;
                assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
                return;
            };
            let path = format!("/api/sandbox/{}", record.id);
            let start_path = format!("{path}/start");
            let start = call(&harness, "POST", &start_path, None, Some(KEY));
            let delete = call(&harness, "DELETE", &path, None, Some(KEY));
            let (_, (status, body)) = tokio::join!(start, delete);
            assert_eq!(status, StatusCode::OK, "{body}");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (_, list) = call(&harness, "GET", "/api/sandbox", None, Some(KEY)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    assert!(harness.state.runner.sandbox_ids().is_empty());
}

#[tokio::test]
async fn toolbox_requests_count_as_activity() {
    let harness = plain().await;
    let record = stored(&harness, "busy", SandboxState::Stopped).await;
    let path = format!("/toolbox/{}/files", record.id);
    // Refused requests do not count.
    let (status, _) = call(&harness, "GET", &path, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(harness.state.lifecycle.activity.last(&record.id).is_none());
    let (status, _) = call(&harness, "GET", &path, None, Some(KEY)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(harness.state.lifecycle.activity.last(&record.id).is_some());
}

#[tokio::test]
async fn list_filters_of_the_sdk() {
    let harness = plain().await;
    let org = organization_id(&harness).await;
    for (name, cpu, state) in [
        ("web-1", 1, SandboxState::Started),
        ("web-2", 2, SandboxState::Stopped),
        ("db-1", 4, SandboxState::Error),
    ] {
        let mut record = sandbox_record(&harness.state, &org, name, &daytona_wire::now_rfc3339());
        record.cpu = cpu;
        record.state = state;
        harness.state.store.insert_sandbox(&record).await.unwrap();
    }
    let names = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["name"].as_str().unwrap().to_owned())
            .collect()
    };
    for (query, expected) in [
        ("name=WEB&sort=name&order=asc", vec!["web-1", "web-2"]),
        ("minCpu=2&sort=cpu&order=desc", vec!["db-1", "web-2"]),
        ("maxCpu=1", vec!["web-1"]),
        ("isRecoverable=true", vec!["db-1"]),
        (
            "states=started,stopped&sort=cpu&order=asc",
            vec!["web-1", "web-2"],
        ),
        (
            "createdAtAfter=2020-01-01T00:00:00&sort=name&order=asc",
            vec!["db-1", "web-1", "web-2"],
        ),
        ("createdAtBefore=2020-01-01T00:00:00Z", vec![]),
        (
            "snapshots=daytona-default&regionIds=local&sort=name&order=asc",
            vec!["db-1", "web-1", "web-2"],
        ),
        ("regionIds=elsewhere", vec![]),
    ] {
        let (status, body) = call(
            &harness,
            "GET",
            &format!("/api/sandbox?{query}"),
            None,
            Some(KEY),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert_eq!(names(&body), expected, "{query}");
    }
}

#[tokio::test]
async fn openapi_describes_lifecycle_routes() {
    let harness = plain().await;
    let (status, document) = call(&harness, "GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for (path, method) in [
        ("/sandbox/{id}/start", "post"),
        ("/sandbox/{id}/stop", "post"),
        ("/sandbox/{id}/recover", "post"),
        ("/sandbox/{id}/resize", "post"),
        ("/sandbox/{id}/labels", "put"),
        ("/sandbox/{id}/autostop/{interval}", "post"),
        ("/sandbox/{id}/autoarchive/{interval}", "post"),
        ("/sandbox/{id}/autodelete/{interval}", "post"),
        ("/sandbox/{id}/autopause/{interval}", "post"),
        ("/sandbox/{id}/ttl/{ttlMinutes}", "post"),
        ("/sandbox/{id}/last-activity", "post"),
        ("/sandbox/{id}/pause", "post"),
        ("/sandbox/{id}/public/{isPublic}", "post"),
        ("/sandbox/{id}/network-settings", "post"),
    ] {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    for schema in ["ResizeSandbox", "SandboxLabels", "Sandbox", "ErrorBody"] {
        assert!(
            document["components"]["schemas"][schema].is_object(),
            "schema {schema} is missing"
        );
    }
}
