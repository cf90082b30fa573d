//! Builds the real default snapshot with mmdebstrap. Needs root and the Debian mirror, and takes
//! about half a minute, so it runs only with `DAYTONA_TEST_BUILD_DEFAULT=1`.
//!
//! With `DAYTONA_TEST_IMAGE_CACHE=<dir>` the test uses and keeps the store in that directory, so
//! that other test runs reuse the image. Without it, a temporary store is built and removed.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::require_root;
use daytona_images::{DEFAULT_SNAPSHOT, ImageStore};

const TEST: &str = "default_snapshot_builds_with_mmdebstrap";

/// Runs `program args` inside `root` with chroot, as root, and returns its stdout. Only programs
/// that do not write are run, because `root` may be the shared image cache.
fn run_in(root: &Path, program: &str, args: &[&str]) -> String {
    let output = Command::new("chroot")
        .arg(root)
        .arg(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Resolves `path` (absolute inside the image) within `layer`, following symbolic links as the
/// image would see them.
fn resolve_in(layer: &Path, path: &str) -> PathBuf {
    let mut current = PathBuf::from(path);
    for _ in 0..10 {
        let host = layer.join(current.strip_prefix("/").unwrap());
        match fs::read_link(&host) {
            Ok(target) if target.is_absolute() => current = target,
            Ok(target) => current = current.parent().unwrap().join(target),
            Err(_) => return host,
        }
    }
    panic!("too many symbolic links resolving {path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_snapshot_builds_with_mmdebstrap() {
    if std::env::var("DAYTONA_TEST_BUILD_DEFAULT").as_deref() != Ok("1") {
        eprintln!(
            "SKIPPED: {TEST}: set DAYTONA_TEST_BUILD_DEFAULT=1 to build the default snapshot (root and the Debian mirror needed)"
        );
        return;
    }
    if !require_root(TEST) {
        return;
    }
    let temporary = tempfile::tempdir().unwrap();
    let root = std::env::var_os("DAYTONA_TEST_IMAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| temporary.path().join("images"));

    let store = ImageStore::open(&root).unwrap();
    let started = Instant::now();
    let image = store
        .ensure_default(&|line| eprintln!("{line}"))
        .await
        .unwrap();
    eprintln!(
        "default snapshot ready in {:.1} s ({} MB)",
        started.elapsed().as_secs_f64(),
        image.size_bytes / 1_000_000
    );

    assert_eq!(image.name, DEFAULT_SNAPSHOT);
    assert_eq!(image.layers.len(), 1);
    assert_eq!(image.config.working_dir.as_deref(), Some("/home/daytona"));
    assert_eq!(image.config.user, None);
    assert!(image.config.env.iter().any(|e| e.starts_with("PATH=")));
    let layer = &image.layers[0];

    // The user daytona (1000:1000) with its home and passwordless sudo.
    let passwd = fs::read_to_string(layer.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l == "daytona:x:1000:1000::/home/daytona:/bin/bash"),
        "{passwd}"
    );
    let group = fs::read_to_string(layer.join("etc/group")).unwrap();
    assert!(
        group.lines().any(|l| l.starts_with("daytona:x:1000:")),
        "{group}"
    );
    let home = fs::metadata(layer.join("home/daytona")).unwrap();
    assert!(home.is_dir());
    assert_eq!((home.uid(), home.gid()), (1000, 1000));
    let sudoers = layer.join("etc/sudoers.d/daytona");
    assert_eq!(fs::metadata(&sudoers).unwrap().mode() & 0o7777, 0o440);
    assert_eq!(
        fs::read_to_string(&sudoers).unwrap(),
        "daytona ALL=(ALL) NOPASSWD:ALL\n"
    );

    // sudo keeps its setuid bit and root owner.
    let sudo = fs::metadata(resolve_in(layer, "/usr/bin/sudo")).unwrap();
    assert_eq!(sudo.mode() & 0o4000, 0o4000, "sudo mode {:o}", sudo.mode());
    assert_eq!(sudo.uid(), 0);

    // python3 with pip and venv, git, curl and ps are installed; python3 and curl run.
    for program in [
        "/usr/bin/python3",
        "/usr/bin/git",
        "/usr/bin/curl",
        "/usr/bin/ps",
    ] {
        assert!(resolve_in(layer, program).is_file(), "{program} is missing");
    }
    let python = run_in(
        layer,
        "/usr/bin/python3",
        &["-B", "-c", "import pip, venv, ensurepip, ssl; print('ok')"],
    );
    assert_eq!(python.trim(), "ok");
    // git is not run: it opens /dev/null, and layers have no device nodes (a sandbox gets its
    // own /dev).
    assert!(run_in(layer, "/usr/bin/curl", &["--version"]).starts_with("curl "));
    assert!(
        fs::read_dir(layer.join("usr/lib"))
            .unwrap()
            .flatten()
            .all(|entry| !entry.path().join("EXTERNALLY-MANAGED").exists()),
        "pip must be allowed to install packages"
    );
    assert!(layer.join("etc/ssl/certs/ca-certificates.crt").is_file());

    // Nothing of the build host's network identity stays in the image.
    assert_eq!(
        fs::read_to_string(layer.join("etc/hostname")).unwrap(),
        "daytona\n"
    );
    assert_eq!(
        fs::read_to_string(layer.join("etc/resolv.conf")).unwrap(),
        ""
    );
    let hosts = fs::read_to_string(layer.join("etc/hosts")).unwrap();
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");
    for file in ["etc/hostname", "etc/resolv.conf", "etc/hosts"] {
        assert_eq!(
            fs::metadata(layer.join(file)).unwrap().mode() & 0o7777,
            0o644,
            "{file}"
        );
    }

    // Cached: a second store on the same root finds it without building.
    let started = Instant::now();
    let again = ImageStore::open(&root)
        .unwrap()
        .ensure_default(&|line| panic!("unexpected build output: {line}"))
        .await
        .unwrap();
    assert_eq!(again, image);
    assert!(started.elapsed().as_secs() < 5);
    assert!(
        store
            .list()
            .unwrap()
            .iter()
            .any(|i| i.name == DEFAULT_SNAPSHOT)
    );
}
