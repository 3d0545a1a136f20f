//! Keeping the pool full: boots in the background, bounded by `max_concurrent_boots`
//! (half its slots, at least one) and `max_vms`, with a back-off per spec whose boots fail.

use std::time::{Duration, Instant};

use hearth_vmm::VmHandle;

use super::{destroy, resolve_all, SpecKey, Warm, MARKER};
use crate::error::{AppError, Result};
use crate::models::VmState;
use crate::owner::{remove_vm_files, vm_spec};
use crate::AppState;

/// How often the refill loop looks again without being woken (dead VMs, capacity).
const RECHECK: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The refill loop; runs for the life of the server.
pub async fn run(state: AppState) {
    loop {
        refill(&state).await;
        tokio::select! {
            _ = state.pool.wake.notified() => {}
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}

async fn refill(state: &AppState) {
    let pool = &state.pool;
    resolve_all(state, pool).await;
    let live = state
        .store
        .count_vms(&VmState::LIVE)
        .await
        .unwrap_or(i64::MAX);
    let max_boots = (state.config.limits.max_concurrent_boots / 2).max(1);
    let mut starts = vec![];
    {
        let mut entries = pool.lock();
        let mut total: u32 = entries
            .iter()
            .map(|e| e.ready.len() as u32 + e.booting)
            .sum();
        let mut booting: u32 = entries.iter().map(|e| e.booting).sum();
        for (idx, e) in entries.iter_mut().enumerate() {
            let Some(key) = e.key.clone() else { continue };
            if e.retry_at.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            while e.ready.len() as u32 + e.booting < e.target
                && booting < max_boots
                && live + (total as i64) < state.config.limits.max_vms as i64
            {
                let Ok(permit) = state.boots.clone().try_acquire_owned() else {
                    break;
                };
                e.booting += 1;
                booting += 1;
                total += 1;
                starts.push((idx, key.clone(), permit));
            }
        }
    }
    for (idx, key, permit) in starts {
        let state = state.clone();
        tokio::spawn(async move {
            let res = boot(&state, &key).await;
            drop(permit);
            finish(&state, idx, &key, res).await;
        });
    }
}

/// Boots one pool VM of `key`. Its dir is marked before the VMM starts, so a crash at
/// any point leaves something reconciliation recognises.
async fn boot(state: &AppState, key: &SpecKey) -> Result<Warm> {
    let id = uuid::Uuid::new_v4().to_string();
    let dir = state.config.vms_dir().join(&id);
    let image = state.store.image(&key.image_id).await?;
    let (Some(kernel), Some(rootfs)) = (image.kernel_path.clone(), image.rootfs_path.clone())
    else {
        return Err(AppError::Conflict(format!(
            "image {} is not ready",
            image.name
        )));
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| AppError::io(format!("creating {}", dir.display()), e))?;
    let marker = serde_json::to_vec(key).expect("key serializes");
    std::fs::write(dir.join(MARKER), marker)
        .map_err(|e| AppError::io("writing the pool marker", e))?;
    let spec = vm_spec(state, &id, (&kernel, &rootfs), key.vcpus, key.memory_mib);
    let started = Instant::now();
    let vmm = state.vmm().await?;
    let handle = match vmm.start(&spec).await {
        Ok(h) => h,
        Err(e) => {
            remove_vm_files(VmHandle::adopt(&dir).ok(), &dir).await;
            return Err(e.into());
        }
    };
    let timeout = Duration::from_secs(state.config.defaults.boot_timeout_s);
    if let Err(e) = handle.wait_agent(timeout).await {
        remove_vm_files(Some(handle), &dir).await;
        return Err(e.into());
    }
    // The first exec in a new VM costs ~1.4 s under TCG (code translated and read from
    // disk for the first time: sh, the loader, libc, the kernel's fork/exec, cgroup and
    // seccomp paths), the next ones ~80 ms. A warm VM pays that here, in the background,
    // not in its user's first call. `true` writes nothing, so the VM stays fresh.
    let warm_up = hearth_proto::ExecRequest {
        cmd: "true".into(),
        ..Default::default()
    };
    match handle.agent().exec(&warm_up).await {
        Ok(r) if r.exit_code == 0 => {}
        Ok(r) => {
            remove_vm_files(Some(handle), &dir).await;
            return Err(AppError::Internal(format!(
                "warm-up exec exited {}: {}",
                r.exit_code, r.stderr
            )));
        }
        Err(e) => {
            remove_vm_files(Some(handle), &dir).await;
            return Err(AppError::Internal(format!("warm-up exec: {e}")));
        }
    }
    let boot_ms = started.elapsed().as_millis() as i64;
    state.metrics.observe_boot(boot_ms);
    Ok(Warm {
        id,
        handle,
        boot_ms,
    })
}

/// Records the outcome of a boot for entry `idx` (entries never move). A VM booted for
/// an image the entry no longer means is destroyed.
async fn finish(state: &AppState, idx: usize, key: &SpecKey, res: Result<Warm>) {
    let pool = &state.pool;
    let leftover = {
        let mut entries = pool.lock();
        let e = &mut entries[idx];
        e.booting -= 1;
        match res {
            Ok(w) if e.key.as_ref() == Some(key) => {
                e.failures = 0;
                e.retry_at = None;
                tracing::info!(vm = %w.id, boot_ms = w.boot_ms, "warm VM ready");
                e.ready.push_back(w);
                None
            }
            Ok(w) => Some(w),
            Err(err) => {
                e.failures += 1;
                let backoff = Duration::from_secs(1 << e.failures.min(9)).min(MAX_BACKOFF);
                e.retry_at = Some(Instant::now() + backoff);
                tracing::warn!(error = %err, ?backoff, "warm VM boot failed");
                None
            }
        }
    };
    if let Some(w) = leftover {
        destroy(w).await;
    }
    pool.wake.notify_one();
}
