//! HTTP/1.1 client for the guest agent over the hybrid vsock.
//!
//! Endpoints (hearth-proto types): `GET /health`, `POST /exec[?stream=true]`,
//! `POST /run-{python,ts,js}[?stream=true]`, `POST /files/upload?dest=DIR` (tar.gz body),
//! `GET /files/download?path=PATH` (raw bytes), `POST /firewall/allowlist`.
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use hearth_proto::{
    ErrorBody, ExecRequest, ExecResponse, FirewallRequest, Health, Language, RunRequest,
    RunResponse, StreamEvent, UploadResponse, AGENT_PORT,
};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::{Frame, Incoming};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::http::{self as h, ReqBody};
use crate::{vsock, Error, Result};

/// Largest JSON response we buffer (outputs are capped by the agent at 1 MiB per stream,
/// JSON escaping can multiply that).
const MAX_JSON_RESPONSE: usize = 64 * 1024 * 1024;

/// Events of a streamed run, in arrival order; the last one is `StreamEvent::Exit`.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent>> + Send>>;
/// Raw bytes of a download, in arrival order.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

#[derive(Debug, Clone)]
pub struct AgentClient {
    pub vsock_path: PathBuf,
    /// Per-request limit on connecting and getting response headers (not on reading a
    /// streamed body, which lasts as long as the program runs).
    pub connect_timeout: Duration,
}

impl AgentClient {
    pub fn new(vsock_path: PathBuf) -> Self {
        Self {
            vsock_path,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<Health> {
        let resp = self
            .request(Method::GET, "/health", None, h::empty())
            .await?;
        json_body(resp).await
    }

    /// Retries `/health` until it answers or `timeout` passes (the guest may still be
    /// booting: the socket refuses, or the handshake fails, until the agent listens).
    /// Right after starting a QEMU VM use `VmHandle::wait_agent` instead: it also waits
    /// for the guest kernel first, which vhost-device-vsock needs, and notices a VM that
    /// died.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Health> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(left.min(Duration::from_secs(5)), self.health());
            let last = match attempt.await {
                Ok(Ok(h)) => return Ok(h),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "health request timed out".to_string(),
            };
            if Instant::now() + Duration::from_millis(50) >= deadline {
                return Err(Error::AgentTimeout(timeout, last));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /exec`, buffered.
    pub async fn exec(&self, req: &ExecRequest) -> Result<ExecResponse> {
        // The agent answers only when the program ends, so wait as long as it may run.
        let within = self.connect_timeout + call_budget(req.timeout_ms);
        let resp = self
            .request_within(
                Method::POST,
                "/exec",
                Some("application/json"),
                json(req)?,
                Some(within),
            )
            .await?;
        json_body(resp).await
    }

    /// `POST /exec?stream=true`: stdout/stderr chunks as the program writes them.
    pub async fn exec_stream(&self, req: &ExecRequest) -> Result<EventStream> {
        let resp = self
            .request(
                Method::POST,
                "/exec?stream=true",
                Some("application/json"),
                json(req)?,
            )
            .await?;
        Ok(ndjson_events(resp.into_body()))
    }

    /// Runs code in `lang`. `sh` goes through `/exec` (`sh -c CODE`, or `sh PATH ARGS`).
    pub async fn run(&self, lang: Language, req: &RunRequest) -> Result<RunResponse> {
        if lang == Language::Sh {
            let exec = self.exec(&sh_exec(req)?).await?;
            return Ok(RunResponse {
                exec,
                ..Default::default()
            });
        }
        let within = self.connect_timeout + call_budget(req.timeout_ms);
        let resp = self
            .request_within(
                Method::POST,
                lang.agent_path(),
                Some("application/json"),
                json(req)?,
                Some(within),
            )
            .await?;
        json_body(resp).await
    }

    /// Streamed [`AgentClient::run`].
    pub async fn run_stream(&self, lang: Language, req: &RunRequest) -> Result<EventStream> {
        if lang == Language::Sh {
            return self.exec_stream(&sh_exec(req)?).await;
        }
        let path = format!("{}?stream=true", lang.agent_path());
        let resp = self
            .request(Method::POST, &path, Some("application/json"), json(req)?)
            .await?;
        Ok(ndjson_events(resp.into_body()))
    }

    /// `POST /files/upload?dest=DIR` with a tar.gz body, streamed as it is produced.
    pub async fn upload<S>(&self, dest: &str, body: S) -> Result<UploadResponse>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let body: ReqBody = BodyExt::boxed_unsync(StreamBody::new(body.map_ok(Frame::data)));
        let path = format!("/files/upload?dest={}", h::encode_query(dest));
        // The answer comes after the whole body is streamed and extracted, which takes as
        // long as the caller's stream does: only the connect is bounded.
        let resp = self
            .request_within(Method::POST, &path, Some("application/gzip"), body, None)
            .await?;
        json_body(resp).await
    }

    /// `GET /files/download?path=PATH`: the body as it arrives.
    pub async fn download(&self, path: &str) -> Result<ByteStream> {
        let uri = format!("/files/download?path={}", h::encode_query(path));
        let resp = self.request(Method::GET, &uri, None, h::empty()).await?;
        let stream = BodyStream::new(resp.into_body()).filter_map(|frame| async move {
            match frame {
                Ok(f) => f.into_data().ok().map(Ok),
                Err(e) => Some(Err(Error::Transport(format!("download body: {e}")))),
            }
        });
        Ok(Box::pin(stream))
    }

    /// `POST /firewall/allowlist`.
    pub async fn firewall(&self, req: &FirewallRequest) -> Result<()> {
        self.request(
            Method::POST,
            "/firewall/allowlist",
            Some("application/json"),
            json(req)?,
        )
        .await
        .map(drop)
    }

    /// Sends one request on a new vsock connection, expecting headers within
    /// `connect_timeout`; non-2xx answers become `Error::Agent`.
    async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: ReqBody,
    ) -> Result<hyper::Response<Incoming>> {
        let within = Some(self.connect_timeout);
        self.request_within(method, path, content_type, body, within)
            .await
    }

    /// Like [`AgentClient::request`]; connecting is always bounded by `connect_timeout`,
    /// the wait for response headers by `headers_within` (`None`: no bound).
    async fn request_within(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: ReqBody,
        headers_within: Option<Duration>,
    ) -> Result<hyper::Response<Incoming>> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "hearth-agent");
        if let Some(ct) = content_type {
            req = req.header(http::header::CONTENT_TYPE, ct);
        }
        let req = req
            .body(body)
            .map_err(|e| Error::Transport(format!("building request: {e}")))?;
        let stream = tokio::time::timeout(
            self.connect_timeout,
            vsock::connect(&self.vsock_path, AGENT_PORT),
        )
        .await
        .map_err(|_| {
            Error::Transport(format!("no connection within {:?}", self.connect_timeout))
        })??;
        let send = h::send(stream, req);
        let resp = match headers_within {
            Some(limit) => tokio::time::timeout(limit, send)
                .await
                .map_err(|_| Error::Transport(format!("no response within {limit:?}")))??,
            None => send.await?,
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(agent_error(resp.status(), resp.into_body()).await)
    }
}

/// Turns an error response into `Error::Agent`, reading the `ErrorBody` when there is one.
async fn agent_error(status: StatusCode, body: Incoming) -> Error {
    let bytes = h::read_body(body, 1024 * 1024).await.unwrap_or_default();
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(b) => Error::Agent {
            status: status.as_u16(),
            code: b.error.code,
            message: b.error.message,
        },
        Err(_) => Error::Agent {
            status: status.as_u16(),
            code: format!("http_{}", status.as_u16()),
            message: String::from_utf8_lossy(&bytes).trim().to_string(),
        },
    }
}

/// A `sh` run as an exec request: `code` through `sh -c`, `path` run by `/bin/sh`.
fn sh_exec(req: &RunRequest) -> Result<ExecRequest> {
    let env = req
        .env_pairs()
        .map_err(|e| Error::Transport(e.to_string()))?
        .into_iter()
        .collect();
    let (cmd, args) = match (&req.code, &req.path) {
        (Some(code), None) if req.args.is_empty() => (code.clone(), None),
        // `sh -c CODE sh ARGS...`: the args become $1.. as they would for a script.
        (Some(code), None) => {
            let mut a = vec!["-c".to_string(), code.clone(), "sh".to_string()];
            a.extend(req.args.iter().cloned());
            ("/bin/sh".to_string(), Some(a))
        }
        (None, Some(path)) => {
            let mut a = vec![path.clone()];
            a.extend(req.args.iter().cloned());
            ("/bin/sh".to_string(), Some(a))
        }
        _ => {
            return Err(Error::Transport(
                hearth_proto::ProtoError::CodeOrPath.to_string(),
            ))
        }
    };
    Ok(ExecRequest {
        cmd,
        args,
        env,
        timeout_ms: req.timeout_ms,
        ..Default::default()
    })
}

fn json<T: Serialize>(value: &T) -> Result<ReqBody> {
    serde_json::to_vec(value)
        .map(h::full)
        .map_err(|e| Error::Transport(format!("encoding request: {e}")))
}

async fn json_body<T: DeserializeOwned>(resp: hyper::Response<Incoming>) -> Result<T> {
    let bytes = h::read_body(resp.into_body(), MAX_JSON_RESPONSE).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::Transport(format!(
            "bad JSON from agent ({e}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ))
    })
}

/// Splits an NDJSON body into events as lines complete (a frame may hold several lines
/// or part of one).
fn ndjson_events(body: Incoming) -> EventStream {
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
                let ev = serde_json::from_slice::<StreamEvent>(line).map_err(|e| {
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
                // A last line without its newline still counts.
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

/// How long a buffered call may legitimately take: the program's own timeout (the
/// agent's default when the request names none) plus time to kill it and answer.
fn call_budget(timeout_ms: Option<u64>) -> Duration {
    let ms = timeout_ms.unwrap_or(hearth_proto::DEFAULT_TIMEOUT_MS);
    Duration::from_millis(ms) + Duration::from_secs(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_runs_become_exec_requests() {
        let r = RunRequest {
            code: Some("echo $1".into()),
            args: vec!["a".into()],
            env: vec!["K=v".into()],
            ..Default::default()
        };
        let e = sh_exec(&r).unwrap();
        assert_eq!(e.cmd, "/bin/sh");
        assert_eq!(e.args.unwrap(), ["-c", "echo $1", "sh", "a"]);
        assert_eq!(e.env["K"], "v");
        let plain = sh_exec(&RunRequest {
            code: Some("true".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((plain.cmd.as_str(), plain.args), ("true", None));
        assert!(sh_exec(&RunRequest::default()).is_err());
    }
}
