//! Real VMs under QEMU, attached through `hearth_net::setup` exactly as the VMM backend
//! attaches them (QEMU inside the VM namespace, `-netdev tap,ifname=tap0`). Run with
//! `--nocapture` to see the figures (set-up time, boot time, throughput).

mod support;

use std::time::{Duration, Instant};

use hearth_net::NetRequest;
use support::vm::{probes, Vm};
use support::*;

const BOOT: Duration = Duration::from_secs(180);

fn req(allow: &[&str]) -> NetRequest {
    NetRequest {
        outbound: true,
        allow: allow.iter().map(|s| s.to_string()).collect(),
    }
}

fn banner_of<'a>(p: &'a [(String, String)], name: &str) -> &'a str {
    &p.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no probe {name}: {p:?}"))
        .1
}

#[test]
fn vm_without_network_has_no_nic() {
    let vm = Vm::boot(None, "");
    let lines = vm.until("HEARTH-DONE", BOOT);
    let nics = lines.iter().find(|l| l.starts_with("NICS")).unwrap();
    assert_eq!(nics.trim(), "NICS", "{lines:?}");
}

#[test]
fn vm_reaches_internet_only_where_allowed_and_measures_throughput() {
    let mut w = World::new();
    let other = w.guest("peer", &req(&[]));
    let _peer_srv = Servers::start(&other.ns, &[]);
    let _host_srv = Servers::start(&w.host, &[]);

    let used = vec![other.subnet];
    let subnet = w.net.config().pool.allocate(&used).unwrap();
    let t = Instant::now();
    let info = w.net.setup("qvm", subnet, &req(&[])).unwrap();
    let setup_ms = t.elapsed().as_secs_f64() * 1e3;
    let _vmns_srv = Servers::start(&info.netns, &[]);

    let mb = 32;
    let script = format!(
        "probe web {WEB} 80\n\
         probe meta {METADATA} 80\n\
         probe private {PRIVATE_SRV} 80\n\
         probe host {HOST_WAN} 7000\n\
         probe hostlink {hl} 7000\n\
         probe gw {gw} 7000\n\
         probe peer {peer} 7000\n\
         dd if=/dev/zero bs=64k count={n} 2>/dev/null | nc {OTHER} 7000 >/dev/null\n\
         echo TPUT-DONE\n",
        hl = subnet.uplink_addr(),
        gw = info.guest.gateway,
        peer = other.info.guest.addr,
        n = mb * 16,
    );
    let boot = Instant::now();
    let vm = Vm::boot(Some(&info), &script);
    let lines = vm.until("HEARTH-DONE", BOOT);
    let p = probes(&lines);
    let nics = lines.iter().find(|l| l.starts_with("NICS")).unwrap();
    assert_eq!(nics.trim(), "NICS eth0", "exactly one NIC");
    let web = banner_of(&p, "web");
    assert!(
        web.starts_with(&format!("{WEB}:80 {HOST_WAN}:")),
        "NATed to the internet: {p:?}"
    );
    for denied in ["meta", "private", "host", "hostlink", "gw", "peer"] {
        assert_eq!(
            banner_of(&p, denied),
            "",
            "{denied} must be unreachable: {p:?}"
        );
    }
    // The peer's server is up: it answers its own guest.
    assert!(tcp_fetch(&other.ns, other.info.guest.addr, 7000).is_some());

    let transfers = w
        .servers
        .as_ref()
        .unwrap()
        .transfers
        .lock()
        .unwrap()
        .clone();
    let (bytes, secs) = *transfers
        .iter()
        .find(|(b, _)| *b == mb * 1024 * 1024)
        .unwrap_or_else(|| panic!("{mb} MiB should have arrived: {transfers:?}"));
    eprintln!(
        "FIGURES setup_ms={setup_ms:.1} boot_to_done_s={:.2} tcp_vm_to_internet_MiBps={:.1}",
        boot.elapsed().as_secs_f64(),
        bytes as f64 / 1048576.0 / secs.max(1e-6)
    );
    drop(vm);
    let t = Instant::now();
    w.net.teardown("qvm").unwrap();
    eprintln!("FIGURES teardown_ms={:.1}", t.elapsed().as_secs_f64() * 1e3);
}

#[test]
fn vm_allowlist_changes_while_it_runs() {
    let w = World::new();
    let subnet = w.net.config().pool.allocate(&[]).unwrap();
    let info = w
        .net
        .setup("qallow", subnet, &req(&["203.0.113.10:80"]))
        .unwrap();
    // The guest waits after phase 1 while the host changes its allowlist.
    let script = format!(
        "probe a_web {WEB} 80\nprobe a_web443 {WEB} 443\nprobe a_other {OTHER} 80\n\
         echo PHASE1\nsleep 4\n\
         probe b_web {WEB} 80\nprobe b_other {OTHER} 80\nprobe b_private {PRIVATE_SRV} 80\n"
    );
    let vm = Vm::boot(Some(&info), &script);
    let first = vm.until("PHASE1", BOOT);
    w.net
        .update_allowlist("qallow", subnet, &req(&["203.0.113.20", "10.99.0.10:80"]))
        .unwrap();
    let mut lines = first;
    lines.extend(vm.until("HEARTH-DONE", BOOT));
    let p = probes(&lines);
    assert!(
        banner_of(&p, "a_web").starts_with(&format!("{WEB}:80")),
        "{p:?}"
    );
    assert_eq!(banner_of(&p, "a_web443"), "", "{p:?}");
    assert_eq!(banner_of(&p, "a_other"), "", "{p:?}");
    assert_eq!(banner_of(&p, "b_web"), "", "removed while running: {p:?}");
    assert!(
        banner_of(&p, "b_other").starts_with(&format!("{OTHER}:80")),
        "{p:?}"
    );
    assert!(
        banner_of(&p, "b_private").starts_with(&format!("{PRIVATE_SRV}:80")),
        "{p:?}"
    );
}
