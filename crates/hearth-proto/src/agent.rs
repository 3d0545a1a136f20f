//! Request and response bodies of the guest agent's HTTP API (vsock port 8080).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ProtoError, MAX_TIMEOUT_MS};

/// `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    /// The agent's crate version (informational).
    pub version: String,
    /// The wire protocol the agent speaks, [`crate::PROTOCOL_VERSION`] of its build. An
    /// agent from before versioning sends none, which reads as 0.
    #[serde(default)]
    pub protocol: u32,
    pub uptime_ms: u64,
}

/// `POST /exec`. Without `args`, `cmd` runs through `/bin/sh -c`; with `args` it is
/// executed directly.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// A shell command line (run by `/bin/sh -c`), or with `args` the program to run.
    #[cfg_attr(feature = "schema", schema(min_length = 1, pattern = r"^[^\x00]+$"))]
    pub cmd: String,
    /// Arguments; with them `cmd` is executed directly, without a shell.
    #[cfg_attr(feature = "schema", schema(schema_with = crate::schema::opt_no_nul_list))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Working directory: an existing directory in `/workspace` (default: `/workspace`).
    #[cfg_attr(feature = "schema", schema(schema_with = crate::schema::opt_workspace_path))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Environment on top of the VM's own.
    #[cfg_attr(feature = "schema", schema(schema_with = crate::schema::env_map))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Fed to the program's standard input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Kill the program (its whole process group) after this long; default 60000.
    #[cfg_attr(feature = "schema", schema(maximum = 3600000))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl ExecRequest {
    pub fn validate(&self) -> crate::Result<()> {
        if self.cmd.is_empty() {
            return Err(ProtoError::EmptyCommand);
        }
        check_timeout(self.timeout_ms)?;
        check_env_keys(&self.env)
    }
}

/// Keys of an env map: non-empty, no `=`, no NUL.
pub(crate) fn check_env_keys(env: &BTreeMap<String, String>) -> crate::Result<()> {
    for k in env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(ProtoError::BadEnv(k.clone()));
        }
    }
    Ok(())
}

/// Outcome of a finished process: the body of `/exec`, and the base of every run response.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecResponse {
    /// Exit status; `128 + signal` when killed by a signal (so a timeout kill reads 137).
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub timed_out: bool,
    /// The out-of-memory killer ended the run (a process of it, and with it the whole
    /// run): the VM's user code asked for more memory than it may have. Absent from
    /// older agents, hence the default.
    #[serde(default)]
    pub oom_killed: bool,
    pub duration_ms: u64,
}

/// `POST /run-ts`, `/run-js`, `/run-python`: exactly one of `code` and `path`
/// (a file under `/workspace`).
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The program's source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// A file in `/workspace` to run instead of `code`.
    #[cfg_attr(feature = "schema", schema(schema_with = crate::schema::opt_workspace_path))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Arguments the program sees.
    #[cfg_attr(feature = "schema", schema(schema_with = crate::schema::no_nul_list))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// `KEY=VALUE` entries; for Deno these are also the only keys `--allow-env` grants.
    #[cfg_attr(feature = "schema", schema(schema_with = crate::schema::env_entries))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Kill the program after this long; default 60000.
    #[cfg_attr(feature = "schema", schema(maximum = 3600000))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Deno only: allow network access.
    #[serde(default)]
    pub allow_net: bool,
}

impl RunRequest {
    pub fn validate(&self) -> crate::Result<()> {
        if self.code.is_some() == self.path.is_some() {
            return Err(ProtoError::CodeOrPath);
        }
        check_timeout(self.timeout_ms)?;
        self.env_pairs().map(|_| ())
    }

    /// Splits `env` into pairs, rejecting entries without a key.
    pub fn env_pairs(&self) -> crate::Result<Vec<(String, String)>> {
        self.env.iter().map(|e| parse_env_entry(e)).collect()
    }
}

/// Parses one `KEY=VALUE` entry.
pub fn parse_env_entry(entry: &str) -> crate::Result<(String, String)> {
    match entry.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(ProtoError::BadEnv(entry.to_string())),
    }
}

pub(crate) fn check_timeout(t: Option<u64>) -> crate::Result<()> {
    match t {
        Some(t) if t > MAX_TIMEOUT_MS => Err(ProtoError::TimeoutTooLarge(t, MAX_TIMEOUT_MS)),
        _ => Ok(()),
    }
}

/// The shape of an uncaught exception in [`RunResponse::error`].
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScriptError {
    pub name: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

/// Body of the run endpoints: the exec outcome plus what the script reported.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunResponse {
    #[serde(flatten)]
    pub exec: ExecResponse,
    /// Value passed to `result.set(...)`, if any.
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    /// The value passed to `result.error(...)` exactly as given (any JSON value; an
    /// `Error`/exception object becomes a [`ScriptError`]), or an uncaught exception as a
    /// [`ScriptError`]. A script that called `result.error` and then ended on its own
    /// exits 1; an explicit exit keeps its own code.
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

/// One line of an NDJSON stream (`?stream=true`): `{"stdout": "..."}`, `{"stderr": "..."}`,
/// and finally `{"exit": {...}}`.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum StreamEvent {
    Stdout(String),
    Stderr(String),
    Exit(RunResponse),
}

/// `POST /firewall/allowlist`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FirewallRequest {
    pub outbound: bool,
    #[serde(default)]
    pub allow: Vec<String>,
}

/// `POST /files/upload` result.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadResponse {
    /// Directory the archive was extracted into, as seen in the guest.
    pub dest: String,
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_events_have_the_documented_shape() {
        let out = serde_json::to_value(StreamEvent::Stdout("hi".into())).unwrap();
        assert_eq!(out, serde_json::json!({"stdout": "hi"}));
        let exit = StreamEvent::Exit(RunResponse {
            exec: ExecResponse {
                exit_code: 3,
                ..Default::default()
            },
            ..Default::default()
        });
        let v = serde_json::to_value(exit).unwrap();
        assert_eq!(v["exit"]["exit_code"], 3);
        assert!(v["exit"]["result"].is_null());
    }

    #[test]
    fn run_request_needs_code_xor_path() {
        let mut r = RunRequest::default();
        assert_eq!(r.validate(), Err(ProtoError::CodeOrPath));
        r.code = Some("1".into());
        assert!(r.validate().is_ok());
        r.path = Some("/workspace/a.ts".into());
        assert_eq!(r.validate(), Err(ProtoError::CodeOrPath));
    }

    #[test]
    fn env_entries_are_checked() {
        let table = [
            ("K=v", true),
            ("K=", true),
            ("K=a=b", true),
            ("=v", false),
            ("novalue", false),
            ("", false),
        ];
        for (e, ok) in table {
            assert_eq!(parse_env_entry(e).is_ok(), ok, "{e:?}");
        }
    }

    #[test]
    fn exec_rejects_unknown_fields_and_huge_timeouts() {
        assert!(serde_json::from_str::<ExecRequest>(r#"{"cmd":"x","bogus":1}"#).is_err());
        let r: ExecRequest =
            serde_json::from_str(r#"{"cmd":"x","timeout_ms":99999999999}"#).unwrap();
        assert!(matches!(
            r.validate(),
            Err(ProtoError::TimeoutTooLarge(_, _))
        ));
    }
}
