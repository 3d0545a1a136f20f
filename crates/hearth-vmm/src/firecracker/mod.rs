//! Firecracker backend: one `firecracker --api-sock` process per VM, configured through
//! its REST API, with the serial console on its stdout (captured to `console.log`).
//!
//! With a jailer (`jailer_bin` and a uid/gid), the layout is the jailer's own:
//! chroot = `<state>/jail/<name of the firecracker binary>/<id>/root/`. Hearth
//! hard-links the kernel and the base rootfs into it (same file system required: the
//! rootfs is never copied), creates the overlay there (owned by the jail uid), and
//! Firecracker's sockets (`fc.sock`, `vsock.sock`) live at the chroot's top, so the
//! handle points inside the chroot.
//!
//! Files of the VM's own (overlay, vsock socket) are named to Firecracker relative to
//! its directory (the chroot's `/`, or the state dir it runs in without a jailer). A
//! snapshot records those names, so a VM restored in another directory opens its own
//! overlay copy and binds its own socket ([`snapshot`]).
//! Checked against Firecracker and its jailer v1.17.0-dev, nested (see scripts/nested.sh).
/// The REST API types and calls, a module of their own so the handle can use them too.
pub use crate::firecracker_api as api;
pub mod snapshot;
mod tap;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::handle::VmHandle;
use crate::process::{self, ProcRecord, Spawn};
use crate::{overlay, state_dir, Accel, Error, Result, VmSpec, Vmm, VmmKind};

pub struct Firecracker {
    pub firecracker_bin: PathBuf,
    /// Jailer binary and the uid/gid to drop to; `None` runs Firecracker directly.
    pub jailer: Option<(PathBuf, u32, u32)>,
}

/// Where things are, as the host sees them and as Firecracker sees them.
pub(crate) struct Paths {
    /// Directory holding Firecracker's files (the chroot under the jailer).
    pub root: PathBuf,
    pub api: PathBuf,
    pub vsock: PathBuf,
    pub overlay: PathBuf,
    /// How Firecracker must name a host path (relative to `root`, or inside the chroot).
    inside: fn(&Path, &Path) -> String,
}

impl Paths {
    /// `p` as Firecracker must name it.
    pub fn inside(&self, p: &Path) -> String {
        (self.inside)(&self.root, p)
    }
}

/// Without a jailer Firecracker runs in `root` (the state dir): the VM's own files are
/// named relative to it, shared ones (kernel, base rootfs) by their host path.
fn host_path(root: &Path, p: &Path) -> String {
    match p.strip_prefix(root) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => p.display().to_string(),
    }
}

fn chroot_path(root: &Path, p: &Path) -> String {
    format!("/{}", p.strip_prefix(root).unwrap_or(p).display())
}

impl Firecracker {
    pub(crate) fn paths(&self, spec: &VmSpec) -> Paths {
        let root = match &self.jailer {
            None => spec.state_dir.clone(),
            // The jailer names the chroot after the exec file's name.
            Some(_) => spec
                .state_dir
                .join("jail")
                .join(
                    self.firecracker_bin
                        .file_name()
                        .unwrap_or("firecracker".as_ref()),
                )
                .join(&spec.id)
                .join("root"),
        };
        Paths {
            api: root.join("fc.sock"),
            vsock: root.join("vsock.sock"),
            overlay: spec
                .overlay
                .clone()
                .unwrap_or_else(|| root.join("overlay.ext4")),
            inside: if self.jailer.is_some() {
                chroot_path
            } else {
                host_path
            },
            root,
        }
    }

    /// Under the jailer, every file Firecracker opens must be inside the chroot.
    pub(crate) fn link_into_jail(
        &self,
        p: &Paths,
        spec: &VmSpec,
        uid: u32,
        gid: u32,
    ) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(&p.root).map_err(|e| Error::io(&p.root, e))?;
        let link = |src: &Path, name: &str| -> Result<PathBuf> {
            let dst = p.root.join(name);
            if !dst.exists() {
                link_or_copy(src, &dst)?;
            }
            Ok(dst)
        };
        let kernel = link(&spec.kernel, "vmlinux")?;
        let rootfs = link(&spec.rootfs, "rootfs.ext4")?;
        std::os::unix::fs::chown(&p.overlay, Some(uid), Some(gid))
            .map_err(|e| Error::io(&p.overlay, e))?;
        Ok((kernel, rootfs))
    }

    /// Template layers, linked into the jail like the rootfs when there is one.
    fn layers_for(&self, p: &Paths, spec: &VmSpec) -> Result<Vec<PathBuf>> {
        if self.jailer.is_none() {
            return Ok(spec.layers.clone());
        }
        let mut out = Vec::new();
        for (i, l) in spec.layers.iter().enumerate() {
            let dst = p.root.join(format!("layer{i}.ext4"));
            if !dst.exists() {
                link_or_copy(l, &dst)?;
            }
            out.push(dst);
        }
        Ok(out)
    }

    /// A jailed Firecracker opens its TAP as the jail uid: hand the TAP to it.
    fn own_tap(&self, spec: &VmSpec) -> Result<()> {
        match (&self.jailer, &spec.net) {
            (Some((_, uid, gid)), Some(net)) => {
                tap::set_owner(net.netns.as_deref(), &net.tap, *uid, *gid)
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn spawn(&self, spec: &VmSpec, p: &Paths) -> Result<ProcRecord> {
        let console = spec.state_dir.join("console.log");
        let netns = spec.net.as_ref().and_then(|n| n.netns.as_deref());
        match &self.jailer {
            None => process::spawn(Spawn {
                role: "vmm",
                program: &self.firecracker_bin,
                args: vec![
                    "--api-sock".into(),
                    p.api.display().to_string(),
                    "--id".into(),
                    spec.id.clone(),
                ],
                log: console,
                netns,
                cwd: Some(&p.root),
            }),
            Some((jailer, uid, gid)) => {
                let mut args = vec![
                    "--id".into(),
                    spec.id.clone(),
                    "--exec-file".into(),
                    self.firecracker_bin.display().to_string(),
                    "--uid".into(),
                    uid.to_string(),
                    "--gid".into(),
                    gid.to_string(),
                    "--chroot-base-dir".into(),
                    spec.state_dir.join("jail").display().to_string(),
                ];
                if let Some(ns) = netns {
                    args.extend(["--netns".into(), format!("/var/run/netns/{ns}")]);
                }
                args.extend(["--".into(), "--api-sock".into(), "/fc.sock".into()]);
                process::spawn(Spawn {
                    role: "vmm",
                    program: jailer,
                    args,
                    log: console,
                    netns: None,
                    cwd: None,
                })
            }
        }
    }

    async fn configure(
        &self,
        spec: &VmSpec,
        p: &Paths,
        kernel: &Path,
        rootfs: &Path,
        layers: &[PathBuf],
    ) -> Result<()> {
        let inside = |x: &Path| p.inside(x);
        api::put(
            &p.api,
            "/boot-source",
            &api::BootSource {
                kernel_image_path: inside(kernel),
                boot_args: spec.cmdline(),
            },
        )
        .await?;
        api::put(
            &p.api,
            "/machine-config",
            &api::MachineConfig {
                vcpu_count: spec.vcpus,
                mem_size_mib: spec.memory_mib,
            },
        )
        .await?;
        // Attach order is device order: rootfs first (/dev/vda), overlay second
        // (/dev/vdb), then the template layers, newest first, read-only.
        let mut drives = vec![
            ("rootfs".to_string(), rootfs.to_path_buf(), true),
            ("overlay".to_string(), p.overlay.clone(), false),
        ];
        for (i, l) in layers.iter().enumerate() {
            drives.push((format!("layer{i}"), l.clone(), true));
        }
        for (id, path, ro) in &drives {
            api::put(
                &p.api,
                &format!("/drives/{id}"),
                &api::Drive {
                    drive_id: id.clone(),
                    path_on_host: inside(path),
                    is_root_device: false,
                    is_read_only: *ro,
                },
            )
            .await?;
        }
        api::put(
            &p.api,
            "/vsock",
            &api::Vsock {
                guest_cid: hearth_proto::GUEST_CID,
                uds_path: inside(&p.vsock),
            },
        )
        .await?;
        if let Some(net) = &spec.net {
            api::put(
                &p.api,
                "/network-interfaces/eth0",
                &api::NetworkInterface {
                    iface_id: "eth0".into(),
                    host_dev_name: net.tap.clone(),
                    guest_mac: net.mac.clone(),
                },
            )
            .await?;
        }
        api::put(
            &p.api,
            "/actions",
            &api::Action {
                action_type: api::ActionType::InstanceStart,
            },
        )
        .await
    }
}

#[async_trait::async_trait]
impl Vmm for Firecracker {
    fn kind(&self) -> VmmKind {
        VmmKind::Firecracker
    }
    fn accel(&self) -> Accel {
        Accel::Kvm
    }

    async fn start(&self, spec: &VmSpec) -> Result<VmHandle> {
        let p = self.paths(spec);
        if self.jailer.is_some() {
            reset_jail(spec, &p)?;
        }
        std::fs::create_dir_all(&p.root).map_err(|e| Error::io(&p.root, e))?;
        state_dir::prepare(spec, &p.overlay, &[&p.api, &p.vsock])?;
        let (kernel, rootfs) = match &self.jailer {
            Some((_, uid, gid)) => self.link_into_jail(&p, spec, *uid, *gid)?,
            None => (spec.kernel.clone(), spec.rootfs.clone()),
        };
        let layers = self.layers_for(&p, spec)?;
        self.own_tap(spec)?;
        let (handle, vmm) = self.launch(spec, &p)?;
        let configured = async {
            process::wait_for_path(&p.api, &vmm, Duration::from_secs(10)).await?;
            self.configure(spec, &p, &kernel, &rootfs, &layers).await
        };
        match configured.await {
            Ok(()) => Ok(handle),
            Err(e) => {
                let _ = handle.stop(Duration::ZERO).await;
                Err(e)
            }
        }
    }

    async fn restore(&self, spec: &VmSpec, snap: &snapshot::Snapshot) -> Result<VmHandle> {
        snapshot::restore(self, spec, snap).await
    }
}

/// Empties the jail a previous run of this VM left (the jailer's copy of firecracker,
/// its device nodes, sockets), keeping only the overlay disk: the jailer does not reuse
/// a chroot, so a stopped jailed VM could not start again. Leaves a live VM alone
/// (`state_dir::prepare` then refuses the start).
fn reset_jail(spec: &VmSpec, p: &Paths) -> Result<()> {
    let jail = spec.state_dir.join("jail");
    if !jail.exists() {
        return Ok(());
    }
    if let Ok(old) = VmHandle::adopt(&spec.state_dir) {
        if old.procs.iter().any(ProcRecord::is_alive) {
            return Ok(());
        }
    }
    let keep = spec.state_dir.join(".overlay.keep");
    let inside = p.overlay.starts_with(&jail) && p.overlay.exists();
    if inside {
        std::fs::rename(&p.overlay, &keep).map_err(|e| Error::io(&keep, e))?;
    }
    std::fs::remove_dir_all(&jail).map_err(|e| Error::io(&jail, e))?;
    if inside {
        std::fs::create_dir_all(&p.root).map_err(|e| Error::io(&p.root, e))?;
        std::fs::rename(&keep, &p.overlay).map_err(|e| Error::io(&p.overlay, e))?;
    }
    Ok(())
}

/// Hard-links `src` to `dst`; across file systems (a state dir on another disk than the
/// image) a hard link cannot be made, and a sparse copy takes its place: slower, and
/// the base rootfs then takes space once per jailed VM.
pub(crate) fn link_or_copy(src: &Path, dst: &Path) -> Result<()> {
    match std::fs::hard_link(src, dst) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => overlay::clone_sparse(src, dst),
        other => other.map_err(|e| Error::io(dst, e)),
    }
}

impl Firecracker {
    /// Spawns the VMM and records it in `vm.json` at once, so `destroy()` finds it
    /// whatever fails next.
    pub(crate) fn launch(&self, spec: &VmSpec, p: &Paths) -> Result<(VmHandle, ProcRecord)> {
        let vmm = self.spawn(spec, p)?;
        let handle = VmHandle {
            id: spec.id.clone(),
            kind: VmmKind::Firecracker,
            accel: Accel::Kvm,
            state_dir: spec.state_dir.clone(),
            vsock_path: p.vsock.clone(),
            console_path: spec.state_dir.join("console.log"),
            overlay_path: p.overlay.clone(),
            pids: vec![vmm.pid],
            procs: vec![vmm.clone()],
            api_socket: Some(p.api.clone()),
            sockets: vec![p.api.clone(), p.vsock.clone()],
            agent_pool: Default::default(),
        };
        handle.save()?;
        Ok((handle, vmm))
    }
}
