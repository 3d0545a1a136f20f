//! Proxies to a running VM's agent: exec, run-*, files, firewall. Request and response
//! bodies are hearth-proto's (the firewall routes take the server's `NetworkSpec`: host rules
//! come first, see [`crate::network`]); `?stream=true` passes the agent's NDJSON events through
//! line by line, and file bodies stream in both directions without being buffered.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use hearth_proto::{ExecRequest, ExecResponse, Language, RunRequest, StreamEvent, UploadResponse};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Json, Query};
use crate::error::{from_agent_call, AppError, Result};
use crate::models::{now_ms, CallRecord, NetworkSpec};
use crate::network::{self, FirewallView};
use crate::owner::{self, Cmd};
use crate::{vms, AppState};

type E = crate::models::ErrorDoc;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(exec))
        .routes(routes!(run_ts))
        .routes(routes!(run_js))
        .routes(routes!(run_python))
        .routes(routes!(upload))
        .routes(routes!(download))
        .routes(routes!(firewall))
        .routes(routes!(get_firewall))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    /// Stream `{"stdout"}`/`{"stderr"}` events and a final `{"exit"}` as NDJSON.
    #[serde(default)]
    stream: bool,
}

fn check_timeout(state: &AppState, t: Option<u64>) -> Result<()> {
    let max = state.config.limits.max_timeout_ms;
    match t {
        Some(t) if t > max => Err(AppError::Unprocessable(format!(
            "timeout_ms {t} is above the limit max_timeout_ms = {max}"
        ))),
        _ => Ok(()),
    }
}

/// Maps a failed agent call, telling "VM gone" (409) from "agent not answering" (502).
fn call_err(h: &hearth_vmm::VmHandle) -> impl Fn(hearth_vmm::Error) -> AppError + '_ {
    move |e| from_agent_call(e, h.is_alive())
}

/// Records a call in the history before the answer goes out, so a client that reads
/// the history right after a call sees it. A failure to record does not fail the call.
async fn record(
    state: &AppState,
    vm: &str,
    kind: &str,
    input: serde_json::Value,
    out: CallOutcome,
) {
    let call = CallRecord {
        id: uuid::Uuid::new_v4().to_string(),
        kind: kind.to_string(),
        input: cap_input(input),
        exit_code: out.exit_code,
        duration_ms: out.duration_ms,
        error: out.error,
        created_at: now_ms(),
    };
    if let Err(e) = state.store.insert_call(vm, &call).await {
        tracing::warn!(vm, error = %e, "recording call history");
    }
}

/// History keeps inputs for reading, not for replay: a 16 MiB script would bloat the
/// database, so big inputs are kept as their first few KiB.
const MAX_HISTORY_INPUT: usize = 64 * 1024;

fn cap_input(input: serde_json::Value) -> serde_json::Value {
    let text = input.to_string();
    if text.len() <= MAX_HISTORY_INPUT {
        return input;
    }
    let mut end = 4096;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    serde_json::json!({"truncated": true, "bytes": text.len(), "head": &text[..end]})
}

#[derive(Default)]
struct CallOutcome {
    exit_code: Option<i32>,
    duration_ms: Option<i64>,
    error: Option<String>,
}

impl CallOutcome {
    fn of(r: &ExecResponse) -> Self {
        CallOutcome {
            exit_code: Some(r.exit_code),
            duration_ms: Some(r.duration_ms as i64),
            error: None,
        }
    }
    fn failed(e: &impl std::fmt::Display, started: Instant) -> Self {
        CallOutcome {
            exit_code: None,
            duration_ms: Some(started.elapsed().as_millis() as i64),
            error: Some(e.to_string()),
        }
    }
}

/// Turns the agent's event stream into an NDJSON body, recording the call at `exit`.
/// A transport failure mid-stream becomes a last `{"error": ...}` line: the status
/// line (200) is long gone by then.
fn ndjson(
    state: AppState,
    vm: String,
    kind: &'static str,
    input: serde_json::Value,
    h: hearth_vmm::VmHandle,
    events: hearth_vmm::agent::EventStream,
) -> Response {
    let started = Instant::now();
    let input = Arc::new(std::sync::Mutex::new(Some(input)));
    let body = events.then(move |ev| {
        let (state, vm, input, h) = (state.clone(), vm.clone(), input.clone(), h.clone());
        async move {
            let take = || input.lock().expect("input poisoned").take();
            let mut line = match ev {
                Ok(ev) => {
                    if let StreamEvent::Exit(r) = &ev {
                        if let Some(input) = take() {
                            record(&state, &vm, kind, input, CallOutcome::of(&r.exec)).await;
                        }
                    }
                    serde_json::to_vec(&ev).unwrap_or_default()
                }
                Err(e) => {
                    if let Some(input) = take() {
                        let out = CallOutcome::failed(&e, started);
                        record(&state, &vm, kind, input, out).await;
                    }
                    let err = from_agent_call(e, h.is_alive());
                    let body = hearth_proto::ErrorBody::new(err.code(), err.to_string());
                    serde_json::to_vec(&body).unwrap_or_default()
                }
            };
            line.push(b'\n');
            Ok::<_, std::convert::Infallible>(Bytes::from(line))
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

/// Runs a command in the VM (`sh -c` without `args`).
#[utoipa::path(post, path = "/v1/vms/{id}/exec", tag = "agent", request_body(content = Object, description = "hearth_proto::ExecRequest"),
    params(("id" = String, Path), StreamQuery),
    responses((status = 200, body = Object, description = "hearth_proto::ExecResponse, or NDJSON StreamEvents with ?stream=true"),
              (status = 404, body = E), (status = 409, body = E), (status = 422, body = E)))]
async fn exec(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StreamQuery>,
    Json(mut req): Json<ExecRequest>,
) -> Result<Response> {
    req.validate()?;
    check_timeout(&state, req.timeout_ms)?;
    let (vm, h) = vms::running_handle(&state, &id).await?;
    let input = serde_json::to_value(&req).unwrap_or_default();
    // VM-wide env first, the request's own entries win.
    for (k, v) in vm.env {
        req.env.entry(k).or_insert(v);
    }
    let agent = h.agent();
    if q.stream {
        let events = agent.exec_stream(&req).await.map_err(call_err(&h))?;
        return Ok(ndjson(state, id, "exec", input, h, events));
    }
    let started = Instant::now();
    match agent.exec(&req).await {
        Ok(r) => {
            record(&state, &id, "exec", input, CallOutcome::of(&r)).await;
            Ok(axum::Json(r).into_response())
        }
        Err(e) => {
            record(&state, &id, "exec", input, CallOutcome::failed(&e, started)).await;
            Err(call_err(&h)(e))
        }
    }
}

async fn run(
    state: AppState,
    id: String,
    stream: bool,
    mut req: RunRequest,
    lang: Language,
) -> Result<Response> {
    req.validate()?;
    check_timeout(&state, req.timeout_ms)?;
    let (vm, h) = vms::running_handle(&state, &id).await?;
    let input = serde_json::to_value(&req).unwrap_or_default();
    let kind = match lang {
        Language::Ts => "run-ts",
        Language::Js => "run-js",
        Language::Python => "run-python",
        Language::Sh => "run-sh",
    };
    let given: Vec<String> = req
        .env
        .iter()
        .filter_map(|e| e.split_once('=').map(|(k, _)| k.to_string()))
        .collect();
    for (k, v) in vm.env {
        if !given.contains(&k) {
            req.env.push(format!("{k}={v}"));
        }
    }
    let agent = h.agent();
    if stream {
        let events = agent.run_stream(lang, &req).await.map_err(call_err(&h))?;
        return Ok(ndjson(state, id, kind, input, h, events));
    }
    let started = Instant::now();
    match agent.run(lang, &req).await {
        Ok(r) => {
            record(&state, &id, kind, input, CallOutcome::of(&r.exec)).await;
            Ok(axum::Json(r).into_response())
        }
        Err(e) => {
            record(&state, &id, kind, input, CallOutcome::failed(&e, started)).await;
            Err(call_err(&h)(e))
        }
    }
}

/// Runs TypeScript with Deno; `result.set(v)` fills `result`.
#[utoipa::path(post, path = "/v1/vms/{id}/run-ts", tag = "agent", request_body(content = Object, description = "hearth_proto::RunRequest"),
    params(("id" = String, Path), StreamQuery),
    responses((status = 200, body = Object), (status = 404, body = E), (status = 409, body = E),
              (status = 422, body = E)))]
async fn run_ts(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StreamQuery>,
    Json(req): Json<RunRequest>,
) -> Result<Response> {
    run(state, id, q.stream, req, Language::Ts).await
}

/// Runs JavaScript with Node.
#[utoipa::path(post, path = "/v1/vms/{id}/run-js", tag = "agent", request_body(content = Object, description = "hearth_proto::RunRequest"),
    params(("id" = String, Path), StreamQuery),
    responses((status = 200, body = Object), (status = 404, body = E), (status = 409, body = E),
              (status = 422, body = E)))]
async fn run_js(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StreamQuery>,
    Json(req): Json<RunRequest>,
) -> Result<Response> {
    run(state, id, q.stream, req, Language::Js).await
}

/// Runs Python 3.
#[utoipa::path(post, path = "/v1/vms/{id}/run-python", tag = "agent", request_body(content = Object, description = "hearth_proto::RunRequest"),
    params(("id" = String, Path), StreamQuery),
    responses((status = 200, body = Object), (status = 404, body = E), (status = 409, body = E),
              (status = 422, body = E)))]
async fn run_python(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StreamQuery>,
    Json(req): Json<RunRequest>,
) -> Result<Response> {
    run(state, id, q.stream, req, Language::Python).await
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    /// Directory to extract into (default `/workspace`).
    dest: Option<String>,
}

/// Extracts a tar.gz body into the VM; the body is streamed to the agent.
#[utoipa::path(post, path = "/v1/vms/{id}/files/upload", tag = "agent",
    request_body(content = Vec<u8>, content_type = "application/gzip"),
    params(("id" = String, Path), UploadQuery),
    responses((status = 200, body = Object), (status = 404, body = E), (status = 409, body = E),
              (status = 413, body = E), (status = 422, body = E)))]
async fn upload(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<UploadQuery>,
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
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let (_, h) = vms::running_handle(&state, &id).await?;
    let dest = q
        .dest
        .unwrap_or_else(|| hearth_proto::WORKSPACE.to_string());
    let seen = Arc::new(AtomicUsize::new(0));
    let over = Arc::new(AtomicBool::new(false));
    let (seen2, over2) = (seen.clone(), over.clone());
    let stream = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        if seen2.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len() > limit {
            over2.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other("upload above max_upload_bytes"));
        }
        Ok(chunk)
    });
    // The client waits for the answer as long as the upload streams.
    let agent = h.agent();
    match agent.upload(&dest, stream).await {
        Ok(r) => Ok(axum::Json(r)),
        Err(_) if over.load(Ordering::Relaxed) => Err(too_large()),
        Err(e) => Err(call_err(&h)(e)),
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct DownloadQuery {
    /// File or directory under `/workspace`.
    path: String,
}

/// A tar.gz of a file or directory in the VM, streamed as the agent packs it.
#[utoipa::path(get, path = "/v1/vms/{id}/files/download", tag = "agent",
    params(("id" = String, Path), DownloadQuery),
    responses((status = 200, content_type = "application/gzip", body = Vec<u8>),
              (status = 400, body = E), (status = 404, body = E), (status = 409, body = E)))]
async fn download(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<DownloadQuery>,
) -> Result<Response> {
    let (_, h) = vms::running_handle(&state, &id).await?;
    let bytes = h.agent().download(&q.path).await.map_err(call_err(&h))?;
    let body =
        Body::from_stream(bytes.map(|r| r.map_err(|e| std::io::Error::other(e.to_string()))));
    Ok(([(header::CONTENT_TYPE, "application/gzip")], body).into_response())
}

/// Replaces a running networked VM's outbound allowlist: host rules first (they decide,
/// and cut open connections to what is no longer allowed), then the guest's own rules.
#[utoipa::path(post, path = "/v1/vms/{id}/firewall/allowlist", tag = "agent",
    request_body = NetworkSpec, params(("id" = String, Path)),
    responses((status = 200, body = FirewallView), (status = 404, body = E), (status = 409, body = E),
              (status = 422, body = E), (status = 502, body = E)))]
async fn firewall(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(spec): Json<NetworkSpec>,
) -> Result<axum::Json<FirewallView>> {
    // Through the owner: never concurrent with a stop or destroy tearing the network down.
    let vm = owner::ask(&state, &id, |r| Cmd::Firewall(spec, r)).await?;
    Ok(axum::Json(network::firewall_view(&state, &vm).await?))
}

/// The stored allowlist and, while the VM runs, the host ruleset enforcing it.
#[utoipa::path(get, path = "/v1/vms/{id}/firewall", tag = "agent", params(("id" = String, Path)),
    responses((status = 200, body = FirewallView), (status = 404, body = E)))]
async fn get_firewall(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<FirewallView>> {
    let vm = state.store.vm(&id).await?;
    Ok(axum::Json(network::firewall_view(&state, &vm).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_history_inputs_keep_only_their_head() {
        let small = serde_json::json!({"cmd": "true"});
        assert_eq!(cap_input(small.clone()), small);
        let big = serde_json::json!({"code": "é".repeat(MAX_HISTORY_INPUT)});
        let capped = cap_input(big);
        assert_eq!(capped["truncated"], true);
        assert!(capped["head"].as_str().unwrap().len() <= 4096);
        assert!(capped["bytes"].as_u64().unwrap() > MAX_HISTORY_INPUT as u64);
    }
}
