//! `hearth bench jobs`: job throughput and per-job overhead on real VMs. For each worker
//! count a fresh `hearth serve` (this binary, loopback, temp data dir, the default
//! image) gets `--jobs` small shell jobs at once; we time until all are done. The
//! servers' own figures give the overheads: `queue_ms` (queued to claimed by a worker)
//! and `vm_create_ms` (boot until the agent answers). With `--pool N` (default 2) each
//! level runs again on a server keeping N warm VMs (`HEARTH_POOL_SIZE`), full when the
//! jobs are submitted: jobs/min with and without the pool, in one run.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hearth_api::jobs::{CreateJob, Enqueued, Job, JobStatus};
use hearth_api::Language;
use serde_json::json;

use crate::bench_server::{wait_pool, BenchServer};
use crate::cmd_run;

#[derive(clap::Args)]
pub struct Args {
    /// Jobs per concurrency level.
    #[arg(long, default_value_t = 6)]
    jobs: usize,
    /// Worker counts to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    levels: Vec<u32>,
    /// Warm VMs for the pooled pass of each level; 0 skips it.
    #[arg(long, default_value_t = 2)]
    pool: u32,
    #[arg(long)]
    json: bool,
}

/// The job: as small as a job gets, so what is measured is our overhead.
const CODE: &str = "echo hello from a job";

pub async fn main(args: Args) -> anyhow::Result<i32> {
    let image = cmd_run::default_image_dir();
    let mut rows = vec![];
    let mut idle = None;
    let pools = if args.pool > 0 {
        vec![0, args.pool]
    } else {
        vec![0]
    };
    let runs: Vec<(u32, u32)> = (args.levels.iter())
        .flat_map(|&c| pools.iter().map(move |&p| (c, p)))
        .collect();
    for (i, (c, pool)) in runs.into_iter().enumerate() {
        let data = std::env::temp_dir().join(format!(
            "hearth-bench-jobs-{}-{c}-{pool}",
            std::process::id()
        ));
        let server = BenchServer::start(
            &data,
            &image,
            &[
                ("HEARTH_JOB_CONCURRENCY", c.to_string()),
                ("HEARTH_MAX_CONCURRENT_BOOTS", c.max(4).to_string()),
                ("HEARTH_POOL_SIZE", pool.to_string()),
            ],
        )?;
        let res = async {
            if pool > 0 {
                wait_pool(&server.client, pool).await?;
            }
            if i == 0 {
                // One at a time on an idle pool: pure queue-to-start and boot overhead
                // (the first also warms the page cache and is not counted).
                let mut solo = vec![];
                for _ in 0..3 {
                    let id = server.submit().await?;
                    solo.push(server.wait(&id).await?);
                }
                idle = Some(solo.split_off(1));
            }
            let started = Instant::now();
            let mut ids = vec![];
            for _ in 0..args.jobs.max(1) {
                ids.push(server.submit().await?);
            }
            let mut jobs = vec![];
            for id in &ids {
                jobs.push(server.wait(id).await?);
            }
            anyhow::Ok((started.elapsed(), jobs))
        }
        .await;
        server.stop().await;
        // On failure the dir stays: its server.log says why.
        let (wall, jobs) = res.with_context(|| format!("data dir kept: {}", data.display()))?;
        let _ = std::fs::remove_dir_all(&data);
        rows.push((c, pool, wall, jobs));
    }
    report(args.json, &rows, idle.as_deref().unwrap_or_default());
    Ok(0)
}

fn field(jobs: &[Job], f: impl Fn(&Job) -> Option<i64>) -> Vec<f64> {
    jobs.iter().filter_map(|j| f(j).map(|v| v as f64)).collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn report(as_json: bool, rows: &[(u32, u32, Duration, Vec<Job>)], idle: &[Job]) {
    let idle_queue = median(field(idle, |j| j.queue_ms));
    let idle_vm = median(field(idle, |j| j.vm_create_ms));
    let mut levels = vec![];
    if !as_json {
        println!(
            "workers  pool  jobs  wall_s  jobs/min  queue_ms(med)  vm_create_ms(med)  duration_ms(med)"
        );
    }
    for (c, pool, wall, jobs) in rows {
        let per_min = jobs.len() as f64 / wall.as_secs_f64() * 60.0;
        let (q, vm, d) = (
            median(field(jobs, |j| j.queue_ms)),
            median(field(jobs, |j| j.vm_create_ms)),
            median(field(jobs, |j| j.duration_ms)),
        );
        if as_json {
            levels.push(
                json!({"concurrency": c, "pool": pool, "jobs": jobs.len(), "wall_s": wall.as_secs_f64(),
                "jobs_per_min": per_min, "median_queue_ms": q, "median_vm_create_ms": vm,
                "median_duration_ms": d}),
            );
        } else {
            println!(
                "{c:>7}  {pool:>4}  {:>4}  {:>6.1}  {per_min:>8.1}  {q:>13.0}  {vm:>17.0}  {d:>16.0}",
                jobs.len(),
                wall.as_secs_f64()
            );
        }
    }
    if as_json {
        let v = json!({"levels": levels, "idle_median_queue_to_start_ms": idle_queue,
            "idle_median_vm_create_ms": idle_vm, "idle_samples": idle.len()});
        println!("{v}");
    } else {
        println!(
            "overhead per job on an idle pool (n={}): queue-to-start median {idle_queue:.0} ms, \
             VM create median {idle_vm:.0} ms",
            idle.len()
        );
        println!("(queue_ms under load includes waiting for a free worker)");
    }
}

impl BenchServer {
    async fn submit(&self) -> anyhow::Result<String> {
        let job = CreateJob {
            language: Language::Sh,
            code: CODE.into(),
            name: None,
            args: vec![],
            env: Default::default(),
            timeout_s: None,
            vcpus: None,
            memory_mib: None,
            files: Default::default(),
            max_retries: 0,
            network: None,
        };
        let r: Enqueued = self.client.post("/v1/jobs", &job).await?;
        Ok(r.job_id)
    }

    async fn wait(&self, id: &str) -> anyhow::Result<Job> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let j: Job = self.client.get(&format!("/v1/jobs/{id}")).await?;
            match j.status {
                JobStatus::Succeeded => return Ok(j),
                JobStatus::Queued | JobStatus::Running if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                status => bail!("bench job {id} did not succeed: {status}: {j:?}"),
            }
        }
    }
}
