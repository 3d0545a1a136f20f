//! What this host can run: KVM present/usable (PVM hosts are not), binaries and versions.
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
}

impl HostReport {
    pub fn probe() -> HostReport {
        todo!("vmm helper")
    }
}
