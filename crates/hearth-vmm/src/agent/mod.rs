//! HTTP/1.1 client for the guest agent over the hybrid vsock.
//!
//! Endpoints (hearth-proto types, paths in `hearth_proto::paths`): `GET /health`,
//! `POST /exec[?stream=true]`, `POST /run-{python,ts,js}[?stream=true]`,
//! `POST /files/upload?dest=DIR` (tar.gz or tar body), `GET /files/download?path=PATH`,
//! `POST /firewall/allowlist`; the single-file operations and `watch` ([`files`]); the
//! processes and their attach WebSocket ([`process`]).
//!
//! Every answer to `/health` is checked for the agent's protocol version: an agent
//! built from another protocol is refused with [`Error::ProtocolMismatch`] naming both.
//! A server that proxies the agent can use [`AgentClient::forward`] (any request, the
//! answer as it comes, error statuses included) and [`AgentClient::attach`] (the
//! upgraded WebSocket) instead of the typed calls.

pub mod files;
mod freeze;
mod ndjson;
pub mod pool;
pub mod process;

use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use hearth_proto::{
    paths, ErrorBody, ExecRequest, ExecResponse, FirewallRequest, Health, Language, RunRequest,
    RunResponse, StreamEvent, AGENT_PORT, PROTOCOL_VERSION,
};
use http::{header, Method, Request, StatusCode};
use http_body_util::BodyStream;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::http::{self as h};
pub use crate::http::{stream_body, ReqBody};
use crate::{vsock, Error, Result};
pub use ndjson::LineStream;
pub use pool::Pool;

/// Largest JSON response we buffer (outputs are capped by the agent at 1 MiB per stream,
/// JSON escaping can multiply that).
const MAX_JSON_RESPONSE: usize = 64 * 1024 * 1024;

/// Events of a streamed run, in arrival order; the last one is `StreamEvent::Exit`.
pub type EventStream = LineStream<StreamEvent>;
/// Raw bytes of a download, in arrival order.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// A client of one VM's agent. Clones share its open connections ([`Pool`]); a
/// `VmHandle` hands out clients of the same pool, so calls made through it reuse them.
#[derive(Debug, Clone)]
pub struct AgentClient {
    pub vsock_path: PathBuf,
    /// Per-request limit on connecting and getting response headers (not on reading a
    /// streamed body, which lasts as long as the program runs).
    pub connect_timeout: Duration,
    pool: Pool,
}

impl AgentClient {
    /// A client with a pool of its own.
    pub fn new(vsock_path: PathBuf) -> Self {
        Self::with_pool(vsock_path, Pool::default())
    }

    /// A client that keeps its connections in `pool`.
    pub fn with_pool(vsock_path: PathBuf, pool: Pool) -> Self {
        Self {
            vsock_path,
            connect_timeout: Duration::from_secs(10),
            pool,
        }
    }

    /// The open connections this client reuses.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// `GET /health`; an agent of another protocol version is an error.
    pub async fn health(&self) -> Result<Health> {
        let resp = self
            .request(Method::GET, paths::HEALTH, None, h::empty())
            .await?;
        check_protocol(json_body(resp).await?)
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
                // Retrying cannot fix a mismatch.
                Ok(Err(e @ Error::ProtocolMismatch { .. })) => return Err(e),
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
        Ok(ndjson::lines(resp.into_body()))
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
        Ok(ndjson::lines(resp.into_body()))
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
        let mut req = Request::builder().method(method).uri(path);
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = req
            .body(body)
            .map_err(|e| Error::Transport(format!("building request: {e}")))?;
        let resp = self.send(req, headers_within).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(agent_error(resp.status(), resp.into_body()).await)
    }

    /// Sends any request to the agent and returns its answer as it is, error statuses
    /// included: what a proxy needs. `req`'s URI is the agent's path and query
    /// (`/files/content?path=...`); a `Host` header is added if missing. Only connecting
    /// is bounded (by `connect_timeout`), since a body may stream for long.
    pub async fn forward(&self, req: Request<ReqBody>) -> Result<hyper::Response<Incoming>> {
        self.send(req, None).await
    }

    async fn send(
        &self,
        mut req: Request<ReqBody>,
        headers_within: Option<Duration>,
    ) -> Result<hyper::Response<Incoming>> {
        req.headers_mut()
            .entry(header::HOST)
            .or_insert(header::HeaderValue::from_static("hearth-agent"));
        let send = self.send_pooled(req);
        match headers_within {
            Some(limit) => tokio::time::timeout(limit, send)
                .await
                .map_err(|_| Error::Transport(format!("no response within {limit:?}")))?,
            None => send.await,
        }
    }

    /// Sends on an open connection when one is idle, else on a new one; the connection
    /// goes back to the pool once the response headers are in. A pooled connection that
    /// turns out closed before the request went out is replaced by a new one (hyper
    /// hands the unsent request back); one that fails later is an error, since the
    /// request may have reached the agent. Dropping this future mid-request (a timeout)
    /// makes hyper close that connection: it is never reused in an unknown state.
    async fn send_pooled(&self, req: Request<ReqBody>) -> Result<hyper::Response<Incoming>> {
        let mut req = req;
        if let Some(mut conn) = self.pool.checkout() {
            match conn.try_send_request(req).await {
                Ok(resp) => {
                    self.pool.put(conn);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(Error::Transport(format!("{}", e.error()))),
                },
            }
        }
        let mut conn = h::handshake(self.connect().await?).await?;
        let resp = conn
            .send_request(req)
            .await
            .map_err(|e| Error::Transport(format!("{e}")))?;
        self.pool.put(conn);
        Ok(resp)
    }

    /// A new connection to the agent's port, within `connect_timeout`.
    async fn connect(&self) -> Result<tokio::net::UnixStream> {
        tokio::time::timeout(
            self.connect_timeout,
            vsock::connect(&self.vsock_path, AGENT_PORT),
        )
        .await
        .map_err(|_| Error::Transport(format!("no connection within {:?}", self.connect_timeout)))?
    }
}

/// Refuses an agent that speaks another protocol version than this build.
fn check_protocol(health: Health) -> Result<Health> {
    if health.protocol == PROTOCOL_VERSION {
        return Ok(health);
    }
    Err(Error::ProtocolMismatch {
        agent: health.protocol,
        agent_version: health.version,
        host: PROTOCOL_VERSION,
    })
}

/// `path?query` with `q` form-encoded (the agent reads it with `serde_urlencoded`).
fn with_query<Q: Serialize>(path: &str, q: &Q) -> Result<String> {
    let query = serde_urlencoded::to_string(q)
        .map_err(|e| Error::Transport(format!("encoding the query: {e}")))?;
    Ok(if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    })
}

/// A response body as a stream of its data frames.
fn bytes_of(body: Incoming) -> ByteStream {
    let stream = BodyStream::new(body).filter_map(|frame| async move {
        match frame {
            Ok(f) => f.into_data().ok().map(Ok),
            Err(e) => Some(Err(Error::Transport(format!("response body: {e}")))),
        }
    });
    Box::pin(stream)
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
            code: hearth_proto::ErrorCode::for_status(status.as_u16()),
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

/// How long a buffered call may legitimately take: the program's own timeout (the
/// agent's default when the request names none) plus time to kill it and answer.
fn call_budget(timeout_ms: Option<u64>) -> Duration {
    let ms = timeout_ms.unwrap_or(hearth_proto::DEFAULT_TIMEOUT_MS);
    Duration::from_millis(ms) + Duration::from_secs(10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

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

    /// Stands in for a VMM's hybrid socket with an agent that answers `/health` with
    /// `protocol` (the real agent always reports this build's version).
    async fn fake_agent(protocol: u32) -> (tempfile::TempDir, AgentClient) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut seen = Vec::new();
                let mut b = [0u8; 1];
                while !seen.ends_with(b"\r\n\r\n") && s.read(&mut b).await.unwrap_or(0) == 1 {
                    seen.push(b[0]);
                    if seen.ends_with(b"CONNECT 8080\n") {
                        s.write_all(b"OK 1\n").await.unwrap();
                        seen.clear();
                    }
                }
                let body = format!(r#"{{"version":"9.9.9","protocol":{protocol},"uptime_ms":1}}"#);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        (dir, AgentClient::new(path))
    }

    /// A keep-alive agent behind a hybrid socket that counts the connections it accepts
    /// and closes each after `per_conn` requests.
    async fn counting_agent(per_conn: usize) -> (tempfile::TempDir, AgentClient, Arc<AtomicUsize>) {
        use hyper::service::service_fn;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let counter = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut line = [0u8; 13];
                s.read_exact(&mut line).await.unwrap();
                s.write_all(b"OK 1\n").await.unwrap();
                let served = Arc::new(AtomicUsize::new(0));
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
                        async move {
                            let body = format!(
                                r#"{{"version":"t","protocol":{PROTOCOL_VERSION},"uptime_ms":1}}"#
                            );
                            let mut resp =
                                hyper::Response::new(http_body_util::Full::new(Bytes::from(body)));
                            if n >= per_conn {
                                resp.headers_mut()
                                    .insert(header::CONNECTION, "close".parse().unwrap());
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (dir, AgentClient::new(path), conns)
    }

    #[tokio::test]
    async fn calls_reuse_an_open_connection_and_replace_a_closed_one() {
        let (_dir, agent, conns) = counting_agent(3).await;
        for _ in 0..3 {
            agent.health().await.unwrap();
        }
        // Clones share the pool.
        assert_eq!(
            conns.load(Ordering::SeqCst),
            1,
            "three calls, one connection"
        );
        // The agent closed that connection after its third answer: the next call notices
        // and opens another, without an error.
        agent.clone().health().await.unwrap();
        assert_eq!(conns.load(Ordering::SeqCst), 2);
        assert_eq!(agent.pool().len(), 1);
    }

    #[tokio::test]
    async fn an_agent_of_another_protocol_is_refused_naming_both_versions() {
        let (_dir, ok) = fake_agent(PROTOCOL_VERSION).await;
        assert_eq!(ok.health().await.unwrap().protocol, PROTOCOL_VERSION);
        let (_dir, old) = fake_agent(PROTOCOL_VERSION - 1).await;
        let err = old.health().await.unwrap_err();
        assert!(matches!(err, Error::ProtocolMismatch { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("version {}", PROTOCOL_VERSION - 1))
                && msg.contains(&format!("version {PROTOCOL_VERSION}"))
                && msg.contains("9.9.9"),
            "{msg}"
        );
        // Waiting does not retry a mismatch until the deadline.
        let t = Instant::now();
        let err = old.wait_ready(Duration::from_secs(30)).await.unwrap_err();
        assert!(matches!(err, Error::ProtocolMismatch { .. }), "{err:?}");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }
}
