//! Running code in a VM: `exec` and `run-ts|js|python`, proxied to the VM's agent after
//! the server's checks. `?stream=true` passes the agent's NDJSON events through line by
//! line. Every call lands in the VM's history.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use futures::StreamExt;
use hearth_api::exec::{
    ErrorBody, ExecRequest, ExecResponse, RunRequest, RunResponse, StreamEvent, StreamLine,
    StreamQuery,
};
use hearth_api::vms::CallKind;
use hearth_api::Language;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Conflict, NotFound};
use super::{RequestId, Valid, ValidQuery};
use crate::error::{from_agent_call, AppError, Result};
use crate::models::{Call, Timestamp};
use crate::{vms, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(exec))
        .routes(routes!(run_ts))
        .routes(routes!(run_js))
        .routes(routes!(run_python))
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
    kind: CallKind,
    input: serde_json::Value,
    out: CallOutcome,
) {
    let call = Call {
        id: uuid::Uuid::new_v4().to_string(),
        kind,
        input: cap_input(input),
        exit_code: out.exit_code,
        duration_ms: out.duration_ms,
        error: out.error,
        created_at: Timestamp::now(),
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

/// One streamed call: what [`ndjson`] needs to record it and to report a failure.
struct Streamed {
    state: AppState,
    vm: String,
    kind: CallKind,
    request_id: String,
    /// The VM is busy until the stream ends (it lives as long as the body).
    _busy: crate::activity::Busy,
}

/// Turns the agent's event stream into an NDJSON body, recording the call at `exit`.
/// A transport failure mid-stream becomes a last `{"error": ...}` line (the status line,
/// 200, is long gone by then); a server-side one says only what a 5xx body would, the
/// details go to the log under the request id.
fn ndjson(
    s: Streamed,
    input: serde_json::Value,
    h: hearth_vmm::VmHandle,
    events: hearth_vmm::agent::EventStream,
) -> Response {
    let started = Instant::now();
    let input = Arc::new(std::sync::Mutex::new(Some(input)));
    let s = Arc::new(s);
    let body = events.then(move |ev| {
        let (s, input, h) = (s.clone(), input.clone(), h.clone());
        async move {
            let take = || input.lock().expect("input poisoned").take();
            let line = match ev {
                Ok(ev) => {
                    if let StreamEvent::Exit(r) = &ev {
                        if let Some(input) = take() {
                            record(&s.state, &s.vm, s.kind, input, CallOutcome::of(&r.exec)).await;
                        }
                    }
                    StreamLine::Event(ev)
                }
                Err(e) => {
                    if let Some(input) = take() {
                        let out = CallOutcome::failed(&e, started);
                        record(&s.state, &s.vm, s.kind, input, out).await;
                    }
                    let err = from_agent_call(e, h.is_alive());
                    let mut body = ErrorBody::new(err.code(), err.public_message());
                    if err.status().is_server_error() {
                        tracing::error!(request_id = %s.request_id, vm = %s.vm, error = %err,
                            "streamed call failed");
                        body.error.request_id = Some(s.request_id.clone());
                    }
                    StreamLine::Failed(body)
                }
            };
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            Ok::<_, std::convert::Infallible>(Bytes::from(bytes))
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

/// Runs a command in the VM: through `sh -c`, or directly with `args`.
#[utoipa::path(post, path = "/v1/vms/{id}/exec", tag = "exec", request_body = ExecRequest,
    params(("id" = String, Path, format = Uuid, description = "The VM's id."), StreamQuery),
    responses((status = 200, description = "The program ended (whatever its exit code).",
               content((ExecResponse = "application/json"),
                       (StreamLine = "application/x-ndjson"))),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict)))]
async fn exec(
    State(state): State<AppState>,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
    ValidQuery(q): ValidQuery<StreamQuery>,
    Valid(mut req): Valid<ExecRequest>,
) -> Result<Response> {
    let (vm, h, busy) = vms::running_handle(&state, &id).await?;
    let input = serde_json::to_value(&req).unwrap_or_default();
    // VM-wide env first, the request's own entries win.
    for (k, v) in vm.env {
        req.env.entry(k).or_insert(v);
    }
    let agent = h.agent();
    if q.stream {
        let events = agent.exec_stream(&req).await.map_err(call_err(&h))?;
        let s = Streamed {
            state,
            vm: id,
            kind: CallKind::Exec,
            request_id: rid.0,
            _busy: busy,
        };
        return Ok(ndjson(s, input, h, events));
    }
    let started = Instant::now();
    match agent.exec(&req).await {
        Ok(r) => {
            record(&state, &id, CallKind::Exec, input, CallOutcome::of(&r)).await;
            Ok(axum::Json(r).into_response())
        }
        Err(e) => {
            let out = CallOutcome::failed(&e, started);
            record(&state, &id, CallKind::Exec, input, out).await;
            Err(call_err(&h)(e))
        }
    }
}

async fn run(
    state: AppState,
    rid: RequestId,
    id: String,
    stream: bool,
    mut req: RunRequest,
    lang: Language,
) -> Result<Response> {
    let (vm, h, busy) = vms::running_handle(&state, &id).await?;
    let input = serde_json::to_value(&req).unwrap_or_default();
    let kind = CallKind::run(lang);
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
        let s = Streamed {
            state,
            vm: id,
            kind,
            request_id: rid.0,
            _busy: busy,
        };
        return Ok(ndjson(s, input, h, events));
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

/// One `run-*` route: the same body, answers and handler for each language.
macro_rules! run_route {
    ($name:ident, $path:literal, $lang:expr, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "exec", request_body = RunRequest,
            params(("id" = String, Path, format = Uuid, description = "The VM's id."), StreamQuery),
            responses((status = 200, description = "The program ended (whatever its exit code).",
                       content((RunResponse = "application/json"),
                               (StreamLine = "application/x-ndjson"))),
                      (status = 404, response = NotFound),
                      (status = 409, response = Conflict)))]
        async fn $name(
            State(state): State<AppState>,
            Extension(rid): Extension<RequestId>,
            Path(id): Path<String>,
            ValidQuery(q): ValidQuery<StreamQuery>,
            Valid(req): Valid<RunRequest>,
        ) -> Result<Response> {
            run(state, rid, id, q.stream, req, $lang).await
        }
    };
}

run_route!(
    run_ts,
    "/v1/vms/{id}/run-ts",
    Language::Ts,
    "Runs TypeScript with Deno; `result.set(v)` fills `result`."
);
run_route!(
    run_js,
    "/v1/vms/{id}/run-js",
    Language::Js,
    "Runs JavaScript with Node; `result.set(v)` fills `result`."
);
run_route!(
    run_python,
    "/v1/vms/{id}/run-python",
    Language::Python,
    "Runs Python 3; `result.set(v)` fills `result`."
);

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
