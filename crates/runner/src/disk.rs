//! Disk images that bound a sandbox's writable layer.
//!
//! Each sandbox's upper directory lives in an ext4 filesystem in a sparse file of
//! `disk_gib` GiB (`disk.img` in its directory), which the setup stage loop-mounts in the
//! sandbox's private mount namespace (see `daytona_isolation::disk`). Writing past the size
//! fails with ENOSPC inside the sandbox, and the host gives the file only the blocks that hold
//! data: the filesystem is mounted with `discard`, so deleted files give their blocks back.
//!
//! `mkfs.ext4` takes about 70 ms on the development machine, so it runs once per size: the
//! result is kept as a template in `disk-templates` beside the sandboxes directory, and each
//! new image is a sparse copy of it (about 2 MB of data, under 10 ms).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::unistd::{Whence, lseek};

const GIB: u64 = 1024 * 1024 * 1024;

/// Directory, beside the sandboxes directory, with one template image per size.
pub(crate) const TEMPLATES_DIR: &str = "disk-templates";

/// How long a start or resize waits for the loop device of the sandbox's previous run to
/// detach, which happens once its last process has exited.
const DETACH_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of disk images.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("failed to create the disk template {path}")]
    Template {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed on {path}: {stderr}")]
    Tool {
        program: &'static str,
        path: PathBuf,
        stderr: String,
    },
    #[error("failed to run {program}")]
    Spawn {
        program: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("failed to copy the disk template {template} to {path}")]
    Copy {
        template: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to grow the disk image {path} to {gib} GiB")]
    Grow {
        path: PathBuf,
        gib: u32,
        #[source]
        source: io::Error,
    },
    #[error(
        "the disk image {path} is still attached to {devices:?} {timeout:?} after its sandbox stopped"
    )]
    StillAttached {
        path: PathBuf,
        devices: Vec<String>,
        timeout: Duration,
    },
}

/// Environment variable that turns disk images off when set to `off`, for benchmarks that
/// compare creates with and without them. Sandboxes created meanwhile keep their writable
/// layer on the host filesystem, without a limit.
pub const DISK_LIMITS_ENV: &str = "DAYTONA_DISK_LIMITS";

/// Whether this host can give sandboxes disk images: it takes root, loop devices and
/// `mkfs.ext4`, and [`DISK_LIMITS_ENV`] not set to `off`.
pub(crate) fn supported() -> bool {
    std::env::var_os(DISK_LIMITS_ENV).is_none_or(|value| value != "off")
        && nix::unistd::geteuid().is_root()
        && Path::new("/dev/loop-control").exists()
        && which("mkfs.ext4").is_some()
        && which("resize2fs").is_some()
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Creates `path` as an empty filesystem of `gib` GiB, from the template of that size.
pub(crate) fn create(sandboxes_dir: &Path, path: &Path, gib: u32) -> Result<(), DiskError> {
    let template = template(sandboxes_dir, gib)?;
    sparse_copy(&template, path).map_err(|source| DiskError::Copy {
        template: template.clone(),
        path: path.to_owned(),
        source,
    })
}

/// Returns the template of `gib` GiB, making it first if needed. A template is written
/// under a temporary name and renamed, so a crash never leaves a half-made one.
fn template(sandboxes_dir: &Path, gib: u32) -> Result<PathBuf, DiskError> {
    let dir = sandboxes_dir
        .parent()
        .unwrap_or(sandboxes_dir)
        .join(TEMPLATES_DIR);
    let path = dir.join(format!("ext4-{gib}g.img"));
    if path.is_file() {
        return Ok(path);
    }
    let template_error = |source| DiskError::Template {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(&dir).map_err(template_error)?;
    let temporary = dir.join(format!("ext4-{gib}g.img.{}.tmp", uuid::Uuid::new_v4()));
    let made = (|| {
        File::create(&temporary)
            .and_then(|file| file.set_len(u64::from(gib) * GIB))
            .map_err(template_error)?;
        // No reserved blocks: the whole size is the sandbox's. No discard at creation (the
        // file is sparse already), and lazy inode table and journal initialization, so that
        // only the metadata is written.
        run_tool(
            "mkfs.ext4",
            &[
                "-q".as_ref(),
                "-F".as_ref(),
                "-m".as_ref(),
                "0".as_ref(),
                "-E".as_ref(),
                "nodiscard,lazy_itable_init=1,lazy_journal_init=1".as_ref(),
                temporary.as_os_str(),
            ],
            &temporary,
        )?;
        fs::rename(&temporary, &path).map_err(template_error)
    })();
    if made.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    made.map(|()| path)
}

/// Copies the data regions of `from` to a new file `to` of the same size, leaving the holes
/// as holes.
pub(crate) fn sparse_copy(from: &Path, to: &Path) -> io::Result<()> {
    let source = File::open(from)?;
    let length = source.metadata()?.len();
    let target = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    target.set_len(length)?;
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut offset: i64 = 0;
    let end = length as i64;
    while offset < end {
        let data = match lseek(source.as_fd(), offset, Whence::SeekData) {
            Ok(data) => data,
            // No data after `offset`: the rest is a hole.
            Err(nix::errno::Errno::ENXIO) => break,
            Err(errno) => return Err(errno.into()),
        };
        let hole = lseek(source.as_fd(), data, Whence::SeekHole)?;
        let mut position = data as u64;
        while position < hole as u64 {
            let chunk = (hole as u64 - position).min(buffer.len() as u64) as usize;
            source.read_exact_at(&mut buffer[..chunk], position)?;
            target.write_all_at(&buffer[..chunk], position)?;
            position += chunk as u64;
        }
        offset = hole;
    }
    Ok(())
}

/// Grows the filesystem in `path` to `gib` GiB. The sandbox must be stopped and its loop
/// device detached.
pub(crate) fn grow(path: &Path, gib: u32) -> Result<(), DiskError> {
    let size = u64::from(gib) * GIB;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|source| DiskError::Grow {
            path: path.to_owned(),
            gib,
            source,
        })?;
    let current = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    if current >= size {
        return Ok(());
    }
    file.set_len(size).map_err(|source| DiskError::Grow {
        path: path.to_owned(),
        gib,
        source,
    })?;
    // resize2fs works offline only on a freshly checked filesystem. `-p` repairs what is safe
    // to repair without questions; exit code 1 means that it did.
    let check = Command::new("e2fsck")
        .args(["-f".as_ref(), "-p".as_ref(), path.as_os_str()])
        .output()
        .map_err(|source| DiskError::Spawn {
            program: "e2fsck",
            source,
        })?;
    if !matches!(check.status.code(), Some(0 | 1)) {
        return Err(tool_error("e2fsck", path, &check));
    }
    run_tool("resize2fs", &[path.as_os_str()], path)
}

fn run_tool(
    program: &'static str,
    args: &[&std::ffi::OsStr],
    path: &Path,
) -> Result<(), DiskError> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| DiskError::Spawn { program, source })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(tool_error(program, path, &output))
    }
}

fn tool_error(program: &'static str, path: &Path, output: &Output) -> DiskError {
    let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if stderr.is_empty() {
        stderr = format!("exit status {}", output.status);
    }
    DiskError::Tool {
        program,
        path: path.to_owned(),
        stderr,
    }
}

/// Waits until no loop device uses `path` any more.
pub(crate) async fn wait_detached(path: &Path) -> Result<(), DiskError> {
    let deadline = Instant::now() + DETACH_TIMEOUT;
    loop {
        let devices = daytona_isolation::disk::loop_devices_of(path);
        if devices.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(DiskError::StillAttached {
                path: path.to_owned(),
                devices,
                timeout: DETACH_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_keeps_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        let to = dir.path().join("to");
        let file = File::create(&from).unwrap();
        file.set_len(64 * 1024 * 1024).unwrap();
        file.write_all_at(b"start", 0).unwrap();
        file.write_all_at(b"middle", 32 * 1024 * 1024).unwrap();
        drop(file);

        sparse_copy(&from, &to).unwrap();
        assert_eq!(fs::read(&from).unwrap(), fs::read(&to).unwrap());
        use std::os::unix::fs::MetadataExt;
        let blocks = fs::metadata(&to).unwrap().blocks() * 512;
        assert!(blocks < 1024 * 1024, "the copy allocated {blocks} bytes");
    }

    #[test]
    fn templates_made_once_and_grown() {
        if !supported() {
            eprintln!("SKIPPED: disk images need root, loop devices and e2fsprogs");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sandboxes = dir.path().join("sandboxes");
        let image = dir.path().join("disk.img");
        create(&sandboxes, &image, 1).unwrap();
        let template = dir.path().join(TEMPLATES_DIR).join("ext4-1g.img");
        assert!(template.is_file());
        assert_eq!(fs::metadata(&image).unwrap().len(), GIB);
        use std::os::unix::fs::MetadataExt;
        assert!(fs::metadata(&image).unwrap().blocks() * 512 < 16 * 1024 * 1024);

        grow(&image, 2).unwrap();
        assert_eq!(fs::metadata(&image).unwrap().len(), 2 * GIB);
        let check = Command::new("e2fsck")
            .args(["-f", "-n"])
            .arg(&image)
            .output()
            .unwrap();
        assert!(check.status.success(), "{check:?}");
    }
}
