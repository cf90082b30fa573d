//! Addresses of the sandbox network: one /31 per sandbox, its even address on the hub side.

use std::net::Ipv4Addr;

use super::policy::Ipv4Cidr;

/// The sandbox subnet and what each address in it is for.
///
/// Index 0 is reserved: its odd address is the resolver's, on the hub's loopback
/// interface. Sandbox `index` (from 1) has `network + 2 * index` on the hub's side and
/// `network + 2 * index + 1` inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressing {
    subnet: Ipv4Cidr,
}

impl Addressing {
    /// Accepts subnets from /8 to /28.
    pub fn new(subnet: Ipv4Cidr) -> Result<Self, String> {
        if !(8..=28).contains(&subnet.prefix_len) {
            return Err(format!(
                "invalid sandbox subnet {subnet}: use a prefix length from 8 to 28"
            ));
        }
        Ok(Self { subnet })
    }

    pub fn subnet(&self) -> Ipv4Cidr {
        self.subnet
    }

    /// The highest sandbox index the subnet has room for.
    pub fn max_index(&self) -> u32 {
        (1u32 << (32 - u32::from(self.subnet.prefix_len))) / 2 - 1
    }

    fn offset(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + offset)
    }

    /// Where the runner's resolver listens; every sandbox's resolv.conf names it.
    pub fn resolver(&self) -> Ipv4Addr {
        self.offset(1)
    }

    /// The hub-side address of sandbox `index`, its default gateway.
    pub fn hub_address(&self, index: u32) -> Ipv4Addr {
        self.offset(2 * index)
    }

    /// The address of sandbox `index` inside its namespace.
    pub fn sandbox_address(&self, index: u32) -> Ipv4Addr {
        self.offset(2 * index + 1)
    }

    /// The sandbox index an address inside the sandbox subnet belongs to.
    pub fn index_of(&self, sandbox_address: Ipv4Addr) -> Option<u32> {
        if !self.subnet.contains(sandbox_address) {
            return None;
        }
        let offset = u32::from(sandbox_address) - u32::from(self.subnet.network());
        let index = offset / 2;
        (offset % 2 == 1 && index >= 1 && index <= self.max_index()).then_some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_an_index() {
        let addressing = Addressing::new("100.96.0.0/16".parse().unwrap()).unwrap();
        assert_eq!(addressing.resolver(), Ipv4Addr::new(100, 96, 0, 1));
        assert_eq!(addressing.hub_address(1), Ipv4Addr::new(100, 96, 0, 2));
        assert_eq!(
            addressing.sandbox_address(200),
            Ipv4Addr::new(100, 96, 1, 145)
        );
        assert_eq!(
            addressing.index_of(Ipv4Addr::new(100, 96, 1, 145)),
            Some(200)
        );
        assert_eq!(addressing.index_of(Ipv4Addr::new(100, 96, 0, 1)), None);
        assert_eq!(addressing.index_of(Ipv4Addr::new(100, 96, 0, 2)), None);
        assert_eq!(addressing.max_index(), 32767);
    }

    #[test]
    fn subnet_size_checked() {
        assert!(Addressing::new("10.0.0.0/29".parse().unwrap()).is_err());
        assert!(Addressing::new("10.0.0.0/7".parse().unwrap()).is_err());
    }
}
