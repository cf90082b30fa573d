//! Router tests of the registry under `/v2/`: basic auth with an API key, blob uploads
//! (monolithic, chunked, mounts, digest checks), manifests by tag and digest, tags, snapshots
//! of pushed images, and a pull by reference from a second instance served on loopback.

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use daytona_images::{Credentials, ImageStore};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::config::LifecycleConfig;
use crate::routes;
use crate::tests::{Harness, KEY, call, harness_with};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    fn error_code(&self) -> String {
        let body: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        body["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn basic(key: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("user:{key}")))
}

async fn send(
    harness: &Harness,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", basic(KEY));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = routes::router(harness.state.clone())
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Builds a one-layer image: (layer blob, config blob, manifest bytes).
fn small_image(content: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndaytona:x:1000:1000::/home/daytona:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/content"), content).unwrap();
    let mut layer = Vec::new();
    let packed = daytona_images::pack::pack_layer(&rootfs, &mut layer).unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["FROM_REGISTRY=1"]},
        "rootfs": {"type": "layers", "diff_ids": [packed.diff_id]}
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(&layer), "size": layer.len()}]
    }))
    .unwrap();
    (layer, config, manifest)
}

/// Pushes `blob` monolithically to repository `name`.
async fn push_blob(harness: &Harness, name: &str, blob: &[u8]) {
    let path = format!("/v2/{name}/blobs/uploads/?digest={}", sha256(blob));
    let reply = send(harness, "POST", &path, &[], blob.to_vec()).await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{:?}",
        reply.error_code()
    );
}

async fn push_image(harness: &Harness, name: &str, tag: &str, content: &str) -> String {
    let (layer, config, manifest) = small_image(content);
    push_blob(harness, name, &layer).await;
    push_blob(harness, name, &config).await;
    let reply = send(
        harness,
        "PUT",
        &format!("/v2/{name}/manifests/{tag}"),
        &[("content-type", OCI_MANIFEST)],
        manifest.clone(),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("docker-content-digest"), sha256(&manifest));
    sha256(&manifest)
}

#[tokio::test]
async fn registry_auth_takes_api_key_as_password() {
    let harness = harness_with(LifecycleConfig::default()).await;
    let anonymous = routes::router(harness.state.clone())
        .oneshot(Request::get("/v2/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Basic realm=\"daytona\""
    );
    let body = axum::body::to_bytes(anonymous.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");

    let wrong = routes::router(harness.state.clone())
        .oneshot(
            Request::get("/v2/")
                .header("authorization", basic("dtn_wrong"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let reply = send(&harness, "GET", "/v2/", &[], Vec::new()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("docker-distribution-api-version"),
        "registry/2.0"
    );

    // A key without write:snapshots pulls but does not push.
    let organization = harness
        .state
        .store
        .ensure_organization("default")
        .await
        .unwrap();
    let reader = "dtn_reader_0123456789";
    harness
        .state
        .store
        .insert_api_key(
            &crate::store::ApiKeyRecord {
                id: "key-reader".into(),
                organization_id: organization.id,
                name: "reader".into(),
                key_prefix: "dtn_read".into(),
                is_admin: false,
                created_at: daytona_wire::now_rfc3339(),
                last_used_at: None,
                revoked_at: None,
                permissions: Some(Vec::new()),
                expires_at: None,
            },
            &crate::auth::hash_key(reader),
        )
        .await
        .unwrap();
    let as_reader = |method: &str, path: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", basic(reader))
            .body(Body::empty())
            .unwrap()
    };
    let router = routes::router(harness.state.clone());
    let read = router
        .clone()
        .oneshot(as_reader("GET", "/v2/"))
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let push = router
        .oneshot(as_reader("POST", "/v2/apps/a/blobs/uploads/"))
        .await
        .unwrap();
    assert_eq!(push.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn blob_uploads_monolithic_chunked_and_checked() {
    let harness = harness_with(LifecycleConfig::default()).await;
    let whole = b"whole blob".to_vec();
    push_blob(&harness, "apps/a", &whole).await;
    let path = format!("/v2/apps/a/blobs/{}", sha256(&whole));
    let head = send(&harness, "HEAD", &path, &[], Vec::new()).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), whole.len().to_string());
    assert_eq!(head.header("docker-content-digest"), sha256(&whole));
    let get = send(&harness, "GET", &path, &[], Vec::new()).await;
    assert_eq!(get.body, whole);

    // Chunked: POST, two PATCHes, PUT with the digest.
    let started = send(
        &harness,
        "POST",
        "/v2/apps/a/blobs/uploads/",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(started.status, StatusCode::ACCEPTED);
    let location = started.header("location").to_owned();
    assert!(
        location.starts_with("/v2/apps/a/blobs/uploads/"),
        "{location}"
    );
    let first = send(&harness, "PATCH", &location, &[], b"first ".to_vec()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(first.header("range"), "0-5");
    let second = send(&harness, "PATCH", &location, &[], b"second".to_vec()).await;
    assert_eq!(second.header("range"), "0-11");
    let status = send(&harness, "GET", &location, &[], Vec::new()).await;
    assert_eq!(status.status, StatusCode::NO_CONTENT);
    let content = b"first second".to_vec();
    let finished = send(
        &harness,
        "PUT",
        &format!("{location}?digest={}", sha256(&content)),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(finished.status, StatusCode::CREATED);
    let get = send(
        &harness,
        "GET",
        &format!("/v2/apps/a/blobs/{}", sha256(&content)),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(get.body, content);

    // Content that does not match its digest never becomes a blob.
    let started = send(
        &harness,
        "POST",
        "/v2/apps/a/blobs/uploads/",
        &[],
        Vec::new(),
    )
    .await;
    let location = started.header("location").to_owned();
    let claimed = sha256(b"something else");
    let wrong = send(
        &harness,
        "PUT",
        &format!("{location}?digest={claimed}"),
        &[],
        b"content".to_vec(),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong.error_code(), "DIGEST_INVALID");
    let gone = send(&harness, "GET", &location, &[], Vec::new()).await;
    assert_eq!(gone.error_code(), "BLOB_UPLOAD_UNKNOWN");
    let missing = send(
        &harness,
        "HEAD",
        &format!("/v2/apps/a/blobs/{claimed}"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // A mount of a blob the store has needs no upload.
    let mount = send(
        &harness,
        "POST",
        &format!(
            "/v2/apps/b/blobs/uploads/?mount={}&from=apps/a",
            sha256(&whole)
        ),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(mount.status, StatusCode::CREATED);
}

#[tokio::test]
async fn manifest_push_creates_snapshot_image() {
    let harness = harness_with(LifecycleConfig::default()).await;
    let (layer, config, manifest) = small_image("one");

    // Blobs first: a manifest whose blobs are missing is refused.
    let early = send(
        &harness,
        "PUT",
        "/v2/apps/x/manifests/v1",
        &[("content-type", OCI_MANIFEST)],
        manifest.clone(),
    )
    .await;
    assert_eq!(early.status, StatusCode::BAD_REQUEST);
    assert_eq!(early.error_code(), "MANIFEST_BLOB_UNKNOWN");

    push_blob(&harness, "apps/x", &layer).await;
    push_blob(&harness, "apps/x", &config).await;
    let index = send(
        &harness,
        "PUT",
        "/v2/apps/x/manifests/v1",
        &[("content-type", "application/vnd.oci.image.index.v1+json")],
        manifest.clone(),
    )
    .await;
    assert_eq!(index.error_code(), "MANIFEST_INVALID");
    let digest = push_image(&harness, "apps/x", "v1", "one").await;

    for reference in ["v1", digest.as_str()] {
        let got = send(
            &harness,
            "GET",
            &format!("/v2/apps/x/manifests/{reference}"),
            &[],
            Vec::new(),
        )
        .await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body, manifest);
        assert_eq!(got.header("content-type"), OCI_MANIFEST);
        assert_eq!(got.header("docker-content-digest"), digest);
    }
    let unknown = send(&harness, "GET", "/v2/apps/x/manifests/v2", &[], Vec::new()).await;
    assert_eq!(unknown.error_code(), "MANIFEST_UNKNOWN");
    let tags = send(&harness, "GET", "/v2/apps/x/tags/list", &[], Vec::new()).await;
    let tags: Value = serde_json::from_slice(&tags.body).unwrap();
    assert_eq!(tags, json!({"name": "apps/x", "tags": ["v1"]}));

    // The image is in the store, unpacked, and a snapshot can name it.
    let store = ImageStore::open(&harness.state.config.image_cache_dir).unwrap();
    let image = store.get("apps/x:v1").unwrap().unwrap();
    assert_eq!(
        std::fs::read_to_string(image.layers[0].join("etc/content")).unwrap(),
        "one"
    );
    let body = json!({"name": "pushed", "imageName": "apps/x:v1"});
    let (status, created) = call(&harness, "POST", "/api/snapshots", Some(body), Some(KEY)).await;
    assert_eq!(status, StatusCode::OK, "{created}");

    // A tag that a snapshot uses does not move to another manifest.
    let (layer, config, other) = small_image("two");
    push_blob(&harness, "apps/x", &layer).await;
    push_blob(&harness, "apps/x", &config).await;
    let moved = send(
        &harness,
        "PUT",
        "/v2/apps/x/manifests/v1",
        &[("content-type", OCI_MANIFEST)],
        other,
    )
    .await;
    assert_eq!(moved.status, StatusCode::FORBIDDEN);
    assert_eq!(moved.error_code(), "DENIED");
}

#[tokio::test]
async fn pull_by_reference_from_second_instance() {
    let registry = harness_with(LifecycleConfig::default()).await;
    let digest = push_image(&registry, "apps/pulled", "v1", "pulled").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = routes::router(registry.state.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let puller = harness_with(LifecycleConfig::default()).await;
    let reference = format!("127.0.0.1:{}/apps/pulled:v1", address.port());

    // Without credentials the registry's 401 is reported.
    let body = json!({"name": "anonymous", "imageName": reference});
    let (status, reply) = call(&puller, "POST", "/api/snapshots", Some(body), Some(KEY)).await;
    if std::env::var_os(super::PULL_AUTH_ENV).is_none() {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
        assert!(
            reply["message"]
                .as_str()
                .unwrap_or_default()
                .contains("401"),
            "{reply}"
        );
    }

    let store = ImageStore::open(&puller.state.config.image_cache_dir).unwrap();
    let credentials = Credentials::parse(&format!("user:{KEY}")).unwrap();
    let image = store
        .pull(&reference, &reference, Some(&credentials), &|_| {})
        .await
        .unwrap();
    assert_eq!(image.manifest_digest, digest);
    assert_eq!(image.config.env, ["FROM_REGISTRY=1"]);
    assert_eq!(
        std::fs::read_to_string(image.layers[0].join("etc/content")).unwrap(),
        "pulled"
    );
    // A second pull finds the image.
    let again = store
        .pull(&reference, &reference, Some(&credentials), &|_| {})
        .await
        .unwrap();
    assert_eq!(again, image);

    // The pulled image is in the store under its reference, so a snapshot can name it.
    let body = json!({"name": "pulled", "imageName": reference});
    let (status, created) = call(&puller, "POST", "/api/snapshots", Some(body), Some(KEY)).await;
    assert_eq!(status, StatusCode::OK, "{created}");

    // A digest that the registry does not have fails the pull and leaves nothing behind.
    let missing = format!(
        "127.0.0.1:{}/apps/pulled@sha256:{}",
        address.port(),
        "0".repeat(64)
    );
    let error = store
        .pull(&missing, "missing", Some(&credentials), &|_| {})
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("pull"), "{error:#}");
    assert!(store.get("missing").unwrap().is_none());
    let journals = std::fs::read_dir(store.root().join("journal")).unwrap();
    assert_eq!(journals.count(), 0);
    server.abort();
}
