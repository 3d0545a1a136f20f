//! Images: a kernel and a base rootfs. Three sources end up in one table: directories
//! that `hearth image build` left under `images/` (scanned on start), the built-in pair
//! named by `KERNEL_PATH` + `BASE_ROOTFS_PATH`, and images uploaded through the API.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{AppError, Result};
use crate::models::{Image, ImageSource, Timestamp};
use crate::AppState;

pub const KERNEL_FILE: &str = "vmlinux";
pub const ROOTFS_FILE: &str = "rootfs.ext4";
/// Name the `KERNEL_PATH` + `BASE_ROOTFS_PATH` image is registered under.
pub const BUILTIN_NAME: &str = "builtin";

/// Image names become directory names: `hearth_api::images::check_name` keeps them boring.
pub fn validate_name(name: &str) -> Result<()> {
    Ok(hearth_api::images::check_name(name)?)
}

fn new_record(name: &str, source: ImageSource) -> Image {
    Image {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_string(),
        kernel_path: None,
        rootfs_path: None,
        kernel_sha256: None,
        rootfs_sha256: None,
        source,
        is_default: false,
        ready: false,
        created_at: Timestamp::now(),
    }
}

/// Registers built and built-in images not yet in the store, and makes sure there is a
/// default (`default`, else `builtin`, else the first ready image). Runs on start and on
/// every `GET /v1/images`. Hashes are not computed for these: a rootfs is hundreds of MB.
pub async fn register_on_start(state: &AppState) -> Result<()> {
    register(state, true).await
}

/// `with_builtin`: the env-named image is registered on start only, so deleting it
/// through the API sticks until the next start.
pub async fn register(state: &AppState, with_builtin: bool) -> Result<()> {
    let known: Vec<String> = state
        .store
        .list_images()
        .await?
        .into_iter()
        .map(|i| i.name)
        .collect();
    let mut found: Vec<(String, PathBuf, PathBuf, ImageSource)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(state.config.images_dir()) {
        for entry in rd.flatten() {
            let dir = entry.path();
            let (k, r) = (dir.join(KERNEL_FILE), dir.join(ROOTFS_FILE));
            if let Some(name) = dir.file_name().and_then(|n| n.to_str()) {
                if k.is_file() && r.is_file() && validate_name(name).is_ok() {
                    found.push((name.to_string(), k, r, ImageSource::Built));
                }
            }
        }
    }
    let builtin = (&state.config.kernel_path, &state.config.base_rootfs_path);
    if let (true, Some(k), Some(r)) = (with_builtin, builtin.0, builtin.1) {
        found.push((
            BUILTIN_NAME.to_string(),
            k.clone(),
            r.clone(),
            ImageSource::Builtin,
        ));
    }
    for (name, k, r, source) in found {
        if known.contains(&name) {
            continue;
        }
        let mut rec = new_record(&name, source);
        rec.kernel_path = Some(k.display().to_string());
        rec.rootfs_path = Some(r.display().to_string());
        state.store.insert_image(&rec).await?;
        tracing::info!(image = %name, %source, "registered image");
    }
    if state.store.default_image().await?.is_none() {
        let images = state.store.list_images().await?;
        let pick = ["default", BUILTIN_NAME]
            .iter()
            .find_map(|n| images.iter().find(|i| i.name == *n && i.ready))
            .or_else(|| images.iter().find(|i| i.ready));
        if let Some(img) = pick {
            state.store.set_default_image(&img.id).await?;
            tracing::info!(image = %img.name, "default image");
        }
    }
    Ok(())
}

pub async fn create_image(state: &AppState, name: &str) -> Result<Image> {
    validate_name(name)?;
    let dir = state.config.images_dir().join(name);
    if dir.exists() {
        return Err(AppError::Conflict(format!(
            "image directory {} already exists",
            dir.display()
        )));
    }
    let rec = new_record(name, ImageSource::Api);
    state.store.insert_image(&rec).await?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| AppError::io(format!("creating {}", dir.display()), e))?;
    Ok(rec)
}

/// Streams an uploaded kernel or rootfs to `images/NAME/`, hashing as it goes; the file
/// appears under its final name only when complete (written to a temp name, renamed).
pub async fn put_file<S, E>(
    state: &AppState,
    id: &str,
    kind: &str,
    body: S,
    limit: usize,
) -> Result<Image>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let img = state.store.image(id).await?;
    if img.source != ImageSource::Api {
        return Err(AppError::Conflict(format!(
            "image {} was not created through the API ({}); its files are not replaceable",
            img.name, img.source
        )));
    }
    if !state.store.vms_using_image(&img.id).await?.is_empty() {
        return Err(AppError::Conflict(format!(
            "image {} is in use by VMs",
            img.name
        )));
    }
    let file = if kind == "kernel" {
        KERNEL_FILE
    } else {
        ROOTFS_FILE
    };
    let dir = state.config.images_dir().join(&img.name);
    let dest = dir.join(file);
    let tmp = dir.join(format!(".{file}.upload"));
    let sha = match write_stream(&tmp, body, limit).await {
        Ok(sha) => sha,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &dest)
        .map_err(|e| AppError::io(format!("renaming to {}", dest.display()), e))?;
    state
        .store
        .set_image_file(&img.id, kind, &dest.display().to_string(), &sha)
        .await?;
    state.store.image(&img.id).await
}

async fn write_stream<S, E>(path: &Path, mut body: S, limit: usize) -> Result<String>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let ctx = || format!("writing {}", path.display());
    let mut f = tokio::fs::File::create(path)
        .await
        .map_err(|e| AppError::io(ctx(), e))?;
    let mut hasher = Sha256::new();
    let mut total = 0usize;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| AppError::BadRequest(format!("reading body: {e}")))?;
        total += chunk.len();
        if total > limit {
            return Err(AppError::PayloadTooLarge(format!(
                "image file is larger than {limit} bytes (limit max_image_file_bytes)"
            )));
        }
        hasher.update(&chunk);
        f.write_all(&chunk)
            .await
            .map_err(|e| AppError::io(ctx(), e))?;
    }
    if total == 0 {
        return Err(AppError::Unprocessable(
            "the body is empty: send the file".into(),
        ));
    }
    f.sync_all().await.map_err(|e| AppError::io(ctx(), e))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Deletes an image (409 while a VM uses it or another image was made from it, naming
/// them). Files are removed only when they live in our images dir; a built-in image's
/// files belong to whoever set `KERNEL_PATH`.
pub async fn delete_image(state: &AppState, id: &str) -> Result<()> {
    let img = state.store.image(id).await?;
    let users = state.store.vms_using_image(&img.id).await?;
    let children = crate::image_ops::children(state, &img.name);
    if !users.is_empty() || !children.is_empty() {
        let mut by = Vec::new();
        if !users.is_empty() {
            by.push(format!("VM(s) {}", users.join(", ")));
        }
        if !children.is_empty() {
            by.push(format!("image(s) {}", children.join(", ")));
        }
        return Err(AppError::Conflict(format!(
            "image {} is in use by {}",
            img.name,
            by.join(" and ")
        )));
    }
    state.store.delete_image(&img.id).await?;
    if img.source != ImageSource::Builtin {
        let dir = state.config.images_dir().join(&img.name);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(AppError::io(format!("removing {}", dir.display()), e));
            }
        }
    }
    Ok(())
}
