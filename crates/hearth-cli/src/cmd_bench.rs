//! `hearth bench boot|exec|upload|jobs|create`: performance figures from real VMs of the
//! default image.
use std::time::{Duration, Instant};

use hearth_proto::{ExecRequest, AGENT_PORT};
use serde_json::json;

use crate::cmd_run;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Boot N VMs one after the other: VMM start to agent ready, and idle host RSS.
    Boot {
        #[arg(long, default_value_t = 10)]
        n: usize,
        #[arg(long)]
        json: bool,
        /// Boot this image instead of the default one (say, a template, to compare).
        #[arg(long, default_value = "default")]
        image: String,
    },
    /// In one VM: N `true` execs through the agent vs N raw vsock echo round trips.
    Exec {
        #[arg(long, default_value_t = 100)]
        n: usize,
        #[arg(long)]
        json: bool,
    },
    /// Streams MIB MiB of incompressible data into a VM's workspace as a plain tar and as
    /// a tar.gz, next to the guest's own disk speed (`dd` with fsync) in the same VM.
    Upload {
        #[arg(long, default_value_t = 100)]
        mib: usize,
        #[arg(long)]
        json: bool,
    },
    /// Jobs per minute at 1, 2 and 4 workers, and the overhead per job (queue, VM create).
    Jobs(crate::cmd_bench_jobs::Args),
    /// Create to running VM through the API, cold and from a warm pool, against `exec true`.
    Create(crate::cmd_bench_create::Args),
}

pub async fn main(cmd: Command) -> anyhow::Result<i32> {
    let image = cmd_run::default_image_dir();
    match cmd {
        Command::Jobs(a) => return crate::cmd_bench_jobs::main(a).await,
        Command::Create(a) => return crate::cmd_bench_create::main(a).await,
        Command::Boot { n, json, image } => {
            let image = cmd_run::image_dir(&image)?;
            let mut boot = Vec::with_capacity(n);
            let mut rss = Vec::with_capacity(n);
            for _ in 0..n.max(1) {
                let spec = cmd_run::spec_for(&image, 1, 512)?;
                let (vm, took) = cmd_run::boot(&spec).await?;
                // Idle: let the guest settle after boot before reading RSS.
                tokio::time::sleep(Duration::from_millis(500)).await;
                rss.push(vm.rss_kib() as f64);
                boot.push(took);
                vm.destroy().await?;
            }
            report(json, vec![("boot_ms", ms(&boot)), ("idle_rss_kib", rss)]);
        }
        Command::Exec { n, json } => {
            let spec = cmd_run::spec_for(&image, 1, 512)?;
            let (vm, _) = cmd_run::boot(&spec).await?;
            let result = match exec_bench(&vm, n.max(1)).await {
                Ok(r) => crate::bench_io::echo(&vm, n.max(1)).await.map(|e| (r, e)),
                Err(e) => Err(e),
            };
            vm.destroy().await?;
            let (r, (echo_open, echo_new)) = result?;
            report(
                json,
                vec![
                    ("exec_true_ms", ms(&r.exec)),
                    ("health_open_ms", ms(&r.health_open)),
                    ("health_raw_http_ms", ms(&r.health_raw)),
                    ("health_new_conn_ms", ms(&r.health_new)),
                    ("vsock_connect_ms", ms(&r.connect)),
                    ("echo64_open_ms", ms(&echo_open)),
                    ("echo64_new_conn_ms", ms(&echo_new)),
                ],
            );
        }
        Command::Upload { mib, json } => {
            let spec = cmd_run::spec_for(&image, 1, 512)?;
            let (vm, _) = cmd_run::boot(&spec).await?;
            let result = upload_bench(&vm, mib.max(1)).await;
            vm.destroy().await?;
            let rows = result?;
            let dd = rows[0].1;
            if json {
                let mut out = serde_json::Map::new();
                for (name, mibps, bytes) in &rows {
                    out.insert(
                        name.to_string(),
                        json!({"mib_per_s": mibps, "bytes": bytes, "of_dd": mibps / dd}),
                    );
                }
                println!("{}", serde_json::Value::Object(out));
            } else {
                println!("{:<22} {:>10} {:>9}", "", "MiB/s", "x dd");
                for (name, mibps, _) in &rows {
                    println!("{name:<22} {mibps:>10.1} {:>9.2}", mibps / dd);
                }
            }
        }
    }
    Ok(0)
}

type Samples = Vec<Duration>;

/// `dd` in the guest, then a tar and a tar.gz upload, then `dd` again (the guest's disk
/// speed drifts with the host's load; the mean of both runs is the reference):
/// (name, MiB/s, bytes moved).
async fn upload_bench(
    vm: &hearth_vmm::VmHandle,
    mib: usize,
) -> anyhow::Result<Vec<(&'static str, f64, usize)>> {
    use crate::bench_io;
    use hearth_proto::ArchiveFormat;
    let rate = |bytes: usize, d: Duration| bytes as f64 / (1 << 20) as f64 / d.as_secs_f64();
    let data = mib << 20;
    let dd1 = bench_io::dd(vm, mib).await?;
    let (tar_bytes, tar) = bench_io::upload(vm, mib, ArchiveFormat::Tar).await?;
    let (gz_bytes, gz) = bench_io::upload(vm, mib, ArchiveFormat::TarGz).await?;
    let dd2 = bench_io::dd(vm, mib).await?;
    let dd = (rate(data, dd1) + rate(data, dd2)) / 2.0;
    Ok(vec![
        ("dd (guest disk, fsync)", dd, data),
        ("upload tar", rate(tar_bytes, tar), tar_bytes),
        ("upload tar.gz", rate(gz_bytes, gz), gz_bytes),
    ])
}

struct ExecFigures {
    exec: Samples,
    health_open: Samples,
    health_raw: Samples,
    health_new: Samples,
    connect: Samples,
}

/// Round trips as the agent client makes them, on its kept connection: `exec true`
/// (HTTP + process spawn in the guest) and `GET /health` (HTTP, the agent's cheapest
/// call); `/health` again on a new connection each time; and the bare hybrid-vsock
/// handshake (`CONNECT` -> `OK`).
async fn exec_bench(vm: &hearth_vmm::VmHandle, n: usize) -> anyhow::Result<ExecFigures> {
    let agent = vm.agent();
    let req = ExecRequest {
        cmd: "true".into(),
        ..Default::default()
    };
    agent.exec(&req).await?; // warm-up: first exec pays page-cache misses
    let (mut exec, mut health_open, mut health_new, mut connect) = (vec![], vec![], vec![], vec![]);
    for _ in 0..n {
        let t = Instant::now();
        let r = agent.exec(&req).await?;
        exec.push(t.elapsed());
        anyhow::ensure!(r.exit_code == 0, "`true` exited {}", r.exit_code);
    }
    for _ in 0..n {
        let t = Instant::now();
        agent.health().await?;
        health_open.push(t.elapsed());
    }
    let health_raw = raw_health(vm, n).await?;
    for _ in 0..n {
        agent.pool().clear();
        let t = Instant::now();
        agent.health().await?;
        health_new.push(t.elapsed());
    }
    for _ in 0..n {
        let t = Instant::now();
        let s = hearth_vmm::vsock::connect(&vm.vsock_path, AGENT_PORT).await?;
        connect.push(t.elapsed());
        drop(s);
    }
    Ok(ExecFigures {
        exec,
        health_open,
        health_raw,
        health_new,
        connect,
    })
}

/// `GET /health` written by hand on one open vsock connection and its answer read
/// back, without any HTTP client: what the agent's side of a call costs.
async fn raw_health(vm: &hearth_vmm::VmHandle, n: usize) -> anyhow::Result<Samples> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = hearth_vmm::vsock::connect(&vm.vsock_path, AGENT_PORT).await?;
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(b"GET /health HTTP/1.1\r\nhost: hearth-agent\r\n\r\n")
            .await?;
        // The answer is small, in one piece, and its JSON body ends the message.
        let mut got = 0;
        while !buf[..got].ends_with(b"}") {
            let k = s.read(&mut buf[got..]).await?;
            anyhow::ensure!(k > 0 && got + k < buf.len(), "bad /health answer");
            got += k;
        }
        out.push(t.elapsed());
    }
    Ok(out)
}

/// Prints n, median, p90, min and max of each series.
fn report(as_json: bool, series: Vec<(&str, Vec<f64>)>) {
    let mut out = serde_json::Map::new();
    for (name, mut xs) in series {
        xs.sort_by(f64::total_cmp);
        let pick = |q: f64| xs[((xs.len() as f64 - 1.0) * q).round() as usize];
        let (median, p90, min, max) = (pick(0.5), pick(0.9), xs[0], xs[xs.len() - 1]);
        if as_json {
            out.insert(
                name.to_string(),
                json!({"n": xs.len(), "median": median, "p90": p90, "min": min, "max": max}),
            );
        } else {
            println!(
                "{name:<18} n={:<4} median={median:>10.3} p90={p90:>10.3} min={min:>10.3} max={max:>10.3}",
                xs.len()
            );
        }
    }
    if as_json {
        println!("{}", serde_json::Value::Object(out));
    }
}

fn ms(xs: &[Duration]) -> Vec<f64> {
    xs.iter().map(|d| d.as_secs_f64() * 1000.0).collect()
}
