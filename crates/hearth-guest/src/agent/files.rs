//! `POST /files/upload` and `GET /files/download` (tar.gz, or plain tar by
//! `Content-Type: application/x-tar` / `?format=tar`).
//!
//! The archive code runs on a thread of the agent that is confined to `/workspace`
//! (chrooted there, uid/gid 1000, no capabilities: [`spawn_confined`]), so the privileged
//! agent never resolves a path the user controls and extracted files belong to uid 1000.
//! Bytes move between hyper and that thread as the `Bytes` hyper produced, through a
//! short channel: no copy, no pipe and no helper process. (A jailed helper process used
//! to do this; under TCG the extra copies through its pipe and the context switches
//! between the two processes cost a third of an upload's time, and starting it ~30 ms.)

use std::io::{self, Read, Write};
use std::path::Path;

use bytes::{Buf, Bytes, BytesMut};
use hearth_proto::{ArchiveFormat, DownloadQuery, UploadResponse};
use http::Response;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{mpsc, oneshot};

use super::http::{self as h, Body};
use super::{AgentError, Result, State};
use crate::archive::{self, ArchiveError, WorkspacePath};
use crate::workspace::spawn_confined;

/// Body frames in flight between hyper and the archive thread (each at most hyper's read
/// buffer, a few hundred KiB).
const FRAMES_IN_FLIGHT: usize = 8;
/// Download chunks: big enough that the per-chunk overheads vanish under TCG.
const CHUNK: usize = 256 * 1024;
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

/// Runs `f` on a thread confined to the workspace as the user.
fn confined(state: &State, name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
    let (uid, gid) = (state.jail.uid, state.jail.gid);
    spawn_confined(state.workspace.fd(), uid, gid, name, f)
        .map_err(|e| AgentError::Internal(format!("starting the archive thread: {e}")))
}

pub async fn upload(state: &State, req: hyper::Request<Incoming>) -> Result<Response<Body>> {
    let dest = query_path(&req, "dest", Some(hearth_proto::WORKSPACE))?;
    let content_type = req.headers().get(http::header::CONTENT_TYPE);
    let format = ArchiveFormat::from_content_type(content_type.and_then(|v| v.to_str().ok()));
    let limits = state.config.upload_limits;
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(FRAMES_IN_FLIGHT);
    let (done_tx, done_rx) = oneshot::channel();
    confined(state, "upload", move || {
        let body = ChannelReader {
            rx,
            cur: Bytes::new(),
        };
        // Inside the confinement the workspace is `/`.
        let r = archive::extract_as(body, Path::new("/"), &dest, &limits, format);
        let _ = done_tx.send(r);
    })?;
    let mut body = req.into_body();
    // Frame by frame: the archive is never held whole. If the extraction stops reading
    // (it rejected an entry), sending fails and we only drain what the client still sends.
    let mut extractor_gone = false;
    let mut discarded = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                let msg = format!("reading the upload: {e}");
                let _ = tx.send(Err(io::Error::other(msg.clone()))).await;
                return Err(AgentError::BadRequest(msg));
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if extractor_gone {
            // Read (and drop) a bounded tail so that a client still sending gets our
            // answer instead of a reset connection; beyond that, just answer.
            discarded += data.len();
            if discarded > MAX_DRAIN {
                break;
            }
        } else if tx.send(Ok(data)).await.is_err() {
            extractor_gone = true;
        }
    }
    drop(tx);
    let outcome: std::result::Result<UploadResponse, ArchiveError> = done_rx
        .await
        .map_err(|_| AgentError::Internal("the archive thread failed".into()))?;
    Ok(h::json(200, &outcome?))
}

pub async fn download(state: &State, req: hyper::Request<Incoming>) -> Result<Response<Body>> {
    let q: DownloadQuery = h::query(&req)?;
    let path = WorkspacePath::parse(&q.path)
        .map_err(|e| AgentError::Invalid(format!("path {:?}: {e}", q.path)))?;
    let format = q.format;
    let (checked_tx, checked_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(FRAMES_IN_FLIGHT);
    confined(state, "download", move || {
        let root = Path::new("/");
        let checked = archive::check_source(root, &path);
        let ok = checked.is_ok();
        let _ = checked_tx.send(checked);
        if !ok {
            return;
        }
        let mut out = ChunkWriter {
            tx: tx.clone(),
            buf: BytesMut::with_capacity(CHUNK),
        };
        let packed = archive::pack_as(root, &path, &mut out, format);
        // A pack that failed half-way must not look like a complete archive: end the body
        // with an error so the client sees a truncated transfer.
        let end = packed
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|_| out.flush());
        if let Err(e) = end {
            let _ = tx.blocking_send(Err(e));
        }
    })?;
    checked_rx
        .await
        .map_err(|_| AgentError::Internal("the archive thread failed".into()))??;
    Ok(h::streaming(format.content_type(), rx))
}

/// The upload body as a blocking `Read` for the archive thread.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.cur = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

/// The download body as a blocking `Write` for the archive thread, in [`CHUNK`]s.
struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, BytesMut::with_capacity(CHUNK)).freeze();
        // The client went away: stop packing.
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "download client gone"))
    }
}
