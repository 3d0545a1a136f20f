//! Pausing, resuming and snapshotting a running VM, for both backends where they can:
//! QEMU through QMP (`stop` / `cont` / `query-status`), Firecracker through its API
//! (`PATCH /vm`, `GET /`, `PUT /snapshot/create`).
//!
//! States, as these calls see them: a VM is *running* from `Vmm::start` (or
//! `Vmm::restore`) until `stop`/`destroy` or its VMM dies; while running it is either
//! *active* or *paused*. A paused VM keeps its memory and devices but runs no guest code:
//! its agent does not answer, and its clock does not advance.
use std::path::Path;

use crate::firecracker::{api, snapshot};
use crate::handle::VmHandle;
use crate::snapshot::Snapshot;
use crate::{qmp, Error, Result, VmmKind};

impl VmHandle {
    /// Freezes the guest's vCPUs. Legal on a running VM, active or already paused (then
    /// a no-op); an error if the VMM is gone. Requests in flight to the agent wait, and
    /// time out by their own limits, until [`Self::resume`]. `stop` and `destroy` stay
    /// legal while paused (`stop` resumes first so the guest can flush its disk).
    pub async fn pause(&self) -> Result<()> {
        self.require_alive()?;
        match self.kind {
            VmmKind::Qemu => qmp::execute(self.qmp()?, "stop", None).await.map(drop),
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
        self.require_alive()?;
        match self.kind {
            VmmKind::Qemu => qmp::execute(self.qmp()?, "cont", None).await.map(drop),
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
        self.require_alive()?;
        match self.kind {
            VmmKind::Qemu => {
                let status = qmp::execute(self.qmp()?, "query-status", None).await?;
                Ok(status["status"] == "paused")
            }
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

    fn require_alive(&self) -> Result<()> {
        match self.vmm_proc() {
            Some(p) if p.is_alive() => Ok(()),
            _ => Err(Error::NotRunning {
                id: self.id.clone(),
            }),
        }
    }

    fn qmp(&self) -> Result<&Path> {
        self.qmp_socket.as_deref().ok_or_else(|| {
            Error::BadState(
                self.state_dir.clone(),
                "no QMP socket (VM started by an older Hearth)".into(),
            )
        })
    }

    fn api(&self) -> Result<&Path> {
        self.api_socket.as_deref().ok_or_else(|| {
            Error::BadState(self.state_dir.clone(), "no Firecracker API socket".into())
        })
    }
}
