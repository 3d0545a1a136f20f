//! One task per VM, the only code that changes a VM. Requests reach it as [`Cmd`]s over
//! an mpsc channel, so concurrent requests on one VM are applied one after the other.
//! Each change is written to the store first and acted on second: a crash in between
//! leaves a row that [`crate::reconcile`] finishes on the next start.
//!
//! Exec/run/file calls do not queue here (they would serialize all work in a VM); the
//! owner only hands out the handle of a running VM ([`Cmd::Handle`]).

use std::time::{Duration, Instant};

use hearth_vmm::{VmHandle, VmSpec};
use tokio::sync::{mpsc, oneshot};

use crate::activity::{Activity, Busy};
use crate::error::{AppError, Result};
use crate::models::{now_ms, Image, ImageSource, NetworkSpec, VmRecord, VmState};
use crate::{network, AppState};

pub type OwnerTx = mpsc::Sender<Cmd>;
type Reply<T> = oneshot::Sender<Result<T>>;

pub enum Cmd {
    /// Boot (first start or start after stop) and wait for the agent. The caller took a
    /// boot permit before writing anything, so a 429 leaves no trace.
    Boot(tokio::sync::OwnedSemaphorePermit, Reply<VmRecord>),
    Stop(Reply<VmRecord>),
    Destroy(Reply<()>),
    /// The handle of a running VM; a paused one is resumed first (any call that needs
    /// the guest comes through here).
    Handle(Reply<(VmHandle, Busy)>),
    /// Freeze a running VM in memory (a paused one stays paused).
    Pause(Reply<VmRecord>),
    /// Let a paused VM run again (a running one stays running).
    Resume(Reply<VmRecord>),
    /// Replace a running VM's allowlist (host rules, store, guest rules).
    Firewall(NetworkSpec, Reply<VmRecord>),
    /// Copy the VM's overlay disk to the path for a template (running: frozen for the
    /// copy; stopped: as it is), serialised with stop and delete.
    Capture(std::path::PathBuf, Reply<()>),
}

/// How often the owner checks that a running VM's processes are still there.
const WATCH_EVERY: Duration = Duration::from_secs(2);
const STOP_GRACE: Duration = Duration::from_secs(10);

struct Owner {
    state: AppState,
    id: String,
    handle: Option<VmHandle>,
    /// The calls using the guest, for the idle timeout.
    activity: std::sync::Arc<Activity>,
}

/// Registers and starts the owner of `id`. `handle` is set for a re-adopted running VM.
pub fn spawn(state: &AppState, id: &str, handle: Option<VmHandle>) -> OwnerTx {
    let (tx, rx) = mpsc::channel(16);
    state
        .owners
        .lock()
        .expect("owners poisoned")
        .insert(id.to_string(), tx.clone());
    let owner = Owner {
        state: state.clone(),
        id: id.to_string(),
        handle,
        activity: Activity::new(),
    };
    tokio::spawn(owner.run(rx));
    tx
}

/// Sends `make(reply)` to the owner of `id` and waits for the answer. A VM without an
/// owner holds no resources (failed/deleted), so the caller gets a 409 naming its state.
pub async fn ask<T>(state: &AppState, id: &str, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T> {
    let tx = state
        .owners
        .lock()
        .expect("owners poisoned")
        .get(id)
        .cloned();
    let Some(tx) = tx else {
        let vm = state.store.vm(id).await?;
        return Err(AppError::Conflict(format!("VM {id} is {}", vm.state)));
    };
    let (reply, rx) = oneshot::channel();
    if tx.send(make(reply)).await.is_err() {
        let vm = state.store.vm(id).await?;
        return Err(AppError::Conflict(format!("VM {id} is {}", vm.state)));
    }
    match rx.await {
        Ok(res) => res,
        // The owner ended (VM destroyed or failed) with this command still queued.
        Err(_) => {
            let vm = state.store.vm(id).await?;
            Err(AppError::Conflict(format!("VM {id} is {}", vm.state)))
        }
    }
}

impl Owner {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut watch = tokio::time::interval(WATCH_EVERY);
        loop {
            let vm = self.record().await.ok();
            let expires_at = vm.as_ref().and_then(|v| v.expires_at);
            // A running VM with an idle timeout is paused once no call has used it for
            // that long; while a call runs, look again later.
            let idle_ms = vm
                .as_ref()
                .filter(|v| v.state == VmState::Running && self.handle.is_some())
                .and_then(|v| v.idle_timeout_s)
                .map(|s| s * 1000);
            let idle = async {
                match idle_ms {
                    Some(t) => {
                        let due = self.activity.idle_due_ms(t).unwrap_or(now_ms() + t);
                        let left = (due - now_ms()).max(0) as u64;
                        tokio::time::sleep(Duration::from_millis(left)).await;
                        t
                    }
                    None => std::future::pending().await,
                }
            };
            let ttl = async {
                match expires_at {
                    Some(at) => {
                        let left = (at.ms() - now_ms()).max(0) as u64;
                        tokio::time::sleep(Duration::from_millis(left)).await
                    }
                    None => std::future::pending().await,
                }
            };
            let done = tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle_cmd(cmd).await,
                    None => true,
                },
                _ = ttl => {
                    tracing::info!(vm = %self.id, "TTL expired: destroying");
                    if let Err(e) = self.destroy().await {
                        tracing::error!(vm = %self.id, error = %e, "TTL destroy failed");
                    }
                    true
                }
                _ = watch.tick() => self.check_alive().await,
                t = idle => {
                    // Still idle (nothing started since the timer was set)?
                    if self.activity.idle_due_ms(t).is_some_and(|due| due <= now_ms()) {
                        tracing::info!(vm = %self.id, "idle timeout: pausing");
                        if let Err(e) = self.pause().await {
                            tracing::warn!(vm = %self.id, error = %e, "idle pause failed");
                        }
                    }
                    false
                }
            };
            if done {
                break;
            }
        }
        // Unregister first so no new command arrives, then answer the queued ones.
        self.state
            .owners
            .lock()
            .expect("owners poisoned")
            .remove(&self.id);
        rx.close();
        let state = self.record().await.map(|v| v.state.to_string());
        let state = state.unwrap_or_else(|_| "gone".into());
        while let Ok(cmd) = rx.try_recv() {
            let err = || AppError::Conflict(format!("VM {} is {state}", self.id));
            match cmd {
                Cmd::Boot(_, r) | Cmd::Stop(r) => drop(r.send(Err(err()))),
                Cmd::Destroy(r) => drop(r.send(Err(err()))),
                Cmd::Handle(r) => drop(r.send(Err(err()))),
                Cmd::Pause(r) | Cmd::Resume(r) => drop(r.send(Err(err()))),
                Cmd::Firewall(_, r) => drop(r.send(Err(err()))),
                Cmd::Capture(_, r) => drop(r.send(Err(err()))),
            }
        }
    }

    async fn record(&self) -> Result<VmRecord> {
        self.state.store.vm(&self.id).await
    }

    /// Returns true when the VM is gone and the owner should exit.
    async fn handle_cmd(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Boot(permit, reply) => {
                let res = self.boot().await;
                drop(permit);
                // A failed boot leaves nothing to own; a refused one (wrong state) does.
                let gone = matches!(
                    self.record().await.map(|v| v.state),
                    Ok(VmState::Failed | VmState::Deleted)
                );
                let _ = reply.send(res);
                gone
            }
            Cmd::Stop(reply) => {
                let _ = reply.send(self.stop().await);
                false
            }
            Cmd::Destroy(reply) => {
                let _ = reply.send(self.destroy().await);
                true
            }
            Cmd::Handle(reply) => {
                let res = self.active_handle().await;
                let _ = reply.send(res.map(|h| (h, self.activity.busy())));
                false
            }
            Cmd::Pause(reply) => {
                let _ = reply.send(self.pause().await);
                false
            }
            Cmd::Resume(reply) => {
                let res = match self.active_handle().await {
                    Ok(_) => self.record().await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(res);
                false
            }
            Cmd::Firewall(spec, reply) => {
                let _ = reply.send(self.firewall(&spec).await);
                false
            }
            Cmd::Capture(dest, reply) => {
                let _ = reply.send(self.capture(&dest).await);
                false
            }
        }
    }

    async fn capture(&self, dest: &std::path::Path) -> Result<()> {
        let vm = self.record().await?;
        crate::image_ops::capture(&vm, self.handle.as_ref(), &self.state_dir(), dest).await
    }

    async fn firewall(&mut self, spec: &NetworkSpec) -> Result<VmRecord> {
        let h = self.active_handle().await?;
        let vm = self.record().await?;
        network::update_allowlist(&self.state, &vm, &h, spec).await?;
        self.record().await
    }

    /// The handle of a running VM, resuming it first when it is paused: a paused VM is
    /// resumed by whatever needs its guest. 409 in any other state.
    async fn active_handle(&mut self) -> Result<VmHandle> {
        let vm = self.record().await?;
        match (&self.handle, vm.state) {
            (Some(h), VmState::Running) => Ok(h.clone()),
            (Some(h), VmState::Paused) => {
                let h = h.clone();
                h.resume().await?;
                self.state
                    .store
                    .set_vm_state(&self.id, VmState::Running, None)
                    .await?;
                tracing::info!(vm = %self.id, "VM resumed");
                Ok(h)
            }
            _ => Err(AppError::Conflict(format!(
                "VM {} is {}, not running",
                self.id, vm.state
            ))),
        }
    }

    /// Freezes the guest (QEMU: its process stopped; Firecracker: `PATCH /vm Paused`).
    /// The row says `paused` only once the VMM has stopped.
    async fn pause(&mut self) -> Result<VmRecord> {
        let vm = self.record().await?;
        match (&self.handle, vm.state) {
            (Some(_), VmState::Paused) => Ok(vm),
            (Some(h), VmState::Running) => {
                h.pause().await?;
                self.state
                    .store
                    .set_vm_state(&self.id, VmState::Paused, None)
                    .await?;
                tracing::info!(vm = %self.id, "VM paused");
                self.record().await
            }
            _ => Err(AppError::Conflict(format!(
                "VM {} is {}, not running",
                self.id, vm.state
            ))),
        }
    }

    fn state_dir(&self) -> std::path::PathBuf {
        self.state.config.vms_dir().join(&self.id)
    }

    async fn boot(&mut self) -> Result<VmRecord> {
        let vm = self.record().await?;
        if !matches!(vm.state, VmState::Creating | VmState::Stopped) {
            return Err(AppError::Conflict(format!(
                "VM {} is {}; only stopped VMs can be started",
                self.id, vm.state
            )));
        }
        // A stopped VM keeps its overlay disk: reuse it so the guest's files survive.
        let overlay = match vm.state {
            VmState::Stopped => VmHandle::adopt(&self.state_dir())
                .ok()
                .map(|h| h.overlay_path)
                .filter(|p| p.exists()),
            _ => None,
        };
        self.state
            .store
            .set_vm_state(&self.id, VmState::Creating, None)
            .await?;
        match self.start_and_wait(&vm, overlay).await {
            Ok(()) => self.record().await,
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(vm = %self.id, error = %msg, "boot failed");
                self.state
                    .store
                    .set_vm_state(&self.id, VmState::Failed, Some(&msg))
                    .await?;
                self.cleanup().await;
                Err(e)
            }
        }
    }

    async fn start_and_wait(
        &mut self,
        vm: &VmRecord,
        overlay: Option<std::path::PathBuf>,
    ) -> Result<()> {
        let image = self.state.store.image(&vm.image_id).await?;
        let (Some(kernel), Some(rootfs)) = (image.kernel_path.clone(), image.rootfs_path.clone())
        else {
            return Err(AppError::Conflict(format!(
                "image {} has no kernel or rootfs yet",
                image.name
            )));
        };
        // Host network first: the VMM is started inside the VM's namespace, whose rules
        // exist before the guest can send a packet.
        let net = match &vm.network {
            Some(n) => Some(network::setup(&self.state, vm, n).await?),
            None => None,
        };
        let mut spec = vm_spec(
            &self.state,
            &self.id,
            (&kernel, &rootfs),
            vm.vcpus,
            vm.memory_mib,
        );
        spec.overlay = overlay;
        spec.net = net.as_ref().map(network::attachment);
        let vmm = self.state.vmm().await?;
        let started = Instant::now();
        let blame = |e| boot_failure(&self.id, &image, e);
        let handle = vmm.start(&spec).await.map_err(blame)?;
        self.handle = Some(handle.clone());
        let timeout = Duration::from_secs(self.state.config.defaults.boot_timeout_s);
        handle.wait_agent(timeout).await.map_err(blame)?;
        if let Some(info) = net.filter(|i| !i.allow.is_empty()) {
            network::guest_rules(&self.state, &handle, &info.allow).await?;
        }
        let boot_ms = started.elapsed().as_millis() as i64;
        self.state
            .store
            .set_vm_running(
                &self.id,
                &handle.kind.to_string(),
                &handle.accel.to_string(),
                now_ms(),
                boot_ms,
            )
            .await?;
        self.state.metrics.observe_boot(boot_ms);
        tracing::info!(vm = %self.id, boot_ms, "VM ready");
        Ok(())
    }

    async fn stop(&mut self) -> Result<VmRecord> {
        let vm = self.record().await?;
        // A paused VM stops too: the VMM layer resumes it first so the guest can flush.
        if !matches!(vm.state, VmState::Running | VmState::Paused) {
            return Err(AppError::Conflict(format!(
                "VM {} is {}, not running",
                self.id, vm.state
            )));
        }
        self.state
            .store
            .set_vm_state(&self.id, VmState::Stopped, None)
            .await?;
        if let Some(h) = self.handle.take() {
            h.stop(STOP_GRACE).await?;
        }
        // The block stays with the VM: start sets the same addresses up again.
        if vm.network.is_some() {
            network::teardown(&self.state, &self.id).await;
        }
        self.record().await
    }

    async fn destroy(&mut self) -> Result<()> {
        self.state
            .store
            .set_vm_state(&self.id, VmState::Deleted, None)
            .await?;
        self.cleanup().await;
        Ok(())
    }

    /// Removes every process and file of the VM, whatever state the dir is in, then its
    /// host network (only once the VMM is gone) and, the VM being dead, its address block.
    async fn cleanup(&mut self) {
        let handle = self
            .handle
            .take()
            .or_else(|| VmHandle::adopt(&self.state_dir()).ok());
        remove_vm_files(handle, &self.state_dir()).await;
        if self.record().await.is_ok_and(|v| v.network.is_some()) {
            network::teardown(&self.state, &self.id).await;
        }
    }

    /// Notices a VM whose processes died under it (guest panic, OOM kill).
    async fn check_alive(&mut self) -> bool {
        let Some(h) = &self.handle else { return false };
        if h.is_alive() {
            return false;
        }
        let detail = h.console_tail(1000);
        let msg = format!("VM processes exited unexpectedly; console tail: {detail}");
        tracing::warn!(vm = %self.id, "VM died");
        if let Err(e) = self
            .state
            .store
            .set_vm_state(&self.id, VmState::Failed, Some(&msg))
            .await
        {
            tracing::error!(vm = %self.id, error = %e, "recording failure");
            return false;
        }
        self.cleanup().await;
        true
    }
}

/// The spec of VM `id` from an image's (kernel, rootfs): its own state dir under `vms/`,
/// the image's template layers, a new overlay, no NIC.
pub(crate) fn vm_spec(
    state: &AppState,
    id: &str,
    (kernel, rootfs): (&str, &str),
    vcpus: u8,
    memory_mib: u32,
) -> VmSpec {
    // Template layers live next to the rootfs, named by the image's manifest.
    let layers = std::path::Path::new(rootfs)
        .parent()
        .map(hearth_image::layers_of)
        .unwrap_or_default();
    VmSpec {
        id: id.to_string(),
        kernel: kernel.into(),
        rootfs: rootfs.into(),
        vcpus,
        memory_mib,
        state_dir: state.config.vms_dir().join(id),
        overlay: None,
        overlay_size_mib: state.config.defaults.overlay_size_mib,
        layers,
        net: None,
        extra_cmdline: vec![],
    }
}

/// A boot permit, or 429 when `max_concurrent_boots` boots are under way.
pub fn boot_permit(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit> {
    state.boots.clone().try_acquire_owned().map_err(|_| {
        AppError::TooManyRequests(format!(
            "{} VMs are booting already (limit max_concurrent_boots); retry shortly",
            state.config.limits.max_concurrent_boots
        ))
    })
}

/// Who a failed boot is on. A guest that dies or never answers is ours to explain (500)
/// with an image we built; with one uploaded through the API its kernel or rootfs may be
/// anything, so the caller hears which image and where to look (409: the image is not in
/// a state to boot), and the log keeps the VMM's own words.
fn boot_failure(vm: &str, image: &Image, e: hearth_vmm::Error) -> AppError {
    use hearth_vmm::Error as E;
    let guest = matches!(e, E::Spawn(_) | E::VmDied { .. } | E::AgentTimeout(..));
    if !(guest && image.source == ImageSource::Api) {
        return AppError::Vmm(e);
    }
    tracing::warn!(vm, image = %image.name, error = %e, "VM did not boot from an uploaded image");
    AppError::Conflict(format!(
        "VM {vm} did not boot from image {}, which was uploaded through the API: check its \
         kernel and rootfs (GET /v1/vms/{vm}/logs shows the console)",
        image.name
    ))
}

/// Kills the processes named in the VM's metadata (if any) and removes its state dir.
pub async fn remove_vm_files(handle: Option<VmHandle>, dir: &std::path::Path) {
    if let Some(h) = handle {
        if let Err(e) = h.destroy().await {
            tracing::error!(dir = %dir.display(), error = %e, "destroying VM");
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::error!(dir = %dir.display(), error = %e, "removing VM dir");
        }
    }
}
