//! Direct file access to the embedded service's objects, for the server's own code.
//!
//! The layout is that of `s3s-fs`, which serves the same directory over S3: an object is the
//! file `<root>/<bucket>/<key>`, its checksums and metadata are files named after the
//! base64url-encoded bucket and key in `<root>`, and a write goes to a file named
//! `.tmp.*.internal.part` in `<root>` that is renamed into place. `s3s-fs` removes such files
//! when it opens the root, so a write that a crash cut short is never visible and is cleaned
//! at the next start.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::Error;

pub(crate) struct Embedded {
    root: PathBuf,
}

impl Embedded {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// Files that `s3s-fs` keeps beside an object: its stored ETag and checksums, and its
    /// metadata. A stale one would describe the previous content.
    fn side_files(&self, bucket: &str, key: &str) -> [PathBuf; 2] {
        let stem = format!(
            ".bucket-{}.object-{}",
            URL_SAFE_NO_PAD.encode(bucket),
            URL_SAFE_NO_PAD.encode(key)
        );
        [
            self.root.join(format!("{stem}.internal.json")),
            self.root.join(format!("{stem}.metadata.json")),
        ]
    }

    fn temp_path(&self) -> PathBuf {
        self.root.join(format!(
            ".tmp.daytona-{}.internal.part",
            uuid::Uuid::new_v4().simple()
        ))
    }

    pub(crate) fn put_file(&self, bucket: &str, key: &str, source: &Path) -> Result<(), Error> {
        let destination = self.object_path(bucket, key);
        let temp = self.temp_path();
        let result = (|| {
            std::fs::copy(source, &temp).map_err(Error::io("copy", source))?;
            std::fs::File::open(&temp)
                .and_then(|file| file.sync_all())
                .map_err(Error::io("sync", &temp))?;
            for side_file in self.side_files(bucket, key) {
                remove_if_exists(&side_file)?;
            }
            let parent = destination.parent().expect("an object path has a parent");
            std::fs::create_dir_all(parent).map_err(Error::io("create", parent))?;
            std::fs::rename(&temp, &destination).map_err(Error::io("rename into", &destination))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    pub(crate) fn get_to_file(
        &self,
        bucket: &str,
        key: &str,
        destination: &Path,
    ) -> Result<(), Error> {
        let source = self.object_path(bucket, key);
        if !source.is_file() {
            return Err(Error::NotFound {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            });
        }
        copy_atomic(&source, destination)
    }

    pub(crate) fn exists(&self, bucket: &str, key: &str) -> bool {
        self.object_path(bucket, key).is_file()
    }

    pub(crate) fn delete(&self, bucket: &str, key: &str) -> Result<(), Error> {
        let path = self.object_path(bucket, key);
        if path.is_dir() {
            return Ok(());
        }
        remove_if_exists(&path)?;
        for side_file in self.side_files(bucket, key) {
            remove_if_exists(&side_file)?;
        }
        self.remove_empty_parents(bucket, &path);
        Ok(())
    }

    /// Deletes every object below the folder `prefix` (a key prefix ending at a `/`).
    pub(crate) fn delete_prefix(&self, bucket: &str, prefix: &str) -> Result<(), Error> {
        let prefix = prefix.trim_end_matches('/');
        let folder = self.object_path(bucket, prefix);
        let mut keys = Vec::new();
        collect_keys(&folder, prefix, &mut keys)?;
        for key in &keys {
            self.delete(bucket, key)?;
        }
        if folder.is_dir() {
            // Only empty folders are left; a concurrent upload keeps its own.
            let _ = remove_empty_tree(&folder);
            self.remove_empty_parents(bucket, &folder);
        }
        Ok(())
    }

    /// Removes the empty folders from `path`'s parent up to, not including, the bucket's.
    fn remove_empty_parents(&self, bucket: &str, path: &Path) {
        let bucket_dir = self.root.join(bucket);
        let mut current = path.parent();
        while let Some(dir) = current {
            if dir == bucket_dir
                || !dir.starts_with(&bucket_dir)
                || std::fs::remove_dir(dir).is_err()
            {
                break;
            }
            current = dir.parent();
        }
    }
}

fn remove_if_exists(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io("remove", path)(error))
        }
        _ => Ok(()),
    }
}

/// Collects the keys of the files below `dir`, whose key is `key`. Symbolic links are
/// skipped: the service never creates them.
fn collect_keys(dir: &Path, key: &str, keys: &mut Vec<String>) -> Result<(), Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotADirectory => return Ok(()),
        Err(error) => return Err(Error::io("list", dir)(error)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("list", dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let file_type = entry
            .file_type()
            .map_err(Error::io("inspect", entry.path()))?;
        let child_key = if key.is_empty() {
            name
        } else {
            format!("{key}/{name}")
        };
        if file_type.is_dir() {
            collect_keys(&entry.path(), &child_key, keys)?;
        } else if file_type.is_file() {
            keys.push(child_key);
        }
    }
    Ok(())
}

fn remove_empty_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_empty_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// Copies `source` to a temporary file beside `destination` and renames it into place, so
/// that `destination` is the old file or the whole new one.
pub(crate) fn copy_atomic(source: &Path, destination: &Path) -> Result<(), Error> {
    let temp = temp_beside(destination);
    let result = (|| {
        std::fs::copy(source, &temp).map_err(Error::io("copy", source))?;
        std::fs::File::open(&temp)
            .and_then(|file| file.sync_all())
            .map_err(Error::io("sync", &temp))?;
        std::fs::rename(&temp, destination).map_err(Error::io("rename into", destination))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// A hidden file name in `path`'s folder for a temporary copy of it.
pub(crate) fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()))
}
