//! Firecracker memory snapshots: a paused VM's device state and memory
//! (`PUT /snapshot/create`) plus a copy of its overlay disk, and VMs started from them
//! (`PUT /snapshot/load`) instead of a cold boot.
//!
//! A snapshot dir holds `vmstate`, `memory`, `overlay.ext4` (the disk as the paused VM
//! left it, so disk and memory agree) and `snapshot.json`. Restoring clones the overlay
//! into the new VM's directory under the name the snapshot recorded (relative to
//! Firecracker's directory, see the module above), so every restored VM writes its own
//! copy; the memory file is mapped privately and shared by all of them.
//!
//! vsock across a restore: Firecracker resets the device's transport, which closes every
//! connection the guest had; listening sockets survive. The agent listens, and the host
//! side opens a connection per request, so the first request after the restore simply
//! reconnects ([`crate::VmHandle::wait_agent`] does).
//!
//! QEMU cannot do this here: it refuses to save or migrate a VM with a
//! `vhost-user-vsock-device`, the device Hearth's QEMU backend needs for hybrid vsock.
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{api, Firecracker};
use crate::handle::VmHandle;
use crate::{overlay, process, Error, Result, VmSpec, VmmKind, META_FILE};

/// Why the QEMU backend has no snapshots (see the module docs).
pub const QEMU_CANNOT: &str =
    "QEMU cannot save or migrate a VM with a vhost-user-vsock device (hybrid vsock)";

const VMSTATE: &str = "vmstate";
const MEMORY: &str = "memory";
const OVERLAY: &str = "overlay.ext4";
const META: &str = "snapshot.json";

/// A snapshot on disk, as [`VmHandle::snapshot`] wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// The directory holding the files (not stored: a snapshot dir may be moved).
    #[serde(skip)]
    pub dir: PathBuf,
    /// Id of the VM it was taken from.
    pub source_id: String,
    /// The VM had a network interface: its restore would need the same TAP, and would
    /// bring back the same guest address, so such snapshots are refused on restore.
    pub had_net: bool,
}

impl Snapshot {
    /// Reads `dir/snapshot.json` and checks the files are there.
    pub fn open(dir: &Path) -> Result<Snapshot> {
        let meta = dir.join(META);
        let text = std::fs::read(&meta).map_err(|e| Error::io(&meta, e))?;
        let mut snap: Snapshot = serde_json::from_slice(&text)
            .map_err(|e| Error::BadSnapshot(dir.to_path_buf(), format!("{META}: {e}")))?;
        snap.dir = dir.to_path_buf();
        for f in [VMSTATE, MEMORY, OVERLAY] {
            if !dir.join(f).is_file() {
                return Err(Error::BadSnapshot(
                    dir.to_path_buf(),
                    format!("{f} missing"),
                ));
            }
        }
        Ok(snap)
    }

    pub fn vmstate(&self) -> PathBuf {
        self.dir.join(VMSTATE)
    }
    pub fn memory(&self) -> PathBuf {
        self.dir.join(MEMORY)
    }
    pub fn overlay(&self) -> PathBuf {
        self.dir.join(OVERLAY)
    }
}

/// Firecracker's directory for a running VM (its API socket lives at the top of it) and
/// whether that directory is a chroot.
fn fc_root(vm: &VmHandle) -> Result<(PathBuf, &Path, bool)> {
    let api = vm
        .api_socket
        .as_deref()
        .ok_or_else(|| Error::BadState(vm.state_dir.clone(), "no Firecracker API socket".into()))?;
    let root = api.parent().unwrap_or(Path::new("/")).to_path_buf();
    let jailed = root != vm.state_dir;
    Ok((root, api, jailed))
}

/// Takes a full snapshot of `vm` into `dir` (created; must not hold a snapshot yet).
/// The VM is paused meanwhile and left as it was found (running or paused).
pub(crate) async fn create(vm: &VmHandle, dir: &Path) -> Result<Snapshot> {
    if vm.kind != VmmKind::Firecracker {
        return Err(Error::Unsupported {
            what: "snapshots",
            vmm: vm.kind,
            why: QEMU_CANNOT,
        });
    }
    if dir.join(META).exists() {
        return Err(Error::BadSnapshot(
            dir.to_path_buf(),
            "already exists".into(),
        ));
    }
    let was_paused = vm.is_paused().await?;
    if !was_paused {
        vm.pause().await?;
    }
    let result = create_paused(vm, dir).await;
    if !was_paused {
        let resumed = vm.resume().await;
        if result.is_ok() {
            resumed?;
        }
    }
    result
}

async fn create_paused(vm: &VmHandle, dir: &Path) -> Result<Snapshot> {
    let (root, api, jailed) = fc_root(vm)?;
    // `GET /vm/config` lists what the VM was configured with, its interfaces included.
    let config: serde_json::Value = api::get(api, "/vm/config").await?;
    let had_net = config["network-interfaces"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    // Firecracker writes where it can: inside its chroot, then the files move out.
    let name = |f: &str| {
        if jailed {
            format!("/{f}.new")
        } else {
            root.join(format!("{f}.new")).display().to_string()
        }
    };
    api::put(
        api,
        "/snapshot/create",
        &api::SnapshotCreate {
            snapshot_type: "Full",
            snapshot_path: name(VMSTATE),
            mem_file_path: name(MEMORY),
        },
    )
    .await?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for f in [VMSTATE, MEMORY] {
        move_file(&root.join(format!("{f}.new")), &dir.join(f))?;
    }
    // The disk as the paused device left it: every write the guest issued is in the file.
    let disk = dir.join(OVERLAY);
    let _ = std::fs::remove_file(&disk);
    overlay::clone_sparse(&vm.overlay_path, &disk)?;
    let snap = Snapshot {
        dir: dir.to_path_buf(),
        source_id: vm.id.clone(),
        had_net,
    };
    let meta = dir.join(META);
    std::fs::write(&meta, serde_json::to_vec_pretty(&snap).expect("serializes"))
        .map_err(|e| Error::io(&meta, e))?;
    Ok(snap)
}

/// Renames, or copies across file systems; the result is readable by any uid so a jailed
/// restore (another uid) can map it.
fn move_file(from: &Path, to: &Path) -> Result<()> {
    let _ = std::fs::remove_file(to);
    if std::fs::rename(from, to).is_err() {
        overlay::clone_sparse(from, to)?;
        std::fs::remove_file(from).map_err(|e| Error::io(from, e))?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io(to, e))
}

/// Starts a VM from `snap` in `spec.state_dir` (which must be fresh). Kernel, rootfs,
/// vCPUs and memory size come from the snapshot; `spec.kernel` and `spec.rootfs` must
/// still name the same image files (the rootfs is re-opened at its recorded path).
pub(crate) async fn restore(fc: &Firecracker, spec: &VmSpec, snap: &Snapshot) -> Result<VmHandle> {
    if spec.net.is_some() || snap.had_net {
        return Err(Error::BadSnapshot(
            snap.dir.clone(),
            "restoring VMs with a network interface is not supported".into(),
        ));
    }
    if spec.overlay.is_some() {
        return Err(Error::BadSnapshot(
            snap.dir.clone(),
            "a restored VM gets a copy of the snapshot's disk, not spec.overlay".into(),
        ));
    }
    if spec.state_dir.join(META_FILE).exists() {
        return Err(Error::Spawn(format!(
            "{} already holds a VM: restore needs a fresh state dir",
            spec.state_dir.display()
        )));
    }
    let p = fc.paths(spec);
    std::fs::create_dir_all(&p.root).map_err(|e| Error::io(&p.root, e))?;
    overlay::clone_sparse(&snap.overlay(), &p.overlay)?;
    crate::state_dir::prepare(spec, &p.overlay, &[&p.api, &p.vsock])?;
    let (vmstate, memory) = match &fc.jailer {
        Some((_, uid, gid)) => {
            fc.link_into_jail(&p, spec, *uid, *gid)?;
            let (vmstate, memory) = (p.root.join(VMSTATE), p.root.join(MEMORY));
            super::link_or_copy(&snap.vmstate(), &vmstate)?;
            super::link_or_copy(&snap.memory(), &memory)?;
            (vmstate, memory)
        }
        None => (snap.vmstate(), snap.memory()),
    };
    let (handle, vmm) = fc.launch(spec, &p)?;
    let loaded = async {
        process::wait_for_path(&p.api, &vmm, Duration::from_secs(10)).await?;
        api::put(
            &p.api,
            "/snapshot/load",
            &api::SnapshotLoad {
                snapshot_path: p.inside(&vmstate),
                mem_backend: api::MemBackend {
                    backend_type: "File",
                    backend_path: p.inside(&memory),
                },
                resume_vm: true,
            },
        )
        .await
    };
    match loaded.await {
        Ok(()) => Ok(handle),
        Err(e) => {
            let _ = handle.stop(Duration::ZERO).await;
            Err(e)
        }
    }
}
