//! The per-sandbox run directory on the host, and the sandbox's overlay directories.
//!
//! The run directory contains the toolbox socket, the overlay mount point, the mount points
//! of the ID-mapped layers, the log of the sandbox's daemon and the generated `/etc` files.
//! It belongs to host root (mode 0700), so nothing inside the sandbox can reach it.

use std::fs::{self, DirBuilder};
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, chown};
use std::path::{Path, PathBuf};

use crate::spec::{DISK_DIR, LOWER_DIR, ROOTFS_DIR, SandboxSpec};

/// Errors of preparing a run directory.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("failed to create directory {path}")]
    CreateDir { path: PathBuf, source: io::Error },

    #[error("failed to write {path}")]
    WriteFile { path: PathBuf, source: io::Error },

    #[error("failed to give {path} to the sandbox's root (host uid {uid})")]
    Chown {
        path: PathBuf,
        uid: u32,
        source: io::Error,
    },

    #[error("invalid hostname {hostname:?}: use 1 to 63 letters, digits and '-'")]
    InvalidHostname { hostname: String },
}

/// Creates the run directory with its mount points and generated `/etc` files, and the
/// upper and overlay work directories, owned by the sandbox's root (`id_map.host_base`).
///
/// Existing directories are kept, so this also prepares a stopped sandbox for its next start.
pub fn prepare(spec: &SandboxSpec) -> Result<(), RunDirError> {
    validate_hostname(&spec.hostname)?;

    create_dir(&spec.run_dir, 0o700)?;
    create_dir(&spec.run_dir.join(ROOTFS_DIR), 0o755)?;
    let lower = spec.run_dir.join(LOWER_DIR);
    create_dir(&lower, 0o755)?;
    for index in 0..spec.layers.len() {
        create_dir(&lower.join(index.to_string()), 0o755)?;
    }

    write_file(
        &spec.run_dir.join("hostname"),
        &format!("{}\n", spec.hostname),
    )?;
    write_file(&spec.run_dir.join("hosts"), &hosts_file(&spec.hostname))?;
    write_resolv_conf(&spec.run_dir, None)?;

    // With a disk image, the setup stage creates the upper and work directories inside it.
    if spec.disk_image.is_some() {
        return create_dir(&spec.run_dir.join(DISK_DIR), 0o700);
    }

    // The upper directory's root becomes the sandbox's `/`, so root inside must own it.
    let root = spec.id_map.host_base;
    create_dir(&spec.upper_dir, 0o755)?;
    give_to(&spec.upper_dir, root)?;
    create_dir(&spec.overlay_work_dir, 0o700)?;
    give_to(&spec.overlay_work_dir, root)
}

/// Writes the sandbox's `/etc/resolv.conf`, naming `nameserver`. Without one the sandbox's
/// network is loopback-only; the file then exists so that the image's own copy, which may
/// name a host resolver, is not used.
pub fn write_resolv_conf(run_dir: &Path, nameserver: Option<Ipv4Addr>) -> Result<(), RunDirError> {
    let content = match nameserver {
        Some(address) => format!("nameserver {address}\noptions timeout:2 attempts:2\n"),
        None => "# The sandbox network is loopback-only: no name server.\n".to_owned(),
    };
    write_file(&run_dir.join("resolv.conf"), &content)
}

/// `/etc/hosts` with the sandbox's hostname on loopback, so that `sudo` and other programs
/// that resolve the local hostname find it without DNS.
fn hosts_file(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         127.0.1.1\t{hostname}\n"
    )
}

/// Accepts an RFC 1123 label: the hostname goes into `/etc/hosts` and `sethostname`.
fn validate_hostname(hostname: &str) -> Result<(), RunDirError> {
    let valid = !hostname.is_empty()
        && hostname.len() <= 63
        && !hostname.starts_with('-')
        && !hostname.ends_with('-')
        && hostname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(RunDirError::InvalidHostname {
            hostname: hostname.to_string(),
        })
    }
}

fn create_dir(path: &Path, mode: u32) -> Result<(), RunDirError> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| RunDirError::CreateDir {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes a file readable by everyone: the sandbox reads it through a read-only bind mount.
fn write_file(path: &Path, content: &str) -> Result<(), RunDirError> {
    let write = || {
        fs::write(path, content)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o644))
    };
    write().map_err(|source| RunDirError::WriteFile {
        path: path.to_path_buf(),
        source,
    })
}

fn give_to(path: &Path, uid: u32) -> Result<(), RunDirError> {
    chown(path, Some(uid), Some(uid)).map_err(|source| RunDirError::Chown {
        path: path.to_path_buf(),
        uid,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_validated() {
        for bad in ["", "-a", "a-", "a.b", "a_b", &"x".repeat(64)] {
            assert!(validate_hostname(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "sandbox-1", &"x".repeat(63)] {
            assert!(validate_hostname(good).is_ok(), "{good:?} rejected");
        }
    }

    #[test]
    fn hosts_file_names_hostname() {
        assert!(hosts_file("box").contains("127.0.1.1\tbox\n"));
    }
}
