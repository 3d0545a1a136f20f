//! A throw-away "host + internet" for networked VMs, in namespaces this test creates and
//! always removes (a minimal copy of hearth-net's `tests/support`):
//!
//! ```text
//! VM ns (the server's setup) --veth-- "<p>host" (HEARTH_NET_UPLINK) --veth-- "<p>inet"
//!                                      wan0 198.18.0.1/30                   wan0 198.18.0.2/30
//!                                      TCP :7000 (must stay unreachable)    lo: 203.0.113.10, .20,
//!                                                                           198.51.100.53, 169.254.169.254
//! ```
//! Servers answer `"<local addr> <peer addr>\n"`, then count what the client sends.

#![allow(dead_code)]

pub mod server;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hearth_net::{NetConfig, Network, Uplink};

pub const WEB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const OTHER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
pub const DNS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
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

/// Namespaces whose name starts with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    sh(&["ip", "netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

/// Owns the namespaces and servers; `Drop` removes all of it even after a panic. Drop it
/// after the server and the VMs are dead (a live VMM keeps its namespace alive).
pub struct FakeNet {
    /// `HEARTH_NET_PREFIX` of the server under test; unique per test.
    pub prefix: String,
    pub host: String,
    pub inet: String,
    /// Same config as the server's: lets the test list and remove what the server made.
    pub net: Network,
    pub transfers: Arc<Mutex<Vec<(u64, f64)>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeNet {
    pub fn new() -> FakeNet {
        static N: AtomicU32 = AtomicU32::new(0);
        // Fixed width, so no test's prefix is a prefix of another's.
        let prefix = format!(
            "s{:05}x{:02}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::Relaxed) % 100
        );
        let (host, inet) = (format!("{prefix}host"), format!("{prefix}inet"));
        let cfg = NetConfig::new(
            "172.30.0.0/16".parse().unwrap(),
            Uplink::Netns(host.clone()),
            DNS,
            &prefix,
        )
        .unwrap();
        let mut w = FakeNet {
            prefix,
            host,
            inet,
            net: Network::new(cfg),
            transfers: Default::default(),
            stop: Default::default(),
            threads: vec![],
        };
        let (h, i) = (w.host.clone(), w.inet.clone());
        sh(&["ip", "netns", "add", &h]);
        sh(&["ip", "netns", "add", &i]);
        sh(&[
            "ip", "-n", &h, "link", "add", "wan0", "type", "veth", "peer", "name", "wan0", "netns",
            &i,
        ]);
        let mut host_cmds = vec![
            "link set lo up".to_string(),
            format!("addr add {HOST_WAN}/30 dev wan0"),
            "link set wan0 up".into(),
            format!("route add default via {INET_WAN}"),
        ];
        let mut inet_cmds = vec![
            "link set lo up".to_string(),
            format!("addr add {INET_WAN}/30 dev wan0"),
            "link set wan0 up".into(),
        ];
        for a in [WEB, OTHER, DNS, METADATA] {
            inet_cmds.push(format!("addr add {a}/32 dev lo"));
        }
        for (ns, cmds) in [(&h, &mut host_cmds), (&i, &mut inet_cmds)] {
            for l in cmds.iter() {
                let mut args = vec!["ip", "-n", ns.as_str()];
                args.extend(l.split_whitespace());
                sh(&args);
            }
        }
        // 53 on every internet address: TCP to the resolver is DNS too (and to others not).
        for (ns, port) in [(&i, 53), (&i, 80), (&i, 443), (&i, 7000), (&h, 7000)] {
            w.serve(ns, port);
        }
        w
    }

    /// A TCP server on 0.0.0.0:`port` inside `ns` (it replies from the address dialled).
    fn serve(&mut self, ns: &str, port: u16) {
        let (ns, stop, log) = (ns.to_string(), self.stop.clone(), self.transfers.clone());
        let (tx, rx) = mpsc::channel();
        self.threads.push(std::thread::spawn(move || {
            enter(&ns);
            let l = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).unwrap();
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut s, peer)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let local = s.local_addr().unwrap();
                let _ = s.set_nonblocking(false);
                let _ = s.write_all(format!("{local} {peer}\n").as_bytes());
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let mut buf = vec![0u8; 1 << 16];
                let (mut bytes, mut first, mut last) = (0u64, None, Instant::now());
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    last = Instant::now();
                    first.get_or_insert(last);
                    bytes += n as u64;
                }
                if let Some(f) = first {
                    log.lock().unwrap().push((bytes, (last - f).as_secs_f64()));
                }
            }
        }));
        rx.recv_timeout(Duration::from_secs(10)).expect("bound");
    }

    /// Env for `hearth serve` so its VMs use this world.
    pub fn server_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HEARTH_NET_UPLINK", self.host.clone()),
            ("HEARTH_NET_PREFIX", self.prefix.clone()),
            ("HEARTH_NET_DNS", DNS.to_string()),
        ]
    }

    /// Namespaces, VM tables and veths of VMs the server made (empty = nothing leaked).
    pub fn leftovers(&self) -> Vec<String> {
        let vm_ns = format!("{}-", self.prefix);
        let mut left: Vec<String> = netns_with_prefix(&vm_ns);
        let tables = sh(&["ip", "netns", "exec", &self.host, "nft", "list", "tables"]);
        let vm_table = format!("{}_vm_", self.prefix);
        left.extend(
            tables
                .lines()
                .filter(|t| t.contains(&vm_table))
                .map(String::from),
        );
        let links = sh(&["ip", "-n", &self.host, "-o", "link", "show", "type", "veth"]);
        left.extend(
            links
                .lines()
                .filter(|l| !l.contains(" wan0@"))
                .map(String::from),
        );
        left
    }
}

fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).expect("namespace exists");
    // SAFETY: setns on a valid namespace fd changes only the calling thread's namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

impl Drop for FakeNet {
    fn drop(&mut self) {
        // Sockets keep a namespace alive after its name is gone: stop the servers first.
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = self.net.reconcile(&[]);
        let _ = self.net.remove_uplink_rules();
        for ns in netns_with_prefix(&self.prefix) {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}
