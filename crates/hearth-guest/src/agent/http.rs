//! Small HTTP helpers: bounded JSON bodies, query strings, response builders.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{AgentError, Result};

pub type Body = BoxBody<Bytes, std::io::Error>;

/// Reads a JSON body of at most `limit` bytes. A declared length above the limit is
/// refused before anything is read; an undeclared one is cut off at the limit.
pub async fn read_json<T: DeserializeOwned>(
    req: hyper::Request<Incoming>,
    limit: usize,
) -> Result<T> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || AgentError::TooLarge(format!("request body is larger than {limit} bytes"));
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let body = Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                AgentError::BadRequest(format!("reading the request body: {e}"))
            }
        })?
        .to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

/// The whole query string as `T` (the typed query structs of `hearth_proto`).
pub fn query<T: DeserializeOwned>(req: &hyper::Request<Incoming>) -> Result<T> {
    serde_urlencoded::from_str(req.uri().query().unwrap_or(""))
        .map_err(|e| AgentError::BadRequest(format!("query string: {e}")))
}

/// Value of `key` in a query string, percent-decoded.
pub fn query_param(query: Option<&str>, key: &str) -> Result<Option<String>> {
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == key {
            return percent_decode(v).map(Some);
        }
    }
    Ok(None)
}

fn percent_decode(s: &str) -> Result<String> {
    let bad = || AgentError::BadRequest(format!("bad percent-encoding in {s:?}"));
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next().ok_or_else(bad)?, bytes.next().ok_or_else(bad)?];
                let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn json<T: Serialize>(status: u16, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("wire types serialise");
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .expect("static response parts are valid")
}

/// An answer without a body.
pub fn no_content() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(full(Bytes::new()))
        .expect("static response parts are valid")
}

pub fn error(e: &AgentError) -> Response<Body> {
    json(e.status(), &e.body())
}

/// A response whose body is whatever arrives on `rx`, one chunk (and flush) per item.
pub fn streaming(content_type: &str, rx: mpsc::Receiver<std::io::Result<Bytes>>) -> Response<Body> {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item.map(Frame::data), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        let q = Some("a=1&dest=%2Fworkspace%2Fmy+dir&x");
        assert_eq!(
            query_param(q, "dest").unwrap().unwrap(),
            "/workspace/my dir"
        );
        assert_eq!(query_param(q, "x").unwrap().unwrap(), "");
        assert_eq!(query_param(q, "nope").unwrap(), None);
        assert!(query_param(Some("p=%zz"), "p").is_err());
        assert!(query_param(Some("p=%ff"), "p").is_err());
    }
}
