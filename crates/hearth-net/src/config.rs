//! Host networking configuration, from the environment or built by tests.

use std::net::Ipv4Addr;

use crate::addr::{always_denied_cover, Ipv4Net};
use crate::error::{NetError, Result};
use crate::pool::AddressPool;

pub const DEFAULT_POOL: &str = "172.30.0.0/16";

/// Where VM traffic leaves: the namespace whose routing table leads to the internet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uplink {
    /// The host's own (initial) network namespace and default route.
    Host,
    /// An existing named namespace (tests point this at their own "host" namespace).
    Netns(String),
}

#[derive(Debug, Clone)]
pub struct NetConfig {
    pub pool: AddressPool,
    pub uplink: Uplink,
    /// The resolver handed to guests; allowed on port 53 whatever the allowlist says.
    pub dns: Ipv4Addr,
    /// Names every host object: netns `<prefix>-<vm>`, tables `<prefix>_vm_<vm>` and
    /// `<prefix>_uplink`. Distinct prefixes keep concurrent test runs (and servers) apart.
    pub prefix: String,
}

impl NetConfig {
    pub fn new(pool: Ipv4Net, uplink: Uplink, dns: Ipv4Addr, prefix: &str) -> Result<Self> {
        let bad = |m: String| Err(NetError::BadConfig(m));
        if prefix.is_empty()
            || prefix.len() > 12
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            || !prefix.as_bytes()[0].is_ascii_lowercase()
        {
            return bad(format!(
                "prefix {prefix:?}: use 1-12 of [a-z0-9], starting a-z"
            ));
        }
        if let Some(why) = always_denied_cover(&pool) {
            return bad(format!("pool {pool} lies in {why}"));
        }
        if let Uplink::Netns(n) = &uplink {
            if !valid_netns_name(n) {
                return bad(format!("uplink namespace {n:?} is not a plain name"));
            }
        }
        Ok(NetConfig {
            pool: AddressPool::new(pool)?,
            uplink,
            dns,
            prefix: prefix.to_string(),
        })
    }

    /// `HEARTH_NET_POOL` (default 172.30.0.0/16), `HEARTH_NET_UPLINK` (`host` or a netns
    /// name; default `host`), `HEARTH_NET_DNS` (default: the first non-loopback IPv4
    /// nameserver in /etc/resolv.conf, else 1.1.1.1), `HEARTH_NET_PREFIX` (default `hearth`).
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let pool_s = var("HEARTH_NET_POOL").unwrap_or_else(|| DEFAULT_POOL.into());
        let pool = pool_s
            .parse()
            .map_err(|e| NetError::BadConfig(format!("HEARTH_NET_POOL={pool_s}: {e}")))?;
        let uplink = match var("HEARTH_NET_UPLINK").as_deref() {
            None | Some("host") => Uplink::Host,
            Some(n) => Uplink::Netns(n.to_string()),
        };
        let dns = match var("HEARTH_NET_DNS") {
            Some(d) => d
                .parse()
                .map_err(|_| NetError::BadConfig(format!("HEARTH_NET_DNS={d}")))?,
            None => host_resolver().unwrap_or(Ipv4Addr::new(1, 1, 1, 1)),
        };
        let prefix = var("HEARTH_NET_PREFIX").unwrap_or_else(|| "hearth".into());
        NetConfig::new(pool, uplink, dns, &prefix)
    }
}

/// A loopback resolver (systemd-resolved's 127.0.0.53) is useless to a VM, so skip those.
fn host_resolver() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .find(|a| !a.is_loopback())
}

/// Names that `ip netns` accepts and that cannot escape /run/netns.
pub(crate) fn valid_netns_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !n.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        let pool: Ipv4Net = DEFAULT_POOL.parse().unwrap();
        let dns = Ipv4Addr::new(198, 51, 100, 53);
        assert!(NetConfig::new(pool, Uplink::Host, dns, "hearth").is_ok());
        for p in ["", "Hearth", "1x", "a-b", "abcdefghijklm"] {
            assert!(NetConfig::new(pool, Uplink::Host, dns, p).is_err(), "{p}");
        }
        let lo = "127.0.0.0/16".parse().unwrap();
        assert!(NetConfig::new(lo, Uplink::Host, dns, "h").is_err());
        for n in ["../etc", "a/b", ".x", ""] {
            let u = Uplink::Netns(n.into());
            assert!(NetConfig::new(pool, u, dns, "h").is_err(), "{n}");
        }
    }
}
