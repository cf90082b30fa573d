//! Import of images into the store: `docker save` tarballs (docker-archive) and OCI image
//! layouts, as directories or tars.
//!
//! Every blob is copied to a temporary, checked against its digest (and size, where a
//! descriptor gives one), and only then renamed into `blobs/`; a blob the store already has is
//! not read again. Layers are unpacked once by diff ID, and an unpacked layer that exists is
//! reused. The name is written to `index.json` last, so it only ever points at a complete
//! image; what an interrupted import leaves is collected through its journal (see
//! [`crate::gc`]).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::Instant;

use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::gc::{Journal, Object};
use crate::oci::{
    self, ANNOTATION_CREATED, ANNOTATION_REF_NAME, Descriptor, ImageConfiguration, ImageIndex,
    ImageManifest,
};
use crate::source::Source;
use crate::store::{
    create_new_file, descriptor, oci_architecture, remove_temporary, rfc3339, to_json,
};
use crate::{Error, Image, ImageStore, Progress, fault};

const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MEDIA_TYPE_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Maximum length of an image name.
const MAX_NAME: usize = 128;

/// Returns whether `name` can name an image: 1 to 128 letters, digits and `._-:/`, starting
/// with a letter or digit.
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let Some(first) = bytes.next() else {
        return false;
    };
    name.len() <= MAX_NAME
        && first.is_ascii_alphanumeric()
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"._-:/".contains(&b))
}

/// One image of a docker-archive's `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// What to copy from the source: the manifest (OCI only; a docker-archive has none), the
/// configuration and the layers, each an entry of the source with the digest it must have.
struct Plan {
    manifest: Option<(Vec<u8>, String)>,
    config: Blob,
    layers: Vec<Blob>,
}

struct Blob {
    entry: String,
    /// The digest the content must have, when the source states it.
    digest: Option<String>,
    size: Option<u64>,
    media_type: Option<String>,
}

impl ImageStore {
    /// Imports the image at `source` under `name`: a directory with an OCI image layout, or a
    /// tar that holds one or a `docker save` archive. A source with several images needs `tag`,
    /// the `org.opencontainers.image.ref.name` of an OCI layout or a `RepoTags` entry of a
    /// docker-archive.
    ///
    /// Blocks for the whole import (call it from `spawn_blocking` in async code). Another
    /// writer of the store makes it wait.
    pub fn import(
        &self,
        name: &str,
        source: &Path,
        tag: Option<&str>,
        progress: Progress<'_>,
    ) -> Result<Image, Error> {
        if !is_valid_name(name) {
            return Err(Error::InvalidName {
                name: name.to_owned(),
            });
        }
        let lock = match self.try_lock()? {
            Some(lock) => lock,
            None => {
                progress("waiting for another process that is writing to the image store");
                self.lock_blocking()?
            }
        };
        let started = Instant::now();
        let result = self.import_blocking(name, source, tag, progress);
        drop(lock);
        let image = result?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(image = name, manifest = %image.manifest_digest, seconds, "image imported");
        progress(&format!("imported {name} in {seconds:.1} s"));
        Ok(image)
    }

    /// The import with the lock held: a failure collects what the import wrote.
    fn import_blocking(
        &self,
        name: &str,
        source: &Path,
        tag: Option<&str>,
        progress: Progress<'_>,
    ) -> Result<Image, Error> {
        self.remove_temporaries();
        if self.read_index()?.find(name).is_some() {
            return Err(Error::ImageExists {
                name: name.to_owned(),
            });
        }
        let mut journal = Journal::create(self, "import")?;
        match self.import_locked(&mut journal, name, source, tag, progress) {
            Ok(image) => {
                journal.finish();
                Ok(image)
            }
            Err(error) => {
                drop(journal);
                self.recover_journals();
                Err(error)
            }
        }
    }

    fn import_locked(
        &self,
        journal: &mut Journal,
        name: &str,
        path: &Path,
        tag: Option<&str>,
        progress: Progress<'_>,
    ) -> Result<Image, Error> {
        // 1. What to copy.
        let source = Source::open(path)?;
        let plan = if source.contains("oci-layout") {
            oci_plan(&source, tag)?
        } else if source.contains("manifest.json") {
            docker_plan(&source, tag)?
        } else {
            return Err(Error::UnknownSourceFormat {
                path: path.to_owned(),
            });
        };

        // 2. The configuration, which names the layers' diff IDs.
        let (config_digest, config_size) = self.copy_blob(&source, &plan.config, journal)?;
        let config: ImageConfiguration = self.read_json_blob(&config_digest)?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != plan.layers.len() {
            return Err(Error::LayerCountMismatch {
                layers: plan.layers.len(),
                diff_ids: diff_ids.len(),
            });
        }

        // 3. The layer blobs.
        let mut layers = Vec::with_capacity(plan.layers.len());
        for (number, layer) in plan.layers.iter().enumerate() {
            progress(&format!(
                "copying layer {}/{} ({})",
                number + 1,
                plan.layers.len(),
                layer.entry
            ));
            let (digest, size) = self.copy_blob(&source, layer, journal)?;
            let media_type = match &layer.media_type {
                Some(media_type) => media_type.clone(),
                None => self.layer_media_type(&digest)?,
            };
            layers.push(descriptor(&media_type, &digest, size));
        }
        fault::hit("import.blobs-written")?;

        // 4. The unpacked layers, each at most once.
        for (number, (layer, diff_id)) in layers.iter().zip(diff_ids).enumerate() {
            journal.add(Object::Layer, diff_id)?;
            let step = Instant::now();
            let existed = self.layer_path(diff_id)?.is_dir();
            self.unpack_layer_blob(&layer.digest, diff_id)?;
            progress(&format!(
                "layer {}/{} {diff_id}: {}",
                number + 1,
                layers.len(),
                if existed {
                    "already unpacked".to_owned()
                } else {
                    format!("unpacked in {:.1} s", step.elapsed().as_secs_f64())
                }
            ));
        }
        fault::hit("import.layers-unpacked")?;

        // 5. The manifest, then the name.
        let (manifest_bytes, media_type) = match plan.manifest {
            Some(manifest) => manifest,
            None => {
                let manifest = ImageManifest {
                    schema_version: 2,
                    media_type: Some(oci::MEDIA_TYPE_MANIFEST.to_owned()),
                    config: descriptor(oci::MEDIA_TYPE_CONFIG, &config_digest, config_size),
                    layers,
                    annotations: Map::new(),
                };
                (to_json(&manifest), oci::MEDIA_TYPE_MANIFEST.to_owned())
            }
        };
        let manifest_digest = oci::sha256_digest(&manifest_bytes);
        journal.add(Object::Blob, &manifest_digest)?;
        self.write_blob(&manifest_bytes)?;
        fault::hit("import.manifest-written")?;

        let mut entry = descriptor(&media_type, &manifest_digest, manifest_bytes.len() as u64);
        entry
            .annotations
            .insert(ANNOTATION_REF_NAME.into(), name.into());
        entry.annotations.insert(
            ANNOTATION_CREATED.into(),
            rfc3339(OffsetDateTime::now_utc()).into(),
        );
        let mut index = self.read_index()?;
        index.set(name, entry.clone());
        self.write_atomic(
            &self.root().join(crate::store::INDEX_FILE),
            &to_json(&index),
        )?;
        self.load(name, &entry)
    }

    /// Copies one blob of the source into the store unless the store has it, checking its
    /// digest and size; returns its digest and size.
    fn copy_blob(
        &self,
        source: &Source,
        blob: &Blob,
        journal: &mut Journal,
    ) -> Result<(String, u64), Error> {
        if let Some(digest) = &blob.digest {
            let existing = self.blob_path(digest)?;
            if let Ok(metadata) = existing.metadata() {
                // Blobs in the store were checked when they were written.
                return Ok((digest.clone(), metadata.len()));
            }
        }
        let (mut reader, _) = source.read(&blob.entry)?;
        let temp = self.temp_path("import");
        let copied = copy_hashed(&mut reader, &temp).inspect_err(|_| remove_temporary(&temp));
        let (actual, size) = copied?;
        let mismatch = match (&blob.digest, blob.size) {
            (Some(expected), _) if *expected != actual => Some(Error::SourceDigestMismatch {
                entry: blob.entry.clone(),
                expected: expected.clone(),
                actual: actual.clone(),
            }),
            (_, Some(expected)) if expected != size => Some(Error::SourceSizeMismatch {
                entry: blob.entry.clone(),
                expected,
                actual: size,
            }),
            _ => None,
        };
        if let Some(error) = mismatch {
            remove_temporary(&temp);
            return Err(error);
        }

        journal.add(Object::Blob, &actual)?;
        let path = self.blob_path(&actual)?;
        if path.exists() {
            remove_temporary(&temp);
        } else {
            self.rename_into_place(&temp, &path)?;
        }
        Ok((actual, size))
    }

    /// The media type of a layer blob without one (docker-archive), from its first bytes.
    fn layer_media_type(&self, digest: &str) -> Result<String, Error> {
        let path = self.blob_path(digest)?;
        let mut magic = [0u8; 2];
        let read = File::open(&path)
            .and_then(|mut file| file.read(&mut magic))
            .map_err(|source| Error::ReadFile { path, source })?;
        Ok(if read == 2 && magic == [0x1f, 0x8b] {
            MEDIA_TYPE_LAYER_GZIP.to_owned()
        } else {
            oci::MEDIA_TYPE_LAYER_TAR.to_owned()
        })
    }
}

/// Copies `reader` to a new file at `temp`, synced; returns the digest and size.
fn copy_hashed(reader: &mut dyn Read, temp: &Path) -> Result<(String, u64), Error> {
    let write_error = |source| Error::WriteFile {
        path: temp.to_owned(),
        source,
    };
    let file = create_new_file(temp).map_err(write_error)?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(Error::ReadFile {
                    path: temp.to_owned(),
                    source,
                });
            }
        };
        hasher.update(&buffer[..read]);
        writer.write_all(&buffer[..read]).map_err(write_error)?;
        size += read as u64;
    }
    let file = writer
        .into_inner()
        .map_err(|error| write_error(error.into_error()))?;
    file.sync_all().map_err(write_error)?;
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

/// The plan for an OCI image layout: the manifest named `tag`, or the only one.
fn oci_plan(source: &Source, tag: Option<&str>) -> Result<Plan, Error> {
    let index: ImageIndex = parse(source, "index.json", &source.read_all("index.json")?)?;
    let mut chosen = choose_by_tag(source, &index.manifests, tag)?;

    // A multi-platform index: take this machine's platform.
    let mut manifest_bytes = read_verified(source, &chosen)?;
    if is_index(&chosen.media_type) {
        let nested: ImageIndex = parse(source, &blob_entry(&chosen.digest)?, &manifest_bytes)?;
        chosen = choose_platform(source, &nested.manifests)?;
        manifest_bytes = read_verified(source, &chosen)?;
    }
    if chosen.media_type != oci::MEDIA_TYPE_MANIFEST
        && chosen.media_type != MEDIA_TYPE_DOCKER_MANIFEST
    {
        return Err(Error::UnsupportedMediaType {
            what: "an image manifest",
            media_type: chosen.media_type.clone(),
        });
    }
    let manifest: ImageManifest = parse(source, &blob_entry(&chosen.digest)?, &manifest_bytes)?;

    let layers = manifest
        .layers
        .iter()
        .map(|layer| {
            if layer.media_type.contains("zstd") {
                return Err(Error::UnsupportedMediaType {
                    what: "a layer (use gzip or no compression)",
                    media_type: layer.media_type.clone(),
                });
            }
            Ok(Blob {
                entry: blob_entry(&layer.digest)?,
                digest: Some(layer.digest.clone()),
                size: Some(layer.size),
                media_type: Some(layer.media_type.clone()),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Plan {
        manifest: Some((manifest_bytes, chosen.media_type.clone())),
        config: Blob {
            entry: blob_entry(&manifest.config.digest)?,
            digest: Some(manifest.config.digest.clone()),
            size: Some(manifest.config.size),
            media_type: None,
        },
        layers,
    })
}

/// The plan for a `docker save` archive: the image tagged `tag`, or the only one.
fn docker_plan(source: &Source, tag: Option<&str>) -> Result<Plan, Error> {
    let entries: Vec<DockerArchiveEntry> =
        parse(source, "manifest.json", &source.read_all("manifest.json")?)?;
    let tags = |entry: &DockerArchiveEntry| entry.repo_tags.clone().unwrap_or_default();
    let available: Vec<String> = entries.iter().flat_map(tags).collect();
    let chosen = match tag {
        Some(tag) => entries
            .iter()
            .find(|entry| tags(entry).iter().any(|t| tag_matches(t, tag)))
            .ok_or_else(|| Error::TagNotFound {
                path: source.path().to_owned(),
                tag: tag.to_owned(),
                available: available.clone(),
            })?,
        None if entries.len() == 1 => &entries[0],
        None => {
            return Err(Error::AmbiguousSource {
                path: source.path().to_owned(),
                available,
            });
        }
    };

    // Files named by a digest (`<hex>.json`, `blobs/sha256/<hex>`) are checked against it; a
    // layer named by its diff ID or a legacy id is checked by its diff ID when it is unpacked.
    let config_digest = digest_in_name(&chosen.config);
    Ok(Plan {
        manifest: None,
        config: Blob {
            entry: chosen.config.clone(),
            digest: config_digest,
            size: None,
            media_type: None,
        },
        layers: chosen
            .layers
            .iter()
            .map(|layer| Blob {
                entry: layer.clone(),
                digest: layer
                    .starts_with("blobs/sha256/")
                    .then(|| digest_in_name(layer))
                    .flatten(),
                size: None,
                media_type: None,
            })
            .collect(),
    })
}

/// Whether `RepoTags` entry `repo_tag` is what the user named: the whole entry, the entry
/// without the `docker.io/` or `docker.io/library/` that Docker and skopeo add, or its tag.
fn tag_matches(repo_tag: &str, wanted: &str) -> bool {
    let short = repo_tag
        .strip_prefix("docker.io/library/")
        .or_else(|| repo_tag.strip_prefix("docker.io/"))
        .unwrap_or(repo_tag);
    repo_tag == wanted
        || short == wanted
        || repo_tag
            .rsplit_once(':')
            .is_some_and(|(_, tag)| tag == wanted)
}

/// Returns `sha256:<hex>` when the last component of `entry` is `<hex>` or `<hex>.json`.
fn digest_in_name(entry: &str) -> Option<String> {
    let file = entry.rsplit('/').next()?;
    let stem = file.strip_suffix(".json").unwrap_or(file);
    let digest = format!("sha256:{stem}");
    oci::sha256_hex(&digest).is_some().then_some(digest)
}

fn is_index(media_type: &str) -> bool {
    media_type == oci::MEDIA_TYPE_INDEX || media_type == MEDIA_TYPE_DOCKER_LIST
}

fn choose_by_tag(
    source: &Source,
    manifests: &[Descriptor],
    tag: Option<&str>,
) -> Result<Descriptor, Error> {
    let available: Vec<String> = manifests
        .iter()
        .filter_map(|d| d.annotation(ANNOTATION_REF_NAME).map(str::to_owned))
        .collect();
    match tag {
        Some(tag) => manifests
            .iter()
            .rev()
            .find(|d| d.annotation(ANNOTATION_REF_NAME) == Some(tag))
            .cloned()
            .ok_or_else(|| Error::TagNotFound {
                path: source.path().to_owned(),
                tag: tag.to_owned(),
                available,
            }),
        None if manifests.len() == 1 => Ok(manifests[0].clone()),
        None => Err(Error::AmbiguousSource {
            path: source.path().to_owned(),
            available,
        }),
    }
}

fn choose_platform(source: &Source, manifests: &[Descriptor]) -> Result<Descriptor, Error> {
    let architecture = oci_architecture();
    let platform = |d: &Descriptor, key: &str| {
        d.extra
            .get("platform")
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    manifests
        .iter()
        .find(|d| {
            platform(d, "os").as_deref() == Some("linux")
                && platform(d, "architecture").as_deref() == Some(architecture)
        })
        .cloned()
        .ok_or_else(|| Error::NoPlatform {
            path: source.path().to_owned(),
            architecture: architecture.to_owned(),
        })
}

/// Reads the blob a descriptor names from an OCI layout, checking digest and size.
fn read_verified(source: &Source, descriptor: &Descriptor) -> Result<Vec<u8>, Error> {
    let entry = blob_entry(&descriptor.digest)?;
    let bytes = source.read_all(&entry)?;
    let actual = oci::sha256_digest(&bytes);
    if actual != descriptor.digest {
        return Err(Error::SourceDigestMismatch {
            entry,
            expected: descriptor.digest.clone(),
            actual,
        });
    }
    if bytes.len() as u64 != descriptor.size {
        return Err(Error::SourceSizeMismatch {
            entry,
            expected: descriptor.size,
            actual: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// The path of a blob in an OCI layout.
fn blob_entry(digest: &str) -> Result<String, Error> {
    let hex = oci::sha256_hex(digest).ok_or_else(|| Error::InvalidDigest {
        digest: digest.to_owned(),
    })?;
    Ok(format!("blobs/sha256/{hex}"))
}

fn parse<T: serde::de::DeserializeOwned>(
    source: &Source,
    entry: &str,
    bytes: &[u8],
) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|error| Error::ParseJson {
        path: source.path().join(entry),
        source: error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(is_valid_name("python:3.12-slim"));
        assert!(is_valid_name("library/alpine"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("-x"));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name(&"a".repeat(129)));
    }

    #[test]
    fn digests_are_found_in_entry_names() {
        let hex = "ab".repeat(32);
        assert_eq!(
            digest_in_name(&format!("{hex}.json")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(
            digest_in_name(&format!("blobs/sha256/{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(digest_in_name("abc/layer.tar"), None);
    }
}
