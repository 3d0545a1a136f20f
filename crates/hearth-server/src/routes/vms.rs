//! VM lifecycle routes: create, list, show, delete, stop, start, logs, history.

use std::io::{Read, Seek, SeekFrom};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Json, Query};
use crate::error::{AppError, Result};
use crate::models::{CallRecord, CreateVmRequest, VmRecord, VmState};
use crate::{vms, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_vm, list_vms))
        .routes(routes!(get_vm, delete_vm))
        .routes(routes!(stop_vm))
        .routes(routes!(start_vm))
        .routes(routes!(logs))
        .routes(routes!(history))
}

type E = crate::models::ErrorDoc;

/// Creates a VM and returns when its agent answers.
#[utoipa::path(post, path = "/v1/vms", tag = "vms", request_body = CreateVmRequest,
    responses((status = 201, body = VmRecord), (status = 401, body = E), (status = 409, body = E),
              (status = 413, body = E), (status = 422, body = E), (status = 429, body = E),
              (status = 500, body = E)))]
async fn create_vm(
    State(state): State<AppState>,
    Json(req): Json<CreateVmRequest>,
) -> Result<(StatusCode, axum::Json<VmRecord>)> {
    let vm = vms::create_vm(&state, req).await?;
    Ok((StatusCode::CREATED, axum::Json(vm)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only VMs in this state (`creating`, `running`, `stopped`, `failed`, `deleted`).
    state: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct VmList {
    vms: Vec<VmRecord>,
}

#[utoipa::path(get, path = "/v1/vms", tag = "vms", params(ListQuery),
    responses((status = 200, body = VmList), (status = 400, body = E), (status = 401, body = E)))]
async fn list_vms(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<VmList>> {
    let states = match q.state {
        Some(s) => vec![s.parse::<VmState>().map_err(AppError::BadRequest)?],
        None => vec![],
    };
    Ok(axum::Json(VmList {
        vms: state.store.list_vms(&states).await?,
    }))
}

#[utoipa::path(get, path = "/v1/vms/{id}", tag = "vms", params(("id" = String, Path)),
    responses((status = 200, body = VmRecord), (status = 404, body = E)))]
async fn get_vm(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<VmRecord>> {
    Ok(axum::Json(state.store.vm(&id).await?))
}

/// Destroys the VM: processes, sockets, overlay and state dir.
#[utoipa::path(delete, path = "/v1/vms/{id}", tag = "vms", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = E)))]
async fn delete_vm(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode> {
    vms::destroy_vm(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Powers the VM off; its overlay disk is kept for `start`.
#[utoipa::path(post, path = "/v1/vms/{id}/stop", tag = "vms", params(("id" = String, Path)),
    responses((status = 200, body = VmRecord), (status = 404, body = E), (status = 409, body = E)))]
async fn stop_vm(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<VmRecord>> {
    Ok(axum::Json(vms::stop_vm(&state, &id).await?))
}

/// Boots a stopped VM again on its kept overlay disk.
#[utoipa::path(post, path = "/v1/vms/{id}/start", tag = "vms", params(("id" = String, Path)),
    responses((status = 200, body = VmRecord), (status = 404, body = E), (status = 409, body = E),
              (status = 429, body = E)))]
async fn start_vm(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<VmRecord>> {
    Ok(axum::Json(vms::start_vm(&state, &id).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct TailQuery {
    /// Last N lines (default 100, at most 10000).
    tail: Option<usize>,
}

#[derive(Serialize, ToSchema)]
struct Lines {
    lines: Vec<String>,
}

/// The end of the VM's serial console log.
#[utoipa::path(get, path = "/v1/vms/{id}/logs", tag = "vms", params(("id" = String, Path), TailQuery),
    responses((status = 200, body = Lines), (status = 404, body = E)))]
async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TailQuery>,
) -> Result<axum::Json<Lines>> {
    state.store.vm(&id).await?;
    let n = q.tail.unwrap_or(100).min(10_000);
    let dir = state.config.vms_dir().join(&id);
    let path = hearth_vmm::VmHandle::adopt(&dir)
        .map(|h| h.console_path)
        .unwrap_or_else(|_| dir.join("console.log"));
    let lines = tokio::task::spawn_blocking(move || tail_lines(&path, n))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(axum::Json(Lines { lines }))
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

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    /// At most this many calls, newest first (default 50, at most 1000).
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct History {
    calls: Vec<CallRecord>,
}

/// Recent exec/run calls with inputs, exit codes and durations.
#[utoipa::path(get, path = "/v1/vms/{id}/history", tag = "vms", params(("id" = String, Path), LimitQuery),
    responses((status = 200, body = History), (status = 404, body = E)))]
async fn history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LimitQuery>,
) -> Result<axum::Json<History>> {
    state.store.vm(&id).await?;
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    Ok(axum::Json(History {
        calls: state.store.list_calls(&id, limit).await?,
    }))
}
