//! Creation, teardown and crash reconciliation leave nothing behind.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use hearth_net::{NetConfig, NetError, NetRequest, Network, Uplink};
use support::*;

/// Server VM ids are UUIDv4s; use that shape where names are derived from them.
const CRASH1: &str = "0f3e1c2a-9b7d-4e2f-8a61-3c5d7e9f1a2b";
const CRASH2: &str = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

fn open() -> NetRequest {
    NetRequest {
        outbound: true,
        allow: vec![],
    }
}

/// Every trace of `vm` this crate could have left in the world.
fn traces(w: &World, vm: &str) -> Vec<String> {
    let mut t = vec![];
    let ns = w.net.netns_name(vm);
    if netns_with_prefix(&w.prefix).contains(&ns) {
        t.push(format!("netns {ns}"));
    }
    let tables = sh(&["ip", "netns", "exec", &w.host, "nft", "list", "tables"]);
    if tables.contains(&w.net.table_name(vm)) {
        t.push(format!("table {}", w.net.table_name(vm)));
    }
    let links = sh(&["ip", "-n", &w.host, "-o", "link", "show", "type", "veth"]);
    if links.contains(&ns) {
        t.push(format!("veth with alias {ns}"));
    }
    t
}

#[test]
fn no_nic_unless_outbound() {
    let w = World::new();
    let subnet = w.net.config().pool.allocate(&[]).unwrap();
    let r = w.net.setup("quiet", subnet, &NetRequest::default());
    assert!(matches!(r, Err(NetError::BadConfig(_))), "{r:?}");
    assert!(w.net.list_owned().unwrap().is_empty());
    assert!(traces(&w, "quiet").is_empty());
}

#[test]
fn teardown_and_reconcile_leave_nothing() {
    let mut w = World::new();
    let a = w.guest("vma", &open());
    let b = w.guest("vmb", &open());
    assert_ne!(a.info.guest.addr, b.info.guest.addr);
    assert_ne!(a.info.mac, b.info.mac);
    assert!(reaches_web(&b.ns));

    // One block can never serve two VMs, even if the caller's bookkeeping is wrong.
    let r = w.net.setup("vmc", a.subnet, &open());
    assert!(matches!(r, Err(NetError::AddressInUse(..))), "{r:?}");
    assert!(
        traces(&w, "vmc").is_empty(),
        "a refused setup leaves nothing"
    );
    assert!(reaches_web(&a.ns), "and does not disturb the owner");

    assert_eq!(w.net.list_owned().unwrap(), ["vma", "vmb"]);
    assert!(!traces(&w, "vma").is_empty());
    w.net.teardown("vma").unwrap();
    assert!(traces(&w, "vma").is_empty(), "{:?}", traces(&w, "vma"));
    w.net.teardown("vma").unwrap(); // idempotent
    assert_eq!(w.net.list_owned().unwrap(), ["vmb"]);
    assert!(reaches_web(&b.ns), "other VMs keep working");

    assert!(w.net.reconcile(&["vmb"]).unwrap().is_empty());
    assert_eq!(w.net.reconcile(&[]).unwrap(), ["vmb"]);
    assert!(traces(&w, "vmb").is_empty());
    assert!(w.net.list_owned().unwrap().is_empty());
}

fn reaches_web(ns: &str) -> bool {
    tcp_fetch(ns, WEB, 80).is_some()
}

#[test]
fn reconcile_after_sigkill_of_the_owner() {
    let w = World::new();
    let Uplink::Netns(host) = &w.net.config().uplink else {
        unreachable!()
    };
    // A separate process sets up two VMs' networking and is then killed without warning.
    let mut kids = vec![];
    for (vm, subnet) in [(CRASH1, "172.30.0.0/29"), (CRASH2, "172.30.0.8/29")] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hearth-netctl"))
            .args(["setup", vm, subnet, "--hold", "203.0.113.10:80"])
            .env("HEARTH_NET_UPLINK", host)
            .env("HEARTH_NET_PREFIX", &w.prefix)
            .env("HEARTH_NET_DNS", DNS.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready "), "{line:?}");
        kids.push(child);
    }
    for mut k in kids {
        k.kill().unwrap(); // SIGKILL
        k.wait().unwrap();
    }
    // A "restarted server": a fresh Network from the same config; it knows CRASH2 only.
    let restarted = Network::new(w.net.config().clone());
    assert_eq!(restarted.list_owned().unwrap(), [CRASH1, CRASH2]);
    assert_eq!(restarted.reconcile(&[CRASH2]).unwrap(), [CRASH1]);
    assert!(traces(&w, CRASH1).is_empty());
    assert!(!traces(&w, CRASH2).is_empty(), "a known VM is kept");
    assert_eq!(restarted.reconcile(&[]).unwrap(), [CRASH2]);
    assert!(traces(&w, CRASH2).is_empty());
}

#[test]
fn probe_reports_what_blocks_networking() {
    let w = World::new();
    let p = w.net.probe();
    assert!(p.ok(), "{p:?}");
    // A Docker-style forward chain with policy drop in the uplink breaks VM traffic.
    let ruleset = "table ip other {\n  chain blocker {\n    type filter hook forward priority 0; policy drop;\n  }\n}\n";
    let mut nft = Command::new("ip")
        .args(["netns", "exec", &w.host, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    nft.stdin
        .take()
        .unwrap()
        .write_all(ruleset.as_bytes())
        .unwrap();
    assert!(nft.wait().unwrap().success());
    let p = w.net.probe();
    assert!(!p.ok());
    assert!(
        p.summary().starts_with("forward: ") && p.summary().contains("ip other blocker"),
        "{}",
        p.summary()
    );
    // And a missing uplink namespace is named as such.
    let cfg = NetConfig::new(
        "172.30.0.0/16".parse().unwrap(),
        Uplink::Netns(format!("{}nope", w.prefix)),
        DNS,
        &w.prefix,
    )
    .unwrap();
    let p = Network::new(cfg).probe();
    assert!(p.summary().starts_with("uplink: "), "{}", p.summary());
}
