//! The guest agent: HTTP/1.1 on vsock (or, for tests, a Unix socket or loopback TCP).
//!
//! Every request runs in its own task, so a slow or endless run never delays `/health`
//! or other requests. Handlers only parse and validate; processes are started through
//! [`crate::jail`], and file transfers run in jailed helper processes (see [`helper`]).
//!
//! Contract details beyond the `hearth_proto` types:
//! - `/exec` and `/run-*` accept `?stream=true`: NDJSON `StreamEvent`s, one HTTP chunk
//!   per event, sent as output is produced. Streamed output is not capped (nothing is
//!   kept); the final `exit` event then has empty `stdout`/`stderr` and `*_truncated`
//!   false. A client that hangs up (streaming or not) gets its run killed (every
//!   process in the run's cgroup, see [`crate::jail::cgroup`]).
//! - A program that cannot be started is an ordinary result: exit code 127 (not found) or
//!   126 (not executable) with a message on stderr, as a shell would report it.
//! - When the main process exits, output is collected for at most 250 ms more; background
//!   processes it started keep running (`cmd &` works) unless the run timed out, in
//!   which case everything in the run's cgroup is SIGKILLed, setsid or not (exit code
//!   137, `timed_out`), and the answer waits until all of it is gone.
//! - `oom_killed: true` when the OOM killer ended the run (user code as a whole may use
//!   the guest's memory less a reserve for init and the agent); the exit code is then
//!   137 too.
//! - `cwd`, `path`, `dest`: relative to `/workspace` or spelled `/workspace/...`; no `..`.
//! - `/firewall/allowlist` answers with the applied request, CIDRs in canonical form.
//! - `/files/download` of a directory yields entries under its name (`proj/...`); of
//!   `/workspace` itself, its contents; of a file, one entry named after it.
//! - Status codes: 400 malformed (bad JSON, unknown fields, corrupt archive), 404 unknown
//!   endpoint or missing file, 405 wrong method, 413 body or archive too large, 422
//!   validation (bad path, rejected archive entry, bad CIDR), 500 our own failures.

mod error;
mod exec;
mod files;
mod firewall;
pub mod helper;
mod http;
mod listen;
mod run;

use std::sync::Arc;
use std::time::Instant;

use ::http::{Method, Request, Response};
use hearth_proto::Health;
use hyper::body::Incoming;

pub use error::{AgentError, Result};
pub use firewall::{nft_script, parse_cidr};
pub use listen::{serve, Listen};

use crate::archive::Limits;
use crate::jail::Jail;
use http::Body;

/// Settings that do not change while the agent runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Per-stream capture cap for `/exec` and the run endpoints.
    pub output_cap: usize,
    pub upload_limits: Limits,
    /// Commands (looked up on the jail's `PATH`) for the three runtimes.
    pub deno: String,
    pub node: String,
    pub python: String,
    /// The `nft` binary, run by the agent itself (not jailed).
    pub nft: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            output_cap: hearth_proto::DEFAULT_OUTPUT_CAP,
            upload_limits: Limits::default(),
            deno: "deno".into(),
            node: "node".into(),
            python: "python3".into(),
            nft: "/usr/sbin/nft".into(),
        }
    }
}

/// Shared by all requests.
#[derive(Debug)]
pub struct State {
    pub config: Config,
    pub jail: Jail,
    pub started: Instant,
}

/// Routes one request; errors become `ErrorBody` responses here and nowhere else.
pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    match route(state, req).await {
        Ok(resp) => resp,
        Err(e) => {
            // Our own failures go to the console (init forwards it); client errors don't.
            if e.status() >= 500 {
                eprintln!("hearth-agent: {method} {path}: {e}");
            }
            http::error(&e)
        }
    }
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let stream =
        http::query_param(req.uri().query(), "stream")?.is_some_and(|v| v == "true" || v == "1");
    let expect = |m: Method| {
        if method == m {
            Ok(())
        } else {
            Err(AgentError::MethodNotAllowed {
                method: method.to_string(),
                path: path.clone(),
            })
        }
    };
    match path.as_str() {
        "/health" => {
            expect(Method::GET)?;
            let health = Health {
                version: env!("CARGO_PKG_VERSION").to_string(),
                protocol: hearth_proto::PROTOCOL_VERSION,
                uptime_ms: state.started.elapsed().as_millis() as u64,
            };
            Ok(http::json(200, &health))
        }
        "/exec" => {
            expect(Method::POST)?;
            exec::handle(&state, req, stream).await
        }
        "/run-ts" | "/run-js" | "/run-python" => {
            expect(Method::POST)?;
            let rt = match path.as_str() {
                "/run-ts" => run::Runtime::Deno,
                "/run-js" => run::Runtime::Node,
                _ => run::Runtime::Python,
            };
            run::handle(&state, rt, req, stream).await
        }
        "/files/upload" => {
            expect(Method::POST)?;
            files::upload(&state, req).await
        }
        "/files/download" => {
            expect(Method::GET)?;
            files::download(&state, req).await
        }
        "/firewall/allowlist" => {
            expect(Method::POST)?;
            firewall::handle(&state, req).await
        }
        _ => Err(AgentError::NotFound(format!("no endpoint {path}"))),
    }
}

/// Request extension set by the listener: flips to `true` when the client's side of the
/// connection reaches EOF. hyper itself only notices a gone client when it next writes,
/// which for a silent process (or a captured run) may be never.
#[derive(Debug, Clone)]
pub struct ClientGone(pub tokio::sync::watch::Receiver<bool>);

fn client_gone(req: &Request<Incoming>) -> Option<tokio::sync::watch::Receiver<bool>> {
    req.extensions().get::<ClientGone>().map(|g| g.0.clone())
}

/// The environment every jailed process starts from, then `extra` on top.
pub(crate) fn base_env(extra: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut env: std::collections::BTreeMap<String, String> = [
        ("PATH", crate::jail::JAIL_PATH),
        ("HOME", hearth_proto::WORKSPACE),
        ("LANG", "C.UTF-8"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend(extra);
    env.into_iter().collect()
}
