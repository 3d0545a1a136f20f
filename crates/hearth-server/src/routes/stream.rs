//! Bodies that stream through from the agent: NDJSON relays (a process's output, `watch`
//! events) and client bodies counted against a size limit on their way in.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use hearth_api::ErrorBody;
use hearth_vmm::agent::LineStream;
use serde::Serialize;

use crate::error::from_agent_call;

/// Relays the agent's NDJSON lines as they come. A failure mid-stream (the status line,
/// 200, is long gone) becomes a last `{"error": ...}` line; a server-side one says only
/// what a 5xx body would, the details go to the log under the request id.
/// The VM counts as busy (no idle pause) until the body ends.
pub fn ndjson<T: Serialize + Send + 'static>(
    lines: LineStream<T>,
    h: hearth_vmm::VmHandle,
    busy: crate::activity::Busy,
    request_id: String,
) -> Response {
    let body = lines.map(move |item| {
        let _busy = &busy;
        let mut bytes = match item {
            Ok(v) => serde_json::to_vec(&v),
            Err(e) => {
                let err = from_agent_call(e, h.is_alive());
                let mut body = ErrorBody::new(err.code(), err.public_message());
                if err.status().is_server_error() {
                    tracing::error!(request_id = %request_id, error = %err, "stream relay failed");
                    body.error.request_id = Some(request_id.clone());
                }
                serde_json::to_vec(&body)
            }
        }
        .unwrap_or_default();
        bytes.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(bytes))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

/// A request body that fails once more than `limit` bytes went through; the flag tells
/// a failed call caused by that (413) from any other failure.
pub struct Capped<S> {
    pub stream: S,
    pub over: Arc<AtomicBool>,
}

pub fn capped(
    body: Body,
    limit: u64,
) -> Capped<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static> {
    let seen = Arc::new(AtomicU64::new(0));
    let over = Arc::new(AtomicBool::new(false));
    let flag = over.clone();
    let stream = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        let n = chunk.len() as u64;
        if seen.fetch_add(n, Ordering::Relaxed) + n > limit {
            flag.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other("body above its size limit"));
        }
        Ok(chunk)
    });
    Capped { stream, over }
}

/// The body size a client announced in `Content-Length`, if it did.
pub fn announced_len(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}
