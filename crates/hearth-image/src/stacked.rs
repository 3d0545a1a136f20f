//! Publishing a stacked image (custom or OCI): the Hearth layer over a cached [`Tree`],
//! `rootfs.ext4` from the merged view ([`crate::compose`]), kernel, overlay template and
//! manifest, or nothing when an image of the same inputs is already there.

use std::path::{Path, PathBuf};

use crate::compose::{make_rootfs, write_hearth_layer};
use crate::manifest::{self, Image, Inputs, Manifest, Origin, Versions};
use crate::util::Progress;
use crate::{assemble, kernel, paths, util, Error, Result};

/// Bump when stacked assembly changes in a way that changes the image files.
const RECIPE: &str = "stacked-assembly-1";

/// A cached directory tree: its layers' cache keys and directories, top first.
#[derive(Debug, Clone)]
pub struct Tree {
    pub keys: Vec<String>,
    pub dirs: Vec<PathBuf>,
}

/// The cache directory a tree key names: `base:K` (debootstrapped base), `layer:K`
/// (packages/script delta over a parent tree), `oci:K` (unpacked OCI image).
pub fn tree_dir(key: &str) -> Result<PathBuf> {
    let (kind, k) = key
        .split_once(':')
        .filter(|(_, k)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| Error::Other(format!("bad tree key {key:?} in a manifest")))?;
    let (dir, sub) = match kind {
        "base" => ("rootfs-base", "root"),
        "layer" => ("rootfs-layer", "upper"),
        "oci" => ("rootfs-oci", "root"),
        _ => return Err(Error::Other(format!("bad tree key {key:?} in a manifest"))),
    };
    Ok(util::cache_dir_for(dir).join(k).join(sub))
}

impl Tree {
    /// Looks the keys up in the cache; `image` names the image they came from, for the
    /// message when the cache was cleared since.
    pub fn from_keys(keys: &[String], image: &str) -> Result<Tree> {
        let dirs = keys
            .iter()
            .map(|k| tree_dir(k))
            .collect::<Result<Vec<_>>>()?;
        if let Some(gone) = dirs.iter().find(|d| !d.is_dir()) {
            return Err(Error::Other(format!(
                "the cached tree of image {image:?} is gone ({}); rebuild that image first",
                gone.display()
            )));
        }
        Ok(Tree {
            keys: keys.to_vec(),
            dirs,
        })
    }
}

/// What a stacked image is made of, besides its tree.
pub struct Stacked<'a> {
    pub name: &'a str,
    /// Where images live (`paths::images_dir()` unless a server says otherwise).
    pub images_dir: &'a Path,
    pub tree: &'a Tree,
    pub versions: Versions,
    pub rootfs_base: String,
    pub config: Option<&'a hearth_proto::ImageConfig>,
    pub origin: Origin,
}

/// Assembles (or finds up to date) the image `s.name`: Hearth layer over `s.tree`,
/// `rootfs.ext4` from the merged view, kernel and overlay template, manifest.
pub fn publish(s: Stacked<'_>, progress: &Progress) -> Result<Image> {
    if !paths::valid_name(s.name) {
        return Err(Error::BadName(s.name.to_string()));
    }
    let bins = assemble::find_guest_bins()?;
    let init_sha = util::sha256_file(&bins.join("hearth-init"))?;
    let agent_sha = util::sha256_file(&bins.join("hearth-agent"))?;
    let kernel = kernel::ensure(progress)?;
    let config = serde_json::to_vec(&s.config).expect("plain struct serializes");
    let assembly = util::key_of(&[
        ("recipe", RECIPE.as_bytes()),
        ("kernel", kernel.key.as_bytes()),
        ("tree", s.tree.keys.join(",").as_bytes()),
        ("config", &config),
        ("init", init_sha.as_bytes()),
        ("agent", agent_sha.as_bytes()),
    ]);
    let dir = s.images_dir.join(s.name);
    if let Ok(m) = manifest::read_manifest(&dir) {
        let files_there = [manifest::VMLINUX, manifest::ROOTFS, manifest::OVERLAY]
            .iter()
            .all(|f| dir.join(f).is_file());
        if m.inputs.assembly == assembly && m.origin == s.origin && files_there {
            progress.say(format!("image {:?} is up to date", s.name));
            return Ok(Image { dir, manifest: m });
        }
    }
    let tmp = util::scratch_for(&dir)?;
    let made = (|| {
        let hearth = tmp.join("hearth");
        write_hearth_layer(&hearth, &s.tree.dirs, &bins, s.config)?;
        let mut lowers = vec![hearth.clone()];
        lowers.extend(s.tree.dirs.iter().cloned());
        progress.step("assemble: mkfs.ext4 from the stacked tree + shrink", || {
            make_rootfs(&lowers, &tmp.join("mnt"), &tmp.join(manifest::ROOTFS))
        })?;
        util::remove_dir_all_if_exists(&hearth)?;
        let _ = std::fs::remove_dir(tmp.join("mnt"));
        assemble::finish_files(progress, &tmp, &kernel)
    })();
    let (sizes, sha256) = match made {
        Ok(v) => v,
        Err(e) => {
            let _ = util::remove_dir_all_if_exists(&tmp);
            return Err(e);
        }
    };
    let m = Manifest {
        name: s.name.to_string(),
        created_at: util::rfc3339(util::unix_now()),
        build_secs: (progress.elapsed_secs() * 10.0).round() / 10.0,
        versions: Versions {
            kernel: kernel.release.clone(),
            ..s.versions
        },
        sizes,
        sha256,
        inputs: Inputs {
            kernel: kernel.key.clone(),
            rootfs_base: s.rootfs_base,
            hearth_init: init_sha,
            hearth_agent: agent_sha,
            assembly,
        },
        origin: s.origin,
    };
    manifest::write_manifest(&tmp, &m)?;
    util::publish_dir(&tmp, &dir)?;
    progress.say(format!("image {:?} ready in {}", s.name, dir.display()));
    Ok(Image { dir, manifest: m })
}
