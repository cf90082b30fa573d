//! [`ObjectStorage`]: the server's handle on its object storage.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

use crate::credentials::{Keyring, PushAccess, TEMPORARY_CREDENTIALS_LIFETIME};
use crate::embedded::Embedded;
use crate::external::{External, ExternalConfig};
use crate::{BUILDS_BUCKET, DEFAULT_REGION, Error};

/// Settings of the embedded S3 service.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// The server's data directory: objects go to `objects/` below it, the root credentials
    /// to `object-storage-credentials.json`.
    pub data_dir: PathBuf,
    /// Directory of the local CA and the server certificate (see [`crate::tls`]).
    pub tls_dir: PathBuf,
    /// Host names and addresses the server certificate covers besides `localhost`,
    /// `127.0.0.1` and `::1`.
    pub tls_names: Vec<String>,
}

/// Object storage of the server; cheap to clone.
#[derive(Clone)]
pub struct ObjectStorage {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    /// Lifetime of the credentials that [`ObjectStorage::push_access`] issues.
    credentials_lifetime: Mutex<Duration>,
}

enum Backend {
    Embedded {
        files: Embedded,
        keyring: Keyring,
        tls_dir: PathBuf,
        tls_names: Vec<String>,
        /// The S3 backend over the same directory, until [`ObjectStorage::serve`] takes it.
        service_backend: Mutex<Option<s3s_fs::FileSystem>>,
    },
    External(External),
}

/// Makes ring the process's TLS provider, which reqwest (built without a provider of its own)
/// requires. Keeps an already installed one.
fn install_crypto_provider() {
    let _ = crate::tls::crypto_provider().install_default();
}

/// Checks that `bucket` and `key` name an object inside the bucket's folder.
fn validate(bucket: &str, key: &str) -> Result<(), Error> {
    if !s3s::path::check_bucket_name(bucket) {
        return Err(Error::InvalidBucket {
            bucket: bucket.to_owned(),
        });
    }
    let valid = !key.is_empty()
        && key.len() <= 1024
        && !key.contains('\0')
        && key
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..");
    if !valid {
        return Err(Error::InvalidKey {
            key: key.to_owned(),
        });
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .expect("object storage file task panicked")
}

impl ObjectStorage {
    /// Opens the embedded store under `<data-dir>/objects/`: creates the buckets, the root
    /// credentials and the TLS material that are missing, and removes the temporary files of
    /// writes that a crash interrupted. The listener starts with [`ObjectStorage::serve`].
    pub fn open_embedded(config: EmbeddedConfig) -> Result<Self, Error> {
        install_crypto_provider();
        let root = config.data_dir.join("objects");
        for bucket in [crate::BUILDS_BUCKET, crate::ARCHIVES_BUCKET] {
            let dir = root.join(bucket);
            std::fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        }
        let backend = s3s_fs::FileSystem::new(&root).map_err(|error| Error::Backend {
            root: root.clone(),
            message: format!("{error:?}"),
        })?;
        let keyring = Keyring::open(&config.data_dir.join("object-storage-credentials.json"))?;
        crate::tls::ensure_ca(&config.tls_dir)?;
        Ok(Self::new(Backend::Embedded {
            files: Embedded::new(root),
            keyring,
            tls_dir: config.tls_dir,
            tls_names: config.tls_names,
            service_backend: Mutex::new(Some(backend)),
        }))
    }

    /// Uses the external S3 endpoint of `config`. Its buckets must exist.
    pub fn open_external(config: ExternalConfig) -> Result<Self, Error> {
        install_crypto_provider();
        Ok(Self::new(Backend::External(External::new(config)?)))
    }

    fn new(backend: Backend) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                credentials_lifetime: Mutex::new(TEMPORARY_CREDENTIALS_LIFETIME),
            }),
        }
    }

    /// Whether this is the embedded service, whose listener [`ObjectStorage::serve`] runs.
    pub fn is_embedded(&self) -> bool {
        matches!(self.inner.backend, Backend::Embedded { .. })
    }

    /// The root credentials of the embedded service (access key, secret), for tests and
    /// tools; `None` for an external endpoint.
    pub fn root_credentials(&self) -> Option<(String, String)> {
        match &self.inner.backend {
            Backend::Embedded { keyring, .. } => {
                let (access_key, secret) = keyring.root();
                Some((access_key.to_owned(), secret.to_owned()))
            }
            Backend::External(_) => None,
        }
    }

    /// Test aid: sets the lifetime of credentials issued from now on.
    pub fn set_credentials_lifetime(&self, lifetime: Duration) {
        *self
            .inner
            .credentials_lifetime
            .lock()
            .expect("lifetime lock") = lifetime;
    }

    /// Serves the embedded S3 service over HTTPS on `listener` until `shutdown` completes.
    /// Issues the server certificate first if it is missing or its names changed. Runs once
    /// per store; fails with [`Error::NotEmbedded`] for an external endpoint.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let Backend::Embedded {
            keyring,
            tls_dir,
            tls_names,
            service_backend,
            ..
        } = &self.inner.backend
        else {
            return Err(Error::NotEmbedded);
        };
        let tls = crate::tls::server_config(tls_dir, tls_names)?;
        let backend = service_backend
            .lock()
            .expect("backend lock")
            .take()
            .expect("ObjectStorage::serve runs once");
        let mut builder = S3ServiceBuilder::new(backend);
        builder.set_auth(keyring.clone());
        builder.set_access(keyring.clone());
        let address = listener.local_addr().ok();
        tracing::info!(address = ?address, "object storage listening (HTTPS)");
        crate::server::serve(listener, tls, builder.build(), shutdown).await;
        Ok(())
    }

    /// Binds `address` and serves as [`ObjectStorage::serve`] does, returning the bound
    /// address and the task. For port 0 the address names the port the system chose.
    pub async fn spawn_listener(
        &self,
        address: SocketAddr,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(SocketAddr, tokio::task::JoinHandle<Result<(), Error>>), Error> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| Error::Io {
                operation: "listen on",
                path: PathBuf::from(address.to_string()),
                source,
            })?;
        let bound = listener
            .local_addr()
            .map_err(Error::io("read the address of", address.to_string()))?;
        let storage = self.clone();
        let task = tokio::spawn(async move { storage.serve(listener, shutdown).await });
        Ok((bound, task))
    }

    /// Issues credentials with which `organization_id` may upload build contexts below
    /// `<organization_id>/` in the builds bucket. For an external endpoint these are the
    /// configured credentials.
    // NOTE: with an external endpoint the credentials are the server's own and reach every
    // organization's prefix and every bucket; the endpoint would need an STS to do better.
    pub fn push_access(&self, organization_id: &str) -> PushAccess {
        match &self.inner.backend {
            Backend::Embedded { keyring, .. } => {
                let lifetime = *self
                    .inner
                    .credentials_lifetime
                    .lock()
                    .expect("lifetime lock");
                let (access_key, secret, session_token) = keyring.issue(organization_id, lifetime);
                PushAccess {
                    access_key,
                    secret,
                    session_token,
                    storage_url: None,
                    organization_id: organization_id.to_owned(),
                    bucket: BUILDS_BUCKET.to_owned(),
                    region: DEFAULT_REGION.to_owned(),
                }
            }
            Backend::External(external) => {
                let config = &external.config;
                PushAccess {
                    access_key: config.access_key.clone(),
                    secret: config.secret_key.clone(),
                    // The SDK requires a string; an empty token adds no header.
                    session_token: String::new(),
                    storage_url: Some(config.endpoint.clone()),
                    organization_id: organization_id.to_owned(),
                    bucket: format!("{}{BUILDS_BUCKET}", config.bucket_prefix),
                    region: config.region.clone(),
                }
            }
        }
    }

    /// Uploads the file at `path` as `bucket`/`key`, replacing any object there. Readers see
    /// the old object or the whole new one.
    pub async fn put_file(&self, bucket: &str, key: &str, path: &Path) -> Result<(), Error> {
        validate(bucket, key)?;
        match &self.inner.backend {
            Backend::Embedded { .. } => {
                let (storage, bucket, key, path) = (
                    self.clone(),
                    bucket.to_owned(),
                    key.to_owned(),
                    path.to_owned(),
                );
                blocking(move || storage.embedded().put_file(&bucket, &key, &path)).await
            }
            Backend::External(external) => external.put_file(bucket, key, path).await,
        }
    }

    /// Downloads `bucket`/`key` to `dest`, through a temporary file renamed into place.
    /// Fails with [`Error::NotFound`] when the object does not exist.
    pub async fn get_to_file(&self, bucket: &str, key: &str, dest: &Path) -> Result<(), Error> {
        validate(bucket, key)?;
        match &self.inner.backend {
            Backend::Embedded { .. } => {
                let (storage, bucket, key, dest) = (
                    self.clone(),
                    bucket.to_owned(),
                    key.to_owned(),
                    dest.to_owned(),
                );
                blocking(move || storage.embedded().get_to_file(&bucket, &key, &dest)).await
            }
            Backend::External(external) => external.get_to_file(bucket, key, dest).await,
        }
    }

    pub async fn exists(&self, bucket: &str, key: &str) -> Result<bool, Error> {
        validate(bucket, key)?;
        match &self.inner.backend {
            Backend::Embedded { files, .. } => Ok(files.exists(bucket, key)),
            Backend::External(external) => external.exists(bucket, key).await,
        }
    }

    /// Deletes `bucket`/`key`; a missing object is not an error.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), Error> {
        validate(bucket, key)?;
        match &self.inner.backend {
            Backend::Embedded { .. } => {
                let (storage, bucket, key) = (self.clone(), bucket.to_owned(), key.to_owned());
                blocking(move || storage.embedded().delete(&bucket, &key)).await
            }
            Backend::External(external) => external.delete(bucket, key).await,
        }
    }

    /// Deletes every object below the folder `prefix`: `a/b` and `a/b/` both delete `a/b/...`
    /// and leave `a/bc`.
    pub async fn delete_prefix(&self, bucket: &str, prefix: &str) -> Result<(), Error> {
        validate(bucket, prefix.trim_end_matches('/'))?;
        match &self.inner.backend {
            Backend::Embedded { .. } => {
                let (storage, bucket, prefix) =
                    (self.clone(), bucket.to_owned(), prefix.to_owned());
                blocking(move || storage.embedded().delete_prefix(&bucket, &prefix)).await
            }
            Backend::External(external) => external.delete_prefix(bucket, prefix).await,
        }
    }

    fn embedded(&self) -> &Embedded {
        match &self.inner.backend {
            Backend::Embedded { files, .. } => files,
            Backend::External(_) => unreachable!("called only for the embedded backend"),
        }
    }
}
