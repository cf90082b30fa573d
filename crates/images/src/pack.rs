//! The layer packer: writes a directory tree as a deterministic, uncompressed layer tar.
//!
//! Entries come in byte order of their names, and directories come before their contents.
//! Owners are numeric (no user or group names). Mode bits, mtimes (whole seconds), symbolic
//! links, hard links and the extended attributes that [`crate::xattr::is_kept`] accepts are
//! recorded. The same tree therefore always gives the same tar and the same diff ID.
//!
//! Overlayfs markers are turned back into their tar form, so that an upper directory can be
//! packed as a layer: a 0/0 character device becomes a `.wh.<name>` entry, and a directory with
//! `trusted.overlay.opaque=y` gets a `.wh..wh..opq` entry. Other devices and sockets are
//! skipped, and so is the content of directories on another filesystem (mount points).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::xattr;

/// Summary of a packed layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedLayer {
    /// `sha256:<hex>` of the tar: its diff ID, and its blob digest since it is uncompressed.
    pub diff_id: String,
    /// Size of the tar in bytes.
    pub size: u64,
    /// Number of entries written, extension headers excluded.
    pub entries: u64,
}

/// Errors of [`pack_layer`].
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("failed to read {} while packing a layer", path.display())]
    ReadTree {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to add {} to the layer tar", path.display())]
    AppendEntry {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to finish the layer tar")]
    Finish {
        #[source]
        source: io::Error,
    },
}

/// Writes the tree under `rootfs` to `out` as an uncompressed layer tar and returns its digest.
///
/// `rootfs` itself becomes the `./` entry. The tree must not change while it is packed.
pub fn pack_layer(rootfs: &Path, out: impl Write) -> Result<PackedLayer, PackError> {
    pack_layer_mapped(rootfs, out, None)
}

/// The uid and gid range a tree's owners were shifted to, such as a sandbox's writable layer,
/// whose files belong to the host ids `host_base..host_base + size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerShift {
    pub host_base: u32,
    pub size: u32,
}

impl OwnerShift {
    /// The id inside the range for a host id; ids outside it become the overflow id 65534
    /// (`nobody`), which is how the sandbox saw them.
    pub fn unshift(&self, host_id: u32) -> u32 {
        match host_id.checked_sub(self.host_base) {
            Some(id) if id < self.size => id,
            _ => OVERFLOW_ID,
        }
    }
}

/// The kernel's default overflow uid and gid.
const OVERFLOW_ID: u32 = 65534;

/// [`pack_layer`] with owners shifted back from `owners` (uid and gid alike), so that a
/// sandbox's writable layer packs with the ids its processes saw.
pub fn pack_layer_mapped(
    rootfs: &Path,
    out: impl Write,
    owners: Option<OwnerShift>,
) -> Result<PackedLayer, PackError> {
    let root_metadata = fs::symlink_metadata(rootfs).map_err(|source| PackError::ReadTree {
        path: rootfs.to_owned(),
        source,
    })?;
    let mut packer = Packer {
        rootfs: rootfs.to_owned(),
        root_dev: root_metadata.dev(),
        builder: tar::Builder::new(HashingWriter::new(out)),
        first_link_path: HashMap::new(),
        entries: 0,
        owners,
    };
    packer.append_directory(Path::new(""), &root_metadata)?;
    packer.append_children(Path::new(""))?;

    packer
        .builder
        .finish()
        .map_err(|source| PackError::Finish { source })?;
    let writer = packer
        .builder
        .into_inner()
        .map_err(|source| PackError::Finish { source })?;
    Ok(PackedLayer {
        diff_id: format!("sha256:{}", hex::encode(writer.hasher.finalize())),
        size: writer.bytes,
        entries: packer.entries,
    })
}

struct Packer<W: Write> {
    rootfs: PathBuf,
    root_dev: u64,
    builder: tar::Builder<HashingWriter<W>>,
    /// First path seen for each (device, inode) with more than one link.
    first_link_path: HashMap<(u64, u64), PathBuf>,
    entries: u64,
    owners: Option<OwnerShift>,
}

impl<W: Write> Packer<W> {
    /// Shifts the header's owner back when the tree's owners are shifted.
    fn unshift_owner(&self, header: &mut tar::Header) {
        let Some(owners) = self.owners else {
            return;
        };
        if let (Ok(uid), Ok(gid)) = (header.uid(), header.gid()) {
            header.set_uid(u64::from(owners.unshift(uid as u32)));
            header.set_gid(u64::from(owners.unshift(gid as u32)));
        }
    }

    fn append_children(&mut self, dir: &Path) -> Result<(), PackError> {
        let full_dir = self.rootfs.join(dir);
        let read_error = |source| PackError::ReadTree {
            path: full_dir.clone(),
            source,
        };
        let mut names = fs::read_dir(&full_dir)
            .map_err(read_error)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<Vec<OsString>, _>>()
            .map_err(read_error)?;
        names.sort();

        for name in names {
            let path = dir.join(&name);
            let full = self.rootfs.join(&path);
            let metadata = fs::symlink_metadata(&full).map_err(|source| PackError::ReadTree {
                path: full.clone(),
                source,
            })?;
            let file_type = metadata.file_type();
            if file_type.is_dir() {
                self.append_directory(&path, &metadata)?;
                if metadata.dev() == self.root_dev {
                    self.append_children(&path)?;
                } else {
                    tracing::warn!(path = %full.display(), "not packing the content of a mount point");
                }
            } else if file_type.is_file() {
                self.append_file(&path, &metadata)?;
            } else if file_type.is_symlink() {
                self.append_symlink(&path, &metadata)?;
            } else if file_type.is_char_device() && metadata.rdev() == 0 {
                self.append_whiteout(&path, &metadata)?;
            } else if file_type.is_fifo() {
                self.append_fifo(&path, &metadata)?;
            } else {
                tracing::debug!(path = %full.display(), "not packing a device node or socket");
            }
        }
        Ok(())
    }

    fn append_directory(&mut self, path: &Path, metadata: &Metadata) -> Result<(), PackError> {
        let full = self.rootfs.join(path);
        self.append_xattrs(path, &full)?;
        let mut header = new_header(tar::EntryType::Directory, metadata);
        let mut name = if path.as_os_str().is_empty() {
            b".".to_vec()
        } else {
            path.as_os_str().as_bytes().to_vec()
        };
        name.push(b'/');
        self.append(
            &mut header,
            path,
            PathBuf::from(OsString::from_vec(name)),
            io::empty(),
        )?;

        let opaque = !path.as_os_str().is_empty()
            && xattr::is_opaque_dir(&full).map_err(|source| PackError::ReadTree {
                path: full.clone(),
                source,
            })?;
        if opaque {
            let mut marker = new_header(tar::EntryType::Regular, metadata);
            marker.set_mode(0o644);
            marker.set_size(0);
            self.append(&mut marker, path, path.join(".wh..wh..opq"), io::empty())?;
        }
        Ok(())
    }

    fn append_file(&mut self, path: &Path, metadata: &Metadata) -> Result<(), PackError> {
        let full = self.rootfs.join(path);
        if metadata.nlink() > 1 {
            let key = (metadata.dev(), metadata.ino());
            if let Some(first) = self.first_link_path.get(&key).cloned() {
                let mut header = new_header(tar::EntryType::Link, metadata);
                header.set_size(0);
                self.unshift_owner(&mut header);
                self.entries += 1;
                return self
                    .builder
                    .append_link(&mut header, path, &first)
                    .map_err(|source| PackError::AppendEntry { path: full, source });
            }
            self.first_link_path.insert(key, path.to_owned());
        }

        self.append_xattrs(path, &full)?;
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&full)
            .map_err(|source| PackError::ReadTree {
                path: full.clone(),
                source,
            })?;
        let mut header = new_header(tar::EntryType::Regular, metadata);
        header.set_size(metadata.len());
        let content = ExactReader {
            inner: file,
            remaining: metadata.len(),
        };
        self.append(&mut header, path, path.to_owned(), content)
    }

    fn append_symlink(&mut self, path: &Path, metadata: &Metadata) -> Result<(), PackError> {
        let full = self.rootfs.join(path);
        let target = fs::read_link(&full).map_err(|source| PackError::ReadTree {
            path: full.clone(),
            source,
        })?;
        let mut header = new_header(tar::EntryType::Symlink, metadata);
        header.set_size(0);
        self.unshift_owner(&mut header);
        self.entries += 1;
        self.builder
            .append_link(&mut header, path, &target)
            .map_err(|source| PackError::AppendEntry { path: full, source })
    }

    fn append_whiteout(&mut self, path: &Path, metadata: &Metadata) -> Result<(), PackError> {
        let mut name = OsString::from(".wh.");
        name.push(path.file_name().unwrap_or_default());
        let whiteout = path.with_file_name(name);
        let mut header = new_header(tar::EntryType::Regular, metadata);
        header.set_mode(0o644);
        header.set_size(0);
        self.append(&mut header, path, whiteout, io::empty())
    }

    fn append_fifo(&mut self, path: &Path, metadata: &Metadata) -> Result<(), PackError> {
        let mut header = new_header(tar::EntryType::Fifo, metadata);
        header.set_size(0);
        self.append(&mut header, path, path.to_owned(), io::empty())
    }

    /// Writes a PAX header with the kept extended attributes of `full`, if it has any.
    fn append_xattrs(&mut self, path: &Path, full: &Path) -> Result<(), PackError> {
        let attributes = xattr::read_kept(full).map_err(|source| PackError::ReadTree {
            path: full.to_owned(),
            source,
        })?;
        let records: Vec<(String, Vec<u8>)> = attributes
            .into_iter()
            .filter_map(|(name, value)| {
                let name = String::from_utf8(name).ok()?;
                Some((format!("SCHILY.xattr.{name}"), value))
            })
            .collect();
        if records.is_empty() {
            return Ok(());
        }
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(|source| PackError::AppendEntry {
                path: self.rootfs.join(path),
                source,
            })
    }

    fn append(
        &mut self,
        header: &mut tar::Header,
        source_path: &Path,
        tar_path: PathBuf,
        content: impl Read,
    ) -> Result<(), PackError> {
        self.unshift_owner(header);
        self.entries += 1;
        self.builder
            .append_data(header, tar_path, content)
            .map_err(|source| PackError::AppendEntry {
                path: self.rootfs.join(source_path),
                source,
            })
    }
}

/// Returns a GNU header with the numeric owner, mode bits and mtime of `metadata`.
fn new_header(entry_type: tar::EntryType, metadata: &Metadata) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(metadata.mode() & 0o7777);
    header.set_uid(u64::from(metadata.uid()));
    header.set_gid(u64::from(metadata.gid()));
    header.set_mtime(u64::try_from(metadata.mtime()).unwrap_or(0));
    header.set_size(0);
    header
}

/// Reads exactly `remaining` bytes, failing if the file is shorter, so that a file that shrank
/// while packed cannot produce an entry shorter than its header states.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let limit = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..limit])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file is shorter than when it was listed",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
