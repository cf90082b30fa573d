//! The build context: the files that `COPY` and `ADD` read.
//!
//! The SDK uploads each local file or directory of an image definition as a tar, named by a
//! hash, to object storage; its member paths are the SDK's archive paths (the local path
//! without its root, `home/me/app/main.py`), and `COPY` sources name those paths. The builder
//! fetches every tar through a [`ContextSource`] and unpacks them into one directory with
//! [`unpack_context`], which admits only plain relative paths and links that stay inside.

use std::fs;
use std::future::Future;
use std::io::{self, Read};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;

use sha2::{Digest, Sha256};

/// Why a build context cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(
        "object storage is not configured on this server, so build contexts (local files of an image) cannot be read"
    )]
    StorageUnavailable,
    #[error(
        "build context {hash:?} of organization {organization_id:?} was not found in object storage"
    )]
    NotFound {
        organization_id: String,
        hash: String,
    },
    #[error("invalid build context hash {hash:?}")]
    InvalidHash { hash: String },
    #[error("failed to fetch build context {hash:?}")]
    Fetch {
        hash: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "build context {hash:?} has member {member:?}, which leaves the context (absolute, '..' or a link outside)"
    )]
    UnsafeMember { hash: String, member: String },
    #[error(
        "build context {hash:?} has member {member:?} of an unsupported type; only files, directories and links are allowed"
    )]
    UnsupportedMember { hash: String, member: String },
    #[error("failed to unpack build context {hash:?}")]
    Unpack {
        hash: String,
        #[source]
        source: io::Error,
    },
}

/// A boxed future of a [`ContextSource`] call.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ContextError>> + Send + 'a>>;

/// Where build contexts come from: object storage on a server, a directory in tests.
pub trait ContextSource: Send + Sync {
    /// Writes the context tar `hash` of `organization_id` to the file `dest`.
    fn fetch<'a>(
        &'a self,
        organization_id: &'a str,
        hash: &'a str,
        dest: &'a Path,
    ) -> FetchFuture<'a>;
}

/// Context tars stored as `{root}/{organization_id}/{hash}/context.tar`, the object storage's
/// key layout, in a plain directory.
#[derive(Debug, Clone)]
pub struct DirContextSource {
    pub root: PathBuf,
}

impl ContextSource for DirContextSource {
    fn fetch<'a>(
        &'a self,
        organization_id: &'a str,
        hash: &'a str,
        dest: &'a Path,
    ) -> FetchFuture<'a> {
        Box::pin(async move {
            check_key_part(hash)?;
            check_key_part(organization_id)?;
            let source = self
                .root
                .join(organization_id)
                .join(hash)
                .join("context.tar");
            match tokio::fs::copy(&source, dest).await {
                Ok(_) => Ok(()),
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    Err(ContextError::NotFound {
                        organization_id: organization_id.to_owned(),
                        hash: hash.to_owned(),
                    })
                }
                Err(source) => Err(ContextError::Fetch {
                    hash: hash.to_owned(),
                    source,
                }),
            }
        })
    }
}

/// A source for servers without object storage: every fetch fails with
/// [`ContextError::StorageUnavailable`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoContextSource;

impl ContextSource for NoContextSource {
    fn fetch<'a>(&'a self, _: &'a str, _: &'a str, _: &'a Path) -> FetchFuture<'a> {
        Box::pin(async { Err(ContextError::StorageUnavailable) })
    }
}

/// Rejects a hash or organization id that is not one plain path component, because it
/// becomes part of a storage key and a path.
pub fn check_key_part(part: &str) -> Result<(), ContextError> {
    let valid = !part.is_empty()
        && part.len() <= 128
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && part != "."
        && part != "..";
    if valid {
        Ok(())
    } else {
        Err(ContextError::InvalidHash {
            hash: part.to_owned(),
        })
    }
}

/// Unpacks the context tar `archive` into `dest`, merging with what earlier contexts put
/// there. Members must be relative paths without `..`; symbolic links must be relative and
/// point inside `dest`; hard links must name another member. Files keep their permission bits
/// without setuid, setgid and sticky; owners are not kept (`COPY` sets them). Blocks.
pub fn unpack_context(hash: &str, archive: impl Read, dest: &Path) -> Result<(), ContextError> {
    let unsafe_member = |member: &Path| ContextError::UnsafeMember {
        hash: hash.to_owned(),
        member: member.display().to_string(),
    };
    let io_error = |source| ContextError::Unpack {
        hash: hash.to_owned(),
        source,
    };
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries().map_err(io_error)? {
        let mut entry = entry.map_err(io_error)?;
        let member = entry.path().map_err(io_error)?.into_owned();
        let Some(relative) = normal_path(&member) else {
            return Err(unsafe_member(&member));
        };
        if relative.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&relative);
        create_parents(dest, &relative).map_err(io_error)?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target).map_err(io_error)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode | 0o700))
                    .map_err(io_error)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_existing(&target).map_err(io_error)?;
                let mut file = fs::File::create(&target).map_err(io_error)?;
                io::copy(&mut entry, &mut file).map_err(io_error)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(io_error)?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(io_error)?
                    .ok_or_else(|| unsafe_member(&member))?
                    .into_owned();
                let parent = relative.parent().unwrap_or(Path::new(""));
                if link.is_absolute() || normal_path(&parent.join(&link)).is_none() {
                    return Err(unsafe_member(&member));
                }
                remove_existing(&target).map_err(io_error)?;
                symlink(&link, &target).map_err(io_error)?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(io_error)?
                    .ok_or_else(|| unsafe_member(&member))?
                    .into_owned();
                let Some(linked) = normal_path(&link) else {
                    return Err(unsafe_member(&member));
                };
                let source = dest.join(linked);
                // The linked member must be a regular file inside the context, reached
                // without links, which `create_parents` already guarantees for its parents.
                let metadata = fs::symlink_metadata(&source).map_err(io_error)?;
                if !metadata.is_file() {
                    return Err(unsafe_member(&member));
                }
                remove_existing(&target).map_err(io_error)?;
                fs::copy(&source, &target).map_err(io_error)?;
            }
            _ => {
                return Err(ContextError::UnsupportedMember {
                    hash: hash.to_owned(),
                    member: member.display().to_string(),
                });
            }
        }
    }
    Ok(())
}

/// `path` with `.` components removed, or `None` when it is absolute or has `..` that leaves
/// its root.
pub fn normal_path(path: &Path) -> Option<PathBuf> {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => normal.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !normal.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(normal)
}

/// Creates the parent directories of `relative` under `root`, failing when an existing one
/// is not a directory (a symbolic link, say), so that nothing is written through a link.
fn create_parents(root: &Path, relative: &Path) -> io::Result<()> {
    let mut current = root.to_path_buf();
    let Some(parent) = relative.parent() else {
        return Ok(());
    };
    for component in parent.components() {
        current.push(component);
        match fs::symlink_metadata(&current) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a directory", current.display()),
                ));
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&current)?;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// `sha256:<hex>` over a tree's relative paths, types, permission bits, file contents and
/// link targets, in a stable order: the part of a `COPY` step's cache key that its sources
/// contribute.
pub fn tree_digest(path: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    hash_tree(path, Path::new(""), &mut hasher)?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

fn hash_tree(path: &Path, relative: &Path, hasher: &mut Sha256) -> io::Result<()> {
    let metadata = fs::symlink_metadata(path)?;
    let mode = metadata.permissions().mode() & 0o7777;
    hasher.update(relative.as_os_str().as_encoded_bytes());
    hasher.update([0]);
    if metadata.is_dir() {
        hasher.update(format!("d{mode:o}\0"));
        let mut names: Vec<_> = fs::read_dir(path)?
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            hash_tree(&path.join(&name), &relative.join(&name), hasher)?;
        }
    } else if metadata.is_symlink() {
        hasher.update("l");
        hasher.update(fs::read_link(path)?.as_os_str().as_encoded_bytes());
        hasher.update([0]);
    } else {
        hasher.update(format!("f{mode:o}:{}\0", metadata.len()));
        let mut file = fs::File::open(path)?;
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(0o4755);
        header
    }

    /// Writes `name` into the header bytes directly, because `tar::Builder` refuses `..`.
    fn raw_name(header: &mut tar::Header, name: &str) {
        let bytes = &mut header.as_old_mut().name;
        bytes.fill(0);
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
    }

    #[test]
    fn unpacks_files_dirs_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let archive = tar_with(|builder| {
            let mut h = header(tar::EntryType::Directory, 0);
            builder
                .append_data(&mut h, "home/me/app", io::empty())
                .unwrap();
            let mut h = header(tar::EntryType::Regular, 5);
            builder
                .append_data(&mut h, "home/me/app/main.py", &b"print"[..])
                .unwrap();
            let mut h = header(tar::EntryType::Symlink, 0);
            builder
                .append_link(&mut h, "home/me/app/link", "main.py")
                .unwrap();
            let mut h = header(tar::EntryType::Link, 0);
            builder
                .append_link(&mut h, "home/me/app/hard", "home/me/app/main.py")
                .unwrap();
        });
        unpack_context("h1", &archive[..], dir.path()).unwrap();
        let main = dir.path().join("home/me/app/main.py");
        assert_eq!(fs::read_to_string(&main).unwrap(), "print");
        // setuid is dropped.
        assert_eq!(
            fs::metadata(&main).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        assert_eq!(
            fs::read_link(dir.path().join("home/me/app/link")).unwrap(),
            Path::new("main.py")
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("home/me/app/hard")).unwrap(),
            "print"
        );
    }

    #[test]
    fn rejects_members_leaving_the_context() {
        type Append = Box<dyn Fn(&mut tar::Builder<Vec<u8>>)>;
        let cases: Vec<(&str, Append)> = vec![
            (
                "dotdot",
                Box::new(|builder| {
                    let mut h = header(tar::EntryType::Regular, 1);
                    raw_name(&mut h, "a/../../escape");
                    builder.append(&h, &b"x"[..]).unwrap();
                }),
            ),
            (
                "absolute",
                Box::new(|builder| {
                    let mut h = header(tar::EntryType::Regular, 1);
                    raw_name(&mut h, "/etc/escape");
                    builder.append(&h, &b"x"[..]).unwrap();
                }),
            ),
            (
                "symlink out",
                Box::new(|builder| {
                    let mut h = header(tar::EntryType::Symlink, 0);
                    builder.append_link(&mut h, "a/link", "../../etc").unwrap();
                }),
            ),
            (
                "absolute symlink",
                Box::new(|builder| {
                    let mut h = header(tar::EntryType::Symlink, 0);
                    builder.append_link(&mut h, "link", "/etc/passwd").unwrap();
                }),
            ),
            (
                "hard link out",
                Box::new(|builder| {
                    let mut h = header(tar::EntryType::Link, 0);
                    builder.append_link(&mut h, "hard", "/etc/passwd").unwrap();
                }),
            ),
        ];
        for (name, build) in cases {
            let dir = tempfile::tempdir().unwrap();
            let context = dir.path().join("context");
            fs::create_dir(&context).unwrap();
            let archive = tar_with(|builder| build(builder));
            let error = unpack_context("h", &archive[..], &context).unwrap_err();
            assert!(
                matches!(error, ContextError::UnsafeMember { .. }),
                "{name}: {error}"
            );
            assert!(!dir.path().join("escape").exists(), "{name}");
        }
    }

    #[test]
    fn does_not_write_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let context = dir.path().join("context");
        let outside = dir.path().join("outside");
        fs::create_dir_all(&context).unwrap();
        fs::create_dir_all(&outside).unwrap();
        // A link that stays inside lexically but whose use as a parent is refused.
        let archive = tar_with(|builder| {
            let mut h = header(tar::EntryType::Symlink, 0);
            builder.append_link(&mut h, "dir", ".").unwrap();
            let mut h = header(tar::EntryType::Regular, 1);
            builder.append_data(&mut h, "dir/file", &b"x"[..]).unwrap();
        });
        assert!(unpack_context("h", &archive[..], &context).is_err());
    }

    #[test]
    fn tree_digest_follows_content() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/a"), "1").unwrap();
        let first = tree_digest(dir.path()).unwrap();
        assert_eq!(first, tree_digest(dir.path()).unwrap());
        fs::write(dir.path().join("d/a"), "2").unwrap();
        assert_ne!(first, tree_digest(dir.path()).unwrap());
    }

    #[test]
    fn key_parts_checked() {
        assert!(check_key_part("0123abcdef").is_ok());
        for bad in ["", "..", "a/b", "a b"] {
            assert!(check_key_part(bad).is_err(), "{bad}");
        }
    }
}
