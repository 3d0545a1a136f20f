//! `hearth run`: boot a fresh VM from the default image, run code in it with output
//! streamed to this terminal, destroy the VM (also on Ctrl-C), exit with the program's
//! exit code. Also home of the local-VM helpers `doctor` and `bench` share.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use hearth_proto::{ExecRequest, Language, RunRequest, RunResponse, StreamEvent};
use hearth_vmm::{VmHandle, VmSpec};

/// How long a guest may take from VMM start to agent ready (TCG on a busy host is slow).
pub(crate) const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct Args {
    /// Language: sh, python, ts or js (default: from --file's extension; sh for -c).
    #[arg(long)]
    lang: Option<Language>,
    /// Local file whose contents are the code to run.
    #[arg(long, conflicts_with_all = ["code", "cmd"])]
    file: Option<PathBuf>,
    /// Code to run.
    #[arg(short = 'c', conflicts_with = "cmd")]
    code: Option<String>,
    /// Environment entry KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Kill the program after this many seconds.
    #[arg(long)]
    timeout: Option<u64>,
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// Local directory to copy into /workspace before running.
    #[arg(long)]
    upload: Option<PathBuf>,
    /// Print the structured result (RunResponse) as JSON instead of streaming output.
    #[arg(long)]
    json: bool,
    /// Image to boot (a name under the images dir).
    #[arg(long, default_value = "default")]
    image: String,
    /// Command and arguments to execute directly (after `--`).
    #[arg(last = true, value_name = "CMD")]
    cmd: Vec<String>,
}

/// What to run, decided from the arguments before any VM exists.
enum Job {
    Exec(ExecRequest),
    Run(Language, RunRequest),
}

fn job(a: &Args) -> anyhow::Result<Job> {
    for e in &a.env {
        hearth_proto::parse_env_entry(e)?;
    }
    let timeout_ms = a.timeout.map(|s| s.saturating_mul(1000));
    if !a.cmd.is_empty() {
        let env: BTreeMap<_, _> = a
            .env
            .iter()
            .map(|e| hearth_proto::parse_env_entry(e))
            .collect::<Result<_, _>>()?;
        return Ok(Job::Exec(ExecRequest {
            cmd: a.cmd[0].clone(),
            args: Some(a.cmd[1..].to_vec()),
            env,
            timeout_ms,
            ..Default::default()
        }));
    }
    let (lang, code) = match (&a.file, &a.code) {
        (Some(f), _) => {
            let lang = match a.lang {
                Some(l) => l,
                None => Language::from_file_name(&f.to_string_lossy())?,
            };
            let code =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            (lang, code)
        }
        (None, Some(c)) => (a.lang.unwrap_or(Language::Sh), c.clone()),
        (None, None) => bail!("nothing to run: give --file PATH, -c CODE or -- CMD ARGS..."),
    };
    Ok(Job::Run(
        lang,
        RunRequest {
            code: Some(code),
            env: a.env.clone(),
            timeout_ms,
            ..Default::default()
        },
    ))
}

pub(crate) fn default_image_dir() -> PathBuf {
    hearth_image::paths::image_dir("default")
}

/// The directory of the image `name`, refusing names that are not one path component.
pub(crate) fn image_dir(name: &str) -> anyhow::Result<PathBuf> {
    if !hearth_image::paths::valid_name(name) {
        bail!("bad image name {name:?}: use letters, digits, '-', '_' and '.'");
    }
    Ok(hearth_image::paths::image_dir(name))
}

/// State dirs of local (server-less) VMs: `HEARTH_RUN_DIR`, default
/// `$HEARTH_DATA_DIR/run` — kept apart from the server's `vms/` so neither side mistakes
/// the other's VMs for leftovers.
pub(crate) fn run_dir() -> PathBuf {
    std::env::var_os("HEARTH_RUN_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| hearth_image::paths::data_dir().join("run"))
}

/// A unique enough VM id for local runs: pid plus a nanosecond clock.
pub(crate) fn new_id(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{:x}-{:x}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff
    )
}

/// Spec for a fresh VM from the image in `image_dir`.
pub(crate) fn spec_for(image_dir: &Path, vcpus: u8, memory_mib: u32) -> anyhow::Result<VmSpec> {
    let kernel = image_dir.join("vmlinux");
    let rootfs = image_dir.join("rootfs.ext4");
    for p in [&kernel, &rootfs] {
        if !p.exists() {
            bail!(
                "image file {} is missing: build the image with `hearth image build` \
                 (or scripts/install.sh)",
                p.display()
            );
        }
    }
    let id = new_id("run");
    let mut spec = VmSpec::new(id.clone(), kernel, rootfs, run_dir().join(&id));
    spec.layers = hearth_image::layers_of(image_dir);
    spec.vcpus = vcpus;
    spec.memory_mib = memory_mib;
    Ok(spec)
}

/// Starts the VM and waits for its agent; returns the handle and the time from VMM start
/// to agent ready. On failure the VM is already destroyed.
pub(crate) async fn boot(spec: &VmSpec) -> anyhow::Result<(VmHandle, Duration)> {
    let vmm = hearth_vmm::select_from_env()?;
    let started = Instant::now();
    let vm = match vmm.start(spec).await {
        Ok(vm) => vm,
        Err(e) => {
            if let Ok(h) = VmHandle::adopt(&spec.state_dir) {
                let _ = h.destroy().await;
            }
            return Err(e.into());
        }
    };
    match vm.wait_agent(BOOT_TIMEOUT).await {
        Ok(_) => Ok((vm, started.elapsed())),
        Err(e) => {
            let _ = vm.destroy().await;
            Err(anyhow::Error::new(e).context("the guest agent did not come up"))
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub async fn main(args: Args) -> anyhow::Result<i32> {
    let job = job(&args)?;
    if let Some(dir) = &args.upload {
        if !dir.is_dir() {
            bail!("--upload {}: not a directory", dir.display());
        }
    }
    let spec = spec_for(&image_dir(&args.image)?, args.vcpus, args.memory)?;
    let (vm, _) = tokio::select! {
        r = boot(&spec) => r?,
        _ = interrupted() => {
            if let Ok(h) = VmHandle::adopt(&spec.state_dir) {
                let _ = h.destroy().await;
            }
            return Ok(130);
        }
    };
    let outcome = tokio::select! {
        r = run_in(&vm, &args, job) => r,
        _ = interrupted() => {
            eprintln!("hearth: interrupted, destroying the VM");
            Ok(130)
        }
    };
    let destroyed = vm.destroy().await;
    let code = outcome?;
    destroyed.context("destroying the VM")?;
    Ok(code)
}

async fn run_in(vm: &VmHandle, args: &Args, job: Job) -> anyhow::Result<i32> {
    let agent = vm.agent();
    if let Some(dir) = &args.upload {
        let up = agent
            .upload(hearth_proto::WORKSPACE, tar_gz_stream(dir.clone()))
            .await
            .context("uploading")?;
        tracing::info!(?up, "uploaded");
    }
    if args.json {
        let resp = match &job {
            Job::Exec(e) => RunResponse {
                exec: agent.exec(e).await?,
                ..Default::default()
            },
            Job::Run(lang, r) => agent.run(*lang, r).await?,
        };
        println!("{}", serde_json::to_string_pretty(&resp)?);
        return Ok(resp.exec.exit_code);
    }
    let mut events = match &job {
        Job::Exec(e) => agent.exec_stream(e).await?,
        Job::Run(lang, r) => agent.run_stream(*lang, r).await?,
    };
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some(ev) = events.next().await {
        match ev? {
            StreamEvent::Stdout(s) => {
                out.write_all(s.as_bytes())?;
                out.flush()?;
            }
            StreamEvent::Stderr(s) => {
                err.write_all(s.as_bytes())?;
                err.flush()?;
            }
            StreamEvent::Exit(r) => {
                if r.exec.oom_killed {
                    eprintln!(
                        "hearth: killed by the out-of-memory killer: the program needed more \
                         memory than the VM gives it (--memory {} MiB, less the guest's reserve)",
                        args.memory
                    );
                }
                if r.exec.timed_out {
                    eprintln!(
                        "hearth: timed out after {} s; the program was killed",
                        args.timeout
                            .unwrap_or(hearth_proto::DEFAULT_TIMEOUT_MS / 1000)
                    );
                }
                for (name, cut) in [
                    ("stdout", r.exec.stdout_truncated),
                    ("stderr", r.exec.stderr_truncated),
                ] {
                    if cut {
                        eprintln!(
                            "hearth: {name} truncated: output beyond the agent's cap was dropped"
                        );
                    }
                }
                if let Some(e) = &r.error {
                    eprintln!(
                        "hearth: error: {}",
                        hearth_api::exec::describe_script_error(e)
                    );
                }
                return Ok(r.exec.exit_code);
            }
        }
    }
    bail!("the agent's stream ended without an exit status")
}

/// `dir` as a tar.gz byte stream, produced on a blocking thread while it is sent (the
/// archive is never held whole in memory).
pub(crate) fn tar_gz_stream(
    dir: PathBuf,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    struct ChanWriter(tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>);
    impl Write for ChanWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload aborted")
                })?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    tokio::task::spawn_blocking(move || {
        let errors = tx.clone();
        let write = || -> std::io::Result<()> {
            let buffered = std::io::BufWriter::with_capacity(64 * 1024, ChanWriter(tx));
            let gz = flate2::write::GzEncoder::new(buffered, flate2::Compression::fast());
            let mut tar = tar::Builder::new(gz);
            tar.follow_symlinks(false);
            tar.append_dir_all(".", &dir)?;
            tar.into_inner()?.finish()?.flush()
        };
        if let Err(e) = write() {
            let _ = errors.blocking_send(Err(e));
        }
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
