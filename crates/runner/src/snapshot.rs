//! Sandbox snapshots and forks: the writable layer of a sandbox, read while it is frozen.
//!
//! A snapshot packs the sandbox's upper directory as a new image layer on top of the layers the
//! sandbox started from. A fork copies the whole writable layer to a new sandbox. Both freeze
//! the sandbox's cgroup for the read or the copy, so that no process of it writes meanwhile,
//! and thaw it afterwards, on failure too.
//!
//! The upper directory of a sandbox with a disk image lives in an ext4 filesystem that is
//! mounted only in the sandbox's own mount namespace, and `/proc/<pid>/root` shows the merged
//! overlay, not the upper directory. So the filesystem is mounted once more, on a thread of
//! its own that has a private mount namespace: the loop device of a running sandbox gives the
//! same superblock, so the thread reads exactly what the sandbox wrote. The mount goes away
//! with the thread.
//!
//! Files in a writable layer belong to the host ids of the sandbox's uid range. A snapshot
//! shifts them back to the ids inside the sandbox; a fork shifts the copy to the new sandbox's
//! range.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use daytona_images::pack::OwnerShift;
use daytona_images::{Image, ImageStore};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

use crate::disk;
use crate::instance::{InstanceDirs, InstanceRecord};
use crate::runner::{CreateParams, Runner, RunnerError, save};
use crate::slots;

/// Name of the upper directory and of the overlay work directory in a disk image.
pub(crate) const DISK_UPPER: &str = "upper";

impl Runner {
    /// Captures the files of a sandbox, running or stopped, as image `name` of `store`: the
    /// sandbox's image layers plus one layer with what the sandbox changed (deleted files as
    /// whiteouts, owners as the sandbox sees them). A running sandbox is frozen while its
    /// layer is packed. Waits for an operation in progress on the sandbox.
    pub async fn snapshot(
        &self,
        sandbox_id: &str,
        store: &ImageStore,
        name: &str,
    ) -> Result<Image, RunnerError> {
        let capture_error = |source| RunnerError::Capture {
            sandbox_id: sandbox_id.to_owned(),
            image: name.to_owned(),
            source: Box::new(source),
        };
        let instance = self.instance(sandbox_id)?;
        let record = instance.record.lock().await;
        let running = self.runs(&record);

        // The store lock can wait for another writer; the sandbox is not frozen meanwhile.
        let (store, image) = (store.clone(), name.to_owned());
        let mut capture = tokio::task::spawn_blocking(move || store.begin_capture(&image))
            .await
            .expect("starting a capture does not panic")
            .map_err(capture_error)?;

        let owners = OwnerShift {
            host_base: slots::host_base(record.slot),
            size: slots::RANGE_SIZE,
        };
        let started = Instant::now();
        let packed = self
            .frozen(sandbox_id, running, async {
                with_upper(&instance.dirs, &record, move |upper| {
                    let packed = capture.pack(upper, Some(owners));
                    Ok((capture, packed))
                })
                .await
                .map_err(|source| RunnerError::OpenLayer {
                    sandbox_id: sandbox_id.to_owned(),
                    source,
                })
            })
            .await?;
        let frozen_for = started.elapsed();
        let (capture, packed) = packed;
        let packed = packed.map_err(capture_error)?;

        let layers = record.layers.clone();
        let image = tokio::task::spawn_blocking(move || capture.commit(&layers))
            .await
            .expect("committing a capture does not panic")
            .map_err(capture_error)?;
        tracing::info!(
            sandbox_id,
            image = name,
            layer = %packed.diff_id,
            layer_bytes = packed.size,
            frozen_ms = frozen_for.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "sandbox snapshotted"
        );
        Ok(image)
    }

    /// What a fork of sandbox `from` is made of: its layers, user, environment, limits,
    /// volumes and work directory, for the new sandbox `sandbox_id`.
    pub async fn fork_params(
        &self,
        from: &str,
        sandbox_id: &str,
    ) -> Result<CreateParams, RunnerError> {
        let instance = self.instance(from)?;
        let record = instance.record.lock().await;
        Ok(CreateParams {
            sandbox_id: sandbox_id.to_owned(),
            layers: record.layers.clone(),
            user: record.user.clone(),
            env: record.env.clone(),
            limits: record.limits,
            volumes: record.volumes.clone(),
            work_dir: record.work_dir.clone(),
            egress: record
                .network
                .as_ref()
                .map(|network| network.policy.clone())
                .unwrap_or_default(),
        })
    }

    /// Prepares sandbox `params.sandbox_id` with a copy of the writable layer of sandbox
    /// `from`, without starting it. A running `from` is frozen for the copy (a sparse copy of
    /// its disk image) and goes on running; from then on the two diverge. On failure nothing
    /// of the new sandbox is left.
    pub async fn fork(&self, from: &str, params: CreateParams) -> Result<(), RunnerError> {
        let sandbox_id = params.sandbox_id.clone();
        let source = self.instance(from)?;
        let source_record = source.record.lock().await;
        self.prepare_instance(params, false)?;
        let copied = self.copy_layer(from, &source.dirs, &source_record, &sandbox_id);
        let copied = copied.await;
        drop(source_record);
        if copied.is_err() {
            self.destroy(&sandbox_id).await.ok();
        }
        copied
    }

    async fn copy_layer(
        &self,
        from: &str,
        source_dirs: &InstanceDirs,
        source_record: &InstanceRecord,
        sandbox_id: &str,
    ) -> Result<(), RunnerError> {
        let copy_error = |source| RunnerError::CopyLayer {
            sandbox_id: sandbox_id.to_owned(),
            from: from.to_owned(),
            source,
        };
        let target = self.instance(sandbox_id)?;
        let mut record = target.record.lock().await;
        record.disk_image = source_record.disk_image;

        let started = Instant::now();
        let running = self.runs(source_record);
        self.frozen(from, running, async {
            if source_record.disk_image {
                copy_disk(source_dirs.disk_image(), target.dirs.disk_image()).await
            } else {
                copy_tree(source_dirs.upper(), target.dirs.upper()).await
            }
            .map_err(copy_error)
        })
        .await?;
        let frozen_for = started.elapsed();

        let old_base = slots::host_base(source_record.slot);
        let new_base = slots::host_base(record.slot);
        if record.disk_image {
            let image = target.dirs.disk_image();
            in_private_mounts(move |mount_point| {
                disk_mount(&image, mount_point)?;
                shift_owners(mount_point, old_base, new_base, slots::RANGE_SIZE)
            })
            .await
        } else {
            let upper = target.dirs.upper();
            tokio::task::spawn_blocking(move || {
                shift_owners(&upper, old_base, new_base, slots::RANGE_SIZE)
            })
            .await
            .expect("shifting owners does not panic")
        }
        .map_err(copy_error)?;
        tracing::info!(
            sandbox_id,
            from,
            frozen_ms = frozen_for.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "sandbox forked"
        );
        save(&record, &target.dirs)
    }

    pub(crate) fn runs(&self, record: &InstanceRecord) -> bool {
        record
            .process
            .as_ref()
            .is_some_and(|process| self.runtime.is_running(process))
    }

    /// Runs `work` with the sandbox frozen when `running`; thaws it afterwards whatever
    /// happened, and a failure to thaw is an error.
    async fn frozen<T>(
        &self,
        sandbox_id: &str,
        running: bool,
        work: impl Future<Output = Result<T, RunnerError>>,
    ) -> Result<T, RunnerError> {
        if !running {
            return work.await;
        }
        let result = match self.runtime.freeze(sandbox_id) {
            Ok(()) => work.await,
            Err(error) => Err(error.into()),
        };
        match self.runtime.thaw(sandbox_id) {
            Ok(()) => result,
            Err(error) => {
                tracing::error!(sandbox_id, %error, "failed to thaw the sandbox; its processes stay stopped until it is stopped or thawed");
                result.and(Err(error.into()))
            }
        }
    }
}

/// Runs `read` on the sandbox's upper directory: in place for a sandbox without a disk image,
/// else in a private mount of its disk image, made read-only.
pub(crate) async fn with_upper<T: Send + 'static>(
    dirs: &InstanceDirs,
    record: &InstanceRecord,
    read: impl FnOnce(&Path) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    if !record.disk_image {
        let upper = dirs.upper();
        return tokio::task::spawn_blocking(move || {
            if !upper.is_dir() {
                fs::create_dir_all(&upper)?;
            }
            read(&upper)
        })
        .await
        .expect("reading the upper directory does not panic");
    }
    let image = dirs.disk_image();
    in_private_mounts(move |mount_point| {
        disk_mount(&image, mount_point)?;
        mount(
            None::<&str>,
            mount_point,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )?;
        let upper = mount_point.join(DISK_UPPER);
        if !upper.is_dir() {
            // A sandbox that never started has no upper directory yet: nothing changed.
            let empty = tempfile_dir()?;
            let result = read(&empty);
            let _ = fs::remove_dir(&empty);
            return result;
        }
        read(&upper)
    })
    .await
}

/// An empty directory to pack when a sandbox has no upper directory yet.
fn tempfile_dir() -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("daytona-empty-layer-{}", uuid::Uuid::new_v4()));
    fs::create_dir(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// Mounts the ext4 filesystem of a disk image at `target`: through the loop device that the
/// running sandbox uses, which gives the sandbox's own superblock, or, when the image is not
/// attached, through a new loop device that detaches once the mount is gone.
pub(crate) fn disk_mount(image: &Path, target: &Path) -> io::Result<()> {
    let flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOATIME;
    for device in daytona_isolation::disk::loop_devices_of(image) {
        let device = Path::new("/dev").join(device);
        match mount(Some(&device), target, Some("ext4"), flags, None::<&str>) {
            Ok(()) => return Ok(()),
            // Detached meanwhile: the sandbox's last mount went away.
            Err(errno) => {
                tracing::debug!(device = %device.display(), %errno, "the disk's loop device could not be mounted")
            }
        }
    }
    daytona_isolation::disk::mount_image(image, target)
}

/// Runs `work` on a thread of its own with a private mount namespace, passing it an empty
/// directory to mount on. Its mounts are seen by no other thread or process and go away when
/// the thread ends, which this waits for.
pub(crate) async fn in_private_mounts<T: Send + 'static>(
    work: impl FnOnce(&Path) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let mount_point = std::env::temp_dir().join(format!("daytona-layer-{}", uuid::Uuid::new_v4()));
    fs::create_dir(&mount_point)?;
    let target = mount_point.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let thread = std::thread::Builder::new()
            .name("sandbox-layer".to_owned())
            .spawn(move || {
                // CLONE_NEWNS implies CLONE_FS, which the kernel allows for one thread of a
                // multi-threaded process: this thread gets its own mount table.
                unshare(CloneFlags::CLONE_NEWNS)?;
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&str>,
                )?;
                work(&target)
            })?;
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the sandbox layer thread panicked")))
    })
    .await
    .expect("joining the sandbox layer thread does not panic");
    if let Err(error) = fs::remove_dir(&mount_point) {
        tracing::warn!(path = %mount_point.display(), %error, "failed to remove a mount point");
    }
    joined
}

/// Copies disk image `from` sparsely over `to` while `from`'s filesystem is consistent: when
/// it is mounted, its dirty data and journal are flushed first (the sandbox is frozen, so
/// nothing dirties it again), and the copy starts like a filesystem after a clean crash.
async fn copy_disk(from: PathBuf, to: PathBuf) -> io::Result<()> {
    let attached = !daytona_isolation::disk::loop_devices_of(&from).is_empty();
    if attached {
        let image = from.clone();
        in_private_mounts(move |mount_point| {
            disk_mount(&image, mount_point)?;
            let root = fs::File::open(mount_point)?;
            nix::unistd::syncfs(root.as_fd())?;
            Ok(())
        })
        .await?;
    }
    tokio::task::spawn_blocking(move || {
        let temporary = to.with_extension("img.fork");
        let _ = fs::remove_file(&temporary);
        let copied = disk::sparse_copy(&from, &temporary).and_then(|()| {
            fs::File::open(&temporary)?.sync_all()?;
            fs::rename(&temporary, &to)
        });
        if copied.is_err() {
            let _ = fs::remove_file(&temporary);
        }
        copied
    })
    .await
    .expect("copying a disk image does not panic")
}

/// Copies the upper directory of a sandbox without a disk image, with owners, modes, links,
/// extended attributes and holes.
async fn copy_tree(from: PathBuf, to: PathBuf) -> io::Result<()> {
    tokio::task::spawn_blocking(move || {
        if !from.is_dir() {
            return fs::create_dir_all(&to);
        }
        let output = Command::new("cp")
            .args(["-a", "--sparse=always", "--no-target-directory"])
            .arg(&from)
            .arg(&to)
            .output()?;
        if output.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "cp failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    })
    .await
    .expect("copying a tree does not panic")
}

/// Moves the owners of every file under `root` from the id range starting at `from` to the
/// one starting at `to`; ids outside the range stay. Set-user-ID and set-group-ID bits, which
/// a change of owner clears, are restored. Returns how many files changed.
pub(crate) fn shift_owners(root: &Path, from: u32, to: u32, size: u32) -> io::Result<u64> {
    let shift = |id: u32| {
        id.checked_sub(from)
            .filter(|offset| *offset < size)
            .map(|offset| to + offset)
    };
    let mut changed = 0;
    let mut pending = vec![root.to_owned()];
    while let Some(path) = pending.pop() {
        let metadata = fs::symlink_metadata(&path)?;
        let (uid, gid) = (shift(metadata.uid()), shift(metadata.gid()));
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(&path, uid, gid)?;
            let special = metadata.mode() & 0o6000;
            if metadata.is_file() && special != 0 {
                fs::set_permissions(&path, fs::Permissions::from_mode(metadata.mode() & 0o7777))?;
            }
            changed += 1;
        }
        if metadata.is_dir() {
            for entry in fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn owners_move_to_the_new_range_and_keep_setuid() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: changing owners needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("upper");
        fs::create_dir_all(root.join("home")).unwrap();
        fs::write(root.join("home/file"), "x").unwrap();
        fs::write(root.join("suid"), "x").unwrap();
        symlink("home/file", root.join("link")).unwrap();
        fs::write(root.join("host"), "x").unwrap();
        let base = 2_000_000_000;
        for (path, id) in [
            ("", base),
            ("home", base + 1000),
            ("home/file", base + 1000),
            ("suid", base),
            ("link", base + 1000),
        ] {
            std::os::unix::fs::lchown(root.join(path), Some(id), Some(id)).unwrap();
        }
        fs::set_permissions(root.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();

        let changed = shift_owners(&root, base, base + 65536, 65536).unwrap();
        assert_eq!(changed, 5);
        let owner = |path: &str| {
            let metadata = fs::symlink_metadata(root.join(path)).unwrap();
            (metadata.uid(), metadata.gid())
        };
        assert_eq!(
            owner("home/file"),
            (base + 65536 + 1000, base + 65536 + 1000)
        );
        assert_eq!(owner("link"), (base + 65536 + 1000, base + 65536 + 1000));
        assert_eq!(owner(""), (base + 65536, base + 65536));
        assert_eq!(owner("host"), (0, 0));
        let mode = fs::metadata(root.join("suid")).unwrap().mode();
        assert_eq!(mode & 0o7777, 0o4755);
    }

    #[tokio::test]
    async fn private_mounts_stay_private() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: mount namespaces need root");
            return;
        }
        let seen = in_private_mounts(|mount_point| {
            mount(
                Some("tmpfs"),
                mount_point,
                Some("tmpfs"),
                MsFlags::empty(),
                Some("size=1m"),
            )?;
            fs::write(mount_point.join("inside"), "x")?;
            Ok(mount_point.to_owned())
        })
        .await
        .unwrap();
        // The mount point is gone, and the host's mount table never listed it.
        assert!(!seen.exists());
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mountinfo.contains(seen.to_str().unwrap()));
    }
}
