//! Reading an image to import: a directory or a tar archive, addressed by entry path.
//!
//! A tar is indexed once (entry path to data offset and size, symbolic links to their
//! targets) and then read entry by entry with seeks, so a large `docker save` archive is read
//! once per blob and never loaded into memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use crate::Error;

/// Most symbolic links followed to resolve one tar entry (`docker save` links repeated layers).
const MAX_LINK_HOPS: usize = 8;

/// An image source: a directory, or a tar archive indexed by entry path.
pub(crate) enum Source {
    Dir(PathBuf),
    Tar {
        path: PathBuf,
        entries: HashMap<String, TarEntry>,
    },
}

pub(crate) enum TarEntry {
    File { offset: u64, size: u64 },
    Symlink { target: String },
}

impl Source {
    /// Opens `path`: a directory as it is, a regular file as a tar.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let metadata = std::fs::metadata(path).map_err(|source| Error::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        if metadata.is_dir() {
            return Ok(Source::Dir(path.to_owned()));
        }
        let archive_error = |source| Error::ReadArchive {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(|source| Error::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        let mut archive = tar::Archive::new(file);
        let mut entries = HashMap::new();
        for entry in archive.entries_with_seek().map_err(archive_error)? {
            let entry = entry.map_err(archive_error)?;
            let name = normalize(&entry.path().map_err(archive_error)?);
            let kind = entry.header().entry_type();
            if kind.is_file() {
                entries.insert(
                    name,
                    TarEntry::File {
                        offset: entry.raw_file_position(),
                        size: entry.size(),
                    },
                );
            } else if kind.is_symlink() || kind.is_hard_link() {
                let Some(target) = entry.link_name().map_err(archive_error)? else {
                    continue;
                };
                // A symbolic link is relative to its directory, a hard link to the archive.
                let base = if kind.is_symlink() {
                    Path::new(&name)
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join(&target)
                } else {
                    target.into_owned()
                };
                entries.insert(
                    name,
                    TarEntry::Symlink {
                        target: normalize(&base),
                    },
                );
            }
        }
        Ok(Source::Tar {
            path: path.to_owned(),
            entries,
        })
    }

    /// The path of the source, for messages.
    pub(crate) fn path(&self) -> &Path {
        match self {
            Source::Dir(path) | Source::Tar { path, .. } => path,
        }
    }

    /// Whether the source has entry `name`.
    pub(crate) fn contains(&self, name: &str) -> bool {
        match self {
            Source::Dir(dir) => safe_relative(name).is_some_and(|rel| dir.join(rel).is_file()),
            Source::Tar { entries, .. } => self.resolve(entries, name).is_some(),
        }
    }

    /// Opens entry `name` for reading; returns its size too.
    pub(crate) fn read(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64), Error> {
        let missing = || Error::SourceEntryMissing {
            path: self.path().to_owned(),
            entry: name.to_owned(),
        };
        match self {
            Source::Dir(dir) => {
                let path = dir.join(safe_relative(name).ok_or_else(missing)?);
                let file = File::open(&path).map_err(|source| match source.kind() {
                    io::ErrorKind::NotFound => missing(),
                    _ => Error::ReadFile {
                        path: path.clone(),
                        source,
                    },
                })?;
                let size = file
                    .metadata()
                    .map_err(|source| Error::ReadFile { path, source })?
                    .len();
                Ok((Box::new(file), size))
            }
            Source::Tar { path, entries } => {
                let (offset, size) = self.resolve(entries, name).ok_or_else(missing)?;
                let archive_error = |source| Error::ReadArchive {
                    path: path.clone(),
                    source,
                };
                let mut file = File::open(path).map_err(archive_error)?;
                file.seek(SeekFrom::Start(offset)).map_err(archive_error)?;
                Ok((Box::new(file.take(size)), size))
            }
        }
    }

    /// Reads entry `name` whole; for the small JSON documents.
    pub(crate) fn read_all(&self, name: &str) -> Result<Vec<u8>, Error> {
        let (mut reader, size) = self.read(name)?;
        let mut bytes = Vec::with_capacity(size.min(1 << 20) as usize);
        reader
            .read_to_end(&mut bytes)
            .map_err(|source| Error::ReadArchive {
                path: self.path().join(name),
                source,
            })?;
        Ok(bytes)
    }

    fn resolve(&self, entries: &HashMap<String, TarEntry>, name: &str) -> Option<(u64, u64)> {
        let mut name = normalize(Path::new(name));
        for _ in 0..MAX_LINK_HOPS {
            match entries.get(&name)? {
                TarEntry::File { offset, size } => return Some((*offset, *size)),
                TarEntry::Symlink { target } => name = target.clone(),
            }
        }
        None
    }
}

/// Turns a tar entry path into `a/b/c`: no leading `./` or `/`, `..` applied.
fn normalize(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    parts.join("/")
}

/// Returns `name` as a relative path if it stays inside the source directory.
fn safe_relative(name: &str) -> Option<PathBuf> {
    let path = Path::new(name);
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        .then(|| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_normalized() {
        assert_eq!(normalize(Path::new("./blobs/sha256/ab")), "blobs/sha256/ab");
        assert_eq!(normalize(Path::new("a/../b/layer.tar")), "b/layer.tar");
        assert_eq!(normalize(Path::new("/manifest.json")), "manifest.json");
    }

    #[test]
    fn directory_entries_stay_inside() {
        assert!(safe_relative("blobs/sha256/ab").is_some());
        assert!(safe_relative("../etc/passwd").is_none());
        assert!(safe_relative("/etc/passwd").is_none());
    }
}
