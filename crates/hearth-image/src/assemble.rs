//! Puts kernel, base tree and guest binaries together into an image directory:
//! `vmlinux`, `rootfs.ext4` (read-only base, shrunk to fit), `overlay.ext4` (empty
//! sparse template the VMM clones per VM) and `manifest.json`.

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

pub use crate::bins::{find_guest_bins, guest_bin_candidates, is_static_elf, GUEST_BINARIES};
use crate::manifest::{self, Hashes, Image, Inputs, Manifest, Sizes, Versions};
use crate::util::{self, Progress};
use crate::{kernel, paths, rootfs, Error, Result};

/// Bump when assembly changes in a way that changes the image files.
const RECIPE: &str = "assemble-recipe-1";

pub const OVERLAY_MIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub name: String,
    /// No progress lines on stderr.
    pub quiet: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            name: "default".into(),
            quiet: false,
        }
    }
}

/// Builds (or finds up to date) the image `opts.name` under [`paths::images_dir`].
pub fn build(opts: &BuildOptions) -> Result<Image> {
    if !paths::valid_name(&opts.name) {
        return Err(Error::BadName(opts.name.clone()));
    }
    if !paths::is_root() {
        return Err(Error::NotRoot);
    }
    let progress = Progress::new(opts.quiet);
    let bins = find_guest_bins()?;
    progress.say(format!("guest binaries from {}", bins.display()));
    let init_sha = util::sha256_file(&bins.join("hearth-init"))?;
    let agent_sha = util::sha256_file(&bins.join("hearth-agent"))?;

    let kernel = kernel::ensure(&progress)?;
    let base = rootfs::ensure(&progress)?;
    let assembly = util::key_of(&[
        ("recipe", RECIPE.as_bytes()),
        ("kernel", kernel.key.as_bytes()),
        ("base", base.info.key.as_bytes()),
        ("init", init_sha.as_bytes()),
        ("agent", agent_sha.as_bytes()),
    ]);

    let dir = paths::image_dir(&opts.name);
    if let Ok(m) = manifest::read_manifest(&dir) {
        let files_there = [manifest::VMLINUX, manifest::ROOTFS, manifest::OVERLAY]
            .iter()
            .all(|f| dir.join(f).is_file());
        if m.inputs.assembly == assembly && m.name == opts.name && files_there {
            progress.say(format!("image {:?} is up to date", opts.name));
            return Ok(Image { dir, manifest: m });
        }
    }

    let tmp = util::scratch_for(&dir)?;
    let result = assemble(&progress, &tmp, &bins, &kernel, &base);
    let (sizes, sha256) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = util::remove_dir_all_if_exists(&tmp);
            return Err(e);
        }
    };
    let m = Manifest {
        name: opts.name.clone(),
        created_at: util::rfc3339(util::unix_now()),
        build_secs: (progress.elapsed_secs() * 10.0).round() / 10.0,
        versions: Versions {
            kernel: kernel.release.clone(),
            debian_suite: base.info.suite.clone(),
            node: base.info.node.clone(),
            python: base.info.python.clone(),
            deno: base.info.deno.clone(),
        },
        sizes,
        sha256,
        inputs: Inputs {
            kernel: kernel.key.clone(),
            rootfs_base: base.info.key.clone(),
            hearth_init: init_sha,
            hearth_agent: agent_sha,
            assembly,
        },
        origin: Default::default(),
    };
    manifest::write_manifest(&tmp, &m)?;
    util::publish_dir(&tmp, &dir)?;
    progress.say(format!("image {:?} ready in {}", opts.name, dir.display()));
    Ok(Image { dir, manifest: m })
}

fn assemble(
    progress: &Progress,
    out: &Path,
    bins: &Path,
    kernel: &kernel::Kernel,
    base: &rootfs::Base,
) -> Result<(Sizes, Hashes)> {
    let tree = out.join("tree");
    progress.step("assemble: stage tree (hard-link copy of base)", || {
        stage_tree(&base.root, &tree, bins)
    })?;
    let rootfs_img = out.join(manifest::ROOTFS);
    progress.step("assemble: mkfs.ext4 rootfs + shrink", || {
        make_rootfs(&tree, &rootfs_img)
    })?;
    util::remove_dir_all_if_exists(&tree)?;
    finish_files(progress, out, kernel)
}

/// Next to a finished `rootfs.ext4` in `out`: the overlay template and the kernel, then
/// sizes and hashes for the manifest.
pub(crate) fn finish_files(
    progress: &Progress,
    out: &Path,
    kernel: &kernel::Kernel,
) -> Result<(Sizes, Hashes)> {
    let rootfs_img = out.join(manifest::ROOTFS);
    let overlay = out.join(manifest::OVERLAY);
    progress.step("assemble: overlay template", || {
        make_overlay_template(&overlay)
    })?;
    let vmlinux = out.join(manifest::VMLINUX);
    std::fs::copy(&kernel.vmlinux, &vmlinux).map_err(|e| Error::io(&kernel.vmlinux, e))?;

    let hashes = progress.step("assemble: sha256", || {
        Ok(Hashes {
            vmlinux: util::sha256_file(&vmlinux)?,
            rootfs: util::sha256_file(&rootfs_img)?,
        })
    })?;
    let meta = |p: &Path| std::fs::metadata(p).map_err(|e| Error::io(p, e));
    let ov = meta(&overlay)?;
    Ok((
        Sizes {
            vmlinux: meta(&vmlinux)?.len(),
            rootfs: meta(&rootfs_img)?.len(),
            overlay_apparent: ov.len(),
            overlay_on_disk: ov.blocks() * 512,
        },
        hashes,
    ))
}

/// Hard links keep staging at a second or two; the guest binaries are written as new
/// files so the cached base is never modified through a shared inode.
fn stage_tree(base: &Path, tree: &Path, bins: &Path) -> Result<()> {
    if util::run(Command::new("cp").arg("-al").arg(base).arg(tree)).is_err() {
        util::remove_dir_all_if_exists(tree)?;
        util::run(Command::new("cp").arg("-a").arg(base).arg(tree))?;
    }
    // /sbin is a symlink to usr/sbin on merged-/usr Debian; write to the real place.
    for (bin, rel) in [
        ("hearth-init", "usr/sbin/init"),
        ("hearth-agent", "usr/local/bin/hearth-agent"),
    ] {
        let dest = tree.join(rel);
        util::mkdirs(dest.parent().expect("has parent"))?;
        match std::fs::remove_file(&dest) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&dest, e)),
            _ => {}
        }
        let src = bins.join(bin);
        std::fs::copy(&src, &dest).map_err(|e| Error::io(&src, e))?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io(&dest, e))?;
    }
    Ok(())
}

/// Allocated bytes and entry count of a tree, counting hard-linked files once.
pub(crate) fn tree_usage(root: &Path) -> Result<(u64, u64)> {
    let mut seen = HashSet::new();
    let (mut bytes, mut entries) = (0u64, 0u64);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let md = entry.metadata().map_err(|e| Error::io(entry.path(), e))?;
            entries += 1;
            if md.is_dir() {
                stack.push(entry.path());
            }
            if seen.insert((md.dev(), md.ino())) {
                bytes += md.blocks() * 512;
            }
        }
    }
    Ok((bytes, entries))
}

/// Sizes the filesystem generously, fills it with `mkfs.ext4 -d`, then shrinks it to
/// the minimum: the base is mounted read-only and never grows.
fn make_rootfs(tree: &Path, img: &Path) -> Result<()> {
    let (bytes, entries) = tree_usage(tree)?;
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(MKFS_ROOT_ARGS);
    make_rootfs_with(cmd, bytes, entries, tree, img)
}

/// `mkfs.ext4` options of every read-only rootfs; `-N`, `-d DIR IMG` follow.
pub(crate) const MKFS_ROOT_ARGS: [&str; 10] = [
    "-q",
    "-F",
    "-L",
    "hearth-root",
    "-m",
    "0",
    "-O",
    "^has_journal",
    "-E",
    "root_owner=0:0",
];

/// Sizes `img` for `bytes` in `entries` files generously, runs `mkfs` (a `mkfs.ext4
/// MKFS_ROOT_ARGS` command, possibly wrapped) with `-N inodes -d dir img` appended, then
/// shrinks it to the minimum: the base is mounted read-only and never grows.
pub(crate) fn make_rootfs_with(
    mut mkfs: Command,
    bytes: u64,
    entries: u64,
    dir: &Path,
    img: &Path,
) -> Result<()> {
    let size = (bytes + bytes / 4 + 128 * MIB).div_ceil(MIB) * MIB;
    let inodes = entries + entries / 4 + 4096;
    let f = std::fs::File::create(img).map_err(|e| Error::io(img, e))?;
    f.set_len(size).map_err(|e| Error::io(img, e))?;
    drop(f);
    util::run(
        mkfs.args(["-N", &inodes.to_string(), "-d"])
            .arg(dir)
            .arg(img),
    )?;
    fsck(img)?;
    util::run(Command::new("resize2fs").arg("-M").arg(img))?;
    fsck(img)
}

/// e2fsck exit 1 means "fixed something", which for a fresh image is fine.
pub(crate) fn fsck(img: &Path) -> Result<()> {
    match util::run(Command::new("e2fsck").args(["-f", "-y"]).arg(img)) {
        Err(Error::Command { status, .. }) if status.ends_with("status: 1") => Ok(()),
        other => other.map(drop),
    }
}

/// An empty ext4 of [`OVERLAY_MIB`] that is almost all holes: the VMM clones it per VM
/// with a reflink or a hole-preserving copy, so a fresh overlay costs milliseconds.
pub fn make_overlay_template(path: &Path) -> Result<()> {
    let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.set_len(OVERLAY_MIB * MIB)
        .map_err(|e| Error::io(path, e))?;
    drop(f);
    // Lazy init: untouched tables stay holes, which read back as zeroes.
    util::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-L", "hearth-overlay", "-E"])
            .arg("root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1")
            .arg(path),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_template_is_a_sparse_ext4() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("overlay.ext4");
        make_overlay_template(&p).unwrap();
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.len(), OVERLAY_MIB * MIB);
        assert!(
            md.blocks() * 512 < 64 * MIB,
            "on disk: {}",
            md.blocks() * 512
        );
        let out = util::run(Command::new("dumpe2fs").arg("-h").arg(&p)).unwrap();
        assert!(out.contains("hearth-overlay"), "{out}");
    }

    #[test]
    fn rootfs_holds_the_tree_and_is_shrunk() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/hello"), vec![7u8; 3 << 20]).unwrap();
        let img = d.path().join("rootfs.ext4");
        make_rootfs(&tree, &img).unwrap();
        let len = std::fs::metadata(&img).unwrap().len();
        assert!(len < 64 * MIB, "shrunk to {len}");
        let out = util::run(
            Command::new("debugfs")
                .args(["-R", "stat /etc/hello"])
                .arg(&img),
        )
        .unwrap();
        assert!(out.contains("Size: 3145728"), "{out}");
    }

    #[test]
    fn usage_counts_hard_links_once() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), vec![1u8; 1 << 20]).unwrap();
        std::fs::hard_link(d.path().join("a"), d.path().join("b")).unwrap();
        let (bytes, entries) = tree_usage(d.path()).unwrap();
        assert_eq!(entries, 2);
        assert!((1 << 20..2 << 20).contains(&bytes), "{bytes}");
    }
}
