//! `POST /fs/freeze` and `/fs/thaw`: the per-VM disk's file system frozen (`FIFREEZE`)
//! while the host copies the disk for a template, so the copy is a clean file system
//! with every write so far in it. Writers block meanwhile; the agent itself writes
//! nothing to that disk while answering. A freeze thaws by itself after its timeout, so
//! a host that dies mid-copy never leaves the guest stuck.

use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::Duration;

use hearth_proto::image::{FreezeRequest, FreezeState, DEFAULT_FREEZE_MS};
use hearth_proto::MAX_JSON_BODY;
use http::Response;
use hyper::body::Incoming;

use super::http::{self as h, Body};
use super::{AgentError, Result};
use crate::init::disks::FREEZE_MNT;

/// `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)` from linux/fs.h.
const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

/// The pending automatic thaw of the current freeze; `Some` while frozen.
static FROZEN: Mutex<Option<tokio::task::AbortHandle>> = Mutex::new(None);

fn ioctl(request: libc::c_ulong) -> std::io::Result<()> {
    let dir = std::fs::File::open(FREEZE_MNT)?;
    // SAFETY: FIFREEZE/FITHAW take no argument memory; the fd is open for the call.
    let r = unsafe { libc::ioctl(dir.as_raw_fd(), request as _, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

async fn blocking(request: libc::c_ulong) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || ioctl(request))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

pub async fn freeze(req: hyper::Request<Incoming>) -> Result<Response<Body>> {
    let req: FreezeRequest = h::read_json(req, MAX_JSON_BODY).await?;
    req.validate()?;
    let timeout = Duration::from_millis(req.timeout_ms.unwrap_or(DEFAULT_FREEZE_MS));
    if FROZEN.lock().expect("freeze lock").is_some() {
        return Err(AgentError::Conflict(
            "the file system is already frozen".into(),
        ));
    }
    // FIFREEZE syncs first, which may take a while; off the async workers.
    blocking(FIFREEZE)
        .await
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => AgentError::Conflict(format!(
                "no per-VM disk to freeze ({FREEZE_MNT} is missing: the overlay lives in RAM)"
            )),
            Some(libc::EBUSY) => AgentError::Conflict("the file system is already frozen".into()),
            _ => AgentError::Internal(format!("FIFREEZE on {FREEZE_MNT}: {e}")),
        })?;
    let auto = tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        if FROZEN.lock().expect("freeze lock").take().is_some() {
            eprintln!("hearth-agent: freeze timed out after {timeout:?}; thawing");
            let _ = blocking(FITHAW).await;
        }
    });
    *FROZEN.lock().expect("freeze lock") = Some(auto.abort_handle());
    Ok(h::json(200, &FreezeState { frozen: true }))
}

pub async fn thaw() -> Result<Response<Body>> {
    let pending = FROZEN.lock().expect("freeze lock").take();
    let Some(auto) = pending else {
        return Err(AgentError::Conflict("the file system is not frozen".into()));
    };
    auto.abort();
    blocking(FITHAW)
        .await
        .map_err(|e| AgentError::Internal(format!("FITHAW on {FREEZE_MNT}: {e}")))?;
    Ok(h::json(200, &FreezeState { frozen: false }))
}
