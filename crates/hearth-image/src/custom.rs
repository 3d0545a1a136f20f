//! Custom images: Debian packages and a setup script on top of the default tree (or of
//! another image's tree). The additions are one cached *layer*, the upper directory of
//! an OverlayFS build over the parent tree, keyed by (parent tree, packages, script);
//! the parent is never re-debootstrapped or copied, and a package-list change only
//! rebuilds the layer. See [`crate::compose`] for how the tree becomes a rootfs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::compose::{self, Stacked, Step, Tree};
use crate::manifest::{Kind, Origin, Versions};
use crate::util::{self, Progress};
use crate::{rootfs, Error, Image, Result};

/// Bump when the layer build steps change what they produce.
const RECIPE: &str = "custom-layer-1";

#[derive(Debug, Clone, Default)]
pub struct CustomOptions {
    pub name: String,
    /// Debian package names (`jq`, or `jq=1.6-2.1` for a version).
    pub packages: Vec<String>,
    /// Shell script run as root, chrooted in the image tree, after the packages.
    pub script: Option<PathBuf>,
    /// Image whose tree to build on; the default tree when `None`.
    pub from: Option<String>,
    pub quiet: bool,
    /// Where images live; `paths::images_dir()` when `None`.
    pub images_dir: Option<PathBuf>,
}

/// A Debian package name, optionally `=version`: nothing apt could read as an option.
pub fn valid_package(p: &str) -> bool {
    let (name, version) = match p.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (p, None),
    };
    let name_ok = name.len() >= 2
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
    let version_ok = version.is_none_or(|v| {
        !v.is_empty()
            && v.len() <= 128
            && v.starts_with(|c: char| c.is_ascii_digit())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '~' | ':'))
    });
    name_ok && version_ok
}

/// Checks the options without touching the disk; the same rules the API applies.
pub fn validate(opts: &CustomOptions) -> Result<()> {
    if !crate::paths::valid_name(&opts.name) {
        return Err(Error::BadName(opts.name.clone()));
    }
    if let Some(bad) = opts.packages.iter().find(|p| !valid_package(p)) {
        return Err(Error::Other(format!(
            "bad package name {bad:?}: Debian names are lowercase letters, digits, '+', '-', '.', \
             optionally =VERSION"
        )));
    }
    if opts.packages.is_empty() && opts.script.is_none() {
        return Err(Error::Other(
            "nothing to add: give --packages and/or --run (or leave both out for the default image)"
                .into(),
        ));
    }
    if opts.from.as_deref() == Some(opts.name.as_str()) {
        return Err(Error::Other(format!(
            "image {:?} cannot be built from itself",
            opts.name
        )));
    }
    Ok(())
}

/// The parent tree and what is known of its contents.
struct Parent {
    tree: Tree,
    versions: Versions,
    rootfs_base: String,
}

fn parent(images: &Path, from: Option<&str>, progress: &Progress) -> Result<Parent> {
    let Some(name) = from else {
        let base = rootfs::ensure(progress)?;
        return Ok(Parent {
            tree: Tree {
                keys: vec![format!("base:{}", base.info.key)],
                dirs: vec![base.root.clone()],
            },
            versions: Versions {
                kernel: String::new(),
                debian_suite: base.info.suite.clone(),
                node: base.info.node.clone(),
                python: base.info.python.clone(),
                deno: base.info.deno.clone(),
            },
            rootfs_base: base.info.key,
        });
    };
    let img = crate::manifest::open_image_in(images, name)?;
    let m = &img.manifest;
    let keys = match m.origin.kind {
        Kind::Base => vec![format!("base:{}", m.inputs.rootfs_base)],
        Kind::Custom | Kind::Oci => m.origin.tree.clone(),
        Kind::Template => {
            return Err(Error::Other(format!(
                "image {name:?} is a template (VM disk layers, not a directory tree); \
                 build from its parent {:?} instead",
                m.origin.parent.as_deref().unwrap_or("?")
            )))
        }
    };
    Ok(Parent {
        tree: Tree::from_keys(&keys, name)?,
        versions: m.versions.clone(),
        rootfs_base: m.inputs.rootfs_base.clone(),
    })
}

pub fn layer_key(parent: &[String], packages: &[String], script_sha: Option<&str>) -> String {
    util::key_of(&[
        ("recipe", RECIPE.as_bytes()),
        ("parent", parent.join(",").as_bytes()),
        ("packages", packages.join(",").as_bytes()),
        ("script", script_sha.unwrap_or("").as_bytes()),
    ])
}

/// Builds the layer (or finds it cached) and returns its upper directory.
fn ensure_layer(
    parent: &Tree,
    packages: &[String],
    script: Option<&Path>,
    key: &str,
    progress: &Progress,
) -> Result<PathBuf> {
    let done = util::cache_dir_for("rootfs-layer").join(key);
    if done.join("upper").is_dir() {
        progress.say(format!("custom: cached layer ({})", &key[..12]));
        return Ok(done.join("upper"));
    }
    let tmp = util::scratch_for(&done)?;
    let built = (|| {
        let (upper, work, mnt) = (tmp.join("upper"), tmp.join("work"), tmp.join("mnt"));
        let log = tmp.join("build.log");
        let step = |s: Step<'_>| compose::run_step(&parent.dirs, &upper, &work, &mnt, s, &log);
        if !packages.is_empty() {
            progress.step("custom: apt-get update", || {
                step(Step::Run(&["apt-get", "update", "-q"]))
            })?;
            let mut install = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
            install.extend(packages.iter().map(String::as_str));
            progress.step(
                &format!("custom: apt-get install {}", packages.join(" ")),
                || step(Step::Run(&install)),
            )?;
        }
        if let Some(s) = script {
            progress.step("custom: setup script", || step(Step::Script(s)))?;
        }
        step(Step::Clean)?;
        util::remove_dir_all_if_exists(&work)?;
        let _ = std::fs::remove_dir(&mnt);
        util::publish_dir(&tmp, &done)
    })();
    if let Err(e) = built {
        let _ = util::remove_dir_all_if_exists(&tmp);
        return Err(e);
    }
    Ok(done.join("upper"))
}

/// Version of a Debian package as the topmost dpkg database in the tree knows it.
fn package_version(tree: &Tree, name: &str) -> Option<String> {
    let admin = tree
        .dirs
        .iter()
        .map(|d| d.join("var/lib/dpkg"))
        .find(|a| a.join("status").is_file())?;
    util::run(
        Command::new("dpkg-query")
            .arg(format!("--admindir={}", admin.display()))
            .args(["-W", "-f=${Version}", name]),
    )
    .ok()
    .map(|v| v.trim().to_string())
    .filter(|v| !v.is_empty())
}

/// Builds (or finds up to date) the custom image `opts.name`. Needs root: the build
/// mounts OverlayFS and chroots.
pub fn build(opts: &CustomOptions) -> Result<Image> {
    validate(opts)?;
    if !crate::paths::is_root() {
        return Err(Error::NotRoot);
    }
    let progress = Progress::new(opts.quiet);
    let script_sha = match &opts.script {
        Some(s) if !s.is_file() => {
            return Err(Error::Other(format!(
                "setup script {} is not a file",
                s.display()
            )))
        }
        Some(s) => Some(util::sha256_file(s)?),
        None => None,
    };
    let images = opts
        .images_dir
        .clone()
        .unwrap_or_else(crate::paths::images_dir);
    let parent = parent(&images, opts.from.as_deref(), &progress)?;
    let key = layer_key(&parent.tree.keys, &opts.packages, script_sha.as_deref());
    let upper = ensure_layer(
        &parent.tree,
        &opts.packages,
        opts.script.as_deref(),
        &key,
        &progress,
    )?;
    let mut tree = parent.tree;
    tree.keys.insert(0, format!("layer:{key}"));
    tree.dirs.insert(0, upper);
    let versions = Versions {
        node: package_version(&tree, "nodejs").or(parent.versions.node.clone()),
        python: package_version(&tree, "python3").or(parent.versions.python.clone()),
        ..parent.versions
    };
    let origin = Origin {
        kind: Kind::Custom,
        parent: opts.from.clone(),
        packages: opts.packages.clone(),
        script_sha256: script_sha,
        tree: tree.keys.clone(),
        ..Default::default()
    };
    compose::publish(
        Stacked {
            name: &opts.name,
            images_dir: &images,
            tree: &tree,
            versions,
            rootfs_base: parent.rootfs_base,
            config: None,
            origin,
        },
        &progress,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_cannot_be_options() {
        for ok in [
            "jq",
            "python3-venv",
            "g++",
            "libc6=2.36-9+deb12u4",
            "tree=2.1.0-1",
        ] {
            assert!(valid_package(ok), "{ok}");
        }
        for bad in [
            "",
            "-o",
            "--allow-unauthenticated",
            "Jq",
            "j",
            "jq=",
            "a b",
            "x;y",
            "jq=-1",
            "../x",
        ] {
            assert!(!valid_package(bad), "{bad}");
        }
    }

    #[test]
    fn options_are_checked_before_any_work() {
        let base = CustomOptions {
            name: "t".into(),
            packages: vec!["jq".into()],
            ..Default::default()
        };
        assert!(validate(&base).is_ok());
        let e = |o: CustomOptions| validate(&o).unwrap_err().to_string();
        assert!(e(CustomOptions {
            packages: vec![],
            ..base.clone()
        })
        .contains("nothing to add"));
        assert!(e(CustomOptions {
            name: "../x".into(),
            ..base.clone()
        })
        .contains("bad image name"));
        assert!(e(CustomOptions {
            packages: vec!["-o".into()],
            ..base.clone()
        })
        .contains("\"-o\""));
        assert!(e(CustomOptions {
            from: Some("t".into()),
            ..base
        })
        .contains("itself"));
    }

    #[test]
    fn layer_keys_cover_every_input() {
        let p = vec!["base:00".to_string()];
        let a = layer_key(&p, &["jq".into()], None);
        assert_ne!(a, layer_key(&p, &["tree".into()], None));
        assert_ne!(a, layer_key(&p, &["jq".into()], Some("ab")));
        assert_ne!(a, layer_key(&["base:01".into()], &["jq".into()], None));
        assert_eq!(a, layer_key(&p, &["jq".into()], None));
    }

    #[test]
    fn tree_keys_map_to_cache_dirs() {
        assert!(compose::tree_dir("layer:abc123")
            .unwrap()
            .ends_with("rootfs-layer/abc123/upper"));
        assert!(compose::tree_dir("base:ff")
            .unwrap()
            .ends_with("rootfs-base/ff/root"));
        for bad in ["layer:", "x:00", "layer:../x", "nocolon"] {
            assert!(compose::tree_dir(bad).is_err(), "{bad}");
        }
    }
}
