//! What the runner tells the setup stage about one sandbox.

use std::path::PathBuf;

use daytona_wire::daemon::DaemonConfig;
use serde::{Deserialize, Serialize};

/// Everything the setup stage needs to start one sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxSpec {
    pub sandbox_id: String,
    pub hostname: String,
    /// Unpacked image layers, lowest first.
    pub layers: Vec<PathBuf>,
    /// The sandbox's private writable overlay layer; it persists across stop and start.
    pub upper_dir: PathBuf,
    /// Overlay work directory, on the same filesystem as `upper_dir`.
    pub overlay_work_dir: PathBuf,
    /// A file holding an ext4 filesystem that bounds the sandbox's disk: the setup stage
    /// attaches it to a loop device and mounts it at [`DISK_DIR`] in the run directory, and
    /// `upper_dir` and `overlay_work_dir` then lie inside that mount. `None` keeps them on the
    /// host filesystem without a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_image: Option<PathBuf>,
    /// Host directories bind-mounted read-write into the sandbox, ID-mapped like the layers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    /// Host-side directory private to this sandbox: the toolbox socket, mount points and
    /// generated `/etc` files. Never visible inside the sandbox.
    pub run_dir: PathBuf,
    pub id_map: IdMap,
    /// Cgroup directories, one per hierarchy, that the sandbox joins. The runner creates them
    /// with their limits before the setup stage runs.
    pub cgroup_dirs: Vec<PathBuf>,
    /// Host path of the static daemon binary, bind-mounted read-only into the sandbox.
    pub daemon_binary: PathBuf,
    pub daemon: DaemonConfig,
    /// Test hook: PID 1 runs this command, confined like a workload, in place of the toolbox
    /// server, and the sandbox ends when the command exits. Production specs leave it unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_command: Option<Vec<String>>,
}

/// Maps uids and gids `0..size` inside the sandbox to `host_base..host_base + size` outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdMap {
    pub host_base: u32,
    pub size: u32,
}

/// A host directory mounted into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeMount {
    /// The volume's directory on the host.
    pub source: PathBuf,
    /// A directory inside `source` to mount instead of all of it: relative, without `..`.
    /// The setup stage creates what is missing and follows no symlink on the way, because
    /// sandboxes that share the volume can change what is in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subpath: Option<PathBuf>,
    /// Absolute path inside the sandbox; see [`check_mount_path`].
    pub target: PathBuf,
}

/// Why a path cannot be a volume's mount point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountPathError {
    #[error("mount path {path:?} is not absolute")]
    NotAbsolute { path: String },
    #[error("mount path {path:?} must not contain '.', '..' or empty components")]
    NotNormal { path: String },
    #[error(
        "mount path {path:?} is reserved: volumes cannot be mounted on /, under /proc, /sys or /dev, or over the daemon's directory"
    )]
    Reserved { path: String },
}

/// Checks that `path` may be a volume's mount point: absolute, made of plain components, not
/// `/`, not in `/proc`, `/sys` or `/dev` (the sandbox's own mounts), and not a directory that
/// holds the daemon binary, which PID 1 executes after the volumes are attached.
pub fn check_mount_path(path: &str) -> Result<(), MountPathError> {
    let owned = || path.to_owned();
    let Some(relative) = path.strip_prefix('/') else {
        return Err(MountPathError::NotAbsolute { path: owned() });
    };
    let relative = relative.strip_suffix('/').unwrap_or(relative);
    if relative.is_empty() {
        return Err(MountPathError::Reserved { path: owned() });
    }
    let components: Vec<&str> = relative.split('/').collect();
    if components
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains('\0'))
    {
        return Err(MountPathError::NotNormal { path: owned() });
    }
    let daemon: Vec<&str> = DAEMON_PATH_IN_SANDBOX
        .trim_start_matches('/')
        .split('/')
        .collect();
    // System directories: mounting over them would hide what the sandbox and its toolbox
    // need (`/etc/passwd`, libraries, the shell).
    let system_dir = |name: &str| {
        matches!(
            name,
            "bin" | "sbin" | "lib" | "lib32" | "lib64" | "libx32" | "libexec"
        )
    };
    let reserved = matches!(
        components[0],
        "proc" | "sys" | "dev" | "etc" | "run" | "boot"
    ) || system_dir(components[0])
        || components == ["usr"]
        || (components[0] == "usr" && system_dir(components[1]))
        || (components.len() <= daemon.len() && daemon.starts_with(&components));
    if reserved {
        return Err(MountPathError::Reserved { path: owned() });
    }
    Ok(())
}

/// First host uid and gid of the range that volume files are stored with: uid `k` of any
/// sandbox is stored as `VOLUME_UID_BASE + k`. The range belongs to no host user, and no
/// sandbox's user namespace maps it, so a setuid file or a file capability that a sandbox
/// writes into a volume grants nothing on the host. It lies below the sandboxes' ranges.
pub const VOLUME_UID_BASE: u32 = 900_000_000;

/// File name of the toolbox socket inside a sandbox's run directory.
pub const TOOLBOX_SOCKET: &str = "toolbox.sock";

/// Path inside the sandbox where the daemon binary is bind-mounted.
pub const DAEMON_PATH_IN_SANDBOX: &str = "/usr/local/bin/daytona-daemon";

/// File name, in a sandbox's run directory, of the log that receives the standard output and
/// error of the setup stage, PID 1 and the toolbox server.
pub const LOG_FILE: &str = "sandbox.log";

/// Directory, in a sandbox's run directory, where the overlay root is mounted.
pub const ROOTFS_DIR: &str = "rootfs";

/// Directory, in a sandbox's run directory, where the disk image is mounted.
pub const DISK_DIR: &str = "disk";

/// Directory, in a sandbox's run directory, with one mount point per ID-mapped layer.
pub const LOWER_DIR: &str = "lower";

/// Files in a sandbox's run directory that are bind-mounted read-only over the same names in
/// the sandbox's `/etc`.
pub const ETC_FILES: [&str; 3] = ["hosts", "hostname", "resolv.conf"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_checked() {
        for good in ["/data", "/home/daytona/data", "/usr/local/share", "/mnt/v/"] {
            assert_eq!(check_mount_path(good), Ok(()), "{good}");
        }
        for bad in ["data", "", "relative/x"] {
            assert!(
                matches!(
                    check_mount_path(bad),
                    Err(MountPathError::NotAbsolute { .. })
                ),
                "{bad}"
            );
        }
        for bad in [
            "/etc",
            "/etc/x",
            "/lib/x",
            "/usr",
            "/usr/bin",
            "/usr/lib/x",
            "/run",
        ] {
            assert!(
                matches!(check_mount_path(bad), Err(MountPathError::Reserved { .. })),
                "{bad}"
            );
        }
        for bad in ["//data", "/a/../b", "/a/./b", "/a//b"] {
            assert!(
                matches!(check_mount_path(bad), Err(MountPathError::NotNormal { .. })),
                "{bad}"
            );
        }
        for bad in [
            "/",
            "/proc",
            "/proc/x",
            "/sys",
            "/dev/shm",
            "/usr",
            "/usr/local",
            "/usr/local/bin",
            "/usr/local/bin/daytona-daemon",
        ] {
            assert!(
                matches!(check_mount_path(bad), Err(MountPathError::Reserved { .. })),
                "{bad}"
            );
        }
    }
}
