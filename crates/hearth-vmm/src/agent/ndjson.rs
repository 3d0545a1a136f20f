//! Reading NDJSON response bodies line by line as they arrive.

use std::pin::Pin;

use bytes::BytesMut;
use futures::{Stream, StreamExt};
use http_body_util::BodyStream;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Values of a streamed NDJSON body, in arrival order.
pub type LineStream<T> = Pin<Box<dyn Stream<Item = Result<T>> + Send>>;

/// Splits `body` into values as lines complete (a frame may hold several lines or part
/// of one). A last line without its newline still counts; a broken body ends the stream
/// with an error.
pub fn lines<T: DeserializeOwned + Send + 'static>(body: Incoming) -> LineStream<T> {
    struct St {
        body: BodyStream<Incoming>,
        buf: BytesMut,
        done: bool,
    }
    let st = St {
        body: BodyStream::new(body),
        buf: BytesMut::new(),
        done: false,
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(nl) = st.buf.iter().position(|&b| b == b'\n') {
                let line = st.buf.split_to(nl + 1);
                let line = &line[..nl];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let ev = serde_json::from_slice::<T>(line).map_err(|e| {
                    Error::Transport(format!(
                        "bad stream line ({e}): {}",
                        String::from_utf8_lossy(line)
                    ))
                });
                return Some((ev, st));
            }
            if st.done {
                if st.buf.iter().all(u8::is_ascii_whitespace) {
                    return None;
                }
                st.buf.extend_from_slice(b"\n");
                continue;
            }
            match st.body.next().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        st.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    st.buf.clear();
                    return Some((Err(Error::Transport(format!("stream body: {e}"))), st));
                }
                None => st.done = true,
            }
        }
    });
    Box::pin(stream)
}
