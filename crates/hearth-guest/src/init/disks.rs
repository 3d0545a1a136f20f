//! The disks besides the base and the overlay's own mount: the per-VM disk mounted a
//! second time for the agent's freeze ([`FREEZE_MNT`]), and template layers.
//!
//! Template layers: read-only disks after the overlay disk (`hearth.layers=N` on the
//! kernel command line, `/dev/vdc` the newest), each an ext4 whose `upper/` directory
//! is a captured overlay upper. They stack as OverlayFS lower layers, newest first,
//! over the base root; whiteouts and opaque directories in them work as in any lower.

use nix::mount::{mount, MsFlags};

use super::mounts::{mkdir_mode, wait_for_device, STAGING};
use super::say;

pub const LAYERS_DIR: &str = "/run/hearth/layers";
/// The per-VM disk mounted a second time after `pivot_root` (same superblock), so the
/// agent can freeze it (`FIFREEZE`) while the host copies the disk for a template.
pub const FREEZE_MNT: &str = "/run/hearth/upper";

/// After `pivot_root`: the per-VM disk again at [`FREEZE_MNT`], for the agent. A
/// failure only costs templates of a running VM (a stopped VM can still be captured).
pub fn mount_freeze_point(device: &str) {
    let r = mkdir_mode(FREEZE_MNT, 0o700).and_then(|_| {
        mount(
            Some(device),
            FREEZE_MNT,
            Some("ext4"),
            MsFlags::MS_NOATIME | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| e.to_string())
    });
    if let Err(e) = r {
        say(&format!(
            "warning: {device} at {FREEZE_MNT}: {e}; fs freeze unavailable"
        ));
    }
}

/// Where layer `i` is mounted.
pub fn mount_point(i: usize) -> String {
    format!("{LAYERS_DIR}/{i}")
}

/// The `lowerdir=` value: every layer's `upper/`, newest first, then the base root.
pub fn lowerdir(n: usize) -> String {
    let mut parts: Vec<String> = (0..n)
        .map(|i| format!("{}/upper", mount_point(i)))
        .collect();
    parts.push("/".into());
    parts.join(":")
}

/// Mounts the `n` layer disks read-only. A layer that cannot be mounted is fatal: a VM
/// of a template without the template's files would be wrong without saying so.
pub fn mount_all(n: usize) -> Result<(), String> {
    if n == 0 {
        return Ok(());
    }
    debug_assert!(LAYERS_DIR.starts_with(STAGING));
    mkdir_mode(LAYERS_DIR, 0o700)?;
    for i in 0..n {
        let dev = hearth_proto::image::layer_device(i);
        let target = mount_point(i);
        mkdir_mode(&target, 0o755)?;
        wait_for_device(&dev);
        let flags =
            MsFlags::MS_RDONLY | MsFlags::MS_NOATIME | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        // noload: the host checked the file system; never replay a journal on a shared disk.
        mount(
            Some(dev.as_str()),
            target.as_str(),
            Some("ext4"),
            flags,
            Some("noload"),
        )
        .map_err(|e| format!("mount template layer {i} ({dev}): {e}"))?;
        if !std::path::Path::new(&format!("{target}/upper")).is_dir() {
            return Err(format!(
                "template layer {i} ({dev}) has no upper/ directory"
            ));
        }
    }
    say(&format!("{n} template layer(s) mounted"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowers_are_newest_first_then_the_base() {
        assert_eq!(lowerdir(0), "/");
        assert_eq!(
            lowerdir(2),
            "/run/hearth/layers/0/upper:/run/hearth/layers/1/upper:/"
        );
    }
}
