//! `POST /files/upload` and `GET /files/download` (tar.gz, or plain tar by
//! `Content-Type: application/x-tar` / `?format=tar`): the agent streams bytes between the
//! client and a jailed helper process (see [`super::helper`]); it never parses archives
//! or touches workspace paths itself.

use std::process::Stdio;

use bytes::Bytes;
use hearth_proto::{ArchiveFormat, DownloadQuery};
use http::Response;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::helper::HelperReply;
use super::http::{self as h, Body};
use super::{base_env, AgentError, Result, State};
use crate::archive::WorkspacePath;
use crate::jail::{spawn, SpawnSpec, AGENT_IN_JAIL};

/// Largest reply line read from a helper.
const MAX_REPLY: u64 = 64 * 1024;
/// How much of a rejected upload is still read and dropped before answering.
const MAX_DRAIN: usize = 64 << 20;

fn query_path(
    req: &hyper::Request<Incoming>,
    key: &str,
    default: Option<&str>,
) -> Result<WorkspacePath> {
    let raw = h::query_param(req.uri().query(), key)?
        .or(default.map(str::to_string))
        .ok_or_else(|| AgentError::BadRequest(format!("missing query parameter `{key}`")))?;
    WorkspacePath::parse(&raw).map_err(|e| AgentError::Invalid(format!("{key} {raw:?}: {e}")))
}

fn helper_spec(args: Vec<String>) -> SpawnSpec {
    SpawnSpec {
        program: AGENT_IN_JAIL.into(),
        args,
        env: base_env([]),
        cwd: hearth_proto::WORKSPACE.into(),
        ..Default::default()
    }
}

fn helper_error(line: &[u8]) -> AgentError {
    match serde_json::from_slice::<HelperReply>(line) {
        Ok(HelperReply::Err {
            status,
            code,
            message,
        }) => AgentError::Helper {
            status,
            code,
            message,
        },
        _ => AgentError::Internal(format!(
            "archive helper failed: {}",
            String::from_utf8_lossy(line).trim()
        )),
    }
}

pub async fn upload(state: &State, req: hyper::Request<Incoming>) -> Result<Response<Body>> {
    let dest = query_path(&req, "dest", Some(hearth_proto::WORKSPACE))?;
    let content_type = req.headers().get(http::header::CONTENT_TYPE);
    let format = ArchiveFormat::from_content_type(content_type.and_then(|v| v.to_str().ok()));
    let limits = state.config.upload_limits;
    let spec = helper_spec(vec![
        "__extract".into(),
        hearth_proto::WORKSPACE.into(),
        dest.to_string(),
        limits.max_entries.to_string(),
        limits.max_bytes.to_string(),
        format.as_str().into(),
    ]);
    let stdio = [Stdio::piped(), Stdio::piped(), Stdio::null()];
    let mut child = spawn(&state.jail, &spec, stdio)?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut body = req.into_body();
    // Frame by frame: the archive is never held whole. If the helper stops reading (it
    // rejected an entry and exited), the write fails and we stop too.
    let mut helper_gone = false;
    let mut discarded = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| AgentError::BadRequest(format!("reading the upload: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if helper_gone {
            // Read (and drop) a bounded tail so that a client still sending gets our
            // answer instead of a reset connection; beyond that, just answer.
            discarded += data.len();
            if discarded > MAX_DRAIN {
                break;
            }
        } else if stdin.write_all(&data).await.is_err() {
            helper_gone = true;
        }
    }
    drop(stdin);
    let mut reply = Vec::new();
    let stdout = child.stdout.take().expect("piped");
    let _ = stdout.take(MAX_REPLY).read_to_end(&mut reply).await;
    let _ = child.wait().await;
    match serde_json::from_slice::<HelperReply>(&reply) {
        Ok(HelperReply::Ok(resp)) => Ok(h::json(200, &resp)),
        _ => Err(helper_error(&reply)),
    }
}

pub async fn download(state: &State, req: hyper::Request<Incoming>) -> Result<Response<Body>> {
    let q: DownloadQuery = h::query(&req)?;
    let path = WorkspacePath::parse(&q.path)
        .map_err(|e| AgentError::Invalid(format!("path {:?}: {e}", q.path)))?;
    let spec = helper_spec(vec![
        "__pack".into(),
        hearth_proto::WORKSPACE.into(),
        path.to_string(),
        q.format.as_str().into(),
    ]);
    let stdio = [Stdio::null(), Stdio::piped(), Stdio::null()];
    let mut child = spawn(&state.jail, &spec, stdio)?;
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut first = Vec::new();
    (&mut out)
        .take(MAX_REPLY)
        .read_until(b'\n', &mut first)
        .await
        .map_err(|e| AgentError::Internal(format!("reading the archive helper: {e}")))?;
    if first != b"ok\n" {
        let _ = child.wait().await;
        return Err(helper_error(&first));
    }
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match out.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return; // client gone; dropping `child` kills the helper
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
        // A helper that failed half-way must not look like a complete archive: end the
        // body with an error so the client sees a truncated transfer.
        match child.wait().await {
            Ok(s) if s.success() => {}
            other => {
                let msg = format!("archive helper ended badly: {other:?}");
                let _ = tx.send(Err(std::io::Error::other(msg))).await;
            }
        }
    });
    Ok(h::streaming(q.format.content_type(), rx))
}
