//! Tests of import, export and removal: round trips through OCI layouts and docker-archives
//! (made with skopeo when it is installed), digest checks, interrupted writers and garbage.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;

use crate::fault::{Action, TEST_FAULT};
use crate::oci::sha256_digest;
use crate::{Error, ExportFormat, ImageStore};

/// A layer tar with the given files (path, content), directories created as needed.
fn layer_tar(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, content.as_bytes())
            .expect("append");
    }
    builder.into_inner().expect("finish tar")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

fn write_blob(dir: &Path, bytes: &[u8]) -> (String, u64) {
    let digest = sha256_digest(bytes);
    let hex = digest.trim_start_matches("sha256:");
    fs::write(dir.join("blobs/sha256").join(hex), bytes).expect("write blob");
    (digest, bytes.len() as u64)
}

/// Writes an OCI layout with one image tagged `v1`: a gzip base layer and an uncompressed top
/// layer, Env and WorkingDir set. Returns the layout directory.
fn make_oci_layout(parent: &Path, top_content: &str) -> PathBuf {
    let dir = parent.join(format!("layout-{}", top_content.len()));
    fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");

    let base = layer_tar(&[
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("srv/app/base.txt", "base layer\n"),
    ]);
    let top = layer_tar(&[("srv/app/top.txt", top_content)]);
    let (base_digest, base_size) = write_blob(&dir, &gzip(&base));
    let (top_digest, top_size) = write_blob(&dir, &top);
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin", "GREETING=hello"], "WorkingDir": "/srv/app",
                   "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&base), sha256_digest(&top)]}
    });
    let (config_digest, config_size) = write_blob(&dir, &serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": base_digest, "size": base_size},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": top_digest, "size": top_size}
        ]
    });
    let (manifest_digest, manifest_size) =
        write_blob(&dir, &serde_json::to_vec(&manifest).unwrap());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                       "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": "v1"}}]
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).expect("index");
    dir
}

/// `skopeo copy oci:<layout>:v1 docker-archive:<file>:<tag>`, or `None` (with SKIPPED) when
/// skopeo is not installed.
fn skopeo_docker_archive(layout: &Path, file: &Path, tag: &str) -> Option<()> {
    skopeo_copy(layout, "v1", file, tag)
}

/// `skopeo copy oci:<layout>:<reference> docker-archive:<file>:<tag>`.
fn skopeo_copy(layout: &Path, reference: &str, file: &Path, tag: &str) -> Option<()> {
    let status = Command::new("skopeo")
        .arg("copy")
        .arg("--quiet")
        .arg(format!("oci:{}:{reference}", layout.display()))
        .arg(format!("docker-archive:{}:{tag}", file.display()))
        .status();
    match status {
        Ok(status) if status.success() => Some(()),
        Ok(status) => panic!("skopeo copy failed with {status}"),
        Err(error) => {
            eprintln!(
                "SKIPPED: skopeo is not available ({error}); install the Debian package skopeo"
            );
            None
        }
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Asserts that the store holds no blob, layer, temporary or journal.
fn assert_empty(store: &ImageStore) {
    let root = store.root();
    for dir in ["blobs/sha256", "layers/sha256", "tmp", "journal"] {
        assert_eq!(
            entries(&root.join(dir)),
            Vec::<String>::new(),
            "{dir} is not empty"
        );
    }
}

fn quiet(_: &str) {}

#[test]
fn oci_layout_import_keeps_config_and_files() {
    let temp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&temp.path().join("store")).unwrap();
    let layout = make_oci_layout(temp.path(), "top\n");

    let image = store.import("app", &layout, None, &quiet).unwrap();

    assert_eq!(image.layers.len(), 2);
    assert_eq!(image.config.env, ["PATH=/usr/bin:/bin", "GREETING=hello"]);
    assert_eq!(image.config.working_dir.as_deref(), Some("/srv/app"));
    assert_eq!(image.config.cmd, ["/bin/sh"]);
    let base = fs::read_to_string(image.layers[0].join("srv/app/base.txt")).unwrap();
    assert_eq!(base, "base layer\n");
    let top = fs::read_to_string(image.layers[1].join("srv/app/top.txt")).unwrap();
    assert_eq!(top, "top\n");
    assert_eq!(store.get("app").unwrap(), Some(image));
    assert!(matches!(
        store.import("app", &layout, None, &quiet),
        Err(Error::ImageExists { .. })
    ));
}

#[test]
fn docker_archive_from_skopeo_shares_layers_with_the_oci_import() {
    let temp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&temp.path().join("store")).unwrap();
    let layout = make_oci_layout(temp.path(), "top\n");
    let archive = temp.path().join("app.tar");
    if skopeo_docker_archive(&layout, &archive, "example/app:1").is_none() {
        return;
    }

    let from_layout = store.import("from-layout", &layout, None, &quiet).unwrap();
    let from_archive = store
        .import("from-archive", &archive, None, &quiet)
        .unwrap();

    assert_eq!(from_archive.layers, from_layout.layers);
    assert_eq!(from_archive.config, from_layout.config);
    assert_eq!(entries(&store.root().join("layers/sha256")).len(), 2);
    // A tag picks the image too.
    store
        .import("by-tag", &archive, Some("example/app:1"), &quiet)
        .unwrap();
    assert!(matches!(
        store.import("wrong-tag", &archive, Some("nope"), &quiet),
        Err(Error::TagNotFound { .. })
    ));
}

#[test]
fn export_round_trips_through_both_formats() {
    let temp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&temp.path().join("store")).unwrap();
    let layout = make_oci_layout(temp.path(), "top\n");
    let original = store.import("app", &layout, None, &quiet).unwrap();

    let oci_out = temp.path().join("out-oci");
    store.export("app", ExportFormat::Oci, &oci_out).unwrap();
    let again = store.import("app-oci", &oci_out, None, &quiet).unwrap();
    assert_eq!(again.manifest_digest, original.manifest_digest);
    assert!(matches!(
        store.export("app", ExportFormat::Oci, &oci_out),
        Err(Error::OutputExists { .. })
    ));

    let archive = temp.path().join("out.tar");
    store
        .export("app", ExportFormat::DockerArchive, &archive)
        .unwrap();
    let from_archive = store
        .import("app-archive", &archive, Some("app:latest"), &quiet)
        .unwrap();
    assert_eq!(from_archive.layers, original.layers);
    assert_eq!(from_archive.config, original.config);

    // Standard tools read both outputs.
    let inspected = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("docker-archive:{}", archive.display()))
        .status();
    match inspected {
        Ok(status) => assert!(
            status.success(),
            "skopeo inspect of the docker-archive failed"
        ),
        Err(error) => eprintln!("SKIPPED: skopeo inspect ({error})"),
    }
    let copied = temp.path().join("copied.tar");
    if skopeo_copy(&oci_out, "app", &copied, "x:1").is_some() {
        let copied = store.import("copied", &copied, None, &quiet).unwrap();
        assert_eq!(copied.layers, original.layers);
    }
}

#[test]
fn a_corrupt_blob_is_rejected_and_leaves_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&temp.path().join("store")).unwrap();
    let layout = make_oci_layout(temp.path(), "top\n");
    // Flip the content of the uncompressed layer, keeping its name (the expected digest).
    let top = layer_tar(&[("srv/app/top.txt", "top\n")]);
    let hex = sha256_digest(&top).trim_start_matches("sha256:").to_owned();
    let mut corrupt = top.clone();
    corrupt[600] ^= 1;
    fs::write(layout.join("blobs/sha256").join(hex), corrupt).unwrap();

    let error = store.import("app", &layout, None, &quiet).unwrap_err();

    assert!(
        matches!(error, Error::SourceDigestMismatch { .. }),
        "{error}"
    );
    assert_eq!(store.get("app").unwrap(), None);
    assert_empty(&store);
}

#[test]
fn a_wrong_diff_id_is_rejected_and_leaves_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&temp.path().join("store")).unwrap();
    let layout = make_oci_layout(temp.path(), "top\n");
    let archive = temp.path().join("app.tar");
    if skopeo_docker_archive(&layout, &archive, "app:1").is_none() {
        return;
    }
    // Unpack the archive, swap the layer files' content for another valid tar, repack.
    let unpacked = temp.path().join("unpacked");
    tar::Archive::new(fs::File::open(&archive).unwrap())
        .unpack(&unpacked)
        .unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(unpacked.join("manifest.json")).unwrap()).unwrap();
    let last = manifest[0]["Layers"][1].as_str().unwrap().to_owned();
    fs::write(unpacked.join(&last), layer_tar(&[("other", "x")])).unwrap();
    let tampered = temp.path().join("tampered.tar");
    let mut builder = tar::Builder::new(fs::File::create(&tampered).unwrap());
    builder.append_dir_all(".", &unpacked).unwrap();
    builder.finish().unwrap();

    let error = store.import("app", &tampered, None, &quiet).unwrap_err();

    assert!(
        matches!(
            error,
            Error::DiffIdMismatch { .. } | Error::SourceDigestMismatch { .. }
        ),
        "{error}"
    );
    assert_empty(&store);
}

#[test]
fn an_interrupted_import_leaves_nothing_and_a_retry_succeeds() {
    for step in [
        "import.blobs-written",
        "import.layers-unpacked",
        "import.manifest-written",
    ] {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("store");
        let store = ImageStore::open(&root).unwrap();
        let layout = make_oci_layout(temp.path(), "top\n");

        // A crash: the writer stops where it is, without any cleanup of its own.
        TEST_FAULT.with(|fault| fault.set(Some((step, Action::Exit))));
        let crashed = std::panic::catch_unwind(|| store.import("app", &layout, None, &quiet));
        TEST_FAULT.with(|fault| fault.set(None));
        assert!(
            crashed.is_err(),
            "the fault at {step} did not stop the import"
        );
        assert_eq!(
            entries(&root.join("journal")).len(),
            1,
            "no journal after {step}"
        );

        // The next open finds no writer and collects what the crashed one left.
        let store = ImageStore::open(&root).unwrap();
        assert_eq!(store.get("app").unwrap(), None);
        assert_empty(&store);

        // A failure cleans up at once.
        TEST_FAULT.with(|fault| fault.set(Some((step, Action::Fail))));
        let failed = store.import("app", &layout, None, &quiet);
        TEST_FAULT.with(|fault| fault.set(None));
        assert!(matches!(failed, Err(Error::FaultInjected { .. })));
        assert_empty(&store);

        let image = store.import("app", &layout, None, &quiet).unwrap();
        assert_eq!(image.layers.len(), 2);
    }
}

#[test]
fn removal_collects_only_what_no_other_image_uses() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("store");
    let store = ImageStore::open(&root).unwrap();
    // Same base layer, different top layers.
    let first = store
        .import(
            "first",
            &make_oci_layout(temp.path(), "one\n"),
            None,
            &quiet,
        )
        .unwrap();
    let second = store
        .import(
            "second",
            &make_oci_layout(temp.path(), "second\n"),
            None,
            &quiet,
        )
        .unwrap();
    assert_eq!(first.layers[0], second.layers[0]);
    assert_eq!(entries(&root.join("layers/sha256")).len(), 3);

    let removal = store.remove("first").unwrap();
    // Manifest, config and the top layer blob; the top layer directory.
    assert_eq!((removal.blobs, removal.layers), (3, 1));
    assert!(second.layers.iter().all(|layer| layer.is_dir()));
    assert!(!first.layers[1].exists());
    assert!(matches!(
        store.remove("first"),
        Err(Error::ImageNotFound { .. })
    ));

    // A removal that crashes after dropping the name is finished by the next open.
    TEST_FAULT.with(|fault| fault.set(Some(("remove.index-written", Action::Fail))));
    let failed = store.remove("second");
    TEST_FAULT.with(|fault| fault.set(None));
    assert!(matches!(failed, Err(Error::FaultInjected { .. })));
    let store = ImageStore::open(&root).unwrap();
    assert_empty(&store);
}
