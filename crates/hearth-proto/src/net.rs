//! Guest network settings handed from the host to the guest init on the kernel command line.
//!
//! Format: `hearth.net=ADDR/PREFIX,GATEWAY,DNS` (IPv4), e.g.
//! `hearth.net=172.30.0.2/30,172.30.0.1,172.30.0.1`. Absent means "no network": init then
//! only brings up `lo`. One shared parser keeps host and guest from drifting apart.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::ProtoError;

pub const CMDLINE_KEY: &str = "hearth.net";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestNet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub dns: Ipv4Addr,
}

impl GuestNet {
    /// Finds and parses `hearth.net=` in a kernel command line; `Ok(None)` when absent.
    pub fn from_cmdline(cmdline: &str) -> crate::Result<Option<Self>> {
        let prefix = format!("{CMDLINE_KEY}=");
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&prefix))
            .map(str::parse)
            .transpose()
    }

    /// The `key=value` word to append to a kernel command line.
    pub fn to_cmdline(&self) -> String {
        format!("{CMDLINE_KEY}={self}")
    }
}

impl fmt::Display for GuestNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{},{},{}",
            self.addr, self.prefix, self.gateway, self.dns
        )
    }
}

impl FromStr for GuestNet {
    type Err = ProtoError;

    fn from_str(s: &str) -> crate::Result<Self> {
        let bad = |why| ProtoError::BadNet(s.to_string(), why);
        let mut parts = s.split(',');
        let cidr = parts.next().ok_or_else(|| bad("missing address"))?;
        let gateway = parts.next().ok_or_else(|| bad("missing gateway"))?;
        let dns = parts.next().ok_or_else(|| bad("missing dns"))?;
        if parts.next().is_some() {
            return Err(bad("too many fields"));
        }
        let (addr, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| bad("address needs /prefix"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("prefix is not a number"))?;
        if prefix == 0 || prefix > 32 {
            return Err(bad("prefix must be 1..=32"));
        }
        Ok(GuestNet {
            addr: addr.parse().map_err(|_| bad("bad address"))?,
            prefix,
            gateway: gateway.parse().map_err(|_| bad("bad gateway"))?,
            dns: dns.parse().map_err(|_| bad("bad dns"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_cmdline() {
        let n = GuestNet {
            addr: "172.30.0.2".parse().unwrap(),
            prefix: 30,
            gateway: "172.30.0.1".parse().unwrap(),
            dns: "172.30.0.1".parse().unwrap(),
        };
        let line = format!("console=ttyS0 {} quiet", n.to_cmdline());
        assert_eq!(GuestNet::from_cmdline(&line).unwrap(), Some(n));
        assert_eq!(GuestNet::from_cmdline("console=ttyS0").unwrap(), None);
    }

    #[test]
    fn rejects_malformed_values() {
        for s in [
            "",
            "1.2.3.4",
            "1.2.3.4/33,1.1.1.1,1.1.1.1",
            "1.2.3.4/0,1.1.1.1,1.1.1.1",
            "1.2.3/24,1.1.1.1,1.1.1.1",
            "1.2.3.4/24,1.1.1.1",
            "1.2.3.4/24,1.1.1.1,1.1.1.1,x",
        ] {
            assert!(s.parse::<GuestNet>().is_err(), "{s:?}");
        }
    }
}
