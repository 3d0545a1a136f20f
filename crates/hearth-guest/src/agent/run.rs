//! `POST /run-ts`, `/run-js`, `/run-python`.
//!
//! Each run gets a directory `/.hearth/runs/<128-bit token>/` inside the jail, created
//! by the agent (root-owned, in a tmpfs whose top directory is not listable by user
//! code) holding the prelude (Node `--require`, Deno `--preload`) or wrapper (Python,
//! plus its inline code) and an empty `result` file owned by uid 1000. The prelude defines
//! `result.set(value)` / `result.error(err)` and writes the current state as JSON into
//! that file; an uncaught exception is recorded there too.
//! The agent reads the file after the process ends. stdout and stderr are returned
//! untouched and never parsed, so printed text cannot forge a result; the script itself
//! can of course write the file, which is the same as calling `result.set`.
//!
//! Inline code behaves as if it were a file in `/workspace` (the working directory):
//! Node and Deno read it from stdin (`node -`, `deno run -`), so relative imports and
//! `node_modules` lookups start at `/workspace`; Python runs it from the run directory
//! with `sys.path[0] = "/workspace"`. Runs have no stdin of their own (Python's and
//! scripts run by `path` read EOF). A script given by `path` resolves relative to itself.

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hearth_proto::{ExecResponse, RunRequest, RunResponse, ScriptError, MAX_JSON_BODY};
use http::Response;
use hyper::body::Incoming;

use super::exec::{run_or_report, stream_run, timeout};
use super::http::{self as h, Body};
use super::image::{has_program, user_env};
use super::{AgentError, Result, State};
use crate::archive::WorkspacePath;
use crate::jail::{ExecSpec, OutputSink, SpawnSpec};

const NODE_PRELUDE: &str = include_str!("prelude/node.cjs");
const DENO_PRELUDE: &str = include_str!("prelude/deno.ts");
const PYTHON_WRAPPER: &str = include_str!("prelude/python.py");
/// Largest result file read back; beyond it the run reports a `HearthResultError`.
const MAX_RESULT: u64 = MAX_JSON_BODY as u64;
/// What every Deno run may read besides `/workspace`: exactly the `/etc` files DNS and
/// TLS need (the CA bundle lives in `/etc/ssl/certs`), read-only, and the temp dirs.
const DENO_READS: &[&str] = &[
    hearth_proto::WORKSPACE,
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/ssl/certs",
    "/tmp",
    "/var/tmp",
];
/// What every Deno run may write (plus its own result file): the workspace and the
/// temp dirs, all private to the VM.
const DENO_WRITES: &[&str] = &[hearth_proto::WORKSPACE, "/tmp", "/var/tmp"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Deno,
    Node,
    Python,
}

/// Node 18/20 read stdin as CommonJS; code with `import`/`export` at the start of a line
/// must be run as an ES module to run at all.
fn looks_like_esm(code: &str) -> bool {
    code.lines()
        .any(|l| l.starts_with("import ") || l.starts_with("export "))
}

/// The per-run directory, removed when dropped.
struct RunDir {
    inside: String,
    host: PathBuf,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.host);
    }
}

impl RunDir {
    fn create(state: &State) -> Result<Self> {
        let inside = format!("/.hearth/runs/{}", crate::jail::random_token());
        let host = state.jail.host_path(&inside);
        let dir = RunDir { inside, host };
        let io =
            |e: std::io::Error| AgentError::Internal(format!("preparing the run directory: {e}"));
        fs::create_dir(&dir.host).map_err(io)?;
        fs::set_permissions(&dir.host, fs::Permissions::from_mode(0o755)).map_err(io)?;
        let result = dir.host.join("result");
        fs::write(&result, b"").map_err(io)?;
        fs::set_permissions(&result, fs::Permissions::from_mode(0o600)).map_err(io)?;
        nix::unistd::chown(
            &result,
            Some(nix::unistd::Uid::from_raw(state.jail.uid)),
            Some(nix::unistd::Gid::from_raw(state.jail.gid)),
        )
        .map_err(|e| AgentError::Internal(format!("chown of the result file: {e}")))?;
        Ok(dir)
    }

    fn write(&self, name: &str, content: &str) -> Result<String> {
        fs::write(self.host.join(name), content)
            .map_err(|e| AgentError::Internal(format!("writing {name}: {e}")))?;
        Ok(format!("{}/{name}", self.inside))
    }
}

pub async fn handle(
    state: &State,
    rt: Runtime,
    req: hyper::Request<Incoming>,
    stream: bool,
) -> Result<Response<Body>> {
    let cancel = super::client_gone(&req);
    let req: RunRequest = h::read_json(req, MAX_JSON_BODY).await?;
    req.validate()?;
    super::exec::reject_nul(req.args.iter().chain(req.path.iter()))?;
    let env = req.env_pairs()?;
    check_runtime(state, rt, &env)?;
    let dir = RunDir::create(state)?;

    let (main, mode) = match (&req.code, &req.path) {
        (Some(_), _) if rt != Runtime::Python => ("-".to_string(), "code"),
        (Some(code), _) => (dir.write("main.py", code)?, "code"),
        (None, Some(p)) => {
            let wp = WorkspacePath::parse(p)
                .map_err(|e| AgentError::Invalid(format!("path {p:?}: {e}")))?;
            let inside = wp.to_string();
            if !state.jail.host_path(&inside).is_file() {
                return Err(AgentError::NotFound(format!("{inside} is not a file")));
            }
            (inside, "path")
        }
        (None, None) => unreachable!("validate() requires code or path"),
    };

    let cfg = &state.config;
    let (program, mut args, mut env) = match rt {
        Runtime::Node => {
            let prelude = dir.write("prelude.cjs", NODE_PRELUDE)?;
            let mut args = vec!["--require".into(), prelude];
            if req.code.as_deref().is_some_and(looks_like_esm) {
                args.push("--input-type=module".into());
            }
            args.push(main);
            (cfg.node.clone(), args, user_env(cfg, env))
        }
        Runtime::Python => {
            let wrapper = dir.write("wrapper.py", PYTHON_WRAPPER)?;
            (
                cfg.python.clone(),
                vec!["-u".into(), wrapper, main, mode.into()],
                user_env(cfg, env),
            )
        }
        Runtime::Deno => {
            let prelude = dir.write("prelude.ts", DENO_PRELUDE)?;
            let args = deno_args(&req, &dir.inside, &env, prelude, main);
            // Deno reads this itself; user code cannot see it without an --allow-env for it.
            let mut e = user_env(cfg, env);
            e.push(("DENO_NO_UPDATE_CHECK".into(), "1".into()));
            (cfg.deno.clone(), args, e)
        }
    };
    args.extend(req.args.iter().cloned());
    env.sort();
    let spec = ExecSpec {
        spawn: SpawnSpec {
            program,
            args,
            env,
            cwd: cfg.default_cwd.clone(),
            ..Default::default()
        },
        // Inline code for Node and Deno goes in on stdin (see the module docs).
        stdin: match rt {
            Runtime::Python => None,
            _ => req.code.clone().map(String::into_bytes),
        },
        timeout: timeout(req.timeout_ms),
        output_cap: cfg.output_cap,
        cancel,
    };
    let jail = state.jail.clone();
    if stream {
        return Ok(stream_run(jail, spec, move |exec| async move {
            finish(exec, &dir)
        }));
    }
    let exec = run_or_report(&jail, spec, OutputSink::Capture).await?;
    Ok(h::json(200, &finish(exec, &dir)))
}

/// An image without the runtime (an OCI image without Python, say) answers with a
/// clear 422 naming it, before anything is created; `exec` still works there.
fn check_runtime(state: &State, rt: Runtime, env: &[(String, String)]) -> Result<()> {
    let cfg = &state.config;
    let (name, endpoint, cmd) = match rt {
        Runtime::Node => ("Node.js", "/run-js", &cfg.node),
        Runtime::Python => ("Python", "/run-python", &cfg.python),
        Runtime::Deno => ("Deno", "/run-ts", &cfg.deno),
    };
    let full = user_env(cfg, env.iter().cloned());
    let path = full
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    if has_program(&state.jail, path, cmd) {
        return Ok(());
    }
    Err(AgentError::Unavailable {
        code: hearth_proto::ErrorCode::RuntimeMissing,
        message: format!(
            "this image has no {name}: {cmd:?} is not on the PATH ({}), so {endpoint} cannot run; \
             use /exec, or an image with {name}",
            path.unwrap_or(crate::jail::JAIL_PATH)
        ),
    })
}

/// Deno's permissions: [`DENO_READS`] and [`DENO_WRITES`], plus writing this run's
/// result file; the network only when asked; env vars only those passed. Never an empty
/// `--allow-*=`: that would mean "everything". The prelude and `-` (stdin) need no read
/// permission.
fn deno_args(
    req: &RunRequest,
    run_dir: &str,
    env: &[(String, String)],
    prelude: String,
    main: String,
) -> Vec<String> {
    let mut args = vec!["run".to_string(), "--no-prompt".to_string()];
    if req.allow_net {
        args.push("--allow-net".into());
    }
    args.push(format!("--allow-read={}", DENO_READS.join(",")));
    args.push(format!(
        "--allow-write={},{run_dir}/result",
        DENO_WRITES.join(",")
    ));
    let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    if !keys.is_empty() {
        args.push(format!("--allow-env={}", keys.join(",")));
    }
    args.extend(["--preload".to_string(), prelude, main]);
    args
}

/// What the script recorded, read from the result file: `error` is the value given to
/// `result.error` as it was, or an uncaught exception's `{name, message, stack}`.
#[derive(serde::Deserialize, Default)]
struct Recorded {
    #[serde(default)]
    result: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

fn finish(exec: ExecResponse, dir: &RunDir) -> RunResponse {
    let recorded = read_result(&dir.host.join("result")).unwrap_or_else(|message| Recorded {
        result: None,
        error: Some(
            serde_json::to_value(ScriptError {
                name: "HearthResultError".into(),
                message,
                stack: None,
            })
            .expect("plain struct serialises"),
        ),
    });
    RunResponse {
        exec,
        result: recorded.result,
        error: recorded.error,
    }
}

fn read_result(path: &Path) -> std::result::Result<Recorded, String> {
    // O_NOFOLLOW: the file is the user's; never read through a link they could not make
    // here anyway (the directory is root's), but cheap to rule out.
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("reading the result: {e}"))?;
    let mut buf = Vec::new();
    f.take(MAX_RESULT + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading the result: {e}"))?;
    if buf.len() as u64 > MAX_RESULT {
        return Err(format!(
            "the recorded result is larger than {MAX_RESULT} bytes"
        ));
    }
    if buf.is_empty() {
        return Ok(Recorded::default());
    }
    serde_json::from_slice(&buf).map_err(|e| format!("the recorded result is not valid: {e}"))
}
