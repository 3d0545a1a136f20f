//! A VM's state dir before a VMM starts in it; shared by every backend.

use std::path::Path;

use crate::handle::VmHandle;
use crate::{overlay, Error, Result, VmSpec};

/// Creates the state dir and the overlay (unless reusing one), removing sockets a
/// previous run of this VM left behind (binding would fail on them).
pub(crate) fn prepare(spec: &VmSpec, overlay_path: &Path, sockets: &[&Path]) -> Result<()> {
    std::fs::create_dir_all(&spec.state_dir).map_err(|e| Error::io(&spec.state_dir, e))?;
    // Two VMMs on one overlay would corrupt it: refuse while a previous run lives.
    if let Ok(old) = VmHandle::adopt(&spec.state_dir) {
        if old.procs.iter().any(|p| p.is_alive()) {
            return Err(Error::Spawn(format!(
                "a VM is still running in {} (pids {:?})",
                spec.state_dir.display(),
                old.pids
            )));
        }
    }
    for s in sockets {
        let _ = std::fs::remove_file(s);
    }
    match &spec.overlay {
        Some(existing) if !existing.exists() => Err(Error::io(
            existing,
            std::io::Error::new(std::io::ErrorKind::NotFound, "overlay to reuse is missing"),
        )),
        Some(_) => Ok(()),
        None if overlay_path.exists() => Ok(()),
        None => overlay::create(&spec.rootfs, overlay_path, spec.overlay_size_mib),
    }
}
