//! Images made of stacked directory trees (custom and OCI images). A tree is a list of
//! directories, top first, merged by the host's OverlayFS only inside a private mount
//! namespace of a child process (`unshare -m`): a build that dies never leaves a mount
//! behind, and the cached trees underneath are never written (writes land in a fresh
//! upper directory), unlike a hard-link copy that a setup script could write through.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::assemble::{self, MKFS_ROOT_ARGS};
use crate::{util, Error, Result};

pub use crate::stacked::{publish, tree_dir, Stacked, Tree};

/// Mount points init and the agent need, created in the Hearth layer so an image that
/// lacks them still boots: (path, mode).
const MOUNT_POINTS: &[(&str, u32)] = &[
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("etc", 0o755),
    ("home", 0o755),
    ("home/user", 0o755),
    ("workspace", 0o755),
];

/// Mounts the tree at `$4` (read-write over `$2`/`$3` when given, else read-only) and
/// either cleans package caches (`clean`), runs a setup script (`script FILE`) or a
/// command (`run CMD...`) chrooted in it with `/proc`, `/sys`, `/dev`, a private
/// `/tmp` and `/run`, and the host's resolver, so apt reaches the mirror.
const BUILD_SH: &str = r#"lower=$1 upper=$2 work=$3 r=$4 mode=$5; shift 5
mount -t overlay hearth-build -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$r"
if [ "$mode" = clean ]; then
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r"/var/log/* "$r/usr/sbin/policy-rc.d"
  exit 0
fi
for d in proc sys dev tmp run; do [ -d "$r/$d" ] || mkdir -p "$r/$d"; done
mount -t proc proc "$r/proc"
mount -t sysfs sysfs "$r/sys" 2>/dev/null || true
mount --rbind /dev "$r/dev"
mount -t tmpfs tmpfs "$r/tmp"
mount -t tmpfs tmpfs "$r/run"
if [ -f "$r/etc/resolv.conf" ] && [ ! -L "$r/etc/resolv.conf" ] && [ -e /etc/resolv.conf ]; then
  mount --bind /etc/resolv.conf "$r/etc/resolv.conf"
fi
# Packages must not start services in a build root.
if [ -d "$r/usr/sbin" ] && [ ! -e "$r/usr/sbin/policy-rc.d" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$r/usr/sbin/policy-rc.d"
  chmod 755 "$r/usr/sbin/policy-rc.d"
fi
case "$mode" in
  script) cp "$1" "$r/tmp/hearth-setup"; exec chroot "$r" /bin/sh -e /tmp/hearth-setup ;;
  *) exec chroot "$r" "$@" ;;
esac
"#;

/// Mounts the tree `$1` read-only at `$2` and fills the image `$NF` from it.
const MKFS_SH: &str = r#"lower=$1 r=$2; shift 2
mount -t overlay hearth-image -o "ro,lowerdir=$lower" "$r"
exec mkfs.ext4 "$@"
"#;

/// The `lowerdir=` value for `dirs` (top first). OverlayFS splits it on `:` and options
/// on `,`; a path holding either (or `\`) is refused rather than escaped.
pub fn lowerdir(dirs: &[PathBuf]) -> Result<String> {
    let mut parts = Vec::new();
    for d in dirs {
        let s = d.to_str().ok_or_else(|| bad_path(d))?;
        if s.contains([':', ',', '\\']) || s.is_empty() {
            return Err(bad_path(d));
        }
        parts.push(s.to_string());
    }
    Ok(parts.join(":"))
}

fn bad_path(d: &Path) -> Error {
    Error::Other(format!(
        "{}: an image build directory may not contain ':', ',' or '\\' (OverlayFS options); \
         set HEARTH_CACHE_DIR / HEARTH_DATA_DIR to a plainer path",
        d.display()
    ))
}

fn unshare(script: &str) -> Command {
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-euc",
        script,
        "sh",
    ]);
    c
}

/// What one build step does in the tree.
pub enum Step<'a> {
    /// A command, run as root chrooted in the tree.
    Run(&'a [&'a str]),
    /// A setup script from the host, run by `/bin/sh -e` chrooted in the tree.
    Script(&'a Path),
    /// Drop apt's lists and caches and logs from the upper dir.
    Clean,
}

/// Runs one step with `lowers` read-only and every write going to `upper` (`work` is
/// OverlayFS's scratch dir, `mnt` an empty dir); output goes to `log`.
pub fn run_step(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    mnt: &Path,
    step: Step<'_>,
    log: &Path,
) -> Result<()> {
    for d in [upper, work, mnt] {
        util::mkdirs(d)?;
    }
    let mut cmd = unshare(BUILD_SH);
    cmd.arg(lowerdir(lowers)?)
        .arg(upper)
        .arg(work)
        .arg(mnt)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive");
    match step {
        Step::Run(args) => cmd.arg("run").args(args),
        Step::Script(file) => cmd.arg("script").arg(file),
        Step::Clean => cmd.arg("clean"),
    };
    util::run_logged(&mut cmd, log)
}

/// Where `/sbin/init` lands in this tree: through `sbin -> usr/sbin` on merged-/usr
/// systems (writing a `sbin` directory would hide that link), else `sbin/init`.
pub fn init_path(lowers: &[PathBuf]) -> &'static str {
    for l in lowers {
        match std::fs::symlink_metadata(l.join("sbin")) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(l.join("sbin")).unwrap_or_default();
                let to = to.to_string_lossy();
                return if to.trim_start_matches('/').trim_end_matches('/') == "usr/sbin" {
                    "usr/sbin/init"
                } else {
                    "sbin/init"
                };
            }
            Ok(_) => return "sbin/init",
            Err(_) => continue,
        }
    }
    "sbin/init"
}

/// The top layer every stacked image gets: the guest binaries, the mount points init
/// needs, and the image config the agent reads at start (OCI images only).
pub fn write_hearth_layer(
    dir: &Path,
    lowers: &[PathBuf],
    bins: &Path,
    config: Option<&hearth_proto::ImageConfig>,
) -> Result<()> {
    util::mkdirs(dir)?;
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(p, e))
    };
    chmod(dir, 0o755)?;
    let init = init_path(lowers);
    for (rel, mode) in MOUNT_POINTS {
        // Only what the tree lacks: its own directories keep their owners and modes
        // (a directory here would win over theirs), its links (`/run -> /var/run`) work.
        if lowers
            .iter()
            .any(|l| std::fs::symlink_metadata(l.join(rel)).is_ok())
        {
            continue;
        }
        let p = dir.join(rel);
        util::mkdirs(&p)?;
        chmod(&p, *mode)?;
    }
    for (bin, rel) in [
        ("hearth-init", init),
        ("hearth-agent", "usr/local/bin/hearth-agent"),
    ] {
        let dest = dir.join(rel);
        util::mkdirs(dest.parent().expect("has parent"))?;
        let src = bins.join(bin);
        std::fs::copy(&src, &dest).map_err(|e| Error::io(&src, e))?;
        chmod(&dest, 0o755)?;
    }
    if let Some(c) = config {
        let p = dir.join(hearth_proto::IMAGE_CONFIG_PATH.trim_start_matches('/'));
        util::mkdirs(p.parent().expect("has parent"))?;
        let json = serde_json::to_vec_pretty(c).expect("plain struct serializes");
        std::fs::write(&p, json).map_err(|e| Error::io(&p, e))?;
    }
    Ok(())
}

/// Builds `img` from the merged view of `lowers` (top first), mounted read-only at
/// `mnt` in a private mount namespace. Sized from the sum of the layers (shadowed
/// files counted too; the shrink afterwards takes it back).
pub fn make_rootfs(lowers: &[PathBuf], mnt: &Path, img: &Path) -> Result<()> {
    let (mut bytes, mut entries) = (0, 0);
    for l in lowers {
        let (b, e) = assemble::tree_usage(l)?;
        bytes += b;
        entries += e;
    }
    util::mkdirs(mnt)?;
    let mut cmd = unshare(MKFS_SH);
    cmd.arg(lowerdir(lowers)?).arg(mnt).args(MKFS_ROOT_ARGS);
    assemble::make_rootfs_with(cmd, bytes, entries, mnt, img)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn lowerdir_refuses_separators() {
        let ok = lowerdir(&["/a/b".into(), "/c".into()]).unwrap();
        assert_eq!(ok, "/a/b:/c");
        for bad in ["/a:b", "/a,b", "/a\\b", ""] {
            assert!(lowerdir(&[PathBuf::from(bad)]).is_err(), "{bad}");
        }
    }

    #[test]
    fn init_follows_a_merged_usr_sbin_link() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
        for x in [&a, &b, &c] {
            std::fs::create_dir(x).unwrap();
        }
        symlink("usr/sbin", b.join("sbin")).unwrap();
        std::fs::create_dir(c.join("sbin")).unwrap();
        // The top-most layer that has `sbin` decides.
        assert_eq!(
            init_path(&[a.clone(), b.clone(), c.clone()]),
            "usr/sbin/init"
        );
        assert_eq!(init_path(&[a.clone(), c.clone()]), "sbin/init");
        assert_eq!(init_path(&[a]), "sbin/init");
    }

    #[test]
    fn hearth_layer_holds_binaries_mount_points_and_config() {
        let d = tempfile::tempdir().unwrap();
        let bins = d.path().join("bins");
        std::fs::create_dir(&bins).unwrap();
        for b in ["hearth-init", "hearth-agent"] {
            std::fs::write(bins.join(b), b).unwrap();
        }
        let lower = d.path().join("lower");
        std::fs::create_dir(&lower).unwrap();
        let layer = d.path().join("layer");
        let cfg = hearth_proto::ImageConfig {
            env: vec!["A=1".into()],
            ..Default::default()
        };
        write_hearth_layer(&layer, &[lower], &bins, Some(&cfg)).unwrap();
        assert_eq!(
            std::fs::read(layer.join("sbin/init")).unwrap(),
            b"hearth-init"
        );
        let mode = |p: &str| {
            std::fs::metadata(layer.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("tmp"), 0o1777);
        assert_eq!(mode("usr/local/bin/hearth-agent"), 0o755);
        for m in ["proc", "sys", "dev", "run", "workspace", "home/user"] {
            assert!(layer.join(m).is_dir(), "{m}");
        }
        let back: hearth_proto::ImageConfig =
            serde_json::from_slice(&std::fs::read(layer.join("etc/hearth/image.json")).unwrap())
                .unwrap();
        assert_eq!(back, cfg);
    }
}
