//! nftables rulesets, built as text from typed values only (addresses, prefixes, ports and
//! names this crate generated or validated), so nothing a user sent can change their shape.
//!
//! Every ruleset replaces its table in one transaction: `table X {}` (create if missing),
//! `delete table X`, `table X {...}`. A running VM never sees a moment without rules.

use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::addr::{is_explicit_private, Ipv4Net, ALWAYS_DENIED, PRIVATE};
use crate::allow::Destination;
use crate::pool::Subnet;

/// The TAP the VMM opens, and the VM namespace's end of the veth.
pub const TAP: &str = "tap0";
pub const VM_UPLINK: &str = "up0";
/// The guard table inside each VM namespace (the namespace itself is per VM).
pub const GUARD_TABLE: &str = "hearth_guard";

fn replace_table(name: &str, body: &str) -> String {
    format!("table inet {name} {{}}\ndelete table inet {name}\ntable inet {name} {{\n{body}}}\n")
}

/// Uplink-wide: masquerade VM traffic leaving through any non-VM interface.
pub fn uplink_table(name: &str, pool: Ipv4Net) -> String {
    replace_table(
        name,
        &format!(
            "  chain postrouting {{\n\
             \x20   type nat hook postrouting priority srcnat; policy accept;\n\
             \x20   ip saddr {pool} oifname != \"hv*\" masquerade\n\
             \x20 }}\n"
        ),
    )
}

/// Inside the VM namespace: nothing may reach the namespace itself, only tap0 -> up0 and
/// its replies are forwarded, and no IPv6 at all. The uplink table below is the policy; this
/// one is a second wall in case the uplink's rules were ever missing.
pub fn guard_table() -> String {
    replace_table(
        GUARD_TABLE,
        &format!(
            "  chain input {{\n\
             \x20   type filter hook input priority filter - 10; policy accept;\n\
             \x20   iifname {{ \"{TAP}\", \"{VM_UPLINK}\" }} drop\n\
             \x20 }}\n\
             \x20 chain forward {{\n\
             \x20   type filter hook forward priority filter - 10; policy drop;\n\
             \x20   meta nfproto ipv6 drop\n\
             \x20   iifname \"{TAP}\" oifname \"{VM_UPLINK}\" accept\n\
             \x20   iifname \"{VM_UPLINK}\" oifname \"{TAP}\" ct state established,related accept\n\
             \x20 }}\n"
        ),
    )
}

/// The per-VM policy, in the uplink namespace where neither the guest nor the VMM (which
/// runs in the VM namespace) can reach it. Packets from the VM are judged one by one, not
/// by connection, so an allowlist change also cuts connections already open.
///
/// `mark` tags the VM's connections; only replies on connections carrying it reach the VM.
/// Conntrack entries outlive a deleted VM, and its /29 is reused: without the tag, late
/// packets of the previous tenant's connections would be delivered to the next VM.
pub fn vm_table(
    name: &str,
    subnet: &Subnet,
    pool: Ipv4Net,
    dns: Ipv4Addr,
    allow: Option<&[Destination]>,
    mark: u32,
) -> String {
    let ifname = subnet.uplink_ifname();
    let deny: Vec<String> = ALWAYS_DENIED
        .iter()
        .map(|(n, _)| *n)
        .chain([pool])
        .map(|n| n.to_string())
        .collect();
    let private: Vec<String> = PRIVATE.iter().map(|n| n.to_string()).collect();
    let mut b = String::new();
    let _ = write!(
        b,
        "  set deny {{\n    type ipv4_addr; flags interval; auto-merge;\n    elements = {{ {} }}\n  }}\n\
         \x20 set private {{\n    type ipv4_addr; flags interval;\n    elements = {{ {} }}\n  }}\n",
        deny.join(", "),
        private.join(", ")
    );
    let _ = write!(
        b,
        "  chain forward {{\n\
         \x20   type filter hook forward priority filter - 10; policy accept;\n\
         \x20   iifname \"{ifname}\" jump from_vm\n\
         \x20   oifname \"{ifname}\" ct state established,related ct mark {mark:#010x} accept\n\
         \x20   oifname \"{ifname}\" drop\n\
         \x20 }}\n\
         \x20 chain input {{\n\
         \x20   type filter hook input priority filter - 10; policy accept;\n\
         \x20   iifname \"{ifname}\" drop\n\
         \x20 }}\n\
         \x20 chain from_vm {{\n\
         \x20   meta nfproto != ipv4 drop\n\
         \x20   ct state new ct mark set {mark:#010x}\n\
         \x20   ip saddr != {guest} drop\n\
         \x20   ip daddr {dns} meta l4proto {{ tcp, udp }} th dport 53 accept\n\
         \x20   ip daddr @deny drop\n",
        guest = subnet.guest(),
    );
    let entry = |b: &mut String, d: &Destination| {
        let _ = match d.port {
            None => writeln!(
                b,
                "    ip daddr {} meta l4proto {{ tcp, udp }} accept",
                d.net
            ),
            Some(p) => writeln!(
                b,
                "    ip daddr {} meta l4proto {{ tcp, udp }} th dport {p} accept",
                d.net
            ),
        };
    };
    let allow = allow.unwrap_or(&[]);
    // Entries inside a private range are the "listed explicitly" exception, so they must be
    // judged before the private ranges are dropped; every other entry after.
    for d in allow.iter().filter(|d| is_explicit_private(&d.net)) {
        entry(&mut b, d);
    }
    b.push_str("    ip daddr @private drop\n");
    for d in allow.iter().filter(|d| !is_explicit_private(&d.net)) {
        entry(&mut b, d);
    }
    b.push_str(if allow.is_empty() {
        "    accept\n  }\n"
    } else {
        "    drop\n  }\n"
    });
    replace_table(name, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_table_orders_private_exceptions_first() {
        let s: Subnet = "172.30.0.8/29".parse().unwrap();
        let d = |n: &str, port| Destination {
            net: n.parse().unwrap(),
            port,
        };
        let allow = [d("203.0.113.10/32", Some(80)), d("10.9.0.0/16", None)];
        let t = vm_table(
            "h_vm_a",
            &s,
            "172.30.0.0/16".parse().unwrap(),
            "198.51.100.53".parse().unwrap(),
            Some(&allow),
            0xdead_beef,
        );
        let pos = |needle: &str| t.find(needle).unwrap_or_else(|| panic!("{needle}\n{t}"));
        assert!(pos("ip daddr @deny drop") < pos("ip daddr 10.9.0.0/16"));
        assert!(pos("ip daddr 10.9.0.0/16") < pos("ip daddr @private drop"));
        assert!(pos("ip daddr @private drop") < pos("ip daddr 203.0.113.10/32"));
        assert!(t.contains("th dport 80 accept") && t.trim_end().ends_with("drop\n  }\n}"));
        assert!(t.contains("ip saddr != 172.30.0.10 drop") && t.contains("172.30.0.0/16"));
        assert!(t.contains("ct mark set 0xdeadbeef") && t.contains("ct mark 0xdeadbeef accept"));
        let open = vm_table("h_vm_a", &s, s.net(), "1.1.1.1".parse().unwrap(), None, 1);
        assert!(open.trim_end().ends_with("accept\n  }\n}"));
    }
}
