//! The layer unpacker: turns one layer tar (gzip or uncompressed) into a directory tree that
//! overlayfs can use as a lower directory.
//!
//! Every import goes through [`unpack_layer`], so it treats the tar as hostile:
//!
//! - Entry paths are normalized; absolute paths and `..` components reject the layer.
//! - Parent directories are opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//!   (or, on kernels without `openat2`, one component at a time with `O_NOFOLLOW`), so a
//!   symbolic link planted earlier in the same tar can never redirect a later write.
//! - Final components are created with `O_CREAT | O_EXCL | O_NOFOLLOW` after removing what was
//!   there, and symbolic links are stored as they are and never followed.
//! - Hard links must point to an entry written earlier in the same layer.
//! - `.wh.<name>` becomes a 0/0 character device (an overlayfs whiteout) and `.wh..wh..opq`
//!   sets `trusted.overlay.opaque=y` on its directory. Other character and block devices are
//!   skipped, because a sandbox gets its own `/dev`.
//! - Modes (setuid and setgid included), numeric owners, mtimes and the extended attributes that
//!   [`crate::xattr::is_kept`] accepts are preserved. Owners are applied only when running as
//!   root; otherwise the files belong to the caller.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use sha2::{Digest, Sha256};

use crate::xattr;

/// Summary of an unpacked layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedLayer {
    /// `sha256:<hex>` of the uncompressed tar stream: the layer's diff ID.
    pub diff_id: String,
    /// Size of the uncompressed tar stream in bytes.
    pub tar_size: u64,
    /// Number of tar entries read, extension headers excluded.
    pub entries: u64,
    /// Character and block devices that were skipped (overlay whiteouts are not counted).
    pub skipped_devices: u64,
}

/// Errors of [`unpack_layer`]. Entry paths are tar_path as they appear in the tar.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("failed to open layer destination {}", path.display())]
    OpenDestination {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read the layer archive")]
    ReadArchive {
        #[source]
        source: io::Error,
    },
    #[error(
        "layer is compressed with {format}, which is not supported; use gzip or no compression"
    )]
    UnsupportedCompression { format: &'static str },
    #[error("layer entry {path:?} has an invalid header")]
    InvalidHeader {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {path:?} is rejected: {reason}")]
    UnsafePath { path: String, reason: &'static str },
    #[error("hard link {path:?} to {target:?} is rejected: {reason}")]
    UnsafeLinkTarget {
        path: String,
        target: String,
        reason: &'static str,
    },
    #[error("hard link {path:?} points to {target:?}, which is not an earlier entry of the layer")]
    HardlinkTargetMissing { path: String, target: String },
    #[error("layer entry {path:?} is a link without a target")]
    MissingLinkTarget { path: String },
    #[error("layer entry {path:?} has unsupported type {entry_type:?}")]
    UnsupportedEntryType { path: String, entry_type: char },
    #[error("layer entry {path:?} has owner or group id {id}, which does not fit in 32 bits")]
    IdOutOfRange { path: String, id: u64 },
    #[error("a parent of layer entry {path:?} is not a directory")]
    ParentNotDirectory { path: String },
    #[error("failed to open directory {path:?} in the layer")]
    OpenDirectory {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to remove {path:?}, which a later layer entry replaces")]
    RemoveExisting {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to create layer entry {path:?}")]
    CreateEntry {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to write the content of layer entry {path:?}")]
    WriteFile {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to set owner, mode, times or attributes of layer entry {path:?}")]
    SetMetadata {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Unpacks the layer tar read from `layer` into `dest`, an existing empty directory, and returns
/// its diff ID.
///
/// The compression is detected from the first bytes (gzip or none). The caller compares the
/// returned diff ID with the one the image configuration lists. On error `dest` contains a
/// partial tree that the caller removes.
pub fn unpack_layer(layer: impl Read, dest: &Path) -> Result<UnpackedLayer, UnpackError> {
    let (compression, layer) = detect_compression(layer)?;
    let decoded: Box<dyn Read + '_> = match compression {
        Compression::Gzip => Box::new(MultiGzDecoder::new(layer)),
        Compression::None => Box::new(layer),
    };
    let mut stream = HashingReader::new(decoded);
    let mut unpacker = Unpacker::open(dest)?;

    unpacker.unpack_entries(&mut tar::Archive::new(&mut stream))?;

    // The diff ID covers the whole stream, including the zero blocks after the last entry that
    // the tar reader leaves unread.
    io::copy(&mut stream, &mut io::sink()).map_err(|source| UnpackError::ReadArchive { source })?;
    unpacker.apply_directory_metadata()?;
    Ok(UnpackedLayer {
        diff_id: format!("sha256:{}", hex::encode(stream.hasher.finalize())),
        tar_size: stream.bytes,
        entries: unpacker.entries,
        skipped_devices: unpacker.skipped_devices,
    })
}

#[derive(Debug, Clone, Copy)]
enum Compression {
    None,
    Gzip,
}

/// Reads the first bytes of `layer` and returns the compression with a reader that still
/// yields the whole stream.
fn detect_compression(mut layer: impl Read) -> Result<(Compression, impl Read), UnpackError> {
    let mut magic = Vec::with_capacity(6);
    (&mut layer)
        .take(6)
        .read_to_end(&mut magic)
        .map_err(|source| UnpackError::ReadArchive { source })?;

    let compression = if magic.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(UnpackError::UnsupportedCompression { format: "zstd" });
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Err(UnpackError::UnsupportedCompression { format: "xz" });
    } else if magic.starts_with(b"BZh") {
        return Err(UnpackError::UnsupportedCompression { format: "bzip2" });
    } else {
        Compression::None
    };
    Ok((compression, io::Cursor::new(magic).chain(layer)))
}

/// A reader that hashes and counts what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Owner, mode, mtime and kept extended attributes of one entry.
#[derive(Debug, Clone)]
struct Metadata {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// Normalizes a tar entry path into its normal components. Empty means the layer root.
fn normalize(raw: &[u8]) -> Result<PathBuf, &'static str> {
    if raw.starts_with(b"/") {
        return Err("absolute path");
    }
    let mut path = PathBuf::new();
    for component in raw.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err("path contains a '..' component"),
            name => path.push(OsStr::from_bytes(name)),
        }
    }
    Ok(path)
}

fn display(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn errno_to_io(errno: Errno) -> io::Error {
    io::Error::from_raw_os_error(errno as i32)
}

/// Splits a normalized, non-empty path into its parent and its final name.
fn split_parent(path: &Path) -> (&Path, &OsStr) {
    let name = path.file_name().unwrap_or_default();
    let parent = path.parent().unwrap_or(Path::new(""));
    (parent, name)
}

struct Unpacker {
    dest: PathBuf,
    root: OwnedFd,
    same_owner: bool,
    use_openat2: bool,
    /// Directory metadata, applied after every entry is written, children before parents,
    /// because writing a child changes its parent's mtime.
    directories: BTreeMap<PathBuf, Metadata>,
    entries: u64,
    skipped_devices: u64,
}

impl Unpacker {
    fn open(dest: &Path) -> Result<Self, UnpackError> {
        let root = nix::fcntl::open(
            dest,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| UnpackError::OpenDestination {
            path: dest.to_owned(),
            source: errno_to_io(errno),
        })?;
        let same_owner = nix::unistd::geteuid().is_root();
        if !same_owner {
            tracing::warn!(
                dest = %dest.display(),
                "not running as root: unpacked files keep the caller's owner instead of the layer's"
            );
        }
        Ok(Self {
            dest: dest.to_owned(),
            root,
            same_owner,
            use_openat2: true,
            directories: BTreeMap::new(),
            entries: 0,
            skipped_devices: 0,
        })
    }

    fn unpack_entries<R: Read>(
        &mut self,
        archive: &mut tar::Archive<R>,
    ) -> Result<(), UnpackError> {
        let entries = archive
            .entries()
            .map_err(|source| UnpackError::ReadArchive { source })?;
        for entry in entries {
            let mut entry = entry.map_err(|source| UnpackError::ReadArchive { source })?;
            self.unpack_entry(&mut entry)?;
        }
        Ok(())
    }

    fn unpack_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        self.entries += 1;
        let raw_path = entry.path_bytes().into_owned();
        let tar_path = display(&raw_path);
        let path = normalize(&raw_path).map_err(|reason| UnpackError::UnsafePath {
            path: tar_path.clone(),
            reason,
        })?;
        let entry_type = entry.header().entry_type();

        if path.as_os_str().is_empty() && !entry_type.is_dir() {
            return Err(UnpackError::UnsafePath {
                path: tar_path,
                reason: "the layer root must be a directory",
            });
        }
        let in_aufs_dir = path
            .parent()
            .is_some_and(|parent| parent.iter().any(|c| c.as_bytes().starts_with(b".wh..wh.")));
        if in_aufs_dir {
            tracing::debug!(path = %tar_path, "skipping entry inside an aufs metadata directory");
            return Ok(());
        }
        if let Some(name) = path.file_name().map(OsStr::as_bytes)
            && name.starts_with(b".wh.")
        {
            return self.whiteout_entry(&path, name, &tar_path);
        }

        let metadata = read_metadata(entry, &tar_path)?;
        match entry_type {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.regular_file(&path, &tar_path, entry, &metadata)
            }
            tar::EntryType::Directory => self.directory(&path, &tar_path, metadata),
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnpackError::MissingLinkTarget {
                        path: tar_path.clone(),
                    })?
                    .into_owned();
                self.symlink(&path, &tar_path, &target, &metadata)
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnpackError::MissingLinkTarget {
                        path: tar_path.clone(),
                    })?
                    .into_owned();
                self.hardlink(&path, &tar_path, &target)
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                let header = entry.header();
                let major = header.device_major().ok().flatten();
                let minor = header.device_minor().ok().flatten();
                if entry_type.is_character_special() && major == Some(0) && minor == Some(0) {
                    self.whiteout_device(&path, &tar_path)
                } else {
                    tracing::debug!(path = %tar_path, "skipping device node in layer");
                    self.skipped_devices += 1;
                    Ok(())
                }
            }
            tar::EntryType::Fifo => self.fifo(&path, &tar_path, &metadata),
            tar::EntryType::XGlobalHeader => Ok(()),
            other => Err(UnpackError::UnsupportedEntryType {
                path: tar_path,
                entry_type: char::from(other.as_byte()),
            }),
        }
    }

    /// Handles an entry whose name starts with `.wh.`.
    fn whiteout_entry(
        &mut self,
        path: &Path,
        name: &[u8],
        tar_path: &str,
    ) -> Result<(), UnpackError> {
        let (parent_path, _) = split_parent(path);
        if name == b".wh..wh..opq" {
            let dir = self.open_dir(parent_path, true, tar_path)?;
            return xattr::set_fd(dir.as_fd(), xattr::OVERLAY_OPAQUE, b"y").map_err(|source| {
                UnpackError::SetMetadata {
                    path: tar_path.to_owned(),
                    source,
                }
            });
        }
        if name.starts_with(b".wh..wh.") {
            // Other `.wh..wh.` names are aufs bookkeeping (such as `.wh..wh.plnk`), not whiteouts.
            tracing::debug!(path = %tar_path, "skipping aufs metadata entry in layer");
            return Ok(());
        }
        let hidden = &name[b".wh.".len()..];
        if matches!(hidden, b"" | b"." | b"..") {
            return Err(UnpackError::UnsafePath {
                path: tar_path.to_owned(),
                reason: "whiteout names no file",
            });
        }
        self.whiteout_device(&parent_path.join(OsStr::from_bytes(hidden)), tar_path)
    }

    /// Creates the overlayfs whiteout (a 0/0 character device) at `path`.
    fn whiteout_device(&mut self, path: &Path, tar_path: &str) -> Result<(), UnpackError> {
        let (parent_path, name) = split_parent(path);
        let parent = self.open_dir(parent_path, true, tar_path)?;
        self.remove_existing(parent.as_fd(), name, path, tar_path, false)?;
        nix::sys::stat::mknodat(
            parent.as_fd(),
            name,
            SFlag::S_IFCHR,
            Mode::empty(),
            nix::sys::stat::makedev(0, 0),
        )
        .map_err(|errno| UnpackError::CreateEntry {
            path: tar_path.to_owned(),
            source: errno_to_io(errno),
        })
    }

    fn regular_file<R: Read>(
        &mut self,
        path: &Path,
        tar_path: &str,
        entry: &mut tar::Entry<'_, R>,
        metadata: &Metadata,
    ) -> Result<(), UnpackError> {
        let (parent_path, name) = split_parent(path);
        let parent = self.open_dir(parent_path, true, tar_path)?;
        self.remove_existing(parent.as_fd(), name, path, tar_path, false)?;
        let fd = nix::fcntl::openat(
            parent.as_fd(),
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|errno| UnpackError::CreateEntry {
            path: tar_path.to_owned(),
            source: errno_to_io(errno),
        })?;
        let mut file = File::from(fd);
        copy_content(entry, &mut file, tar_path)?;
        self.apply_metadata(file.as_fd(), tar_path, metadata)
    }

    fn directory(
        &mut self,
        path: &Path,
        tar_path: &str,
        metadata: Metadata,
    ) -> Result<(), UnpackError> {
        if !path.as_os_str().is_empty() {
            let (parent_path, name) = split_parent(path);
            let parent = self.open_dir(parent_path, true, tar_path)?;
            let existing_dir_kept =
                self.remove_existing(parent.as_fd(), name, path, tar_path, true)?;
            if !existing_dir_kept {
                // Owner-only until the final mode is applied at the end, so that the children
                // can be written even when the final mode has no write bit.
                nix::sys::stat::mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o700))
                    .map_err(|errno| UnpackError::CreateEntry {
                        path: tar_path.to_owned(),
                        source: errno_to_io(errno),
                    })?;
            }
        }
        self.directories.insert(path.to_owned(), metadata);
        Ok(())
    }

    fn symlink(
        &mut self,
        path: &Path,
        tar_path: &str,
        target: &[u8],
        metadata: &Metadata,
    ) -> Result<(), UnpackError> {
        let (parent_path, name) = split_parent(path);
        let parent = self.open_dir(parent_path, true, tar_path)?;
        self.remove_existing(parent.as_fd(), name, path, tar_path, false)?;
        let create_error = |errno| UnpackError::CreateEntry {
            path: tar_path.to_owned(),
            source: errno_to_io(errno),
        };
        nix::unistd::symlinkat(OsStr::from_bytes(target), parent.as_fd(), name)
            .map_err(create_error)?;

        let metadata_error = |errno| UnpackError::SetMetadata {
            path: tar_path.to_owned(),
            source: errno_to_io(errno),
        };
        if self.same_owner {
            nix::unistd::fchownat(
                parent.as_fd(),
                name,
                Some(Uid::from_raw(metadata.uid)),
                Some(Gid::from_raw(metadata.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(metadata_error)?;
        }
        let mtime = TimeSpec::new(metadata.mtime, 0);
        nix::sys::stat::utimensat(
            parent.as_fd(),
            name,
            &mtime,
            &mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(metadata_error)
    }

    fn hardlink(
        &mut self,
        path: &Path,
        tar_path: &str,
        raw_target: &[u8],
    ) -> Result<(), UnpackError> {
        let tar_target = display(raw_target);
        let unsafe_target = |reason| UnpackError::UnsafeLinkTarget {
            path: tar_path.to_owned(),
            target: tar_target.clone(),
            reason,
        };
        let target = normalize(raw_target).map_err(unsafe_target)?;
        if target.as_os_str().is_empty() {
            return Err(unsafe_target("the target is the layer root"));
        }
        if target == path {
            return Ok(());
        }

        let missing = || UnpackError::HardlinkTargetMissing {
            path: tar_path.to_owned(),
            target: tar_target.clone(),
        };
        let (target_parent_path, target_name) = split_parent(&target);
        let target_parent = match self.open_dir(target_parent_path, false, &tar_target) {
            Ok(fd) => fd,
            Err(UnpackError::OpenDirectory { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                return Err(missing());
            }
            Err(UnpackError::UnsafePath { .. }) => {
                return Err(unsafe_target("a parent of the target is a symbolic link"));
            }
            Err(other) => return Err(other),
        };
        match nix::sys::stat::fstatat(
            target_parent.as_fd(),
            target_name,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(stat)
                if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR =>
            {
                return Err(unsafe_target("the target is a directory"));
            }
            Ok(_) => {}
            Err(Errno::ENOENT) => return Err(missing()),
            Err(errno) => {
                return Err(UnpackError::CreateEntry {
                    path: tar_path.to_owned(),
                    source: errno_to_io(errno),
                });
            }
        }

        let (parent_path, name) = split_parent(path);
        let parent = self.open_dir(parent_path, true, tar_path)?;
        self.remove_existing(parent.as_fd(), name, path, tar_path, false)?;
        // No AT_SYMLINK_FOLLOW: when the target is a symbolic link, the link itself is linked.
        nix::unistd::linkat(
            target_parent.as_fd(),
            target_name,
            parent.as_fd(),
            name,
            AtFlags::empty(),
        )
        .map_err(|errno| match errno {
            Errno::ENOENT => missing(),
            errno => UnpackError::CreateEntry {
                path: tar_path.to_owned(),
                source: errno_to_io(errno),
            },
        })
    }

    fn fifo(
        &mut self,
        path: &Path,
        tar_path: &str,
        metadata: &Metadata,
    ) -> Result<(), UnpackError> {
        let (parent_path, name) = split_parent(path);
        let parent = self.open_dir(parent_path, true, tar_path)?;
        self.remove_existing(parent.as_fd(), name, path, tar_path, false)?;
        nix::unistd::mkfifoat(parent.as_fd(), name, Mode::from_bits_truncate(0o600)).map_err(
            |errno| UnpackError::CreateEntry {
                path: tar_path.to_owned(),
                source: errno_to_io(errno),
            },
        )?;

        let metadata_error = |errno| UnpackError::SetMetadata {
            path: tar_path.to_owned(),
            source: errno_to_io(errno),
        };
        if self.same_owner {
            nix::unistd::fchownat(
                parent.as_fd(),
                name,
                Some(Uid::from_raw(metadata.uid)),
                Some(Gid::from_raw(metadata.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(metadata_error)?;
        }
        // fchmodat follows a final symbolic link (not following needs fchmodat2, Linux 6.6),
        // which is safe here because the FIFO was created by the call above.
        nix::sys::stat::fchmodat(
            parent.as_fd(),
            name,
            Mode::from_bits_truncate(metadata.mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(metadata_error)?;
        let mtime = TimeSpec::new(metadata.mtime, 0);
        nix::sys::stat::utimensat(
            parent.as_fd(),
            name,
            &mtime,
            &mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(metadata_error)
    }

    /// Removes whatever is at `parent/name` so that a new entry can take its place. With
    /// `keep_dir`, an existing directory stays (a directory entry over a directory only updates
    /// its metadata) and `true` is returned.
    fn remove_existing(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        path: &Path,
        tar_path: &str,
        keep_dir: bool,
    ) -> Result<bool, UnpackError> {
        let remove_error = |source| UnpackError::RemoveExisting {
            path: tar_path.to_owned(),
            source,
        };
        let stat = match nix::sys::stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) => return Ok(false),
            Err(errno) => return Err(remove_error(errno_to_io(errno))),
        };
        let is_dir = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        if is_dir && keep_dir {
            return Ok(true);
        }
        if is_dir {
            // Every parent of `path` was opened without following symbolic links, so this
            // path-based removal stays inside the tree. std's remove_dir_all does not follow
            // symbolic links below it either. Directory metadata recorded for the removed
            // subtree is skipped by `apply_directory_metadata` unless a later entry creates the
            // directories again.
            std::fs::remove_dir_all(self.dest.join(path)).map_err(remove_error)?;
        } else {
            nix::unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
                .map_err(|errno| remove_error(errno_to_io(errno)))?;
        }
        Ok(false)
    }

    /// Opens the directory `path` (relative to the layer root) without following any symbolic
    /// link, creating missing directories when `create` is set.
    fn open_dir(
        &mut self,
        path: &Path,
        create: bool,
        tar_path: &str,
    ) -> Result<OwnedFd, UnpackError> {
        if path.as_os_str().is_empty() {
            return self
                .root
                .try_clone()
                .map_err(|source| UnpackError::OpenDirectory {
                    path: tar_path.to_owned(),
                    source,
                });
        }
        if self.use_openat2 {
            let how = OpenHow::new()
                .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(
                    ResolveFlag::RESOLVE_BENEATH
                        | ResolveFlag::RESOLVE_NO_SYMLINKS
                        | ResolveFlag::RESOLVE_NO_MAGICLINKS,
                );
            match nix::fcntl::openat2(self.root.as_fd(), path, how) {
                Ok(fd) => return Ok(fd),
                Err(Errno::ENOSYS) => {
                    tracing::info!(
                        "openat2 is not available; opening layer paths one component at a time"
                    );
                    self.use_openat2 = false;
                }
                // A missing component is created one level at a time below.
                Err(Errno::ENOENT) if create => {}
                Err(errno) => return Err(self.open_dir_error(errno, path, tar_path)),
            }
        }
        self.open_dir_by_components(path, create, tar_path)
    }

    fn open_dir_by_components(
        &self,
        path: &Path,
        create: bool,
        tar_path: &str,
    ) -> Result<OwnedFd, UnpackError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut current = self
            .root
            .try_clone()
            .map_err(|source| UnpackError::OpenDirectory {
                path: tar_path.to_owned(),
                source,
            })?;
        for component in path.components() {
            let Component::Normal(name) = component else {
                unreachable!("normalize() keeps only normal components");
            };
            let next = match nix::fcntl::openat(current.as_fd(), name, flags, Mode::empty()) {
                Err(Errno::ENOENT) if create => {
                    match nix::sys::stat::mkdirat(
                        current.as_fd(),
                        name,
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(errno) => {
                            return Err(UnpackError::CreateEntry {
                                path: tar_path.to_owned(),
                                source: errno_to_io(errno),
                            });
                        }
                    }
                    nix::fcntl::openat(current.as_fd(), name, flags, Mode::empty())
                }
                result => result,
            };
            current = match next {
                Ok(fd) => fd,
                Err(Errno::ENOTDIR) if is_symlink_at(current.as_fd(), name) => {
                    return Err(self.open_dir_error(Errno::ELOOP, path, tar_path));
                }
                Err(errno) => return Err(self.open_dir_error(errno, path, tar_path)),
            };
        }
        Ok(current)
    }

    fn open_dir_error(&self, errno: Errno, path: &Path, tar_path: &str) -> UnpackError {
        match errno {
            Errno::ELOOP | Errno::EXDEV => UnpackError::UnsafePath {
                path: tar_path.to_owned(),
                reason: "a parent directory is a symbolic link",
            },
            Errno::ENOTDIR => UnpackError::ParentNotDirectory {
                path: tar_path.to_owned(),
            },
            errno => UnpackError::OpenDirectory {
                path: path.to_string_lossy().into_owned(),
                source: errno_to_io(errno),
            },
        }
    }

    /// Sets owner, mode, extended attributes and times, in that order: `fchown` clears the
    /// setuid and setgid bits and file capabilities, so those come after it.
    fn apply_metadata(
        &self,
        fd: BorrowedFd<'_>,
        tar_path: &str,
        metadata: &Metadata,
    ) -> Result<(), UnpackError> {
        let metadata_error = |source| UnpackError::SetMetadata {
            path: tar_path.to_owned(),
            source,
        };
        if self.same_owner {
            nix::unistd::fchown(
                fd,
                Some(Uid::from_raw(metadata.uid)),
                Some(Gid::from_raw(metadata.gid)),
            )
            .map_err(|errno| metadata_error(errno_to_io(errno)))?;
        }
        nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(metadata.mode))
            .map_err(|errno| metadata_error(errno_to_io(errno)))?;
        for (name, value) in &metadata.xattrs {
            xattr::set_fd(fd, name, value).map_err(metadata_error)?;
        }
        let mtime = TimeSpec::new(metadata.mtime, 0);
        nix::sys::stat::futimens(fd, &mtime, &mtime)
            .map_err(|errno| metadata_error(errno_to_io(errno)))
    }

    /// Applies the recorded directory metadata, children before parents. Directories that a
    /// later entry removed or replaced are skipped.
    fn apply_directory_metadata(&mut self) -> Result<(), UnpackError> {
        let directories = std::mem::take(&mut self.directories);
        for (path, metadata) in directories.iter().rev() {
            let tar_path = path.to_string_lossy();
            let fd = match self.open_dir(path, false, &tar_path) {
                Ok(fd) => fd,
                Err(UnpackError::OpenDirectory { source, .. })
                    if source.raw_os_error() == Some(libc::ENOENT) =>
                {
                    continue;
                }
                Err(UnpackError::ParentNotDirectory { .. } | UnpackError::UnsafePath { .. }) => {
                    continue;
                }
                Err(other) => return Err(other),
            };
            self.apply_metadata(fd.as_fd(), &tar_path, metadata)?;
        }
        Ok(())
    }
}

fn is_symlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map(|stat| SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
        .unwrap_or(false)
}

fn copy_content(entry: &mut impl Read, file: &mut File, tar_path: &str) -> Result<(), UnpackError> {
    let mut buffer = vec![0u8; 128 * 1024];
    loop {
        let n = match entry.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(UnpackError::ReadArchive { source }),
        };
        file.write_all(&buffer[..n])
            .map_err(|source| UnpackError::WriteFile {
                path: tar_path.to_owned(),
                source,
            })?;
    }
}

fn read_metadata<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    tar_path: &str,
) -> Result<Metadata, UnpackError> {
    let header = entry.header();
    let invalid = |source| UnpackError::InvalidHeader {
        path: tar_path.to_owned(),
        source,
    };
    let mode = header.mode().map_err(invalid)? & 0o7777;
    let uid = header.uid().map_err(invalid)?;
    let gid = header.gid().map_err(invalid)?;
    let mtime = header.mtime().map_err(invalid)?;
    let to_u32 = |id: u64| {
        u32::try_from(id).map_err(|_| UnpackError::IdOutOfRange {
            path: tar_path.to_owned(),
            id,
        })
    };
    let (uid, gid) = (to_u32(uid)?, to_u32(gid)?);

    let mut xattrs = Vec::new();
    if let Some(extensions) = entry.pax_extensions().map_err(invalid)? {
        for extension in extensions {
            let extension = extension.map_err(invalid)?;
            let Some(name) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                continue;
            };
            if !xattr::is_kept(name) {
                tracing::debug!(path = %tar_path, attribute = %String::from_utf8_lossy(name), "dropping extended attribute from layer");
                continue;
            }
            let Ok(name) = CString::new(name) else {
                continue;
            };
            xattrs.push((name, extension.value_bytes().to_vec()));
        }
    }
    Ok(Metadata {
        mode,
        uid,
        gid,
        mtime: i64::try_from(mtime).unwrap_or(i64::MAX),
        xattrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_strips_dot_components() {
        assert_eq!(normalize(b"./a//b/./c/").unwrap(), PathBuf::from("a/b/c"));
        assert_eq!(normalize(b"./").unwrap(), PathBuf::new());
    }

    #[test]
    fn normalize_rejects_escapes() {
        assert!(normalize(b"/etc/passwd").is_err());
        assert!(normalize(b"a/../../etc").is_err());
        assert!(normalize(b"..").is_err());
    }

    #[test]
    fn component_walk_rejects_symlink_parent() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("link")).unwrap();
        let mut unpacker = Unpacker::open(dir.path()).unwrap();
        unpacker.use_openat2 = false;
        let error = unpacker
            .open_dir(Path::new("link/etc"), true, "link/etc/x")
            .unwrap_err();
        assert!(matches!(error, UnpackError::UnsafePath { .. }), "{error:?}");
    }

    #[test]
    fn component_walk_creates_missing_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let mut unpacker = Unpacker::open(dir.path()).unwrap();
        unpacker.use_openat2 = false;
        unpacker
            .open_dir(Path::new("a/b/c"), true, "a/b/c/x")
            .unwrap();
        assert!(dir.path().join("a/b/c").is_dir());
    }
}
