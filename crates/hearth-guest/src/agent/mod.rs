//! The guest agent: HTTP/1.1 on vsock (or, for tests, a Unix socket or loopback TCP).
//!
//! Every request runs in its own task, so a slow or endless run never delays `/health`
//! or other requests. Handlers only parse and validate; processes are started through
//! [`crate::jail`] (those that outlive a request are kept in [`crate::procs`]), archive
//! transfers on a thread confined to the workspace as uid 1000 (see [`files`]), and
//! single-file operations on uid-1000 threads of the agent itself (see
//! [`crate::workspace`]).
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
//!   `/workspace` itself, its contents; of a file, one entry named after it. `format=tar`
//!   sends it uncompressed; `/files/upload` takes `Content-Type: application/x-tar` too.
//! - Query strings of the newer endpoints are the typed `*Query` structs of
//!   `hearth_proto` (unknown parameters are a 400).
//! - Status codes: 400 malformed (bad JSON, unknown fields, corrupt archive, not a
//!   WebSocket handshake), 403 the user may not, 404 unknown endpoint, missing file or
//!   process, 405 wrong method, 409 conflicts with the current state (a directory where a
//!   file is wanted, exists, not empty, symlink target of a write, stdin closed, process
//!   exited or without a terminal), 413 body, file or archive too large (or disk full),
//!   422 validation (bad path, a path leading out of `/workspace`, rejected archive
//!   entry, bad CIDR), 500 our own failures.

mod attach;
mod error;
mod exec;
mod fileops;
mod files;
mod firewall;
mod freeze;
mod http;
pub mod image;
mod listen;
mod processes;
mod route;
mod run;
mod watch;

use std::sync::Arc;
use std::time::Instant;

use ::http::{Request, Response};
use hearth_proto::Health;
use hyper::body::Incoming;

pub use error::{AgentError, Result};
pub use firewall::{nft_script, parse_cidr};
pub use listen::{serve, Listen};

use crate::archive::Limits;
use crate::jail::Jail;
use crate::procs;
use crate::workspace::{UserThreads, Workspace};
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
    /// Largest body `PUT /files/content` accepts.
    pub max_file_bytes: u64,
    /// Output bytes kept per process.
    pub process_output_keep: usize,
    /// What the image asks of user processes (see [`image`]).
    pub image: hearth_proto::ImageConfig,
    /// Working directory of exec, runs and processes that name none, as the jail sees
    /// it; from the image's `WorkingDir` (see [`image::default_cwd`]).
    pub default_cwd: String,
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
            max_file_bytes: hearth_proto::DEFAULT_MAX_FILE_BYTES,
            process_output_keep: hearth_proto::DEFAULT_PROCESS_OUTPUT_KEEP,
            image: Default::default(),
            default_cwd: hearth_proto::WORKSPACE.into(),
        }
    }
}

/// Shared by all requests.
#[derive(Debug)]
pub struct State {
    pub config: Config,
    pub jail: Jail,
    /// The jail's `/workspace`, held open: every file operation resolves beneath it.
    pub workspace: Arc<Workspace>,
    /// The uid-1000 threads file operations run on.
    pub users: UserThreads,
    pub procs: Arc<procs::Table>,
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
    use route::Route as R;
    let stream = || {
        http::query_param(req.uri().query(), "stream")
            .map(|v| v.is_some_and(|v| v == "true" || v == "1"))
    };
    match route::parse(req.method(), req.uri().path())? {
        R::Health => {
            let health = Health {
                version: env!("CARGO_PKG_VERSION").to_string(),
                protocol: hearth_proto::PROTOCOL_VERSION,
                uptime_ms: state.started.elapsed().as_millis() as u64,
            };
            Ok(http::json(200, &health))
        }
        R::Exec => {
            let stream = stream()?;
            exec::handle(&state, req, stream).await
        }
        R::Run(rt) => {
            let stream = stream()?;
            run::handle(&state, rt, req, stream).await
        }
        R::Upload => files::upload(&state, req).await,
        R::Download => files::download(&state, req).await,
        R::Firewall => firewall::handle(&state, req).await,
        R::FileRead => fileops::read(&state, req).await,
        R::FileWrite => fileops::write(&state, req).await,
        R::FileList => fileops::list(&state, req).await,
        R::FileStat => fileops::stat(&state, req).await,
        R::Mkdir => fileops::mkdir(&state, req).await,
        R::Move => fileops::rename(&state, req).await,
        R::Delete => fileops::delete(&state, req).await,
        R::Watch => watch::handle(&state, req).await,
        R::ProcessList => Ok(processes::list(&state)),
        R::ProcessStart => processes::start(&state, req).await,
        R::ProcessGet(pid) => processes::info(&state, pid),
        R::ProcessKill(pid) => processes::kill(&state, pid).await,
        R::ProcessOutput(pid) => processes::output(&state, pid, req).await,
        R::ProcessStdin(pid) => processes::stdin(&state, pid, req).await,
        R::ProcessSignal(pid) => processes::signal(&state, pid, req).await,
        R::ProcessAttach(pid) => attach::handle(&state, pid, req).await,
        R::Freeze => freeze::freeze(req).await,
        R::Thaw => freeze::thaw().await,
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
