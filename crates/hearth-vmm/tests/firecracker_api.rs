//! Configures a real Firecracker through its API (boot source, drives, machine config,
//! vsock, a network interface inside a netns, InstanceStart). Needs a `firecracker`
//! binary (PATH or HEARTH_FIRECRACKER_BIN); runs with HEARTH_FORCE_KVM semantics, so on a
//! PVM host the API path is checked even though the guest then dies.
mod common;

use std::process::Command;
use std::time::Duration;

use hearth_vmm::{NetAttachment, Selection, VmmKind};

struct Netns(String);
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) {
    let ok = Command::new("ip").args(args).status().unwrap().success();
    assert!(ok, "ip {args:?}");
}

/// Says why a test does nothing. Written to stderr directly, not with `eprintln!`, which
/// the test harness captures and hides for passing tests: CI must show the reason.
fn skip(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipping: {why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firecracker_accepts_the_whole_configuration() {
    let fc = Selection::from_env()
        .unwrap()
        .firecracker_bin
        .or_else(|| hearth_vmm::detect::find_binary(hearth_vmm::detect::FIRECRACKER));
    let Some(fc) = fc else {
        skip("firecracker binary not found on PATH");
        return;
    };
    if !std::path::Path::new("/dev/kvm").exists() {
        skip("/dev/kvm not found (firecracker needs it even when forced)");
        return;
    }
    let ns = Netns(format!("hvmm-fc-{}", std::process::id()));
    ip(&["netns", "add", &ns.0]);
    ip(&["-n", &ns.0, "tuntap", "add", "dev", "tap0", "mode", "tap"]);

    let tmp = tempfile::tempdir().unwrap();
    let mut spec = common::spec(tmp.path(), "fc");
    spec.net = Some(NetAttachment {
        tap: "tap0".into(),
        netns: Some(ns.0.clone()),
        mac: "06:00:ac:1f:fb:02".into(),
        guest: "172.31.251.2/30,172.31.251.1,172.31.251.1".parse().unwrap(),
    });
    let sel = Selection {
        vmm: Some(VmmKind::Firecracker),
        firecracker_bin: Some(fc),
        force_kvm: true,
        ..Default::default()
    };
    let vmm = hearth_vmm::select(&sel).unwrap();
    assert_eq!(vmm.kind(), VmmKind::Firecracker);
    // start() returns only after every PUT, InstanceStart included, got a 2xx.
    let vm = vmm
        .start(&spec)
        .await
        .expect("firecracker took the configuration");
    assert!(vm.api_socket.as_ref().unwrap().exists());
    // Where KVM works the guest boots; on PVM it dies after InstanceStart. Either way
    // stop and destroy must leave nothing behind.
    vm.stop(Duration::from_secs(1)).await.unwrap();
    assert!(!vm.is_alive());
    vm.destroy().await.unwrap();
    assert!(!tmp.path().join("fc").exists());
}

/// Same through the jailer (chroot, uid/gid 65534). Needs `jailer` too and a statically
/// linked firecracker (the chroot holds no libraries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jailed_firecracker_accepts_the_configuration() {
    let env = Selection::from_env().unwrap();
    let fc = env
        .firecracker_bin
        .or_else(|| hearth_vmm::detect::find_binary(hearth_vmm::detect::FIRECRACKER));
    let jailer = env
        .jailer_bin
        .or_else(|| hearth_vmm::detect::find_binary("jailer"));
    let (Some(fc), Some(jailer)) = (fc, jailer) else {
        skip("firecracker and jailer binaries not both found on PATH");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let spec = common::spec(tmp.path(), "jailed");
    let sel = Selection {
        vmm: Some(VmmKind::Firecracker),
        firecracker_bin: Some(fc),
        jailer_bin: Some(jailer),
        jailer_uid_gid: Some((65534, 65534)),
        force_kvm: true,
        ..Default::default()
    };
    let vm = hearth_vmm::select(&sel)
        .unwrap()
        .start(&spec)
        .await
        .expect("jailed firecracker took the configuration");
    assert!(vm.vsock_path.starts_with(tmp.path().join("jailed/jail")));
    vm.stop(Duration::from_secs(1)).await.unwrap();
    vm.destroy().await.unwrap();
    assert!(!tmp.path().join("jailed").exists());
}
