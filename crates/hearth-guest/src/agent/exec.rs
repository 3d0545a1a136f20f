//! `POST /exec`, and the machinery the run endpoints share with it.

use std::time::Duration;

use bytes::Bytes;
use hearth_proto::{ExecRequest, ExecResponse, RunResponse, StreamEvent, MAX_JSON_BODY};
use http::Response;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::http::{self as h, Body};
use super::image::user_env;
use super::{AgentError, Result, State};
use crate::archive::WorkspacePath;
use crate::jail::{self, ExecSpec, JailError, OutputSink, SpawnSpec};
use rustix::fs::OFlags;

pub async fn handle(
    state: &State,
    req: hyper::Request<Incoming>,
    stream: bool,
) -> Result<Response<Body>> {
    let cancel = super::client_gone(&req);
    let req: ExecRequest = h::read_json(req, MAX_JSON_BODY).await?;
    req.validate()?;
    let strings = [&req.cmd].into_iter().chain(req.args.iter().flatten());
    reject_nul(strings.chain(req.env.values()).chain(req.cwd.iter()))?;
    let cwd = resolve_cwd(state, req.cwd.as_deref()).await?;
    let (program, args) = match req.args {
        None => ("/bin/sh".to_string(), vec!["-c".to_string(), req.cmd]),
        Some(args) => (req.cmd, args),
    };
    let spec = ExecSpec {
        spawn: SpawnSpec {
            program,
            args,
            env: user_env(&state.config, req.env),
            cwd,
            ..Default::default()
        },
        stdin: req.stdin.map(String::into_bytes),
        timeout: timeout(req.timeout_ms),
        output_cap: state.config.output_cap,
        cancel,
    };
    let jail = state.jail.clone();
    if stream {
        return Ok(stream_run(jail, spec, |exec| async move {
            RunResponse {
                exec,
                ..Default::default()
            }
        }));
    }
    let resp = run_or_report(&jail, spec, OutputSink::Capture).await?;
    Ok(h::json(200, &resp))
}

/// NUL cannot pass through `execve`; say so as a 422 instead of failing the spawn.
pub fn reject_nul<'a>(strings: impl IntoIterator<Item = &'a String>) -> Result<()> {
    match strings.into_iter().find(|s| s.contains('\0')) {
        Some(s) => Err(AgentError::Invalid(format!("{s:?} contains a NUL byte"))),
        None => Ok(()),
    }
}

pub fn timeout(ms: Option<u64>) -> Duration {
    Duration::from_millis(ms.unwrap_or(hearth_proto::DEFAULT_TIMEOUT_MS))
}

/// A working directory inside `/workspace` (default: the workspace itself), as the jail
/// sees it. Checked to be a directory, by a uid-1000 thread resolving beneath the
/// workspace (see [`crate::workspace`]), so that a typo is a clear 4xx (404 when missing,
/// as the run endpoints answer a missing `path`), not a failed exec, and the root agent
/// never follows a path the user controls.
pub async fn resolve_cwd(state: &State, cwd: Option<&str>) -> Result<String> {
    // The default (the workspace, or the image's WorkingDir) was checked at start: no
    // check on the hot path of a plain exec.
    let Some(c) = cwd else {
        return Ok(state.config.default_cwd.clone());
    };
    let p = WorkspacePath::parse(c).map_err(|e| AgentError::Invalid(format!("cwd {c:?}: {e}")))?;
    let inside = p.to_string();
    let workspace = state.workspace.clone();
    let found = state
        .users
        .run(move || workspace.open_at(&p, OFlags::PATH | OFlags::DIRECTORY))
        .await;
    found.map_err(AgentError::Fs)?;
    Ok(inside)
}

/// Runs `spec`; a program that cannot be started is reported like a shell would
/// (127 not found, 126 not executable) rather than as an HTTP error.
pub async fn run_or_report(
    jail: &jail::Jail,
    spec: ExecSpec,
    sink: OutputSink,
) -> Result<ExecResponse> {
    let program = spec.spawn.program.clone();
    match jail::run(jail, spec, sink).await {
        Ok(r) => Ok(r),
        Err(JailError::Spawn { source, .. }) if source.raw_os_error().is_some() => {
            let exit_code = match source.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => 127,
                Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EPERM) => 126,
                _ => {
                    return Err(AgentError::Internal(format!(
                        "starting {program:?}: {source}"
                    )))
                }
            };
            Ok(ExecResponse {
                exit_code,
                stderr: format!("hearth: cannot run {program:?}: {source}\n"),
                ..Default::default()
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Starts `spec` in a task and answers at once with an NDJSON stream of its output;
/// `finish` turns the outcome into the final `exit` event.
pub fn stream_run<F, Fut>(jail: jail::Jail, spec: ExecSpec, finish: F) -> Response<Body>
where
    F: FnOnce(ExecResponse) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = RunResponse> + Send,
{
    let (body_tx, body_rx) = mpsc::channel::<std::io::Result<Bytes>>(16);
    let (ev_tx, mut ev_rx) = mpsc::channel::<StreamEvent>(16);
    let exit_tx = ev_tx.clone();
    tokio::spawn(async move {
        let exec = match run_or_report(&jail, spec, OutputSink::Stream(ev_tx)).await {
            Ok(r) => r,
            Err(e) => ExecResponse {
                exit_code: -1,
                stderr: format!("hearth: {e}\n"),
                ..Default::default()
            },
        };
        let _ = exit_tx.send(StreamEvent::Exit(finish(exec).await)).await;
    });
    // Serialise events to lines; when the client goes away `body_tx` fails, `ev_rx` is
    // dropped and the run sees its sink closed and kills its process group.
    tokio::spawn(async move {
        while let Some(ev) = ev_rx.recv().await {
            let mut line = serde_json::to_vec(&ev).expect("events serialise");
            line.push(b'\n');
            if body_tx.send(Ok(Bytes::from(line))).await.is_err() {
                break;
            }
            if matches!(ev, StreamEvent::Exit(_)) {
                break;
            }
        }
    });
    h::streaming("application/x-ndjson", body_rx)
}
