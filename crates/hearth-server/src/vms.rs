//! VM operations shared by the HTTP routes and the job workers. These are the internal
//! entry points: [`create_vm`] (validate, insert with an address block when networked,
//! boot, wait for the agent) and [`destroy_vm`]; [`running_handle`] gives a running VM's
//! handle for agent calls.

use std::time::Duration;

use hearth_api::vms::CreateVm;
use hearth_api::Validate;
use hearth_vmm::VmHandle;

use crate::activity::Busy;
use crate::error::{AppError, Result};
use crate::models::{now_ms, vm_network, Timestamp, Vm, VmRecord, VmState};
use crate::owner::{self, Cmd};
use crate::pool::SpecKey;
use crate::AppState;

/// Validates `req` against the limits, records the VM as `creating`, boots it and
/// returns once its agent answers (state `running`). On a failed boot the VM is left
/// `failed` (files cleaned) and the error returned.
pub async fn create_vm(state: &AppState, req: CreateVm) -> Result<VmRecord> {
    // The route validated already; job workers come here directly.
    req.validate(&state.api_limits)?;
    let limits = &state.config.limits;
    let defaults = &state.config.defaults;
    if let Some(n) = &req.network {
        crate::network::check_syntax(n)?;
    }
    let image = match &req.image {
        Some(name) => state.store.image(name).await?,
        None => state.store.default_image().await?.ok_or_else(|| {
            AppError::Conflict("no default image: build one or register one first".into())
        })?,
    };
    if !image.ready {
        return Err(AppError::Conflict(format!(
            "image {} has no kernel or rootfs yet",
            image.name
        )));
    }
    // Before the boot permit: a refused network (bad entry, host cannot) leaves no trace.
    let network = crate::network::check_request(state, req.network.as_ref()).await?;
    let vcpus = req.vcpus.unwrap_or(defaults.vcpus);
    let memory_mib = req.memory_mib.unwrap_or(defaults.memory_mib);
    let idle_timeout_s = req
        .idle_timeout_s
        .or(defaults.idle_timeout_s)
        .map(|s| s as i64);
    // A warm VM of this spec, when there is one: no boot at all. (Pool VMs have no NIC.)
    let key = SpecKey {
        image_id: image.id.clone(),
        vcpus,
        memory_mib,
    };
    if network.is_none() && state.pool.wants(&key) {
        while let Some(warm) = state.pool.claim(&key) {
            let now = now_ms();
            let vm = VmRecord {
                image_id: image.id.clone(),
                env: req.env.clone(),
                vm: Vm {
                    id: warm.id.clone(),
                    state: VmState::Running,
                    image: image.name.clone(),
                    vcpus,
                    memory_mib,
                    vmm: Some(warm.handle.kind.to_string()),
                    accel: Some(warm.handle.accel.to_string()),
                    created_at: Timestamp::from_ms(now),
                    ready_at: Some(Timestamp::from_ms(now)),
                    boot_ms: Some(warm.boot_ms),
                    ttl_s: req.ttl_s.map(|t| t as i64),
                    expires_at: req
                        .ttl_s
                        .map(|t| Timestamp::from_ms(now + (t as i64) * 1000)),
                    idle_timeout_s,
                    metadata: req.metadata.clone(),
                    error: None,
                    network: None,
                },
            };
            match take_warm(state, vm.clone(), warm).await {
                Ok(()) => return Ok(vm),
                Err(e) => tracing::warn!(vm = %vm.id, error = %e, "a warm VM failed its claim"),
            }
        }
    }
    let permit = owner::boot_permit(state)?;
    let created_at = now_ms();
    let mut vm = VmRecord {
        image_id: image.id.clone(),
        env: req.env,
        vm: Vm {
            id: uuid::Uuid::new_v4().to_string(),
            state: VmState::Creating,
            image: image.name.clone(),
            vcpus,
            memory_mib,
            vmm: None,
            accel: None,
            created_at: Timestamp::from_ms(created_at),
            ready_at: None,
            boot_ms: None,
            ttl_s: req.ttl_s.map(|t| t as i64),
            expires_at: req
                .ttl_s
                .map(|t| Timestamp::from_ms(created_at + (t as i64) * 1000)),
            idle_timeout_s,
            metadata: req.metadata,
            error: None,
            network: network.map(|n| vm_network(n.allow, None)),
        },
    };
    {
        // Count and insert under one lock so parallel creates cannot overshoot max_vms
        // and never pick the same address block.
        let _guard = state.create_lock.lock().await;
        let live = state.store.count_vms(&VmState::LIVE).await?;
        // Warm VMs count too; one makes room for a create that could not use it.
        let max = limits.max_vms as i64;
        while live + state.pool.total() as i64 >= max && live < max && state.pool.evict_one() {}
        if live + state.pool.total() as i64 >= max {
            return Err(AppError::Conflict(format!(
                "{live} VMs exist and {} warm ones are booting (limit max_vms = {}); delete one first",
                state.pool.total(),
                limits.max_vms
            )));
        }
        if let Some(n) = &vm.network {
            let subnet = crate::network::allocate(state).await?;
            vm.network = Some(vm_network(n.allow.clone(), Some(subnet)));
        }
        state.store.insert_vm(&vm).await?;
    }
    owner::spawn(state, &vm.id, None);
    owner::ask(state, &vm.id, |r| Cmd::Boot(permit, r)).await
}

/// Makes a claimed warm VM `vm`: checks that its agent answers, writes its row (the VM
/// is the user's from here on), drops its pool marker and starts its owner. On an error
/// the VM is destroyed and the caller tries another or boots one.
async fn take_warm(state: &AppState, vm: VmRecord, warm: crate::pool::Warm) -> Result<()> {
    let check = tokio::time::timeout(Duration::from_secs(5), warm.handle.agent().health()).await;
    if let Err(e) = check
        .map_err(|_| "no answer within 5 s".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        state.pool.discard(warm);
        return Err(AppError::Internal(format!("warm VM's agent: {e}")));
    }
    if let Err(e) = state.store.insert_vm(&vm).await {
        state.pool.discard(warm);
        return Err(e);
    }
    let _ = std::fs::remove_file(warm.handle.state_dir.join(crate::pool::MARKER));
    owner::spawn(state, &vm.id, Some(warm.handle));
    Ok(())
}

/// Destroys the VM: state `deleted` first, then processes and files go.
pub async fn destroy_vm(state: &AppState, id: &str) -> Result<()> {
    let vm = state.store.vm(id).await?;
    match owner::ask(state, id, Cmd::Destroy).await {
        // No owner: failed/deleted VMs hold nothing; mark failed ones deleted.
        Err(AppError::Conflict(_)) if vm.state != VmState::Deleted => {
            state
                .store
                .set_vm_state(id, VmState::Deleted, vm.error.as_deref())
                .await
        }
        Err(AppError::Conflict(_)) => {
            Err(AppError::NotFound(format!("VM {id} is already deleted")))
        }
        other => other,
    }
}

/// A VM as the API shows it: a deleted VM is gone (404), though its record stays (for
/// `GET /v1/vms?state=deleted`, the job that used it, and reconciliation).
pub async fn visible_vm(state: &AppState, id: &str) -> Result<VmRecord> {
    let vm = state.store.vm(id).await?;
    if vm.state == VmState::Deleted {
        return Err(AppError::NotFound(format!("VM {id} was deleted")));
    }
    Ok(vm)
}

/// Freezes a running VM in memory; any later call that needs its guest resumes it.
pub async fn pause_vm(state: &AppState, id: &str) -> Result<VmRecord> {
    visible_vm(state, id).await?;
    owner::ask(state, id, Cmd::Pause).await
}

pub async fn resume_vm(state: &AppState, id: &str) -> Result<VmRecord> {
    visible_vm(state, id).await?;
    owner::ask(state, id, Cmd::Resume).await
}

pub async fn stop_vm(state: &AppState, id: &str) -> Result<VmRecord> {
    state.store.vm(id).await?;
    owner::ask(state, id, Cmd::Stop).await
}

pub async fn start_vm(state: &AppState, id: &str) -> Result<VmRecord> {
    let vm = state.store.vm(id).await?;
    if vm.state != VmState::Stopped {
        return Err(AppError::Conflict(format!(
            "VM {id} is {}; only stopped VMs can be started",
            vm.state
        )));
    }
    let permit = owner::boot_permit(state)?;
    owner::ask(state, id, |r| Cmd::Boot(permit, r)).await
}

/// The record and handle of a running VM (404 unknown, 409 not running; a paused VM is
/// resumed first). Hold the [`Busy`] for as long as the call uses the guest: the VM's
/// idle timeout does not run meanwhile.
pub async fn running_handle(state: &AppState, id: &str) -> Result<(VmRecord, VmHandle, Busy)> {
    let vm = state.store.vm(id).await?;
    let (h, busy) = owner::ask(state, id, Cmd::Handle).await?;
    Ok((vm, h, busy))
}
