//! `hearth doctor`'s question: can VM networking be set up here, and if not, why not.
//! The last check really builds a throw-away namespace with a TAP and a table, because
//! "nft is installed" does not prove the kernel has nf_tables or TUN.

use crate::config::Uplink;
use crate::{rules, sys, Network};

/// Serializes as `{"name", "ok", "detail"}` for `hearth doctor --json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Probe {
    pub checks: Vec<Check>,
}

impl Probe {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// One line: "ok" or the first failing check's reason.
    pub fn summary(&self) -> String {
        match self.checks.iter().find(|c| !c.ok) {
            None => "networking can be set up".into(),
            Some(c) => format!("{}: {}", c.name, c.detail),
        }
    }
}

pub(crate) fn run(net: &Network) -> Probe {
    let mut checks = vec![];
    let mut add = |name, r: Result<String, String>| {
        let ok = r.is_ok();
        checks.push(Check {
            name,
            ok,
            detail: r.unwrap_or_else(|e| e),
        });
        ok
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    add(
        "root",
        if euid == 0 {
            Ok("running as root".into())
        } else {
            Err(format!(
                "needs root (CAP_NET_ADMIN) to create namespaces; euid is {euid}"
            ))
        },
    );
    add(
        "tun",
        if std::path::Path::new("/dev/net/tun").exists() {
            Ok("/dev/net/tun present".into())
        } else {
            Err("/dev/net/tun missing (modprobe tun)".into())
        },
    );
    let tools = ["ip", "nft", "sysctl"]
        .iter()
        .find(|t| std::process::Command::new(t).arg("-V").output().is_err())
        .map_or(Ok("ip, nft, sysctl found".into()), |t| {
            Err(format!(
                "{t} not found (apt-get install iproute2 nftables procps)"
            ))
        });
    let tools_ok = add("tools", tools);
    let uplink = match &net.config().uplink {
        Uplink::Host => forward_state(),
        Uplink::Netns(n) if sys::netns_exists(n) => Ok(format!("uplink namespace {n}")),
        Uplink::Netns(n) => Err(format!("uplink namespace {n} does not exist")),
    };
    let uplink_ok = add("uplink", uplink);
    if tools_ok && uplink_ok && euid == 0 {
        add("forward", foreign_forward_drop(net));
    }
    if tools_ok && euid == 0 {
        add("trial", trial(net));
    }
    Probe { checks }
}

fn forward_state() -> Result<String, String> {
    match std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward") {
        Ok(v) if v.trim() == "1" => Ok("host uplink, IPv4 forwarding on".into()),
        Ok(_) => Ok("host uplink; IPv4 forwarding is off and will be turned on".into()),
        Err(e) => Err(format!("cannot read ip_forward: {e}")),
    }
}

/// Another table's forward chain with policy drop (Docker installs one) drops VM traffic
/// whatever our accept says: in nftables every base chain on a hook must accept a packet.
fn foreign_forward_drop(net: &Network) -> Result<String, String> {
    let ns = match &net.config().uplink {
        Uplink::Host => None,
        Uplink::Netns(n) => Some(n.as_str()),
    };
    let out = sys::nft(ns, &["-j", "list", "chains"]).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    let blocking: Vec<String> = v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let c = &o["chain"];
            (c["hook"] == "forward" && c["policy"] == "drop")
                .then(|| format!("{} {} {}", c["family"], c["table"], c["name"]).replace('"', ""))
        })
        .collect();
    if blocking.is_empty() {
        Ok("no other forward chain drops by default".into())
    } else {
        Err(format!(
            "forward chains with policy drop would drop VM traffic: {} (accept iifname/oifname \"hv*\" there)",
            blocking.join(", ")
        ))
    }
}

/// The name cannot collide with a VM's: VM namespaces are `<prefix>-<id>`.
fn trial(net: &Network) -> Result<String, String> {
    let ns = format!("{}.probe{}", net.config().prefix, std::process::id());
    let steps = || -> crate::Result<()> {
        sys::ip(None, &["netns", "add", &ns])?;
        sys::ip(
            Some(&ns),
            &["tuntap", "add", "dev", rules::TAP, "mode", "tap"],
        )?;
        sys::nft_apply(Some(&ns), &rules::guard_table())?;
        sys::sysctl(Some(&ns), &["net.ipv4.ip_forward=1"])
    };
    let r = steps();
    if sys::netns_exists(&ns) {
        let _ = sys::ip(None, &["netns", "del", &ns]);
    }
    r.map(|()| "namespace, TAP, nftables table and forwarding all work".into())
        .map_err(|e| e.to_string())
}
