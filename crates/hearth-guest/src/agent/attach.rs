//! `GET /processes/{pid}/attach[?since=SEQ]`: the connection becomes a WebSocket
//! (hyper's upgrade, tokio-tungstenite's framing) joined to the process's terminal.
//!
//! Binary frames from the client are typed into the terminal; text frames are JSON
//! [`AttachControl`] messages (`resize`). The agent sends the terminal's output as binary
//! frames (first what is kept after `since`, default all of it, then live), and when the
//! process ends an `exit` text frame and a close. A client closing only detaches: the
//! process keeps running, and several clients may attach at once.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use hearth_proto::{AttachControl, AttachQuery, PtySize};
use http::{header, HeaderValue, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::http::{self as h, Body};
use super::processes::get;
use super::{AgentError, Result, State};
use crate::procs::Process;

/// Checks the handshake, answers 101 and serves the socket in a task.
pub async fn handle(
    state: &State,
    pid: u32,
    mut req: hyper::Request<Incoming>,
) -> Result<Response<Body>> {
    let q: AttachQuery = h::query(&req)?;
    let p = get(state, pid)?;
    if p.pty.is_none() {
        return Err(AgentError::Conflict(format!(
            "process {pid} has no terminal; start it with `pty` to attach"
        )));
    }
    let headers = req.headers();
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(AgentError::BadRequest(
            "attach needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)".into(),
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(AgentError::BadRequest(
            "Sec-WebSocket-Version must be 13".into(),
        ));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(AgentError::BadRequest(
            "Sec-WebSocket-Key is missing".into(),
        ));
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        serve(ws, p, q.since).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(h::full(bytes::Bytes::new()))
        .map_err(|e| AgentError::Internal(format!("building the 101: {e}")))
}

fn control(c: &AttachControl) -> Message {
    Message::text(serde_json::to_string(c).expect("control messages serialise"))
}

async fn serve<S>(ws: WebSocketStream<S>, p: Arc<Process>, since: u64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    // Replies to the client's control messages go through the writer's queue.
    let (reply_tx, mut reply_rx) = mpsc::channel::<Message>(8);
    let input = {
        let p = p.clone();
        async move {
            while let Some(Ok(msg)) = stream.next().await {
                match msg {
                    Message::Binary(data) => {
                        let Some(pty) = &p.pty else { break };
                        if pty.write_all(&data).await.is_err() {
                            break;
                        }
                    }
                    Message::Text(text) => {
                        let reply = match serde_json::from_str::<AttachControl>(&text) {
                            Ok(AttachControl::Resize { cols, rows }) => {
                                let size = PtySize { cols, rows };
                                match size.validate() {
                                    Ok(()) => p.set_pty_size(size).err().map(|e| e.to_string()),
                                    Err(e) => Some(e.to_string()),
                                }
                            }
                            Ok(_) => Some("only `resize` may be sent to the agent".into()),
                            Err(e) => Some(format!("bad control message: {e}")),
                        };
                        if let Some(message) = reply {
                            let _ = reply_tx
                                .send(control(&AttachControl::Error { message }))
                                .await;
                        }
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        }
    };
    let output = async {
        let mut changed = p.subscribe();
        let mut seq = since;
        loop {
            changed.borrow_and_update();
            let snap = p.snapshot(seq);
            for c in snap.chunks {
                seq = c.seq;
                if sink.send(Message::Binary(c.data)).await.is_err() {
                    return;
                }
            }
            if let Some(exit) = snap.exit {
                let msg = AttachControl::Exit {
                    exit_code: exit.exit_code,
                    signal: exit.signal,
                };
                let _ = sink.send(control(&msg)).await;
                let _ = sink.close().await;
                return;
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                Some(reply) = reply_rx.recv() => {
                    if sink.send(reply).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    // Either side ending ends the attachment (never the process).
    tokio::select! {
        _ = input => {}
        _ = output => {}
    }
}
