//! The agent's processes (see `hearth_proto::process`) and the attach WebSocket.

use bytes::Bytes;
use futures::Stream;
use hearth_proto::paths::{self, ProcessPath};
use hearth_proto::{
    AttachQuery, ErrorBody, OutputQuery, ProcessEvent, ProcessInfo, ProcessList,
    ProcessStartRequest, Signal, SignalRequest, StdinQuery,
};
use http::Method;
use tokio_tungstenite::tungstenite;

use super::{json, json_body, ndjson, stream_body, with_query, AgentClient};
use crate::http as h;
use crate::{Error, Result};

/// A process's output events; the last is `ProcessEvent::Exit` once it has ended.
pub type ProcessEventStream = ndjson::LineStream<ProcessEvent>;
/// The attach WebSocket: binary messages carry terminal bytes both ways, text messages
/// `hearth_proto::AttachControl` JSON. Bridge it message by message.
pub type AttachSocket = tokio_tungstenite::WebSocketStream<tokio::net::UnixStream>;

impl AgentClient {
    /// `POST /processes`.
    pub async fn start_process(&self, r: &ProcessStartRequest) -> Result<ProcessInfo> {
        let ct = Some("application/json");
        let resp = self
            .request(Method::POST, paths::PROCESSES, ct, json(r)?)
            .await?;
        json_body(resp).await
    }

    /// `GET /processes`.
    pub async fn processes(&self) -> Result<Vec<ProcessInfo>> {
        let resp = self
            .request(Method::GET, paths::PROCESSES, None, h::empty())
            .await?;
        Ok(json_body::<ProcessList>(resp).await?.processes)
    }

    /// `GET /processes/{pid}`.
    pub async fn process(&self, pid: u32) -> Result<ProcessInfo> {
        let uri = ProcessPath::Itself.path(pid);
        json_body(self.request(Method::GET, &uri, None, h::empty()).await?).await
    }

    /// `DELETE /processes/{pid}`: kills it and everything it started; the final record.
    pub async fn kill_process(&self, pid: u32) -> Result<ProcessInfo> {
        let uri = ProcessPath::Itself.path(pid);
        json_body(self.request(Method::DELETE, &uri, None, h::empty()).await?).await
    }

    /// `POST /processes/{pid}/signal`.
    pub async fn signal_process(&self, pid: u32, signal: Signal) -> Result<()> {
        let uri = ProcessPath::Signal.path(pid);
        let body = json(&SignalRequest { signal })?;
        self.request(Method::POST, &uri, Some("application/json"), body)
            .await
            .map(drop)
    }

    /// `GET /processes/{pid}/output`.
    pub async fn process_output(&self, pid: u32, q: &OutputQuery) -> Result<ProcessEventStream> {
        let uri = with_query(&ProcessPath::Output.path(pid), q)?;
        let resp = self.request(Method::GET, &uri, None, h::empty()).await?;
        Ok(ndjson::lines(resp.into_body()))
    }

    /// `POST /processes/{pid}/stdin`: `body` streamed into the process's stdin.
    pub async fn process_stdin<S>(&self, pid: u32, q: &StdinQuery, body: S) -> Result<()>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let uri = with_query(&ProcessPath::Stdin.path(pid), q)?;
        let ct = Some("application/octet-stream");
        self.request_within(Method::POST, &uri, ct, stream_body(body), None)
            .await
            .map(drop)
    }

    /// `GET /processes/{pid}/attach`, upgraded: the WebSocket to a process's terminal.
    /// An agent that refuses (no such process, no terminal) gives `Error::Agent`.
    pub async fn attach(&self, pid: u32, q: &AttachQuery) -> Result<AttachSocket> {
        let path = with_query(&ProcessPath::Attach.path(pid), q)?;
        let stream = self.connect().await?;
        let url = format!("ws://hearth-agent{path}");
        let handshake = tokio_tungstenite::client_async(url, stream);
        match tokio::time::timeout(self.connect_timeout, handshake).await {
            Err(_) => Err(Error::Transport("no WebSocket handshake in time".into())),
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(tungstenite::Error::Http(resp))) => {
                let status = resp.status().as_u16();
                let body = resp.body().clone().unwrap_or_default();
                Err(match serde_json::from_slice::<ErrorBody>(&body) {
                    Ok(b) => Error::Agent {
                        status,
                        code: b.error.code,
                        message: b.error.message,
                    },
                    Err(_) => Error::Agent {
                        status,
                        code: hearth_proto::ErrorCode::for_status(status),
                        message: String::from_utf8_lossy(&body).into_owned(),
                    },
                })
            }
            Ok(Err(e)) => Err(Error::Transport(format!("WebSocket handshake: {e}"))),
        }
    }
}
