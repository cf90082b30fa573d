//! Egress policies: what a sandbox may reach outside its own network namespace.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Maximum number of entries in a CIDR or domain allow list.
pub const MAX_ALLOW_LIST_ENTRIES: usize = 100;

/// An IPv4 network in CIDR notation; a bare address is a /32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Cidr {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// The network's first address, with the host bits cleared.
    pub fn network(&self) -> Ipv4Addr {
        let mask = if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len))
        };
        Ipv4Addr::from(u32::from(self.address) & mask)
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        Ipv4Cidr {
            address,
            prefix_len: self.prefix_len,
        }
        .network()
            == self.network()
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("invalid CIDR {text:?}: use an IPv4 network such as 192.0.2.0/24");
        let (address, prefix_len) = match text.split_once('/') {
            Some((address, prefix)) => {
                let prefix_len: u8 = prefix.parse().map_err(|_| invalid())?;
                (address, prefix_len)
            }
            None => (text, 32),
        };
        let address: Ipv4Addr = address.parse().map_err(|_| invalid())?;
        if prefix_len > 32 {
            return Err(invalid());
        }
        Ok(Self {
            address,
            prefix_len,
        })
    }
}

impl TryFrom<String> for Ipv4Cidr {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Ipv4Cidr> for String {
    fn from(cidr: Ipv4Cidr) -> Self {
        cidr.to_string()
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix_len)
    }
}

/// One entry of a domain allow list. `example.com` allows that name and every name below
/// it; `*.example.com` allows only the names below it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DomainRule {
    /// Lowercase, without a trailing dot.
    pub suffix: String,
    pub subdomains_only: bool,
}

impl DomainRule {
    /// Whether a queried name (any case, with or without the trailing dot) matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let below = name
            .strip_suffix(self.suffix.as_str())
            .is_some_and(|prefix| prefix.ends_with('.'));
        below || (!self.subdomains_only && name == self.suffix)
    }
}

impl FromStr for DomainRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            format!(
                "invalid domain {text:?}: use a name such as example.com, or *.example.com for the names below it"
            )
        };
        let (subdomains_only, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(invalid());
        }
        Ok(Self {
            suffix: name,
            subdomains_only,
        })
    }
}

impl TryFrom<String> for DomainRule {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<DomainRule> for String {
    fn from(rule: DomainRule) -> Self {
        if rule.subdomains_only {
            format!("*.{}", rule.suffix)
        } else {
            rule.suffix
        }
    }
}

/// The egress a sandbox is allowed. Link-local, host and other sandboxes' addresses stay
/// blocked whatever the policy contains.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressPolicy {
    /// No egress and no name resolution.
    pub block_all: bool,
    /// Networks the sandbox may reach; with `domains`, the union of both is reachable.
    pub cidrs: Vec<Ipv4Cidr>,
    /// Names the resolver resolves; the addresses in its replies become reachable. Empty
    /// means every name resolves.
    pub domains: Vec<DomainRule>,
}

impl EgressPolicy {
    /// Parses Daytona's three fields: `networkAllowList` is comma-separated CIDRs,
    /// `domainAllowList` comma-separated domains. Blank entries are skipped.
    pub fn parse(
        block_all: bool,
        allow_list: Option<&str>,
        domain_list: Option<&str>,
    ) -> Result<Self, String> {
        let cidrs = parse_list("networkAllowList", allow_list)?;
        let domains = parse_list("domainAllowList", domain_list)?;
        Ok(Self {
            block_all,
            cidrs,
            domains,
        })
    }

    /// Whether every destination outside the always-blocked ranges is reachable.
    pub fn is_open(&self) -> bool {
        !self.block_all && self.cidrs.is_empty() && self.domains.is_empty()
    }

    /// Whether the resolver forwards a query for `name` instead of refusing it.
    pub fn resolves(&self, name: &str) -> bool {
        !self.block_all
            && (self.domains.is_empty() || self.domains.iter().any(|rule| rule.matches(name)))
    }

    /// Whether the addresses in the resolver's answers become reachable: only under a domain
    /// allow list, because otherwise every name resolves.
    pub fn opens_resolved_addresses(&self) -> bool {
        !self.block_all && !self.domains.is_empty()
    }

    /// A policy that allows nothing, in force until a sandbox is configured.
    pub fn deny() -> Self {
        Self {
            block_all: true,
            ..Self::default()
        }
    }
}

fn parse_list<T: FromStr<Err = String>>(field: &str, text: Option<&str>) -> Result<Vec<T>, String> {
    let entries: Vec<&str> = text
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    if entries.len() > MAX_ALLOW_LIST_ENTRIES {
        return Err(format!(
            "{field} has {} entries: at most {MAX_ALLOW_LIST_ENTRIES} are allowed",
            entries.len()
        ));
    }
    entries
        .into_iter()
        .map(|entry| entry.parse().map_err(|error| format!("{field}: {error}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_normalizes() {
        let cidr: Ipv4Cidr = "198.51.100.7/24".parse().unwrap();
        assert_eq!(cidr.to_string(), "198.51.100.0/24");
        assert_eq!("192.0.2.1".parse::<Ipv4Cidr>().unwrap().prefix_len, 32);
        assert!(cidr.contains("198.51.100.200".parse().unwrap()));
        assert!(!cidr.contains("198.51.101.1".parse().unwrap()));
    }

    #[test]
    fn cidr_rejects_invalid() {
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "::1/128",
            "example.com",
            "10.0.0.0/",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn domain_rule_matches_suffix() {
        let rule: DomainRule = "Example.COM".parse().unwrap();
        assert!(rule.matches("example.com"));
        assert!(rule.matches("api.example.com."));
        assert!(!rule.matches("badexample.com"));
        assert!(!rule.matches("example.org"));
    }

    #[test]
    fn wildcard_rule_matches_below_only() {
        let rule: DomainRule = "*.example.com".parse().unwrap();
        assert!(rule.matches("a.example.com"));
        assert!(!rule.matches("example.com"));
    }

    #[test]
    fn domain_rule_rejects_invalid() {
        for bad in ["", "*", "*.", "a..b", "-a.com", "a b.com", "a/b", "*.*.com"] {
            assert!(bad.parse::<DomainRule>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn policy_parses_lists() {
        let policy =
            EgressPolicy::parse(false, Some("10.0.0.0/8, 192.0.2.1"), Some("a.test,")).unwrap();
        assert_eq!(policy.cidrs.len(), 2);
        assert_eq!(policy.domains.len(), 1);
        assert!(policy.resolves("a.test"));
        assert!(!policy.resolves("b.test"));
        assert!(EgressPolicy::parse(false, Some("nope"), None).is_err());
        assert!(EgressPolicy::parse(false, None, None).unwrap().is_open());
        assert!(!EgressPolicy::deny().resolves("a.test"));
        let cidr_only = EgressPolicy::parse(false, Some("10.0.0.0/8"), None).unwrap();
        assert!(cidr_only.resolves("any.test"));
        assert!(!cidr_only.opens_resolved_addresses());
        assert!(policy.opens_resolved_addresses());
    }
}
