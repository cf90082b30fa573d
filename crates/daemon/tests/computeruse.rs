//! `/computeruse/*`: every route of the SDKs returns a documented 400.

mod common;

use axum::http::Method;
use common::{Daemon, assert_error_shape, empty};

#[tokio::test]
async fn computer_use_routes_are_documented_400() {
    let daemon = Daemon::start().await;
    for (method, path) in [
        (Method::POST, "/computeruse/start"),
        (Method::GET, "/computeruse/status"),
        (Method::GET, "/computeruse/process/xvfb/logs"),
        (Method::POST, "/computeruse/mouse/click"),
        (Method::POST, "/computeruse/keyboard/type"),
        (Method::GET, "/computeruse/screenshot"),
        (Method::GET, "/computeruse/display/windows"),
        (Method::POST, "/computeruse/recordings/start"),
        (Method::DELETE, "/computeruse/recordings/r1"),
        (Method::GET, "/computeruse/recordings/r1/download"),
        (Method::POST, "/computeruse/a11y/node/value"),
    ] {
        let reply = daemon.send(method.clone(), path, empty()).await;
        assert_error_shape(&reply, 400, "FEATURE_NOT_AVAILABLE", method.as_str(), path);
        let body = reply.json();
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("computer use is not available yet"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn computer_use_routes_are_in_the_openapi_document() {
    let daemon = Daemon::start().await;
    let document = daemon.get("/openapi.json").await.json();
    let paths = document["paths"].as_object().unwrap();
    let documented = paths
        .keys()
        .filter(|path| path.starts_with("/computeruse/"))
        .count();
    assert!(
        documented >= 36,
        "only {documented} computer use paths documented"
    );
    assert!(paths["/computeruse/recordings/{id}"]["delete"].is_object());
}
