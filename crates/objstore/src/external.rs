//! An external S3 endpoint, through `object_store`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Error;
use crate::embedded::temp_beside;

/// Part size of multipart uploads; S3 rejects parts below 5 MiB other than the last.
const PART_SIZE: usize = 8 << 20;

/// Settings of an external S3 endpoint.
#[derive(Debug, Clone)]
pub struct ExternalConfig {
    /// Endpoint URL, for example `https://s3.example.com:9000`; requests use path-style URLs.
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// Prepended to the server's bucket names, so that several servers can share an account.
    pub bucket_prefix: String,
}

pub(crate) struct External {
    pub(crate) config: ExternalConfig,
    stores: Mutex<HashMap<String, Arc<AmazonS3>>>,
}

impl External {
    pub(crate) fn new(config: ExternalConfig) -> Result<Self, Error> {
        let external = Self {
            config,
            stores: Mutex::new(HashMap::new()),
        };
        // Checks the settings once, so that a bad URL fails at start.
        external.store(crate::BUILDS_BUCKET)?;
        Ok(external)
    }

    fn store(&self, bucket: &str) -> Result<Arc<AmazonS3>, Error> {
        let mut stores = self.stores.lock().expect("stores lock");
        if let Some(store) = stores.get(bucket) {
            return Ok(store.clone());
        }
        let config = &self.config;
        let store = AmazonS3Builder::new()
            .with_endpoint(&config.endpoint)
            .with_allow_http(config.endpoint.starts_with("http://"))
            .with_region(&config.region)
            .with_bucket_name(format!("{}{bucket}", config.bucket_prefix))
            .with_access_key_id(&config.access_key)
            .with_secret_access_key(&config.secret_key)
            .build()
            .map_err(|source| Error::ExternalConfig {
                endpoint: config.endpoint.clone(),
                source: Box::new(source),
            })?;
        let store = Arc::new(store);
        stores.insert(bucket.to_owned(), store.clone());
        Ok(store)
    }

    fn error(&self, bucket: &str, key: &str) -> impl FnOnce(object_store::Error) -> Error {
        let (endpoint, bucket, key) = (
            self.config.endpoint.clone(),
            bucket.to_owned(),
            key.to_owned(),
        );
        move |source| match source {
            object_store::Error::NotFound { .. } => Error::NotFound { bucket, key },
            source => Error::External {
                endpoint,
                bucket,
                key,
                source: Box::new(source),
            },
        }
    }

    pub(crate) async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        source: &Path,
    ) -> Result<(), Error> {
        let store = self.store(bucket)?;
        let location = object_path(key)?;
        let mut file = tokio::fs::File::open(source)
            .await
            .map_err(Error::io("open", source))?;
        let length = file
            .metadata()
            .await
            .map_err(Error::io("inspect", source))?
            .len();
        if length <= PART_SIZE as u64 {
            let mut contents = Vec::with_capacity(length as usize);
            file.read_to_end(&mut contents)
                .await
                .map_err(Error::io("read", source))?;
            store
                .put(&location, PutPayload::from(contents))
                .await
                .map_err(self.error(bucket, key))?;
            return Ok(());
        }

        let upload = store
            .put_multipart(&location)
            .await
            .map_err(self.error(bucket, key))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buffer = vec![0; 1 << 20];
        loop {
            let read = match file.read(&mut buffer).await {
                Ok(read) => read,
                Err(error) => {
                    let _ = writer.abort().await;
                    return Err(Error::io("read", source)(error));
                }
            };
            if read == 0 {
                break;
            }
            writer.write(&buffer[..read]);
        }
        writer.finish().await.map_err(self.error(bucket, key))?;
        Ok(())
    }

    pub(crate) async fn get_to_file(
        &self,
        bucket: &str,
        key: &str,
        destination: &Path,
    ) -> Result<(), Error> {
        let store = self.store(bucket)?;
        let result = store
            .get(&object_path(key)?)
            .await
            .map_err(self.error(bucket, key))?;
        let temp = temp_beside(destination);
        let written = async {
            let mut file = tokio::fs::File::create(&temp)
                .await
                .map_err(Error::io("create", &temp))?;
            let mut stream = result.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(self.error(bucket, key))?;
                file.write_all(&chunk)
                    .await
                    .map_err(Error::io("write", &temp))?;
            }
            file.sync_all().await.map_err(Error::io("sync", &temp))?;
            tokio::fs::rename(&temp, destination)
                .await
                .map_err(Error::io("rename into", destination))
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        written
    }

    pub(crate) async fn exists(&self, bucket: &str, key: &str) -> Result<bool, Error> {
        let store = self.store(bucket)?;
        match store.head(&object_path(key)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(self.error(bucket, key)(source)),
        }
    }

    pub(crate) async fn delete(&self, bucket: &str, key: &str) -> Result<(), Error> {
        let store = self.store(bucket)?;
        match store.delete(&object_path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(self.error(bucket, key)(source)),
        }
    }

    pub(crate) async fn delete_prefix(&self, bucket: &str, prefix: &str) -> Result<(), Error> {
        let store = self.store(bucket)?;
        let folder = object_path(prefix.trim_end_matches('/'))?;
        // `list` matches whole path segments, so `a/b` lists `a/b/...` and not `a/bc`.
        let mut listing = store.list(Some(&folder));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(self.error(bucket, prefix))?;
            self.delete(bucket, meta.location.as_ref()).await?;
        }
        Ok(())
    }
}

fn object_path(key: &str) -> Result<ObjectPath, Error> {
    ObjectPath::parse(key).map_err(|_| Error::InvalidKey {
        key: key.to_owned(),
    })
}
