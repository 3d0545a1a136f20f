//! What this host can run: KVM present/usable (PVM hosts are not), binaries and versions.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

/// Facts `hearth doctor` reports and `select` decides from.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub kvm_present: bool,
    pub kvm_usable: bool,
    /// Why KVM is not usable, when it is not.
    pub kvm_reason: Option<String>,
    pub qemu_version: Option<String>,
    pub firecracker_version: Option<String>,
    pub vhost_device_vsock_version: Option<String>,
    pub qemu_bin: Option<PathBuf>,
    pub firecracker_bin: Option<PathBuf>,
    pub vhost_device_vsock_bin: Option<PathBuf>,
}

pub const QEMU: &str = "qemu-system-x86_64";
pub const FIRECRACKER: &str = "firecracker";
pub const VHOST_VSOCK: &str = "vhost-device-vsock";

/// Marker of a PVM host: its KVM only runs guests built for PVM, and a standard kernel
/// dies early with `KVM_EXIT_INTERNAL_ERROR` (see shared/ENVIRONMENT.md).
const PVM_MODULE: &str = "/sys/module/kvm_pvm";

/// KVM state: (present, usable, why not usable).
pub fn kvm() -> (bool, bool, Option<String>) {
    kvm_at(Path::new("/dev/kvm"), Path::new(PVM_MODULE))
}

fn kvm_at(dev: &Path, pvm_marker: &Path) -> (bool, bool, Option<String>) {
    if !dev.exists() {
        return (
            false,
            false,
            Some(format!("{} does not exist", dev.display())),
        );
    }
    // Opening is the real test: the node can exist while this user lacks the `kvm` group.
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        return (
            false,
            false,
            Some(format!("cannot open {}: {e}", dev.display())),
        );
    }
    if pvm_marker.exists() {
        return (
            true,
            false,
            Some("PVM host: standard guest kernels die with KVM_EXIT_INTERNAL_ERROR".into()),
        );
    }
    (true, true, None)
}

/// Finds `name` on PATH, then in the places `cargo install` and manual installs use
/// (a service started without a login shell often lacks `~/.cargo/bin` on PATH).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.push("/usr/local/bin".into());
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// First line of `<bin> --version`; `None` when it does not run.
pub fn version_of(bin: &Path) -> Option<String> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

impl HostReport {
    pub fn probe() -> HostReport {
        let (kvm_present, kvm_usable, kvm_reason) = kvm();
        // The same overrides `Selection::from_env` honours, so doctor reports what runs.
        let pick = |var: &str, name: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| find_binary(name))
        };
        let qemu_bin = pick("HEARTH_QEMU_BIN", QEMU);
        let firecracker_bin = pick("HEARTH_FIRECRACKER_BIN", FIRECRACKER);
        let vhost_device_vsock_bin = pick("HEARTH_VHOST_VSOCK_BIN", VHOST_VSOCK);
        HostReport {
            kvm_present,
            kvm_usable,
            kvm_reason,
            qemu_version: qemu_bin.as_deref().and_then(version_of),
            firecracker_version: firecracker_bin.as_deref().and_then(version_of),
            vhost_device_vsock_version: vhost_device_vsock_bin.as_deref().and_then(version_of),
            qemu_bin,
            firecracker_bin,
            vhost_device_vsock_bin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_states_follow_the_device_and_the_pvm_marker() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("kvm");
        let marker = dir.path().join("kvm_pvm");
        let (present, usable, why) = kvm_at(&dev, &marker);
        assert!(!present && !usable && why.unwrap().contains("does not exist"));

        std::fs::write(&dev, b"").unwrap();
        assert_eq!(kvm_at(&dev, &marker), (true, true, None));

        std::fs::create_dir(&marker).unwrap();
        let (present, usable, why) = kvm_at(&dev, &marker);
        assert!(present && !usable && why.unwrap().starts_with("PVM host"));
    }

    #[test]
    fn this_host_reports_pvm_as_unusable() {
        // These machines are PVM hosts; elsewhere the check is vacuous.
        if Path::new(PVM_MODULE).exists() {
            let r = HostReport::probe();
            assert!(!r.kvm_usable);
            assert!(r.kvm_reason.unwrap().contains("PVM"));
        }
    }

    #[test]
    fn versions_of_installed_tools_are_read() {
        if let Some(q) = find_binary(QEMU) {
            let v = version_of(&q).unwrap();
            assert!(v.contains("QEMU"), "{v}");
        }
        assert!(version_of(Path::new("/nonexistent/bin")).is_none());
    }
}
