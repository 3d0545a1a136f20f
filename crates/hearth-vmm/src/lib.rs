//! Hearth's VMM layer: one [`Vmm`] trait with QEMU (`-M microvm`, KVM or TCG) and
//! Firecracker backends, the host side of Firecracker's hybrid vsock, and an HTTP
//! client for the guest agent that rides on it.
//!
//! PUBLIC SURFACE (other crates code against these names; change them only together
//! with every caller): `VmSpec`, `NetAttachment`, `VmHandle`, `Vmm`, `select`,
//! `Selection`, `VmmKind`, `Accel`, `detect::HostReport`, `AgentClient`, `Error`, `Result`.
//!
//! Lifecycle: `select(&Selection::from_env()?)?.start(&spec)` → [`VmHandle`] (its state
//! dir holds `vm.json`); `handle.wait_agent(..)`; `handle.agent()` for requests;
//! `handle.stop(grace)` keeps the disk, `start` again with `spec.overlay =
//! Some(handle.overlay_path)`; `handle.destroy()` removes everything. After a restart,
//! `VmHandle::adopt(state_dir)` rebuilds the handle and `is_alive()` says whether the VM
//! survived.
//!
//! While running: `handle.pause()` / `resume()` / `is_paused()` (both backends) and
//! `handle.snapshot(dir)` → [`Snapshot`], which `Vmm::restore` starts new VMs from
//! (Firecracker only); see `control.rs` for which state each call is legal in.

pub mod agent;
mod control;
pub mod detect;
pub mod error;
pub mod firecracker;
pub mod firecracker_api;
mod handle;
mod http;
pub mod overlay;
pub mod process;
pub mod qemu;
pub mod spec;
mod state_dir;
pub mod template;
mod uds;
pub mod vsock;

pub use agent::AgentClient;
pub use error::{Error, Result};
pub use firecracker::snapshot::{self, Snapshot};
pub use handle::{VmHandle, META_FILE};
pub use spec::{Accel, NetAttachment, Selection, VmSpec, VmmKind, BASE_CMDLINE};

use detect::{find_binary, FIRECRACKER, QEMU, VHOST_VSOCK};

/// A VMM backend. Implementations own the processes and files of the VMs they start,
/// all inside `VmSpec::state_dir`.
#[async_trait::async_trait]
pub trait Vmm: Send + Sync {
    fn kind(&self) -> VmmKind;
    fn accel(&self) -> Accel;
    /// Starts the VM and returns once the VMM process runs (not when the agent is ready:
    /// call [`VmHandle::wait_agent`] for that). On error the VM's processes are stopped
    /// and its files kept (the console log explains most failures);
    /// `VmHandle::adopt(&spec.state_dir)?.destroy()` removes them.
    async fn start(&self, spec: &VmSpec) -> Result<VmHandle>;

    /// Starts a VM from a memory snapshot ([`VmHandle::snapshot`]) instead of a cold
    /// boot: the guest resumes where the snapshot left it, on its own copy of the
    /// snapshot's disk, in `spec.state_dir` (which must be fresh). Call
    /// [`VmHandle::wait_agent`] next: the host's vsock connections do not survive the
    /// restore, the agent's listener does. Firecracker only.
    async fn restore(&self, spec: &VmSpec, snapshot: &Snapshot) -> Result<VmHandle> {
        let _ = (spec, snapshot);
        Err(Error::Unsupported {
            what: "restoring a snapshot",
            vmm: self.kind(),
            why: snapshot::QEMU_CANNOT,
        })
    }
}

/// Picks a backend from `HEARTH_VMM` / `HEARTH_ACCEL` style settings and what the host
/// can really do (a PVM host never gets KVM under `auto`).
pub fn select(sel: &Selection) -> Result<Box<dyn Vmm>> {
    let (_, usable, reason) = detect::kvm();
    select_with(sel, usable, reason.unwrap_or_default())
}

/// [`select`] with the settings read from the environment ([`Selection::from_env`]).
pub fn select_from_env() -> Result<Box<dyn Vmm>> {
    select(&Selection::from_env()?)
}

fn select_with(sel: &Selection, kvm_usable: bool, why_not: String) -> Result<Box<dyn Vmm>> {
    let kvm_ok = kvm_usable || sel.force_kvm;
    let fc_bin = sel
        .firecracker_bin
        .clone()
        .or_else(|| find_binary(FIRECRACKER));
    let kind = sel.vmm.unwrap_or(if fc_bin.is_some() && kvm_ok {
        VmmKind::Firecracker
    } else {
        VmmKind::Qemu
    });
    let missing = |what: &'static str, var: &str| Error::MissingBinary {
        what,
        hint: format!("put it on PATH or set {var}"),
    };
    match kind {
        VmmKind::Firecracker => {
            if !kvm_ok {
                return Err(Error::FirecrackerNeedsKvm(why_not));
            }
            if sel.accel == Some(Accel::Tcg) {
                return Err(Error::BadSetting {
                    name: "HEARTH_ACCEL",
                    value: "tcg".into(),
                    expected: "kvm or auto with HEARTH_VMM=firecracker (Firecracker is KVM only)",
                });
            }
            let jailer = match (&sel.jailer_bin, sel.jailer_uid_gid) {
                (Some(j), Some((u, g))) => Some((j.clone(), u, g)),
                _ => None,
            };
            Ok(Box::new(firecracker::Firecracker {
                firecracker_bin: fc_bin
                    .ok_or_else(|| missing(FIRECRACKER, "HEARTH_FIRECRACKER_BIN"))?,
                jailer,
            }))
        }
        VmmKind::Qemu => {
            let accel = match sel.accel {
                Some(Accel::Kvm) if !kvm_ok => return Err(Error::KvmUnusable(why_not)),
                Some(a) => a,
                None if kvm_ok => Accel::Kvm,
                None => Accel::Tcg,
            };
            Ok(Box::new(qemu::Qemu {
                qemu_bin: sel
                    .qemu_bin
                    .clone()
                    .or_else(|| find_binary(QEMU))
                    .ok_or_else(|| missing(QEMU, "HEARTH_QEMU_BIN"))?,
                vhost_vsock_bin: sel
                    .vhost_vsock_bin
                    .clone()
                    .or_else(|| find_binary(VHOST_VSOCK))
                    .ok_or_else(|| {
                        missing(
                            VHOST_VSOCK,
                            "HEARTH_VHOST_VSOCK_BIN (cargo install vhost-device-vsock)",
                        )
                    })?,
                accel,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(vmm: Option<VmmKind>, accel: Option<Accel>) -> Selection {
        Selection {
            vmm,
            accel,
            // Stand-ins so the choice does not depend on what this host has installed.
            qemu_bin: Some("/bin/true".into()),
            vhost_vsock_bin: Some("/bin/true".into()),
            firecracker_bin: Some("/bin/true".into()),
            ..Default::default()
        }
    }

    fn pick(s: &Selection, usable: bool) -> Result<(VmmKind, Accel)> {
        select_with(s, usable, "PVM host".into()).map(|v| (v.kind(), v.accel()))
    }

    #[test]
    fn auto_follows_kvm_usability() {
        let auto = sel(None, None);
        assert_eq!(
            pick(&auto, true).unwrap(),
            (VmmKind::Firecracker, Accel::Kvm)
        );
        assert_eq!(pick(&auto, false).unwrap(), (VmmKind::Qemu, Accel::Tcg));
        let no_fc = Selection {
            firecracker_bin: None,
            ..sel(None, None)
        };
        if find_binary(FIRECRACKER).is_none() {
            assert_eq!(pick(&no_fc, true).unwrap(), (VmmKind::Qemu, Accel::Kvm));
        }
    }

    #[test]
    fn explicit_kvm_on_an_unusable_host_is_refused_unless_forced() {
        let e = pick(&sel(Some(VmmKind::Qemu), Some(Accel::Kvm)), false).unwrap_err();
        assert!(matches!(e, Error::KvmUnusable(_)), "{e}");
        let e = pick(&sel(Some(VmmKind::Firecracker), None), false).unwrap_err();
        assert!(matches!(e, Error::FirecrackerNeedsKvm(_)), "{e}");
        let forced = Selection {
            force_kvm: true,
            ..sel(Some(VmmKind::Firecracker), None)
        };
        assert_eq!(
            pick(&forced, false).unwrap(),
            (VmmKind::Firecracker, Accel::Kvm)
        );
        assert_eq!(
            pick(&sel(Some(VmmKind::Qemu), Some(Accel::Tcg)), true).unwrap(),
            (VmmKind::Qemu, Accel::Tcg)
        );
        assert!(pick(&sel(Some(VmmKind::Firecracker), Some(Accel::Tcg)), true).is_err());
    }
}
