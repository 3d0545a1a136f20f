//! Egress policy, end to end through a real TAP, veth, routing, NAT and nftables, all inside
//! namespaces each test creates (see `support`). No traffic leaves those namespaces.

mod support;

use std::net::Ipv4Addr;

use hearth_net::{NetError, NetRequest};
use support::servers::{self, in_ns};
use support::*;

fn req(allow: &[&str]) -> NetRequest {
    NetRequest {
        outbound: true,
        allow: allow.iter().map(|s| s.to_string()).collect(),
    }
}

fn reaches(ns: &str, a: Ipv4Addr, port: u16) -> bool {
    tcp_fetch(ns, a, port).is_some()
}

#[test]
fn open_outbound_reaches_internet_through_nat_and_nothing_denied() {
    let mut w = World::new();
    let g = w.guest("vma", &req(&[]));
    let other = w.guest("vmb", &req(&[]));
    // Servers on the "host" (uplink), inside A's own VM namespace, and in guest B.
    let _host_srv = Servers::start(&w.host, &[]);
    let _vmns_srv = Servers::start(&g.info.netns, &[]);
    let _b_srv = Servers::start(&other.ns, &[other.info.guest.addr]);

    let banner = tcp_fetch(&g.ns, WEB, 80).expect("internet reachable");
    assert!(
        banner.starts_with(&format!("{WEB}:80 {HOST_WAN}:")),
        "server should see the uplink's masqueraded address: {banner}"
    );
    assert!(reaches(&g.ns, OTHER, 443));
    assert!(udp_fetch(&g.ns, OTHER, 5353).is_some(), "UDP goes out too");

    // Controls first: each denied target is up and reachable from elsewhere.
    assert!(reaches(&w.host, METADATA, 80) && reaches(&w.host, PRIVATE_SRV, 80));
    assert!(reaches(&w.inet, HOST_WAN, 7000));
    assert!(reaches(&other.ns, other.info.guest.addr, 7000));
    assert!(in_ns(&g.info.netns, || std::net::TcpStream::connect((
        "127.0.0.1",
        7000
    ))
    .is_ok()));

    let denied = [
        (METADATA, "metadata 169.254.169.254"),
        (PRIVATE_SRV, "private 10/8 not listed"),
        (HOST_WAN, "the host's other interface"),
        (g.subnet.uplink_addr(), "the host's end of the VM link"),
        (g.info.guest.gateway, "the VM namespace itself"),
        (g.subnet.transit_addr(), "the VM namespace's uplink end"),
        (other.info.guest.addr, "another VM"),
        (other.subnet.uplink_addr(), "another VM's link on the host"),
    ];
    for (a, what) in denied {
        assert!(!reaches(&g.ns, a, 7000), "{what} ({a}) must be unreachable");
    }
    assert!(udp_fetch(&g.ns, METADATA, 53).is_none());
    assert!(udp_fetch(&g.ns, PRIVATE_SRV, 5353).is_none());
}

#[test]
fn allowlist_limits_destinations_and_changes_while_running() {
    let mut w = World::new();
    let g = w.guest("vm1", &req(&["203.0.113.10:80"]));
    assert!(reaches(&g.ns, WEB, 80));
    assert!(!reaches(&g.ns, WEB, 443), "port not listed");
    assert!(!reaches(&g.ns, OTHER, 80), "address not listed");
    assert!(udp_fetch(&g.ns, WEB, 5353).is_none());
    assert!(
        udp_fetch(&g.ns, DNS, 53).is_some(),
        "the VM's resolver is always allowed"
    );
    assert!(udp_fetch(&g.ns, DNS, 5353).is_none(), "but only on port 53");

    let updated = w
        .net
        .update_allowlist("vm1", g.subnet, &req(&["203.0.113.20/32", "10.99.0.10:80"]))
        .unwrap();
    assert_eq!(updated.len(), 2);
    assert!(reaches(&g.ns, OTHER, 80) && reaches(&g.ns, OTHER, 443));
    assert!(udp_fetch(&g.ns, OTHER, 5353).is_some());
    assert!(
        !reaches(&g.ns, WEB, 80),
        "removed entry takes effect at once"
    );
    assert!(
        reaches(&g.ns, PRIVATE_SRV, 80),
        "a private address listed explicitly"
    );
    assert!(!reaches(&g.ns, PRIVATE_SRV, 443));
    assert!(!reaches(&g.ns, METADATA, 80));

    // Refused updates leave the running rules as they were.
    for bad in ["169.254.169.254", "172.30.0.0/24", "nope"] {
        let r = w.net.update_allowlist("vm1", g.subnet, &req(&[bad]));
        assert!(matches!(r, Err(NetError::BadAllow { .. })), "{bad}: {r:?}");
    }
    assert!(reaches(&g.ns, OTHER, 80));
    let rules = w.net.rules("vm1").unwrap();
    assert!(rules.contains("203.0.113.20") && !rules.contains("203.0.113.10"));
}

#[test]
fn no_ipv6_anywhere_near_the_vm() {
    let mut w = World::new();
    let g = w.guest("v6", &req(&[]));
    let ns = g.info.netns.as_str();
    let v6 = sh(&["ip", "-n", ns, "-6", "addr", "show"]);
    assert!(
        v6.trim().is_empty(),
        "VM namespace has IPv6 addresses: {v6}"
    );
    let v = sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "sysctl",
        "-n",
        "net.ipv6.conf.all.disable_ipv6",
    ]);
    assert_eq!(v.trim(), "1");
    // Even a guest that configures IPv6 itself finds nothing to talk to on the link, and the
    // host-side policy drops every non-IPv4 packet from the VM before any allow rule.
    let tap = sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "sysctl",
        "-n",
        "net.ipv6.conf.tap0.disable_ipv6",
    ]);
    assert_eq!(tap.trim(), "1");
    assert!(w
        .net
        .rules("v6")
        .unwrap()
        .contains("meta nfproto != ipv4 drop"));
}

#[test]
fn listing_private_ranges_never_opens_other_vms_or_the_host() {
    let mut w = World::new();
    let b = w.guest("vmb", &req(&[]));
    let a = w.guest("vma", &req(&["172.16.0.0/12", "10.0.0.0/8"]));
    let _b_srv = Servers::start(&b.ns, &[]);
    let _host_srv = Servers::start(&w.host, &[]);
    assert!(
        reaches(&a.ns, PRIVATE_SRV, 80),
        "the listed private range works"
    );
    assert!(reaches(&b.ns, b.info.guest.addr, 7000), "B's server is up");
    assert!(
        !reaches(&a.ns, b.info.guest.addr, 7000),
        "the pool stays denied"
    );
    assert!(!reaches(&a.ns, b.subnet.uplink_addr(), 7000));
    assert!(
        !reaches(&a.ns, a.subnet.uplink_addr(), 7000),
        "the host stays denied"
    );
    assert!(!reaches(&a.ns, WEB, 80), "not listed");
}

/// Conntrack entries outlive a destroyed VM. The next VM on the same addresses must not
/// receive the late packets of the previous tenant's connections. Two walls stop them: the
/// uplink accepts replies only on connections carrying this VM's conntrack mark, and the new
/// VM namespace's guard has no conntrack entry for them (each was checked alone by removing
/// the other).
#[test]
fn a_reused_address_gets_none_of_the_previous_vms_traffic() {
    use std::io::{ErrorKind, Read, Write};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let mut w = World::new();
    // A server that keeps pushing data on one connection and reports how it ended.
    let (done_tx, done_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let inet = w.inet.clone();
    let pusher = std::thread::spawn(move || {
        servers::enter(&inet);
        let l = std::net::TcpListener::bind((WEB, 9000)).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let end = Instant::now() + Duration::from_secs(30);
        let verdict = loop {
            if stop_rx.try_recv().is_ok() || Instant::now() > end {
                break None;
            }
            match s.write(&[7u8; 512]) {
                Err(e)
                    if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) =>
                {
                    break Some(e.kind())
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        done_tx.send(verdict).unwrap();
    });

    let old = w.guest("old", &req(&[]));
    let conn = servers::in_ns(&old.ns, || {
        let mut c = std::net::TcpStream::connect((WEB, 9000)).unwrap();
        let mut b = [0u8; 512];
        c.read_exact(&mut b).unwrap();
        c // kept open: the "VM" vanishes without closing it
    });
    w.net.teardown("old").unwrap();
    let new = w.guest_at("new", old.subnet, &req(&[]));
    // The server retransmits for a while; a new VM that got those segments would answer RST.
    std::thread::sleep(Duration::from_secs(4));
    let rx = sh(&["ip", "-n", &new.ns, "-s", "-j", "link", "show", "eth0"]);
    stop_tx.send(()).unwrap();
    let verdict = done_rx.recv().unwrap();
    pusher.join().unwrap();
    drop(conn);
    assert_eq!(
        verdict, None,
        "the new VM received the old VM's connection and reset it"
    );
    let v: serde_json::Value = serde_json::from_str(&rx).unwrap();
    assert_eq!(
        v[0]["stats64"]["rx"]["packets"], 0,
        "nothing reached the new VM: {rx}"
    );
}
