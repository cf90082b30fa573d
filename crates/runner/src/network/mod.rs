//! Sandbox networking: each sandbox's namespace gets a veth link into the runner's hub
//! namespace, whose nftables rules enforce the sandbox's egress policy, and whose resolver
//! answers the sandbox's name queries.
//!
//! Whatever a policy says, a sandbox reaches neither other sandboxes, the hub itself (apart
//! from the resolver), the host's addresses, loopback, link-local addresses nor multicast:
//! the hub forwards a sandbox's packets only to the uplink, and only to destinations outside
//! those ranges.

mod addressing;
mod dns;
mod firewall;
mod hub;
mod link;
mod policy;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub use addressing::Addressing;
pub use firewall::FirewallError;
pub use hub::{HubError, UPLINK_INTERFACE, UPLINK_PEER_INTERFACE, Uplink};
pub use link::LinkError;
pub use policy::{DomainRule, EgressPolicy, Ipv4Cidr, MAX_ALLOW_LIST_ENTRIES};

use dns::{Policies, Resolver};
use firewall::Firewall;

/// Name of a sandbox's interface inside its namespace.
pub const SANDBOX_INTERFACE: &str = "eth0";

/// Settings of sandbox networking.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Directory of the hub's namespace file (`hub`), normally under the data directory.
    pub state_dir: PathBuf,
    /// Addresses of the sandboxes and the resolver; must not overlap the uplink's networks.
    pub subnet: Ipv4Cidr,
    pub uplink: Uplink,
    /// Name server the resolver forwards allowed queries to, reached from the hub.
    pub dns_upstream: SocketAddr,
}

impl NetworkConfig {
    /// Path of the bind mount that keeps the hub namespace alive.
    pub fn hub_path(&self) -> PathBuf {
        self.state_dir.join("hub")
    }
}

/// A sandbox's network index and policy, kept in its runtime record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxNetwork {
    /// Picks the sandbox's addresses and interface names; see [`Addressing`].
    pub index: u32,
    pub policy: EgressPolicy,
}

/// Errors of sandbox networking.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid network settings: {message}")]
    Config { message: String },
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error("failed to remove the hub network namespace at {path}")]
    RemoveHub {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The hub and what runs in it.
pub struct Network {
    config: NetworkConfig,
    addressing: Addressing,
    hub: rtnetlink::Handle,
    firewall: Firewall,
    policies: Policies,
    resolver: tokio::task::JoinHandle<()>,
}

impl Network {
    /// Creates the hub, or opens the one a previous server left, and loads its rules with
    /// the policies of the sandboxes that still run (`running`: index and policy).
    pub async fn open(
        config: NetworkConfig,
        running: &[(u32, EgressPolicy)],
    ) -> Result<Self, NetworkError> {
        let addressing =
            Addressing::new(config.subnet).map_err(|message| NetworkError::Config { message })?;
        let hub_path = config.hub_path();
        let created = hub::create_or_open(&hub_path).await?;
        tracing::info!(hub = %hub_path.display(), created, uplink = ?config.uplink, "sandbox network hub");
        if let Err(error) = hub::configure(&hub_path, &addressing, &config.uplink).await {
            if created {
                let _ = hub::remove(&hub_path);
            }
            return Err(error.into());
        }

        // The uplink's own addresses are blocked too: they are the hub and its neighbour, not
        // the network beyond.
        let mut blocked = host_addresses().await;
        if let Uplink::Veth {
            hub_address,
            peer_address,
            ..
        } = &config.uplink
        {
            blocked.extend([hub_address.address, *peer_address]);
        }
        let firewall = Firewall::new(&hub_path, UPLINK_INTERFACE, addressing, &blocked);
        firewall.load(running).await?;
        let policies: Policies = Arc::new(Mutex::new(running.iter().cloned().collect()));
        let resolver = Resolver::start(
            &hub_path,
            addressing,
            config.dns_upstream,
            firewall.clone(),
            policies.clone(),
        )
        .await?;
        let hub = link::connect(&hub_path).await?;
        Ok(Self {
            config,
            addressing,
            hub,
            firewall,
            policies,
            resolver,
        })
    }

    pub fn addressing(&self) -> &Addressing {
        &self.addressing
    }

    /// The address that sandboxes' resolv.conf names.
    pub fn resolver_address(&self) -> Ipv4Addr {
        self.addressing.resolver()
    }

    /// Gives the sandbox whose PID 1 is `pid` its interface, with `policy` in force before
    /// the interface exists. On failure nothing of it is left.
    pub async fn attach(&self, network: &SandboxNetwork, pid: i32) -> Result<(), NetworkError> {
        let attached = self.try_attach(network, pid).await;
        if attached.is_err() {
            self.detach(network.index).await;
        }
        attached
    }

    async fn try_attach(&self, network: &SandboxNetwork, pid: i32) -> Result<(), NetworkError> {
        let index = network.index;
        self.set_policy(network).await?;

        let hub_name = format!("dh{index}");
        let namespace = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let sandbox = link::veth_into(
            &self.hub,
            &hub_name,
            &format!("ds{index}"),
            &namespace,
            SANDBOX_INTERFACE,
        )
        .await?;
        let hub_address = self.addressing.hub_address(index);
        link::add_address(&self.hub, &hub_name, hub_address, 31).await?;
        link::up(&self.hub, &hub_name).await?;
        link::add_address(
            &sandbox,
            SANDBOX_INTERFACE,
            self.addressing.sandbox_address(index),
            31,
        )
        .await?;
        link::up(&sandbox, SANDBOX_INTERFACE).await?;
        link::default_route(&sandbox, hub_address).await?;
        Ok(())
    }

    /// Installs a sandbox's policy, or replaces the one in force.
    pub async fn set_policy(&self, network: &SandboxNetwork) -> Result<(), NetworkError> {
        // The resolver switches to the new policy before the rules change, so that it adds no
        // address under the old policy afterwards.
        self.policies
            .lock()
            .expect("policies lock")
            .insert(network.index, network.policy.clone());
        self.firewall.apply(network.index, &network.policy).await?;
        Ok(())
    }

    /// Removes a sandbox's interface and rules. Failures are logged: a stopped sandbox's
    /// namespace is gone already, and with it the interface.
    pub async fn detach(&self, index: u32) {
        self.policies.lock().expect("policies lock").remove(&index);
        if let Err(error) = link::delete(&self.hub, &format!("dh{index}")).await {
            tracing::warn!(index, %error, "failed to delete a sandbox's hub interface");
        }
        if let Err(error) = self.firewall.remove(index).await {
            tracing::warn!(index, %error, "failed to remove a sandbox's firewall rules");
        }
    }

    /// Stops the resolver; with `remove_hub`, also removes the hub and with it the uplink
    /// and every interface in it.
    pub fn shutdown(&self, remove_hub: bool) -> Result<(), NetworkError> {
        self.resolver.abort();
        if !remove_hub {
            return Ok(());
        }
        let path = self.config.hub_path();
        hub::remove(&path).map_err(|source| NetworkError::RemoveHub { path, source })?;
        tracing::info!("removed the sandbox network hub");
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.resolver.abort();
    }
}

/// The host's own IPv4 addresses, which no sandbox may reach through the uplink.
async fn host_addresses() -> Vec<Ipv4Addr> {
    match link::local_addresses().await {
        Ok(addresses) => addresses
            .into_iter()
            .filter(|address| !address.is_loopback())
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "failed to list the host's addresses; only loopback is blocked");
            Vec::new()
        }
    }
}

/// Removes a hub that a previous server left, without opening it; for teardown by a
/// server that does not use networking (any more).
pub fn remove_hub(state_dir: &Path) -> std::io::Result<()> {
    hub::remove(&state_dir.join("hub"))
}

/// Reads the first `nameserver` of a resolv.conf, as the resolver's default upstream.
pub fn first_nameserver(resolv_conf: &str) -> Option<Ipv4Addr> {
    resolv_conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}
