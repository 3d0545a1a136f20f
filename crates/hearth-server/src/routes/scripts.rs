//! `/v1/scripts`: upload (raw body or multipart), list, show, delete, run as a job.

use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;
use futures::StreamExt;
use hearth_api::jobs::{Enqueued, JobParams};
use hearth_api::schema::NonEmptyBinary;
use hearth_api::scripts::{
    check_content, check_name, Script, ScriptForm, ScriptList, UploadScript,
};
use hearth_api::{Timestamp, Validate, ValidationError};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Conflict, InvalidRequest, NotFound};
use super::{parse_optional_json, ValidQuery};
use crate::error::{AppError, Result};
use crate::store::jobs::NewJob;
use crate::{jobs, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_script, list_scripts))
        .routes(routes!(get_script, delete_script))
        .routes(routes!(run_script))
}

/// Uploads a script: the raw file as the body, or multipart with a part named `script`.
#[utoipa::path(post, path = "/v1/scripts", tag = "jobs", params(UploadScript),
    request_body(content((NonEmptyBinary = "application/octet-stream"),
                         (ScriptForm = "multipart/form-data"))),
    responses((status = 201, description = "Stored.", body = Script),
              (status = 422, response = InvalidRequest)))]
async fn upload_script(
    State(state): State<AppState>,
    ValidQuery(q): ValidQuery<UploadScript>,
    req: Request,
) -> Result<(StatusCode, axum::Json<Script>)> {
    let limits = &state.api_limits;
    let too_large = |len| {
        AppError::from(ValidationError::ScriptTooLarge {
            len,
            max: limits.max_script_bytes,
        })
    };
    if let Some(n) = content_length(req.headers()).filter(|n| *n > limits.max_script_bytes) {
        return Err(too_large(n));
    }
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let mut part_name = None;
    let mut content = Vec::new();
    let mut add = |chunk: &[u8]| {
        if content.len() + chunk.len() > limits.max_script_bytes {
            return Err(too_large(content.len() + chunk.len()));
        }
        content.extend_from_slice(chunk);
        Ok(())
    };
    if is_multipart {
        let mut form = Multipart::from_request(req, &state)
            .await
            .map_err(|e| AppError::BadRequest(e.body_text()))?;
        let mut found = false;
        while let Some(mut field) = form.next_field().await.map_err(multipart_err)? {
            // One part, `script`: anything else is a mistake worth hearing about.
            if field.name() != Some("script") || found {
                return Err(AppError::Unprocessable(format!(
                    "unexpected multipart part {:?}: send one part, named `script`",
                    field.name().unwrap_or_default()
                )));
            }
            found = true;
            part_name = field.file_name().map(str::to_string);
            while let Some(chunk) = field.chunk().await.map_err(multipart_err)? {
                add(&chunk)?;
            }
        }
        if !found {
            return Err(AppError::Unprocessable(
                "multipart body has no part named `script`".into(),
            ));
        }
    } else {
        let mut body = req.into_body().into_data_stream();
        while let Some(chunk) = body.next().await {
            add(&chunk.map_err(|e| AppError::BadRequest(format!("reading body: {e}")))?)?;
        }
    }
    let name = q.file_name(part_name.as_deref());
    check_name(&name)?;
    check_content(content.len(), limits)?;
    let script = Script {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        language: q.language,
        size: content.len() as i64,
        sha256: hex::encode(Sha256::digest(&content)),
        created_at: Timestamp::now(),
    };
    state.store.insert_script(&script, &content).await?;
    Ok((StatusCode::CREATED, axum::Json(script)))
}

fn content_length(h: &HeaderMap) -> Option<usize> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn multipart_err(e: axum::extract::multipart::MultipartError) -> AppError {
    match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge(e.body_text()),
        _ => AppError::BadRequest(e.body_text()),
    }
}

/// Uploaded scripts, newest first.
#[utoipa::path(get, path = "/v1/scripts", tag = "jobs",
    responses((status = 200, description = "The scripts.", body = ScriptList)))]
async fn list_scripts(State(state): State<AppState>) -> Result<axum::Json<ScriptList>> {
    Ok(axum::Json(ScriptList {
        scripts: state.store.list_scripts().await?,
    }))
}

#[utoipa::path(get, path = "/v1/scripts/{id}", tag = "jobs", params(("id" = String, Path, format = Uuid, description = "The script's id.")),
    responses((status = 200, description = "The script.", body = Script),
              (status = 404, response = NotFound)))]
async fn get_script(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Script>> {
    Ok(axum::Json(state.store.script(&id).await?))
}

/// Deletes a script; 409 while queued or running jobs still need it.
#[utoipa::path(delete, path = "/v1/scripts/{id}", tag = "jobs", params(("id" = String, Path, format = Uuid, description = "The script's id.")),
    responses((status = 204, description = "Deleted."),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict)))]
async fn delete_script(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state.store.delete_script(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queues a run of the script in a fresh VM. The body may be empty (all defaults).
#[utoipa::path(post, path = "/v1/scripts/{id}/run", tag = "jobs", params(("id" = String, Path, format = Uuid, description = "The script's id.")),
    request_body(content = Option<JobParams>, description = "Optional: no body means all defaults."),
    responses((status = 202, description = "Queued.", body = Enqueued),
              (status = 404, response = NotFound)))]
async fn run_script(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<Enqueued>)> {
    let params: JobParams = parse_optional_json(&body)?.unwrap_or_default();
    params.validate(&state.api_limits)?;
    let job_id = uuid::Uuid::new_v4().to_string();
    let script = state.store.script(&id).await?;
    let new = NewJob {
        id: &job_id,
        language: script.language,
        name: &script.name,
        code: None,
        params: &params,
    };
    jobs::enqueue(&state, new, Some(&id)).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(Enqueued { job_id })))
}
