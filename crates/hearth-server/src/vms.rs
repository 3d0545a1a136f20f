//! VM operations shared by the HTTP routes and the job workers. These are the internal
//! entry points: [`create_vm`] (validate, insert with an address block when networked,
//! boot, wait for the agent) and [`destroy_vm`]; [`running_handle`] gives a running VM's
//! handle for agent calls.

use hearth_api::vms::CreateVm;
use hearth_api::Validate;
use hearth_vmm::VmHandle;

use crate::error::{AppError, Result};
use crate::models::{now_ms, vm_network, Timestamp, Vm, VmRecord, VmState};
use crate::owner::{self, Cmd};
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
    let permit = owner::boot_permit(state)?;
    let created_at = now_ms();
    let mut vm = VmRecord {
        image_id: image.id.clone(),
        env: req.env,
        vm: Vm {
            id: uuid::Uuid::new_v4().to_string(),
            state: VmState::Creating,
            image: image.name.clone(),
            vcpus: req.vcpus.unwrap_or(defaults.vcpus),
            memory_mib: req.memory_mib.unwrap_or(defaults.memory_mib),
            vmm: None,
            accel: None,
            created_at: Timestamp::from_ms(created_at),
            ready_at: None,
            boot_ms: None,
            ttl_s: req.ttl_s.map(|t| t as i64),
            expires_at: req
                .ttl_s
                .map(|t| Timestamp::from_ms(created_at + (t as i64) * 1000)),
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
        if live >= limits.max_vms as i64 {
            return Err(AppError::Conflict(format!(
                "{live} VMs exist (limit max_vms = {}); delete one first",
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

/// The record and handle of a running VM (404 unknown, 409 not running).
pub async fn running_handle(state: &AppState, id: &str) -> Result<(VmRecord, VmHandle)> {
    let vm = state.store.vm(id).await?;
    let h = owner::ask(state, id, Cmd::Handle).await?;
    Ok((vm, h))
}
