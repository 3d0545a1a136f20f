//! Templates: a VM's writes become a read-only layer over the VM's image. The layer is
//! a copy of the VM's overlay disk (an ext4 whose `upper/` is the OverlayFS upper dir),
//! taken while its file system is frozen or the VM stopped; VMs of the template attach
//! it read-only and stack its `upper/` as a lower layer (see `hearth-init`), each with
//! a fresh empty overlay of its own. Nothing of the parent is copied: its kernel,
//! rootfs, overlay template and older layers are hard links in the new image dir.
//!
//! Two steps, because only the caller can freeze the VM: [`begin`] checks and names the
//! layer file, the caller copies the disk to [`Pending::layer_path`], [`Pending::finish`]
//! checks the copy and publishes the image.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::manifest::{self, Image, Kind, MAX_LAYERS};
use crate::{paths, util, Error, Result};

/// A template being made: a scratch dir next to the final one.
#[derive(Debug)]
pub struct Pending {
    name: String,
    parent: Image,
    tmp: PathBuf,
    layer: String,
}

/// Checks `name` and the parent, and prepares the scratch dir that the VM's overlay
/// disk is copied into.
pub fn begin(name: &str, parent: &Image) -> Result<Pending> {
    if !paths::valid_name(name) {
        return Err(Error::BadName(name.to_string()));
    }
    let dir = parent
        .dir
        .parent()
        .ok_or_else(|| Error::Other("image dir has no parent".into()))?
        .join(name);
    if dir.exists() {
        return Err(Error::Other(format!(
            "an image named {name:?} already exists"
        )));
    }
    let depth = parent.manifest.origin.layers.len();
    if depth >= MAX_LAYERS {
        return Err(Error::Other(format!(
            "image {:?} already has {depth} template layers, the most an image may have \
             ({MAX_LAYERS}); make the template from a VM of a shallower image",
            parent.manifest.name
        )));
    }
    let tmp = util::scratch_for(&dir)?;
    // Unique per capture, so layer files keep their names when linked into children.
    let layer = format!(
        "layer-{}.ext4",
        &util::key_of(&[
            ("name", name.as_bytes()),
            (
                "time",
                format!("{:?}", std::time::SystemTime::now()).as_bytes()
            ),
            ("pid", &std::process::id().to_le_bytes()),
        ])[..16]
    );
    Ok(Pending {
        name: name.to_string(),
        parent: parent.clone(),
        tmp,
        layer,
    })
}

fn link_or_copy(src: &Path, dst: &Path) -> Result<()> {
    std::fs::hard_link(src, dst)
        .or_else(|_| std::fs::copy(src, dst).map(drop))
        .map_err(|e| Error::io(src, e))
}

impl Pending {
    /// Where the caller puts the copy of the VM's overlay disk (it must not exist yet).
    pub fn layer_path(&self) -> PathBuf {
        self.tmp.join(&self.layer)
    }

    /// Checks the copied disk (`e2fsck` replays a journal a stopped VM left unreplayed;
    /// the guest mounts layers read-only without one), links the parent's files in and
    /// publishes the image.
    pub fn finish(self) -> Result<Image> {
        let result = self.finish_in();
        if result.is_err() {
            let _ = util::remove_dir_all_if_exists(&self.tmp);
        }
        result
    }

    fn finish_in(&self) -> Result<Image> {
        let layer = self.layer_path();
        if !layer.is_file() {
            return Err(Error::Other(format!("{} was not copied", layer.display())));
        }
        crate::assemble::fsck(&layer)?;
        let listing = util::run(Command::new("debugfs").args(["-R", "ls -p /"]).arg(&layer))?;
        if !listing.contains("/upper/") {
            return Err(Error::Other(
                "the VM's disk has no upper/ directory (did the VM ever boot?)".into(),
            ));
        }
        let p = &self.parent;
        let mut files = vec![manifest::VMLINUX, manifest::ROOTFS];
        // An image uploaded through the API ships no overlay template (VMs then get a
        // fresh one); a template of it has none either.
        if p.dir.join(manifest::OVERLAY).exists() {
            files.push(manifest::OVERLAY);
        }
        files.extend(p.manifest.origin.layers.iter().map(String::as_str));
        for f in files {
            link_or_copy(&p.dir.join(f), &self.tmp.join(f))?;
        }
        let mut m = p.manifest.clone();
        m.name = self.name.clone();
        m.created_at = util::rfc3339(util::unix_now());
        m.build_secs = 0.0;
        m.origin.kind = Kind::Template;
        m.origin.parent = Some(p.manifest.name.clone());
        m.origin.layers.insert(0, self.layer.clone());
        manifest::write_manifest(&self.tmp, &m)?;
        let dir = self
            .tmp
            .parent()
            .expect("scratch has a parent")
            .join(&self.name);
        if dir.exists() {
            return Err(Error::Other(format!(
                "an image named {:?} appeared meanwhile",
                self.name
            )));
        }
        std::fs::rename(&self.tmp, &dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Image { dir, manifest: m })
    }

    /// Gives up: the scratch dir goes.
    pub fn abort(self) {
        let _ = util::remove_dir_all_if_exists(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;

    fn parent(images: &Path, layers: usize) -> Image {
        let dir = images.join("base");
        std::fs::create_dir_all(&dir).unwrap();
        let mut m = sample("base");
        for i in 0..layers {
            let f = format!("layer-{i}.ext4");
            std::fs::write(dir.join(&f), b"").unwrap();
            m.origin.layers.push(f);
        }
        for f in [manifest::VMLINUX, manifest::ROOTFS, manifest::OVERLAY] {
            std::fs::write(dir.join(f), f).unwrap();
        }
        manifest::write_manifest(&dir, &m).unwrap();
        Image { dir, manifest: m }
    }

    /// A disk like a VM's overlay: ext4 with `upper/` and `work/`.
    fn overlay_disk(path: &Path) {
        let src = path.with_extension("src");
        std::fs::create_dir_all(src.join("upper/home/user")).unwrap();
        std::fs::create_dir_all(src.join("work")).unwrap();
        std::fs::write(src.join("upper/home/user/f"), b"hi").unwrap();
        std::fs::File::create(path)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        util::run(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(&src)
                .arg(path),
        )
        .unwrap();
    }

    #[test]
    fn a_template_links_its_parent_and_puts_its_layer_first() {
        let d = tempfile::tempdir().unwrap();
        let p = parent(d.path(), 1);
        let pending = begin("t1", &p).unwrap();
        overlay_disk(&pending.layer_path());
        let t = pending.finish().unwrap();
        let m = &t.manifest;
        assert_eq!(
            (m.origin.kind, m.origin.parent.as_deref()),
            (Kind::Template, Some("base"))
        );
        assert_eq!(m.origin.layers.len(), 2);
        assert_eq!(m.origin.layers[1], "layer-0.ext4");
        assert!(
            m.origin.layers[0].starts_with("layer-") && t.dir.join(&m.origin.layers[0]).is_file()
        );
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(
            ino(&t.rootfs()),
            ino(&p.rootfs()),
            "the base is linked, not copied"
        );
        assert_eq!(manifest::read_manifest(&t.dir).unwrap(), *m);
        assert!(matches!(begin("t1", &p), Err(Error::Other(m)) if m.contains("already exists")));
    }

    #[test]
    fn depth_is_bounded_and_bad_disks_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        let deep = parent(d.path(), MAX_LAYERS);
        let e = begin("t", &deep).unwrap_err().to_string();
        assert!(e.contains(&MAX_LAYERS.to_string()), "{e}");
        let p = parent(&d.path().join("other"), 0);
        let pending = begin("t", &p).unwrap();
        std::fs::write(pending.layer_path(), b"not ext4").unwrap();
        assert!(pending.finish().is_err());
        let left: Vec<_> = std::fs::read_dir(d.path().join("other"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["base"], "scratch removed");
        assert!(matches!(begin("../x", &p), Err(Error::BadName(_))));
    }
}
