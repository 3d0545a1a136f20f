//! `POST /firewall/allowlist`: in-guest nftables output rules, defence in depth behind
//! the host's own egress rules.
//!
//! Semantics: `outbound: false` drops every outbound packet except on loopback (and
//! replies on connections made to the guest); `outbound: true` with an empty `allow`
//! accepts everything; with a non-empty `allow`, only those networks (plus loopback,
//! replies and IPv6 neighbour discovery) are reachable. DNS needs the resolver's address
//! in the list. Each call replaces the previous rules atomically (one `nft -f` batch).

use std::net::IpAddr;
use std::process::Stdio;

use hearth_proto::{FirewallRequest, MAX_JSON_BODY};
use http::Response;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;

use super::http::{self as h, Body};
use super::{AgentError, Result, State};

const TABLE: &str = "hearth_agent";

/// Parses `ADDR` or `ADDR/PREFIX` (IPv4 or IPv6) and returns it with host bits cleared,
/// in canonical form.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8)> {
    let bad = |why: &str| AgentError::Invalid(format!("allow entry {s:?}: {why}"));
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 3 => {
            p.parse::<u8>().map_err(|_| bad("bad prefix"))?
        }
        Some(_) => return Err(bad("bad prefix")),
    };
    if prefix > max {
        return Err(bad("prefix too long"));
    }
    let masked = match addr {
        IpAddr::V4(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    };
    Ok((masked, prefix))
}

/// The complete `nft -f` batch for a validated request.
pub fn nft_script(req: &FirewallRequest) -> Result<String> {
    let nets = req
        .allow
        .iter()
        .map(|s| parse_cidr(s))
        .collect::<Result<Vec<_>>>()?;
    // Creating then deleting makes the batch work whether or not the table exists.
    let mut s = format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n");
    s += &format!("table inet {TABLE} {{\n  chain output {{\n");
    let open = req.outbound && nets.is_empty();
    let policy = if open { "accept" } else { "drop" };
    s += &format!("    type filter hook output priority 0; policy {policy};\n");
    if !open {
        s += "    oifname \"lo\" accept\n";
        s += "    ct state established,related accept\n";
    }
    if req.outbound && !nets.is_empty() {
        s += "    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept\n";
        let set = |v4: bool| {
            nets.iter()
                .filter(|(a, _)| a.is_ipv4() == v4)
                .map(|(a, p)| format!("{a}/{p}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (v4, v6) = (set(true), set(false));
        if !v4.is_empty() {
            s += &format!("    ip daddr {{ {v4} }} accept\n");
        }
        if !v6.is_empty() {
            s += &format!("    ip6 daddr {{ {v6} }} accept\n");
        }
    }
    s += "  }\n}\n";
    Ok(s)
}

pub async fn handle(state: &State, req: hyper::Request<Incoming>) -> Result<Response<Body>> {
    let fw: FirewallRequest = h::read_json(req, MAX_JSON_BODY).await?;
    let script = nft_script(&fw)?;
    let mut child = tokio::process::Command::new(&state.config.nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            // An image without nftables (an OCI image, say) boots and serves everything
            // else; the host's egress rules still judge its traffic.
            std::io::ErrorKind::NotFound => AgentError::Unavailable {
                code: hearth_proto::ErrorCode::FirewallUnavailable,
                message: format!(
                    "this image has no {}: the in-guest firewall is unavailable (the host's \
                     egress rules still apply)",
                    state.config.nft
                ),
            },
            _ => AgentError::Internal(format!("starting {}: {e}", state.config.nft)),
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    let _ = stdin.write_all(script.as_bytes()).await;
    drop(stdin);
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| AgentError::Internal(format!("running nft: {e}")))?;
    if !out.status.success() {
        return Err(AgentError::Internal(format!(
            "nft rejected the rules: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let applied = FirewallRequest {
        outbound: fw.outbound,
        allow: fw
            .allow
            .iter()
            .map(|s| parse_cidr(s).map(|(a, p)| format!("{a}/{p}")))
            .collect::<Result<_>>()?,
    };
    Ok(h::json(200, &applied))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_validated_and_canonical() {
        let ok = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("1.2.3.4", "1.2.3.4/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2001:db8::1/32", "2001:db8::/32"),
            ("::1", "::1/128"),
        ];
        for (i, want) in ok {
            let (a, p) = parse_cidr(i).unwrap();
            assert_eq!(format!("{a}/{p}"), want);
        }
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x",
            "1.2.3.4/",
            "1.2.3.4/-1",
            "1.2.3.4/+8",
            "1.2.3.4/8/8",
            "1.2.3.4; flush ruleset",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scripts_follow_the_semantics() {
        let closed = nft_script(&FirewallRequest {
            outbound: false,
            allow: vec!["1.1.1.1".into()],
        })
        .unwrap();
        assert!(closed.contains("policy drop") && closed.contains("oifname \"lo\" accept"));
        assert!(!closed.contains("1.1.1.1"));
        let open = nft_script(&FirewallRequest {
            outbound: true,
            allow: vec![],
        })
        .unwrap();
        assert!(open.contains("policy accept"));
        let list = nft_script(&FirewallRequest {
            outbound: true,
            allow: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
        })
        .unwrap();
        assert!(list.contains("policy drop"));
        assert!(list.contains("ip daddr { 10.0.0.0/8 } accept"));
        assert!(list.contains("ip6 daddr { 2001:db8::/32 } accept"));
        assert!(nft_script(&FirewallRequest {
            outbound: true,
            allow: vec!["nope".into()]
        })
        .is_err());
    }
}
