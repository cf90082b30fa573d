//! The image store as the storage of an OCI distribution registry.
//!
//! Blob uploads are written under `uploads/`. They are not in `tmp/`, because every writer
//! empties `tmp/` when it takes the store lock while an upload spans several requests. When the
//! client finishes an upload, it is hashed and renamed into `blobs/` only if the content has the
//! digest the client named. A pushed manifest whose blobs are all in the store becomes an image: its layers are
//! unpacked, the manifest is stored as a blob, and, when pushed by tag, its name is written to
//! `index.json`, as an import does. Pulled images enter the store through the same step.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::gc::{Journal, Object};
use crate::oci::{
    self, ANNOTATION_CREATED, ANNOTATION_REF_NAME, ImageConfiguration, ImageManifest,
};
use crate::store::{create_dir, descriptor, remove_temporary, rfc3339, to_json};
use crate::{Error, Image, ImageStore, Progress, fault};

const UPLOAD_DIR: &str = "uploads";

/// Uploads untouched for this long are removed when the next upload starts.
const STALE_UPLOAD_AGE: Duration = Duration::from_secs(24 * 3600);

/// Media type of a Docker image manifest, schema 2.
const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The manifest media types the store accepts from a push or a pull: OCI and Docker schema 2
/// image manifests.
pub const MANIFEST_MEDIA_TYPES: [&str; 2] = [oci::MEDIA_TYPE_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST];

/// A manifest as a registry serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

impl ImageStore {
    /// Returns the path and size of blob `digest`, or `None` when the store does not have it.
    pub fn blob_file(&self, digest: &str) -> Result<Option<(PathBuf, u64)>, Error> {
        let path = self.blob_path(digest)?;
        match fs::metadata(&path) {
            Ok(metadata) if metadata.is_file() => Ok(Some((path, metadata.len()))),
            Ok(_) => Ok(None),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::ReadFile { path, source }),
        }
    }

    /// Starts upload `id` (letters, digits and `-`, at most 64) as an empty file and returns its
    /// path. Uploads older than a day are removed first.
    pub fn create_upload(&self, id: &str) -> Result<PathBuf, Error> {
        create_dir(&self.upload_dir(), 0o700)?;
        self.remove_stale_uploads();
        let path = self.upload_path(id)?;
        crate::store::create_new_file(&path)
            .map_err(|source| Error::WriteFile {
                path: path.clone(),
                source,
            })
            .map(|_| path)
    }

    /// Returns the path of upload `id`; an id of another form is [`Error::UploadNotFound`].
    pub fn upload_path(&self, id: &str) -> Result<PathBuf, Error> {
        let valid = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let not_found = || Error::UploadNotFound { id: id.to_owned() };
        if !valid {
            return Err(not_found());
        }
        Ok(self.upload_dir().join(id))
    }

    /// Returns the size of upload `id` so far.
    pub fn upload_size(&self, id: &str) -> Result<u64, Error> {
        let path = self.upload_path(id)?;
        fs::metadata(&path)
            .map(|metadata| metadata.len())
            .map_err(|_| Error::UploadNotFound { id: id.to_owned() })
    }

    /// Checks upload `id` against `digest` and moves it into the blobs; returns the blob size.
    /// The upload is gone afterwards, whether its content matched or not.
    ///
    /// NOTE: this runs without the store lock, and no journal lists the blob. An image removal
    /// at the same moment may delete a blob it shared with the push (the manifest push then fails
    /// with `ManifestBlobMissing` and the client pushes the blob again), and a blob that no
    /// manifest ever references stays in `blobs/` until it is removed by hand.
    pub fn commit_upload(&self, id: &str, digest: &str) -> Result<u64, Error> {
        let target = self.blob_path(digest)?;
        let path = self.upload_path(id)?;
        let (actual, size) = match hash_file(&path) {
            Ok(hashed) => hashed,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(Error::UploadNotFound { id: id.to_owned() });
            }
            Err(source) => {
                remove_temporary(&path);
                return Err(Error::ReadFile { path, source });
            }
        };
        if actual != digest {
            remove_temporary(&path);
            return Err(Error::UploadDigestMismatch {
                expected: digest.to_owned(),
                actual,
            });
        }
        if target.exists() {
            remove_temporary(&path);
            return Ok(size);
        }
        File::open(&path)
            .and_then(|file| file.sync_all())
            .map_err(|source| Error::WriteFile {
                path: path.clone(),
                source,
            })?;
        self.rename_into_place(&path, &target)?;
        tracing::info!(blob = digest, size, "pushed blob stored");
        Ok(size)
    }

    /// Removes upload `id`; an upload that does not exist is not an error.
    pub fn remove_upload(&self, id: &str) -> Result<(), Error> {
        let path = self.upload_path(id)?;
        remove_temporary(&path);
        Ok(())
    }

    /// Returns the manifest of image `name`, or `None` when no image has that name.
    pub fn manifest(&self, name: &str) -> Result<Option<StoredManifest>, Error> {
        let index = self.read_index()?;
        let Some(descriptor) = index.find(name) else {
            return Ok(None);
        };
        let bytes = self.read_verified_blob(&descriptor.digest)?;
        Ok(Some(StoredManifest {
            digest: descriptor.digest.clone(),
            media_type: descriptor.media_type.clone(),
            bytes,
        }))
    }

    /// Returns manifest `digest` when the store has it as an image manifest: named in
    /// `index.json`, or a blob whose `mediaType` field is that of an image manifest.
    pub fn manifest_by_digest(&self, digest: &str) -> Result<Option<StoredManifest>, Error> {
        let index = self.read_index()?;
        let listed = index
            .manifests
            .iter()
            .find(|d| d.digest == digest)
            .map(|d| d.media_type.clone());
        if listed.is_none() && self.blob_file(digest)?.is_none() {
            return Ok(None);
        }
        let bytes = self.read_verified_blob(digest)?;
        let media_type = listed.or_else(|| {
            serde_json::from_slice::<Value>(&bytes)
                .ok()?
                .get("mediaType")?
                .as_str()
                .filter(|media_type| MANIFEST_MEDIA_TYPES.contains(media_type))
                .map(str::to_owned)
        });
        Ok(media_type.map(|media_type| StoredManifest {
            digest: digest.to_owned(),
            media_type,
            bytes,
        }))
    }

    /// Returns the names of every image in `index.json`.
    pub fn names(&self) -> Result<Vec<String>, Error> {
        Ok(self
            .read_index()?
            .manifests
            .iter()
            .filter_map(|d| d.annotation(ANNOTATION_REF_NAME).map(str::to_owned))
            .collect())
    }

    /// Stores a pushed manifest whose blobs are in the store: unpacks its layers, stores it as a
    /// blob and, with `name`, points `name` at it (replacing what `name` named). Returns its
    /// digest. Blocks until done (call it from `spawn_blocking` in async code).
    pub fn put_manifest(
        &self,
        name: Option<&str>,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<String, Error> {
        if let Some(name) = name
            && !crate::is_valid_name(name)
        {
            return Err(Error::InvalidName {
                name: name.to_owned(),
            });
        }
        let lock = match self.try_lock()? {
            Some(lock) => lock,
            None => self.lock_blocking()?,
        };
        self.remove_temporaries();
        let mut journal = Journal::create(self, "push")?;
        let progress = |line: &str| tracing::debug!(line, "push");
        let result = self.commit_manifest(&mut journal, name, bytes, media_type, &progress);
        match result {
            Ok(_) => journal.finish(),
            Err(_) => {
                drop(journal);
                self.recover_journals();
            }
        }
        drop(lock);
        let digest = oci::sha256_digest(bytes);
        result.map(|_| digest)
    }

    /// Records a manifest whose blobs are in the store, with the lock held: the layers are
    /// unpacked, then the manifest blob is written, then the name. Returns the image when
    /// `name` is given.
    pub(crate) fn commit_manifest(
        &self,
        journal: &mut Journal,
        name: Option<&str>,
        bytes: &[u8],
        media_type: &str,
        progress: Progress<'_>,
    ) -> Result<Option<Image>, Error> {
        if !MANIFEST_MEDIA_TYPES.contains(&media_type) {
            return Err(Error::UnsupportedMediaType {
                what: "an image manifest",
                media_type: media_type.to_owned(),
            });
        }
        let manifest: ImageManifest =
            serde_json::from_slice(bytes).map_err(|source| Error::InvalidManifest { source })?;
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if self.blob_file(&blob.digest)?.is_none() {
                return Err(Error::ManifestBlobMissing {
                    digest: blob.digest.clone(),
                });
            }
        }
        let config: ImageConfiguration = self.read_json_blob(&manifest.config.digest)?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(Error::LayerCountMismatch {
                layers: manifest.layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        for (number, (layer, diff_id)) in manifest.layers.iter().zip(diff_ids).enumerate() {
            if layer.media_type.contains("zstd") {
                return Err(Error::UnsupportedMediaType {
                    what: "a layer (use gzip or no compression)",
                    media_type: layer.media_type.clone(),
                });
            }
            journal.add(Object::Layer, diff_id)?;
            let existed = self.layer_path(diff_id)?.is_dir();
            self.unpack_layer_blob(&layer.digest, diff_id)?;
            if !existed {
                progress(&format!(
                    "unpacked layer {}/{} {diff_id}",
                    number + 1,
                    diff_ids.len()
                ));
            }
        }
        fault::hit("push.layers-unpacked")?;

        let digest = oci::sha256_digest(bytes);
        journal.add(Object::Blob, &digest)?;
        self.write_blob(bytes)?;
        let Some(name) = name else {
            return Ok(None);
        };
        let mut entry = descriptor(media_type, &digest, bytes.len() as u64);
        entry
            .annotations
            .insert(ANNOTATION_REF_NAME.into(), name.into());
        entry.annotations.insert(
            ANNOTATION_CREATED.into(),
            rfc3339(OffsetDateTime::now_utc()).into(),
        );
        let mut index = self.read_index()?;
        index.set(name, entry.clone());
        self.write_atomic(
            &self.root().join(crate::store::INDEX_FILE),
            &to_json(&index),
        )?;
        self.load(name, &entry).map(Some)
    }

    fn read_verified_blob(&self, digest: &str) -> Result<Vec<u8>, Error> {
        let path = self.blob_path(digest)?;
        let bytes = fs::read(&path).map_err(|source| Error::ReadFile {
            path: path.clone(),
            source,
        })?;
        let actual = oci::sha256_digest(&bytes);
        if actual != digest {
            return Err(Error::BlobDigestMismatch {
                expected: digest.to_owned(),
                actual,
            });
        }
        Ok(bytes)
    }

    fn upload_dir(&self) -> PathBuf {
        self.root().join(UPLOAD_DIR)
    }

    fn remove_stale_uploads(&self) {
        let Ok(entries) = fs::read_dir(self.upload_dir()) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|metadata| metadata.modified())
                .ok()
                .and_then(|modified| now.duration_since(modified).ok())
                .is_some_and(|age| age > STALE_UPLOAD_AGE);
            if stale {
                tracing::info!(path = %entry.path().display(), "removing an abandoned blob upload");
                remove_temporary(&entry.path());
            }
        }
    }
}

/// Returns the digest and size of the file at `path`.
fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}
