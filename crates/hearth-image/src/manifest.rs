//! `manifest.json`: what an image is made of, so the VMM and server can trust a
//! directory without rebuilding it, and a warm build can tell nothing changed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{paths, Error, Result};

pub const MANIFEST: &str = "manifest.json";
pub const VMLINUX: &str = "vmlinux";
pub const ROOTFS: &str = "rootfs.ext4";
pub const OVERLAY: &str = "overlay.ext4";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub created_at: String,
    pub build_secs: f64,
    pub versions: Versions,
    pub sizes: Sizes,
    pub sha256: Hashes,
    pub inputs: Inputs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versions {
    pub kernel: String,
    pub debian_suite: String,
    pub node: Option<String>,
    pub python: Option<String>,
    pub deno: Option<String>,
}

/// Bytes. `*_on_disk` counts allocated blocks, which is what sparse files cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sizes {
    pub vmlinux: u64,
    pub rootfs: u64,
    pub overlay_apparent: u64,
    pub overlay_on_disk: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hashes {
    pub vmlinux: String,
    pub rootfs: String,
}

/// Cache keys and binary hashes that produced this image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    pub kernel: String,
    pub rootfs_base: String,
    pub hearth_init: String,
    pub hearth_agent: String,
    pub assembly: String,
}

/// A built image on disk.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Image {
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join(VMLINUX)
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join(ROOTFS)
    }
    pub fn overlay_template(&self) -> PathBuf {
        self.dir.join(OVERLAY)
    }
}

pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Manifest { path, source })
}

pub fn write_manifest(dir: &Path, m: &Manifest) -> Result<()> {
    let path = dir.join(MANIFEST);
    let mut json = serde_json::to_vec_pretty(m).expect("plain struct serializes");
    json.push(b'\n');
    std::fs::write(&path, json).map_err(|e| Error::io(&path, e))
}

/// Opens the image `name` under [`paths::images_dir`].
pub fn open_image(name: &str) -> Result<Image> {
    open_image_in(&paths::images_dir(), name)
}

pub fn open_image_in(images: &Path, name: &str) -> Result<Image> {
    if !paths::valid_name(name) {
        return Err(Error::BadName(name.to_string()));
    }
    let dir = images.join(name);
    if !dir.join(MANIFEST).exists() {
        return Err(Error::NoImage(name.to_string(), images.to_path_buf()));
    }
    Ok(Image {
        manifest: read_manifest(&dir)?,
        dir,
    })
}

/// All complete images (directories with a readable manifest), sorted by name.
pub fn list_images() -> Result<Vec<Image>> {
    list_images_in(&paths::images_dir())
}

pub fn list_images_in(images: &Path) -> Result<Vec<Image>> {
    let rd = match std::fs::read_dir(images) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(images, e)),
    };
    let mut out: Vec<Image> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            open_image_in(images, &name).ok()
        })
        .collect();
    out.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(name: &str) -> Manifest {
        Manifest {
            name: name.into(),
            created_at: "2026-11-24T22:00:00Z".into(),
            build_secs: 1.5,
            versions: Versions {
                kernel: "6.1.0".into(),
                debian_suite: "bookworm".into(),
                node: Some("18".into()),
                python: None,
                deno: Some("2.9.8".into()),
            },
            sizes: Sizes {
                vmlinux: 1,
                rootfs: 2,
                overlay_apparent: 3,
                overlay_on_disk: 4,
            },
            sha256: Hashes {
                vmlinux: "a".into(),
                rootfs: "b".into(),
            },
            inputs: Inputs {
                kernel: "k".into(),
                rootfs_base: "r".into(),
                hearth_init: "i".into(),
                hearth_agent: "g".into(),
                assembly: "x".into(),
            },
        }
    }

    #[test]
    fn lists_only_images_with_a_manifest() {
        let d = tempfile::tempdir().unwrap();
        for name in ["zeta", "alpha"] {
            let dir = d.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            write_manifest(&dir, &sample(name)).unwrap();
        }
        std::fs::create_dir(d.path().join(".alpha.123.tmp")).unwrap();
        std::fs::create_dir(d.path().join("half-built")).unwrap();
        let names: Vec<_> = list_images_in(d.path())
            .unwrap()
            .into_iter()
            .map(|i| i.manifest.name)
            .collect();
        assert_eq!(names, ["alpha", "zeta"]);
        let img = open_image_in(d.path(), "zeta").unwrap();
        assert_eq!(img.manifest, sample("zeta"));
        assert!(img.rootfs().ends_with("zeta/rootfs.ext4"));
        assert!(matches!(
            open_image_in(d.path(), "half-built"),
            Err(Error::NoImage(..))
        ));
        assert!(matches!(
            open_image_in(d.path(), "../x"),
            Err(Error::BadName(_))
        ));
    }

    #[test]
    fn missing_images_dir_is_an_empty_list() {
        let d = tempfile::tempdir().unwrap();
        assert!(list_images_in(&d.path().join("nope")).unwrap().is_empty());
    }
}
