//! Removal of images and the garbage they leave: blobs and unpacked layers that no named image
//! references any more.
//!
//! Writers that add or remove objects keep a journal in `journal/`: before an object may be
//! left behind, its digest is appended there and synced. A writer that completes removes its
//! journal; one that fails or crashes leaves it, and the next writer to take the store lock
//! removes every listed object that `index.json` does not reference, then the journal. So an
//! interrupted import or removal never leaks a blob or layer, and a retry starts clean.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::oci::{ANNOTATION_REF_NAME, ImageConfiguration, ImageManifest};
use crate::store::{INDEX_FILE, remove_temporary, to_json};
use crate::{Error, ImageStore, fault};

const JOURNAL_DIR: &str = "journal";

/// What [`ImageStore::remove`] deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removal {
    /// Blobs deleted: manifests, configurations and layer archives.
    pub blobs: usize,
    /// Unpacked layer directories deleted.
    pub layers: usize,
}

/// The kind of object a journal line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Object {
    Blob,
    Layer,
}

impl Object {
    fn word(self) -> &'static str {
        match self {
            Object::Blob => "blob",
            Object::Layer => "layer",
        }
    }
}

/// The objects one writer may leave behind; see the module documentation.
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Starts a journal; the caller holds the store lock.
    pub(crate) fn create(store: &ImageStore, operation: &str) -> Result<Self, Error> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = store
            .journal_dir()
            .join(format!("{operation}-{}-{count}", std::process::id()));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| Error::WriteFile {
                path: path.clone(),
                source,
            })?;
        sync_dir(&store.journal_dir()).map_err(|source| Error::WriteFile {
            path: path.clone(),
            source,
        })?;
        Ok(Self { path, file })
    }

    /// Records that `digest` may be left behind; synced before it returns.
    pub(crate) fn add(&mut self, object: Object, digest: &str) -> Result<(), Error> {
        let line = format!("{} {digest}\n", object.word());
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|source| Error::WriteFile {
                path: self.path.clone(),
                source,
            })
    }

    /// Ends the journal of a writer that completed.
    pub(crate) fn finish(self) {
        if let Err(error) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "failed to remove a finished image store journal");
        }
    }
}

/// The blobs and layers that the named images of `index.json` use.
#[derive(Debug, Default)]
pub(crate) struct References {
    blobs: HashSet<String>,
    layers: HashSet<String>,
}

impl ImageStore {
    pub(crate) fn journal_dir(&self) -> PathBuf {
        self.root().join(JOURNAL_DIR)
    }

    /// Removes image `name` and every blob and unpacked layer of it that no other image uses.
    ///
    /// The caller makes sure that no sandbox runs on the image any more: its layers go away.
    /// Blobs and layers of other images, and of images that `name` pointed at before, stay.
    /// Blocks until done (call it from `spawn_blocking` in async code).
    pub fn remove(&self, name: &str) -> Result<Removal, Error> {
        let lock = match self.try_lock()? {
            Some(lock) => lock,
            None => self.lock_blocking()?,
        };
        self.remove_temporaries();
        let result = self.remove_locked(name);
        drop(lock);
        result
    }

    fn remove_locked(&self, name: &str) -> Result<Removal, Error> {
        let mut index = self.read_index()?;
        let Some(descriptor) = index.find(name).cloned() else {
            return Err(Error::ImageNotFound {
                name: name.to_owned(),
            });
        };

        // 1. Everything the image uses goes into the journal before the name goes away, so
        // that a crash after step 2 still finds what to collect.
        let mut journal = Journal::create(self, "remove")?;
        let mut candidates = vec![(Object::Blob, descriptor.digest.clone())];
        if let Ok(manifest) = self.read_json_blob::<ImageManifest>(&descriptor.digest) {
            candidates.push((Object::Blob, manifest.config.digest.clone()));
            candidates.extend(
                manifest
                    .layers
                    .iter()
                    .map(|l| (Object::Blob, l.digest.clone())),
            );
            if let Ok(config) = self.read_json_blob::<ImageConfiguration>(&manifest.config.digest) {
                candidates.extend(
                    config
                        .rootfs
                        .diff_ids
                        .into_iter()
                        .map(|d| (Object::Layer, d)),
                );
            }
        }
        for (object, digest) in &candidates {
            journal.add(*object, digest)?;
        }
        fault::hit("remove.journal-written")?;

        // 2. The name.
        index
            .manifests
            .retain(|d| d.annotation(ANNOTATION_REF_NAME) != Some(name));
        self.write_atomic(&self.root().join(INDEX_FILE), &to_json(&index))?;
        fault::hit("remove.index-written")?;

        // 3. What no other image uses.
        let removal = self.remove_unreferenced(&candidates)?;
        journal.finish();
        tracing::info!(
            image = name,
            blobs = removal.blobs,
            layers = removal.layers,
            "image removed"
        );
        Ok(removal)
    }

    /// Removes the objects among `candidates` that no named image references.
    pub(crate) fn remove_unreferenced(
        &self,
        candidates: &[(Object, String)],
    ) -> Result<Removal, Error> {
        let references = self.references()?;
        let mut removal = Removal::default();
        for (object, digest) in candidates {
            match object {
                Object::Blob if !references.blobs.contains(digest) => {
                    removal.blobs += usize::from(self.remove_blob(digest)?);
                }
                Object::Layer if !references.layers.contains(digest) => {
                    removal.layers += usize::from(self.remove_layer(digest)?);
                }
                _ => {}
            }
        }
        Ok(removal)
    }

    /// Collects what interrupted writers left, as listed in their journals; the caller holds
    /// the store lock.
    pub(crate) fn recover_journals(&self) {
        let Ok(entries) = fs::read_dir(self.journal_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let candidates = match fs::read_to_string(&path) {
                Ok(text) => parse_journal(&text),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "failed to read an image store journal");
                    continue;
                }
            };
            match self.remove_unreferenced(&candidates) {
                Ok(removal) => {
                    tracing::info!(journal = %path.display(), blobs = removal.blobs, layers = removal.layers,
                        "collected what an interrupted image store writer left");
                    if let Err(error) = fs::remove_file(&path) {
                        tracing::warn!(path = %path.display(), %error, "failed to remove an image store journal");
                    }
                }
                Err(error) => {
                    tracing::warn!(journal = %path.display(), %error, "failed to collect what an interrupted image store writer left");
                }
            }
        }
    }

    /// Reads every named image's manifest and configuration. An entry that cannot be read is
    /// logged; what it uses is then unknown, and it is unusable anyway.
    pub(crate) fn references(&self) -> Result<References, Error> {
        let index = self.read_index()?;
        let mut references = References::default();
        for descriptor in &index.manifests {
            references.blobs.insert(descriptor.digest.clone());
            let manifest: ImageManifest = match self.read_json_blob(&descriptor.digest) {
                Ok(manifest) => manifest,
                Err(error) => {
                    tracing::warn!(manifest = %descriptor.digest, %error, "skipping an unreadable manifest");
                    continue;
                }
            };
            references.blobs.insert(manifest.config.digest.clone());
            references
                .blobs
                .extend(manifest.layers.iter().map(|l| l.digest.clone()));
            match self.read_json_blob::<ImageConfiguration>(&manifest.config.digest) {
                Ok(config) => references.layers.extend(config.rootfs.diff_ids),
                Err(error) => {
                    tracing::warn!(config = %manifest.config.digest, %error, "skipping an unreadable image configuration")
                }
            }
        }
        Ok(references)
    }

    /// Deletes a blob; returns whether it existed.
    fn remove_blob(&self, digest: &str) -> Result<bool, Error> {
        let path = self.blob_path(digest)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(Error::Remove { path, source }),
        }
    }

    /// Deletes an unpacked layer; returns whether it existed. The directory leaves its final
    /// name by one rename, so no half-deleted layer is ever found under it.
    fn remove_layer(&self, diff_id: &str) -> Result<bool, Error> {
        let path = self.layer_path(diff_id)?;
        let doomed = self.temp_path("gc");
        match fs::rename(&path, &doomed) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(Error::Remove { path, source }),
        }
        if let Some(parent) = path.parent() {
            let _ = sync_dir(parent);
        }
        remove_temporary(&doomed);
        Ok(true)
    }
}

fn parse_journal(text: &str) -> Vec<(Object, String)> {
    text.lines()
        .filter_map(|line| {
            let (word, digest) = line.split_once(' ')?;
            let object = match word {
                "blob" => Object::Blob,
                "layer" => Object::Layer,
                _ => return None,
            };
            Some((object, digest.to_owned()))
        })
        .collect()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
