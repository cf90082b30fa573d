//! Router tests of `/snapshots`: create from an imported image, resources, conflicts, builds
//! refused, pagination, activate and deactivate, and delete with the image it removes.

use std::path::Path;

use axum::http::StatusCode;
use daytona_images::ImageStore;
use serde_json::{Value, json};

use crate::config::LifecycleConfig;
use crate::tests::{KEY, call, harness_with};

/// Writes an OCI layout with one uncompressed layer holding `/etc/passwd` and `/srv/x`, and a
/// configuration with Env and WorkingDir.
pub(crate) fn write_layout(dir: &Path) {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::create_dir_all(rootfs.join("srv")).unwrap();
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndaytona:x:1000:1000::/home/daytona:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("srv/x"), "x").unwrap();
    let mut layer = Vec::new();
    let packed = daytona_images::pack::pack_layer(&rootfs, &mut layer).unwrap();

    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let blob = |bytes: &[u8]| {
        let digest = sha256(bytes);
        std::fs::write(blobs.join(&digest[7..]), bytes).unwrap();
        json!({"digest": digest, "size": bytes.len()})
    };
    let layer_descriptor = blob(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["FROM_IMAGE=1"], "WorkingDir": "/srv"},
        "rootfs": {"type": "layers", "diff_ids": [packed.diff_id]}
    }))
    .unwrap();
    let config_descriptor = blob(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_descriptor["digest"], "size": config_descriptor["size"]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_descriptor["digest"], "size": layer_descriptor["size"]}]
    }))
    .unwrap();
    let manifest_descriptor = blob(&manifest);
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_descriptor["digest"], "size": manifest_descriptor["size"]}]}))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn snapshots_are_created_from_imported_images_and_deleted_with_them() {
    let harness = harness_with(LifecycleConfig::default()).await;
    let cache = harness.state.config.image_cache_dir.clone();
    let source = tempfile::tempdir().unwrap();
    write_layout(source.path());
    let store = ImageStore::open(&cache).unwrap();
    let image = store
        .import("img-a", &source.path().join("layout"), None, &|_| {})
        .unwrap();

    // Create, with resources.
    let body = json!({"name": "snap-a", "imageName": "img-a", "cpu": 1, "memory": 1, "disk": 3});
    let (status, created) = call(
        &harness,
        "POST",
        "/api/snapshots",
        Some(body.clone()),
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["state"], "active");
    assert_eq!(created["imageName"], "img-a");
    assert_eq!(
        (
            created["cpu"].as_i64(),
            created["mem"].as_i64(),
            created["disk"].as_i64()
        ),
        (Some(1), Some(1), Some(3))
    );
    assert_eq!(created["general"], false);

    let (status, reply) = call(&harness, "POST", "/api/snapshots", Some(body), Some(KEY)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{reply}");
    let missing = json!({"name": "snap-b", "imageName": "not-imported"});
    let (status, reply) = call(&harness, "POST", "/api/snapshots", Some(missing), Some(KEY)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        message(&reply).contains("daytona snapshot import"),
        "{reply}"
    );
    // A build is accepted at once and runs in the background.
    let build = json!({"name": "snap-c", "buildInfo": {"dockerfileContent": "FROM x"}});
    let (status, reply) = call(&harness, "POST", "/api/snapshots", Some(build), Some(KEY)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["state"], "building");
    let (status, _) = call(&harness, "DELETE", "/api/snapshots/snap-c", None, Some(KEY)).await;
    assert_eq!(status, StatusCode::OK);
    let bad_build = json!({"name": "snap-e", "buildInfo": {"contextHashes": []}});
    let (status, _) = call(
        &harness,
        "POST",
        "/api/snapshots",
        Some(bad_build),
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let huge = json!({"name": "snap-d", "imageName": "img-a", "cpu": 10_000});
    let (status, _) = call(&harness, "POST", "/api/snapshots", Some(huge), Some(KEY)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Pagination over the default snapshot and the new one.
    let (status, page) = call(
        &harness,
        "GET",
        "/api/snapshots?page=2&limit=1",
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            page["total"].as_i64(),
            page["page"].as_i64(),
            page["totalPages"].as_i64()
        ),
        (Some(2), Some(2), Some(2))
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    // Deactivate, then creates from it are refused until it is activated.
    let (status, _) = call(
        &harness,
        "POST",
        "/api/snapshots/snap-a/deactivate",
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, got) = call(&harness, "GET", "/api/snapshots/snap-a", None, Some(KEY)).await;
    assert_eq!(got["state"], "inactive");
    let (status, reply) = call(
        &harness,
        "POST",
        "/api/sandbox",
        Some(json!({"snapshot": "snap-a"})),
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    let (status, got) = call(
        &harness,
        "POST",
        "/api/snapshots/snap-a/activate",
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(
        (status, got["state"].as_str()),
        (StatusCode::OK, Some("active"))
    );

    // The server's snapshot cannot be changed.
    let default = daytona_images::DEFAULT_SNAPSHOT;
    let (status, _) = call(
        &harness,
        "DELETE",
        &format!("/api/snapshots/{default}"),
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Delete removes the snapshot and, as no other snapshot names it, the image.
    let id = created["id"].as_str().unwrap();
    let (status, _) = call(
        &harness,
        "DELETE",
        &format!("/api/snapshots/{id}"),
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&harness, "GET", "/api/snapshots/snap-a", None, Some(KEY)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(store.get("img-a").unwrap(), None);
    assert!(image.layers.iter().all(|layer| !layer.exists()));
    let blobs = std::fs::read_dir(cache.join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0);
}
