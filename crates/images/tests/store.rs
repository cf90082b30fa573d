//! The image store with a tiny fake recipe: layout, caching by recipe digest, concurrent
//! builders, and recovery after a crash.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::sha256;
use daytona_images::{BuildError, ImageConfig, ImageStore, Progress, Recipe};

/// A recipe that writes a handful of files instead of running mmdebstrap.
#[derive(Clone)]
struct FakeRecipe {
    tag: String,
    builds: Arc<AtomicUsize>,
    delay: Duration,
    /// Kills the whole process after writing the tree, to simulate a crash mid-build.
    crash: bool,
    fail: bool,
    /// When set, the build waits for this notification after writing the tree.
    hold: Option<Arc<tokio::sync::Notify>>,
    started: Option<Arc<tokio::sync::Notify>>,
}

impl FakeRecipe {
    fn new(tag: &str) -> Self {
        Self {
            tag: tag.to_owned(),
            builds: Arc::new(AtomicUsize::new(0)),
            delay: Duration::ZERO,
            crash: false,
            fail: false,
            hold: None,
            started: None,
        }
    }

    fn builds(&self) -> usize {
        self.builds.load(Ordering::SeqCst)
    }
}

fn write(path: PathBuf, content: &[u8]) -> Result<(), BuildError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|source| BuildError::WriteRootfs {
            path: parent.to_owned(),
            source,
        })?;
    }
    fs::write(&path, content).map_err(|source| BuildError::WriteRootfs { path, source })
}

impl Recipe for FakeRecipe {
    fn digest(&self) -> String {
        sha256(self.tag.as_bytes())
    }

    fn config(&self) -> ImageConfig {
        ImageConfig {
            env: vec!["PATH=/usr/bin:/bin".to_owned()],
            working_dir: Some("/home/daytona".to_owned()),
            ..ImageConfig::default()
        }
    }

    async fn build(&self, rootfs: &Path, progress: Progress<'_>) -> Result<(), BuildError> {
        self.builds.fetch_add(1, Ordering::SeqCst);
        progress("I: fake build started");

        write(rootfs.join("etc/hostname"), self.tag.as_bytes())?;
        write(rootfs.join("usr/bin/tool"), b"#!/bin/sh\n")?;
        let tool = rootfs.join("usr/bin/tool");
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o4755))
            .map_err(|source| BuildError::WriteRootfs { path: tool, source })?;
        std::os::unix::fs::symlink("usr/bin", rootfs.join("bin")).map_err(|source| {
            BuildError::WriteRootfs {
                path: rootfs.join("bin"),
                source,
            }
        })?;

        if let Some(started) = &self.started {
            started.notify_one();
        }
        if let Some(hold) = &self.hold {
            hold.notified().await;
        }
        tokio::time::sleep(self.delay).await;

        if self.crash {
            // SIGKILL, like an OOM kill: no destructors run and no core file is written.
            nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL)
                .unwrap();
        }
        if self.fail {
            return Err(BuildError::WriteRootfs {
                path: rootfs.to_owned(),
                source: std::io::Error::other("injected failure"),
            });
        }
        progress("I: fake build done");
        Ok(())
    }
}

fn quiet(_: &str) {}

fn temporaries(root: &Path) -> Vec<PathBuf> {
    fs::read_dir(root.join("tmp"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}

#[test]
fn open_creates_oci_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    let store = ImageStore::open(&root).unwrap();

    let layout: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"], serde_json::json!([]));
    assert!(root.join("blobs/sha256").is_dir());
    assert!(root.join("layers/sha256").is_dir());
    let layers_mode = fs::metadata(root.join("layers")).unwrap().mode() & 0o777;
    assert_eq!(layers_mode, 0o700);

    assert!(store.list().unwrap().is_empty());
    assert_eq!(store.get("daytona-default").unwrap(), None);
    // Opening again keeps what is there.
    ImageStore::open(&root).unwrap();
}

#[tokio::test]
async fn built_image_is_a_valid_oci_image() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let recipe = FakeRecipe::new("one");
    let lines = std::sync::Mutex::new(Vec::new());
    let progress = |line: &str| lines.lock().unwrap().push(line.to_owned());

    let image = store
        .ensure_built("fake", &recipe, &progress)
        .await
        .unwrap();
    assert_eq!(image.name, "fake");
    assert_eq!(image.layers.len(), 1);
    assert_eq!(image.config.working_dir.as_deref(), Some("/home/daytona"));
    assert_eq!(image.config.env, vec!["PATH=/usr/bin:/bin".to_owned()]);
    assert_eq!(image.config.user, None);
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l == "I: fake build started")
    );

    // The unpacked layer is the tree the recipe wrote.
    let layer = &image.layers[0];
    assert!(layer.starts_with(dir.path().canonicalize().unwrap().join("layers/sha256")));
    assert_eq!(fs::read(layer.join("etc/hostname")).unwrap(), b"one");
    let tool = fs::metadata(layer.join("usr/bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o4755);
    assert_eq!(
        fs::read_link(layer.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert_eq!(fs::metadata(layer).unwrap().mode() & 0o7777, 0o755);

    // index.json -> manifest -> config and layer blobs, each stored under its own digest.
    let root = store.root();
    let blob = |digest: &str| {
        let bytes = fs::read(root.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap();
        assert_eq!(sha256(&bytes), digest, "blob content must match its digest");
        bytes
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "fake"
    );
    assert_eq!(entry["digest"], image.manifest_digest.as_str());

    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(&image.manifest_digest)).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let diff_id = config["rootfs"]["diff_ids"][0].as_str().unwrap();
    let layer_blob = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    assert_eq!(sha256(&layer_blob), diff_id);
    assert_eq!(image.size_bytes, layer_blob.len() as u64);
    assert_eq!(config["config"]["WorkingDir"], "/home/daytona");
    assert!(config["config"].get("User").is_none());
    assert!(layer.ends_with(&diff_id["sha256:".len()..]));

    assert!(temporaries(root).is_empty(), "{:?}", temporaries(root));
    assert_eq!(store.list().unwrap(), vec![image]);
}

#[tokio::test]
async fn cached_image_is_not_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let recipe = FakeRecipe::new("one");

    let first = store.ensure_built("fake", &recipe, &quiet).await.unwrap();
    let second = store.ensure_built("fake", &recipe, &quiet).await.unwrap();
    let reopened = ImageStore::open(dir.path())
        .unwrap()
        .ensure_built("fake", &recipe, &quiet)
        .await
        .unwrap();
    assert_eq!(recipe.builds(), 1);
    assert_eq!(first, second);
    assert_eq!(first, reopened);
}

#[tokio::test]
async fn changed_recipe_builds_new_image() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let old = store
        .ensure_built("fake", &FakeRecipe::new("one"), &quiet)
        .await
        .unwrap();
    let new_recipe = FakeRecipe::new("two");
    let new = store
        .ensure_built("fake", &new_recipe, &quiet)
        .await
        .unwrap();

    assert_eq!(new_recipe.builds(), 1);
    assert_ne!(old.manifest_digest, new.manifest_digest);
    assert_eq!(
        fs::read(new.layers[0].join("etc/hostname")).unwrap(),
        b"two"
    );
    assert_eq!(store.get("fake").unwrap(), Some(new));
    assert_eq!(store.list().unwrap().len(), 1);
    // The old layer stays for sandboxes that may still use it.
    assert!(old.layers[0].is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_stores_build_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = ImageStore::open(dir.path()).unwrap();
    let second = ImageStore::open(dir.path()).unwrap();
    let mut recipe = FakeRecipe::new("shared");
    recipe.delay = Duration::from_millis(300);

    let (a, b) = tokio::join!(
        first.ensure_built("fake", &recipe, &quiet),
        second.ensure_built("fake", &recipe, &quiet),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(recipe.builds(), 1);
    assert_eq!(a, b);
    assert_eq!(first.list().unwrap().len(), 1);
    let layers: Vec<_> = fs::read_dir(dir.path().join("layers/sha256"))
        .unwrap()
        .collect();
    assert_eq!(layers.len(), 1);
}

#[tokio::test]
async fn failed_build_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let mut recipe = FakeRecipe::new("broken");
    recipe.fail = true;

    let error = store
        .ensure_built("fake", &recipe, &quiet)
        .await
        .unwrap_err();
    assert!(
        matches!(error, daytona_images::Error::Build { .. }),
        "{error:?}"
    );
    assert_eq!(store.get("fake").unwrap(), None);
    assert!(temporaries(store.root()).is_empty());

    recipe.fail = false;
    store.ensure_built("fake", &recipe, &quiet).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_keeps_temporaries_of_active_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let hold = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(tokio::sync::Notify::new());
    let mut recipe = FakeRecipe::new("slow");
    recipe.hold = Some(hold.clone());
    recipe.started = Some(started.clone());

    let build = {
        let (store, recipe) = (store.clone(), recipe.clone());
        tokio::spawn(async move { store.ensure_built("fake", &recipe, &quiet).await })
    };
    started.notified().await;
    let in_progress = temporaries(store.root());
    assert_eq!(in_progress.len(), 1, "{in_progress:?}");

    ImageStore::open(dir.path()).unwrap();
    assert_eq!(temporaries(store.root()), in_progress);

    hold.notify_one();
    build.await.unwrap().unwrap();
    assert!(temporaries(store.root()).is_empty());
}

#[test]
fn open_removes_planted_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let tmp = store.root().join("tmp");
    fs::write(tmp.join("blob-999999-0"), b"half a blob").unwrap();
    fs::create_dir_all(tmp.join("layer-999999-1/usr/bin")).unwrap();
    fs::write(tmp.join("layer-999999-1/usr/bin/sudo"), b"").unwrap();
    fs::set_permissions(
        tmp.join("layer-999999-1/usr/bin"),
        fs::Permissions::from_mode(0o555),
    )
    .unwrap();

    ImageStore::open(dir.path()).unwrap();
    assert!(temporaries(store.root()).is_empty());
}

/// Environment variable that turns `crash_child_process` into the crashing build.
const CRASH_ROOT_VAR: &str = "DAYTONA_IMAGES_TEST_CRASH_ROOT";

/// Not a test on its own: the child half of `crash_mid_build_is_recovered`, which runs this
/// test binary again with [`CRASH_ROOT_VAR`] set.
#[tokio::test]
async fn crash_child_process() {
    let Some(root) = std::env::var_os(CRASH_ROOT_VAR) else {
        return;
    };
    let store = ImageStore::open(Path::new(&root)).unwrap();
    let mut recipe = FakeRecipe::new("crash");
    recipe.crash = true;
    let _ = store.ensure_built("fake", &recipe, &quiet).await;
    unreachable!("the recipe kills the process");
}

#[tokio::test]
async fn crash_mid_build_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    ImageStore::open(dir.path()).unwrap();

    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_ROOT_VAR, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die mid-build");
    let leftovers = temporaries(dir.path());
    assert_eq!(
        leftovers.len(),
        1,
        "the crash leaves its build tree: {leftovers:?}"
    );

    // The kernel released the dead process's lock, so open may remove its temporaries.
    let store = ImageStore::open(dir.path()).unwrap();
    assert!(temporaries(dir.path()).is_empty());
    assert_eq!(store.get("fake").unwrap(), None);

    let image = store
        .ensure_built("fake", &FakeRecipe::new("crash"), &quiet)
        .await
        .unwrap();
    assert_eq!(
        fs::read(image.layers[0].join("etc/hostname")).unwrap(),
        b"crash"
    );
}
