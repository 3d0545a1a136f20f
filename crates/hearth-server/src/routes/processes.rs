//! Processes that outlive a request: start, list, inspect, read output (kept, so a
//! client that reconnects with `since` misses nothing), write stdin, signal, kill, and
//! attach to a terminal over a WebSocket. Each call is checked here
//! (`hearth_api::processes`) and forwarded to the agent, which owns the processes; they
//! end with the VM.

use axum::body::Body;
use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use futures::{SinkExt, StreamExt};
use hearth_api::processes::{
    AttachQuery, OutputQuery, ProcessEvent, ProcessInfo, ProcessList, ProcessPath,
    ProcessStartRequest, SignalRequest, StdinQuery,
};
use hearth_api::schema::Binary;
use hearth_vmm::agent::process::AttachSocket;
use tokio_tungstenite::tungstenite::Message as TMessage;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{BadRequest, Conflict, InvalidRequest, NotFound};
use super::stream::ndjson;
use super::{RequestId, Valid, ValidQuery};
use crate::error::{from_agent_call, AppError, Result};
use crate::{vms, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_process, list_processes))
        .routes(routes!(get_process, kill_process))
        .routes(routes!(process_output))
        .routes(routes!(process_stdin))
        .routes(routes!(signal_process))
        .routes(routes!(attach_process))
}

/// `{id}` and `{pid}` of a process route; a pid that is not a number is a 400 naming it
/// (axum's own rejection would say only "Bad Request").
struct Pid {
    id: String,
    pid: u32,
}

impl FromRequestParts<AppState> for Pid {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Path((id, pid)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| AppError::BadRequest(e.body_text()))?;
        let pid = pid
            .parse()
            .map_err(|_| AppError::BadRequest(format!("pid {pid:?} is not a process id")))?;
        Ok(Pid { id, pid })
    }
}

fn call_err(h: &hearth_vmm::VmHandle) -> impl Fn(hearth_vmm::Error) -> AppError + '_ {
    move |e| from_agent_call(e, h.is_alive())
}

/// Starts a process in the jail, as `exec` runs one, that keeps running after this
/// request: without `args` `cmd` goes through `/bin/sh -c`; `pty` gives it a terminal.
/// A program or `cwd` the VM does not have is a 404; one that cannot be run, a 409.
#[utoipa::path(post, path = "/v1/vms/{id}/processes", tag = "processes",
    request_body = ProcessStartRequest,
    params(("id" = String, Path, format = Uuid, description = "The VM's id.")),
    responses((status = 201, description = "Started.", body = ProcessInfo),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict),
              (status = 422, response = InvalidRequest)))]
async fn start_process(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Valid(mut req): Valid<ProcessStartRequest>,
) -> Result<(StatusCode, axum::Json<ProcessInfo>)> {
    let (vm, h, _busy) = vms::running_handle(&state, &id).await?;
    // VM-wide env first, the request's own entries win (as for exec).
    for (k, v) in vm.env {
        req.env.entry(k).or_insert(v);
    }
    let info = h.agent().start_process(&req).await.map_err(call_err(&h))?;
    Ok((StatusCode::CREATED, axum::Json(info)))
}

/// Running processes and the last exited ones, by start time.
#[utoipa::path(get, path = "/v1/vms/{id}/processes", tag = "processes",
    params(("id" = String, Path, format = Uuid, description = "The VM's id.")),
    responses((status = 200, description = "The processes.", body = ProcessList),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict)))]
async fn list_processes(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<ProcessList>> {
    let (_, h, _busy) = vms::running_handle(&state, &id).await?;
    let processes = h.agent().processes().await.map_err(call_err(&h))?;
    Ok(axum::Json(ProcessList { processes }))
}

/// One process: running or exited, with its exit code and signal once it ended.
#[utoipa::path(get, path = "/v1/vms/{id}/processes/{pid}", tag = "processes",
    params(ProcessPath),
    responses((status = 200, description = "The process.", body = ProcessInfo),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict)))]
async fn get_process(State(state): State<AppState>, p: Pid) -> Result<axum::Json<ProcessInfo>> {
    let (_, h, _busy) = vms::running_handle(&state, &p.id).await?;
    let info = h.agent().process(p.pid).await.map_err(call_err(&h))?;
    Ok(axum::Json(info))
}

/// Kills the process and everything it started; its final record.
#[utoipa::path(delete, path = "/v1/vms/{id}/processes/{pid}", tag = "processes",
    params(ProcessPath),
    responses((status = 200, description = "Killed (or already ended).", body = ProcessInfo),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict)))]
async fn kill_process(State(state): State<AppState>, p: Pid) -> Result<axum::Json<ProcessInfo>> {
    let (_, h, _busy) = vms::running_handle(&state, &p.id).await?;
    let info = h.agent().kill_process(p.pid).await.map_err(call_err(&h))?;
    Ok(axum::Json(info))
}

/// NDJSON output: `{seq, stream, data}` chunks after `since`, a `{dropped}` marker for
/// chunks no longer kept, and `{exit}` once the process has ended; with `follow` the
/// response stays open until then.
#[utoipa::path(get, path = "/v1/vms/{id}/processes/{pid}/output", tag = "processes",
    params(ProcessPath, OutputQuery),
    responses((status = 200, description = "Events, one JSON object a line.",
               body = ProcessEvent, content_type = "application/x-ndjson"),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict)))]
async fn process_output(
    State(state): State<AppState>,
    Extension(rid): Extension<RequestId>,
    p: Pid,
    ValidQuery(q): ValidQuery<OutputQuery>,
) -> Result<Response> {
    let (_, h, busy) = vms::running_handle(&state, &p.id).await?;
    let events = h
        .agent()
        .process_output(p.pid, &q)
        .await
        .map_err(call_err(&h))?;
    Ok(ndjson(events, h, busy, rid.0))
}

/// Writes the raw body to the process's stdin, streamed; `eof` then closes it.
#[utoipa::path(post, path = "/v1/vms/{id}/processes/{pid}/stdin", tag = "processes",
    request_body(content = Binary, content_type = "application/octet-stream"),
    params(ProcessPath, StdinQuery),
    responses((status = 204, description = "Written."),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict)))]
async fn process_stdin(
    State(state): State<AppState>,
    p: Pid,
    ValidQuery(q): ValidQuery<StdinQuery>,
    body: Body,
) -> Result<StatusCode> {
    let (_, h, _busy) = vms::running_handle(&state, &p.id).await?;
    let stream = body
        .into_data_stream()
        .map(|c| c.map_err(std::io::Error::other));
    h.agent()
        .process_stdin(p.pid, &q, stream)
        .await
        .map_err(call_err(&h))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a signal to the process's group.
#[utoipa::path(post, path = "/v1/vms/{id}/processes/{pid}/signal", tag = "processes",
    request_body = SignalRequest, params(ProcessPath),
    responses((status = 204, description = "Sent."),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict),
              (status = 422, response = InvalidRequest)))]
async fn signal_process(
    State(state): State<AppState>,
    p: Pid,
    Valid(req): Valid<SignalRequest>,
) -> Result<StatusCode> {
    let (_, h, _busy) = vms::running_handle(&state, &p.id).await?;
    h.agent()
        .signal_process(p.pid, req.signal)
        .await
        .map_err(call_err(&h))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Upgrades to a WebSocket on the process's terminal: binary frames carry its bytes both
/// ways, text frames JSON control messages (`{"type":"resize","cols","rows"}` from the
/// client, `{"type":"exit","exit_code"}` before the server closes). Kept output after
/// `since` is replayed first.
#[utoipa::path(get, path = "/v1/vms/{id}/processes/{pid}/attach", tag = "processes",
    params(ProcessPath, AttachQuery),
    responses((status = 101, description = "Switched to the WebSocket protocol."),
              (status = 400, response = BadRequest),
              (status = 404, response = NotFound),
              (status = 409, response = Conflict)))]
async fn attach_process(
    State(state): State<AppState>,
    p: Pid,
    ValidQuery(q): ValidQuery<AttachQuery>,
    upgrade: std::result::Result<WebSocketUpgrade, ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response> {
    let upgrade = upgrade
        .map_err(|e| AppError::BadRequest(format!("this route needs a WebSocket upgrade: {e}")))?;
    let (_, h, busy) = vms::running_handle(&state, &p.id).await?;
    // Connect to the agent first, so "no such process" or "no terminal" is an HTTP
    // answer rather than a socket that closes at once.
    let agent = h.agent().attach(p.pid, &q).await.map_err(call_err(&h))?;
    // The VM is busy for as long as the session lasts.
    Ok(upgrade.on_upgrade(move |client| async move {
        bridge(client, agent).await;
        drop(busy);
    }))
}

/// Copies messages both ways until either side closes.
async fn bridge(client: WebSocket, agent: AttachSocket) {
    let (mut to_client, mut from_client) = client.split();
    let (mut to_agent, mut from_agent) = agent.split();
    let up = async {
        while let Some(Ok(m)) = from_client.next().await {
            let m = match m {
                ws::Message::Text(t) => TMessage::text(t.as_str()),
                ws::Message::Binary(b) => TMessage::Binary(b),
                ws::Message::Ping(b) => TMessage::Ping(b),
                ws::Message::Pong(b) => TMessage::Pong(b),
                ws::Message::Close(_) => break,
            };
            if to_agent.send(m).await.is_err() {
                break;
            }
        }
        let _ = to_agent.close().await;
    };
    let down = async {
        while let Some(Ok(m)) = from_agent.next().await {
            let m = match m {
                TMessage::Text(t) => ws::Message::text(t.as_str()),
                TMessage::Binary(b) => ws::Message::Binary(b),
                TMessage::Ping(b) => ws::Message::Ping(b),
                TMessage::Pong(b) => ws::Message::Pong(b),
                TMessage::Close(_) => break,
                TMessage::Frame(_) => continue,
            };
            if to_client.send(m).await.is_err() {
                break;
            }
        }
        let _ = to_client.close().await;
    };
    // Either side ending ends the session: the process exited (the agent closed) or the
    // client went away (the process keeps running; attach again to resume).
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}
