//! `/v1/scripts`: upload (raw body or multipart), list, show, delete, run as a job.

use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;
use futures::StreamExt;
use hearth_proto::Language;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::routes::{parse_json, validate, Enqueued};
use super::store::NewJob;
use super::{check_name, RunParams, ScriptRecord};
use crate::error::{AppError, Result};
use crate::models::now_ms;
use crate::routes::Query;
use crate::AppState;

type E = crate::models::ErrorDoc;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_script, list_scripts))
        .routes(routes!(get_script, delete_script))
        .routes(routes!(run_script))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    /// File name; its extension gives the language. Multipart uploads may omit it
    /// (the part's file name is used).
    name: Option<String>,
    /// `sh`, `python`, `ts` or `js`; overrides the extension.
    language: Option<String>,
}

/// Uploads a script: the raw file as the body, or multipart with a part named `script`.
#[utoipa::path(post, path = "/v1/scripts", tag = "jobs", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = ScriptRecord), (status = 400, body = E), (status = 413, body = E),
              (status = 422, body = E)))]
async fn upload_script(
    State(state): State<AppState>,
    Query(q): Query<UploadQuery>,
    req: Request,
) -> Result<(StatusCode, axum::Json<ScriptRecord>)> {
    let limit = state.config.jobs.max_script_bytes;
    let too_large = || {
        AppError::PayloadTooLarge(format!(
            "script is larger than {limit} bytes (limit jobs.max_script_bytes)"
        ))
    };
    if content_length(req.headers()).is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let mut name = q.name;
    let mut content = Vec::new();
    let mut add = |chunk: &[u8]| {
        if content.len() + chunk.len() > limit {
            return Err(too_large());
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
            if field.name() != Some("script") {
                continue;
            }
            found = true;
            if name.is_none() {
                name = field.file_name().map(str::to_string);
            }
            while let Some(chunk) = field.chunk().await.map_err(multipart_err)? {
                add(&chunk)?;
            }
            break;
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
    let name = match (name, &q.language) {
        (Some(n), _) => n,
        (None, Some(l)) => format!(
            "script.{}",
            l.parse::<hearth_proto::Language>()?.extension()
        ),
        (None, None) => {
            return Err(AppError::Unprocessable(
                "name the script: ?name=FILE (its extension gives the language) or ?language="
                    .into(),
            ))
        }
    };
    check_name(&name)?;
    let language = language_of(&name, q.language.as_deref())?;
    if content.is_empty() {
        return Err(AppError::Unprocessable("the script is empty".into()));
    }
    let script = ScriptRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        language,
        size: content.len() as i64,
        sha256: hex::encode(Sha256::digest(&content)),
        created_at: now_ms(),
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

#[derive(Serialize, ToSchema)]
struct ScriptList {
    scripts: Vec<ScriptRecord>,
}

/// Uploaded scripts, newest first.
#[utoipa::path(get, path = "/v1/scripts", tag = "jobs",
    responses((status = 200, body = ScriptList), (status = 401, body = E)))]
async fn list_scripts(State(state): State<AppState>) -> Result<axum::Json<ScriptList>> {
    Ok(axum::Json(ScriptList {
        scripts: state.store.list_scripts().await?,
    }))
}

#[utoipa::path(get, path = "/v1/scripts/{id}", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = ScriptRecord), (status = 404, body = E)))]
async fn get_script(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<ScriptRecord>> {
    Ok(axum::Json(state.store.script(&id).await?))
}

/// Deletes a script; 409 while queued or running jobs still need it.
#[utoipa::path(delete, path = "/v1/scripts/{id}", tag = "jobs", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = E), (status = 409, body = E)))]
async fn delete_script(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state.store.delete_script(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queues a run of the script in a fresh VM. The body may be empty (all defaults).
#[utoipa::path(post, path = "/v1/scripts/{id}/run", tag = "jobs", params(("id" = String, Path)),
    request_body(content = RunParams, description = "optional"),
    responses((status = 202, body = Enqueued), (status = 400, body = E), (status = 404, body = E),
              (status = 422, body = E)))]
async fn run_script(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<Enqueued>)> {
    let params: RunParams = if body.iter().all(u8::is_ascii_whitespace) {
        RunParams::default()
    } else {
        parse_json(&body)?
    };
    validate(&state, &params)?;
    let job_id = uuid::Uuid::new_v4().to_string();
    let script = state.store.script(&id).await?;
    let new = NewJob {
        id: &job_id,
        language: script.language,
        name: &script.name,
        code: None,
        params: &params,
    };
    state.store.insert_job(new, Some(&id)).await?;
    state.jobs.notify.notify_waiters();
    Ok((StatusCode::ACCEPTED, axum::Json(Enqueued { job_id })))
}

/// Language of an upload: `?language=` wins, else the file extension.
fn language_of(name: &str, given: Option<&str>) -> Result<Language> {
    Ok(match given {
        Some(l) => l.parse()?,
        None => Language::from_file_name(name)?,
    })
}
