//! `GET /system/metrics`.

mod common;

use std::time::Duration;

use common::Daemon;
use serde_json::json;

#[tokio::test]
async fn metrics_have_every_field_with_integer_bytes() {
    let daemon = Daemon::start().await;
    let reply = daemon.get("/system/metrics").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let metrics = reply.json();
    for key in [
        "cpuCount",
        "memTotal",
        "memUsed",
        "memCache",
        "diskTotal",
        "diskUsed",
        "diskFree",
        "timestampUnix",
    ] {
        assert!(
            metrics[key].is_u64(),
            "{key} is not a JSON integer: {metrics}"
        );
    }
    assert!(metrics["cpuCount"].as_u64().unwrap() >= 1);
    let percent = metrics["cpuUsedPct"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&percent), "{percent}");
    assert!(metrics["memTotal"].as_u64().unwrap() > 0);
    assert!(metrics["diskTotal"].as_u64().unwrap() > 0);
    assert!(
        metrics["diskUsed"].as_u64().unwrap() + metrics["diskFree"].as_u64().unwrap()
            <= metrics["diskTotal"].as_u64().unwrap()
    );

    let timestamp = metrics["timestamp"].as_str().unwrap();
    let parsed =
        time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
            .unwrap();
    assert_eq!(
        parsed.unix_timestamp(),
        metrics["timestampUnix"].as_i64().unwrap()
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - parsed.unix_timestamp()).abs() < 60);
}

#[tokio::test]
async fn cpu_use_shows_a_busy_process() {
    let daemon = Daemon::start().await;
    // Busy for about three seconds, in the background of the command.
    daemon
        .exec(json!({"command": "timeout 3 sh -c 'while :; do :; done' >/dev/null 2>&1 &"}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = daemon.get("/system/metrics").await.json();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let second = daemon.get("/system/metrics").await.json();

    // One busy process would keep one CPU busy; other work on the machine takes a share, so
    // only a clear rise is checked.
    let expected = 100.0 / second["cpuCount"].as_f64().unwrap() * 0.2;
    for metrics in [&first, &second] {
        let percent = metrics["cpuUsedPct"].as_f64().unwrap();
        assert!(percent >= expected, "{percent} < {expected}: {metrics}");
    }
}
