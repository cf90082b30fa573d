//! The hub, a sandbox's veth link and its firewall rules, against real namespaces (as root).
//! A process in a network namespace of its own (`unshare --net`) stands in for a sandbox.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command};

use daytona_runner::network::{EgressPolicy, Network, NetworkConfig, SandboxNetwork, Uplink};

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root to create network namespaces".into());
    }
    for tool in ["nft", "nsenter", "unshare", "ip"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|output| output.status.success());
        if !found {
            return Some(format!("needs {tool}"));
        }
    }
    None
}

/// A process in a network namespace of its own; killed on drop.
struct FakeSandbox(Child);

impl FakeSandbox {
    fn start() -> Self {
        let child = Command::new("unshare")
            .args(["--net", "sleep", "300"])
            .spawn()
            .expect("unshare starts");
        // `unshare` executes `sleep` in the new namespace; wait until it has.
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        let path = format!("/proc/{}/ns/net", child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_link(&path).ok().as_ref() == Some(&own) {
            assert!(
                std::time::Instant::now() < deadline,
                "unshare did not enter a namespace"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Self(child)
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    fn run(&self, command: &[&str]) -> String {
        let output = Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", self.pid()))
            .args(command)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for FakeSandbox {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes the hub when a test ends, pass or fail.
struct HubGuard(std::path::PathBuf);

impl Drop for HubGuard {
    fn drop(&mut self) {
        let _ = daytona_runner::network::remove_hub(&self.0);
    }
}

fn in_hub(hub: &Path, command: &[&str]) -> String {
    let output = Command::new("nsenter")
        .arg(format!("--net={}", hub.display()))
        .args(command)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn config(dir: &Path) -> NetworkConfig {
    NetworkConfig {
        state_dir: dir.join("network"),
        subnet: "100.96.0.0/16".parse().unwrap(),
        uplink: Uplink::None,
        dns_upstream: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53),
    }
}

#[tokio::test]
async fn attach_detach_and_teardown() {
    if let Some(reason) = skip_reason() {
        println!("SKIPPED: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let _guard = HubGuard(config.state_dir.clone());
    let hub = config.hub_path();
    let network = Network::open(config, &[]).await.expect("the hub opens");
    assert_eq!(
        in_hub(&hub, &["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(),
        "1"
    );

    let sandbox = FakeSandbox::start();
    let attached = SandboxNetwork {
        index: 3,
        policy: EgressPolicy::parse(false, Some("198.51.100.0/24"), None).unwrap(),
    };
    network
        .attach(&attached, sandbox.pid())
        .await
        .expect("attach");

    let inside = sandbox.run(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(inside.contains("100.96.0.7/31"), "{inside}");
    let routes = sandbox.run(&["ip", "-4", "route", "show", "default"]);
    assert!(routes.contains("via 100.96.0.6"), "{routes}");
    let hub_links = in_hub(&hub, &["ip", "-o", "-4", "addr", "show"]);
    assert!(
        hub_links.contains("dh3") && hub_links.contains("100.96.0.6/31"),
        "{hub_links}"
    );
    assert!(hub_links.contains("100.96.0.1/32"), "{hub_links}");
    let rules = in_hub(&hub, &["nft", "list", "table", "inet", "daytona"]);
    assert!(rules.contains("\"dh3\" : jump sb3"), "{rules}");
    assert!(rules.contains("198.51.100.0/24"), "{rules}");
    // The host's own namespace gets no interface.
    let host_links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&host_links.stdout).contains("dh3"));

    let blocked = SandboxNetwork {
        index: 3,
        policy: EgressPolicy::deny(),
    };
    network.set_policy(&blocked).await.expect("set policy");
    let rules = in_hub(&hub, &["nft", "list", "chain", "inet", "daytona", "sb3"]);
    assert!(!rules.contains("accept"), "{rules}");

    network.detach(3).await;
    assert!(!in_hub(&hub, &["ip", "-o", "link"]).contains("dh3"));
    assert!(!sandbox.run(&["ip", "-o", "link"]).contains("eth0"));
    let rules = in_hub(&hub, &["nft", "list", "table", "inet", "daytona"]);
    assert!(!rules.contains("sb3"), "{rules}");

    network.shutdown(true).expect("teardown");
    assert!(!hub.exists());
}

#[tokio::test]
async fn hub_is_reopened_with_running_policies() {
    if let Some(reason) = skip_reason() {
        println!("SKIPPED: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _guard = HubGuard(dir.path().join("network"));
    let sandbox = FakeSandbox::start();
    let attached = SandboxNetwork {
        index: 1,
        policy: EgressPolicy::default(),
    };
    {
        let network = Network::open(config(dir.path()), &[]).await.unwrap();
        network.attach(&attached, sandbox.pid()).await.unwrap();
        // A server that stops while the sandbox runs keeps the hub.
        network.shutdown(false).unwrap();
    }
    let config = config(dir.path());
    let hub = config.hub_path();
    let network = Network::open(config, &[(1, attached.policy.clone())])
        .await
        .unwrap();
    assert!(in_hub(&hub, &["ip", "-o", "link"]).contains("dh1"));
    let rules = in_hub(&hub, &["nft", "list", "chain", "inet", "daytona", "sb1"]);
    assert!(rules.contains("accept"), "{rules}");
    network.detach(1).await;
    network.shutdown(true).unwrap();
    assert!(!hub.exists());
}
