//! Archive and restore of a stopped sandbox's writable layer.
//!
//! [`Runner::pack_writable_layer`] writes the files a stopped sandbox changed to a gzip
//! compressed layer tar, with owners as the sandbox saw them, so the tar does not depend on
//! the host uid range of the sandbox. The caller stores the tar elsewhere and then calls
//! [`Runner::drop_writable_layer`], which marks the sandbox archived in its runtime record
//! before it removes the files: a crash in the middle leaves a record marked archived, and the
//! next drop or restore removes what is left. [`Runner::restore_writable_layer`] makes a
//! fresh writable layer (a new disk image when the sandbox has one) from such a tar, shifts
//! the owners to the sandbox's uid range, and only then clears the archived mark.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use daytona_images::pack::{OwnerShift, pack_layer_mapped};
use daytona_images::unpack::unpack_layer;
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use crate::disk;
use crate::instance::InstanceDirs;
use crate::runner::{Runner, RunnerError, save};
use crate::slots;
use crate::snapshot::{DISK_UPPER, disk_mount, in_private_mounts, shift_owners, with_upper};

/// Size of an archive and of what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchivedLayer {
    /// Bytes of the compressed tar.
    pub compressed_bytes: u64,
    /// Tar entries: files, directories, links and whiteouts.
    pub entries: u64,
}

impl Runner {
    /// Writes the writable layer of stopped sandbox `sandbox_id` to `dest` as a gzip
    /// compressed layer tar, and syncs it. The sandbox's files are not changed.
    pub async fn pack_writable_layer(
        &self,
        sandbox_id: &str,
        dest: &Path,
    ) -> Result<ArchivedLayer, RunnerError> {
        let archive_error = |source| RunnerError::Archive {
            sandbox_id: sandbox_id.to_owned(),
            source,
        };
        let instance = self.instance(sandbox_id)?;
        let record = instance.record.lock().await;
        if record.archived {
            return Err(archive_error(io::Error::other(
                "the sandbox is archived already and has no local files",
            )));
        }
        if self.runs(&record) {
            return Err(archive_error(io::Error::other(
                "the sandbox is running; stop it first",
            )));
        }

        let owners = OwnerShift {
            host_base: slots::host_base(record.slot),
            size: slots::RANGE_SIZE,
        };
        let dest = dest.to_owned();
        with_upper(&instance.dirs, &record, move |upper| {
            let file = File::create(&dest)?;
            let mut encoder = GzEncoder::new(BufWriter::new(file), Compression::fast());
            let packed =
                pack_layer_mapped(upper, &mut encoder, Some(owners)).map_err(io::Error::other)?;
            let mut writer = encoder.finish()?;
            writer.flush()?;
            let file = writer.into_inner().map_err(|error| error.into_error())?;
            file.sync_all()?;
            Ok(ArchivedLayer {
                compressed_bytes: file.metadata()?.len(),
                entries: packed.entries,
            })
        })
        .await
        .map_err(archive_error)
    }

    /// Marks stopped sandbox `sandbox_id` archived and removes its writable layer from the
    /// host. The sandbox keeps its uid range and runtime record; only a restore starts it
    /// again. Removing what a crash left of an earlier drop is safe.
    pub async fn drop_writable_layer(&self, sandbox_id: &str) -> Result<(), RunnerError> {
        let instance = self.instance(sandbox_id)?;
        let mut record = instance.record.lock().await;
        if self.runs(&record) {
            return Err(RunnerError::Archive {
                sandbox_id: sandbox_id.to_owned(),
                source: io::Error::other("the sandbox is running; stop it first"),
            });
        }
        record.archived = true;
        save(&record, &instance.dirs)?;
        remove_writable_layer(&instance.dirs)
            .await
            .map_err(|source| RunnerError::Archive {
                sandbox_id: sandbox_id.to_owned(),
                source,
            })
    }

    /// Gives archived sandbox `sandbox_id` a writable layer again from `archive`, a tar that
    /// [`Runner::pack_writable_layer`] wrote. The sandbox stays stopped; on failure it stays
    /// archived, and a later restore starts over.
    pub async fn restore_writable_layer(
        &self,
        sandbox_id: &str,
        archive: &Path,
    ) -> Result<(), RunnerError> {
        let restore_error = |source| RunnerError::Restore {
            sandbox_id: sandbox_id.to_owned(),
            source,
        };
        let instance = self.instance(sandbox_id)?;
        let mut record = instance.record.lock().await;
        if !record.archived {
            return Ok(());
        }
        remove_writable_layer(&instance.dirs)
            .await
            .map_err(restore_error)?;

        let base = slots::host_base(record.slot);
        let archive = archive.to_owned();
        if record.disk_image {
            let image = instance.dirs.disk_image();
            let sandboxes_dir = self.config.sandboxes_dir.clone();
            let gib = record.limits.disk_gib;
            let created = tokio::task::spawn_blocking({
                let image = image.clone();
                move || disk::create(&sandboxes_dir, &image, gib)
            })
            .await
            .expect("creating a disk image does not panic");
            created.map_err(|source| RunnerError::Disk {
                sandbox_id: sandbox_id.to_owned(),
                source,
            })?;
            in_private_mounts(move |mount_point| {
                disk_mount(&image, mount_point)?;
                unpack_shifted(&archive, &mount_point.join(DISK_UPPER), base)
            })
            .await
        } else {
            let upper = instance.dirs.upper();
            tokio::task::spawn_blocking(move || {
                let partial = upper.with_extension("restoring");
                remove_tree(&partial)?;
                unpack_shifted(&archive, &partial, base)?;
                fs::rename(&partial, &upper)
            })
            .await
            .expect("restoring a writable layer does not panic")
        }
        .map_err(restore_error)?;

        record.archived = false;
        save(&record, &instance.dirs)
    }

    /// Returns whether sandbox `sandbox_id` is archived, which means its writable layer is not
    /// on this host.
    pub async fn is_archived(&self, sandbox_id: &str) -> Result<bool, RunnerError> {
        let instance = self.instance(sandbox_id)?;
        Ok(instance.record.lock().await.archived)
    }
}

/// Unpacks the archive at `archive` into the new directory `upper` and moves its owners from
/// the ids the sandbox saw to the sandbox's host range starting at `base`.
fn unpack_shifted(archive: &Path, upper: &Path, base: u32) -> io::Result<()> {
    fs::create_dir(upper)?;
    fs::set_permissions(upper, fs::Permissions::from_mode(0o755))?;
    let reader = MultiGzDecoder::new(BufReader::new(File::open(archive)?));
    unpack_layer(reader, upper).map_err(io::Error::other)?;
    shift_owners(upper, 0, base, slots::RANGE_SIZE)?;
    Ok(())
}

/// Removes the writable layer of a stopped sandbox: its disk image, upper directory and
/// overlay work directory, and what a crashed restore left.
async fn remove_writable_layer(dirs: &InstanceDirs) -> io::Result<()> {
    let image = dirs.disk_image();
    if image.exists() {
        disk::wait_detached(&image)
            .await
            .map_err(io::Error::other)?;
    }
    let paths: Vec<PathBuf> = vec![
        image,
        dirs.upper(),
        dirs.upper().with_extension("restoring"),
        dirs.overlay_work(),
    ];
    tokio::task::spawn_blocking(move || {
        for path in &paths {
            remove_tree(path)?;
        }
        Ok(())
    })
    .await
    .expect("removing a writable layer does not panic")
}

/// Removes a file or directory tree; a missing one is fine.
fn remove_tree(path: &Path) -> io::Result<()> {
    let removed = match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(error) => Err(error),
    };
    match removed {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}
