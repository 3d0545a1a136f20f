//! Pausing, resuming and snapshotting a running VM, for both backends where they can:
//! Firecracker through its API (`PATCH /vm`, `GET /`, `PUT /snapshot/create`); QEMU by
//! stopping its process (SIGSTOP / SIGCONT).
//!
//! Why not QMP `stop`/`cont` for QEMU: `stop` also stops QEMU's vhost-user devices, and
//! `vhost-device-vsock` 0.3 does not come back from that: after `cont` every `CONNECT`
//! on the hybrid socket hangs (seen here with QEMU 7.2). A stopped process freezes the
//! vCPUs and device emulation alike, vhost-device-vsock keeps its rings, and a host
//! `CONNECT` made meanwhile is answered once the process continues.
//!
//! States, as these calls see them: a VM is *running* from `Vmm::start` (or
//! `Vmm::restore`) until `stop`/`destroy` or its VMM dies; while running it is either
//! *active* or *paused*. A paused VM keeps its memory and devices but runs no guest code:
//! its agent does not answer, and its clock does not advance.
use std::path::Path;

use crate::firecracker::{api, snapshot};
use crate::handle::VmHandle;
use crate::process::ProcRecord;
use crate::snapshot::Snapshot;
use crate::{Error, Result, VmmKind};

impl VmHandle {
    /// Freezes the guest's vCPUs. Legal on a running VM, active or already paused (then
    /// a no-op); an error if the VMM is gone. Requests in flight to the agent wait, and
    /// time out by their own limits, until [`Self::resume`]. `stop` and `destroy` stay
    /// legal while paused (`stop` resumes first so the guest can flush its disk).
    pub async fn pause(&self) -> Result<()> {
        let vmm = self.require_alive()?;
        match self.kind {
            VmmKind::Qemu => {
                vmm.signal(libc::SIGSTOP);
                wait_stopped(vmm, true).await
            }
            VmmKind::Firecracker => {
                let api = self.api()?;
                api::patch(
                    api,
                    "/vm",
                    &api::VmState {
                        state: api::VmRunState::Paused,
                    },
                )
                .await
            }
        }
    }

    /// Lets a paused guest run again. Legal on a running VM, paused or already active
    /// (then a no-op); an error if the VMM is gone.
    pub async fn resume(&self) -> Result<()> {
        let vmm = self.require_alive()?;
        match self.kind {
            VmmKind::Qemu => {
                vmm.signal(libc::SIGCONT);
                wait_stopped(vmm, false).await
            }
            VmmKind::Firecracker => {
                let api = self.api()?;
                api::patch(
                    api,
                    "/vm",
                    &api::VmState {
                        state: api::VmRunState::Resumed,
                    },
                )
                .await
            }
        }
    }

    /// Whether the VMM reports the guest paused. Legal on any running VM.
    pub async fn is_paused(&self) -> Result<bool> {
        let vmm = self.require_alive()?;
        match self.kind {
            VmmKind::Qemu => Ok(vmm.is_stopped()),
            VmmKind::Firecracker => {
                let info: api::InstanceInfo = api::get(self.api()?, "/").await?;
                Ok(info.state == "Paused")
            }
        }
    }

    /// Takes a full memory snapshot into `dir` (created), with a copy of the overlay
    /// disk consistent with it; start VMs from it with `Vmm::restore`. Firecracker only
    /// (QEMU: [`Error::Unsupported`], see [`snapshot::QEMU_CANNOT`]). Legal on a running
    /// VM, active or paused; it is paused meanwhile and left as it was found.
    pub async fn snapshot(&self, dir: &Path) -> Result<Snapshot> {
        self.require_alive()?;
        snapshot::create(self, dir).await
    }

    fn require_alive(&self) -> Result<&ProcRecord> {
        match self.vmm_proc() {
            Some(p) if p.is_alive() => Ok(p),
            _ => Err(Error::NotRunning {
                id: self.id.clone(),
            }),
        }
    }

    fn api(&self) -> Result<&Path> {
        self.api_socket.as_deref().ok_or_else(|| {
            Error::BadState(self.state_dir.clone(), "no Firecracker API socket".into())
        })
    }
}

/// Waits until the kernel reports the process stopped (or running again): a stop
/// signal takes effect once every thread of it has stopped.
async fn wait_stopped(vmm: &ProcRecord, stopped: bool) -> Result<()> {
    for _ in 0..500 {
        if vmm.is_stopped() == stopped {
            return Ok(());
        }
        if !vmm.is_alive() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Err(Error::Spawn(format!(
        "{} (pid {}) did not {} within 5 s",
        vmm.role,
        vmm.pid,
        if stopped { "stop" } else { "continue" }
    )))
}
