//! Export of an image from the store, as an OCI image layout directory or a docker-archive
//! tar that `docker load` and `skopeo copy docker-archive:...` read.
//!
//! The output is written under a temporary name next to it and renamed when complete, so a
//! failed export leaves nothing at the output path.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::oci::{self, ANNOTATION_REF_NAME, ImageIndex, ImageManifest};
use crate::store::{create_dir, remove_temporary, to_json};
use crate::{Error, ImageStore};

/// The formats [`ImageStore::export`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// An OCI image layout directory; the image is named by its name in `index.json`.
    Oci,
    /// A `docker save` tar; the image is tagged `<name>:latest` unless its name has a tag.
    DockerArchive,
}

/// One image of a docker-archive's `manifest.json`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry<'a> {
    config: String,
    repo_tags: Vec<&'a str>,
    layers: Vec<String>,
}

impl ImageStore {
    /// Writes image `name` to `out`, which must not exist. Blocks until done (call it from
    /// `spawn_blocking` in async code).
    pub fn export(&self, name: &str, format: ExportFormat, out: &Path) -> Result<(), Error> {
        if out.symlink_metadata().is_ok() {
            return Err(Error::OutputExists {
                path: out.to_owned(),
            });
        }
        let index = self.read_index()?;
        let descriptor = index
            .find(name)
            .cloned()
            .ok_or_else(|| Error::ImageNotFound {
                name: name.to_owned(),
            })?;
        let manifest: ImageManifest = self.read_json_blob(&descriptor.digest)?;

        let temp = partial_path(out);
        let result = match format {
            ExportFormat::Oci => self.write_oci_layout(name, &descriptor, &manifest, &temp),
            ExportFormat::DockerArchive => self.write_docker_archive(name, &manifest, &temp),
        };
        let renamed = result.and_then(|()| {
            fs::rename(&temp, out).map_err(|source| Error::WriteFile {
                path: out.to_owned(),
                source,
            })
        });
        if renamed.is_err() {
            remove_temporary(&temp);
        }
        renamed
    }

    fn write_oci_layout(
        &self,
        name: &str,
        descriptor: &oci::Descriptor,
        manifest: &ImageManifest,
        dir: &Path,
    ) -> Result<(), Error> {
        create_dir(&dir.join("blobs/sha256"), 0o755)?;
        let digests = [&descriptor.digest, &manifest.config.digest]
            .into_iter()
            .chain(manifest.layers.iter().map(|layer| &layer.digest));
        for digest in digests {
            let target = dir.join(
                self.blob_path(digest)?
                    .strip_prefix(self.root())
                    .unwrap_or(Path::new("")),
            );
            self.copy_blob_out(digest, &target)?;
        }

        let mut entry = descriptor.clone();
        entry.annotations.clear();
        entry
            .annotations
            .insert(ANNOTATION_REF_NAME.into(), name.into());
        let mut index = ImageIndex::empty();
        index.manifests.push(entry);
        write_file(&dir.join("index.json"), &to_json(&index))?;
        write_file(&dir.join("oci-layout"), oci::LAYOUT_FILE_CONTENT.as_bytes())
    }

    fn write_docker_archive(
        &self,
        name: &str,
        manifest: &ImageManifest,
        file: &Path,
    ) -> Result<(), Error> {
        let write_error = |source| Error::WriteFile {
            path: file.to_owned(),
            source,
        };
        let output = File::create_new(file).map_err(write_error)?;
        let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, output));

        let hex = |digest: &str| {
            oci::sha256_hex(digest)
                .map(str::to_owned)
                .ok_or_else(|| Error::InvalidDigest {
                    digest: digest.to_owned(),
                })
        };
        let config = format!("{}.json", hex(&manifest.config.digest)?);
        self.append_blob(&mut builder, &manifest.config.digest, &config)
            .map_err(write_error)?;
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for layer in &manifest.layers {
            let entry = format!("{}.tar", hex(&layer.digest)?);
            self.append_blob(&mut builder, &layer.digest, &entry)
                .map_err(write_error)?;
            layers.push(entry);
        }

        let tag = repo_tag(name);
        let entries = [DockerArchiveEntry {
            config,
            repo_tags: vec![&tag],
            layers,
        }];
        let bytes = to_json(&entries);
        let mut header = entry_header(bytes.len() as u64);
        builder
            .append_data(&mut header, "manifest.json", bytes.as_slice())
            .map_err(write_error)?;
        let writer = builder.into_inner().map_err(write_error)?;
        let output = writer
            .into_inner()
            .map_err(|error| write_error(error.into_error()))?;
        output.sync_all().map_err(write_error)
    }

    fn append_blob(
        &self,
        builder: &mut tar::Builder<impl Write>,
        digest: &str,
        entry: &str,
    ) -> std::io::Result<()> {
        let path = self
            .blob_path(digest)
            .map_err(|error| std::io::Error::other(error.to_string()))?;
        let file = File::open(&path)?;
        let mut header = entry_header(file.metadata()?.len());
        builder.append_data(&mut header, entry, file)
    }

    fn copy_blob_out(&self, digest: &str, target: &Path) -> Result<(), Error> {
        let source = self.blob_path(digest)?;
        fs::copy(&source, target).map_err(|error| Error::WriteFile {
            path: target.to_owned(),
            source: error,
        })?;
        Ok(())
    }
}

/// `name` with `:latest` unless its last component has a tag already.
fn repo_tag(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

fn entry_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    fs::write(path, bytes).map_err(|source| Error::WriteFile {
        path: path.to_owned(),
        source,
    })
}

/// A sibling of `out` for the output in progress.
fn partial_path(out: &Path) -> PathBuf {
    let file_name = out
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".to_owned());
    out.with_file_name(format!(".{file_name}.partial-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_tags_get_latest_when_untagged() {
        assert_eq!(repo_tag("alpine"), "alpine:latest");
        assert_eq!(repo_tag("alpine:3"), "alpine:3");
        assert_eq!(repo_tag("localhost:5000/x"), "localhost:5000/x:latest");
    }
}
