//! Whole-tree transfers: a tar.gz (or plain tar) body extracted into the VM, a path
//! packed out of it. Both bodies stream through without being held whole.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hearth_api::files::{ArchiveFormat, DownloadQuery, UploadQuery, UploadResponse};
use hearth_api::schema::Binary;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Conflict, InvalidRequest, NotFound};
use super::stream::{announced_len, capped, Capped};
use super::ValidQuery;
use crate::error::{from_agent_call, AppError, Result};
use crate::{vms, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_files))
        .routes(routes!(download_files))
}

/// Extracts a tar.gz body (`Content-Type: application/x-tar`: a plain tar, which the
/// guest need not inflate) into the VM; the body is streamed to the agent, which refuses
/// entries that would escape `dest` (symlinks, `..`, devices).
#[utoipa::path(post, path = "/v1/vms/{id}/files/upload", tag = "files",
    request_body(content((Binary = "application/gzip"), (Binary = "application/x-tar"))),
    params(("id" = String, Path, format = Uuid, description = "The VM's id."), UploadQuery),
    responses((status = 200, description = "Extracted.", body = UploadResponse),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict),
              (status = 422, response = InvalidRequest)))]
async fn upload_files(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ValidQuery(q): ValidQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<UploadResponse>> {
    let limit = state.config.limits.max_upload_bytes;
    let too_large = || {
        AppError::PayloadTooLarge(format!(
            "upload is larger than {limit} bytes (limit max_upload_bytes)"
        ))
    };
    // Refuse early when the client announced the size; chunked bodies are counted below.
    if announced_len(&headers).is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let (_, h, _busy) = vms::running_handle(&state, &id).await?;
    let dest = q
        .dest
        .unwrap_or_else(|| hearth_proto::WORKSPACE.to_string());
    let Capped { stream, over } = capped(body, limit as u64);
    let format = ArchiveFormat::from_content_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    // The client waits for the answer as long as the upload streams.
    match h.agent().upload_as(&dest, format, stream).await {
        Ok(r) => Ok(axum::Json(r)),
        Err(_) if over.load(Ordering::Relaxed) => Err(too_large()),
        Err(e) => Err(from_agent_call(e, h.is_alive())),
    }
}

/// A tar.gz (`format=tar`: a plain tar) of a file or directory in the VM, streamed as
/// the agent packs it. Symlinks are never followed.
#[utoipa::path(get, path = "/v1/vms/{id}/files/download", tag = "files",
    params(("id" = String, Path, format = Uuid, description = "The VM's id."), DownloadQuery),
    responses((status = 200, description = "The archive.",
               content((Binary = "application/gzip"), (Binary = "application/x-tar"))),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict),
              (status = 422, response = InvalidRequest)))]
async fn download_files(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ValidQuery(q): ValidQuery<DownloadQuery>,
) -> Result<Response> {
    let (_, h, busy) = vms::running_handle(&state, &id).await?;
    let format = q.format;
    let query = hearth_proto::DownloadQuery {
        path: q.path,
        format,
    };
    let bytes = h
        .agent()
        .download_as(&query)
        .await
        .map_err(|e| from_agent_call(e, h.is_alive()))?;
    // The VM is busy until the archive has been sent.
    let body = Body::from_stream(bytes.map(move |r| {
        let _ = &busy;
        r.map_err(|e| std::io::Error::other(e.to_string()))
    }));
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}
