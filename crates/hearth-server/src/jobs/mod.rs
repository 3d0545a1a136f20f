//! Jobs: scripts uploaded once, each run as a job in a fresh VM that is destroyed after.
//!
//! - [`store`]: scripts and the queue in SQLite. A job is claimed by one `UPDATE ...
//!   RETURNING` that flips `queued` to `running`, so two workers never get the same job.
//! - [`worker`]: the pool. Each worker claims, boots a VM through [`crate::vms::create_vm`]
//!   (the `POST /v1/vms` path), uploads the script, streams its output into the log,
//!   writes the final status, destroys the VM.
//! - [`logs`]: per-job log files under `$HEARTH_DATA_DIR/jobs/<id>/`, one JSON line per
//!   output chunk so order and stream survive, capped in size.
//! - [`scripts`], [`routes`]: `/v1/scripts` and `/v1/jobs`.
//!
//! Durability: a job is a row before `POST` answers 202, and every status change is
//! written before it is acted on. On start, [`recover`] settles jobs a crash left
//! `running` (`error`, or back to `queued` while retries remain) and destroys their VMs.
//! A graceful stop is no different for a running job (it is not resumed, so it never
//! runs twice unless it asked for retries); queued jobs simply wait for the next start.

pub mod logs;
pub mod routes;
pub mod scripts;
pub mod store;
pub mod worker;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use hearth_proto::Language;
use serde::{Deserialize, Serialize, Serializer};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::error::{AppError, Result};
use crate::models::{iso, VmState};
use crate::AppState;

pub use routes::routes;
pub use worker::start_workers;

/// VM metadata key naming the job a VM was made for; [`recover`] destroys such VMs.
pub const VM_JOB_KEY: &str = "hearth.job";

/// `[jobs]` in the config file; `HEARTH_JOB_*` env vars override.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Workers, i.e. jobs running at once. 0 queues jobs but runs none.
    pub concurrency: u32,
    /// Largest script (upload or inline code).
    pub max_script_bytes: usize,
    /// Largest log file per job; output beyond it is dropped and the job flagged.
    pub max_log_bytes: u64,
    /// Timeout of a job that names none.
    pub default_timeout_s: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            concurrency: 2,
            max_script_bytes: 1024 * 1024,
            max_log_bytes: 10 * 1024 * 1024,
            default_timeout_s: 300,
        }
    }
}

/// In-memory side of the queue: the wake-up for idle workers and the cancel switches
/// of the jobs this process runs.
#[derive(Default)]
pub struct JobRuntime {
    pub notify: tokio::sync::Notify,
    running: std::sync::Mutex<HashMap<String, CancellationToken>>,
}

impl JobRuntime {
    fn register(&self, id: &str) -> CancellationToken {
        let t = CancellationToken::new();
        self.lock().insert(id.to_string(), t.clone());
        t
    }
    fn unregister(&self, id: &str) {
        self.lock().remove(id);
    }
    /// Trips the cancel switch of a job running in this process, if it is.
    pub fn cancel(&self, id: &str) {
        if let Some(t) = self.lock().get(id) {
            t.cancel();
        }
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = AppError;
    fn from_str(s: &str) -> Result<Self> {
        JobStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                AppError::Unprocessable(format!(
                    "unknown job status {s:?}: queued|running|succeeded|failed|timed_out|cancelled|error"
                ))
            })
    }
}

/// How to run a job; stored with it as JSON. Body of `POST /v1/scripts/{id}/run`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    /// Arguments after the script path.
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Default: `jobs.default_timeout_s`.
    pub timeout_s: Option<u64>,
    pub vcpus: Option<u8>,
    pub memory_mib: Option<u32>,
    /// Extra files written into `/workspace` beside the script: relative path -> content.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Runs again (as a new attempt) when our side failed or the server restarted
    /// mid-run; never after the script itself failed. Default 0.
    #[serde(default)]
    pub max_retries: u32,
    /// Outbound networking of the job's VM, as for `POST /v1/vms`; absent = no NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::models::NetworkSpec>,
}

/// Body of `POST /v1/jobs`: inline code, run like an uploaded script.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InlineJob {
    /// `sh`, `python`, `ts` or `js`.
    pub language: String,
    pub code: String,
    /// File name the code gets in `/workspace` (default `main.<ext>`).
    pub name: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub timeout_s: Option<u64>,
    pub vcpus: Option<u8>,
    pub memory_mib: Option<u32>,
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    #[serde(default)]
    pub max_retries: u32,
    pub network: Option<crate::models::NetworkSpec>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScriptRecord {
    pub id: String,
    pub name: String,
    #[schema(value_type = String)]
    pub language: Language,
    pub size: i64,
    pub sha256: String,
    #[serde(serialize_with = "ser_ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

/// A job as stored and as returned by `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobRecord {
    pub id: String,
    pub script_id: Option<String>,
    pub name: String,
    #[schema(value_type = String)]
    pub language: Language,
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    /// What failed on our side (status `error`), or why the job ended early.
    pub error: Option<String>,
    /// An uncaught exception or `result.error(...)` of the script.
    #[schema(value_type = Option<Object>)]
    pub script_error: Option<serde_json::Value>,
    #[serde(serialize_with = "ser_ts")]
    #[schema(value_type = String, format = DateTime)]
    pub queued_at: i64,
    #[serde(serialize_with = "ser_opt_ts")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<i64>,
    #[serde(serialize_with = "ser_opt_ts")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<i64>,
    /// From start (claimed by a worker) to the final status.
    pub duration_ms: Option<i64>,
    /// From queued to claimed by a worker.
    pub queue_ms: Option<i64>,
    /// Time to boot the job's VM until its agent answered.
    pub vm_create_ms: Option<i64>,
    pub vm_id: Option<String>,
    /// What the script passed to `result.set(...)`.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// Runs started so far (more than 1 only after retries).
    pub attempts: i64,
    pub max_retries: i64,
    pub log_truncated: bool,
    /// The out-of-memory killer ended the run: the script needed more memory than the
    /// VM gives user code (`memory_mib` minus the guest's reserve).
    pub oom_killed: bool,
    #[serde(skip)]
    pub params: RunParams,
    #[serde(skip)]
    pub claimed_by: Option<String>,
}

fn ser_ts<S: Serializer>(ms: &i64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&iso(*ms))
}

fn ser_opt_ts<S: Serializer>(ms: &Option<i64>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&iso(*ms)),
        None => s.serialize_none(),
    }
}

/// Settles what a crash (or any stop) left behind, before workers start: jobs still
/// `running` become `error` ("server restarted") or go back to `queued` while retries
/// remain, and every live VM made for a job is destroyed. Reconcile has re-adopted such
/// VMs by then (their processes outlive the server), so they are destroyed through their
/// owners like any other; no worker is running yet, so none of them is still in use.
///
/// With one SQLite file per host every `running` job is this host's. On a shared
/// PostgreSQL queue (several hosts) this must only take jobs whose `claimed_by` names
/// this host, or jobs whose worker stopped renewing a lease (a `heartbeat_at` column),
/// never another live host's jobs.
pub async fn recover(state: &AppState) -> Result<()> {
    let (mut requeued, mut errored, mut vms) = (0, 0, 0);
    for job in state.store.jobs_in_status(JobStatus::Running).await? {
        if job.attempts <= job.max_retries {
            state.store.requeue_after_restart(&job.id).await?;
            requeued += 1;
        } else {
            let msg = "server restarted while the job was running";
            state.store.fail_after_restart(&job.id, msg).await?;
            errored += 1;
        }
    }
    for vm in state.store.list_vms(&VmState::LIVE).await? {
        if vm.metadata.contains_key(VM_JOB_KEY) {
            if let Err(e) = crate::vms::destroy_vm(state, &vm.id).await {
                tracing::warn!(vm = %vm.id, error = %e, "destroying a job VM left by a stop");
            }
            vms += 1;
        }
    }
    tracing::info!(requeued, errored, vms, "recovered jobs");
    Ok(())
}

/// Checks a script or file name: one path component, no NUL, not too long.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 255
        || name.contains(['/', '\0'])
        || name == "."
        || name == ".."
    {
        return Err(AppError::Unprocessable(format!(
            "invalid script name {name:?}: one file name, no '/', at most 255 bytes"
        )));
    }
    Ok(())
}
