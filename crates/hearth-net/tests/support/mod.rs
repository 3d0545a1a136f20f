//! A throw-away world per test, all in namespaces the test creates and always removes:
//!
//! ```text
//! fake guest ns --tap/tap bridge-- VM ns (setup) --veth-- "host" ns (uplink) --veth-- "internet" ns
//!   eth0 172.30.x.2                tap0 / up0              hv..  wan0 198.18.0.1     198.18.0.2
//!                                                                                   lo: 203.0.113.10, .20,
//!                                                                                   198.51.100.53, 10.99.0.10,
//!                                                                                   169.254.169.254
//! ```
//! The fake guest is a real kernel stack behind a real TAP: a thread copies frames between
//! the VM namespace's `tap0` (exactly what the VMM opens) and a TAP in the guest namespace.

#![allow(dead_code, unused_imports)]

pub mod bridge;
pub mod servers;
pub mod vm;

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use hearth_net::{NetAttachmentInfo, NetConfig, NetRequest, Network, Subnet, Uplink};

pub use bridge::TapBridge;
pub use servers::{tcp_fetch, udp_fetch, Servers};

pub const WEB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const OTHER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
pub const DNS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
pub const PRIVATE_SRV: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
pub const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const HOST_WAN: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const INET_WAN: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    // Fixed width, so no test's prefix is a prefix of another's.
    format!(
        "t{:05}x{:02}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed) % 100
    )
}

/// Every namespace whose name starts with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    sh(&["ip", "netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

#[derive(Debug, Clone)]
pub struct Guest {
    /// The fake guest's namespace (where the "guest" runs clients).
    pub ns: String,
    pub info: NetAttachmentInfo,
    pub subnet: Subnet,
}

/// Owns everything; `Drop` removes all of it even when the test panicked.
pub struct World {
    pub prefix: String,
    pub host: String,
    pub inet: String,
    pub net: Network,
    pub servers: Option<Servers>,
    pub guests: Vec<Guest>,
    bridges: Vec<TapBridge>,
}

impl World {
    pub fn new() -> World {
        let prefix = unique_prefix();
        let host = format!("{prefix}host");
        let inet = format!("{prefix}inet");
        let cfg = NetConfig::new(
            "172.30.0.0/16".parse().unwrap(),
            Uplink::Netns(host.clone()),
            DNS,
            &prefix,
        )
        .unwrap();
        // Build the guard first so a failure below still cleans up.
        let mut w = World {
            prefix,
            host,
            inet,
            net: Network::new(cfg),
            servers: None,
            guests: vec![],
            bridges: vec![],
        };
        let (h, i) = (w.host.as_str(), w.inet.as_str());
        sh(&["ip", "netns", "add", h]);
        sh(&["ip", "netns", "add", i]);
        sh(&[
            "ip", "-n", h, "link", "add", "wan0", "type", "veth", "peer", "name", "wan0", "netns",
            i,
        ]);
        let batch = |ns: &str, lines: &[String]| {
            for l in lines {
                let mut args = vec!["ip", "-n", ns];
                args.extend(l.split_whitespace());
                sh(&args);
            }
        };
        batch(
            h,
            &[
                "link set lo up".into(),
                format!("addr add {HOST_WAN}/30 dev wan0"),
                "link set wan0 up".into(),
                format!("route add default via {INET_WAN}"),
            ],
        );
        let mut lines = vec![
            "link set lo up".to_string(),
            format!("addr add {INET_WAN}/30 dev wan0"),
            "link set wan0 up".into(),
        ];
        for a in [WEB, OTHER, DNS, PRIVATE_SRV, METADATA] {
            lines.push(format!("addr add {a}/32 dev lo"));
        }
        batch(i, &lines);
        w.servers = Some(Servers::start(
            &w.inet,
            &[WEB, OTHER, DNS, PRIVATE_SRV, METADATA],
        ));
        w
    }

    /// A networked VM (`setup`) plus a fake guest attached to its TAP.
    pub fn guest(&mut self, vm: &str, req: &NetRequest) -> Guest {
        let used: Vec<Subnet> = self.guests.iter().map(|g| g.subnet).collect();
        let subnet = self.net.config().pool.allocate(&used).unwrap();
        self.guest_at(vm, subnet, req)
    }

    /// Same on a given block (to reuse a torn-down VM's addresses).
    pub fn guest_at(&mut self, vm: &str, subnet: Subnet, req: &NetRequest) -> Guest {
        let info = self.net.setup(vm, subnet, req).unwrap();
        let g = Guest {
            ns: format!("{}g{}", self.prefix, self.guests.len()),
            info,
            subnet,
        };
        sh(&["ip", "netns", "add", &g.ns]);
        self.guests.push(g.clone());
        self.bridges
            .push(TapBridge::start(&g.info.netns, &g.info.tap, &g.ns, "eth0"));
        let gn = g.info.guest;
        for l in [
            format!("link set eth0 address {}", g.info.mac),
            "link set lo up".into(),
            format!("addr add {}/{} dev eth0", gn.addr, gn.prefix),
            "link set eth0 up".into(),
            format!("route add default via {}", gn.gateway),
        ] {
            let mut args = vec!["ip", "-n", g.ns.as_str()];
            args.extend(l.split_whitespace());
            sh(&args);
        }
        g
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Order matters: open fds and sockets keep a namespace alive after its name is gone.
        self.bridges.clear();
        self.servers.take();
        let _ = self.net.reconcile(&[]);
        let _ = self.net.remove_uplink_rules();
        for ns in netns_with_prefix(&self.prefix) {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}
