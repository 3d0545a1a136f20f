//! `hearth bench create`: `POST /v1/vms` until it answers with a running VM, cold (every
//! create boots) and pooled (`HEARTH_POOL_SIZE=1`; each create waits until a warm VM is
//! ready, so every one is a pool hit), each as a multiple of `exec true` through the API
//! measured in the cold mode's VMs in the same run. One fresh server per mode.
//!
//! The first exec after a create is shown on its own: after a pooled create the pool
//! boots its replacement at once, and under TCG that boot takes the CPU the first calls
//! would have had.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use hearth_api::exec::{ExecRequest, ExecResponse};
use hearth_api::vms::{CreateVm, Vm, VmState};
use serde_json::json;

use crate::bench_server::{wait_pool, BenchServer};
use crate::client::Client;
use crate::cmd_run;

#[derive(clap::Args)]
pub struct Args {
    /// Creates per mode (one more, first and not counted, warms the page cache).
    #[arg(long, default_value_t = 10)]
    n: usize,
    #[arg(long)]
    json: bool,
}

/// `exec true` calls per VM.
const EXECS: usize = 5;

struct Mode {
    create_ms: Vec<f64>,
    /// The first `exec true` after each create.
    first_exec_ms: Vec<f64>,
    /// The others.
    exec_ms: Vec<f64>,
    /// Pool hits as `/metrics` counts them, the uncounted first create included.
    hits: u64,
}

pub async fn main(args: Args) -> anyhow::Result<i32> {
    let n = args.n.max(1);
    let cold = mode(0, n).await?;
    let pooled = mode(1, n).await?;
    let exec_med = stats(&cold.exec_ms).0;
    let rows = [
        ("create cold", &cold.create_ms),
        ("create pooled", &pooled.create_ms),
        ("exec true", &cold.exec_ms),
        ("1st exec, cold", &cold.first_exec_ms),
        ("1st exec, pooled", &pooled.first_exec_ms),
        ("exec, pooled", &pooled.exec_ms),
    ];
    if args.json {
        let mut out = serde_json::Map::new();
        for (name, xs) in rows {
            let (median, p90) = stats(xs);
            out.insert(
                name.into(),
                json!({"n": xs.len(), "median_ms": median, "p90_ms": p90,
                       "x_exec_true": median / exec_med}),
            );
        }
        out.insert("pool_hits".into(), json!(pooled.hits));
        out.insert("pooled_creates".into(), json!(n + 1));
        println!("{}", serde_json::Value::Object(out));
    } else {
        println!("create -> running VM (POST /v1/vms), n={n} per mode");
        println!(
            "{:<16} {:>10} {:>10} {:>12}",
            "", "median_ms", "p90_ms", "x exec true"
        );
        for (name, xs) in rows {
            let (median, p90) = stats(xs);
            println!(
                "{name:<17} {median:>10.1} {p90:>10.1} {:>12.2}",
                median / exec_med
            );
        }
        println!("pool hits: {} of {} pooled creates", pooled.hits, n + 1);
    }
    Ok(0)
}

/// n + 1 creates on a server with `pool_size` warm VMs of the default spec.
async fn mode(pool_size: u32, n: usize) -> anyhow::Result<Mode> {
    let image = cmd_run::default_image_dir();
    let data = std::env::temp_dir().join(format!(
        "hearth-bench-create-{}-{pool_size}",
        std::process::id()
    ));
    let env = [("HEARTH_POOL_SIZE", pool_size.to_string())];
    let server = BenchServer::start(&data, &image, &env)?;
    let res = run(&server.client, pool_size > 0, n).await;
    server.stop().await;
    let m = res.with_context(|| format!("data dir kept: {}", data.display()))?;
    let _ = std::fs::remove_dir_all(&data);
    Ok(m)
}

async fn run(client: &Client, pooled: bool, n: usize) -> anyhow::Result<Mode> {
    let mut m = Mode {
        create_ms: vec![],
        first_exec_ms: vec![],
        exec_ms: vec![],
        hits: 0,
    };
    for i in 0..=n {
        if pooled {
            wait_pool(client, 1).await?;
        }
        let t = Instant::now();
        let vm: Vm = client.post("/v1/vms", &CreateVm::default()).await?;
        let took = ms(t.elapsed());
        ensure!(vm.state == VmState::Running, "created VM is {}", vm.state);
        let exec = ExecRequest {
            cmd: "true".into(),
            ..Default::default()
        };
        let mut execs = vec![];
        for _ in 0..EXECS {
            let t = Instant::now();
            let r: ExecResponse = client
                .post(&format!("/v1/vms/{}/exec", vm.id), &exec)
                .await?;
            ensure!(r.exit_code == 0, "exec true: {r:?}");
            execs.push(ms(t.elapsed()));
        }
        client.delete(&format!("/v1/vms/{}", vm.id)).await?;
        if i > 0 {
            m.create_ms.push(took);
            m.first_exec_ms.push(execs[0]);
            m.exec_ms.extend(&execs[1..]);
        }
    }
    m.hits = pool_hits(client).await?;
    Ok(m)
}

async fn pool_hits(client: &Client) -> anyhow::Result<u64> {
    let text = client
        .send(client.request(reqwest::Method::GET, "/metrics"))
        .await?
        .text()
        .await?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("hearth_pool_claims_total{result=\"hit\"} "))
        .context("no pool hits in /metrics")?;
    Ok(line.trim().parse()?)
}

/// (median, p90).
fn stats(xs: &[f64]) -> (f64, f64) {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    let pick = |q: f64| xs[((xs.len() as f64 - 1.0) * q).round() as usize];
    (pick(0.5), pick(0.9))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
