//! The `daytona server` flags of sandbox networking.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use daytona_api::network::{Addressing, Ipv4Cidr, NetworkConfig, Uplink, first_nameserver};

/// The path by which the sandboxes' egress leaves the runner's hub namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UplinkKind {
    /// Through `pasta` (Debian's passt package): the host's sockets, without changing the
    /// host's network settings.
    Pasta,
    /// A veth pair into the network namespace --network-uplink-netns.
    Veth,
    /// Nowhere: policies, the resolver and the isolation between sandboxes are in force, but
    /// no packet leaves.
    None,
    /// No sandbox networking at all: sandboxes have loopback only.
    Off,
}

#[derive(Debug, Args)]
pub struct NetworkArgs {
    /// The path by which sandboxes' egress leaves the host.
    #[arg(
        long,
        env = "DAYTONA_NETWORK_UPLINK",
        value_enum,
        default_value = "pasta"
    )]
    network_uplink: UplinkKind,

    /// With --network-uplink veth: the network namespace file (such as /run/netns/NAME)
    /// that the uplink veth pair leads into.
    #[arg(long, env = "DAYTONA_NETWORK_UPLINK_NETNS")]
    network_uplink_netns: Option<PathBuf>,

    /// With --network-uplink veth: the hub's address on the uplink, in CIDR notation.
    #[arg(long, env = "DAYTONA_NETWORK_UPLINK_ADDRESS", value_name = "CIDR")]
    network_uplink_address: Option<String>,

    /// With --network-uplink veth: the address of the uplink's other end, which becomes the
    /// hub's default gateway.
    #[arg(long, env = "DAYTONA_NETWORK_UPLINK_GATEWAY")]
    network_uplink_gateway: Option<Ipv4Addr>,

    /// Subnet of the sandboxes' addresses (a /31 each) and their resolver; it must not
    /// overlap the networks reached through the uplink.
    #[arg(
        long,
        env = "DAYTONA_SANDBOX_SUBNET",
        default_value = "100.96.0.0/16",
        value_name = "CIDR"
    )]
    sandbox_subnet: String,

    /// Name server that the sandboxes' resolver forwards allowed queries to, as ADDRESS or
    /// ADDRESS:PORT [default: with pasta, the host's name server through pasta; else the
    /// first nameserver of /etc/resolv.conf]
    #[arg(long, env = "DAYTONA_DNS_UPSTREAM")]
    dns_upstream: Option<String>,
}

impl NetworkArgs {
    /// The runner's network settings, or `None` with `--network-uplink off`.
    pub fn config(&self, data_dir: &Path) -> anyhow::Result<Option<NetworkConfig>> {
        let subnet: Ipv4Cidr = self
            .sandbox_subnet
            .parse()
            .map_err(anyhow::Error::msg)
            .context("invalid --sandbox-subnet")?;
        Addressing::new(subnet)
            .map_err(anyhow::Error::msg)
            .context("invalid --sandbox-subnet")?;
        let uplink = match self.network_uplink {
            UplinkKind::Off => return Ok(None),
            UplinkKind::None => Uplink::None,
            // pasta maps the subnet's first address, which no sandbox has, to the host's
            // name server.
            UplinkKind::Pasta => Uplink::Pasta {
                dns_address: subnet.network(),
            },
            UplinkKind::Veth => self.veth_uplink()?,
        };
        let dns_upstream = match (&self.dns_upstream, &uplink) {
            (Some(text), _) => parse_upstream(text)?,
            (None, Uplink::Pasta { dns_address }) => SocketAddr::new(IpAddr::V4(*dns_address), 53),
            (None, _) => {
                let resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
                let address = first_nameserver(&resolv_conf).unwrap_or(Ipv4Addr::LOCALHOST);
                SocketAddr::new(IpAddr::V4(address), 53)
            }
        };
        Ok(Some(NetworkConfig {
            state_dir: data_dir.join("network"),
            subnet,
            uplink,
            dns_upstream,
        }))
    }

    fn veth_uplink(&self) -> anyhow::Result<Uplink> {
        let (Some(namespace), Some(address), Some(gateway)) = (
            &self.network_uplink_netns,
            &self.network_uplink_address,
            self.network_uplink_gateway,
        ) else {
            bail!(
                "--network-uplink veth needs --network-uplink-netns, --network-uplink-address and --network-uplink-gateway"
            );
        };
        let hub_address: Ipv4Cidr = address
            .parse()
            .map_err(anyhow::Error::msg)
            .context("invalid --network-uplink-address")?;
        Ok(Uplink::Veth {
            namespace: namespace.clone(),
            hub_address,
            peer_address: gateway,
        })
    }
}

fn parse_upstream(text: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    let address: IpAddr = text.parse().with_context(|| {
        format!(
            "invalid --dns-upstream {text:?}: use an address such as 192.0.2.53 or 192.0.2.53:53"
        )
    })?;
    Ok(SocketAddr::new(address, 53))
}
