//! Shared by the tests that start a real `hearth serve`: a data dir that takes its
//! VMs with it.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;

use serde_json::Value;

/// A temp `HEARTH_DATA_DIR` that, when dropped, kills the VM processes recorded under
/// its `vms/`. A server stopped gracefully leaves its VMs running by design (it re-adopts
/// them on start), so without this a test that ends early, or panics, would leave VMs
/// burning CPU after their directory is gone.
pub struct DataDir(tempfile::TempDir);

impl DataDir {
    pub fn new() -> DataDir {
        DataDir(tempfile::tempdir().unwrap())
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let Ok(rd) = std::fs::read_dir(self.path().join("vms")) else {
            return;
        };
        for entry in rd.flatten() {
            let Ok(meta) = std::fs::read(entry.path().join("vm.json")) else {
                continue;
            };
            let v: Value = serde_json::from_slice(&meta).unwrap_or_default();
            for pid in v["pids"].as_array().into_iter().flatten() {
                let Some(pid) = pid.as_i64() else { continue };
                // Only a process whose command line names this VM's dir (a stale pid may
                // have been reused by someone else's process).
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let dir = entry.path().display().to_string();
                if String::from_utf8_lossy(&cmdline).contains(&dir) {
                    // SAFETY: kill(2) on a VM process of this test.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
    }
}
