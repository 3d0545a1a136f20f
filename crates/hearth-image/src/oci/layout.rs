//! Finding an image's layers and config in the three forms people bring: an OCI
//! image layout directory, an OCI archive (that directory as a tar), and a `docker
//! save` archive (`manifest.json` naming a config and layer tars; Docker 25+ writes an
//! OCI layout beside it, which then wins). Every blob named by digest is checked
//! against its digest and size before use.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};

use crate::{util, Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OciLayout,
    OciArchive,
    DockerSave,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::OciLayout => "oci-layout",
            Format::OciArchive => "oci-archive",
            Format::DockerSave => "docker-save",
        }
    }
}

/// What the importer needs: layer files (lowest first), the config, a content digest.
pub struct Resolved {
    pub format: Format,
    pub digest: String,
    pub config: ImageConfiguration,
    pub layers: Vec<PathBuf>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Other(format!("not a usable OCI image: {}", msg.into()))
}

/// A file name inside an image archive we are willing to extract: 1-3 plain
/// components (`index.json`, `blobs/sha256/<hex>`, `<id>/layer.tar`).
fn archive_name_ok(name: &str) -> bool {
    let parts: Vec<&str> = name.trim_start_matches("./").split('/').collect();
    (1..=3).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.len() <= 255
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
}

/// Extracts the regular files of an image archive with acceptable names into `dest`;
/// anything else (links, devices, odd names) is ignored: none of it is image content.
fn extract_archive(src: &Path, dest: &Path) -> Result<()> {
    let f = File::open(src).map_err(|e| Error::io(src, e))?;
    let mut ar = tar::Archive::new(f);
    let entries = ar
        .entries()
        .map_err(|e| bad(format!("{}: {e}", src.display())))?;
    for entry in entries {
        let mut e = entry.map_err(|e| bad(format!("{}: {e}", src.display())))?;
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        if !archive_name_ok(&name) {
            continue;
        }
        let out = dest.join(name.trim_start_matches("./"));
        util::mkdirs(out.parent().expect("has parent"))?;
        let mut w = File::create(&out).map_err(|e| Error::io(&out, e))?;
        std::io::copy(&mut e, &mut w).map_err(|e| Error::io(&out, e))?;
    }
    Ok(())
}

/// Makes `src` a directory holding the image (extracting an archive into `scratch`),
/// and tells which form it is.
pub fn stage(src: &Path, scratch: &Path) -> Result<(Format, PathBuf)> {
    let meta = std::fs::metadata(src).map_err(|e| Error::io(src, e))?;
    let (root, archive) = if meta.is_dir() {
        (src.to_path_buf(), false)
    } else {
        let root = scratch.join("archive");
        util::mkdirs(&root)?;
        extract_archive(src, &root)?;
        (root, true)
    };
    let format = if root.join("index.json").is_file() {
        if archive {
            Format::OciArchive
        } else {
            Format::OciLayout
        }
    } else if root.join("manifest.json").is_file() {
        Format::DockerSave
    } else {
        return Err(bad(format!(
            "{} has neither index.json (OCI layout) nor manifest.json (docker save)",
            src.display()
        )));
    };
    Ok((format, root))
}

/// A blob by digest, checked: `sha256:<64 hex>`, present as a regular file (never a
/// link), of the descriptor's size and hash.
fn blob(root: &Path, d: &Descriptor) -> Result<PathBuf> {
    let digest = d.digest().to_string();
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| bad(format!("digest {digest:?} is not sha256")))?;
    let p = root.join("blobs/sha256").join(hex);
    let m = std::fs::symlink_metadata(&p).map_err(|_| bad(format!("blob {digest} is missing")))?;
    if !m.is_file() || m.len() != d.size() {
        return Err(bad(format!(
            "blob {digest} is not a file of {} bytes",
            d.size()
        )));
    }
    if util::sha256_file(&p)? != hex.to_ascii_lowercase() {
        return Err(bad(format!("blob {digest} does not match its digest")));
    }
    Ok(p)
}

fn is_index(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageIndex)
        || mt.as_ref() == "application/vnd.docker.distribution.manifest.list.v2+json"
}

/// The manifest for linux/amd64 (or the only one), following nested indexes.
fn pick_manifest(root: &Path, index: &ImageIndex, depth: u8) -> Result<(String, ImageManifest)> {
    let fits = |d: &&Descriptor| {
        d.platform().as_ref().is_none_or(|p| {
            p.os().to_string() == "linux" && p.architecture().to_string() == "amd64"
        })
    };
    let d = index
        .manifests()
        .iter()
        .find(fits)
        .ok_or_else(|| bad("no manifest for linux/amd64 in the index"))?;
    let path = blob(root, d)?;
    if is_index(d.media_type()) {
        if depth >= 2 {
            return Err(bad("indexes nested too deep"));
        }
        let inner = ImageIndex::from_file(&path).map_err(|e| bad(format!("index: {e}")))?;
        return pick_manifest(root, &inner, depth + 1);
    }
    let m = ImageManifest::from_file(&path).map_err(|e| bad(format!("manifest: {e}")))?;
    Ok((d.digest().to_string(), m))
}

fn resolve_oci(format: Format, root: &Path) -> Result<Resolved> {
    let index = ImageIndex::from_file(root.join("index.json"))
        .map_err(|e| bad(format!("index.json: {e}")))?;
    let (digest, manifest) = pick_manifest(root, &index, 0)?;
    let config_path = blob(root, manifest.config())?;
    let config =
        ImageConfiguration::from_file(&config_path).map_err(|e| bad(format!("config: {e}")))?;
    let layers = manifest
        .layers()
        .iter()
        .map(|d| blob(root, d))
        .collect::<Result<Vec<_>>>()?;
    Ok(Resolved {
        format,
        digest,
        config,
        layers,
    })
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    layers: Vec<String>,
}

/// A file named by `manifest.json`: relative, plain components, a regular file.
fn docker_file(root: &Path, name: &str) -> Result<PathBuf> {
    if !archive_name_ok(name) {
        return Err(bad(format!("manifest.json names {name:?}")));
    }
    let p = root.join(name);
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_file() => Ok(p),
        _ => Err(bad(format!("{name} is missing or not a regular file"))),
    }
}

fn resolve_docker(root: &Path) -> Result<Resolved> {
    let text = std::fs::read(root.join("manifest.json")).map_err(|e| Error::io(root, e))?;
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(&text).map_err(|e| bad(format!("manifest.json: {e}")))?;
    let entry = entries
        .first()
        .ok_or_else(|| bad("manifest.json lists no image"))?;
    let config_path = docker_file(root, &entry.config)?;
    let config =
        ImageConfiguration::from_file(&config_path).map_err(|e| bad(format!("config: {e}")))?;
    let layers = entry
        .layers
        .iter()
        .map(|l| docker_file(root, l))
        .collect::<Result<Vec<_>>>()?;
    Ok(Resolved {
        format: Format::DockerSave,
        digest: format!("sha256:{}", util::sha256_file(&config_path)?),
        config,
        layers,
    })
}

pub fn resolve(format: Format, root: &Path) -> Result<Resolved> {
    match format {
        Format::DockerSave => resolve_docker(root),
        f => resolve_oci(f, root),
    }
}

/// A layer file as an uncompressed tar stream (gzip detected by its magic, whatever
/// the media type says); zstd is refused by name rather than misread.
pub fn open_layer(path: &Path) -> Result<Box<dyn Read>> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|e| Error::io(path, e))?;
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    match &magic[..n] {
        [0x1f, 0x8b, ..] => Ok(Box::new(flate2::read::MultiGzDecoder::new(f))),
        [0x28, 0xb5, 0x2f, 0xfd] => Err(bad(format!(
            "layer {} is zstd-compressed, which this build does not read; re-export it with gzip",
            path.display()
        ))),
        _ => Ok(Box::new(f)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names written raw, so `..` survives.
    fn add(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    #[test]
    fn docker_save_archives_are_read() {
        let d = tempfile::tempdir().unwrap();
        let mut layer = tar::Builder::new(Vec::new());
        add(&mut layer, "etc/hello", b"hi");
        let layer = layer.into_inner().unwrap();
        let config =
            br#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"WorkingDir":"/srv"},
            "rootfs":{"type":"layers","diff_ids":[]},"container_config":{"Hostname":"x"}}"#;
        let mut ar = tar::Builder::new(Vec::new());
        add(&mut ar, "abc123.json", config);
        add(&mut ar, "deadbeef/layer.tar", &layer);
        add(
            &mut ar,
            "manifest.json",
            br#"[{"Config":"abc123.json","RepoTags":["x:1"],"Layers":["deadbeef/layer.tar"]}]"#,
        );
        add(&mut ar, "../../escape", b"ignored");
        let src = d.path().join("save.tar");
        std::fs::write(&src, ar.into_inner().unwrap()).unwrap();
        let (format, root) = stage(&src, &d.path().join("scratch")).unwrap();
        assert_eq!(format, Format::DockerSave);
        assert!(!d.path().join("escape").exists());
        let r = resolve(format, &root).unwrap();
        assert_eq!(r.layers.len(), 1);
        let env = r.config.config().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(env, ["A=1"]);
        assert!(r.digest.starts_with("sha256:"));
        let mut t = tar::Archive::new(open_layer(&r.layers[0]).unwrap());
        let names: Vec<String> = t
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["etc/hello"]);
    }

    #[test]
    fn tampered_blobs_are_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("blobs/sha256")).unwrap();
        let hex = "0".repeat(64);
        std::fs::write(d.path().join("blobs/sha256").join(&hex), b"not the content").unwrap();
        let desc: Descriptor = serde_json::from_value(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{hex}"), "size": 15}))
        .unwrap();
        let e = blob(d.path(), &desc).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
    }

    #[test]
    fn archive_names_are_plain() {
        for ok in [
            "index.json",
            "./oci-layout",
            "blobs/sha256/ab12",
            "abc/layer.tar",
        ] {
            assert!(archive_name_ok(ok), "{ok}");
        }
        for bad in [
            "../x",
            "blobs/../x",
            "/etc/passwd",
            "a/b/c/d",
            "a//b",
            "a b",
            "",
        ] {
            assert!(!archive_name_ok(bad), "{bad}");
        }
    }
}
