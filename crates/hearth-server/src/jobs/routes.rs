//! `/v1/jobs`: parse and validate, then one store call; workers do the rest. Script
//! routes are in [`super::scripts`].

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::logs::{log_path, read_from, Render};
use super::store::NewJob;
use super::{check_name, InlineJob, JobRecord, JobStatus, RunParams};
use crate::error::{AppError, Result};
use crate::routes::Query;
use crate::AppState;

type E = crate::models::ErrorDoc;

/// Job and script routes; merged into `app()` behind the API-key check.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(super::scripts::routes())
        .routes(routes!(create_job, list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(job_logs))
        .routes(routes!(cancel_job))
}

#[derive(Serialize, ToSchema)]
pub struct Enqueued {
    pub job_id: String,
}

/// Queues inline code as a job, run exactly like an uploaded script.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = InlineJob,
    responses((status = 202, body = Enqueued), (status = 400, body = E), (status = 413, body = E),
              (status = 422, body = E)))]
async fn create_job(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<Enqueued>)> {
    let j: InlineJob = parse_json(&body)?;
    let language: hearth_proto::Language = j.language.parse()?;
    let limit = state.config.jobs.max_script_bytes;
    if j.code.len() > limit {
        return Err(AppError::PayloadTooLarge(format!(
            "code is larger than {limit} bytes (limit jobs.max_script_bytes)"
        )));
    }
    if j.code.trim().is_empty() {
        return Err(AppError::Unprocessable("`code` is empty".into()));
    }
    let name = j
        .name
        .unwrap_or_else(|| format!("main.{}", language.extension()));
    check_name(&name)?;
    let params = RunParams {
        args: j.args,
        env: j.env,
        timeout_s: j.timeout_s,
        vcpus: j.vcpus,
        memory_mib: j.memory_mib,
        files: j.files,
        max_retries: j.max_retries,
        network: j.network,
    };
    validate(&state, &params)?;
    let job_id = uuid::Uuid::new_v4().to_string();
    let new = NewJob {
        id: &job_id,
        language,
        name: &name,
        code: Some(j.code.as_bytes()),
        params: &params,
    };
    state.store.insert_job(new, None).await?;
    state.jobs.notify.notify_waiters();
    Ok((StatusCode::ACCEPTED, axum::Json(Enqueued { job_id })))
}

/// JSON syntax errors are 400, well-formed JSON that does not fit the schema is 422.
pub(super) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => AppError::Unprocessable(e.to_string()),
        _ => AppError::BadRequest(format!("invalid JSON: {e}")),
    })
}

/// Rejects at submit time what would make the job fail later anyway.
pub(super) fn validate(state: &AppState, p: &RunParams) -> Result<()> {
    let limits = &state.config.limits;
    let bad = |m: String| Err(AppError::Unprocessable(m));
    if let Some(t) = p.timeout_s {
        if t == 0 || t.saturating_mul(1000) > limits.max_timeout_ms {
            return bad(format!(
                "timeout_s {t} is outside 1..={} (limit max_timeout_ms)",
                limits.max_timeout_ms / 1000
            ));
        }
    }
    if let Some(v) = p.vcpus {
        if v == 0 || v > limits.max_vcpus {
            return bad(format!("vcpus {v} is outside 1..={}", limits.max_vcpus));
        }
    }
    if let Some(m) = p.memory_mib {
        if !(128..=limits.max_memory_mib).contains(&m) {
            return bad(format!(
                "memory_mib {m} is outside 128..={}",
                limits.max_memory_mib
            ));
        }
    }
    for k in p.env.keys() {
        if k.is_empty() || k.contains(['=', '\0']) {
            return bad(format!("invalid env name {k:?}"));
        }
    }
    if p.args
        .iter()
        .chain(p.env.values())
        .any(|a| a.contains('\0'))
    {
        return bad("args and env values must not contain NUL".into());
    }
    for path in p.files.keys() {
        let ok = !path.is_empty()
            && !path.contains('\0')
            && std::path::Path::new(path)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !ok {
            return bad(format!(
                "invalid file path {path:?}: relative, without `..` (it goes under /workspace)"
            ));
        }
    }
    if let Some(n) = &p.network {
        // Syntax only here; whether this host can network VMs is known when it boots.
        crate::network::check_syntax(n)?;
    }
    if p.max_retries > 10 {
        return bad(format!("max_retries {} is above 10", p.max_retries));
    }
    Ok(())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only jobs in this status.
    status: Option<String>,
    /// Only runs of this script.
    script_id: Option<String>,
    /// Page size (default 50, at most 1000).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct JobList {
    jobs: Vec<JobRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

/// Jobs, newest first, paginated.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobList), (status = 400, body = E)))]
async fn list_jobs(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<JobList>> {
    let status = match q.status.as_deref() {
        Some(s) => Some(
            s.parse::<JobStatus>()
                .map_err(|e| AppError::BadRequest(e.to_string()))?,
        ),
        None => None,
    };
    let cursor = match q.cursor.as_deref() {
        Some(c) => Some(
            c.split_once('_')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())))
                .ok_or_else(|| AppError::BadRequest(format!("invalid cursor {c:?}")))?,
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let mut jobs = state
        .store
        .list_jobs(status, q.script_id.as_deref(), limit + 1, cursor)
        .await?;
    let next_cursor = if jobs.len() as i64 > limit {
        jobs.truncate(limit as usize);
        jobs.last().map(|j| format!("{}_{}", j.queued_at, j.id))
    } else {
        None
    };
    Ok(axum::Json(JobList { jobs, next_cursor }))
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = JobRecord), (status = 404, body = E)))]
async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<JobRecord>> {
    Ok(axum::Json(state.store.job(&id).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    /// Keep the response open and stream new output until the job ends.
    #[serde(default)]
    follow: bool,
    /// `stdout` or `stderr` only (default both, interleaved as produced).
    stream: Option<String>,
    /// `text` (default) or `ndjson` (framed chunks: `{"t","stream","data"}`).
    format: Option<String>,
}

/// The job's output, stdout and stderr interleaved in the order produced.
#[utoipa::path(get, path = "/v1/jobs/{id}/logs", tag = "jobs", params(("id" = String, Path), LogsQuery),
    responses((status = 200, content_type = "text/plain", body = String),
              (status = 400, body = E), (status = 404, body = E)))]
async fn job_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response> {
    let stream = match q.stream.as_deref() {
        None => None,
        Some("stdout") => Some("stdout"),
        Some("stderr") => Some("stderr"),
        Some(s) => {
            return Err(AppError::BadRequest(format!(
                "stream {s:?}: stdout or stderr"
            )))
        }
    };
    let ndjson = match q.format.as_deref() {
        None | Some("text") => false,
        Some("ndjson") => true,
        Some(f) => {
            return Err(AppError::BadRequest(format!(
                "format {f:?}: text or ndjson"
            )))
        }
    };
    let render = Render { stream, ndjson };
    state.store.job(&id).await?;
    let path = log_path(&state.config.data_dir, &id);
    let ctype = if ndjson {
        "application/x-ndjson"
    } else {
        "text/plain; charset=utf-8"
    };
    if !q.follow {
        let (out, _) = render.lines(&read_from(&path, 0).await?);
        return Ok(([(header::CONTENT_TYPE, ctype)], out).into_response());
    }
    Ok((
        [(header::CONTENT_TYPE, ctype)],
        Body::from_stream(follow(state, id, path, render)),
    )
        .into_response())
}

/// The log as it grows; ends after the first read that started once the job was final
/// (so nothing written before the final status is missed).
fn follow(
    state: AppState,
    id: String,
    path: std::path::PathBuf,
    render: Render,
) -> impl futures::Stream<Item = std::result::Result<Bytes, std::io::Error>> {
    struct St {
        offset: u64,
        done: bool,
    }
    futures::stream::unfold(
        St {
            offset: 0,
            done: false,
        },
        move |mut st| {
            let (state, id, path) = (state.clone(), id.clone(), path.clone());
            async move {
                loop {
                    if st.done {
                        return None;
                    }
                    let finished = match state.store.job(&id).await {
                        Ok(j) => j.status.is_final(),
                        Err(_) => true,
                    };
                    let buf = match read_from(&path, st.offset).await {
                        Ok(b) => b,
                        Err(e) => {
                            return Some((
                                Err(std::io::Error::other(e.to_string())),
                                St { done: true, ..st },
                            ))
                        }
                    };
                    let (out, used) = render.lines(&buf);
                    st.offset += used as u64;
                    st.done = finished;
                    if !out.is_empty() {
                        return Some((Ok(Bytes::from(out)), st));
                    }
                    if !finished {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
        },
    )
}

#[derive(Serialize, ToSchema)]
struct Cancelled {
    job_id: String,
    /// `cancelled` (it had not started) or `cancelling` (its VM is being destroyed).
    status: String,
}

/// Cancels a job: a queued one never starts, a running one has its VM destroyed.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path)),
    responses((status = 202, body = Cancelled), (status = 404, body = E), (status = 409, body = E)))]
async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, axum::Json<Cancelled>)> {
    let reply = |status: &str| {
        Ok((
            StatusCode::ACCEPTED,
            axum::Json(Cancelled {
                job_id: id.clone(),
                status: status.into(),
            }),
        ))
    };
    // Each step is one conditional UPDATE; a job that moved on between two steps (a
    // worker claimed it) is caught by the next one, so two rounds always settle it.
    for _ in 0..2 {
        if state.store.cancel_queued(&id).await? {
            return reply("cancelled");
        }
        if state.store.request_cancel(&id).await? {
            state.jobs.cancel(&id);
            return reply("cancelling");
        }
        let job = state.store.job(&id).await?;
        if job.status.is_final() {
            return Err(AppError::Conflict(format!(
                "job {id} already ended ({})",
                job.status
            )));
        }
    }
    Err(AppError::Conflict(format!(
        "job {id} changed state during the cancel; retry"
    )))
}
