//! Boots real VMs (QEMU/TCG on hosts without a usable KVM) from the default image and
//! checks the lifecycle promises: agent over vsock, isolated overlays, complete cleanup,
//! crash detection, stop + restart keeping the disk.
mod common;

use std::time::Duration;

use common::{boot, pid_running, reap, sh, spec};
use hearth_vmm::VmHandle;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_answers_health_over_hybrid_vsock() {
    let tmp = tempfile::tempdir().unwrap();
    let vm = boot(&spec(tmp.path(), "health")).await;
    let _reap_vm = reap(&vm);
    let h = vm.agent().health().await.unwrap();
    assert!(!h.version.is_empty());
    // The raw channel: CONNECT/OK handshake to the agent's port.
    hearth_vmm::vsock::connect(&vm.vsock_path, hearth_proto::AGENT_PORT)
        .await
        .unwrap();
    // Nothing listens on another port: the handshake is refused, not hung.
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        hearth_vmm::vsock::connect(&vm.vsock_path, 9999),
    )
    .await
    .expect("refusal is prompt");
    assert!(refused.is_err());
    vm.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_vms_at_once_have_separate_overlays_and_the_base_is_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let (sa, sb) = (spec(tmp.path(), "a"), spec(tmp.path(), "b"));
    let base_mtime = std::fs::metadata(&sa.rootfs).unwrap().modified().unwrap();
    let (a, b) = tokio::join!(boot(&sa), boot(&sb));
    let _reap = (reap(&a), reap(&b));
    assert_ne!(a.overlay_path, b.overlay_path);

    let (code, _) = sh(&a, "echo from-a > /workspace/marker && sync").await;
    assert_eq!(code, 0);
    let (code, out) = sh(&a, "cat /workspace/marker").await;
    assert_eq!((code, out.trim()), (0, "from-a"));
    let (code, _) = sh(&b, "test -e /workspace/marker").await;
    assert_ne!(code, 0, "B must not see A's file");

    a.destroy().await.unwrap();
    b.destroy().await.unwrap();
    // The shared base is attached read-only: never written.
    assert_eq!(
        std::fs::metadata(&sa.rootfs).unwrap().modified().unwrap(),
        base_mtime
    );
    let listing = std::process::Command::new("debugfs")
        .args(["-R", "ls /home/user"])
        .arg(&sa.rootfs)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&listing.stdout).contains("marker"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_leaves_no_process_socket_overlay_or_state_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let vm = boot(&spec(tmp.path(), "gone")).await;
    let _reap_vm = reap(&vm);
    let (pids, dir, overlay) = (
        vm.pids.clone(),
        vm.state_dir.clone(),
        vm.overlay_path.clone(),
    );
    // QEMU runs with a vhost-device-vsock helper; Firecracker serves vsock itself.
    let expected = match vm.kind {
        hearth_vmm::VmmKind::Qemu => 2,
        hearth_vmm::VmmKind::Firecracker => 1,
    };
    assert_eq!(pids.len(), expected, "{:?}: {pids:?}", vm.kind);
    assert!(pids.iter().all(|&p| pid_running(p)));
    assert!(vm.vsock_path.exists() && overlay.exists());
    let sockets = vm.sockets.clone();
    vm.destroy().await.unwrap();
    for p in pids {
        assert!(!pid_running(p), "pid {p} survived destroy");
    }
    for s in sockets {
        assert!(!s.exists(), "{} survived destroy", s.display());
    }
    assert!(!overlay.exists());
    assert!(!dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmm_killed_with_sigkill_is_detected_and_cleaned_up() {
    let tmp = tempfile::tempdir().unwrap();
    let vm = boot(&spec(tmp.path(), "crash")).await;
    let _reap_vm = reap(&vm);
    let vmm = vm.vmm_proc().unwrap().clone();
    // SAFETY: kill(2) with integers only.
    assert_eq!(unsafe { libc::kill(vmm.pid as i32, libc::SIGKILL) }, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while vm.is_alive() {
        assert!(std::time::Instant::now() < deadline, "death not detected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // As a restarted server would see it: from the state dir alone.
    let adopted = VmHandle::adopt(&vm.state_dir).unwrap();
    assert!(!adopted.is_alive());
    assert!(adopted.agent().health().await.is_err());
    let others: Vec<u32> = adopted
        .pids
        .iter()
        .copied()
        .filter(|&p| p != vmm.pid)
        .collect();
    adopted.destroy().await.unwrap();
    for p in others {
        assert!(!pid_running(p), "helper {p} left running");
    }
    assert!(!vm.state_dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_keeps_the_disk_and_a_restart_sees_earlier_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = spec(tmp.path(), "restart");
    let vm = boot(&s).await;
    let _reap_vm = reap(&vm);
    assert_eq!(sh(&vm, "echo kept > /workspace/kept").await.0, 0);
    // A second VMM on the same state dir (and disk) is refused while the first runs.
    let vmm = hearth_vmm::select(&hearth_vmm::Selection::from_env().unwrap()).unwrap();
    let twice = vmm.start(&s).await;
    assert!(twice.is_err(), "second start on a live state dir");
    assert!(vm.is_alive(), "the refused start left the running VM alone");
    vm.stop(Duration::from_secs(5)).await.unwrap();
    assert!(!vm.is_alive());
    assert!(vm.overlay_path.exists() && vm.state_dir.exists());
    if vm.kind == hearth_vmm::VmmKind::Firecracker {
        // Firecracker's Ctrl-Alt-Del reached init, which shut down cleanly (QEMU ends on
        // SIGTERM by itself, after the agent's sync).
        let console = vm.console_tail(4000);
        assert!(
            console.contains("SIGINT received: shutting down"),
            "no clean shutdown: {console}"
        );
    }

    s.overlay = Some(vm.overlay_path.clone());
    let again = boot(&s).await;
    let _reap_again = reap(&again);
    let (code, out) = sh(&again, "cat /workspace/kept").await;
    assert_eq!((code, out.trim()), (0, "kept"));
    again.destroy().await.unwrap();
}
