//! The layer unpacker against hand-made tars, hostile ones included, and the packer round trip.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::{LayerTar, Meta, gzip, require_root, sha256};
use daytona_images::pack::pack_layer;
use daytona_images::unpack::{UnpackError, UnpackedLayer, unpack_layer};

/// Unpacks `tar` into a fresh `layer/` directory inside a temporary directory, whose other
/// entries play the part of "outside the layer".
fn unpack(tar: &[u8]) -> (tempfile::TempDir, Result<UnpackedLayer, UnpackError>) {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    fs::create_dir(&layer).unwrap();
    let result = unpack_layer(tar, &layer);
    (dir, result)
}

fn layer(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("layer")
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let c_name = std::ffi::CString::new(name).unwrap();
    let mut buffer = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and `buffer` has `buffer.len()` writable bytes.
    let n = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    (n >= 0).then(|| buffer[..n as usize].to_vec())
}

#[test]
fn regular_file_keeps_content_mode_mtime() {
    let tar = LayerTar::new()
        .dir("etc/", Meta::mode(0o755))
        .file("etc/motd", b"hello\n", Meta::mode(0o640))
        .into_bytes();
    let (dir, result) = unpack(&tar);
    let unpacked = result.unwrap();

    let motd = layer(&dir).join("etc/motd");
    assert_eq!(fs::read(&motd).unwrap(), b"hello\n");
    let metadata = fs::symlink_metadata(&motd).unwrap();
    assert_eq!(metadata.mode() & 0o7777, 0o640);
    assert_eq!(metadata.mtime(), 1_700_000_000);
    assert_eq!(unpacked.diff_id, sha256(&tar));
    assert_eq!(unpacked.tar_size, tar.len() as u64);
    assert_eq!(unpacked.entries, 2);
}

#[test]
fn directory_mtime_survives_children() {
    let tar = LayerTar::new()
        .dir("d/", Meta::mode(0o555))
        .file("d/a", b"a", Meta::default())
        .file("d/b", b"b", Meta::default())
        .into_bytes();
    let (dir, result) = unpack(&tar);
    result.unwrap();

    let metadata = fs::metadata(layer(&dir).join("d")).unwrap();
    assert_eq!(metadata.mtime(), 1_700_000_000);
    assert_eq!(metadata.mode() & 0o7777, 0o555);
}

#[test]
fn implicit_parents_are_created() {
    let tar = LayerTar::new()
        .file("a/b/c/file", b"x", Meta::default())
        .into_bytes();
    let (dir, result) = unpack(&tar);
    result.unwrap();
    assert_eq!(fs::read(layer(&dir).join("a/b/c/file")).unwrap(), b"x");
}

#[test]
fn whiteout_becomes_overlay_char_device() {
    if !require_root("whiteout_becomes_overlay_char_device") {
        return;
    }
    let tar = LayerTar::new()
        .dir("etc/", Meta::mode(0o755))
        .file("etc/.wh.removed.conf", b"", Meta::default())
        .into_bytes();
    let (dir, result) = unpack(&tar);
    result.unwrap();

    let whiteout = layer(&dir).join("etc/removed.conf");
    let metadata = fs::symlink_metadata(&whiteout).unwrap();
    assert!(metadata.file_type().is_char_device());
    assert_eq!(metadata.rdev(), 0);
    assert!(!layer(&dir).join("etc/.wh.removed.conf").exists());
}

#[test]
fn whiteout_replaces_same_layer_entry() {
    if !require_root("whiteout_replaces_same_layer_entry") {
        return;
    }
    let tar = LayerTar::new()
        .file("x", b"old", Meta::default())
        .file(".wh.x", b"", Meta::default())
        .into_bytes();
    let (dir, result) = unpack(&tar);
    result.unwrap();
    let metadata = fs::symlink_metadata(layer(&dir).join("x")).unwrap();
    assert!(metadata.file_type().is_char_device());
}

#[test]
fn opaque_marker_sets_overlay_xattr() {
    if !require_root("opaque_marker_sets_overlay_xattr") {
        return;
    }
    let tar = LayerTar::new()
        .dir("var/", Meta::mode(0o755))
        .dir("var/cache/", Meta::mode(0o755))
        .file("var/cache/.wh..wh..opq", b"", Meta::default())
        .file("var/cache/kept", b"k", Meta::default())
        .into_bytes();
    let (dir, result) = unpack(&tar);
    result.unwrap();

    let cache = layer(&dir).join("var/cache");
    assert_eq!(
        get_xattr(&cache, "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!cache.join(".wh..wh..opq").exists());
    assert_eq!(fs::read(cache.join("kept")).unwrap(), b"k");
}

#[test]
fn aufs_metadata_entries_are_skipped() {
    let tar = LayerTar::new()
        .dir(".wh..wh.plnk/", Meta::mode(0o700))
        .file(".wh..wh.plnk/1234.5678", b"aufs hard link", Meta::default())
        .file("kept", b"k", Meta::default())
        .into_bytes();
    let (dir, result) = unpack(&tar);
    result.unwrap();
    assert!(!layer(&dir).join(".wh..wh.plnk").exists());
    assert!(!layer(&dir).join("plnk").exists());
    assert!(!layer(&dir).join("1234.5678").exists());
    assert_eq!(fs::read(layer(&dir).join("kept")).unwrap(), b"k");
}

#[test]
fn hardlink_inside_layer_shares_inode() {
    let tar = LayerTar::new()
        .dir("bin/", Meta::mode(0o755))
        .file("bin/tool", b"#!/bin/sh\n", Meta::mode(0o755))
        .hardlink("bin/tool-alias", "bin/tool")
        .into_bytes();
    let (dir, result) = unpack(&tar);
    result.unwrap();

    let original = fs::metadata(layer(&dir).join("bin/tool")).unwrap();
    let alias = fs::metadata(layer(&dir).join("bin/tool-alias")).unwrap();
    assert_eq!(original.ino(), alias.ino());
    assert_eq!(original.nlink(), 2);
}

#[test]
fn hardlink_to_outside_is_rejected() {
    for target in ["../outside", "/etc/passwd", "a/../../outside"] {
        let tar = LayerTar::new().hardlink("link", target).into_bytes();
        let (dir, result) = unpack(&tar);
        fs::write(dir.path().join("outside"), b"secret").unwrap();

        let error = result.unwrap_err();
        assert!(
            matches!(error, UnpackError::UnsafeLinkTarget { .. }),
            "{target}: {error:?}"
        );
        assert!(!layer(&dir).join("link").exists(), "{target}");
    }
}

#[test]
fn hardlink_through_symlink_is_rejected() {
    let tar = LayerTar::new()
        .symlink("etc", "/etc")
        .hardlink("stolen", "etc/passwd")
        .into_bytes();
    let (dir, result) = unpack(&tar);

    let error = result.unwrap_err();
    assert!(
        matches!(error, UnpackError::UnsafeLinkTarget { .. }),
        "{error:?}"
    );
    assert!(!layer(&dir).join("stolen").exists());
}

#[test]
fn hardlink_to_missing_target_is_rejected() {
    let tar = LayerTar::new().hardlink("link", "not/there").into_bytes();
    let (_dir, result) = unpack(&tar);
    let error = result.unwrap_err();
    assert!(
        matches!(error, UnpackError::HardlinkTargetMissing { .. }),
        "{error:?}"
    );
}

#[test]
fn symlink_is_stored_not_followed() {
    let tar = LayerTar::new()
        .symlink("passwd", "/etc/passwd")
        .symlink("up", "../../..")
        .into_bytes();
    let (dir, result) = unpack(&tar);
    result.unwrap();

    let passwd = layer(&dir).join("passwd");
    assert!(
        fs::symlink_metadata(&passwd)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_link(&passwd).unwrap(), Path::new("/etc/passwd"));
    assert_eq!(
        fs::read_link(layer(&dir).join("up")).unwrap(),
        Path::new("../../..")
    );
}

#[test]
fn file_over_symlink_replaces_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::write(&outside, b"untouched").unwrap();
    let tar = LayerTar::new()
        .symlink("x", outside.to_str().unwrap())
        .file("x", b"layer content", Meta::default())
        .into_bytes();
    let layer_dir = dir.path().join("layer");
    fs::create_dir(&layer_dir).unwrap();
    unpack_layer(&tar[..], &layer_dir).unwrap();

    assert_eq!(fs::read(&outside).unwrap(), b"untouched");
    let x = layer_dir.join("x");
    assert!(fs::symlink_metadata(&x).unwrap().file_type().is_file());
    assert_eq!(fs::read(&x).unwrap(), b"layer content");
}

#[test]
fn dotdot_escape_is_rejected() {
    for name in ["../escape", "a/../../escape", ".."] {
        let tar = LayerTar::new()
            .file(name, b"pwned", Meta::default())
            .into_bytes();
        let (dir, result) = unpack(&tar);
        let error = result.unwrap_err();
        assert!(
            matches!(error, UnpackError::UnsafePath { .. }),
            "{name}: {error:?}"
        );
        assert!(!dir.path().join("escape").exists(), "{name}");
    }
}

#[test]
fn absolute_path_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("absolute-target");
    let tar = LayerTar::new()
        .file(target.to_str().unwrap(), b"pwned", Meta::default())
        .into_bytes();
    let layer_dir = dir.path().join("layer");
    fs::create_dir(&layer_dir).unwrap();

    let error = unpack_layer(&tar[..], &layer_dir).unwrap_err();
    assert!(matches!(error, UnpackError::UnsafePath { .. }), "{error:?}");
    assert!(!target.exists());
}

#[test]
fn write_through_symlink_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let cases = [
        ("absolute", outside.to_str().unwrap().to_owned()),
        ("relative", "../outside".to_owned()),
    ];
    for (case, target) in cases {
        let tar = LayerTar::new()
            .symlink("link", &target)
            .file("link/pwned", b"pwned", Meta::default())
            .into_bytes();
        let layer_dir = dir.path().join(format!("layer-{case}"));
        fs::create_dir(&layer_dir).unwrap();

        let error = unpack_layer(&tar[..], &layer_dir).unwrap_err();
        assert!(
            matches!(error, UnpackError::UnsafePath { .. }),
            "{case}: {error:?}"
        );
        assert!(!outside.join("pwned").exists(), "{case}");
    }
}

#[test]
fn nested_write_through_symlink_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir_all(outside.join("sub")).unwrap();
    let tar = LayerTar::new()
        .dir("a/", Meta::mode(0o755))
        .symlink("a/link", outside.to_str().unwrap())
        .file("a/link/sub/pwned", b"pwned", Meta::default())
        .into_bytes();
    let layer_dir = dir.path().join("layer");
    fs::create_dir(&layer_dir).unwrap();

    let error = unpack_layer(&tar[..], &layer_dir).unwrap_err();
    assert!(matches!(error, UnpackError::UnsafePath { .. }), "{error:?}");
    assert!(!outside.join("sub/pwned").exists());
}

#[test]
fn setuid_bit_is_preserved() {
    let tar = LayerTar::new()
        .dir("usr/bin/", Meta::mode(0o755))
        .file("usr/bin/sudo", b"\x7fELF", Meta::mode(0o4755))
        .file("usr/bin/wall", b"\x7fELF", Meta::mode(0o2755))
        .into_bytes();
    let (dir, result) = unpack(&tar);
    result.unwrap();

    let sudo = fs::metadata(layer(&dir).join("usr/bin/sudo")).unwrap();
    assert_eq!(sudo.permissions().mode() & 0o7777, 0o4755);
    let wall = fs::metadata(layer(&dir).join("usr/bin/wall")).unwrap();
    assert_eq!(wall.permissions().mode() & 0o7777, 0o2755);
}

#[test]
fn numeric_owners_are_preserved() {
    if !require_root("numeric_owners_are_preserved") {
        return;
    }
    let owned = |mode, uid, gid| Meta {
        mode,
        uid,
        gid,
        ..Meta::default()
    };
    let tar = LayerTar::new()
        .dir("home/", owned(0o755, 0, 0))
        .dir("home/daytona/", owned(0o750, 1000, 1000))
        .file("home/daytona/.bashrc", b"# rc\n", owned(0o644, 1000, 1000))
        .file("srv", b"", owned(0o4750, 12345, 54321))
        .into_bytes();
    let (dir, result) = unpack(&tar);
    result.unwrap();

    let home = fs::metadata(layer(&dir).join("home/daytona")).unwrap();
    assert_eq!((home.uid(), home.gid()), (1000, 1000));
    let bashrc = fs::metadata(layer(&dir).join("home/daytona/.bashrc")).unwrap();
    assert_eq!((bashrc.uid(), bashrc.gid()), (1000, 1000));
    let srv = fs::metadata(layer(&dir).join("srv")).unwrap();
    assert_eq!((srv.uid(), srv.gid()), (12345, 54321));
    // chown clears setuid; the unpacker must set the mode after the owner.
    assert_eq!(srv.mode() & 0o7777, 0o4750);
}

#[test]
fn device_nodes_are_skipped() {
    let tar = LayerTar::new()
        .dir("dev/", Meta::mode(0o755))
        .char_device("dev/null", 1, 3)
        .char_device("dev/sda-ish", 8, 0)
        .into_bytes();
    let (dir, result) = unpack(&tar);
    let unpacked = result.unwrap();

    assert_eq!(unpacked.skipped_devices, 2);
    assert!(!layer(&dir).join("dev/null").exists());
    assert!(layer(&dir).join("dev").is_dir());
}

#[test]
fn user_xattrs_kept_trusted_dropped() {
    if !require_root("user_xattrs_kept_trusted_dropped") {
        return;
    }
    let tar = LayerTar::new()
        .xattrs(&[
            ("user.origin", b"test"),
            ("trusted.overlay.redirect", b"/etc"),
        ])
        .file("tagged", b"t", Meta::default())
        .into_bytes();
    let (dir, result) = unpack(&tar);
    result.unwrap();

    let tagged = layer(&dir).join("tagged");
    assert_eq!(
        get_xattr(&tagged, "user.origin").as_deref(),
        Some(&b"test"[..])
    );
    assert_eq!(get_xattr(&tagged, "trusted.overlay.redirect"), None);
}

#[test]
fn gzip_layer_has_uncompressed_diff_id() {
    let tar = LayerTar::new()
        .file("file", b"compressed", Meta::default())
        .into_bytes();
    let (dir, result) = unpack(&gzip(&tar));
    let unpacked = result.unwrap();

    assert_eq!(unpacked.diff_id, sha256(&tar));
    assert_eq!(fs::read(layer(&dir).join("file")).unwrap(), b"compressed");
}

#[test]
fn zstd_layer_is_reported_unsupported() {
    let zstd_frame = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00, 0x00];
    let (_dir, result) = unpack(&zstd_frame);
    assert!(matches!(
        result.unwrap_err(),
        UnpackError::UnsupportedCompression { format: "zstd" }
    ));
}

#[test]
fn root_entry_must_be_directory() {
    let tar = LayerTar::new()
        .file("./", b"", Meta::default())
        .into_bytes();
    let (_dir, result) = unpack(&tar);
    assert!(matches!(
        result.unwrap_err(),
        UnpackError::UnsafePath { .. }
    ));
}

/// Builds a tree with every kind of entry the packer handles.
fn make_tree(root: &Path, with_overlay_markers: bool) {
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("home/daytona")).unwrap();
    fs::write(root.join("usr/bin/tool"), b"#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(
        root.join("usr/bin/tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool2")).unwrap();

    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();

    let long_name = "n".repeat(120);
    fs::write(root.join("home/daytona").join(&long_name), b"long").unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    fs::set_permissions(root.join("home"), fs::Permissions::from_mode(0o751)).unwrap();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();

    if with_overlay_markers {
        nix::unistd::chown(
            &root.join("home/daytona"),
            Some(1000.into()),
            Some(1000.into()),
        )
        .unwrap();
        nix::sys::stat::mknod(
            &root.join("usr/removed"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();

        fs::create_dir(root.join("opaque")).unwrap();
        let path =
            std::ffi::CString::new(root.join("opaque").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: both strings are NUL-terminated and the value is one readable byte.
        let rc = unsafe {
            libc::lsetxattr(
                path.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    }
}

/// Lists every path below `root` with its type, mode, owner, size, link target and mtime (mtime
/// only for entries other than directories, whose mtime the tree building above disturbs).
fn describe(root: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let metadata = fs::symlink_metadata(&path).unwrap();
        let relative = path.strip_prefix(root).unwrap().display().to_string();
        let kind = metadata.file_type();
        let target = if kind.is_symlink() {
            fs::read_link(&path).unwrap().display().to_string()
        } else {
            String::new()
        };
        let mode = if kind.is_symlink() {
            0
        } else {
            metadata.mode()
        };
        lines.push(format!(
            "{relative} mode={mode:o} uid={} gid={} size={} rdev={} nlink={} -> {target}",
            metadata.uid(),
            metadata.gid(),
            if kind.is_dir() { 0 } else { metadata.len() },
            metadata.rdev(),
            if kind.is_dir() { 0 } else { metadata.nlink() },
        ));
        if kind.is_file() {
            lines.push(format!("{relative} mtime={}", metadata.mtime()));
        }
        if kind.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    lines.sort();
    lines
}

#[test]
fn pack_then_unpack_round_trips() {
    let root_test = nix::unistd::geteuid().is_root();
    if !root_test {
        eprintln!(
            "SKIPPED: pack_then_unpack_round_trips: overlay markers and owners need root; checking the rest"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    make_tree(&tree, root_test);

    let mut tar = Vec::new();
    let packed = pack_layer(&tree, &mut tar).unwrap();
    assert_eq!(packed.diff_id, sha256(&tar));
    assert_eq!(packed.size, tar.len() as u64);

    let unpacked_dir = dir.path().join("unpacked");
    fs::create_dir(&unpacked_dir).unwrap();
    let unpacked = unpack_layer(&tar[..], &unpacked_dir).unwrap();
    assert_eq!(unpacked.diff_id, packed.diff_id);
    assert_eq!(describe(&unpacked_dir), describe(&tree));
    if root_test {
        assert_eq!(
            get_xattr(&unpacked_dir.join("opaque"), "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..])
        );
    }

    let mut again = Vec::new();
    let repacked = pack_layer(&unpacked_dir, &mut again).unwrap();
    assert_eq!(
        repacked.diff_id, packed.diff_id,
        "packing must be deterministic"
    );
}
