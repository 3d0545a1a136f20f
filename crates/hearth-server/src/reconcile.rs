//! Start-up reconciliation: make the processes and files under `vms/` agree with the store
//! after any kind of stop (graceful, crash, SIGKILL, host reboot).
//!
//! | store says | found | result |
//! |---|---|---|
//! | `running`/`paused` | processes alive | re-adopted as they are: an owner takes the handle again |
//! | `running`/`paused` | processes gone | `failed`, files removed |
//! | `creating` | anything | `failed` (a boot is not resumed), processes and files removed |
//! | `stopped` | anything | processes killed if any, overlay kept, owner started |
//! | `failed`/`deleted` | leftovers | processes killed, files removed |
//! | nothing | a warm VM's dir (`pool.json` in it) | back into the pool if alive and wanted, else removed |
//! | nothing | any other dir under `vms/` | processes killed, dir removed |
//!
//! Host networks (netns, nftables table, veth) are kept only for re-adopted running VMs;
//! the rest are removed and the address blocks of failed/deleted VMs freed
//! ([`crate::network::reconcile`]). A stopped VM gets its network again on start.

use std::collections::HashSet;

use hearth_vmm::VmHandle;

use crate::error::Result;
use crate::models::VmState;
use crate::owner::{self, remove_vm_files};
use crate::AppState;

pub async fn reconcile(state: &AppState) -> Result<()> {
    let vms_dir = state.config.vms_dir();
    let all = state.store.list_vms(&[]).await?;
    let known: HashSet<String> = all.iter().map(|v| v.id.clone()).collect();
    let (mut adopted, mut failed, mut cleaned) = (0, 0, 0);
    let mut running = vec![];
    for vm in all {
        let dir = vms_dir.join(&vm.id);
        let handle = VmHandle::adopt(&dir).ok();
        match vm.state {
            // A paused VM's VMM is still there (stopped): re-adopted as it is.
            VmState::Running | VmState::Paused => match handle {
                Some(h) if h.is_alive() => {
                    owner::spawn(state, &vm.id, Some(h));
                    running.push(vm.id.clone());
                    adopted += 1;
                }
                h => {
                    let msg = "VMM processes were gone when the server started";
                    state
                        .store
                        .set_vm_state(&vm.id, VmState::Failed, Some(msg))
                        .await?;
                    remove_vm_files(h, &dir).await;
                    failed += 1;
                }
            },
            VmState::Creating => {
                let msg = "server stopped while the VM was booting";
                state
                    .store
                    .set_vm_state(&vm.id, VmState::Failed, Some(msg))
                    .await?;
                remove_vm_files(handle, &dir).await;
                failed += 1;
            }
            VmState::Stopped => {
                // A crash between "write stopped" and "stop" leaves processes: stop now.
                if let Some(h) = handle.filter(|h| h.procs.iter().any(|p| p.is_alive())) {
                    if let Err(e) = h.stop(std::time::Duration::from_secs(5)).await {
                        tracing::error!(vm = %vm.id, error = %e, "stopping leftover processes");
                    }
                }
                owner::spawn(state, &vm.id, None);
            }
            VmState::Failed | VmState::Deleted => {
                if dir.exists() {
                    remove_vm_files(handle, &dir).await;
                    cleaned += 1;
                }
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(&vms_dir) {
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !known.contains(&name) {
                let dir = entry.path();
                if dir.join(crate::pool::MARKER).exists() {
                    state.pool.adopt(state, &dir).await;
                    continue;
                }
                tracing::warn!(dir = %dir.display(), "removing VM dir unknown to the store");
                remove_vm_files(VmHandle::adopt(&dir).ok(), &dir).await;
                cleaned += 1;
            }
        }
    }
    // Every VM process that should not run is gone now, so no namespace is still in use.
    crate::network::reconcile(state, running).await;
    tracing::info!(adopted, failed, cleaned, "reconciled VMs");
    Ok(())
}
