//! Interfaces and routes, configured over rtnetlink from sockets opened inside the
//! namespace they change.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use nix::sched::CloneFlags;
use rtnetlink::Handle;

/// Errors of configuring interfaces.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("failed to enter the network namespace {path}")]
    Enter {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("netlink request failed: {operation}")]
    Netlink {
        operation: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("interface {name} not found")]
    Missing { name: String },
}

/// Runs `work` on a new thread that has joined the network namespace at `path`, so that
/// sockets it creates belong to that namespace. The caller's threads keep their namespace.
pub async fn in_namespace<T, F>(path: &Path, work: F) -> Result<T, LinkError>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let runtime = tokio::runtime::Handle::current();
    let owned = path.to_owned();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _entered = runtime.enter();
        let result = File::open(&owned)
            .and_then(|namespace| {
                nix::sched::setns(&namespace, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
            })
            .and_then(|()| work());
        let _ = sender.send(result);
    });
    let result = receiver.await.unwrap_or_else(|_| {
        Err(io::Error::other(
            "the namespace thread ended without a result",
        ))
    });
    result.map_err(|source| LinkError::Enter {
        path: path.to_owned(),
        source,
    })
}

/// A route netlink connection inside the namespace at `path`.
pub async fn connect(path: &Path) -> Result<Handle, LinkError> {
    let (connection, handle) = in_namespace(path, || {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        Ok((connection, handle))
    })
    .await?;
    tokio::spawn(connection);
    Ok(handle)
}

fn netlink(operation: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let operation = operation.into();
    move |source| LinkError::Netlink {
        operation,
        source: Box::new(source),
    }
}

/// The index of interface `name`, or `None` when it does not exist.
pub async fn find(handle: &Handle, name: &str) -> Result<Option<u32>, LinkError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        // The kernel returns ENODEV for a name that does not exist.
        Err(rtnetlink::Error::NetlinkError(message)) if message.raw_code() == -libc::ENODEV => {
            Ok(None)
        }
        Err(source) => Err(netlink(format!("get interface {name}"))(source)),
    }
}

async fn require(handle: &Handle, name: &str) -> Result<u32, LinkError> {
    find(handle, name).await?.ok_or_else(|| LinkError::Missing {
        name: name.to_owned(),
    })
}

/// Deletes interface `name` if it exists; a veth's peer goes with it.
pub async fn delete(handle: &Handle, name: &str) -> Result<(), LinkError> {
    if let Some(index) = find(handle, name).await? {
        handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(netlink(format!("delete interface {name}")))?;
    }
    Ok(())
}

/// Sets interface `name` up.
pub async fn up(handle: &Handle, name: &str) -> Result<(), LinkError> {
    let index = require(handle, name).await?;
    handle
        .link()
        .set(index)
        .up()
        .execute()
        .await
        .map_err(netlink(format!("set {name} up")))
}

/// Adds `address/prefix_len` to interface `name`; an address it has already is kept.
pub async fn add_address(
    handle: &Handle,
    name: &str,
    address: Ipv4Addr,
    prefix_len: u8,
) -> Result<(), LinkError> {
    let index = require(handle, name).await?;
    let mut request = handle
        .address()
        .add(index, IpAddr::V4(address), prefix_len)
        .replace();
    // A /31 has no broadcast address (RFC 3021): rtnetlink would set the peer's address as
    // the broadcast address, and the kernel would then not forward packets to the peer.
    if prefix_len == 31 {
        request
            .message_mut()
            .attributes
            .retain(|attribute| !matches!(attribute, AddressAttribute::Broadcast(_)));
    }
    request
        .execute()
        .await
        .map_err(netlink(format!("add {address}/{prefix_len} to {name}")))
}

/// Sets the namespace's IPv4 default route to `gateway`.
pub async fn default_route(handle: &Handle, gateway: Ipv4Addr) -> Result<(), LinkError> {
    handle
        .route()
        .add()
        .v4()
        .replace()
        .gateway(gateway)
        .execute()
        .await
        .map_err(netlink(format!("add default route via {gateway}")))
}

/// Creates the veth pair `name`/`peer_name` in the namespace of `handle`, moves `peer_name`
/// into the namespace `peer_namespace` and renames it `peer_final_name` there. Returns a
/// connection inside the peer's namespace for the rest of its configuration.
pub async fn veth_into(
    handle: &Handle,
    name: &str,
    peer_name: &str,
    peer_namespace: &Path,
    peer_final_name: &str,
) -> Result<Handle, LinkError> {
    delete(handle, name).await?;
    handle
        .link()
        .add()
        .veth(name.to_owned(), peer_name.to_owned())
        .execute()
        .await
        .map_err(netlink(format!("create veth pair {name}/{peer_name}")))?;

    let namespace = File::open(peer_namespace).map_err(|source| LinkError::Enter {
        path: peer_namespace.to_owned(),
        source,
    })?;
    let peer = require(handle, peer_name).await?;
    handle
        .link()
        .set(peer)
        .setns_by_fd(namespace.as_raw_fd())
        .execute()
        .await
        .map_err(netlink(format!(
            "move {peer_name} into {}",
            peer_namespace.display()
        )))?;

    let peer_handle = connect(peer_namespace).await?;
    if peer_name != peer_final_name {
        let moved = require(&peer_handle, peer_name).await?;
        peer_handle
            .link()
            .set(moved)
            .name(peer_final_name.to_owned())
            .execute()
            .await
            .map_err(netlink(format!("rename {peer_name} to {peer_final_name}")))?;
    }
    Ok(peer_handle)
}

/// The IPv4 addresses of every interface in the caller's own namespace.
pub async fn local_addresses() -> Result<Vec<Ipv4Addr>, LinkError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|source| LinkError::Enter {
            path: PathBuf::from("/proc/self/ns/net"),
            source,
        })?;
    let connection = tokio::spawn(connection);
    let mut messages = handle.address().get().execute();
    let mut addresses = Vec::new();
    let result = loop {
        match messages.try_next().await {
            Ok(Some(message)) => {
                for attribute in message.attributes {
                    if let AddressAttribute::Address(IpAddr::V4(address))
                    | AddressAttribute::Local(IpAddr::V4(address)) = attribute
                    {
                        addresses.push(address);
                    }
                }
            }
            Ok(None) => break Ok(()),
            Err(source) => break Err(netlink("list addresses")(source)),
        }
    };
    connection.abort();
    result?;
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}
