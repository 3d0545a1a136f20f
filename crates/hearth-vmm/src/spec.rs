use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmmKind {
    Qemu,
    Firecracker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for VmmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmmKind::Qemu => "qemu",
            VmmKind::Firecracker => "firecracker",
        })
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// What the operator asked for (`HEARTH_VMM`, `HEARTH_ACCEL`); `None` means auto.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub vmm: Option<VmmKind>,
    pub accel: Option<Accel>,
    /// Explicit binaries; default: looked up on PATH.
    pub qemu_bin: Option<PathBuf>,
    pub firecracker_bin: Option<PathBuf>,
    pub vhost_vsock_bin: Option<PathBuf>,
    /// Optional jailer for Firecracker, used only with a uid/gid.
    pub jailer_bin: Option<PathBuf>,
    pub jailer_uid_gid: Option<(u32, u32)>,
}

/// Everything needed to boot one VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub id: String,
    pub kernel: PathBuf,
    /// Base rootfs, attached read-only as `/dev/vda` and shared by every VM.
    pub rootfs: PathBuf,
    pub vcpus: u8,
    pub memory_mib: u32,
    /// Per-VM directory that will hold every file of this VM (sockets, overlay, logs).
    pub state_dir: PathBuf,
    /// Overlay disk to reuse (a stopped VM being started again); `None` creates a fresh one.
    pub overlay: Option<PathBuf>,
    /// Size of a fresh overlay disk (sparse).
    pub overlay_size_mib: u32,
    pub net: Option<NetAttachment>,
    /// Extra words for the kernel command line.
    pub extra_cmdline: Vec<String>,
}

/// A TAP device prepared by the networking layer for this VM.
#[derive(Debug, Clone)]
pub struct NetAttachment {
    pub tap: String,
    /// Network namespace the TAP lives in; the VMM process is started inside it.
    pub netns: Option<String>,
    pub mac: String,
    pub guest: hearth_proto::GuestNet,
}
