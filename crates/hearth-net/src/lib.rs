//! Host networking for Hearth VMs. `README.md` in this crate has the isolation story.
//!
//! A VM without `outbound: true` gets nothing from this crate and no NIC. A networked VM gets:
//! - its own network namespace `<prefix>-<vm>`, holding only `tap0` (the VMM's TAP, the guest's
//!   gateway) and `up0`, one end of a veth pair; the VMM process runs in this namespace;
//! - the veth's other end `hv<block>` in the uplink namespace (the host, or a test's stand-in),
//!   plus one route to the guest's /30 through it;
//! - an nftables table `<prefix>_vm_<vm>` in the uplink namespace holding the VM's egress
//!   policy, out of reach of both the guest and the VMM; a guard table in the VM namespace;
//! - a shared table `<prefix>_uplink` masquerading VM traffic toward the uplink's routes.

mod addr;
mod allow;
mod config;
mod error;
mod pool;
mod probe;
mod rules;
mod sys;

use std::net::Ipv4Addr;

pub use addr::{Ipv4Net, ALWAYS_DENIED, PRIVATE};
pub use allow::{AllowEntry, Destination, NetRequest, MAX_ENTRIES};
pub use config::{NetConfig, Uplink, DEFAULT_POOL};
pub use error::{AllowError, NetError, Result};
use hearth_proto::GuestNet;
pub use pool::{AddressPool, Subnet};
pub use probe::{Check, Probe};
pub use rules::TAP;

/// What the VMM needs (the fields of `hearth_vmm::NetAttachment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetAttachmentInfo {
    pub tap: String,
    pub netns: String,
    pub mac: String,
    pub guest: GuestNet,
    /// The allowlist as applied, host names resolved (empty = open): hand it to the guest
    /// agent through [`Network::guest_allow`].
    pub allow: Vec<Destination>,
}

/// The host networking of one server. Cheap to clone; holds no state but the config, so a
/// restarted server sees exactly what is on the host.
#[derive(Debug, Clone)]
pub struct Network {
    cfg: NetConfig,
}

impl Network {
    pub fn new(cfg: NetConfig) -> Self {
        Network { cfg }
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    fn uplink(&self) -> Option<&str> {
        match &self.cfg.uplink {
            Uplink::Host => None,
            Uplink::Netns(n) => Some(n),
        }
    }

    /// `<prefix>-<vm>`: the VM's namespace, also the alias of its uplink veth.
    pub fn netns_name(&self, vm_id: &str) -> String {
        format!("{}-{vm_id}", self.cfg.prefix)
    }

    pub fn table_name(&self, vm_id: &str) -> String {
        format!("{}_vm_{vm_id}", self.cfg.prefix)
    }

    fn uplink_table_name(&self) -> String {
        format!("{}_uplink", self.cfg.prefix)
    }

    /// Validates the request and resolves host names (on the host, now).
    pub fn resolve(&self, req: &NetRequest) -> Result<Vec<Destination>> {
        let mut out = vec![];
        for e in req.entries()? {
            if let AllowEntry::Net { net, .. } = &e {
                // Only entries wholly inside the pool are refused as pointless; a wider one
                // (172.16.0.0/12) is fine because the pool is dropped before any entry.
                if self.cfg.pool.net().covers(net) {
                    return Err(NetError::BadAllow {
                        entry: e.to_string(),
                        kind: AllowError::AlwaysDenied("the VM address pool"),
                    });
                }
            }
            out.extend(e.resolve()?);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Creates everything a networked VM needs, rules first, and returns what the VMM needs.
    /// On failure nothing is left behind. Any leftovers of an earlier VM with this id are
    /// removed first, so a retry after a crash just works.
    pub fn setup(
        &self,
        vm_id: &str,
        subnet: Subnet,
        req: &NetRequest,
    ) -> Result<NetAttachmentInfo> {
        check_vm_id(vm_id)?;
        if !req.wants_nic() {
            return Err(NetError::BadConfig(
                "setup called without outbound: true".into(),
            ));
        }
        if !self.cfg.pool.contains(&subnet) {
            return Err(NetError::NotInPool(
                subnet.to_string(),
                self.cfg.pool.net().to_string(),
            ));
        }
        let allow = self.resolve(req)?;
        if let Some(n) = self.uplink() {
            if !sys::netns_exists(n) {
                return Err(NetError::BadConfig(format!(
                    "uplink namespace {n} does not exist"
                )));
            }
        }
        self.teardown(vm_id)?;
        let ifname = subnet.uplink_ifname();
        if sys::ip(self.uplink(), &["link", "show", "dev", &ifname]).is_ok() {
            return Err(NetError::AddressInUse(subnet.to_string(), ifname));
        }
        let r = self.build(vm_id, &subnet, &allow);
        if r.is_err() {
            let _ = self.teardown(vm_id);
        }
        r
    }

    fn build(&self, vm_id: &str, s: &Subnet, allow: &[Destination]) -> Result<NetAttachmentInfo> {
        let up = self.uplink();
        let ns = self.netns_name(vm_id);
        let (tap, vmup, hv) = (rules::TAP, rules::VM_UPLINK, s.uplink_ifname());
        // Uplink-wide pieces: idempotent, re-applied so a hand-flushed ruleset heals.
        sys::sysctl(up, &["net.ipv4.ip_forward=1"])?;
        sys::nft_apply(
            up,
            &rules::uplink_table(&self.uplink_table_name(), self.cfg.pool.net()),
        )?;
        // Policy before any link exists: a VM never has a moment without rules.
        self.apply_policy(vm_id, s, allow)?;
        sys::ip(None, &["netns", "add", &ns])?;
        // No IPv6 in the VM namespace at all: nothing to leak around IPv4 rules.
        sys::sysctl(
            Some(&ns),
            &[
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.rp_filter=1",
                "net.ipv4.conf.default.rp_filter=1",
            ],
        )?;
        sys::nft_apply(Some(&ns), &rules::guard_table())?;
        sys::ip(
            up,
            &[
                "link", "add", &hv, "type", "veth", "peer", "name", vmup, "netns", &ns,
            ],
        )?;
        let cidr = |a: Ipv4Addr| format!("{a}/30");
        sys::ip_batch(
            Some(&ns),
            &[
                "link set lo up".into(),
                format!("addr add {} dev {vmup}", cidr(s.transit_addr())),
                format!("link set {vmup} up"),
                format!("tuntap add dev {tap} mode tap"),
                format!("addr add {} dev {tap}", cidr(s.gateway())),
                format!("link set {tap} up"),
                format!("route add default via {} dev {vmup}", s.uplink_addr()),
            ],
        )?;
        sys::ip_batch(
            up,
            &[
                format!("link set dev {hv} alias {ns}"),
                format!("addr add {} dev {hv}", cidr(s.uplink_addr())),
                format!("link set {hv} up"),
                format!(
                    "route add {}/30 via {} dev {hv}",
                    s.net().addr(),
                    s.transit_addr()
                ),
            ],
        )?;
        Ok(NetAttachmentInfo {
            tap: tap.to_string(),
            netns: ns,
            mac: s.mac(),
            guest: GuestNet {
                addr: s.guest(),
                prefix: s.guest_prefix(),
                gateway: s.gateway(),
                dns: self.cfg.dns,
            },
            allow: allow.to_vec(),
        })
    }

    fn apply_policy(&self, vm_id: &str, s: &Subnet, allow: &[Destination]) -> Result<()> {
        let table = rules::vm_table(
            &self.table_name(vm_id),
            s,
            self.cfg.pool.net(),
            self.cfg.dns,
            (!allow.is_empty()).then_some(allow),
            conn_mark(vm_id),
        );
        sys::nft_apply(self.uplink(), &table)
    }

    /// Replaces a running VM's host-side policy in one transaction; returns the resolved
    /// destinations (what the guest agent's in-guest rules should mirror).
    pub fn update_allowlist(
        &self,
        vm_id: &str,
        subnet: Subnet,
        req: &NetRequest,
    ) -> Result<Vec<Destination>> {
        check_vm_id(vm_id)?;
        if !req.wants_nic() {
            return Err(NetError::BadConfig(
                "a running VM's NIC cannot be removed; use outbound: true".into(),
            ));
        }
        let allow = self.resolve(req)?;
        if !sys::nft_tables(self.uplink(), "inet")?.contains(&self.table_name(vm_id)) {
            return Err(NetError::BadConfig(format!("VM {vm_id} has no network")));
        }
        self.apply_policy(vm_id, &subnet, &allow)?;
        Ok(allow)
    }

    /// The list for the guest agent's in-guest rules (`FirewallRequest.allow`), which take
    /// plain CIDRs without ports: the resolved addresses plus the resolver. Coarser than the
    /// host rules on purpose; those stay authoritative. Empty (open) when `allow` is empty.
    pub fn guest_allow(&self, allow: &[Destination]) -> Vec<String> {
        if allow.is_empty() {
            return vec![];
        }
        let mut nets: Vec<Ipv4Net> = allow.iter().map(|d| d.net).collect();
        nets.push(Ipv4Net::new(self.cfg.dns, 32).expect("a /32 has no host bits"));
        nets.sort();
        nets.dedup();
        nets.iter().map(Ipv4Net::to_string).collect()
    }

    /// The VM's host-side ruleset as `nft list` prints it (for `hearth vm show`).
    pub fn rules(&self, vm_id: &str) -> Result<String> {
        check_vm_id(vm_id)?;
        sys::nft(
            self.uplink(),
            &["list", "table", "inet", &self.table_name(vm_id)],
        )
    }

    /// Removes everything `setup` made for `vm_id`; absent pieces are fine. Call it after the
    /// VMM has exited: links are deleted explicitly because a namespace that a live process
    /// still sits in outlives `ip netns del`.
    pub fn teardown(&self, vm_id: &str) -> Result<()> {
        check_vm_id(vm_id)?;
        let ns = self.netns_name(vm_id);
        let up = self.uplink();
        for (name, alias) in sys::veths(up)? {
            if alias.as_deref() == Some(&ns) {
                sys::ip(up, &["link", "del", &name])?;
            }
        }
        if sys::netns_exists(&ns) {
            for dev in [rules::TAP, rules::VM_UPLINK] {
                let _ = sys::ip(Some(&ns), &["link", "del", dev]);
            }
            sys::ip(None, &["netns", "del", &ns])?;
        }
        let table = self.table_name(vm_id);
        if sys::nft_tables(up, "inet")?.contains(&table) {
            sys::nft(up, &["delete", "table", "inet", &table])?;
        }
        Ok(())
    }

    /// Ids of VMs that have any network object on this host (namespace, table or veth).
    pub fn list_owned(&self) -> Result<Vec<String>> {
        let up = self.uplink();
        let ns_prefix = format!("{}-", self.cfg.prefix);
        let table_prefix = format!("{}_vm_", self.cfg.prefix);
        let mut ids: Vec<String> = sys::netns_list()?
            .into_iter()
            .filter_map(|n| n.strip_prefix(&ns_prefix).map(String::from))
            .chain(
                sys::nft_tables(up, "inet")?
                    .into_iter()
                    .filter_map(|t| t.strip_prefix(&table_prefix).map(String::from)),
            )
            .chain(
                sys::veths(up)?
                    .into_iter()
                    .filter_map(|(_, alias)| alias?.strip_prefix(&ns_prefix).map(String::from)),
            )
            .filter(|id| check_vm_id(id).is_ok())
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// After a crash: tears down every owned VM not in `known`; returns the ids removed.
    pub fn reconcile(&self, known: &[&str]) -> Result<Vec<String>> {
        let orphans: Vec<String> = self
            .list_owned()?
            .into_iter()
            .filter(|id| !known.contains(&id.as_str()))
            .collect();
        for id in &orphans {
            self.teardown(id)?;
        }
        Ok(orphans)
    }

    /// Removes the uplink-wide table (when no VM needs it any more, e.g. on uninstall).
    pub fn remove_uplink_rules(&self) -> Result<()> {
        let t = self.uplink_table_name();
        if sys::nft_tables(self.uplink(), "inet")?.contains(&t) {
            sys::nft(self.uplink(), &["delete", "table", "inet", &t])?;
        }
        Ok(())
    }

    /// For `hearth doctor`: can networking be set up on this host, and if not, why.
    pub fn probe(&self) -> Probe {
        probe::run(self)
    }
}

/// The conntrack mark of a VM's connections: FNV-1a of its id, so it survives a server
/// restart and allowlist updates without stored state, and differs between the VMs that
/// reuse one /29 (their ids differ). Never 0, the mark of every untagged connection.
fn conn_mark(vm_id: &str) -> u32 {
    let h = vm_id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    h.max(1)
}

/// VM ids become parts of namespace, table and alias names.
pub fn check_vm_id(id: &str) -> Result<()> {
    let ok = (1..=48).contains(&id.len())
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(NetError::BadVmId(id.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Network {
        let cfg = NetConfig::new(
            DEFAULT_POOL.parse().unwrap(),
            Uplink::Host,
            "198.51.100.53".parse().unwrap(),
            "hearth",
        )
        .unwrap();
        Network::new(cfg)
    }

    #[test]
    fn vm_ids() {
        for ok in ["a", "0f3e1c2a-9b7d-4e2f-8a61-3c5d7e9f1a2b", "vm_1"] {
            assert!(check_vm_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a b", "a/b", "a;b", "ä", &"a".repeat(49)] {
            assert!(check_vm_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn guest_allow_adds_the_resolver_and_drops_ports() {
        let n = net();
        let r = NetRequest {
            outbound: true,
            allow: vec![
                "203.0.113.10:80".into(),
                "203.0.113.10:443".into(),
                "10.0.0.0/8".into(),
            ],
        };
        let dests = n.resolve(&r).unwrap();
        assert_eq!(dests.len(), 3);
        assert_eq!(
            n.guest_allow(&dests),
            ["10.0.0.0/8", "198.51.100.53/32", "203.0.113.10/32"]
        );
        assert!(n.guest_allow(&[]).is_empty(), "open stays open");
        // Entries overlapping the VM pool are refused: other VMs are always denied.
        let r = NetRequest {
            outbound: true,
            allow: vec!["172.30.0.0/24".into()],
        };
        assert!(matches!(
            n.resolve(&r),
            Err(NetError::BadAllow {
                kind: AllowError::AlwaysDenied(_),
                ..
            })
        ));
        let wide = NetRequest {
            outbound: true,
            allow: vec!["172.16.0.0/12".into()],
        };
        assert_eq!(n.resolve(&wide).unwrap().len(), 1);
    }
}
