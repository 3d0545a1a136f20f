//! `/v1/jobs`: scripts and inline code run in a fresh VM each, queued and logged.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, ToSchema};

mod logs;

pub use logs::{JobLogsQuery, LogFormat, LogLine, LogStream};

use crate::limits::{Limits, MAX_PAGE, MAX_RETRIES};
use crate::network::NetworkSpec;
use crate::{rules, Language, Timestamp, Validate, ValidationError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    /// Exit code 0.
    Succeeded,
    /// Non-zero exit code.
    Failed,
    TimedOut,
    Cancelled,
    /// Our side failed (VM did not boot, agent lost, server restarted); `error` says what.
    Error,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::TimedOut,
        JobStatus::Cancelled,
        JobStatus::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Error => "error",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown job status {s:?}: \
                     queued|running|succeeded|failed|timed_out|cancelled|error"
                )
            })
    }
}

/// A path relative to `/workspace` for a job's extra file: no leading `/` or `./`,
/// no `..` component, no NUL or line break.
pub const FILE_PATH: &str =
    r"^(?![\s\S]*[\n\r\u2028\u2029])(?!/)(?!\.(/|$))(?!(.*/)?\.\.(/|$))[^\x00]+$";

fn files_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(FILE_PATH)),
        ))
        .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String)))
        .into()
}

/// How to run a job; stored with it. The body of `POST /v1/scripts/{id}/run` (an empty
/// body means all defaults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobParams {
    /// Arguments after the script path.
    #[schema(schema_with = hearth_proto::schema::no_nul_list)]
    #[serde(default)]
    pub args: Vec<String>,
    #[schema(schema_with = hearth_proto::schema::env_map)]
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Default: the server's `jobs.default_timeout_s`.
    #[schema(minimum = 1)]
    pub timeout_s: Option<u64>,
    #[schema(minimum = 1)]
    pub vcpus: Option<u8>,
    #[schema(minimum = 128)]
    pub memory_mib: Option<u32>,
    /// Extra files written into `/workspace` beside the script: relative path -> content.
    #[schema(schema_with = files_schema)]
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Runs again (as a new attempt) when our side failed or the server restarted
    /// mid-run; never after the script itself failed.
    #[schema(maximum = 10)]
    #[serde(default)]
    pub max_retries: u32,
    /// Outbound networking of the job's VM, as for `POST /v1/vms`; absent = no NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSpec>,
}

impl Validate for JobParams {
    /// Rejects at submit time what would make the job fail later anyway.
    fn validate(&self, l: &Limits) -> Result<(), ValidationError> {
        if let Some(value) = self.timeout_s {
            if value == 0 || value > l.max_timeout_s() {
                return Err(ValidationError::TimeoutS {
                    value,
                    max: l.max_timeout_s(),
                });
            }
        }
        rules::vcpus(self.vcpus, l)?;
        rules::memory_mib(self.memory_mib, l)?;
        rules::env_map(&self.env)?;
        rules::no_nul_all("args", &self.args)?;
        for path in self.files.keys() {
            let ok = !path.is_empty()
                && !path.contains('\0')
                && !rules::has_line_break(path)
                && std::path::Path::new(path)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !ok {
                return Err(ValidationError::FilePath { path: path.clone() });
            }
        }
        if self.max_retries > MAX_RETRIES {
            return Err(ValidationError::MaxRetries {
                value: self.max_retries,
            });
        }
        match &self.network {
            Some(n) => n.validate(l),
            None => Ok(()),
        }
    }
}

/// `POST /v1/jobs`: inline code, run like an uploaded script. The run settings repeat
/// [`JobParams`]' fields rather than flattening them in: serde's `flatten` drops
/// `deny_unknown_fields`, and JSON Schema's `additionalProperties` does not see through
/// an `allOf`, so a typo would pass silently either way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    pub language: Language,
    /// The program (at most the server's `jobs.max_script_bytes`, else 413).
    #[schema(min_length = 1)]
    pub code: String,
    /// File name the code gets in `/workspace` (default `main.<ext>`).
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = r"^(?![\s\S]*[\n\r\u2028\u2029])(?!\.\.?$)[^/\x00]+$"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[schema(schema_with = hearth_proto::schema::no_nul_list)]
    #[serde(default)]
    pub args: Vec<String>,
    #[schema(schema_with = hearth_proto::schema::env_map)]
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[schema(minimum = 1)]
    pub timeout_s: Option<u64>,
    #[schema(minimum = 1)]
    pub vcpus: Option<u8>,
    #[schema(minimum = 128)]
    pub memory_mib: Option<u32>,
    #[schema(schema_with = files_schema)]
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    #[schema(maximum = 10)]
    #[serde(default)]
    pub max_retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSpec>,
}

impl CreateJob {
    /// The run settings, as a script run would take them.
    pub fn params(&self) -> JobParams {
        JobParams {
            args: self.args.clone(),
            env: self.env.clone(),
            timeout_s: self.timeout_s,
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            files: self.files.clone(),
            max_retries: self.max_retries,
            network: self.network.clone(),
        }
    }

    /// The file name the code is written to.
    pub fn file_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("main.{}", self.language.extension()))
    }
}

impl Validate for CreateJob {
    fn validate(&self, l: &Limits) -> Result<(), ValidationError> {
        if self.code.is_empty() {
            return Err(ValidationError::EmptyCode);
        }
        if self.code.len() > l.max_script_bytes {
            return Err(ValidationError::ScriptTooLarge {
                len: self.code.len(),
                max: l.max_script_bytes,
            });
        }
        rules::file_name("script name", &self.file_name())?;
        self.params().validate(l)
    }
}

/// A job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    #[schema(format = Uuid)]
    pub id: String,
    /// The script it runs; `null` for inline code.
    pub script_id: Option<String>,
    pub name: String,
    pub language: Language,
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    /// What failed on our side (status `error`), or why the job ended early.
    pub error: Option<String>,
    /// An uncaught exception or `result.error(...)` of the script.
    pub script_error: Option<serde_json::Value>,
    pub queued_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// From start (claimed by a worker) to the final status.
    pub duration_ms: Option<i64>,
    /// From queued to claimed by a worker.
    pub queue_ms: Option<i64>,
    /// Time to boot the job's VM until its agent answered.
    pub vm_create_ms: Option<i64>,
    pub vm_id: Option<String>,
    /// What the script passed to `result.set(...)`.
    pub result: Option<serde_json::Value>,
    /// Runs started so far (more than 1 only after retries).
    pub attempts: i64,
    pub max_retries: i64,
    /// The log hit its size limit and later output was dropped.
    pub log_truncated: bool,
    /// The out-of-memory killer ended the run: the script needed more memory than the
    /// VM gives user code (`memory_mib` minus the guest's reserve).
    pub oom_killed: bool,
}

/// `GET /v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A page position: `QUEUED_AT_MS` `_` `JOB_ID` of the last job of the previous page.
pub const CURSOR: &str = r"^[0-9]{1,18}_[^\x00]+$";

/// Query of `GET /v1/jobs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListJobs {
    /// Only jobs in this status.
    #[param(inline)]
    pub status: Option<JobStatus>,
    /// Only runs of this script.
    pub script_id: Option<String>,
    /// Page size (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,18}_[^\x00]+$")]
    pub cursor: Option<String>,
}

impl ListJobs {
    /// The cursor as `(queued_at_ms, job_id)`, if it is one [`CURSOR`] accepts.
    pub fn parse_cursor(c: &str) -> Option<(i64, &str)> {
        let (at, id) = c.split_once('_')?;
        let ok = (1..=18).contains(&at.len())
            && at.bytes().all(|b| b.is_ascii_digit())
            && !id.is_empty()
            && !id.contains('\0');
        Some((at.parse().ok().filter(|_| ok)?, id))
    }
}

impl Validate for ListJobs {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        rules::range("limit", self.limit, 1, MAX_PAGE)?;
        match &self.cursor {
            Some(c) if ListJobs::parse_cursor(c).is_none() => {
                Err(ValidationError::Cursor { value: c.clone() })
            }
            _ => Ok(()),
        }
    }
}

/// The answer to `POST /v1/jobs` and `POST /v1/scripts/{id}/run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Enqueued {
    #[schema(format = Uuid)]
    pub job_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CancelState {
    /// It had not started and never will.
    Cancelled,
    /// It runs; its VM is being destroyed.
    Cancelling,
}

impl CancelState {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelState::Cancelled => "cancelled",
            CancelState::Cancelling => "cancelling",
        }
    }
}

/// The answer to `POST /v1/jobs/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Cancelled {
    pub job_id: String,
    pub status: CancelState,
}
