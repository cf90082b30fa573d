//! Capture of a sandbox's writable layer as a new image: the layers the sandbox started from,
//! plus one layer packed from its upper directory.
//!
//! A capture runs in two steps so that the caller can keep the sandbox frozen for the packing
//! alone: [`ImageStore::begin_capture`] takes the store lock (which can wait for another
//! writer) and checks the name, [`Capture::pack`] packs the tree into a temporary blob, and
//! [`Capture::commit`] unpacks it and records the image under its name. A capture that is
//! dropped before its commit leaves nothing: its temporary is removed, and whatever it had
//! moved into the store is listed in its journal, which the next writer collects.

use std::collections::HashMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use serde_json::Map;
use time::OffsetDateTime;

use crate::gc::{Journal, Object};
use crate::oci::{
    self, ANNOTATION_CREATED, ANNOTATION_REF_NAME, Descriptor, History, ImageConfiguration,
    ImageManifest, RootFs, RuntimeConfig,
};
use crate::pack::{OwnerShift, PackedLayer, pack_layer_mapped};
use crate::store::{
    INDEX_FILE, create_new_file, descriptor, oci_architecture, remove_temporary, rfc3339, to_json,
};
use crate::{Error, Image, ImageConfig, ImageStore, fault, is_valid_name};

/// A capture in progress; holds the store's writer lock until it is committed or dropped.
pub struct Capture {
    store: ImageStore,
    name: String,
    _lock: nix::fcntl::Flock<std::fs::File>,
    journal: Option<Journal>,
    /// The packed layer's temporary blob, once [`Capture::pack`] has run.
    packed: Option<(PathBuf, PackedLayer)>,
    /// Runtime defaults and history text that replace the base image's, set by image builds.
    config: Option<(ImageConfig, String)>,
}

impl ImageStore {
    /// Starts a capture of an image named `name`: waits for the store lock and checks that
    /// the name is valid and free. Blocks (call it from `spawn_blocking` in async code).
    pub fn begin_capture(&self, name: &str) -> Result<Capture, Error> {
        if !is_valid_name(name) {
            return Err(Error::InvalidName {
                name: name.to_owned(),
            });
        }
        let lock = match self.try_lock()? {
            Some(lock) => lock,
            None => self.lock_blocking()?,
        };
        self.remove_temporaries();
        if self.read_index()?.find(name).is_some() {
            return Err(Error::ImageExists {
                name: name.to_owned(),
            });
        }
        let journal = Journal::create(self, "capture")?;
        Ok(Capture {
            store: self.clone(),
            name: name.to_owned(),
            _lock: lock,
            journal: Some(journal),
            packed: None,
            config: None,
        })
    }

    /// The layer descriptor and the runtime configuration of the image whose layers are
    /// exactly `diff_ids`, or of any image with these layers, from the images of `index.json`.
    fn base_of(&self, diff_ids: &[String]) -> Result<(Vec<Descriptor>, RuntimeConfig), Error> {
        let index = self.read_index()?;
        let mut layers: HashMap<String, Descriptor> = HashMap::new();
        let mut config = None;
        for entry in &index.manifests {
            let Ok(manifest) = self.read_json_blob::<ImageManifest>(&entry.digest) else {
                continue;
            };
            let Ok(configuration) =
                self.read_json_blob::<ImageConfiguration>(&manifest.config.digest)
            else {
                continue;
            };
            let ids = &configuration.rootfs.diff_ids;
            if ids.len() != manifest.layers.len() {
                continue;
            }
            for (diff_id, layer) in ids.iter().zip(&manifest.layers) {
                layers
                    .entry(diff_id.clone())
                    .or_insert_with(|| layer.clone());
            }
            if config.is_none() && ids.as_slice() == diff_ids {
                config = Some(configuration.config);
            }
        }
        let descriptors = diff_ids
            .iter()
            .map(|diff_id| {
                layers
                    .get(diff_id)
                    .map(|layer| descriptor(&layer.media_type, &layer.digest, layer.size))
                    .ok_or_else(|| Error::BaseLayerUnknown {
                        diff_id: diff_id.clone(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((descriptors, config.unwrap_or_default()))
    }
}

impl Capture {
    /// Packs the tree `upper` (overlay whiteouts and opaque directories become their OCI
    /// form) into a temporary blob, with owners shifted back from `owners`. The tree must not
    /// change meanwhile: the caller keeps its writers frozen.
    pub fn pack(&mut self, upper: &Path, owners: Option<OwnerShift>) -> Result<PackedLayer, Error> {
        let temp = self.store.temp_path("capture");
        let write_error = |source| Error::WriteFile {
            path: temp.clone(),
            source,
        };
        let file = create_new_file(&temp).map_err(write_error)?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        let packed = match pack_layer_mapped(upper, &mut writer, owners) {
            Ok(packed) => packed,
            Err(source) => {
                drop(writer);
                remove_temporary(&temp);
                return Err(Error::Pack {
                    image: self.name.clone(),
                    source,
                });
            }
        };
        let file = writer
            .into_inner()
            .map_err(|error| write_error(error.into_error()))?;
        file.sync_all().map_err(write_error)?;
        self.packed = Some((temp, packed.clone()));
        Ok(packed)
    }

    /// Sets the runtime defaults of the new image, which otherwise come from the base image,
    /// and the `created_by` text of its history entry.
    pub fn set_config(&mut self, config: ImageConfig, created_by: &str) {
        self.config = Some((config, created_by.to_owned()));
    }

    /// Records the image: the layers `base` (unpacked layer directories of the store, lowest
    /// first) and the packed layer on top. The name is written last, so it only ever points
    /// at a complete image. Blocks.
    pub fn commit(mut self, base: &[PathBuf]) -> Result<Image, Error> {
        let (temp, packed) = self.packed.take().ok_or_else(|| Error::CaptureNotPacked {
            image: self.name.clone(),
        })?;
        let result = self.commit_packed(base, Some((&temp, &packed)));
        remove_temporary(&temp);
        self.finish(result)
    }

    /// Records an image made of the layers `base` alone, with the configuration of
    /// [`Capture::set_config`]: an image build whose last instructions only change the
    /// configuration. Blocks.
    pub fn commit_without_layer(mut self, base: &[PathBuf]) -> Result<Image, Error> {
        let result = self.commit_packed(base, None);
        self.finish(result)
    }

    fn finish(mut self, result: Result<Image, Error>) -> Result<Image, Error> {
        let journal = self
            .journal
            .take()
            .expect("a capture has its journal until it ends");
        match result {
            Ok(image) => {
                journal.finish();
                Ok(image)
            }
            Err(error) => {
                drop(journal);
                self.store.recover_journals();
                Err(error)
            }
        }
    }

    fn commit_packed(
        &mut self,
        base: &[PathBuf],
        packed: Option<(&Path, &PackedLayer)>,
    ) -> Result<Image, Error> {
        let store = self.store.clone();
        let journal = self
            .journal
            .as_mut()
            .expect("a capture has its journal until it ends");
        let base_ids = base
            .iter()
            .map(|layer| diff_id_of(layer))
            .collect::<Result<Vec<_>, _>>()?;
        let (mut layers, mut runtime) = store.base_of(&base_ids)?;
        let mut created_by = "daytona sandbox snapshot".to_owned();
        let mut comment = format!("the writable layer, as snapshot {}", self.name);
        if let Some((config, text)) = &self.config {
            runtime = runtime_config(config, runtime);
            created_by = text.clone();
            comment = format!("image build step, as image {}", self.name);
        }

        // 1. The blob and its unpacked layer.
        let mut diff_ids = base_ids;
        if let Some((temp, packed)) = packed {
            journal.add(Object::Blob, &packed.diff_id)?;
            let blob = store.blob_path(&packed.diff_id)?;
            if !blob.exists() {
                store.rename_into_place(temp, &blob)?;
            }
            fault::hit("capture.blob-written")?;
            journal.add(Object::Layer, &packed.diff_id)?;
            store.unpack_layer_blob(&packed.diff_id, &packed.diff_id)?;
            fault::hit("capture.layer-unpacked")?;
            diff_ids.push(packed.diff_id.clone());
            layers.push(descriptor(
                oci::MEDIA_TYPE_LAYER_TAR,
                &packed.diff_id,
                packed.size,
            ));
        }

        // 2. Configuration, manifest, then the name.
        let created = OffsetDateTime::now_utc();
        let configuration = ImageConfiguration {
            created: Some(rfc3339(created)),
            architecture: Some(oci_architecture().to_owned()),
            os: Some("linux".to_owned()),
            config: runtime,
            rootfs: RootFs {
                kind: "layers".to_owned(),
                diff_ids,
            },
            history: vec![History {
                created: Some(rfc3339(created)),
                created_by: Some(created_by),
                comment: Some(comment),
            }],
        };
        let config_bytes = to_json(&configuration);
        journal.add(Object::Blob, &oci::sha256_digest(&config_bytes))?;
        let config_digest = store.write_blob(&config_bytes)?;
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(oci::MEDIA_TYPE_MANIFEST.to_owned()),
            config: descriptor(
                oci::MEDIA_TYPE_CONFIG,
                &config_digest,
                config_bytes.len() as u64,
            ),
            layers,
            annotations: Map::new(),
        };
        let manifest_bytes = to_json(&manifest);
        journal.add(Object::Blob, &oci::sha256_digest(&manifest_bytes))?;
        let manifest_digest = store.write_blob(&manifest_bytes)?;
        fault::hit("capture.manifest-written")?;

        let mut entry = descriptor(
            oci::MEDIA_TYPE_MANIFEST,
            &manifest_digest,
            manifest_bytes.len() as u64,
        );
        entry
            .annotations
            .insert(ANNOTATION_REF_NAME.into(), self.name.clone().into());
        entry
            .annotations
            .insert(ANNOTATION_CREATED.into(), rfc3339(created).into());
        let mut index = store.read_index()?;
        index.set(&self.name, entry.clone());
        store.write_atomic(&store.root().join(INDEX_FILE), &to_json(&index))?;
        store.load(&self.name, &entry)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some((temp, _)) = self.packed.take() {
            remove_temporary(&temp);
        }
        if let Some(journal) = self.journal.take() {
            // Nothing was moved into the store before the commit, so the journal is empty.
            journal.finish();
        }
    }
}

/// `config` in the OCI form, keeping the fields of `base` that [`ImageConfig`] does not carry.
fn runtime_config(config: &ImageConfig, base: RuntimeConfig) -> RuntimeConfig {
    let list = |values: &Vec<String>| (!values.is_empty()).then(|| values.clone());
    RuntimeConfig {
        user: config.user.clone(),
        env: list(&config.env),
        entrypoint: list(&config.entrypoint),
        cmd: list(&config.cmd),
        working_dir: config.working_dir.clone(),
        labels: base.labels,
    }
}

/// The diff ID of an unpacked layer directory (`layers/sha256/<hex>`).
fn diff_id_of(layer: &Path) -> Result<String, Error> {
    let hex = layer
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default();
    let diff_id = format!("sha256:{hex}");
    match oci::sha256_hex(&diff_id) {
        Some(_) => Ok(diff_id),
        None => Err(Error::InvalidDigest { digest: diff_id }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// Packs a tree as the first layer of a base image, then captures a second tree on it.
    #[test]
    fn capture_stacks_a_layer_on_the_base_image() {
        if !root() {
            eprintln!("SKIPPED: the image store keeps numeric owners and needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("store")).unwrap();

        // The base: one file, imported through a capture of a plain tree.
        let base_tree = dir.path().join("base");
        fs::create_dir_all(base_tree.join("etc")).unwrap();
        fs::write(base_tree.join("etc/hostname"), "base\n").unwrap();
        fs::write(base_tree.join("etc/gone"), "deleted later\n").unwrap();
        let mut capture = store.begin_capture("base").unwrap();
        capture.pack(&base_tree, None).unwrap();
        let base = capture.commit(&[]).unwrap();
        assert_eq!(base.layers.len(), 1);

        // The upper directory of a sandbox whose ids start at 100000.
        let shift = OwnerShift {
            host_base: 100_000,
            size: 65_536,
        };
        let upper = dir.path().join("upper");
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::write(upper.join("etc/hostname"), "changed\n").unwrap();
        fs::write(upper.join("owned"), "by 1000\n").unwrap();
        std::os::unix::fs::lchown(upper.join("owned"), Some(101_000), Some(101_000)).unwrap();
        fs::set_permissions(upper.join("owned"), fs::Permissions::from_mode(0o640)).unwrap();
        symlink("etc/hostname", upper.join("link")).unwrap();
        nix::sys::stat::mknod(
            &upper.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();

        let mut capture = store.begin_capture("captured").unwrap();
        capture.pack(&upper, Some(shift)).unwrap();
        let image = capture.commit(&base.layers).unwrap();
        assert_eq!(image.layers.len(), 2);
        assert_eq!(image.layers[0], base.layers[0]);

        let top = &image.layers[1];
        assert_eq!(
            fs::read_to_string(top.join("etc/hostname")).unwrap(),
            "changed\n"
        );
        let owned = fs::symlink_metadata(top.join("owned")).unwrap();
        assert_eq!((owned.uid(), owned.gid()), (1000, 1000));
        assert_eq!(owned.mode() & 0o7777, 0o640);
        assert_eq!(
            fs::read_link(top.join("link")).unwrap(),
            Path::new("etc/hostname")
        );
        // The whiteout is a whiteout again in the unpacked layer.
        let gone = fs::symlink_metadata(top.join("etc/gone")).unwrap();
        assert_eq!(gone.rdev(), 0);
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &gone.file_type()
        ));

        assert!(matches!(
            store.begin_capture("captured"),
            Err(Error::ImageExists { .. })
        ));
        assert!(fs::read_dir(store.journal_dir()).unwrap().next().is_none());
    }

    #[test]
    fn a_dropped_capture_leaves_nothing() {
        if !root() {
            eprintln!("SKIPPED: the image store keeps numeric owners and needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("store")).unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(&tree).unwrap();
        fs::write(tree.join("file"), "x").unwrap();
        let mut capture = store.begin_capture("dropped").unwrap();
        capture.pack(&tree, None).unwrap();
        drop(capture);
        assert!(
            fs::read_dir(store.root().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
        assert!(fs::read_dir(store.journal_dir()).unwrap().next().is_none());
        assert!(store.get("dropped").unwrap().is_none());
    }

    #[test]
    fn unknown_base_layers_are_refused() {
        if !root() {
            eprintln!("SKIPPED: the image store keeps numeric owners and needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("store")).unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(&tree).unwrap();
        let mut capture = store.begin_capture("orphan").unwrap();
        capture.pack(&tree, None).unwrap();
        let missing = PathBuf::from(format!("/nowhere/{}", "a".repeat(64)));
        assert!(matches!(
            capture.commit(&[missing]),
            Err(Error::BaseLayerUnknown { .. })
        ));
        assert!(store.get("orphan").unwrap().is_none());
        assert!(fs::read_dir(store.journal_dir()).unwrap().next().is_none());
    }
}
