//! Pause / resume on both backends, and Firecracker memory snapshots: VMs restored from
//! one snapshot resume its memory and disk, each on its own disk copy. Under QEMU the
//! snapshot calls must refuse with the reason (vhost-user-vsock cannot be saved).
mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{boot, reap, sh, spec};
use hearth_vmm::{Error, VmmKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_freezes_the_guest_and_resume_lets_it_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let vm = boot(&spec(tmp.path(), "pause")).await;
    let _reap = reap(&vm);
    assert!(!vm.is_paused().await.unwrap());
    vm.pause().await.unwrap();
    assert!(vm.is_paused().await.unwrap());
    vm.pause().await.expect("pausing a paused VM is a no-op");

    // A request sent while paused gets no answer until the guest runs again.
    let agent = vm.agent();
    let pending = tokio::spawn(async move {
        agent
            .exec(&hearth_proto::ExecRequest {
                cmd: "echo after-resume".into(),
                timeout_ms: Some(30_000),
                ..Default::default()
            })
            .await
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!pending.is_finished(), "a paused guest answered");
    vm.resume().await.unwrap();
    assert!(!vm.is_paused().await.unwrap());
    vm.resume().await.expect("resuming a running VM is a no-op");
    let r = pending
        .await
        .unwrap()
        .expect("the request completes after resume");
    assert_eq!(r.stdout, "after-resume\n");

    // Stop is legal while paused (it resumes first, so the guest can flush).
    assert_eq!(sh(&vm, "echo kept > /workspace/kept").await.0, 0);
    vm.pause().await.unwrap();
    vm.stop(Duration::from_secs(5)).await.unwrap();
    assert!(!vm.is_alive());
    assert!(matches!(vm.pause().await, Err(Error::NotRunning { .. })));
    assert!(matches!(vm.resume().await, Err(Error::NotRunning { .. })));
    vm.destroy().await.unwrap();
}

fn figure(line: &str) {
    // stderr directly: the harness hides eprintln! output of passing tests.
    let _ = writeln!(std::io::stderr(), "figures: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_restore_memory_and_disk_into_independent_vms() {
    let tmp = tempfile::tempdir().unwrap();
    let vmm = hearth_vmm::select_from_env().unwrap();
    let cold_started = Instant::now();
    let src = boot(&spec(tmp.path(), "snapsrc")).await;
    let cold = cold_started.elapsed();
    let _reap_src = reap(&src);
    let snap_dir = tmp.path().join("snap");

    if vmm.kind() == VmmKind::Qemu {
        let e = src.snapshot(&snap_dir).await.unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("vhost-user-vsock"), "{e}");
        let fake = hearth_vmm::Snapshot {
            dir: snap_dir.clone(),
            source_id: "x".into(),
            had_net: false,
        };
        let e = vmm
            .restore(&spec(tmp.path(), "r"), &fake)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        assert!(src.is_alive() && !src.is_paused().await.unwrap());
        src.destroy().await.unwrap();
        return;
    }

    let (_, boot_id) = sh(&src, "cat /proc/sys/kernel/random/boot_id").await;
    assert_eq!(
        sh(&src, "echo before > /workspace/before && sync").await.0,
        0
    );
    let snap = src.snapshot(&snap_dir).await.unwrap();
    assert!(!src.is_paused().await.unwrap(), "left running as found");
    // The source goes on, and its later writes are not in the snapshot.
    assert_eq!(sh(&src, "echo later > /workspace/later && sync").await.0, 0);
    src.destroy().await.unwrap();

    let snap = hearth_vmm::Snapshot::open(&snap.dir).unwrap();
    let mut restored = Vec::new();
    for id in ["r1", "r2"] {
        let s = spec(tmp.path(), id);
        let t = Instant::now();
        let vm = vmm.restore(&s, &snap).await.expect("restore");
        let _reap = reap(&vm);
        vm.wait_agent(common::BOOT_TIMEOUT)
            .await
            .expect("agent after restore");
        figure(&format!(
            "{id}: restore to agent ready {} ms (cold boot to agent ready {} ms, same run)",
            t.elapsed().as_millis(),
            cold.as_millis()
        ));
        restored.push((vm, _reap));
    }
    for (vm, _) in &restored {
        // Same memory: the kernel's boot id survives, so this is no cold boot.
        assert_eq!(
            sh(vm, "cat /proc/sys/kernel/random/boot_id").await.1,
            boot_id
        );
        assert_eq!(sh(vm, "cat /workspace/before").await.1, "before\n");
        assert_ne!(sh(vm, "test -e /workspace/later").await.0, 0);
    }
    // Each restored VM writes its own disk copy.
    let (a, b) = (&restored[0].0, &restored[1].0);
    assert_ne!(a.overlay_path, b.overlay_path);
    assert_eq!(sh(a, "echo mine > /workspace/mine && sync").await.0, 0);
    assert_ne!(sh(b, "test -e /workspace/mine").await.0, 0);
    for (vm, _reap) in restored {
        vm.destroy().await.unwrap();
    }
    assert!(
        snap.overlay().exists(),
        "destroying restored VMs leaves the snapshot"
    );
}
