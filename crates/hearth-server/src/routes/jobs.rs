//! `/v1/jobs`: queue inline code, list, show, follow the log, cancel. Workers
//! ([`crate::jobs`]) do the rest.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hearth_api::jobs::{
    Cancelled, CreateJob, Enqueued, Job, JobList, JobLogsQuery, ListJobs, LogFormat, LogLine,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Conflict, NotFound};
use super::{Valid, ValidQuery};
use crate::error::Result;
use crate::jobs::logs::{log_path, read_from, Render};
use crate::store::jobs::NewJob;
use crate::{jobs, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_job, list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(job_logs))
        .routes(routes!(cancel_job))
}

/// Queues inline code as a job, run exactly like an uploaded script.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = CreateJob,
    responses((status = 202, description = "Queued.", body = Enqueued)))]
async fn create_job(
    State(state): State<AppState>,
    Valid(j): Valid<CreateJob>,
) -> Result<(StatusCode, axum::Json<Enqueued>)> {
    let job_id = uuid::Uuid::new_v4().to_string();
    let (name, params) = (j.file_name(), j.params());
    let new = NewJob {
        id: &job_id,
        language: j.language,
        name: &name,
        code: Some(j.code.as_bytes()),
        params: &params,
    };
    jobs::enqueue(&state, new, None).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(Enqueued { job_id })))
}

/// Jobs, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListJobs),
    responses((status = 200, description = "A page of jobs.", body = JobList)))]
async fn list_jobs(
    State(state): State<AppState>,
    ValidQuery(q): ValidQuery<ListJobs>,
) -> Result<axum::Json<JobList>> {
    let cursor = q
        .cursor
        .as_deref()
        .and_then(ListJobs::parse_cursor)
        .map(|(at, id)| (at, id.to_string()));
    let limit = i64::from(q.limit.unwrap_or(50));
    let mut rows = state
        .store
        .list_jobs(q.status, q.script_id.as_deref(), limit + 1, cursor)
        .await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last()
            .map(|j| format!("{}_{}", j.queued_at.ms(), j.id))
    } else {
        None
    };
    Ok(axum::Json(JobList {
        jobs: rows.into_iter().map(|r| r.job).collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, format = Uuid, description = "The job's id.")),
    responses((status = 200, description = "The job.", body = Job),
              (status = 404, response = NotFound)))]
async fn get_job(State(state): State<AppState>, Path(id): Path<String>) -> Result<axum::Json<Job>> {
    Ok(axum::Json(state.store.job(&id).await?.job))
}

/// The job's output, stdout and stderr interleaved in the order produced.
#[utoipa::path(get, path = "/v1/jobs/{id}/logs", tag = "jobs",
    params(("id" = String, Path, format = Uuid, description = "The job's id."), JobLogsQuery),
    responses((status = 200, description = "The output so far (`follow`: until the job ends).",
               content((String = "text/plain"), (LogLine = "application/x-ndjson"))),
              (status = 404, response = NotFound)))]
async fn job_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ValidQuery(q): ValidQuery<JobLogsQuery>,
) -> Result<Response> {
    let ndjson = q.format.unwrap_or_default() == LogFormat::Ndjson;
    let render = Render {
        stream: q.stream,
        ndjson,
    };
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

/// Cancels a job: a queued one never starts, a running one has its VM destroyed.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path, format = Uuid, description = "The job's id.")),
    responses((status = 202, description = "Cancelled, or being cancelled.", body = Cancelled),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict)))]
async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, axum::Json<Cancelled>)> {
    let status = jobs::cancel(&state, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Cancelled { job_id: id, status }),
    ))
}
