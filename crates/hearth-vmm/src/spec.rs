use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// `HEARTH_FORCE_KVM=1`: use KVM (and allow Firecracker) even where detection says it
    /// is unusable. Exists to exercise the Firecracker API path on PVM hosts, where the
    /// guest then dies; never useful in production.
    pub force_kvm: bool,
}

impl Selection {
    /// Reads `HEARTH_VMM`, `HEARTH_ACCEL`, `HEARTH_FORCE_KVM` and the optional binary
    /// overrides `HEARTH_QEMU_BIN`, `HEARTH_FIRECRACKER_BIN`, `HEARTH_VHOST_VSOCK_BIN`,
    /// `HEARTH_JAILER_BIN`, `HEARTH_JAILER_UID_GID` (`UID:GID`).
    pub fn from_env() -> crate::Result<Selection> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut sel =
            Selection::parse(var("HEARTH_VMM").as_deref(), var("HEARTH_ACCEL").as_deref())?;
        sel.force_kvm = matches!(
            var("HEARTH_FORCE_KVM").as_deref(),
            Some("1" | "true" | "yes")
        );
        sel.qemu_bin = var("HEARTH_QEMU_BIN").map(PathBuf::from);
        sel.firecracker_bin = var("HEARTH_FIRECRACKER_BIN").map(PathBuf::from);
        sel.vhost_vsock_bin = var("HEARTH_VHOST_VSOCK_BIN").map(PathBuf::from);
        sel.jailer_bin = var("HEARTH_JAILER_BIN").map(PathBuf::from);
        if let Some(v) = var("HEARTH_JAILER_UID_GID") {
            let parsed = v
                .split_once(':')
                .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
            sel.jailer_uid_gid = Some(parsed.ok_or_else(|| crate::Error::BadSetting {
                name: "HEARTH_JAILER_UID_GID",
                value: v.clone(),
                expected: "UID:GID, e.g. 990:990",
            })?);
        }
        Ok(sel)
    }

    /// Parses the two operator choices; `None`, empty and `auto` all mean "decide from
    /// the host".
    pub fn parse(vmm: Option<&str>, accel: Option<&str>) -> crate::Result<Selection> {
        let vmm = match vmm.map(str::trim) {
            None | Some("" | "auto") => None,
            Some("qemu") => Some(VmmKind::Qemu),
            Some("firecracker") => Some(VmmKind::Firecracker),
            Some(other) => {
                return Err(crate::Error::BadSetting {
                    name: "HEARTH_VMM",
                    value: other.to_string(),
                    expected: "auto, qemu or firecracker",
                })
            }
        };
        let accel = match accel.map(str::trim) {
            None | Some("" | "auto") => None,
            Some("kvm") => Some(Accel::Kvm),
            Some("tcg") => Some(Accel::Tcg),
            Some(other) => {
                return Err(crate::Error::BadSetting {
                    name: "HEARTH_ACCEL",
                    value: other.to_string(),
                    expected: "auto, kvm or tcg",
                })
            }
        };
        Ok(Selection {
            vmm,
            accel,
            ..Default::default()
        })
    }
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
    /// Overlay disk to reuse (a stopped VM being started again); `None` creates a fresh
    /// `<state_dir>/overlay.ext4`, or reuses that file when it already exists.
    pub overlay: Option<PathBuf>,
    /// Size of a fresh overlay disk (sparse).
    pub overlay_size_mib: u32,
    /// Template layer disks, newest first, attached read-only after the overlay
    /// (`/dev/vdc`, `/dev/vdd`, ...) and announced with `hearth.layers=N`; shared by
    /// every VM of the template.
    pub layers: Vec<PathBuf>,
    pub net: Option<NetAttachment>,
    /// Extra words for the kernel command line.
    pub extra_cmdline: Vec<String>,
}

/// Kernel command line every Hearth guest boots with (see ARCHITECTURE.md).
/// `no_timer_check`: under TCG on a loaded host the kernel's IO-APIC timer probe can time
/// out and panic the boot ("IO-APIC + timer doesn't work!"); a VM's timer is known good.
pub const BASE_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=-1 no_timer_check root=/dev/vda ro rootfstype=ext4 init=/sbin/init";

impl VmSpec {
    /// A spec with the defaults `hearth run` uses: 1 vCPU, 512 MiB, a fresh 1 GiB overlay.
    pub fn new(
        id: impl Into<String>,
        kernel: PathBuf,
        rootfs: PathBuf,
        state_dir: PathBuf,
    ) -> Self {
        VmSpec {
            id: id.into(),
            kernel,
            rootfs,
            vcpus: 1,
            memory_mib: 512,
            state_dir,
            overlay: None,
            overlay_size_mib: 1024,
            layers: Vec::new(),
            net: None,
            extra_cmdline: Vec::new(),
        }
    }

    /// The full kernel command line: base, layers, network setting, extra words.
    pub fn cmdline(&self) -> String {
        let mut words = vec![BASE_CMDLINE.to_string()];
        if !self.layers.is_empty() {
            words.push(hearth_proto::image::layers_cmdline(self.layers.len()));
        }
        if let Some(net) = &self.net {
            words.push(net.guest.to_cmdline());
        }
        words.extend(self.extra_cmdline.iter().cloned());
        words.join(" ")
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_reject_typos() {
        let s = Selection::parse(Some("auto"), Some("")).unwrap();
        assert_eq!((s.vmm, s.accel), (None, None));
        let s = Selection::parse(Some("firecracker"), Some("kvm")).unwrap();
        assert_eq!(
            (s.vmm, s.accel),
            (Some(VmmKind::Firecracker), Some(Accel::Kvm))
        );
        let s = Selection::parse(Some("qemu"), Some("tcg")).unwrap();
        assert_eq!((s.vmm, s.accel), (Some(VmmKind::Qemu), Some(Accel::Tcg)));
        let e = Selection::parse(Some("kvmtool"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("HEARTH_VMM") && e.contains("kvmtool"), "{e}");
        let e = Selection::parse(None, Some("hvf")).unwrap_err().to_string();
        assert!(e.contains("HEARTH_ACCEL") && e.contains("hvf"), "{e}");
    }

    #[test]
    fn cmdline_carries_the_network_setting() {
        let mut spec = VmSpec::new("a", "k".into(), "r".into(), "s".into());
        assert_eq!(spec.cmdline(), BASE_CMDLINE);
        spec.net = Some(NetAttachment {
            tap: "tap0".into(),
            netns: None,
            mac: "06:00:ac:1e:00:02".into(),
            guest: "172.30.0.2/30,172.30.0.1,172.30.0.1".parse().unwrap(),
        });
        spec.extra_cmdline.push("quiet".into());
        assert!(spec
            .cmdline()
            .ends_with(" hearth.net=172.30.0.2/30,172.30.0.1,172.30.0.1 quiet"));
        spec.layers = vec!["l1".into(), "l0".into()];
        assert!(
            spec.cmdline().contains(" hearth.layers=2 "),
            "{}",
            spec.cmdline()
        );
    }
}
