//! `/processes` and `/processes/{pid}[/output|/stdin|/signal]`; the process table itself
//! is [`crate::procs`], the WebSocket is [`super::attach`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hearth_proto::{
    OutputQuery, ProcessEvent, ProcessInfo, ProcessList, ProcessStartRequest, SignalRequest,
    StdinQuery, MAX_JSON_BODY, MAX_RUNNING_PROCESSES,
};
use http::Response;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::exec::{reject_nul, resolve_cwd};
use super::http::{self as h, Body};
use super::image::user_env;
use super::{client_gone, AgentError, Result, State};
use crate::jail::{JailError, SpawnSpec};
use crate::procs::{self, Process, StartSpec, Stdin, VEOF};

/// How long `DELETE` waits for the killed process to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(5);

pub fn get(state: &State, pid: u32) -> Result<Arc<Process>> {
    state
        .procs
        .get(pid)
        .ok_or_else(|| AgentError::NotFound(format!("no process {pid}")))
}

/// `POST /processes`: 201 with the running process.
pub async fn start(state: &State, req: hyper::Request<Incoming>) -> Result<Response<Body>> {
    let req: ProcessStartRequest = h::read_json(req, MAX_JSON_BODY).await?;
    req.validate()?;
    let strings = [&req.cmd].into_iter().chain(req.args.iter().flatten());
    reject_nul(strings.chain(req.env.values()).chain(req.cwd.iter()))?;
    if state.procs.running() >= MAX_RUNNING_PROCESSES {
        return Err(AgentError::Conflict(format!(
            "{MAX_RUNNING_PROCESSES} processes are running already; kill one first"
        )));
    }
    let cwd = resolve_cwd(state, req.cwd.as_deref()).await?;
    let (program, args) = match &req.args {
        None => (
            "/bin/sh".to_string(),
            vec!["-c".to_string(), req.cmd.clone()],
        ),
        Some(args) => (req.cmd.clone(), args.clone()),
    };
    let mut env = req.env.clone();
    if req.pty.is_some() {
        env.entry("TERM".into())
            .or_insert_with(|| "xterm-256color".into());
    }
    let spec = StartSpec {
        spawn: SpawnSpec {
            program: program.clone(),
            args,
            env: user_env(&state.config, env),
            cwd,
            ..Default::default()
        },
        cmd: req.cmd,
        args: req.args,
        stdin: req.stdin,
        pty: req.pty,
        timeout: req.timeout_ms.map(Duration::from_millis),
        keep: state.config.process_output_keep,
    };
    let process = procs::start(&state.procs, &state.jail, spec).map_err(|e| match e {
        // As `/exec` reports 127/126, but there is no run to report it in: say it here.
        // The request was valid; the VM's files make it fail: no such program or working
        // directory is a 404, anything else (not executable, ...) a 409.
        JailError::Spawn { source, .. } if source.raw_os_error().is_some() => {
            let msg = format!("cannot start {program:?}: {source}");
            match source.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR) => AgentError::NotFound(msg),
                _ => AgentError::Conflict(msg),
            }
        }
        e => e.into(),
    })?;
    Ok(h::json(201, &process.info()))
}

/// `GET /processes`.
pub fn list(state: &State) -> Response<Body> {
    h::json(
        200,
        &ProcessList {
            processes: state.procs.list(),
        },
    )
}

/// `GET /processes/{pid}`.
pub fn info(state: &State, pid: u32) -> Result<Response<Body>> {
    Ok(h::json(200, &get(state, pid)?.info()))
}

/// `DELETE /processes/{pid}`: SIGKILL to it and everything it started (also what it
/// left running after it exited), then (once reaped) the final record; the process is
/// forgotten.
pub async fn kill(state: &State, pid: u32) -> Result<Response<Body>> {
    let p = get(state, pid)?;
    let mut changed = p.subscribe();
    // Children may outlive the process itself: its cgroup holds them all.
    p.kill_all();
    let reaped = tokio::time::timeout(KILL_WAIT, async {
        while p.is_running() {
            if changed.changed().await.is_err() {
                break;
            }
        }
    });
    let _ = reaped.await;
    let info: ProcessInfo = p.info();
    state.procs.remove(pid);
    Ok(h::json(200, &info))
}

/// `POST /processes/{pid}/signal`: to the process group (as a terminal's Ctrl-C is).
pub async fn signal(
    state: &State,
    pid: u32,
    req: hyper::Request<Incoming>,
) -> Result<Response<Body>> {
    let r: SignalRequest = h::read_json(req, MAX_JSON_BODY).await?;
    let p = get(state, pid)?;
    if !p.is_running() {
        return Err(AgentError::Conflict(format!("process {pid} has exited")));
    }
    // SAFETY: plain syscall; a negative pid addresses the process group we created.
    unsafe { libc::kill(-(pid as i32), r.signal.number()) };
    Ok(h::no_content())
}

/// `POST /processes/{pid}/stdin[?eof=true]`: the raw body, streamed in; 204.
pub async fn stdin(
    state: &State,
    pid: u32,
    req: hyper::Request<Incoming>,
) -> Result<Response<Body>> {
    let q: StdinQuery = h::query(&req)?;
    let p = get(state, pid)?;
    let mut stdin = p.stdin.lock().await;
    let closed = || AgentError::Conflict(format!("stdin of process {pid} is not open"));
    let Some(sink) = stdin.as_mut() else {
        return Err(closed());
    };
    let gone = |e: std::io::Error| {
        AgentError::Conflict(format!("process {pid} no longer reads its stdin: {e}"))
    };
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| AgentError::BadRequest(format!("reading the body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match sink {
            Stdin::Pipe(pipe) => pipe.write_all(&data).await.map_err(gone)?,
            Stdin::Pty(pty) => pty.write_all(&data).await.map_err(gone)?,
        }
    }
    if q.eof {
        match sink {
            Stdin::Pty(pty) => pty.write_all(&[VEOF]).await.map_err(gone)?,
            Stdin::Pipe(_) => {
                *stdin = None;
                p.stdin_closed();
            }
        }
    }
    Ok(h::no_content())
}

/// `GET /processes/{pid}/output[?follow=true][&since=SEQ]`: NDJSON [`ProcessEvent`]s.
pub async fn output(
    state: &State,
    pid: u32,
    req: hyper::Request<Incoming>,
) -> Result<Response<Body>> {
    let mut cancel = client_gone(&req);
    let q: OutputQuery = h::query(&req)?;
    let p = get(state, pid)?;
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(16);
    tokio::spawn(async move {
        let mut changed = p.subscribe();
        let mut seq = q.since;
        loop {
            changed.borrow_and_update();
            let snap = p.snapshot(seq);
            let mut lines = Vec::new();
            if let Some(dropped) = snap.dropped {
                line(&mut lines, &ProcessEvent::Dropped { dropped });
            }
            for c in &snap.chunks {
                seq = c.seq;
                line(&mut lines, &ProcessEvent::Output(c.to_wire()));
            }
            let done = snap.exit.is_some() || !q.follow;
            if let Some(exit) = snap.exit {
                line(&mut lines, &ProcessEvent::Exit { exit });
            }
            if !lines.is_empty() && tx.send(Ok(Bytes::from(lines))).await.is_err() {
                return;
            }
            if done {
                return;
            }
            let gone = async {
                match &mut cancel {
                    Some(rx) => drop(rx.wait_for(|gone| *gone).await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = gone => return,
                _ = tx.closed() => return,
            }
        }
    });
    Ok(h::streaming("application/x-ndjson", rx))
}

fn line(out: &mut Vec<u8>, ev: &ProcessEvent) {
    serde_json::to_writer(&mut *out, ev).expect("events serialise");
    out.push(b'\n');
}
