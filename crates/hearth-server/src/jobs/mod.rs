//! Jobs: scripts uploaded once, each run as a job in a fresh VM that is destroyed after.
//!
//! - `crate::store::jobs`: scripts and the queue in SQLite. A job is claimed by one
//!   `UPDATE ... RETURNING` that flips `queued` to `running`, so two workers never get the
//!   same job.
//! - [`worker`]: the pool. Each worker claims, boots a VM through [`crate::vms::create_vm`]
//!   (the `POST /v1/vms` path), uploads the script, streams its output into the log,
//!   writes the final status, destroys the VM.
//! - [`logs`]: per-job log files under `$HEARTH_DATA_DIR/jobs/<id>/`, one JSON line per
//!   output chunk so order and stream survive, capped in size.
//! - [`enqueue`], [`cancel`]: what `/v1/jobs` and `/v1/scripts` (in `crate::routes`) ask.
//!
//! Durability: a job is a row before `POST` answers 202, and every status change is
//! written before it is acted on. On start, [`recover`] settles jobs a crash left
//! `running` (`error`, or back to `queued` while retries remain) and destroys their VMs.
//! A graceful stop is no different for a running job (it is not resumed, so it never
//! runs twice unless it asked for retries); queued jobs simply wait for the next start.

pub mod logs;
pub mod worker;

use std::collections::HashMap;

use hearth_api::jobs::{CancelState, JobStatus};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::error::{AppError, Result};
use crate::models::VmState;
use crate::store::jobs::NewJob;
use crate::AppState;

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

/// Queues a job (inline code, or a run of script `script_id`) and wakes a worker.
/// The request was validated (`hearth-api`); the allowlist syntax is `hearth-net`'s.
/// Whether this host can network VMs is known only when the job's VM boots.
pub async fn enqueue(state: &AppState, new: NewJob<'_>, script_id: Option<&str>) -> Result<()> {
    if let Some(n) = &new.params.network {
        crate::network::check_syntax(n)?;
    }
    state.store.insert_job(new, script_id).await?;
    state.jobs.notify.notify_waiters();
    Ok(())
}

/// Cancels a job: a queued one never starts, a running one has its VM destroyed.
pub async fn cancel(state: &AppState, id: &str) -> Result<CancelState> {
    // Each step is one conditional UPDATE; a job that moved on between two steps (a
    // worker claimed it) is caught by the next one, so two rounds always settle it.
    for _ in 0..2 {
        if state.store.cancel_queued(id).await? {
            return Ok(CancelState::Cancelled);
        }
        if state.store.request_cancel(id).await? {
            state.jobs.cancel(id);
            return Ok(CancelState::Cancelling);
        }
        let job = state.store.job(id).await?;
        if job.status.is_final() {
            return Err(AppError::Conflict(format!(
                "job {id} already ended ({})",
                job.status
            )));
        }
    }
    Err(AppError::Conflict(format!(
        "job {id} changed state during the cancel; retry"
    )))
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
