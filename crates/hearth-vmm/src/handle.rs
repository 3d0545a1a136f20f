//! A started VM as files and processes: `vm.json` in its state dir records both, so a
//! handle can be rebuilt after the owning process restarts.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::process::{self, ProcRecord};
use crate::{firecracker_api, Accel, AgentClient, Error, Result, VmmKind};

/// Name of the metadata file in every state dir.
pub const META_FILE: &str = "vm.json";

/// A started VM. Dropping it does nothing: call [`VmHandle::destroy`]. It can be rebuilt
/// from its state dir after the owning process restarts ([`VmHandle::adopt`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The same processes with their start times (guards against pid reuse); the VMM
    /// (role `vmm`) comes first.
    pub procs: Vec<ProcRecord>,
    /// Firecracker's API socket (Firecracker VMs only).
    #[serde(default)]
    pub api_socket: Option<PathBuf>,
    /// Unix sockets to remove when the VM stops.
    #[serde(default)]
    pub sockets: Vec<PathBuf>,
    /// Open connections to the agent, shared by every clone of this handle.
    #[serde(skip)]
    pub(crate) agent_pool: crate::agent::Pool,
}

impl VmHandle {
    /// Rebuilds a handle from the metadata a backend wrote in `state_dir`.
    pub fn adopt(state_dir: &Path) -> Result<VmHandle> {
        let path = state_dir.join(META_FILE);
        let text = std::fs::read(&path)
            .map_err(|e| Error::BadState(state_dir.to_path_buf(), format!("{META_FILE}: {e}")))?;
        serde_json::from_slice(&text)
            .map_err(|e| Error::BadState(state_dir.to_path_buf(), format!("{META_FILE}: {e}")))
    }

    /// Writes `vm.json` atomically (a crash mid-write must not lose the pids).
    pub(crate) fn save(&self) -> Result<()> {
        let path = self.state_dir.join(META_FILE);
        let tmp = self.state_dir.join(format!(".{META_FILE}.tmp"));
        let data = serde_json::to_vec_pretty(self).expect("VmHandle serializes");
        std::fs::write(&tmp, data).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }

    /// True while every process of the VM is alive.
    pub fn is_alive(&self) -> bool {
        !self.procs.is_empty() && self.procs.iter().all(ProcRecord::is_alive)
    }

    /// The VMM process (QEMU or Firecracker).
    pub fn vmm_proc(&self) -> Option<&ProcRecord> {
        self.procs.iter().find(|p| p.role == "vmm")
    }

    /// Agent client for this VM; clients of one handle (and of its clones) reuse each
    /// other's connections.
    pub fn agent(&self) -> AgentClient {
        AgentClient::with_pool(self.vsock_path.clone(), self.agent_pool.clone())
    }

    /// Waits until `GET /health` answers, retrying while the guest boots; fails at once
    /// (with the end of the console log) if a VM process dies meanwhile, or if the agent
    /// speaks another protocol version (`Error::ProtocolMismatch`). Use this rather
    /// than `AgentClient::wait_ready` right after `start`: see [`Self::wait_guest_kernel`].
    pub async fn wait_agent(&self, timeout: Duration) -> Result<hearth_proto::Health> {
        let agent = self.agent();
        let deadline = Instant::now() + timeout;
        if self.kind == VmmKind::Qemu {
            self.wait_guest_kernel(deadline, timeout).await?;
        }
        loop {
            if !self.is_alive() {
                return Err(Error::VmDied {
                    id: self.id.clone(),
                    detail: self.console_tail(2000),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::AgentTimeout(timeout, self.console_tail(2000)));
            }
            match tokio::time::timeout(left.min(Duration::from_secs(5)), agent.health()).await {
                Ok(Ok(h)) => return Ok(h),
                // The agent is up but of another protocol: waiting will not change that.
                Ok(Err(e @ Error::ProtocolMismatch { .. })) => return Err(e),
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the guest kernel has handed over to init, which is after every
    /// built-in driver probed, the virtio-vsock one included.
    ///
    /// Why: `vhost-device-vsock` (0.3) wedges for good when a host `CONNECT` arrives
    /// before the guest driver initialised the vrings ("Received a backend event before
    /// vring initialization"): that connection and every later one then hang. Measured
    /// here as about one boot in ten when polling from VMM start. Firecracker queues such
    /// requests itself, so only QEMU VMs wait for this.
    async fn wait_guest_kernel(&self, deadline: Instant, timeout: Duration) -> Result<()> {
        const MARKERS: [&str; 2] = ["as init process", "hearth-init"];
        loop {
            let console = std::fs::read(&self.console_path).unwrap_or_default();
            let text = String::from_utf8_lossy(&console);
            if MARKERS.iter().any(|m| text.contains(m)) {
                return Ok(());
            }
            if !self.is_alive() {
                return Err(Error::VmDied {
                    id: self.id.clone(),
                    detail: self.console_tail(2000),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::AgentTimeout(
                    timeout,
                    format!("the guest never started init: {}", self.console_tail(2000)),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Last `max` bytes of the serial console (for error messages).
    pub fn console_tail(&self, max: usize) -> String {
        process::tail(&self.console_path, max)
    }

    /// Resident memory of the VM's host processes, in KiB (`VmRSS` summed).
    pub fn rss_kib(&self) -> u64 {
        self.procs
            .iter()
            .filter(|p| p.is_alive())
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{}/status", p.pid)).ok())
            .filter_map(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .sum()
    }

    /// Asks the guest to power off, kills after `grace`. Keeps the overlay disk and state
    /// dir so the VM can be started again.
    ///
    /// The guest's writes reach the overlay first: a `sync` through the agent (any user
    /// may call sync(2)), then Firecracker's Ctrl-Alt-Del or SIGTERM to QEMU (which
    /// flushes its own block layer on the way out; `-M microvm,acpi=off` has no power
    /// button to press).
    pub async fn stop(&self, grace: Duration) -> Result<()> {
        if let Some(vmm) = self.vmm_proc().filter(|p| p.is_alive()) {
            // A paused guest can neither sync nor shut down.
            if matches!(self.is_paused().await, Ok(true)) {
                let _ = self.resume().await;
            }
            let sync = hearth_proto::ExecRequest {
                cmd: "sync".into(),
                timeout_ms: Some(5000),
                ..Default::default()
            };
            let _ =
                tokio::time::timeout(grace.min(Duration::from_secs(5)), self.agent().exec(&sync))
                    .await;
            match (self.kind, &self.api_socket) {
                (VmmKind::Firecracker, Some(api)) => {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        firecracker_api::send_ctrl_alt_del(api),
                    )
                    .await;
                }
                _ => vmm.signal(libc::SIGTERM),
            }
            if !vmm.wait_gone(grace).await {
                vmm.kill().await?;
            }
        }
        self.kill_all(Duration::from_secs(2)).await?;
        self.remove_sockets();
        Ok(())
    }

    /// Stops if needed and removes every process, socket, overlay file and the state dir.
    /// The disk is about to be deleted, so nothing is flushed: every process gets SIGKILL.
    pub async fn destroy(self) -> Result<()> {
        self.kill_all(Duration::ZERO).await?;
        self.remove_sockets();
        if !self.overlay_path.starts_with(&self.state_dir) {
            match std::fs::remove_file(&self.overlay_path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(&self.overlay_path, e))
                }
                _ => {}
            }
        }
        match std::fs::remove_dir_all(&self.state_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(&self.state_dir, e))
            }
            _ => Ok(()),
        }
    }

    /// SIGTERM (if `grace` > 0), then SIGKILL whatever is left; waits until all are gone.
    async fn kill_all(&self, grace: Duration) -> Result<()> {
        if !grace.is_zero() {
            for p in &self.procs {
                p.signal(libc::SIGTERM);
            }
            for p in &self.procs {
                p.wait_gone(grace).await;
            }
        }
        for p in &self.procs {
            p.kill().await?;
        }
        Ok(())
    }

    fn remove_sockets(&self) {
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
    }
}
