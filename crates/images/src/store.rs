//! The on-disk image store: an OCI image layout plus the unpacked layers.
//!
//! ```text
//! <root>/oci-layout               {"imageLayoutVersion":"1.0.0"}
//! <root>/index.json               manifests, named by org.opencontainers.image.ref.name
//! <root>/blobs/sha256/<hex>       manifests, configs and layer tars
//! <root>/layers/sha256/<hex>/     one unpacked tree per layer, by diff ID (layers/ is 0700)
//! <root>/tmp/                     temporaries of the current writer (mode 0700)
//! <root>/journal/                 objects an import or removal in progress may leave behind
//! <root>/lock                     flock(2) held by the current writer
//! ```
//!
//! Several processes may share one root. Readers take no lock: `index.json`, blobs and layer
//! directories only ever appear by `rename(2)` of a complete, synced temporary, so whatever a
//! reader finds under its final name is complete. Writers (builds, and later imports) hold an
//! exclusive `flock` on `lock` for their whole run. That is also what makes leftover temporaries
//! recognizable as stale: a writer that gets the lock removes everything in `tmp/` first, and so
//! does `open` when the lock is free.
//!
//! `layers/` and `tmp/` are private to root because the trees hold setuid programs (sudo) that
//! host users must not run.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use serde_json::Map;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::oci::{
    self, ANNOTATION_CREATED, ANNOTATION_RECIPE, ANNOTATION_REF_NAME, Descriptor, History,
    ImageConfiguration, ImageIndex, ImageManifest, RootFs, RuntimeConfig,
};
use crate::pack::{PackedLayer, pack_layer};
use crate::recipe::{DebianRecipe, Recipe};
use crate::unpack::unpack_layer;
use crate::{DEFAULT_SNAPSHOT, Error, Image, ImageConfig, Progress};

const LOCK_FILE: &str = "lock";
pub(crate) const INDEX_FILE: &str = "index.json";
const LAYOUT_FILE: &str = "oci-layout";
const TEMP_DIR: &str = "tmp";

/// An OCI image store on disk; see the module documentation for the layout.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// The exclusive writer lock; dropping it unlocks.
type StoreLock = Flock<File>;

impl ImageStore {
    /// Opens the store at `root`, creating the layout if it is missing, and removes stale
    /// temporaries when no other process is writing.
    pub fn open(root: &Path) -> Result<Self, Error> {
        create_dir(root, 0o755)?;
        let root = fs::canonicalize(root).map_err(|source| Error::CreateDir {
            path: root.to_owned(),
            source,
        })?;
        let store = Self { root };
        create_dir(&store.root.join("blobs/sha256"), 0o755)?;
        create_dir(&store.root.join("layers"), 0o700)?;
        create_dir(&store.root.join("layers/sha256"), 0o755)?;
        create_dir(&store.temp_dir(), 0o700)?;
        create_dir(&store.journal_dir(), 0o700)?;

        if let Some(_lock) = store.try_lock()? {
            store.remove_temporaries();
            store.write_missing_layout_files()?;
        } else if !store.root.join(INDEX_FILE).exists() {
            // Another process holds the lock, most likely while creating this same layout.
            let _lock = store.lock_blocking()?;
            store.write_missing_layout_files()?;
        }
        Ok(store)
    }

    /// Returns the root directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Returns the default snapshot ([`DEFAULT_SNAPSHOT`]), building it first when it is missing
    /// or was built from another recipe. A build takes mmdebstrap's time (20 to 70 s, depending
    /// on the mirror) plus about 10 s to pack and unpack the 300 MB layer in a release build.
    ///
    /// Progress lines (mmdebstrap's own included) go to `progress` and to the log.
    pub async fn ensure_default(&self, progress: Progress<'_>) -> Result<Image, Error> {
        self.ensure_built(
            DEFAULT_SNAPSHOT,
            &DebianRecipe::default_snapshot(),
            progress,
        )
        .await
    }

    /// Returns image `name` if it was built from a recipe with the digest of `recipe`, and
    /// otherwise builds it and points `name` at the result.
    ///
    /// Concurrent calls, from this or other processes, build once: the others wait for the
    /// store lock and then find the image. The images that `name` named before stay in the
    /// blobs and layers, because running sandboxes may still use their layers.
    pub async fn ensure_built(
        &self,
        name: &str,
        recipe: &impl Recipe,
        progress: Progress<'_>,
    ) -> Result<Image, Error> {
        let recipe_digest = recipe.digest();
        if let Some(image) = self.get_built(name, &recipe_digest)? {
            return Ok(image);
        }

        let lock = self.lock(progress).await?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.remove_temporaries())
            .await
            .map_err(|source| Error::Task { source })?;
        if let Some(image) = self.get_built(name, &recipe_digest)? {
            progress(&format!("snapshot {name} was built by another process"));
            return Ok(image);
        }

        let started = Instant::now();
        tracing::info!(image = name, recipe = %recipe_digest, "building image");
        progress(&format!(
            "building snapshot {name} (recipe {recipe_digest})"
        ));
        let build_dir = self.temp_path("build");
        create_dir(&build_dir, 0o755)?;
        // DirBuilder's mode is reduced by the umask; the recipe contract promises 0755.
        set_mode(&build_dir, 0o755)?;

        let result = self
            .build_and_record(name, recipe, &recipe_digest, &build_dir, progress)
            .await;
        let cleanup_dir = build_dir.clone();
        let _ = tokio::task::spawn_blocking(move || remove_temporary(&cleanup_dir)).await;
        drop(lock);

        // A failure is returned, not logged: the caller reports it once.
        if let Ok(image) = &result {
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(image = name, manifest = %image.manifest_digest, seconds, "image built");
            progress(&format!("snapshot {name} built in {seconds:.1} s"));
        }
        result
    }

    /// Returns the image named `name`, or `None` when no image has that name.
    pub fn get(&self, name: &str) -> Result<Option<Image>, Error> {
        let index = self.read_index()?;
        match index.find(name) {
            Some(descriptor) => self.load(name, descriptor).map(Some),
            None => Ok(None),
        }
    }

    /// Returns every named image. An image that cannot be loaded is logged and left out, so
    /// that one corrupt entry does not hide the others.
    pub fn list(&self) -> Result<Vec<Image>, Error> {
        let index = self.read_index()?;
        let mut images = Vec::new();
        for descriptor in &index.manifests {
            let Some(name) = descriptor.annotation(ANNOTATION_REF_NAME) else {
                continue;
            };
            match self.load(name, descriptor) {
                Ok(image) => images.push(image),
                Err(error) => {
                    tracing::warn!(image = name, error = %error, "skipping unreadable image")
                }
            }
        }
        Ok(images)
    }

    fn get_built(&self, name: &str, recipe_digest: &str) -> Result<Option<Image>, Error> {
        let index = self.read_index()?;
        let Some(descriptor) = index
            .find(name)
            .filter(|d| d.annotation(ANNOTATION_RECIPE) == Some(recipe_digest))
        else {
            return Ok(None);
        };
        match self.load(name, descriptor) {
            Ok(image) => Ok(Some(image)),
            // A layer directory removed by hand is rebuilt rather than reported forever.
            Err(error @ Error::LayerMissing { .. }) => {
                tracing::warn!(image = name, %error, "rebuilding image with a missing layer");
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Builds `recipe` in `build_dir` and records the image; the caller holds the lock.
    async fn build_and_record(
        &self,
        name: &str,
        recipe: &impl Recipe,
        recipe_digest: &str,
        build_dir: &Path,
        progress: Progress<'_>,
    ) -> Result<Image, Error> {
        // 1. The root filesystem.
        recipe
            .build(build_dir, progress)
            .await
            .map_err(|source| Error::Build {
                image: name.to_owned(),
                source,
            })?;

        // 2. The layer blob, packed from the tree.
        progress("packing the root filesystem into a layer");
        let step = Instant::now();
        let store = self.clone();
        let (tree, image) = (build_dir.to_owned(), name.to_owned());
        let packed = tokio::task::spawn_blocking(move || store.pack_into_blob(&tree, &image))
            .await
            .map_err(|source| Error::Task { source })??;

        // 3. The unpacked layer. The tree from step 1 is not renamed into place: unpacking the
        // blob takes a few seconds, and it makes the layer directory the exact content of the
        // tar through the same code path that every import uses.
        progress(&format!(
            "packed layer {} ({} MB) in {:.1} s; unpacking it",
            packed.diff_id,
            packed.size / 1_000_000,
            step.elapsed().as_secs_f64()
        ));
        let step = Instant::now();
        let store = self.clone();
        let diff_id = packed.diff_id.clone();
        tokio::task::spawn_blocking(move || store.unpack_layer_blob(&diff_id, &diff_id))
            .await
            .map_err(|source| Error::Task { source })??;
        progress(&format!(
            "unpacked layer in {:.1} s",
            step.elapsed().as_secs_f64()
        ));

        // 4. Config, manifest and the name in index.json, in that order, so that a name only
        // ever points at a complete image.
        let created = OffsetDateTime::now_utc();
        let config = self.write_config(&recipe.config(), recipe_digest, &packed, created)?;
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(oci::MEDIA_TYPE_MANIFEST.to_owned()),
            config,
            layers: vec![descriptor(
                oci::MEDIA_TYPE_LAYER_TAR,
                &packed.diff_id,
                packed.size,
            )],
            annotations: Map::new(),
        };
        let manifest_bytes = to_json(&manifest);
        let manifest_digest = self.write_blob(&manifest_bytes)?;

        let mut entry = descriptor(
            oci::MEDIA_TYPE_MANIFEST,
            &manifest_digest,
            manifest_bytes.len() as u64,
        );
        entry
            .annotations
            .insert(ANNOTATION_REF_NAME.into(), name.into());
        entry
            .annotations
            .insert(ANNOTATION_RECIPE.into(), recipe_digest.into());
        entry
            .annotations
            .insert(ANNOTATION_CREATED.into(), rfc3339(created).into());
        let mut index = self.read_index()?;
        index.set(name, entry.clone());
        self.write_atomic(&self.root.join(INDEX_FILE), &to_json(&index))?;

        self.load(name, &entry)
    }

    fn write_config(
        &self,
        config: &ImageConfig,
        recipe_digest: &str,
        layer: &PackedLayer,
        created: OffsetDateTime,
    ) -> Result<Descriptor, Error> {
        let mut labels = Map::new();
        labels.insert(ANNOTATION_RECIPE.into(), recipe_digest.into());
        let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let configuration = ImageConfiguration {
            created: Some(rfc3339(created)),
            architecture: Some(oci_architecture().to_owned()),
            os: Some("linux".to_owned()),
            config: RuntimeConfig {
                user: config.user.clone(),
                env: non_empty(&config.env),
                entrypoint: non_empty(&config.entrypoint),
                cmd: non_empty(&config.cmd),
                working_dir: config.working_dir.clone(),
                labels: Some(labels),
            },
            rootfs: RootFs {
                kind: "layers".to_owned(),
                diff_ids: vec![layer.diff_id.clone()],
            },
            history: vec![History {
                created: Some(rfc3339(created)),
                created_by: Some(format!("daytona-images recipe {recipe_digest}")),
                comment: None,
            }],
        };
        let bytes = to_json(&configuration);
        let digest = self.write_blob(&bytes)?;
        Ok(descriptor(
            oci::MEDIA_TYPE_CONFIG,
            &digest,
            bytes.len() as u64,
        ))
    }

    /// Packs `tree` into a layer blob; the caller holds the lock.
    fn pack_into_blob(&self, tree: &Path, image: &str) -> Result<PackedLayer, Error> {
        let temp = self.temp_path("blob");
        let write_error = |source| Error::WriteFile {
            path: temp.clone(),
            source,
        };
        let file = create_new_file(&temp).map_err(write_error)?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        let packed = pack_layer(tree, &mut writer).map_err(|source| Error::Pack {
            image: image.to_owned(),
            source,
        })?;
        let file = writer
            .into_inner()
            .map_err(|error| write_error(error.into_error()))?;
        file.sync_all().map_err(write_error)?;
        drop(file);

        let blob = self.blob_path(&packed.diff_id)?;
        if blob.exists() {
            remove_temporary(&temp);
        } else {
            self.rename_into_place(&temp, &blob)?;
        }
        Ok(packed)
    }

    /// Unpacks layer blob `digest` into `layers/sha256/<hex of expected_diff_id>` unless it is
    /// there already, and returns that directory; the caller holds the lock.
    pub(crate) fn unpack_layer_blob(
        &self,
        digest: &str,
        expected_diff_id: &str,
    ) -> Result<PathBuf, Error> {
        let layer_dir = self.layer_path(expected_diff_id)?;
        if layer_dir.is_dir() {
            return Ok(layer_dir);
        }
        let blob = self.blob_path(digest)?;
        let file = File::open(&blob).map_err(|source| Error::ReadFile {
            path: blob.clone(),
            source,
        })?;
        let temp = self.temp_path("layer");
        create_dir(&temp, 0o755)?;

        let unpacked = match unpack_layer(BufReader::with_capacity(1 << 20, file), &temp) {
            Ok(unpacked) => unpacked,
            Err(source) => {
                remove_temporary(&temp);
                return Err(Error::Unpack {
                    digest: digest.to_owned(),
                    source,
                });
            }
        };
        if unpacked.diff_id != expected_diff_id {
            remove_temporary(&temp);
            return Err(Error::DiffIdMismatch {
                digest: digest.to_owned(),
                expected: expected_diff_id.to_owned(),
                actual: unpacked.diff_id,
            });
        }
        tracing::info!(
            layer = %expected_diff_id,
            entries = unpacked.entries,
            skipped_devices = unpacked.skipped_devices,
            "layer unpacked"
        );

        // The tree's data must be on disk before the rename makes it look complete; syncfs
        // covers every file written above in one call.
        let dir = File::open(&temp).map_err(|source| Error::WriteFile {
            path: temp.clone(),
            source,
        })?;
        nix::unistd::syncfs(dir.as_fd()).map_err(|errno| Error::WriteFile {
            path: temp.clone(),
            source: io::Error::from(errno),
        })?;
        drop(dir);
        self.rename_into_place(&temp, &layer_dir)?;
        Ok(layer_dir)
    }

    pub(crate) fn load(&self, name: &str, descriptor: &Descriptor) -> Result<Image, Error> {
        let manifest: ImageManifest = self.read_json_blob(&descriptor.digest)?;
        let configuration: ImageConfiguration = self.read_json_blob(&manifest.config.digest)?;

        let mut layers = Vec::with_capacity(configuration.rootfs.diff_ids.len());
        for diff_id in &configuration.rootfs.diff_ids {
            let path = self.layer_path(diff_id)?;
            if !path.is_dir() {
                return Err(Error::LayerMissing {
                    image: name.to_owned(),
                    diff_id: diff_id.clone(),
                    path,
                });
            }
            layers.push(path);
        }

        let created_at = configuration
            .created
            .as_deref()
            .or(descriptor.annotation(ANNOTATION_CREATED))
            .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok())
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let runtime = configuration.config;
        Ok(Image {
            name: name.to_owned(),
            manifest_digest: descriptor.digest.clone(),
            layers,
            size_bytes: manifest.layers.iter().map(|layer| layer.size).sum(),
            config: ImageConfig {
                env: runtime.env.unwrap_or_default(),
                entrypoint: runtime.entrypoint.unwrap_or_default(),
                cmd: runtime.cmd.unwrap_or_default(),
                working_dir: runtime.working_dir.filter(|dir| !dir.is_empty()),
                user: runtime.user.filter(|user| !user.is_empty()),
            },
            created_at,
        })
    }

    pub(crate) fn read_index(&self) -> Result<ImageIndex, Error> {
        let path = self.root.join(INDEX_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(ImageIndex::empty());
            }
            Err(source) => return Err(Error::ReadFile { path, source }),
        };
        serde_json::from_slice(&bytes).map_err(|source| Error::ParseJson { path, source })
    }

    /// Reads a JSON blob and checks that its content matches its digest.
    pub(crate) fn read_json_blob<T: DeserializeOwned>(&self, digest: &str) -> Result<T, Error> {
        let path = self.blob_path(digest)?;
        let bytes = fs::read(&path).map_err(|source| Error::ReadFile {
            path: path.clone(),
            source,
        })?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if actual != digest {
            return Err(Error::BlobDigestMismatch {
                expected: digest.to_owned(),
                actual,
            });
        }
        serde_json::from_slice(&bytes).map_err(|source| Error::ParseJson { path, source })
    }

    /// Stores `bytes` as a blob unless it exists and returns its digest; the caller holds the
    /// lock.
    pub(crate) fn write_blob(&self, bytes: &[u8]) -> Result<String, Error> {
        let digest = oci::sha256_digest(bytes);
        let path = self.blob_path(&digest)?;
        if !path.exists() {
            self.write_atomic(&path, bytes)?;
        }
        Ok(digest)
    }

    /// Replaces `path` with `bytes` through a synced temporary; the caller holds the lock.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), Error> {
        let temp = self.temp_path("file");
        let write_error = |source| Error::WriteFile {
            path: temp.clone(),
            source,
        };
        let mut file = create_new_file(&temp).map_err(write_error)?;
        file.write_all(bytes).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        drop(file);
        self.rename_into_place(&temp, path)
    }

    /// Renames `temp` to `path` and syncs the parent directory so that the rename survives a
    /// crash.
    pub(crate) fn rename_into_place(&self, temp: &Path, path: &Path) -> Result<(), Error> {
        let rename_error = |source| Error::WriteFile {
            path: path.to_owned(),
            source,
        };
        if let Err(error) = fs::rename(temp, path) {
            remove_temporary(temp);
            return Err(rename_error(error));
        }
        let parent = path.parent().unwrap_or(&self.root);
        File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(rename_error)
    }

    fn write_missing_layout_files(&self) -> Result<(), Error> {
        let layout = self.root.join(LAYOUT_FILE);
        if !layout.exists() {
            self.write_atomic(&layout, oci::LAYOUT_FILE_CONTENT.as_bytes())?;
        }
        let index = self.root.join(INDEX_FILE);
        if !index.exists() {
            self.write_atomic(&index, &to_json(&ImageIndex::empty()))?;
        }
        Ok(())
    }

    pub(crate) fn blob_path(&self, digest: &str) -> Result<PathBuf, Error> {
        let hex = oci::sha256_hex(digest).ok_or_else(|| Error::InvalidDigest {
            digest: digest.to_owned(),
        })?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    pub(crate) fn layer_path(&self, diff_id: &str) -> Result<PathBuf, Error> {
        let hex = oci::sha256_hex(diff_id).ok_or_else(|| Error::InvalidDigest {
            digest: diff_id.to_owned(),
        })?;
        Ok(self.root.join("layers/sha256").join(hex))
    }

    fn temp_dir(&self) -> PathBuf {
        self.root.join(TEMP_DIR)
    }

    /// Returns a fresh name in `tmp/`: process id plus a per-process counter.
    pub(crate) fn temp_path(&self, kind: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.temp_dir()
            .join(format!("{kind}-{}-{count}", std::process::id()))
    }

    /// Removes everything in `tmp/` and the unreferenced objects that interrupted writers listed
    /// in `journal/`; only called while holding the lock, when every temporary
    /// there belongs to a writer that is gone.
    pub(crate) fn remove_temporaries(&self) {
        let entries = match fs::read_dir(self.temp_dir()) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(dir = %self.temp_dir().display(), %error, "failed to list image store temporaries");
                return;
            }
        };
        for entry in entries.flatten() {
            tracing::info!(path = %entry.path().display(), "removing stale image store temporary");
            remove_temporary(&entry.path());
        }
        self.recover_journals();
    }

    fn lock_file(&self) -> Result<File, Error> {
        let path = self.root.join(LOCK_FILE);
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| Error::Lock { path, source })
    }

    pub(crate) fn try_lock(&self) -> Result<Option<StoreLock>, Error> {
        match Flock::lock(self.lock_file()?, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(lock)),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(Error::Lock {
                path: self.root.join(LOCK_FILE),
                source: errno.into(),
            }),
        }
    }

    pub(crate) fn lock_blocking(&self) -> Result<StoreLock, Error> {
        let mut file = self.lock_file()?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(lock) => return Ok(lock),
                Err((returned, Errno::EINTR)) => file = returned,
                Err((_, errno)) => {
                    return Err(Error::Lock {
                        path: self.root.join(LOCK_FILE),
                        source: errno.into(),
                    });
                }
            }
        }
    }

    pub(crate) async fn lock(&self, progress: Progress<'_>) -> Result<StoreLock, Error> {
        if let Some(lock) = self.try_lock()? {
            return Ok(lock);
        }
        progress("waiting for another process that is writing to the image store");
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.lock_blocking())
            .await
            .map_err(|source| Error::Task { source })?
    }
}

pub(crate) fn descriptor(media_type: &str, digest: &str, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: digest.to_owned(),
        size,
        annotations: Map::new(),
        extra: Map::new(),
    }
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("OCI documents always serialize")
}

pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339)
        .expect("a UTC timestamp always formats as RFC 3339")
}

/// Returns the OCI (Go) name of this machine's architecture.
pub(crate) fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

pub(crate) fn create_dir(path: &Path, mode: u32) -> Result<(), Error> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| Error::CreateDir {
            path: path.to_owned(),
            source,
        })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| Error::CreateDir {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn create_new_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
}

/// Removes a temporary file or tree, logging failures. A tree with a mount point below it is
/// left alone, because removing it would delete files of the mounted filesystem.
pub(crate) fn remove_temporary(path: &Path) {
    let mounts = mount_points_under(path);
    if !mounts.is_empty() {
        tracing::warn!(path = %path.display(), ?mounts, "not removing a temporary with mount points below it");
        return;
    }
    let result = match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => fs::remove_dir_all(path).or_else(|error| {
            // Without root, directories without a write bit (such as a root filesystem's
            // /proc, mode 0555) block the removal of their entries.
            if error.kind() != io::ErrorKind::PermissionDenied {
                return Err(error);
            }
            make_dirs_writable(path);
            fs::remove_dir_all(path)
        }),
        Ok(_) => fs::remove_file(path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    };
    if let Err(error) = result {
        tracing::warn!(path = %path.display(), %error, "failed to remove image store temporary");
    }
}

/// Gives the owner full access to `dir` and every directory below it, without following
/// symbolic links.
fn make_dirs_writable(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            make_dirs_writable(&entry.path());
        }
    }
}

/// Returns the mount points at or below `path`, from `/proc/self/mountinfo`.
fn mount_points_under(path: &Path) -> Vec<PathBuf> {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|mount_point| mount_point.starts_with(path))
        .collect()
}

/// Decodes the `\ooo` octal escapes that mountinfo uses for spaces, tabs, newlines and `\`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        if let Some(digits) = escape {
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(value) = u8::try_from(value) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/a\134b"), r"/a\b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }
}
