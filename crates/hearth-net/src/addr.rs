//! IPv4 prefixes and the address ranges the policy treats specially.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::error::AllowError;

/// An IPv4 prefix with no host bits set, e.g. `10.0.0.0/8`. A bare address is a `/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// Fails when host bits are set, so `10.0.0.1/8` is never silently widened or narrowed.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, AllowError> {
        if prefix > 32 {
            return Err(AllowError::BadPrefix(prefix.to_string()));
        }
        let net = Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        };
        if net.addr != addr {
            return Err(AllowError::HostBitsSet(net.to_string()));
        }
        Ok(net)
    }

    /// For compile-time constants; panics on host bits (a programming error).
    pub const fn from_octets(o: [u8; 4], prefix: u8) -> Self {
        let addr = Ipv4Addr::new(o[0], o[1], o[2], o[3]);
        assert!(prefix <= 32 && addr.to_bits() & !mask(prefix) == 0);
        Ipv4Net { addr, prefix }
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    /// True when every address of `other` is in `self`.
    pub fn covers(&self, other: &Ipv4Net) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.covers(other) || other.covers(self)
    }
}

const fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = AllowError;

    fn from_str(s: &str) -> Result<Self, AllowError> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: Ipv4Addr = a.parse().map_err(|_| AllowError::BadAddress(a.into()))?;
        let prefix = match p {
            None => 32,
            // Digits only: Rust's integer parser would also take "+8".
            Some(p) => Some(p)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u8>().ok())
                .ok_or_else(|| AllowError::BadPrefix(p.into()))?,
        };
        Ipv4Net::new(addr, prefix)
    }
}

/// Never reachable from a VM, whatever the allowlist says: the host's loopback, "this network",
/// link-local (cloud metadata lives at 169.254.169.254), multicast, reserved and broadcast.
/// The VM pool itself (other VMs) is added at rule time because it is configurable.
pub const ALWAYS_DENIED: &[(Ipv4Net, &str)] = &[
    (
        Ipv4Net::from_octets([0, 0, 0, 0], 8),
        "0.0.0.0/8 (this network)",
    ),
    (
        Ipv4Net::from_octets([127, 0, 0, 0], 8),
        "127.0.0.0/8 (loopback)",
    ),
    (
        Ipv4Net::from_octets([169, 254, 0, 0], 16),
        "169.254.0.0/16 (link-local and metadata)",
    ),
    (
        Ipv4Net::from_octets([224, 0, 0, 0], 4),
        "224.0.0.0/4 (multicast)",
    ),
    (
        Ipv4Net::from_octets([240, 0, 0, 0], 4),
        "240.0.0.0/4 (reserved and broadcast)",
    ),
];

/// Denied unless an allowlist entry lies inside one of them ("listed explicitly").
pub const PRIVATE: &[Ipv4Net] = &[
    Ipv4Net::from_octets([10, 0, 0, 0], 8),
    Ipv4Net::from_octets([172, 16, 0, 0], 12),
    Ipv4Net::from_octets([192, 168, 0, 0], 16),
    Ipv4Net::from_octets([100, 64, 0, 0], 10),
];

/// The always-denied range that fully contains `net`, if any.
pub fn always_denied_cover(net: &Ipv4Net) -> Option<&'static str> {
    ALWAYS_DENIED
        .iter()
        .find(|(d, _)| d.covers(net))
        .map(|(_, why)| *why)
}

/// An entry "lists a private range explicitly" when it lies entirely inside one.
pub fn is_explicit_private(net: &Ipv4Net) -> bool {
    PRIVATE.iter().any(|p| p.covers(net))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let ok = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("1.2.3.4", "1.2.3.4/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
        ];
        for (s, want) in ok {
            assert_eq!(s.parse::<Ipv4Net>().unwrap().to_string(), want);
        }
        let bad = [
            ("10.0.0.1/8", AllowError::HostBitsSet("10.0.0.0/8".into())),
            ("10.0.0.0/33", AllowError::BadPrefix("33".into())),
            ("10.0.0.0/", AllowError::BadPrefix("".into())),
            ("10.0.0.0/+8", AllowError::BadPrefix("+8".into())),
            ("10.0.0/8", AllowError::BadAddress("10.0.0".into())),
        ];
        for (s, want) in bad {
            assert_eq!(s.parse::<Ipv4Net>().unwrap_err(), want, "{s}");
        }
    }

    #[test]
    fn containment() {
        let ten: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        let sub: Ipv4Net = "10.9.0.0/16".parse().unwrap();
        let all: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        assert!(ten.covers(&sub) && !sub.covers(&ten) && sub.overlaps(&ten));
        assert!(all.covers(&ten) && all.contains("255.255.255.255".parse().unwrap()));
        assert!(is_explicit_private(&sub) && !is_explicit_private(&all));
        assert_eq!(
            always_denied_cover(&"169.254.169.254".parse().unwrap()),
            Some("169.254.0.0/16 (link-local and metadata)")
        );
        assert_eq!(always_denied_cover(&all), None);
    }
}
