//! A VM with a `NetAttachment`: the VMM runs inside the given network namespace, the TAP
//! becomes the guest's eth0 with the MAC we chose, and `hearth.net=` configures it.
mod common;

use std::process::Command;

use common::{boot, reap, sh, spec};
use hearth_vmm::NetAttachment;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes the namespace (and the TAP in it) even when the test fails.
struct Netns(String);
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vmm_runs_in_the_netns_and_the_guest_gets_its_address() {
    let ns = Netns(format!("hvmm-test-{}", std::process::id()));
    ip(&["netns", "add", &ns.0]);
    ip(&["-n", &ns.0, "tuntap", "add", "dev", "tap0", "mode", "tap"]);
    ip(&["-n", &ns.0, "addr", "add", "172.31.250.1/30", "dev", "tap0"]);
    ip(&["-n", &ns.0, "link", "set", "tap0", "up"]);

    let tmp = tempfile::tempdir().unwrap();
    let mut s = spec(tmp.path(), "net");
    let mac = "06:00:ac:1f:fa:02";
    s.net = Some(NetAttachment {
        tap: "tap0".into(),
        netns: Some(ns.0.clone()),
        mac: mac.into(),
        guest: "172.31.250.2/30,172.31.250.1,172.31.250.1".parse().unwrap(),
    });
    let vm = boot(&s).await;
    let _reap = reap(&vm);

    let vmm_ns = std::fs::read_link(format!("/proc/{}/ns/net", vm.vmm_proc().unwrap().pid));
    let want = std::fs::metadata(format!("/var/run/netns/{}", ns.0)).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        vmm_ns.unwrap().to_string_lossy(),
        format!("net:[{}]", want.ino()),
        "VMM is inside the namespace"
    );
    // The jail has no /sys; `ip` reads the same facts over netlink.
    let (code, out) = sh(&vm, "ip addr show dev eth0").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("link/ether {mac}")), "{out}");
    assert!(out.contains("inet 172.31.250.2/30"), "{out}");
    vm.destroy().await.unwrap();
}
