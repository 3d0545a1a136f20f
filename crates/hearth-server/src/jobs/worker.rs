//! The worker pool. A worker loops: claim the oldest queued job, run it in a fresh VM,
//! destroy the VM, write the final status. Idle workers sleep until an enqueue wakes
//! them ([`super::JobRuntime::notify`]) or the poll interval passes (jobs enqueued by
//! another process, or a wake-up that raced with a claim).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use hearth_proto::{RunRequest, StreamEvent, WORKSPACE};
use tokio_util::sync::CancellationToken;

use hearth_api::jobs::{JobStatus, LogStream};
use hearth_api::vms::CreateVm;

use super::logs::{log_path, LogWriter};
use super::VM_JOB_KEY;
use crate::error::{AppError, Result};
use crate::models::JobRecord;
use crate::store::jobs::Finish;
use crate::{vms, AppState};

const POLL: Duration = Duration::from_secs(2);
/// How often a running job re-reads its cancel flag (set by another process's API).
const CANCEL_POLL: Duration = Duration::from_secs(1);
/// Slack past the job's timeout for the agent to kill and report before we give up on it.
const REPORT_GRACE: Duration = Duration::from_secs(30);
/// How long a job waits for a boot slot or VM capacity before it fails.
const CAPACITY_WAIT: Duration = Duration::from_secs(600);
/// The `error` of a job the guest's out-of-memory killer ended.
pub const OOM_KILLED: &str =
    "killed by the out-of-memory killer: the script needed more memory than the VM gives it";

/// Starts `jobs.concurrency` workers. Call after [`super::recover`].
pub fn start_workers(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    // host/pid-nonce: names the process holding a job (see `recover` for several hosts).
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let nonce = &uuid::Uuid::new_v4().to_string()[..8];
    let host = format!("{}/{}-{nonce}", hostname.trim(), std::process::id());
    (0..state.config.jobs.concurrency)
        .map(|i| tokio::spawn(worker_loop(state.clone(), format!("{host}/w{i}"))))
        .collect()
}

async fn worker_loop(state: AppState, me: String) {
    loop {
        // Registered before the claim so an enqueue between "nothing queued" and the
        // wait below still wakes this worker.
        let woken = state.jobs.notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match state.store.claim_job(&me).await {
            Ok(Some(job)) => {
                // In its own task so a panic fails this job, not the worker.
                let id = job.id.clone();
                let run = tokio::spawn(run_job(state.clone(), me.clone(), job));
                if let Err(e) = run.await {
                    tracing::error!(job = %id, error = %e, "job task failed");
                    let f = Finish {
                        error: Some(format!("internal error running the job: {e}")),
                        ..Default::default()
                    };
                    let _ = state.store.finish_job(&id, &me, JobStatus::Error, &f).await;
                    state.jobs.unregister(&id);
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(worker = %me, error = %e, "claiming a job"),
        }
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// How a run ended.
struct Outcome {
    status: JobStatus,
    finish: Finish,
}

impl Outcome {
    fn of(status: JobStatus, error: impl Into<String>) -> Outcome {
        Outcome {
            status,
            finish: Finish {
                error: Some(error.into()),
                ..Default::default()
            },
        }
    }
}

async fn run_job(state: AppState, me: String, job: JobRecord) {
    let (state, me) = (&state, me.as_str());
    let token = state.jobs.register(&job.id);
    tracing::info!(job = %job.id, worker = %me, attempt = job.attempts, "job started");
    let mut vm_id = None;
    // Checked after registering: a cancel that flagged the row before the token existed
    // is seen here, one that comes later trips the token.
    let mut out = match state.store.cancel_requested(&job.id).await {
        Ok(true) => Outcome::of(JobStatus::Cancelled, "cancelled"),
        _ => execute(state, &job, &token, &mut vm_id).await,
    };
    if out.status == JobStatus::Error && job.attempts <= job.max_retries {
        let msg = out.finish.error.clone().unwrap_or_default();
        match state.store.requeue_job(&job.id, me, &msg).await {
            Ok(true) => {
                tracing::warn!(job = %job.id, error = %msg, "job failed on our side; retrying");
                destroy(state, vm_id.as_deref()).await;
                state.jobs.unregister(&job.id);
                state.jobs.notify.notify_waiters();
                return;
            }
            Ok(false) => {}
            Err(e) => out.finish.error = Some(format!("{msg}; requeue failed: {e}")),
        }
    }
    // Destroy before recording the end: a final status then promises the VM is gone, so
    // a client (or a server stopping right after) never sees a finished job whose VM
    // still runs. A crash in between leaves the job `running`, which recovery handles.
    destroy(state, vm_id.as_deref()).await;
    match state
        .store
        .finish_job(&job.id, me, out.status, &out.finish)
        .await
    {
        Ok(true) => tracing::info!(job = %job.id, status = %out.status, "job finished"),
        Ok(false) => tracing::warn!(job = %job.id, "job was taken from this worker"),
        Err(e) => tracing::error!(job = %job.id, error = %e, "recording the job's end"),
    }
    state.jobs.unregister(&job.id);
}

async fn destroy(state: &AppState, vm_id: Option<&str>) {
    if let Some(id) = vm_id {
        if let Err(e) = vms::destroy_vm(state, id).await {
            tracing::error!(vm = %id, error = %e, "destroying a job's VM");
        }
    }
}

/// Boots, uploads, runs. Sets `vm_id` as soon as a VM exists so the caller destroys it
/// whatever happens after.
async fn execute(
    state: &AppState,
    job: &JobRecord,
    token: &CancellationToken,
    vm_id: &mut Option<String>,
) -> Outcome {
    let timeout_s = job
        .params
        .timeout_s
        .unwrap_or(state.config.jobs.default_timeout_s);
    let code = match state.store.job_code(&job.id).await {
        Ok(c) => c,
        Err(e) => return Outcome::of(JobStatus::Error, e.to_string()),
    };
    let started = Instant::now();
    let vm = match boot(state, job, timeout_s, token).await {
        Ok(Some(vm)) => vm,
        Ok(None) => return Outcome::of(JobStatus::Cancelled, "cancelled"),
        Err(e) => return Outcome::of(JobStatus::Error, format!("VM did not boot: {e}")),
    };
    *vm_id = Some(vm.id.clone());
    let create_ms = started.elapsed().as_millis() as i64;
    if let Err(e) = state.store.set_job_vm(&job.id, &vm.id, create_ms).await {
        return Outcome::of(JobStatus::Error, e.to_string());
    }
    if token.is_cancelled() {
        return Outcome::of(JobStatus::Cancelled, "cancelled");
    }
    match run_in_vm(state, job, &vm.id, &code, timeout_s, token).await {
        Ok(out) => out,
        Err(e) => Outcome::of(JobStatus::Error, format!("agent: {e}")),
    }
}

/// A VM through the `POST /v1/vms` path. Waits (cancellably) while boot slots or VM
/// capacity are taken; `None` when cancelled meanwhile.
async fn boot(
    state: &AppState,
    job: &JobRecord,
    timeout_s: u64,
    token: &CancellationToken,
) -> Result<Option<crate::models::VmRecord>> {
    let p = &job.params;
    // The TTL is a backstop for a worker that died without destroying: the VM goes
    // away by itself some time after the job's own deadline.
    let ttl = timeout_s + state.config.defaults.boot_timeout_s + 300;
    let req = CreateVm {
        image: None,
        vcpus: p.vcpus,
        memory_mib: p.memory_mib,
        env: BTreeMap::new(),
        ttl_s: Some(ttl.min(state.config.limits.max_ttl_s)),
        // The default applies; the run holds its VM busy, so it is never paused mid-job.
        idle_timeout_s: None,
        metadata: BTreeMap::from([(VM_JOB_KEY.to_string(), job.id.clone())]),
        network: p.network.clone(),
    };
    let deadline = Instant::now() + CAPACITY_WAIT;
    loop {
        let err = match vms::create_vm(state, req.clone()).await {
            Ok(vm) => return Ok(Some(vm)),
            Err(e) => e,
        };
        // Full now, free later: boot slots (429) and the max_vms limit (409 naming it).
        let transient = matches!(&err, AppError::TooManyRequests(_))
            || matches!(&err, AppError::Conflict(m) if m.contains("max_vms"));
        if !transient || Instant::now() > deadline {
            return Err(err);
        }
        tokio::select! {
            _ = token.cancelled() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

async fn run_in_vm(
    state: &AppState,
    job: &JobRecord,
    vm_id: &str,
    code: &[u8],
    timeout_s: u64,
    token: &CancellationToken,
) -> Result<Outcome> {
    let (_, handle, _busy) = vms::running_handle(state, vm_id).await?;
    let agent = handle.agent();
    let name = script_file_name(job);
    let archive = workspace_archive(&name, code, &job.params.files)?;
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(archive)) });
    agent
        .upload(WORKSPACE, body)
        .await
        .map_err(crate::error::from_vmm)?;

    let path = log_path(&state.config.data_dir, &job.id);
    let mut log = LogWriter::open(&path, state.config.jobs.max_log_bytes).await?;
    if job.attempts > 1 {
        log.attempt(job.attempts).await?;
    }
    let req = RunRequest {
        code: None,
        path: Some(format!("{WORKSPACE}/{name}")),
        args: job.params.args.clone(),
        env: job
            .params
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        timeout_ms: Some(timeout_s * 1000),
        allow_net: false,
    };
    let mut events = agent
        .run_stream(job.language, &req)
        .await
        .map_err(crate::error::from_vmm)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_s) + REPORT_GRACE;
    let mut poll = tokio::time::interval(CANCEL_POLL);
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = token.cancelled() => return Ok(ended(JobStatus::Cancelled, "cancelled", &log)),
            _ = poll.tick() => {
                if state.store.cancel_requested(&job.id).await.unwrap_or(false) {
                    return Ok(ended(JobStatus::Cancelled, "cancelled", &log));
                }
                continue;
            }
            _ = tokio::time::sleep_until(deadline) => {
                let msg = "the agent did not report the end of the run in time";
                return Ok(ended(JobStatus::TimedOut, msg, &log));
            }
        };
        match ev {
            Some(Ok(StreamEvent::Stdout(d))) => log.chunk(LogStream::Stdout, d).await?,
            Some(Ok(StreamEvent::Stderr(d))) => log.chunk(LogStream::Stderr, d).await?,
            Some(Ok(StreamEvent::Exit(r))) => {
                let status = if r.exec.timed_out {
                    JobStatus::TimedOut
                } else if r.exec.exit_code == 0 {
                    JobStatus::Succeeded
                } else {
                    JobStatus::Failed
                };
                let error = if r.exec.timed_out {
                    Some(format!("killed after the timeout of {timeout_s} s"))
                } else if r.exec.oom_killed {
                    Some(OOM_KILLED.to_string())
                } else {
                    None
                };
                return Ok(Outcome {
                    status,
                    finish: Finish {
                        exit_code: (!r.exec.timed_out).then_some(r.exec.exit_code),
                        error,
                        script_error: r.error,
                        result: r.result,
                        log_truncated: log.truncated,
                        oom_killed: r.exec.oom_killed,
                    },
                });
            }
            Some(Err(e)) => {
                let msg = format!("agent connection lost: {e}");
                return Ok(ended(JobStatus::Error, &msg, &log));
            }
            None => {
                let msg = "agent connection lost before the run ended";
                return Ok(ended(JobStatus::Error, msg, &log));
            }
        }
    }
}

fn ended(status: JobStatus, error: &str, log: &LogWriter) -> Outcome {
    let mut out = Outcome::of(status, error);
    out.finish.log_truncated = log.truncated;
    out
}

/// The script keeps its uploaded name (imports of sibling files resolve), unless that
/// would not be a plain file name.
fn script_file_name(job: &JobRecord) -> String {
    if hearth_api::scripts::check_name(&job.name).is_ok() && !job.name.starts_with('.') {
        job.name.clone()
    } else {
        format!("main.{}", job.language.extension())
    }
}

/// tar.gz of the script (executable) and the job's extra files, extracted by the agent
/// into `/workspace` under its archive path policy.
fn workspace_archive(name: &str, code: &[u8], files: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let io = |e| AppError::io("packing the job's files", e);
    let mut dirs = std::collections::BTreeSet::new();
    for path in files.keys() {
        let mut p = std::path::Path::new(path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_path_buf());
            p = d.parent();
        }
    }
    for d in dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        tar.append_data(&mut h, &d, std::io::empty()).map_err(io)?;
    }
    let mut add = |path: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, path, data)
    };
    add(name, code, 0o755).map_err(io)?;
    for (path, content) in files {
        add(path, content.as_bytes(), 0o644).map_err(io)?;
    }
    tar.into_inner().and_then(|gz| gz.finish()).map_err(io)
}
