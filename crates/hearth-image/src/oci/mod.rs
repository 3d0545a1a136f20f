//! `hearth image import NAME SOURCE`: an OCI image (layout dir, OCI archive or `docker
//! save` archive) becomes a Hearth image. Its layers are unpacked in order into a tree
//! cached by the image's digest ([`unpack`]: whiteouts honoured, nothing written through
//! a link or outside the staging root), then assembled like any stacked image with
//! Hearth's init and agent and the usual kernel ([`crate::compose`]). The config's
//! `Env`, `WorkingDir` and `User` are recorded in the manifest and written to
//! `/etc/hearth/image.json` for the agent.

pub mod layout;
pub mod unpack;
#[cfg(test)]
mod unpack_tests;

use std::path::{Path, PathBuf};

use hearth_proto::ImageConfig;

use crate::compose::{self, Stacked, Tree};
use crate::manifest::{Kind, OciSource, Origin, Versions};
use crate::util::{self, Progress};
use crate::{paths, Error, Image, Result};

/// Bump when unpacking changes what lands in the tree.
const RECIPE: &str = "oci-unpack-1";

/// Top-level names every Linux tree has; anything else (`/app`, `/srv`) is the image's
/// own and is shown to user code read-only (see `ImageConfig::expose`).
const SYSTEM_TOP: &[&str] = &[
    "bin",
    "boot",
    "dev",
    "etc",
    "home",
    "lib",
    "lib32",
    "lib64",
    "libx32",
    "lost+found",
    "media",
    "mnt",
    "opt",
    "proc",
    "root",
    "run",
    "sbin",
    "sys",
    "tmp",
    "usr",
    "var",
    "workspace",
];

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub name: String,
    /// An OCI layout directory, an OCI archive, or a `docker save` archive.
    pub source: PathBuf,
    pub quiet: bool,
}

/// What unpacking left beside the tree, so a cached tree reports the same.
#[derive(serde::Serialize, serde::Deserialize)]
struct Unpacked {
    skipped: Vec<String>,
}

/// Unpacks every layer into `<cache>/rootfs-oci/<key>/root` unless already there.
fn ensure_tree(
    layers: &[PathBuf],
    key: &str,
    progress: &Progress,
) -> Result<(PathBuf, Vec<String>)> {
    let done = util::cache_dir_for("rootfs-oci").join(key);
    let info = done.join("unpacked.json");
    if !info.is_file() {
        let tmp = util::scratch_for(&done)?;
        let made = (|| {
            let mut u = unpack::Unpacker::new(&tmp.join("root"))?;
            for (i, l) in layers.iter().enumerate() {
                progress.step(&format!("oci: layer {}/{}", i + 1, layers.len()), || {
                    u.apply(layout::open_layer(l)?)
                })?;
            }
            let json = serde_json::to_vec(&Unpacked { skipped: u.skipped }).expect("serializes");
            let p = tmp.join("unpacked.json");
            std::fs::write(&p, json).map_err(|e| Error::io(&p, e))?;
            util::publish_dir(&tmp, &done)
        })();
        if let Err(e) = made {
            let _ = util::remove_dir_all_if_exists(&tmp);
            return Err(e);
        }
    } else {
        progress.say(format!("oci: cached tree ({})", &key[..12]));
    }
    let text = std::fs::read(&info).map_err(|e| Error::io(&info, e))?;
    let u: Unpacked = serde_json::from_slice(&text).map_err(|source| Error::Manifest {
        path: info.clone(),
        source,
    })?;
    Ok((done.join("root"), u.skipped))
}

/// The image's own top-level directories.
fn exposed(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| !SYSTEM_TOP.contains(&n.as_str()) && !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Imports (or finds up to date) the image `opts.name`. Needs root (file ownership,
/// the OverlayFS assembly).
pub fn import(opts: &ImportOptions) -> Result<Image> {
    if !paths::valid_name(&opts.name) {
        return Err(Error::BadName(opts.name.clone()));
    }
    if !paths::is_root() {
        return Err(Error::NotRoot);
    }
    let progress = Progress::new(opts.quiet);
    let scratch = util::scratch_for(&util::cache_dir_for("oci-staging").join(&opts.name))?;
    let result = import_in(opts, &scratch, &progress);
    let _ = util::remove_dir_all_if_exists(&scratch);
    result
}

fn import_in(opts: &ImportOptions, scratch: &Path, progress: &Progress) -> Result<Image> {
    let (format, root) = progress.step("oci: reading the image", || {
        layout::stage(&opts.source, scratch)
    })?;
    let image = layout::resolve(format, &root)?;
    progress.say(format!(
        "oci: {} {} with {} layer(s)",
        format.as_str(),
        image.digest,
        image.layers.len()
    ));
    let key = util::key_of(&[
        ("recipe", RECIPE.as_bytes()),
        ("digest", image.digest.as_bytes()),
    ]);
    let (tree_root, skipped) = ensure_tree(&image.layers, &key, progress)?;
    let c = image.config.config().clone().unwrap_or_default();
    let config = ImageConfig {
        env: c.env().clone().unwrap_or_default(),
        working_dir: c.working_dir().clone().filter(|d| !d.is_empty()),
        user: c.user().clone().filter(|u| !u.is_empty()),
        expose: exposed(&tree_root),
    };
    let tree = Tree {
        keys: vec![format!("oci:{key}")],
        dirs: vec![tree_root],
    };
    let origin = Origin {
        kind: Kind::Oci,
        tree: tree.keys.clone(),
        config: Some(config.clone()),
        oci: Some(OciSource {
            format: format.as_str().into(),
            digest: image.digest.clone(),
            layers: image.layers.len(),
            skipped,
        }),
        ..Default::default()
    };
    compose::publish(
        Stacked {
            name: &opts.name,
            images_dir: &paths::images_dir(),
            tree: &tree,
            versions: Versions {
                kernel: String::new(),
                debian_suite: "oci".into(),
                node: None,
                python: None,
                deno: None,
            },
            rootfs_base: String::new(),
            config: Some(&config),
            origin,
        },
        progress,
    )
}
