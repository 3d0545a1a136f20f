//! `/files/content` (GET, PUT), `/files/list`, `/files/stat`, `/files/mkdir`,
//! `/files/move`, `DELETE /files`: parse, hand the work to a uid-1000 thread
//! ([`crate::workspace`]), answer. File bytes flow through the blocking pool on fds
//! opened there, so a slow client holds no uid-1000 thread.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hearth_proto::{
    DeleteQuery, ListQuery, MkdirRequest, MoveRequest, PathQuery, WriteQuery, MAX_JSON_BODY,
};
use http::{header, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::http::{self as h, Body};
use super::{AgentError, Result, State};
use crate::workspace::{self as ws, ops, FsError, PendingWrite, UserThreads};

/// Bytes handed to the disk writer at once.
const WRITE_BATCH: usize = 256 * 1024;
/// Bytes read from a file per response chunk.
const READ_CHUNK: usize = 256 * 1024;
/// How much of a refused body is still read (and dropped) so the client gets the answer.
const MAX_DRAIN: u64 = 64 << 20;

/// `GET /files/content?path=P`: the bytes, with `Content-Length`.
pub async fn read(state: &State, req: hyper::Request<Incoming>) -> Result<Response<Body>> {
    let q: PathQuery = h::query(&req)?;
    let p = ws::parse(&q.path)?;
    let workspace = state.workspace.clone();
    let (mut file, size) = state
        .users
        .run(move || ws::open_read(&workspace, &p))
        .await?;
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut left = size;
        while left > 0 {
            let mut buf = vec![0u8; READ_CHUNK.min(left as usize)];
            let item = match file.read(&mut buf) {
                // The file shrank while we read it (it is written in place by user code):
                // end the body early so the client sees a short transfer, not a lie.
                Ok(0) => Err(std::io::Error::other("the file shrank while being read")),
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    Ok(Bytes::from(buf))
                }
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    let mut resp = h::streaming("application/octet-stream", rx);
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, header::HeaderValue::from(size));
    Ok(resp)
}

/// Removes a write's temporary file unless it was committed.
struct Pending {
    users: UserThreads,
    write: Option<PendingWrite>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(w) = self.write.take() {
            self.users.spawn(move || w.abort());
        }
    }
}

/// `PUT /files/content?path=P[&mode=][&parents=]`: streamed to a temporary file, renamed
/// over the target at the end (see [`crate::workspace::write`]); 201 with the entry.
pub async fn write(state: &State, req: hyper::Request<Incoming>) -> Result<Response<Body>> {
    let q: WriteQuery = h::query(&req)?;
    let p = ws::parse(&q.path)?;
    let mode = q.mode_bits()?;
    let limit = state.config.max_file_bytes;
    let too_large = || FsError::TooLarge(format!("the file is larger than {limit} bytes"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large().into());
    }
    let (workspace, target) = (state.workspace.clone(), p.clone());
    let (pending, mut file) = state
        .users
        .run(move || PendingWrite::create(&workspace, &target, mode, q.parents))
        .await?;
    let mut pending = Pending {
        users: state.users.clone(),
        write: Some(pending),
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        while let Some(b) = rx.blocking_recv() {
            file.write_all(&b)?;
        }
        Ok(file)
    });
    let mut body = req.into_body();
    let (mut total, mut batch) = (0u64, BytesMut::new());
    let mut over = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| AgentError::BadRequest(format!("reading the body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if over || total > limit {
            // Keep reading (bounded) so a client still sending gets the 413.
            over = true;
            if total > limit.saturating_add(MAX_DRAIN) {
                break;
            }
            continue;
        }
        batch.extend_from_slice(&data);
        if batch.len() >= WRITE_BATCH && tx.send(batch.split().freeze()).await.is_err() {
            break; // the writer failed; its error is reported below
        }
    }
    if over {
        return Err(too_large().into());
    }
    if !batch.is_empty() {
        let _ = tx.send(batch.freeze()).await;
    }
    drop(tx);
    let file = writer
        .await
        .map_err(|e| AgentError::Internal(format!("file writer: {e}")))?
        .map_err(|e| FsError::from_io(&p, e))?;
    let write = pending.write.take().expect("taken once");
    let entry = state.users.run(move || write.commit(file)).await?;
    Ok(h::json(201, &entry))
}

/// `GET /files/list?path=P[&depth=N]`.
pub async fn list(state: &State, req: hyper::Request<Incoming>) -> Result<Response<Body>> {
    let q: ListQuery = h::query(&req)?;
    let depth = q.depth()?;
    let p = ws::parse(q.path.as_deref().unwrap_or(hearth_proto::WORKSPACE))?;
    let workspace = state.workspace.clone();
    let list = state
        .users
        .run(move || ops::list(&workspace, &p, depth))
        .await?;
    Ok(h::json(200, &list))
}

/// `GET /files/stat?path=P`.
pub async fn stat(state: &State, req: hyper::Request<Incoming>) -> Result<Response<Body>> {
    let q: PathQuery = h::query(&req)?;
    let p = ws::parse(&q.path)?;
    let workspace = state.workspace.clone();
    let entry = state.users.run(move || ops::stat(&workspace, &p)).await?;
    Ok(h::json(200, &entry))
}

/// `POST /files/mkdir`: 201 when created, 200 when `parents` found it there.
pub async fn mkdir(state: &State, req: hyper::Request<Incoming>) -> Result<Response<Body>> {
    let r: MkdirRequest = h::read_json(req, MAX_JSON_BODY).await?;
    let p = ws::parse(&r.path)?;
    let workspace = state.workspace.clone();
    let (entry, created) = state
        .users
        .run(move || ops::mkdir(&workspace, &p, r.parents))
        .await?;
    Ok(h::json(if created { 201 } else { 200 }, &entry))
}

/// `POST /files/move`: the entry at its new path.
pub async fn rename(state: &State, req: hyper::Request<Incoming>) -> Result<Response<Body>> {
    let r: MoveRequest = h::read_json(req, MAX_JSON_BODY).await?;
    let (from, to) = (ws::parse(&r.from)?, ws::parse(&r.to)?);
    let workspace = state.workspace.clone();
    let entry = state
        .users
        .run(move || ops::rename(&workspace, &from, &to, r.overwrite))
        .await?;
    Ok(h::json(200, &entry))
}

/// `DELETE /files?path=P[&recursive=true]`: 204.
pub async fn delete(state: &State, req: hyper::Request<Incoming>) -> Result<Response<Body>> {
    let q: DeleteQuery = h::query(&req)?;
    let p = ws::parse(&q.path)?;
    let workspace: Arc<ws::Workspace> = state.workspace.clone();
    state
        .users
        .run(move || ops::delete(&workspace, &p, q.recursive))
        .await?;
    Ok(h::no_content())
}
