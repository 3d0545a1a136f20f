//! Shared by the VM tests: the default guest image and booting a VM into a temp dir.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_vmm::{Selection, VmHandle, VmSpec};

pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// `(vmlinux, rootfs.ext4)` of the default image (`HEARTH_TEST_IMAGE` overrides the
/// directory). Missing files fail the test with how to build them: these tests must
/// boot real VMs, never skip.
pub fn image() -> (PathBuf, PathBuf) {
    let dir = std::env::var_os("HEARTH_TEST_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| hearth_image::paths::image_dir("default"));
    let kernel = dir.join("vmlinux");
    let rootfs = dir.join("rootfs.ext4");
    for p in [&kernel, &rootfs] {
        assert!(
            p.exists(),
            "guest image file {} is missing: build it with `bash scripts/build-guest.sh && \
             hearth image build` (scripts/test.sh does both)",
            p.display()
        );
    }
    (kernel, rootfs)
}

pub fn spec(dir: &Path, id: &str) -> VmSpec {
    let (kernel, rootfs) = image();
    VmSpec::new(id, kernel, rootfs, dir.join(id))
}

/// Starts `spec` with the backend the environment selects (QEMU/TCG on PVM hosts) and
/// waits for the agent; panics with the console's end if it does not come up.
pub async fn boot(spec: &VmSpec) -> VmHandle {
    let vmm = hearth_vmm::select(&Selection::from_env().unwrap()).unwrap();
    let vm = vmm.start(spec).await.expect("VMM starts");
    if let Err(e) = vm.wait_agent(BOOT_TIMEOUT).await {
        let console = vm.console_tail(4000);
        let _ = vm.clone().destroy().await;
        panic!(
            "agent of {} not ready: {e}\n--- console ---\n{console}",
            spec.id
        );
    }
    vm
}

/// Runs a shell command in the guest through the agent; returns (exit code, stdout).
pub async fn sh(vm: &VmHandle, cmd: &str) -> (i32, String) {
    let r = vm
        .agent()
        .exec(&hearth_proto::ExecRequest {
            cmd: cmd.into(),
            timeout_ms: Some(30_000),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("exec {cmd:?}: {e}"));
    (r.exit_code, r.stdout)
}

/// True if `pid` still names a live, non-zombie process.
pub fn pid_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s[s.rfind(')').unwrap() + 2..].chars().next().unwrap();
            state != 'Z' && state != 'X'
        }
        Err(_) => false,
    }
}

/// Kills a VM's host processes when dropped, so a test that panics before its
/// `destroy()` cannot leave a VM burning CPU after its temp dir is gone. Harmless after
/// a clean destroy: each process is recognised by pid and start time.
pub struct Reap(Vec<hearth_vmm::process::ProcRecord>);

pub fn reap(vm: &VmHandle) -> Reap {
    Reap(vm.procs.clone())
}

impl Drop for Reap {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_alive() {
                p.signal(libc::SIGKILL);
            }
        }
    }
}
