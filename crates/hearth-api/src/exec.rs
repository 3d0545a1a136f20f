//! Calls into a running VM: `POST /v1/vms/{id}/exec` and `/run-ts|js|python`. The
//! bodies are the guest agent's own (`hearth-proto`), passed through after the server's
//! checks; `?stream=true` answers with NDJSON [`StreamLine`]s instead.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use hearth_proto::{
    ErrorBody, ExecRequest, ExecResponse, RunRequest, RunResponse, ScriptError, StreamEvent,
};

use crate::limits::Limits;
use crate::{rules, Validate, ValidationError};

/// Query of the exec and run routes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Answer with NDJSON: `{"stdout"}` / `{"stderr"}` events as the program writes,
    /// then one `{"exit"}` (or `{"error"}` if the call failed midway).
    #[serde(default)]
    pub stream: bool,
}

impl Validate for StreamQuery {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        Ok(())
    }
}

/// One line of a streamed call: an agent event, or the error that ended the stream
/// (the status line, 200, went out before it happened).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StreamLine {
    Event(StreamEvent),
    Failed(ErrorBody),
}

/// How a run's `error` reads to a person: `Name: message` for an uncaught exception (a
/// [`ScriptError`]), else the JSON value the script gave `result.error`.
pub fn describe_script_error(e: &serde_json::Value) -> String {
    match serde_json::from_value::<ScriptError>(e.clone()) {
        Ok(x) => format!("{}: {}", x.name, x.message),
        Err(_) => e.to_string(),
    }
}

impl Validate for ExecRequest {
    fn validate(&self, l: &Limits) -> Result<(), ValidationError> {
        if self.cmd.is_empty() {
            return Err(ValidationError::EmptyCommand);
        }
        rules::no_nul("cmd", &self.cmd)?;
        rules::no_nul_all("args", self.args.iter().flatten())?;
        if let Some(cwd) = &self.cwd {
            rules::workspace_path("cwd", cwd)?;
        }
        rules::env_map(&self.env)?;
        rules::timeout_ms(self.timeout_ms, l)
    }
}

impl Validate for RunRequest {
    fn validate(&self, l: &Limits) -> Result<(), ValidationError> {
        if self.code.is_some() == self.path.is_some() {
            return Err(ValidationError::CodeXorPath);
        }
        if let Some(path) = &self.path {
            rules::workspace_path("path", path)?;
        }
        rules::no_nul_all("args", &self.args)?;
        for entry in &self.env {
            if hearth_proto::parse_env_entry(entry).is_err() || entry.contains('\0') {
                return Err(ValidationError::EnvEntry {
                    entry: entry.clone(),
                });
            }
        }
        rules::timeout_ms(self.timeout_ms, l)
    }
}
