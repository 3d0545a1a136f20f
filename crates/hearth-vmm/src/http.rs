//! Minimal HTTP/1.1 over a Unix stream (hybrid vsock to the agent, Firecracker's API
//! socket). [`send`] makes one connection per request (Firecracker's API); the agent
//! client keeps connections open with [`handshake`] and its pool.
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::{Error, Result};

/// Request bodies: a whole buffer or a stream of chunks.
pub type ReqBody = UnsyncBoxBody<Bytes, std::io::Error>;

pub fn full(data: impl Into<Bytes>) -> ReqBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> ReqBody {
    full(Bytes::new())
}

/// A request body sent chunk by chunk as `body` yields them.
pub fn stream_body<S>(body: S) -> ReqBody
where
    S: futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    use futures::TryStreamExt;
    BodyExt::boxed_unsync(StreamBody::new(body.map_ok(Frame::data)))
}

/// An HTTP/1.1 client connection on `stream`. Its task lives as long as the returned
/// sender (and, after that, until the last response body has been read or dropped), so
/// streamed responses keep flowing.
pub async fn handshake(stream: UnixStream) -> Result<SendRequest<ReqBody>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Error::Transport(format!("handshake: {e}")))?;
    tokio::spawn(async move {
        // Errors surface on the request or body side; nothing to add here.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request on a fresh connection.
pub async fn send(stream: UnixStream, req: Request<ReqBody>) -> Result<Response<Incoming>> {
    handshake(stream)
        .await?
        .send_request(req)
        .await
        .map_err(|e| Error::Transport(format!("{e}")))
}

/// Reads a whole (small) body, refusing more than `limit` bytes.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes> {
    Limited::new(body, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| Error::Transport(format!("reading body: {e}")))
}

/// Percent-encodes a query value (RFC 3986 unreserved characters and `/` stay).
pub fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_escaped() {
        assert_eq!(
            super::encode_query("/workspace/a b&c=ü"),
            "/workspace/a%20b%26c%3D%C3%BC"
        );
    }
}
