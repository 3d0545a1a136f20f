//! `manifest.json`: what an image is made of, so the VMM and server can trust a
//! directory without rebuilding it, and a warm build can tell nothing changed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{paths, Error, Result};

pub const MANIFEST: &str = "manifest.json";
pub const VMLINUX: &str = "vmlinux";
pub const ROOTFS: &str = "rootfs.ext4";
pub const OVERLAY: &str = "overlay.ext4";
/// Deepest stack of template layers an image may have (see [`Origin::layers`]). Each
/// layer is one more read-only virtio-blk disk; eight leave room on every VMM's bus.
pub const MAX_LAYERS: usize = hearth_proto::image::MAX_LAYERS;

/// How an image came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `hearth image build` without packages or a script: the default tree.
    #[default]
    Base,
    /// Debian packages and/or a setup script on top of another tree.
    Custom,
    /// Unpacked from an OCI image or a `docker save` archive.
    Oci,
    /// A running VM's writes, captured as read-only layers over its image.
    Template,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub created_at: String,
    pub build_secs: f64,
    pub versions: Versions,
    pub sizes: Sizes,
    pub sha256: Hashes,
    pub inputs: Inputs,
    /// What the image was made from beyond the default tree; absent in older manifests.
    #[serde(flatten)]
    pub origin: Origin,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    #[serde(default)]
    pub kind: Kind,
    /// The image this one was made from (`--from`, or the VM's image for a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Debian packages installed on top of the parent tree, as asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// sha256 of the setup script run at build time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_sha256: Option<String>,
    /// Cache keys of the directory trees the rootfs was made from, top first
    /// (`layer:<key>`, `base:<key>`, `oci:<key>`); lets `--from` reuse them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tree: Vec<String>,
    /// Template layers: file names in the image dir, newest first. Each is an ext4 disk
    /// whose `upper/` is stacked read-only over the rootfs (OverlayFS lower layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
    /// `Env`, `WorkingDir` and `User` from an OCI image's config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<hearth_proto::ImageConfig>,
    /// Where an OCI image came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciSource>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OciSource {
    /// `oci-layout`, `oci-archive` or `docker-save`.
    pub format: String,
    /// Digest of the image manifest (for `docker-save`: of its config).
    pub digest: String,
    pub layers: usize,
    /// Entries skipped while unpacking (device nodes), so nothing is dropped silently.
    pub skipped: Vec<String>,
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
    /// Template layer disks, newest first.
    pub fn layers(&self) -> Vec<PathBuf> {
        self.manifest
            .origin
            .layers
            .iter()
            .map(|l| self.dir.join(l))
            .collect()
    }
}

/// The template layers of the image in `dir` (newest first); none when the directory
/// has no manifest (an image uploaded through the API) or it names none.
pub fn layers_of(dir: &Path) -> Vec<PathBuf> {
    read_manifest(dir)
        .map(|m| m.origin.layers.iter().map(|l| dir.join(l)).collect())
        .unwrap_or_default()
}

/// Images under `images` whose manifest names `name` as their parent.
pub fn children_of(images: &Path, name: &str) -> Result<Vec<String>> {
    Ok(list_images_in(images)?
        .into_iter()
        .filter(|i| i.manifest.origin.parent.as_deref() == Some(name))
        .map(|i| i.manifest.name)
        .collect())
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
pub(crate) mod tests {
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
            origin: Origin::default(),
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
    fn old_manifests_read_as_base_images_and_children_are_found() {
        let d = tempfile::tempdir().unwrap();
        let mut json = serde_json::to_value(sample("old")).unwrap();
        json.as_object_mut().unwrap().remove("kind");
        let m: Manifest = serde_json::from_value(json).unwrap();
        assert_eq!(m.origin, Origin::default());
        for (name, parent) in [("base", None), ("t1", Some("base")), ("t2", Some("t1"))] {
            let dir = d.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            let mut m = sample(name);
            m.origin.parent = parent.map(str::to_string);
            m.origin.layers = vec!["layer-a.ext4".into()];
            write_manifest(&dir, &m).unwrap();
        }
        assert_eq!(children_of(d.path(), "base").unwrap(), ["t1"]);
        assert!(children_of(d.path(), "t2").unwrap().is_empty());
        assert_eq!(
            layers_of(&d.path().join("t1")),
            [d.path().join("t1/layer-a.ext4")]
        );
        assert!(layers_of(&d.path().join("nope")).is_empty());
    }

    #[test]
    fn missing_images_dir_is_an_empty_list() {
        let d = tempfile::tempdir().unwrap();
        assert!(list_images_in(&d.path().join("nope")).unwrap().is_empty());
    }
}
