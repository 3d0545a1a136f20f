//! Hearth's VMM layer: one [`Vmm`] trait with QEMU (`-M microvm`, KVM or TCG) and
//! Firecracker backends, the host side of Firecracker's hybrid vsock, and an HTTP
//! client for the guest agent that rides on it.
//!
//! PUBLIC SURFACE (other crates code against these names; change them only together
//! with every caller): `VmSpec`, `NetAttachment`, `VmHandle`, `Vmm`, `select`,
//! `Selection`, `VmmKind`, `Accel`, `detect::HostReport`, `AgentClient`, `Error`, `Result`.

pub mod agent;
pub mod detect;
pub mod error;
pub mod spec;
pub mod vsock;

pub use agent::AgentClient;
pub use error::{Error, Result};
pub use spec::{Accel, NetAttachment, Selection, VmSpec, VmmKind};

use std::path::PathBuf;
use std::time::Duration;

/// A VMM backend. Implementations own the processes and files of the VMs they start,
/// all inside `VmSpec::state_dir`.
#[async_trait::async_trait]
pub trait Vmm: Send + Sync {
    fn kind(&self) -> VmmKind;
    fn accel(&self) -> Accel;
    /// Starts the VM and returns once the VMM process runs (not when the agent is ready:
    /// call [`VmHandle::wait_agent`] for that).
    async fn start(&self, spec: &VmSpec) -> Result<VmHandle>;
}

/// Picks a backend from `HEARTH_VMM` / `HEARTH_ACCEL` style settings and what the host
/// can really do (a PVM host never gets KVM under `auto`).
pub fn select(sel: &Selection) -> Result<Box<dyn Vmm>> {
    let _ = sel;
    todo!("vmm helper")
}

/// A started VM. Dropping it does nothing: call [`VmHandle::destroy`]. It can be rebuilt
/// from its state dir after the owning process restarts ([`VmHandle::adopt`]).
#[derive(Debug, Clone)]
pub struct VmHandle {
    pub id: String,
    pub kind: VmmKind,
    pub accel: Accel,
    pub state_dir: PathBuf,
    /// Host end of the hybrid vsock (Unix socket; `CONNECT 8080\n` on it reaches the agent).
    pub vsock_path: PathBuf,
    /// Serial console (and VMM log) captured here.
    pub console_path: PathBuf,
    /// Per-VM overlay disk (`/dev/vdb`).
    pub overlay_path: PathBuf,
    /// Every host process this VM owns (VMM, vhost-device-vsock, ...).
    pub pids: Vec<u32>,
}

impl VmHandle {
    /// Rebuilds a handle from the metadata a backend wrote in `state_dir`.
    pub fn adopt(state_dir: &std::path::Path) -> Result<VmHandle> {
        let _ = state_dir;
        todo!("vmm helper")
    }
    /// True while every process of the VM is alive.
    pub fn is_alive(&self) -> bool {
        todo!("vmm helper")
    }
    /// Agent client for this VM.
    pub fn agent(&self) -> AgentClient {
        AgentClient::new(self.vsock_path.clone())
    }
    /// Waits until `GET /health` answers, retrying while the guest boots.
    pub async fn wait_agent(&self, timeout: Duration) -> Result<hearth_proto::Health> {
        self.agent().wait_ready(timeout).await
    }
    /// Asks the guest to power off (Ctrl-Alt-Del / ACPI), kills after `grace`. Keeps the
    /// overlay disk and state dir so the VM can be started again.
    pub async fn stop(&self, grace: Duration) -> Result<()> {
        let _ = grace;
        todo!("vmm helper")
    }
    /// Stops if needed and removes every process, socket, overlay file and the state dir.
    pub async fn destroy(self) -> Result<()> {
        todo!("vmm helper")
    }
}
