//! Single files in a VM's `/workspace`: read, write, list, stat, mkdir, move, delete and
//! watch. Each query or body is checked here (`hearth_api::files`), then the call goes
//! to the agent, which resolves every path beneath `/workspace` as uid 1000 and answers
//! 404 (missing), 409 (a directory where a file is wanted, or the reverse) or 403; its
//! 4xx answers pass through unchanged.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::StreamExt;
use hearth_api::files::{
    DeleteFileQuery, FileEntry, FileList, ListQuery, MkdirRequest, MoveRequest, PathQuery,
    WatchEvent, WatchQuery, WriteQuery,
};
use hearth_api::schema::Binary;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Conflict, Forbidden, InvalidRequest, NotFound, PayloadTooLarge};
use super::stream::{announced_len, capped, ndjson, Capped};
use super::{RequestId, Valid, ValidQuery};
use crate::error::{from_agent_call, AppError, Result};
use crate::{vms, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(read_file, write_file))
        .routes(routes!(list_files))
        .routes(routes!(stat_file))
        .routes(routes!(make_dir))
        .routes(routes!(move_file))
        .routes(routes!(delete_file))
        .routes(routes!(watch_files))
}

/// A failed agent call: "VM gone" (409) told from "agent not answering" (502).
fn call_err(h: &hearth_vmm::VmHandle) -> impl Fn(hearth_vmm::Error) -> AppError + '_ {
    move |e| from_agent_call(e, h.is_alive())
}

/// A file's bytes, streamed as the agent reads them, with their `Content-Length`.
#[utoipa::path(get, path = "/v1/vms/{id}/files/content", tag = "files",
    params(("id" = String, Path, format = Uuid, description = "The VM's id."), PathQuery),
    responses((status = 200, description = "The file's bytes.", body = Binary,
               content_type = "application/octet-stream"),
              (status = 403, response = Forbidden),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict),
              (status = 422, response = InvalidRequest)))]
async fn read_file(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ValidQuery(q): ValidQuery<PathQuery>,
) -> Result<Response> {
    let (_, h, busy) = vms::running_handle(&state, &id).await?;
    let file = h.agent().read_file(&q.path).await.map_err(call_err(&h))?;
    // The VM is busy until the body ends.
    let body = Body::from_stream(file.body.map(move |r| {
        let _busy = &busy;
        r.map_err(|e| std::io::Error::other(e.to_string()))
    }));
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (header::CONTENT_LENGTH, file.size.to_string()),
    ];
    Ok((headers, body).into_response())
}

/// Replaces (or creates) a file with the raw body, atomically: a reader sees the old
/// file or the new one, never part of it, and a failed write leaves the old one.
#[utoipa::path(put, path = "/v1/vms/{id}/files/content", tag = "files",
    request_body(content = Option<Binary>, content_type = "application/octet-stream",
        description = "The new contents; none (or empty) writes an empty file."),
    params(("id" = String, Path, format = Uuid, description = "The VM's id."), WriteQuery),
    responses((status = 201, description = "Written; the new entry.", body = FileEntry),
              (status = 403, response = Forbidden),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict),
              (status = 413, response = PayloadTooLarge),
              (status = 422, response = InvalidRequest)))]
async fn write_file(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ValidQuery(q): ValidQuery<WriteQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, axum::Json<FileEntry>)> {
    let limit = state.config.limits.max_file_bytes;
    let too_large = || {
        AppError::PayloadTooLarge(format!(
            "the file is larger than {limit} bytes (limit max_file_bytes)"
        ))
    };
    // Refused before a byte moves when the client announced the size; a chunked body is
    // counted as it streams, and the agent then drops its temp file.
    let len = announced_len(&headers);
    if len.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let (_, h, _busy) = vms::running_handle(&state, &id).await?;
    let Capped { stream, over } = capped(body, limit);
    match h.agent().write_file(&q, stream, len).await {
        Ok(entry) => Ok((StatusCode::CREATED, axum::Json(entry))),
        Err(_) if over.load(Ordering::Relaxed) => Err(too_large()),
        Err(e) => Err(call_err(&h)(e)),
    }
}

/// A directory's entries, `depth` levels down (1..10, default 1); symlinks are reported,
/// never followed.
#[utoipa::path(get, path = "/v1/vms/{id}/files/list", tag = "files",
    params(("id" = String, Path, format = Uuid, description = "The VM's id."), ListQuery),
    responses((status = 200, description = "The entries, sorted by path.", body = FileList),
              (status = 403, response = Forbidden),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict),
              (status = 422, response = InvalidRequest)))]
async fn list_files(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ValidQuery(q): ValidQuery<ListQuery>,
) -> Result<axum::Json<FileList>> {
    let (_, h, _busy) = vms::running_handle(&state, &id).await?;
    let list = h.agent().list_files(&q).await.map_err(call_err(&h))?;
    Ok(axum::Json(list))
}

/// One entry (a symlink is reported, not followed).
#[utoipa::path(get, path = "/v1/vms/{id}/files/stat", tag = "files",
    params(("id" = String, Path, format = Uuid, description = "The VM's id."), PathQuery),
    responses((status = 200, description = "The entry.", body = FileEntry),
              (status = 403, response = Forbidden),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict),
              (status = 422, response = InvalidRequest)))]
async fn stat_file(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ValidQuery(q): ValidQuery<PathQuery>,
) -> Result<axum::Json<FileEntry>> {
    let (_, h, _busy) = vms::running_handle(&state, &id).await?;
    let entry = h.agent().stat_file(&q.path).await.map_err(call_err(&h))?;
    Ok(axum::Json(entry))
}

/// Creates a directory (with `parents`, also its missing parents, and an existing
/// directory is fine).
#[utoipa::path(post, path = "/v1/vms/{id}/files/mkdir", tag = "files", request_body = MkdirRequest,
    params(("id" = String, Path, format = Uuid, description = "The VM's id.")),
    responses((status = 201, description = "Created; the new entry.", body = FileEntry),
              (status = 403, response = Forbidden),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict),
              (status = 422, response = InvalidRequest)))]
async fn make_dir(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Valid(req): Valid<MkdirRequest>,
) -> Result<(StatusCode, axum::Json<FileEntry>)> {
    let (_, h, _busy) = vms::running_handle(&state, &id).await?;
    let entry = h.agent().mkdir(&req).await.map_err(call_err(&h))?;
    Ok((StatusCode::CREATED, axum::Json(entry)))
}

/// Renames within the workspace; an existing `to` is replaced only with `overwrite`.
#[utoipa::path(post, path = "/v1/vms/{id}/files/move", tag = "files", request_body = MoveRequest,
    params(("id" = String, Path, format = Uuid, description = "The VM's id.")),
    responses((status = 200, description = "Moved; the entry at its new path.", body = FileEntry),
              (status = 403, response = Forbidden),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict),
              (status = 422, response = InvalidRequest)))]
async fn move_file(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Valid(req): Valid<MoveRequest>,
) -> Result<axum::Json<FileEntry>> {
    let (_, h, _busy) = vms::running_handle(&state, &id).await?;
    let entry = h.agent().move_file(&req).await.map_err(call_err(&h))?;
    Ok(axum::Json(entry))
}

/// Deletes a file, a symlink (not its target) or a directory (a non-empty one only with
/// `recursive`).
#[utoipa::path(delete, path = "/v1/vms/{id}/files", tag = "files",
    params(("id" = String, Path, format = Uuid, description = "The VM's id."), DeleteFileQuery),
    responses((status = 204, description = "Deleted."),
              (status = 403, response = Forbidden),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict),
              (status = 422, response = InvalidRequest)))]
async fn delete_file(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ValidQuery(q): ValidQuery<DeleteFileQuery>,
) -> Result<StatusCode> {
    let (_, h, _busy) = vms::running_handle(&state, &id).await?;
    h.agent().delete_file(&q).await.map_err(call_err(&h))?;
    Ok(StatusCode::NO_CONTENT)
}

/// NDJSON events (`create`, `modify`, `delete`, `move`, `overflow`) for a directory, as
/// they happen, until the client hangs up; the response starts once the watches are in
/// place, so whatever happens after it is reported.
#[utoipa::path(get, path = "/v1/vms/{id}/files/watch", tag = "files",
    params(("id" = String, Path, format = Uuid, description = "The VM's id."), WatchQuery),
    responses((status = 200, description = "Events, one JSON object a line.", body = WatchEvent,
               content_type = "application/x-ndjson"),
              (status = 403, response = Forbidden),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict),
              (status = 422, response = InvalidRequest)))]
async fn watch_files(
    State(state): State<AppState>,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
    ValidQuery(q): ValidQuery<WatchQuery>,
) -> Result<Response> {
    let (_, h, busy) = vms::running_handle(&state, &id).await?;
    let events = h.agent().watch(&q).await.map_err(call_err(&h))?;
    Ok(ndjson(events, h, busy, rid.0))
}
