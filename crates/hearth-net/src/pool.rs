//! The VM address pool: a configurable IPv4 prefix carved into one /29 block per VM.
//!
//! A block holds two point-to-point /30 links, so no address is shared between VMs and the
//! uplink needs only one route per VM:
//! - `.0/30` guest link on the TAP: `.1` gateway (VM namespace side), `.2` guest;
//! - `.4/30` uplink link on the veth: `.5` uplink side, `.6` VM namespace side.
//!
//! The allocator is pure: the caller owns persistence (the server's SQLite table, with a UNIQUE
//! constraint on the block) and passes what is in use. `setup` also refuses a block whose uplink
//! interface already exists, so even a corrupted store cannot give two VMs one address.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::addr::Ipv4Net;
use crate::error::{NetError, Result};

/// Prefix length of one VM's block.
pub const BLOCK_PREFIX: u8 = 29;
const BLOCK: u32 = 1 << (32 - BLOCK_PREFIX);

/// One VM's /29. Stored by the server as its string form, e.g. `172.30.0.8/29`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet(Ipv4Net);

impl Subnet {
    fn at(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.0.addr()) + offset)
    }

    pub fn net(&self) -> Ipv4Net {
        self.0
    }
    /// The guest's gateway: `tap0`'s address in the VM namespace.
    pub fn gateway(&self) -> Ipv4Addr {
        self.at(1)
    }
    pub fn guest(&self) -> Ipv4Addr {
        self.at(2)
    }
    pub fn guest_prefix(&self) -> u8 {
        30
    }
    /// Uplink-side end of the veth; the VM namespace's default gateway.
    pub fn uplink_addr(&self) -> Ipv4Addr {
        self.at(5)
    }
    /// VM-namespace end of the veth.
    pub fn transit_addr(&self) -> Ipv4Addr {
        self.at(6)
    }
    /// Name of the veth end in the uplink namespace: `hv` + the block's address in hex, unique
    /// per pool and within the 15-byte interface name limit.
    pub fn uplink_ifname(&self) -> String {
        format!("hv{:08x}", u32::from(self.0.addr()))
    }
    /// Locally administered (bit 1 of the first octet) unicast (bit 0 clear) MAC, derived from
    /// the guest address so it is unique whenever addresses are.
    pub fn mac(&self) -> String {
        let o = self.guest().octets();
        format!("02:48:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Subnet {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self> {
        let net: Ipv4Net = s
            .parse()
            .map_err(|e| NetError::BadConfig(format!("subnet {s:?}: {e}")))?;
        if net.prefix() != BLOCK_PREFIX {
            return Err(NetError::BadConfig(format!("subnet {s:?} is not a /29")));
        }
        Ok(Subnet(net))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPool {
    net: Ipv4Net,
}

impl AddressPool {
    pub fn new(net: Ipv4Net) -> Result<Self> {
        if net.prefix() > BLOCK_PREFIX {
            return Err(NetError::BadConfig(format!(
                "pool {net} is smaller than one /{BLOCK_PREFIX} block"
            )));
        }
        Ok(AddressPool { net })
    }

    pub fn net(&self) -> Ipv4Net {
        self.net
    }

    pub fn capacity(&self) -> u64 {
        self.net.size() / u64::from(BLOCK)
    }

    pub fn contains(&self, s: &Subnet) -> bool {
        self.net.covers(&s.0)
    }

    /// The lowest block not in `used`, so deleted VMs' blocks are reused first.
    pub fn allocate(&self, used: &[Subnet]) -> Result<Subnet> {
        let base = u32::from(self.net.addr());
        let mut taken: Vec<u64> = used
            .iter()
            .filter(|s| self.contains(s))
            .map(|s| u64::from((u32::from(s.0.addr()) - base) / BLOCK))
            .collect();
        taken.sort_unstable();
        taken.dedup();
        // The first index where the sorted list has a gap is free.
        let free = taken
            .iter()
            .enumerate()
            .find(|(i, t)| *i as u64 != **t)
            .map_or(taken.len() as u64, |(i, _)| i as u64);
        if free >= self.capacity() {
            return Err(NetError::PoolExhausted(self.net.to_string()));
        }
        let addr = Ipv4Addr::from(base + free as u32 * BLOCK);
        Ok(Subnet(
            Ipv4Net::new(addr, BLOCK_PREFIX).expect("aligned block"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(s: &str) -> AddressPool {
        AddressPool::new(s.parse().unwrap()).unwrap()
    }

    #[test]
    fn allocates_lowest_free_and_reuses() {
        let p = pool("172.30.0.0/16");
        assert_eq!(p.capacity(), 8192);
        let a = p.allocate(&[]).unwrap();
        assert_eq!(a.to_string(), "172.30.0.0/29");
        let b = p.allocate(&[a]).unwrap();
        assert_eq!(b.to_string(), "172.30.0.8/29");
        let c = p.allocate(&[a, b]).unwrap();
        // a deleted: its block comes back first.
        assert_eq!(p.allocate(&[b, c]).unwrap(), a);
        // Duplicates and foreign blocks in `used` do not confuse it.
        let foreign: Subnet = "10.0.0.0/29".parse().unwrap();
        assert_eq!(p.allocate(&[a, a, foreign]).unwrap(), b);
    }

    #[test]
    fn exhausts_and_never_repeats() {
        let p = pool("192.168.7.0/27");
        let mut used = vec![];
        for _ in 0..p.capacity() {
            let s = p.allocate(&used).unwrap();
            assert!(!used.contains(&s) && p.contains(&s));
            used.push(s);
        }
        assert!(matches!(p.allocate(&used), Err(NetError::PoolExhausted(_))));
        assert!(AddressPool::new("10.0.0.0/30".parse().unwrap()).is_err());
    }

    #[test]
    fn block_layout_and_mac() {
        let s: Subnet = "172.30.1.8/29".parse().unwrap();
        assert_eq!(s.gateway().to_string(), "172.30.1.9");
        assert_eq!(s.guest().to_string(), "172.30.1.10");
        assert_eq!(s.uplink_addr().to_string(), "172.30.1.13");
        assert_eq!(s.transit_addr().to_string(), "172.30.1.14");
        assert_eq!(s.uplink_ifname(), "hvac1e0108");
        assert_eq!(s.mac(), "02:48:ac:1e:01:0a");
        let first = u8::from_str_radix(&s.mac()[..2], 16).unwrap();
        assert_eq!(first & 0b11, 0b10, "locally administered unicast");
        assert!("172.30.1.8/30".parse::<Subnet>().is_err());
        assert!("172.30.1.9/29".parse::<Subnet>().is_err());
    }
}
