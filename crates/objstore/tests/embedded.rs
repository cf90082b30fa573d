//! The embedded S3 service through a real S3 client (`object_store`) over TLS, trusting the
//! service's CA in the client only, and the client API the server's own code uses.

use std::net::SocketAddr;
use std::time::Duration;

use daytona_objstore::{BUILDS_BUCKET, EmbeddedConfig, Error, ObjectStorage, PushAccess};
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::sync::oneshot;

/// An embedded service on an ephemeral loopback port; stops when dropped.
struct Service {
    storage: ObjectStorage,
    address: SocketAddr,
    dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

fn config(dir: &std::path::Path) -> EmbeddedConfig {
    EmbeddedConfig {
        data_dir: dir.to_owned(),
        tls_dir: dir.join("tls"),
        tls_names: Vec::new(),
    }
}

async fn start() -> Service {
    let dir = tempfile::tempdir().unwrap();
    let storage = ObjectStorage::open_embedded(config(dir.path())).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let (address, _task) = storage
        .spawn_listener("127.0.0.1:0".parse().unwrap(), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    Service {
        storage,
        address,
        dir,
        _stop: stop,
    }
}

impl Service {
    fn client(
        &self,
        bucket: &str,
        access_key: &str,
        secret: &str,
        token: Option<&str>,
    ) -> AmazonS3 {
        let ca = std::fs::read(self.dir.path().join("tls/ca.crt")).unwrap();
        let options = ClientOptions::new()
            .with_root_certificate(object_store::Certificate::from_pem(&ca).unwrap())
            .with_timeout(Duration::from_secs(30));
        let mut builder = AmazonS3Builder::new()
            .with_endpoint(format!("https://localhost:{}", self.address.port()))
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id(access_key)
            .with_secret_access_key(secret)
            .with_client_options(options);
        if let Some(token) = token {
            builder = builder.with_token(token);
        }
        builder.build().unwrap()
    }

    fn root_client(&self, bucket: &str) -> AmazonS3 {
        let (access_key, secret) = self.storage.root_credentials().unwrap();
        self.client(bucket, &access_key, &secret, None)
    }

    fn push_client(&self, access: &PushAccess) -> AmazonS3 {
        self.client(
            &access.bucket,
            &access.access_key,
            &access.secret,
            Some(&access.session_token),
        )
    }
}

/// Whether the service answered 403, which `object_store` reports as `PermissionDenied`.
fn is_denied(error: &object_store::Error) -> bool {
    matches!(error, object_store::Error::PermissionDenied { .. })
}

#[tokio::test]
async fn signed_put_get_head_delete() {
    let service = start().await;
    let client = service.root_client(BUILDS_BUCKET);
    let path = ObjectPath::from("org-a/abc/context.tar");

    client
        .put(&path, PutPayload::from_static(b"hello objects"))
        .await
        .unwrap();
    let head = client.head(&path).await.unwrap();
    assert_eq!(head.size, 13);
    let body = client.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(&body[..], b"hello objects");
    assert!(
        service
            .storage
            .exists(BUILDS_BUCKET, "org-a/abc/context.tar")
            .await
            .unwrap()
    );

    client.delete(&path).await.unwrap();
    let missing = client.head(&path).await.unwrap_err();
    assert!(
        matches!(missing, object_store::Error::NotFound { .. }),
        "{missing:?}"
    );
}

#[tokio::test]
async fn multipart_upload_assembles_parts() {
    let service = start().await;
    let client = service.root_client(BUILDS_BUCKET);
    let path = ObjectPath::from("org-a/big/context.tar");
    let content: Vec<u8> = (0..(11 << 20)).map(|i: u32| (i % 251) as u8).collect();

    let upload = client.put_multipart(&path).await.unwrap();
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 5 << 20);
    writer.write(&content);
    writer.finish().await.unwrap();

    let body = client.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(body.len(), content.len());
    assert!(
        body[..] == content[..],
        "the assembled object differs from what was sent"
    );
}

#[tokio::test]
async fn wrong_secret_is_denied() {
    let service = start().await;
    let (access_key, _) = service.storage.root_credentials().unwrap();
    let client = service.client(BUILDS_BUCKET, &access_key, "not-the-secret", None);
    let error = client
        .put(&ObjectPath::from("org-a/x"), PutPayload::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(is_denied(&error), "{error:?}");
}

#[tokio::test]
async fn expired_session_is_denied() {
    let service = start().await;
    service.storage.set_credentials_lifetime(Duration::ZERO);
    let access = service.storage.push_access("org-a");
    let error = service
        .push_client(&access)
        .put(&ObjectPath::from("org-a/x"), PutPayload::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(is_denied(&error), "{error:?}");
}

#[tokio::test]
async fn session_token_is_required() {
    let service = start().await;
    let access = service.storage.push_access("org-a");
    let client = service.client(&access.bucket, &access.access_key, &access.secret, None);
    let error = client
        .put(&ObjectPath::from("org-a/x"), PutPayload::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(is_denied(&error), "{error:?}");
}

#[tokio::test]
async fn organization_reaches_only_its_prefix() {
    let service = start().await;
    let access = service.storage.push_access("org-a");
    assert_eq!(access.bucket, BUILDS_BUCKET);
    let client = service.push_client(&access);
    service
        .root_client(BUILDS_BUCKET)
        .put(
            &ObjectPath::from("org-b/secret/context.tar"),
            PutPayload::from_static(b"b"),
        )
        .await
        .unwrap();

    let own = ObjectPath::from("org-a/h/context.tar");
    client
        .put(&own, PutPayload::from_static(b"a"))
        .await
        .unwrap();
    assert!(client.head(&own).await.is_ok());

    let read = client
        .get(&ObjectPath::from("org-b/secret/context.tar"))
        .await
        .unwrap_err();
    assert!(
        is_denied(&read),
        "read of another organization's object: {read:?}"
    );
    let write = client
        .put(
            &ObjectPath::from("org-b/evil/context.tar"),
            PutPayload::from_static(b"x"),
        )
        .await
        .unwrap_err();
    assert!(
        is_denied(&write),
        "write below another organization's prefix: {write:?}"
    );
    let prefix_lookalike = client
        .put(
            &ObjectPath::from("org-ab/context.tar"),
            PutPayload::from_static(b"x"),
        )
        .await
        .unwrap_err();
    assert!(is_denied(&prefix_lookalike), "{prefix_lookalike:?}");
    let listing: Result<Vec<_>, _> = client
        .list(Some(&ObjectPath::from("org-b")))
        .try_collect()
        .await;
    let listing = listing.unwrap_err();
    assert!(
        format!("{listing:?}").contains("AccessDenied"),
        "listing of another organization's prefix: {listing:?}"
    );
    let own_listing: Vec<_> = client
        .list(Some(&ObjectPath::from("org-a")))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(own_listing.len(), 1);

    let archives = service.client(
        "daytona-archives",
        &access.access_key,
        &access.secret,
        Some(&access.session_token),
    );
    let other_bucket = archives
        .put(&ObjectPath::from("org-a/x"), PutPayload::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(
        is_denied(&other_bucket),
        "write to the archives bucket: {other_bucket:?}"
    );
    assert!(
        !service
            .storage
            .exists(BUILDS_BUCKET, "org-b/evil/context.tar")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn client_api_round_trip() {
    let service = start().await;
    let storage = &service.storage;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("archive.tar");
    std::fs::write(&source, b"archived files").unwrap();

    storage
        .put_file("daytona-archives", "sandbox-1/archive.tar", &source)
        .await
        .unwrap();
    storage
        .put_file("daytona-archives", "sandbox-1/extra/b", &source)
        .await
        .unwrap();
    storage
        .put_file("daytona-archives", "sandbox-10/archive.tar", &source)
        .await
        .unwrap();
    assert!(
        storage
            .exists("daytona-archives", "sandbox-1/archive.tar")
            .await
            .unwrap()
    );

    // The S3 side sees what the client API wrote.
    let body = service
        .root_client("daytona-archives")
        .get(&ObjectPath::from("sandbox-1/archive.tar"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&body[..], b"archived files");

    let dest = work.path().join("restored.tar");
    std::fs::write(&dest, b"old").unwrap();
    storage
        .get_to_file("daytona-archives", "sandbox-1/archive.tar", &dest)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"archived files");
    let leftovers: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 2, "temporary download files are left");

    let missing = storage
        .get_to_file("daytona-archives", "sandbox-2/archive.tar", &dest)
        .await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );

    storage
        .delete("daytona-archives", "sandbox-1/archive.tar")
        .await
        .unwrap();
    storage
        .delete("daytona-archives", "sandbox-1/archive.tar")
        .await
        .unwrap();
    assert!(
        !storage
            .exists("daytona-archives", "sandbox-1/archive.tar")
            .await
            .unwrap()
    );

    storage
        .delete_prefix("daytona-archives", "sandbox-1/")
        .await
        .unwrap();
    assert!(
        !storage
            .exists("daytona-archives", "sandbox-1/extra/b")
            .await
            .unwrap()
    );
    assert!(
        storage
            .exists("daytona-archives", "sandbox-10/archive.tar")
            .await
            .unwrap()
    );

    let escape = storage
        .put_file("daytona-archives", "../outside", &source)
        .await;
    assert!(
        matches!(escape, Err(Error::InvalidKey { .. })),
        "{escape:?}"
    );
}

#[tokio::test]
async fn crashed_put_is_invisible_and_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    drop(ObjectStorage::open_embedded(config(dir.path())).unwrap());
    let temp = dir
        .path()
        .join("objects/.tmp.daytona-crashed.internal.part");
    std::fs::write(&temp, b"half an object").unwrap();

    let storage = ObjectStorage::open_embedded(config(dir.path())).unwrap();
    assert!(
        !temp.exists(),
        "the temporary file of an interrupted write was kept"
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let (address, _task) = storage
        .spawn_listener("127.0.0.1:0".parse().unwrap(), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    let service = Service {
        storage,
        address,
        dir,
        _stop: stop,
    };
    let listing: Vec<_> = service
        .root_client(BUILDS_BUCKET)
        .list(None)
        .try_collect()
        .await
        .unwrap();
    assert!(listing.is_empty(), "{listing:?}");
}

#[tokio::test]
async fn tls_material_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let ca = daytona_objstore::tls::ensure_ca(&tls).unwrap();
    let first = std::fs::read(&ca).unwrap();
    daytona_objstore::tls::ensure_ca(&tls).unwrap();
    assert_eq!(std::fs::read(&ca).unwrap(), first);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tls.join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
