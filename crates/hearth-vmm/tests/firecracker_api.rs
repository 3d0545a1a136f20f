//! Configures a real Firecracker through its API (boot source, drives, machine config,
//! vsock, InstanceStart). Needs a `firecracker` binary; runs with HEARTH_FORCE_KVM
//! semantics, so on a PVM host the API path is checked even though the guest then dies.
mod common;

use std::time::Duration;

use hearth_vmm::{Selection, VmmKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firecracker_accepts_the_whole_configuration() {
    let Some(fc) = hearth_vmm::detect::find_binary(hearth_vmm::detect::FIRECRACKER) else {
        println!("skipping: firecracker binary not found on PATH");
        return;
    };
    if !std::path::Path::new("/dev/kvm").exists() {
        println!("skipping: /dev/kvm not found (firecracker needs it even when forced)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let spec = common::spec(tmp.path(), "fc");
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
    assert!(
        vm.vmm_proc().unwrap().is_alive(),
        "{}",
        vm.console_tail(2000)
    );
    vm.stop(Duration::from_secs(1)).await.unwrap();
    assert!(!vm.is_alive());
    vm.destroy().await.unwrap();
    assert!(!tmp.path().join("fc").exists());
}
