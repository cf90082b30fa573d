//! Object storage as the server uses it: sandbox archives and build contexts.
//!
//! TODO: this stores objects as files under `<data-dir>/objects` and is replaced by the S3
//! object storage once it lands; its methods have the same signatures.

use std::io;
use std::path::{Path, PathBuf};

/// Object storage rooted at a directory: bucket `b`, key `k` is the file `<root>/b/k`.
#[derive(Debug, Clone)]
pub struct ObjectStorage {
    root: PathBuf,
}

/// Errors of object storage operations.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object {bucket}/{key} not found")]
    NotFound { bucket: String, key: String },
    #[error("invalid object key {key:?}")]
    InvalidKey { key: String },
    #[error("object storage failed on {bucket}/{key}")]
    Io {
        bucket: String,
        key: String,
        #[source]
        source: io::Error,
    },
}

impl ObjectStorage {
    pub fn open(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    fn path(&self, bucket: &str, key: &str) -> Result<PathBuf, ObjectError> {
        let valid = !key.is_empty()
            && key
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..");
        if !valid {
            return Err(ObjectError::InvalidKey {
                key: key.to_owned(),
            });
        }
        Ok(self.root.join(bucket).join(key))
    }

    pub async fn put_file(&self, bucket: &str, key: &str, path: &Path) -> Result<(), ObjectError> {
        let target = self.path(bucket, key)?;
        let source = path.to_owned();
        let io_error = |source| ObjectError::Io {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            source,
        };
        tokio::task::spawn_blocking(move || {
            let parent = target.parent().expect("object paths have a parent");
            std::fs::create_dir_all(parent)?;
            let temporary = parent.join(format!(".{}.part", uuid::Uuid::new_v4()));
            let copied = std::fs::copy(&source, &temporary)
                .and_then(|_| std::fs::File::open(&temporary)?.sync_all())
                .and_then(|()| std::fs::rename(&temporary, &target));
            if copied.is_err() {
                let _ = std::fs::remove_file(&temporary);
            }
            copied
        })
        .await
        .expect("storing an object does not panic")
        .map_err(io_error)
    }

    pub async fn get_to_file(
        &self,
        bucket: &str,
        key: &str,
        dest: &Path,
    ) -> Result<(), ObjectError> {
        let source = self.path(bucket, key)?;
        if !source.is_file() {
            return Err(ObjectError::NotFound {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            });
        }
        let dest = dest.to_owned();
        tokio::task::spawn_blocking(move || {
            let temporary = dest.with_extension("part");
            let copied =
                std::fs::copy(&source, &temporary).and_then(|_| std::fs::rename(&temporary, &dest));
            if copied.is_err() {
                let _ = std::fs::remove_file(&temporary);
            }
            copied
        })
        .await
        .expect("reading an object does not panic")
        .map_err(|source| ObjectError::Io {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            source,
        })
    }

    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), ObjectError> {
        match std::fs::remove_file(self.path(bucket, key)?) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(ObjectError::Io {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                source: error,
            }),
            _ => Ok(()),
        }
    }
}
