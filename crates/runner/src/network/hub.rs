//! The hub: a network namespace that the runner owns, between the sandboxes and the uplink.
//!
//! It is held by a bind mount of its namespace file, so it and the sandboxes' links into it
//! outlive the server process. Forwarding and masquerading are enabled in the hub only; the
//! host's own namespace is never changed.

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::addressing::Addressing;
use super::link::{self, LinkError};
use super::policy::Ipv4Cidr;

/// Name of the hub's interface towards the uplink.
pub const UPLINK_INTERFACE: &str = "uplink0";

/// Name of the uplink veth's end in the namespace given with [`Uplink::Veth`].
pub const UPLINK_PEER_INTERFACE: &str = "daytona-uplink";

/// The path by which the hub's traffic leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uplink {
    /// No egress at all: policies are enforced, but nothing leaves the hub.
    None,
    /// A veth pair between the hub and the network namespace at `namespace`, for example one
    /// that a test created. The hub's default route goes to `peer_address`.
    Veth {
        namespace: PathBuf,
        hub_address: Ipv4Cidr,
        peer_address: Ipv4Addr,
    },
    /// `pasta` (Debian's `passt` package) attached to the hub: the hub's traffic leaves
    /// through sockets of the host, without changing the host's network settings.
    Pasta {
        /// The address in the hub that pasta maps to the host's first name server.
        dns_address: Ipv4Addr,
    },
}

/// Errors of setting up the hub.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("failed to create the hub network namespace at {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to set {setting} in the hub network namespace")]
    Sysctl {
        setting: String,
        #[source]
        source: LinkError,
    },
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("failed to start pasta for the hub's uplink")]
    Pasta {
        #[source]
        source: io::Error,
    },
    #[error("pasta exited with {status} before the hub's uplink was up: {stderr}")]
    PastaFailed { status: String, stderr: String },
}

/// Whether `path` is a mounted namespace file (`nsfs`).
pub fn is_namespace_mount(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    nix::sys::statfs::statfs(path)
        .map(|stat| stat.filesystem_type().0 == NSFS_MAGIC)
        .unwrap_or(false)
}

/// Creates a new network namespace and binds it to `path`, unless `path` is one already.
/// Returns whether it was created.
pub async fn create_or_open(path: &Path) -> Result<bool, HubError> {
    if is_namespace_mount(path) {
        return Ok(false);
    }
    let create_error = |source| HubError::Create {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(create_error)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(create_error)?;

    // A thread of its own unshares, so that no other thread of the runner moves namespace.
    let target = path.to_owned();
    let created = tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || -> io::Result<()> {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
    .await
    .unwrap_or_else(|_| Err(io::Error::other("the namespace task panicked")));
    created.map_err(create_error)?;
    Ok(true)
}

/// Unmounts and removes the hub's namespace file. The namespace, its interfaces and a pasta
/// attached to it go away once nothing else references it.
pub fn remove(path: &Path) -> io::Result<()> {
    if is_namespace_mount(path) {
        nix::mount::umount2(path, MntFlags::MNT_DETACH)?;
    }
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Writes a sysctl of the namespace at `hub` (under /proc/sys/net, which is per namespace).
async fn sysctl(hub: &Path, key: &str, value: &str) -> Result<(), HubError> {
    let file = format!("/proc/sys/{}", key.replace('.', "/"));
    let value = value.to_owned();
    link::in_namespace(hub, move || std::fs::write(&file, value))
        .await
        .map_err(|source| HubError::Sysctl {
            setting: key.to_owned(),
            source,
        })
}

/// Configures the hub: loopback with the resolver's address, forwarding, and the uplink.
pub async fn configure(
    hub: &Path,
    addressing: &Addressing,
    uplink: &Uplink,
) -> Result<(), HubError> {
    let handle = link::connect(hub).await?;
    link::up(&handle, "lo").await?;
    link::add_address(&handle, "lo", addressing.resolver(), 32).await?;
    sysctl(hub, "net.ipv4.ip_forward", "1").await?;
    sysctl(hub, "net.ipv6.conf.all.disable_ipv6", "1").await?;

    match uplink {
        Uplink::None => Ok(()),
        Uplink::Veth {
            namespace,
            hub_address,
            peer_address,
        } => {
            if link::find(&handle, UPLINK_INTERFACE).await?.is_some() {
                return Ok(());
            }
            let peer = link::veth_into(
                &handle,
                UPLINK_INTERFACE,
                "dtuplink-new",
                namespace,
                UPLINK_PEER_INTERFACE,
            )
            .await?;
            link::add_address(
                &peer,
                UPLINK_PEER_INTERFACE,
                *peer_address,
                hub_address.prefix_len,
            )
            .await?;
            link::up(&peer, UPLINK_PEER_INTERFACE).await?;
            link::add_address(
                &handle,
                UPLINK_INTERFACE,
                hub_address.address,
                hub_address.prefix_len,
            )
            .await?;
            link::up(&handle, UPLINK_INTERFACE).await?;
            link::default_route(&handle, *peer_address).await?;
            Ok(())
        }
        Uplink::Pasta { dns_address } => {
            if link::find(&handle, UPLINK_INTERFACE).await?.is_some() {
                return Ok(());
            }
            start_pasta(hub, *dns_address).await
        }
    }
}

/// Starts pasta on the hub. It forks into the background, leaves when the hub's namespace
/// file is removed, and forwards no port in either direction.
async fn start_pasta(hub: &Path, dns_address: Ipv4Addr) -> Result<(), HubError> {
    // NOTE: started as root, pasta would switch to `nobody`, which cannot open the hub's
    // namespace file under a data directory of mode 0700; `--runas 0` keeps root, and pasta
    // still confines itself (its own namespaces, seccomp filter, capabilities dropped).
    let output = tokio::process::Command::new("pasta")
        .args([
            "--config-net",
            "--ipv4-only",
            "--no-map-gw",
            "--quiet",
            "--runas",
            "0",
        ])
        .args(["-I", UPLINK_INTERFACE])
        .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
        .arg("--dns-forward")
        .arg(dns_address.to_string())
        .arg("--netns")
        .arg(hub)
        .output()
        .await
        .map_err(|source| HubError::Pasta { source })?;
    if !output.status.success() {
        return Err(HubError::PastaFailed {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}
