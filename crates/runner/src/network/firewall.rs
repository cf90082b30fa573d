//! The hub's nftables ruleset, loaded with the `nft` binary run inside the hub namespace.
//!
//! Every sandbox's hub-side interface `dh<index>` jumps to the sandbox's own chain through the
//! map `sandboxes`. An interface without an entry (a sandbox not yet configured) falls
//! through to the forward chain's drop policy, so a sandbox has no egress until its policy
//! is installed.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::addressing::Addressing;
use super::policy::{EgressPolicy, Ipv4Cidr};

const TABLE: &str = "inet daytona";

/// Errors of loading rules into the hub.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("failed to run nft in the hub network namespace {hub}")]
    Spawn {
        hub: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("nft rejected the rules for {target}: {stderr}")]
    Rejected { target: String, stderr: String },
}

/// The ruleset of one hub namespace.
#[derive(Debug, Clone)]
pub struct Firewall {
    hub: PathBuf,
    uplink: String,
    addressing: Addressing,
    /// Destinations no sandbox may reach, whatever its policy: link-local, loopback, the
    /// sandbox network itself, and the host's own addresses.
    blocked: Vec<Ipv4Cidr>,
}

impl Firewall {
    pub fn new(
        hub: &Path,
        uplink: &str,
        addressing: Addressing,
        host_addresses: &[Ipv4Addr],
    ) -> Self {
        let mut blocked: Vec<Ipv4Cidr> = [
            "0.0.0.0/8",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "224.0.0.0/4",
            "255.255.255.255/32",
        ]
        .iter()
        .map(|cidr| cidr.parse().expect("constant CIDR"))
        .collect();
        blocked.push(addressing.subnet());
        blocked.extend(host_addresses.iter().map(|&address| Ipv4Cidr {
            address,
            prefix_len: 32,
        }));
        Self {
            hub: hub.to_owned(),
            uplink: uplink.to_owned(),
            addressing,
            blocked,
        }
    }

    /// Replaces the whole table, with the policies of the running sandboxes, in one
    /// transaction: a restarted runner gets the same rules as a fresh one.
    pub async fn load(&self, sandboxes: &[(u32, EgressPolicy)]) -> Result<(), FirewallError> {
        let mut script = self.base_script();
        for (index, policy) in sandboxes {
            script.push_str(&self.policy_script(*index, policy));
        }
        self.run("the hub's base ruleset", &script).await
    }

    /// Installs or replaces a sandbox's policy. Addresses the resolver added for the
    /// previous policy are dropped with it.
    pub async fn apply(&self, index: u32, policy: &EgressPolicy) -> Result<(), FirewallError> {
        self.run(
            &format!("sandbox interface dh{index}"),
            &self.policy_script(index, policy),
        )
        .await
    }

    /// Lets a sandbox reach `addresses`, which the resolver answered for an allowed name.
    pub async fn allow_resolved(
        &self,
        index: u32,
        addresses: &[Ipv4Addr],
    ) -> Result<(), FirewallError> {
        if addresses.is_empty() {
            return Ok(());
        }
        let list = join(addresses.iter().map(ToString::to_string));
        self.run(
            &format!("resolved addresses of sandbox interface dh{index}"),
            &format!("add element {TABLE} sb{index}_allow {{ {list} }}\n"),
        )
        .await
    }

    /// Removes a sandbox's map entry, chain and set; missing ones are not an error.
    pub async fn remove(&self, index: u32) -> Result<(), FirewallError> {
        // Deleting a map element that is absent fails, so it goes in its own transaction
        // whose failure is expected when the sandbox never got a policy.
        let _ = self
            .run(
                "a sandbox map entry",
                &format!("delete element {TABLE} sandboxes {{ \"dh{index}\" }}\n"),
            )
            .await;
        let script = format!(
            "add chain {TABLE} sb{index}\n\
             add set {TABLE} sb{index}_allow {{ type ipv4_addr; flags interval; auto-merge; }}\n\
             delete chain {TABLE} sb{index}\n\
             delete set {TABLE} sb{index}_allow\n"
        );
        self.run(&format!("removal of sandbox interface dh{index}"), &script)
            .await
    }

    fn base_script(&self) -> String {
        let uplink = &self.uplink;
        let resolver = self.addressing.resolver();
        let blocked = join(self.blocked.iter().map(ToString::to_string));
        format!(
            "add table {TABLE}\n\
             delete table {TABLE}\n\
             table {TABLE} {{\n\
             \tset blocked {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {blocked} }} }}\n\
             \tmap sandboxes {{ type ifname : verdict; }}\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy drop;\n\
             \t\tiifname \"{uplink}\" ct state established,related accept\n\
             \t\tiifname != \"dh*\" drop\n\
             \t\toifname != \"{uplink}\" drop\n\
             \t\tmeta nfproto != ipv4 drop\n\
             \t\tfib saddr . iif oif missing drop\n\
             \t\tip daddr @blocked drop\n\
             \t\tiifname vmap @sandboxes\n\
             \t}}\n\
             \tchain input {{\n\
             \t\ttype filter hook input priority filter; policy accept;\n\
             \t\tiifname != \"dh*\" accept\n\
             \t\tfib saddr . iif oif missing drop\n\
             \t\tip daddr {resolver} udp dport 53 accept\n\
             \t\tdrop\n\
             \t}}\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\toifname \"{uplink}\" masquerade\n\
             \t}}\n\
             }}\n"
        )
    }

    fn policy_script(&self, index: u32, policy: &EgressPolicy) -> String {
        let sandbox = self.addressing.sandbox_address(index);
        let mut script = format!(
            "add chain {TABLE} sb{index}\n\
             flush chain {TABLE} sb{index}\n\
             add set {TABLE} sb{index}_allow {{ type ipv4_addr; flags interval; auto-merge; }}\n\
             flush set {TABLE} sb{index}_allow\n\
             add rule {TABLE} sb{index} ip saddr != {sandbox} drop\n"
        );
        if policy.block_all {
            writeln!(script, "add rule {TABLE} sb{index} drop").expect("string write");
        } else if policy.is_open() {
            writeln!(script, "add rule {TABLE} sb{index} accept").expect("string write");
        } else {
            if !policy.cidrs.is_empty() {
                let list = join(policy.cidrs.iter().map(ToString::to_string));
                writeln!(script, "add element {TABLE} sb{index}_allow {{ {list} }}")
                    .expect("string write");
            }
            writeln!(
                script,
                "add rule {TABLE} sb{index} ip daddr @sb{index}_allow accept\n\
                 add rule {TABLE} sb{index} drop"
            )
            .expect("string write");
        }
        writeln!(
            script,
            "add element {TABLE} sandboxes {{ \"dh{index}\" : jump sb{index} }}"
        )
        .expect("string write");
        script
    }

    async fn run(&self, target: &str, script: &str) -> Result<(), FirewallError> {
        let spawn_error = |source| FirewallError::Spawn {
            hub: self.hub.clone(),
            source,
        };
        let mut child = tokio::process::Command::new("nsenter")
            .arg(format!("--net={}", self.hub.display()))
            .args(["nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_error)?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(spawn_error)?;
        drop(stdin);
        let output = child.wait_with_output().await.map_err(spawn_error)?;
        if output.status.success() {
            return Ok(());
        }
        Err(FirewallError::Rejected {
            target: target.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firewall() -> Firewall {
        Firewall::new(
            Path::new("/run/hub"),
            "uplink0",
            Addressing::new("100.96.0.0/16".parse().unwrap()).unwrap(),
            &["192.0.2.5".parse().unwrap()],
        )
    }

    #[test]
    fn base_blocks_link_local_and_host() {
        let script = firewall().base_script();
        assert!(script.contains("169.254.0.0/16"));
        assert!(script.contains("192.0.2.5/32"));
        assert!(script.contains("100.96.0.0/16"));
        assert!(script.contains("oifname != \"uplink0\" drop"));
    }

    #[test]
    fn restricted_policy_lists_cidrs() {
        let policy = EgressPolicy::parse(false, Some("198.51.100.0/24"), None).unwrap();
        let script = firewall().policy_script(3, &policy);
        assert!(script.contains("ip saddr != 100.96.0.7 drop"));
        assert!(script.contains("sb3_allow { 198.51.100.0/24 }"));
        assert!(script.contains("\"dh3\" : jump sb3"));
    }

    #[test]
    fn block_all_drops() {
        let script = firewall().policy_script(1, &EgressPolicy::deny());
        assert!(script.contains("add rule inet daytona sb1 drop"));
        assert!(!script.contains("accept"));
    }
}
