//! VM lifecycle routes: create, list, show, delete, stop, start, console log, history.

use std::io::{Read, Seek, SeekFrom};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use hearth_api::vms::{
    CallHistory, ConsoleLog, ConsoleQuery, CreateVm, HistoryQuery, ListVms, Vm, VmList,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Conflict, NotFound, TooManyRequests};
use super::{Valid, ValidQuery};
use crate::error::{AppError, Result};
use crate::{vms, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_vm, list_vms))
        .routes(routes!(get_vm, delete_vm))
        .routes(routes!(stop_vm))
        .routes(routes!(pause_vm))
        .routes(routes!(resume_vm))
        .routes(routes!(start_vm))
        .routes(routes!(console_log))
        .routes(routes!(call_history))
}

/// Creates a VM and answers when its agent is ready.
#[utoipa::path(post, path = "/v1/vms", tag = "vms", request_body = CreateVm,
    responses((status = 201, description = "The VM runs.", body = Vm),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict),
              (status = 429, response = TooManyRequests)))]
async fn create_vm(
    State(state): State<AppState>,
    Valid(req): Valid<CreateVm>,
) -> Result<(StatusCode, axum::Json<Vm>)> {
    let vm = vms::create_vm(&state, req).await?;
    Ok((StatusCode::CREATED, axum::Json(vm.vm)))
}

/// VMs, oldest first; deleted ones too (their records stay).
#[utoipa::path(get, path = "/v1/vms", tag = "vms", params(ListVms),
    responses((status = 200, description = "The VMs.", body = VmList)))]
async fn list_vms(
    State(state): State<AppState>,
    ValidQuery(q): ValidQuery<ListVms>,
) -> Result<axum::Json<VmList>> {
    let states: Vec<_> = q.state.into_iter().collect();
    let vms = state.store.list_vms(&states).await?;
    Ok(axum::Json(VmList {
        vms: vms.into_iter().map(|r| r.vm).collect(),
    }))
}

/// One VM; 404 once it was deleted (its record stays in `GET /v1/vms?state=deleted`).
#[utoipa::path(get, path = "/v1/vms/{id}", tag = "vms", params(("id" = String, Path, format = Uuid, description = "The VM's id.")),
    responses((status = 200, description = "The VM.", body = Vm),
              (status = 404, response = NotFound)))]
async fn get_vm(State(state): State<AppState>, Path(id): Path<String>) -> Result<axum::Json<Vm>> {
    Ok(axum::Json(vms::visible_vm(&state, &id).await?.vm))
}

/// Destroys the VM: processes, sockets, overlay and state dir. From then on the VM's
/// routes answer 404; its record stays, `deleted`, in the list.
#[utoipa::path(delete, path = "/v1/vms/{id}", tag = "vms", params(("id" = String, Path, format = Uuid, description = "The VM's id.")),
    responses((status = 204, description = "Destroyed."),
              (status = 404, response = NotFound)))]
async fn delete_vm(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode> {
    vms::destroy_vm(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Powers the VM off; its overlay disk is kept for `start`.
#[utoipa::path(post, path = "/v1/vms/{id}/stop", tag = "vms", params(("id" = String, Path, format = Uuid, description = "The VM's id.")),
    responses((status = 200, description = "The VM, stopped.", body = Vm),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict)))]
async fn stop_vm(State(state): State<AppState>, Path(id): Path<String>) -> Result<axum::Json<Vm>> {
    Ok(axum::Json(vms::stop_vm(&state, &id).await?.vm))
}

/// Freezes a running VM in memory: no guest code runs and its VMM uses no CPU (QEMU:
/// the process is stopped, so nothing is saved to disk; Firecracker: `PATCH /vm`). Any
/// call that needs the guest (exec, files, processes ...) resumes it first. Pausing a
/// paused VM changes nothing. The TTL still applies.
#[utoipa::path(post, path = "/v1/vms/{id}/pause", tag = "vms", params(("id" = String, Path, format = Uuid, description = "The VM's id.")),
    responses((status = 200, description = "The VM, paused.", body = Vm),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict)))]
async fn pause_vm(State(state): State<AppState>, Path(id): Path<String>) -> Result<axum::Json<Vm>> {
    Ok(axum::Json(vms::pause_vm(&state, &id).await?.vm))
}

/// Lets a paused VM run again (a running one is left as it is).
#[utoipa::path(post, path = "/v1/vms/{id}/resume", tag = "vms", params(("id" = String, Path, format = Uuid, description = "The VM's id.")),
    responses((status = 200, description = "The VM, running.", body = Vm),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict)))]
async fn resume_vm(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Vm>> {
    Ok(axum::Json(vms::resume_vm(&state, &id).await?.vm))
}

/// Boots a stopped VM again on its kept overlay disk.
#[utoipa::path(post, path = "/v1/vms/{id}/start", tag = "vms", params(("id" = String, Path, format = Uuid, description = "The VM's id.")),
    responses((status = 200, description = "The VM, running.", body = Vm),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict),
              (status = 429, response = TooManyRequests)))]
async fn start_vm(State(state): State<AppState>, Path(id): Path<String>) -> Result<axum::Json<Vm>> {
    Ok(axum::Json(vms::start_vm(&state, &id).await?.vm))
}

/// The end of the VM's serial console log.
#[utoipa::path(get, path = "/v1/vms/{id}/logs", tag = "vms",
    params(("id" = String, Path, format = Uuid, description = "The VM's id."), ConsoleQuery),
    responses((status = 200, description = "The last lines.", body = ConsoleLog),
              (status = 404, response = NotFound)))]
async fn console_log(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ValidQuery(q): ValidQuery<ConsoleQuery>,
) -> Result<axum::Json<ConsoleLog>> {
    vms::visible_vm(&state, &id).await?;
    let n = q.tail.unwrap_or(100) as usize;
    let dir = state.config.vms_dir().join(&id);
    let path = hearth_vmm::VmHandle::adopt(&dir)
        .map(|h| h.console_path)
        .unwrap_or_else(|_| dir.join("console.log"));
    let lines = tokio::task::spawn_blocking(move || tail_lines(&path, n))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(axum::Json(ConsoleLog { lines }))
}

/// Last `n` lines, reading at most the last 1 MiB (console logs can grow large).
fn tail_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return vec![];
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(1 << 20);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
        return vec![];
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect()
}

/// Recent exec/run calls with inputs, exit codes and durations, newest first.
#[utoipa::path(get, path = "/v1/vms/{id}/history", tag = "vms",
    params(("id" = String, Path, format = Uuid, description = "The VM's id."), HistoryQuery),
    responses((status = 200, description = "The calls.", body = CallHistory),
              (status = 404, response = NotFound)))]
async fn call_history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ValidQuery(q): ValidQuery<HistoryQuery>,
) -> Result<axum::Json<CallHistory>> {
    vms::visible_vm(&state, &id).await?;
    let limit = q.limit.unwrap_or(50).into();
    Ok(axum::Json(CallHistory {
        calls: state.store.list_calls(&id, limit).await?,
    }))
}
