//! `GET /v1/jobs/{id}/logs`: its query and the lines of its `ndjson` format.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::limits::Limits;
use crate::{Validate, ValidationError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// The output as produced, stdout and stderr interleaved.
    #[default]
    Text,
    /// One [`LogLine`] per chunk.
    Ndjson,
}

/// Query of `GET /v1/jobs/{id}/logs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobLogsQuery {
    /// Keep the response open and stream new output until the job ends.
    #[serde(default)]
    pub follow: bool,
    /// Only this stream (default both, interleaved as produced).
    #[param(inline)]
    pub stream: Option<LogStream>,
    /// Default `text`.
    #[param(inline)]
    pub format: Option<LogFormat>,
}

impl Validate for JobLogsQuery {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        Ok(())
    }
}

/// One line of a job log in `ndjson` format: an output chunk, the start of a retry
/// (`attempt`), or the mark that the log hit its size limit (`truncated`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<LogStream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}
