//! Capturing a VM's overlay disk for a template: a running VM's file system is frozen
//! through its agent for exactly the copy (a reflink or a sparse extent copy, see
//! [`crate::overlay::clone_sparse`]) and thawed afterwards, whatever the copy did; a
//! stopped VM's disk is copied as it is.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::{overlay, Result, VmHandle};

/// Longer than any sane copy of a sparse overlay; the guest thaws by itself after it.
const AUTO_THAW: Duration = Duration::from_secs(60);

/// Copies the running VM's overlay disk to `dest` (which must not exist) while its file
/// system is frozen; returns how long the guest was frozen.
pub async fn capture_running(vm: &VmHandle, dest: &Path) -> Result<Duration> {
    let agent = vm.agent();
    agent.freeze(AUTO_THAW).await?;
    let started = Instant::now();
    let (src, dst) = (vm.overlay_path.clone(), dest.to_path_buf());
    let copied = tokio::task::spawn_blocking(move || overlay::clone_sparse(&src, &dst))
        .await
        .map_err(|e| crate::Error::Spawn(format!("copy task: {e}")));
    let frozen = started.elapsed();
    let thawed = agent.thaw().await;
    copied??;
    thawed?;
    Ok(frozen)
}

/// Copies a stopped VM's overlay disk.
pub fn capture_stopped(overlay_disk: &Path, dest: &Path) -> Result<()> {
    overlay::clone_sparse(overlay_disk, dest)
}
