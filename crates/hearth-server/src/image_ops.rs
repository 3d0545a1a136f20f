//! Images the server makes: custom builds (`POST /v1/images` with packages, a setup
//! script or a parent) and templates of VMs (`POST /v1/vms/{id}/template`). Both land
//! in the images dir as `hearth image build` would leave them and are registered the
//! same way.
//!
//! Builds run synchronously, one at a time (they are heavy: apt, mkfs, hashing), and
//! answer when done. A build still running after [`BUILD_TIMEOUT`] gets a 503 naming
//! the timeout; it goes on in the background and its image appears in
//! `GET /v1/images` when finished (a build cannot be stopped half-way without leaving
//! a half-written cache entry behind).

use std::path::PathBuf;
use std::time::Duration;

use hearth_image::{CustomOptions, Image};

use crate::error::{AppError, Result};
use crate::images::{register, validate_name};
use crate::models::VmState;
use crate::owner::{self, Cmd};
use crate::AppState;
use hearth_api::images::Image as ImageRecord;

pub const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// One build at a time: two would only fight for the same two cores and disk.
static BUILDS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What `POST /v1/images` asks to build.
pub struct BuildRequest {
    pub name: String,
    pub packages: Vec<String>,
    /// The setup script's text.
    pub script: Option<String>,
    pub from: Option<String>,
}

/// Image-builder errors: an unknown `from` is a 404 (as an unknown image is for a VM), a
/// refused name a 409, a tool that failed (apt, the setup script) a 422 with its output's
/// tail.
fn image_error(e: hearth_image::Error) -> AppError {
    use hearth_image::Error as E;
    match e {
        E::BadName(_) | E::Other(_) | E::Command { .. } => AppError::Unprocessable(e.to_string()),
        E::NoImage(..) => AppError::NotFound(e.to_string()),
        E::NotRoot => AppError::Unavailable {
            what: "image builds need the server to run as root",
            detail: e.to_string(),
        },
        e => AppError::Internal(e.to_string()),
    }
}

/// 409 when the name is taken, in the store or on disk.
async fn name_free(state: &AppState, name: &str) -> Result<()> {
    validate_name(name)?;
    match state.store.image(name).await {
        Ok(_) => Err(AppError::Conflict(format!(
            "an image named {name:?} already exists"
        ))),
        Err(AppError::NotFound(_)) if !state.config.images_dir().join(name).exists() => Ok(()),
        Err(AppError::NotFound(_)) => Err(AppError::Conflict(format!(
            "image directory {name:?} already exists"
        ))),
        Err(e) => Err(e),
    }
}

async fn registered(state: &AppState, name: &str) -> Result<ImageRecord> {
    register(state, false).await?;
    state.store.image(name).await
}

pub async fn build(state: &AppState, req: BuildRequest) -> Result<ImageRecord> {
    name_free(state, &req.name).await?;
    let scripts = tempfile::tempdir().map_err(|e| AppError::io("temp dir", e))?;
    let script = match &req.script {
        Some(text) => {
            let p = scripts.path().join("setup.sh");
            std::fs::write(&p, text).map_err(|e| AppError::io("writing the script", e))?;
            Some(p)
        }
        None => None,
    };
    let opts = CustomOptions {
        name: req.name.clone(),
        packages: req.packages,
        script,
        from: req.from,
        quiet: true,
        images_dir: Some(state.config.images_dir()),
    };
    hearth_image::custom::validate(&opts).map_err(image_error)?;
    if let Some(from) = &opts.from {
        state.store.image(from).await?;
    }
    let _one = BUILDS.lock().await;
    let job = tokio::task::spawn_blocking(move || {
        let r = hearth_image::custom::build(&opts);
        drop(scripts);
        r
    });
    match tokio::time::timeout(BUILD_TIMEOUT, job).await {
        Err(_) => Err(AppError::Unavailable {
            what: "the image build is still running after 20 minutes; it goes on and the \
                   image appears in GET /v1/images when done",
            detail: format!("timeout {} s", BUILD_TIMEOUT.as_secs()),
        }),
        Ok(joined) => {
            joined
                .map_err(|e| AppError::Internal(format!("build task: {e}")))?
                .map_err(image_error)?;
            registered(state, &req.name).await
        }
    }
}

/// The manifest-backed image a VM boots, for a template's parent.
async fn parent_image(state: &AppState, image_id: &str) -> Result<Image> {
    let rec = state.store.image(image_id).await?;
    let dir = rec
        .rootfs_path
        .as_deref()
        .and_then(|p| std::path::Path::new(p).parent().map(PathBuf::from));
    match dir.map(|d| (hearth_image::read_manifest(&d), d)) {
        Some((Ok(manifest), dir)) => Ok(Image { dir, manifest }),
        _ => Err(AppError::Conflict(format!(
            "image {} has no manifest (uploaded or built-in); templates need an image \
             built by hearth image build/import",
            rec.name
        ))),
    }
}

/// Makes the image `name` from the VM's writes on top of its image.
pub async fn template(state: &AppState, vm_id: &str, name: &str) -> Result<ImageRecord> {
    let vm = state.store.vm(vm_id).await?;
    if !matches!(vm.state, VmState::Running | VmState::Stopped) {
        return Err(AppError::Conflict(format!(
            "VM {vm_id} is {}; only running or stopped VMs can become templates",
            vm.state
        )));
    }
    name_free(state, name).await?;
    let parent = parent_image(state, &vm.image_id).await?;
    let pending = hearth_image::template::begin(name, &parent).map_err(|e| match e {
        hearth_image::Error::Other(m) if m.contains("already exists") => AppError::Conflict(m),
        e => image_error(e),
    })?;
    let dest = pending.layer_path();
    if let Err(e) = owner::ask(state, vm_id, |r| Cmd::Capture(dest, r)).await {
        pending.abort();
        return Err(e);
    }
    tokio::task::spawn_blocking(move || pending.finish())
        .await
        .map_err(|e| AppError::Internal(format!("template task: {e}")))?
        .map_err(image_error)?;
    registered(state, name).await
}

/// Copies the VM's overlay disk to `dest`: frozen through the agent for the copy when it
/// runs, as it is when stopped. Called by the VM's owner task only, so the copy never
/// races a stop or a delete.
pub async fn capture(
    vm: &crate::models::VmRecord,
    handle: Option<&hearth_vmm::VmHandle>,
    state_dir: &std::path::Path,
    dest: &std::path::Path,
) -> Result<()> {
    match (handle, vm.state) {
        (Some(h), VmState::Running) => {
            let frozen = hearth_vmm::template::capture_running(h, dest).await?;
            tracing::info!(vm = %vm.id, frozen_ms = frozen.as_millis() as u64, "overlay captured");
            Ok(())
        }
        (_, VmState::Stopped) => {
            let disk = hearth_vmm::VmHandle::adopt(state_dir)?.overlay_path;
            Ok(hearth_vmm::template::capture_stopped(&disk, dest)?)
        }
        (_, s) => Err(AppError::Conflict(format!(
            "VM {} is {s}; only running or stopped VMs can become templates",
            vm.id
        ))),
    }
}

/// Images whose manifest names `name` as parent: they cannot outlive it in name.
pub fn children(state: &AppState, name: &str) -> Vec<String> {
    hearth_image::children_of(&state.config.images_dir(), name).unwrap_or_default()
}
