//! The request body `network: {outbound, allow: [...]}` and its allowlist entries.

use std::fmt;
use std::net::{IpAddr, ToSocketAddrs};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::addr::{always_denied_cover, Ipv4Net};
use crate::error::{AllowError, NetError, Result};

/// More entries than this is almost certainly a mistake and makes rule updates slow.
pub const MAX_ENTRIES: usize = 256;

/// One destination a VM may reach over TCP and UDP.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AllowEntry {
    /// `CIDR`, `IP`, `CIDR:port` or `IP:port`.
    Net { net: Ipv4Net, port: Option<u16> },
    /// `host:port`; resolved on the host each time rules are applied (setup and update), so
    /// the rules hold the addresses the name had then, not later.
    Host { host: String, port: u16 },
}

/// A destination after host names are resolved: what the rules are built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Destination {
    pub net: Ipv4Net,
    pub port: Option<u16>,
}

/// `CIDR` or `CIDR:port`: a form [`AllowEntry`] parses back, so the server can hand the
/// resolved list to the guest agent, which then needs no DNS of its own.
impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            None => write!(f, "{}", self.net),
            Some(p) => write!(f, "{}:{p}", self.net),
        }
    }
}

impl FromStr for AllowEntry {
    type Err = AllowError;

    fn from_str(s: &str) -> Result<Self, AllowError> {
        if s.is_empty() {
            return Err(AllowError::Empty);
        }
        if s.starts_with('[') || s.matches(':').count() > 1 {
            return Err(AllowError::Ipv6Unsupported);
        }
        let (target, port) = match s.split_once(':') {
            Some((t, p)) => (t, Some(parse_port(p)?)),
            None => (s, None),
        };
        // Anything made only of digits, dots and a slash is meant as an address; it must not
        // fall through to the host-name branch and be sent to DNS.
        if target
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'/')
        {
            let net: Ipv4Net = target.parse()?;
            if let Some(why) = always_denied_cover(&net) {
                return Err(AllowError::AlwaysDenied(why));
            }
            return Ok(AllowEntry::Net { net, port });
        }
        validate_host(target)?;
        let port = port.ok_or(AllowError::MissingPort)?;
        Ok(AllowEntry::Host {
            host: target.to_ascii_lowercase(),
            port,
        })
    }
}

fn parse_port(p: &str) -> Result<u16, AllowError> {
    Some(p)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| AllowError::BadPort(p.into()))
}

/// RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
fn validate_host(h: &str) -> Result<(), AllowError> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if h.len() > 253 || !h.split('.').all(label_ok) {
        return Err(AllowError::BadHostName(h.into()));
    }
    Ok(())
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowEntry::Net { net, port: None } => write!(f, "{net}"),
            AllowEntry::Net { net, port: Some(p) } => write!(f, "{net}:{p}"),
            AllowEntry::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl AllowEntry {
    /// Host names go through the host's resolver (getaddrinfo); only IPv4 answers are kept.
    pub fn resolve(&self) -> Result<Vec<Destination>> {
        match self {
            AllowEntry::Net { net, port } => Ok(vec![Destination {
                net: *net,
                port: *port,
            }]),
            AllowEntry::Host { host, port } => {
                let addrs = (host.as_str(), *port).to_socket_addrs().map_err(|source| {
                    NetError::Resolve {
                        host: host.clone(),
                        source,
                    }
                })?;
                let mut out: Vec<Destination> = addrs
                    .filter_map(|a| match a.ip() {
                        IpAddr::V4(ip) => Some(Destination {
                            net: Ipv4Net::new(ip, 32).expect("a /32 has no host bits"),
                            port: Some(*port),
                        }),
                        IpAddr::V6(_) => None,
                    })
                    .collect();
                out.sort();
                out.dedup();
                if out.is_empty() {
                    return Err(NetError::NoIpv4(host.clone()));
                }
                Ok(out)
            }
        }
    }
}

/// What a create request (or an allowlist update) asks for. Absent = `outbound: false`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetRequest {
    #[serde(default)]
    pub outbound: bool,
    #[serde(default)]
    pub allow: Vec<String>,
}

impl NetRequest {
    /// No NIC at all unless outbound was asked for.
    pub fn wants_nic(&self) -> bool {
        self.outbound
    }

    /// Parses every entry; the first bad one is reported with its text. An allowlist without
    /// `outbound: true` is refused rather than ignored, so a caller never believes a VM is
    /// reachable-limited when it actually has no network.
    pub fn entries(&self) -> Result<Vec<AllowEntry>> {
        if !self.outbound && !self.allow.is_empty() {
            return Err(NetError::BadConfig(
                "an allowlist needs \"outbound\": true".into(),
            ));
        }
        if self.allow.len() > MAX_ENTRIES {
            return Err(NetError::BadAllow {
                entry: format!("{} entries", self.allow.len()),
                kind: AllowError::TooMany(MAX_ENTRIES),
            });
        }
        self.allow
            .iter()
            .map(|e| {
                e.trim().parse().map_err(|kind| NetError::BadAllow {
                    entry: e.clone(),
                    kind,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AllowError::*;

    fn net(s: &str, port: Option<u16>) -> AllowEntry {
        AllowEntry::Net {
            net: s.parse().unwrap(),
            port,
        }
    }

    #[test]
    fn parses_valid_entries() {
        let host = |h: &str, port| AllowEntry::Host {
            host: h.into(),
            port,
        };
        let table = [
            ("203.0.113.0/24", net("203.0.113.0/24", None)),
            ("203.0.113.7", net("203.0.113.7/32", None)),
            ("203.0.113.0/24:443", net("203.0.113.0/24", Some(443))),
            ("10.1.2.3:5432", net("10.1.2.3/32", Some(5432))),
            ("0.0.0.0/0:53", net("0.0.0.0/0", Some(53))),
            ("Example.COM:443", host("example.com", 443)),
            ("pypi.org:65535", host("pypi.org", 65535)),
        ];
        for (s, want) in table {
            let got: AllowEntry = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(got, want, "{s}");
            assert_eq!(got.to_string().parse::<AllowEntry>().unwrap(), got);
        }
    }

    #[test]
    fn rejects_with_precise_reasons() {
        let table = [
            ("", Empty),
            ("::1", Ipv6Unsupported),
            ("[2001:db8::1]:80", Ipv6Unsupported),
            ("300.1.1.1", BadAddress("300.1.1.1".into())),
            ("1.2.3", BadAddress("1.2.3".into())),
            ("1.2.3.4/40", BadPrefix("40".into())),
            ("10.0.0.1/8", HostBitsSet("10.0.0.0/8".into())),
            ("1.2.3.4:0", BadPort("0".into())),
            ("1.2.3.4:70000", BadPort("70000".into())),
            ("1.2.3.4:", BadPort("".into())),
            ("1.2.3.4:+80", BadPort("+80".into())),
            ("example.com", MissingPort),
            ("bad_host:80", BadHostName("bad_host".into())),
            ("-x.com:80", BadHostName("-x.com".into())),
            ("a..b:80", BadHostName("a..b".into())),
            ("a b:80", BadHostName("a b".into())),
            ("x\";drop:80", BadHostName("x\";drop".into())),
            (
                "169.254.169.254",
                AlwaysDenied("169.254.0.0/16 (link-local and metadata)"),
            ),
            ("127.0.0.1:22", AlwaysDenied("127.0.0.0/8 (loopback)")),
            ("224.0.0.1", AlwaysDenied("224.0.0.0/4 (multicast)")),
        ];
        for (s, want) in table {
            assert_eq!(s.parse::<AllowEntry>().unwrap_err(), want, "{s:?}");
        }
    }

    #[test]
    fn request_rules() {
        let r: NetRequest =
            serde_json::from_str(r#"{"outbound":true,"allow":["1.2.3.4:80"]}"#).unwrap();
        assert_eq!(r.entries().unwrap(), vec![net("1.2.3.4/32", Some(80))]);
        let none: NetRequest = serde_json::from_str("{}").unwrap();
        assert!(!none.wants_nic() && none.entries().unwrap().is_empty());
        let bad = NetRequest {
            outbound: false,
            allow: vec!["1.2.3.4".into()],
        };
        assert!(matches!(bad.entries(), Err(NetError::BadConfig(_))));
        let bad = NetRequest {
            outbound: true,
            allow: vec!["1.2.3.4".into(), "nope".into()],
        };
        assert!(matches!(
            bad.entries(),
            Err(NetError::BadAllow { entry, kind: MissingPort }) if entry == "nope"
        ));
        assert!(serde_json::from_str::<NetRequest>(r#"{"outbund":true}"#).is_err());
    }

    #[test]
    fn resolves_names_on_the_host() {
        // `localhost` comes from /etc/hosts: no network traffic.
        let e: AllowEntry = "localhost:8080".parse().unwrap();
        let d = e.resolve().unwrap();
        assert!(d
            .iter()
            .any(|d| d.net.to_string() == "127.0.0.1/32" && d.port == Some(8080)));
    }
}
