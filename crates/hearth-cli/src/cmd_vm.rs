//! `hearth vm ...`: VMs on a server, through [`crate::client`].

use std::io::Write;
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use futures::StreamExt;
use hearth_api::exec::{
    describe_script_error, ExecRequest, ExecResponse, RunRequest, RunResponse, StreamEvent,
    StreamLine,
};
use hearth_api::files::{ArchiveFormat, UploadResponse};
use hearth_api::network::{FirewallView, NetworkSpec, VmNetwork};
use hearth_api::vms::{CallHistory, ConsoleLog, CreateVm, Vm, VmList, VmState};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Kept here too: `cmd_job` imports it from this module.
pub use crate::client::query_escape;
use crate::client::{pack_archive, Client, ClientArgs};

/// What `hearth vm exec`/`run-*` and `hearth job` say when the guest's OOM killer ended
/// a run (`oom_killed` in the response).
pub const OOM_KILLED: &str = "killed by the out-of-memory killer: the program needed more \
     memory than the VM gives user code (its memory less the guest's reserve)";

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a VM; returns when its agent is ready.
    Create {
        #[command(flatten)]
        c: ClientArgs,
        /// Image name (default: the server's default image).
        #[arg(long)]
        image: Option<String>,
        #[arg(long)]
        vcpus: Option<u8>,
        #[arg(long)]
        memory_mib: Option<u32>,
        /// Environment for every exec/run, KEY=VALUE (repeatable).
        #[arg(long = "env", short = 'e')]
        env: Vec<String>,
        /// Destroy the VM after this many seconds.
        #[arg(long)]
        ttl: Option<u64>,
        /// Pause the VM after this many seconds without a call (any call resumes it).
        #[arg(long)]
        idle_timeout: Option<u64>,
        /// Metadata, KEY=VALUE (repeatable).
        #[arg(long = "meta")]
        meta: Vec<String>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Show a VM's outbound allowlist and host rules, or change them with --outbound
    /// (open) or --outbound --allow ... (only those destinations).
    Firewall {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Make an image of the VM's writes (a read-only layer over its image; a running
    /// VM is frozen for the copy). `hearth vm create --image NAME` boots it.
    Template {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
        /// Name of the new image.
        name: String,
    },
    /// List VMs; with an ID, the files of a directory in that VM (default /workspace).
    Ls {
        #[command(flatten)]
        c: ClientArgs,
        /// A VM whose files to list instead.
        id: Option<String>,
        /// With ID: the directory (in /workspace).
        path: Option<String>,
        /// With ID: levels to descend, 1..10.
        #[arg(long, default_value_t = 1)]
        depth: u32,
        /// Only this state (creating, running, paused, stopped, failed, deleted).
        #[arg(long)]
        state: Option<VmStateArg>,
        /// Include deleted VMs.
        #[arg(long, short)]
        all: bool,
    },
    /// Show one VM.
    Show {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
    },
    /// Destroy VMs.
    Rm {
        #[command(flatten)]
        c: ClientArgs,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Power a VM off (its disk is kept).
    Stop {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
    },
    /// Freeze a running VM in memory (any later call to it resumes it).
    Pause {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
    },
    /// Let a paused VM run again.
    Resume {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
    },
    /// Boot a stopped VM again.
    Start {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
    },
    /// Run a command: one word list runs directly, a single string through `sh -c`.
    Exec {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
        #[arg(long)]
        timeout_ms: Option<u64>,
        #[arg(long)]
        cwd: Option<String>,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Run a TypeScript file (`-` for stdin) with Deno.
    RunTs(RunArgs),
    /// Run a JavaScript file (`-` for stdin) with Node.
    RunJs(RunArgs),
    /// Run a Python file (`-` for stdin).
    RunPython(RunArgs),
    /// Upload a file or directory (packed as tar.gz, or tar, on the fly).
    Upload {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
        local: PathBuf,
        /// Directory in the VM to extract into.
        #[arg(long, default_value = "/workspace")]
        dest: String,
        /// Archive format on the wire: `tar.gz`, or `tar` (no compression: faster when
        /// the server is near, since the guest does not have to inflate it).
        #[arg(long, default_value = "tar.gz", value_parser = parse_format)]
        format: ArchiveFormat,
    },
    /// Download a file or directory: writes the archive, or extracts it with `-x`.
    Download {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
        path: String,
        /// Where to write the archive (default: NAME.tar.gz).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Extract into this directory instead of keeping the archive.
        #[arg(short = 'x', long)]
        extract: Option<PathBuf>,
        /// Archive format: `tar.gz` or `tar`.
        #[arg(long, default_value = "tar.gz", value_parser = parse_format)]
        format: ArchiveFormat,
    },
    /// The end of the VM's console log.
    Logs {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
        #[arg(long, default_value_t = 100)]
        tail: usize,
    },
    /// Single files and processes (`cat`, `put`, `ps`, `kill`).
    #[command(flatten)]
    Sandbox(crate::cmd_vm_files::Command),
    /// Recent exec/run calls.
    History {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

/// Outbound networking; without `--outbound` a VM has no NIC at all.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NetArgs {
    /// Give the VM a NIC with NAT to the internet.
    #[arg(long)]
    pub outbound: bool,
    /// Allow only this destination (TCP and UDP): CIDR, IP, CIDR:PORT or HOST:PORT
    /// (repeatable; the VM's DNS resolver stays reachable).
    #[arg(long = "allow", requires = "outbound", value_name = "DEST")]
    pub allow: Vec<String>,
}

impl NetArgs {
    /// The request's `network` value, or `None` without `--outbound`.
    pub fn spec(&self) -> Option<NetworkSpec> {
        self.outbound.then(|| NetworkSpec {
            outbound: true,
            allow: self.allow.clone(),
        })
    }
}

/// `--state` values, checked by clap against the API's states.
#[derive(Clone, Copy, Debug)]
pub struct VmStateArg(VmState);

impl std::str::FromStr for VmStateArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(VmStateArg)
    }
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    c: ClientArgs,
    id: String,
    /// Script file, or `-` for stdin.
    file: PathBuf,
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub async fn main(cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Create {
            c,
            image,
            vcpus,
            memory_mib,
            env,
            ttl,
            idle_timeout,
            meta,
            net,
        } => {
            let req = CreateVm {
                image,
                vcpus,
                memory_mib,
                env: pairs(&env)?,
                ttl_s: ttl,
                idle_timeout_s: idle_timeout,
                metadata: pairs(&meta)?,
                network: net.spec(),
            };
            let vm: Vm = Client::new(&c)?.post("/v1/vms", &req).await?;
            if c.json {
                print_json(&vm);
            } else {
                println!("{}", vm.id);
                eprintln!(
                    "running: {} on {}/{} in {} ms",
                    vm.image,
                    vm.vmm.as_deref().unwrap_or("?"),
                    vm.accel.as_deref().unwrap_or("?"),
                    vm.boot_ms.map_or("?".into(), |ms| ms.to_string())
                );
                if let Some(n) = &vm.network {
                    eprintln!("network: {}", network_line(n));
                }
            }
        }
        Command::Firewall { c, id, net } => {
            let client = Client::new(&c)?;
            let fw: FirewallView = match net.spec() {
                Some(spec) => {
                    client
                        .post(&format!("/v1/vms/{id}/firewall/allowlist"), &spec)
                        .await?
                }
                None => client.get(&format!("/v1/vms/{id}/firewall")).await?,
            };
            if c.json {
                print_json(&fw);
            } else if !fw.outbound {
                println!("no network (created without --outbound)");
            } else {
                println!(
                    "address: {}  dns: {}",
                    or_dash(&fw.address),
                    or_dash(&fw.dns)
                );
                println!("allow:   {}", allow_text(&fw.allow));
                match &fw.rules {
                    Some(r) => println!("host rules:\n{r}"),
                    None => println!("host rules: none (the VM is not running)"),
                }
            }
        }
        Command::Template { c, id, name } => {
            let img: hearth_api::images::Image = Client::new(&c)?
                .post(
                    &format!("/v1/vms/{id}/template"),
                    &hearth_api::images::CreateTemplate { name },
                )
                .await?;
            if c.json {
                print_json(&img);
            } else {
                println!("{}", img.name);
            }
        }
        Command::Ls {
            c,
            id: Some(id),
            path,
            depth,
            ..
        } => crate::cmd_vm_files::list_files(&c, &id, path, depth).await?,
        Command::Ls { c, state, all, .. } => {
            let path = match state {
                Some(s) => format!("/v1/vms?state={}", s.0),
                None => "/v1/vms".into(),
            };
            let list: VmList = Client::new(&c)?.get(&path).await?;
            let vms: Vec<Vm> = list
                .vms
                .into_iter()
                .filter(|v| all || state.is_some() || v.state != VmState::Deleted)
                .collect();
            if c.json {
                print_json(&vms);
            } else {
                println!(
                    "{:<36}  {:<8}  {:<10}  {:>5}  {:>6}  CREATED",
                    "ID", "STATE", "IMAGE", "VCPUS", "MEM"
                );
                for v in vms {
                    println!(
                        "{:<36}  {:<8}  {:<10}  {:>5}  {:>6}  {}",
                        v.id, v.state, v.image, v.vcpus, v.memory_mib, v.created_at
                    );
                }
            }
        }
        Command::Show { c, id } => {
            let vm: Vm = Client::new(&c)?.get(&format!("/v1/vms/{id}")).await?;
            print_json(&vm);
            if !c.json {
                let n = vm.network.as_ref().map_or("none".into(), network_line);
                eprintln!("network: {n}");
            }
        }
        Command::Rm { c, ids } => {
            let client = Client::new(&c)?;
            for id in ids {
                client.delete(&format!("/v1/vms/{id}")).await?;
                if !c.json {
                    eprintln!("deleted {id}");
                }
            }
        }
        Command::Stop { c, id } => lifecycle(&c, &id, "stop").await?,
        Command::Start { c, id } => lifecycle(&c, &id, "start").await?,
        Command::Pause { c, id } => lifecycle(&c, &id, "pause").await?,
        Command::Resume { c, id } => lifecycle(&c, &id, "resume").await?,
        Command::Exec {
            c,
            id,
            timeout_ms,
            cwd,
            mut cmd,
        } => {
            let args = (cmd.len() > 1).then(|| cmd.split_off(1));
            let req = ExecRequest {
                cmd: cmd.remove(0),
                args,
                cwd,
                timeout_ms,
                ..Default::default()
            };
            return run_call::<_, ExecResponse>(&c, &format!("/v1/vms/{id}/exec"), &req).await;
        }
        Command::RunTs(a) => return run_script(a, "run-ts").await,
        Command::RunJs(a) => return run_script(a, "run-js").await,
        Command::RunPython(a) => return run_script(a, "run-python").await,
        Command::Upload {
            c,
            id,
            local,
            dest,
            format,
        } => {
            let stream = pack_archive(local, format)?;
            let path = format!("/v1/vms/{id}/files/upload?dest={}", query_escape(&dest));
            let r: UploadResponse = Client::new(&c)?
                .post_stream(&path, format.content_type(), stream)
                .await?;
            if c.json {
                print_json(&r);
            } else {
                eprintln!(
                    "uploaded {} files, {} dirs, {} bytes to {}",
                    r.files, r.dirs, r.bytes, r.dest
                );
            }
        }
        Command::Download {
            c,
            id,
            path,
            output,
            extract,
            format,
        } => download(&c, &id, &path, output, extract, format).await?,
        Command::Logs { c, id, tail } => {
            let log: ConsoleLog = Client::new(&c)?
                .get(&format!("/v1/vms/{id}/logs?tail={tail}"))
                .await?;
            if c.json {
                print_json(&log);
            } else {
                for l in log.lines {
                    println!("{l}");
                }
            }
        }
        Command::Sandbox(cmd) => return crate::cmd_vm_files::main(cmd).await,
        Command::History { c, id, limit } => {
            let h: CallHistory = Client::new(&c)?
                .get(&format!("/v1/vms/{id}/history?limit={limit}"))
                .await?;
            if c.json {
                print_json(&h);
            } else {
                for call in h.calls {
                    println!(
                        "{}  {:<10}  exit={:<4}  {:>6} ms  {}",
                        call.created_at,
                        call.kind,
                        call.exit_code.map_or("-".into(), |c| c.to_string()),
                        call.duration_ms.map_or("-".into(), |d| d.to_string()),
                        call.input
                    );
                }
            }
        }
    }
    Ok(0)
}

async fn lifecycle(c: &ClientArgs, id: &str, what: &str) -> anyhow::Result<()> {
    let vm: Vm = Client::new(c)?
        .post_empty(&format!("/v1/vms/{id}/{what}"))
        .await?;
    if c.json {
        print_json(&vm);
    } else {
        eprintln!("{id}: {}", vm.state);
    }
    Ok(())
}

async fn run_script(a: RunArgs, kind: &str) -> anyhow::Result<i32> {
    let code = if a.file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?
    };
    let req = RunRequest {
        code: Some(code),
        args: a.args,
        env: a.env,
        timeout_ms: a.timeout_ms,
        ..Default::default()
    };
    run_call::<_, RunResponse>(&a.c, &format!("/v1/vms/{}/{kind}", a.id), &req).await
}

/// The buffered answer of a call: `exec`'s or the run endpoints'.
trait CallAnswer: DeserializeOwned + Serialize {
    fn exit_code(&self) -> i32;
}

impl CallAnswer for ExecResponse {
    fn exit_code(&self) -> i32 {
        self.exit_code
    }
}

impl CallAnswer for RunResponse {
    fn exit_code(&self) -> i32 {
        self.exec.exit_code
    }
}

/// Human mode streams output live and exits with the program's code; `--json` prints
/// the buffered answer `A`.
async fn run_call<B: Serialize, A: CallAnswer>(
    c: &ClientArgs,
    path: &str,
    body: &B,
) -> anyhow::Result<i32> {
    let client = Client::new(c)?;
    if c.json {
        let r: A = client.post(path, body).await?;
        print_json(&r);
        return Ok(r.exit_code());
    }
    let mut events = Box::pin(
        client
            .post_ndjson::<_, StreamLine>(&format!("{path}?stream=true"), body)
            .await?,
    );
    while let Some(line) = events.next().await {
        match line? {
            StreamLine::Event(StreamEvent::Stdout(out)) => {
                let mut o = std::io::stdout();
                o.write_all(out.as_bytes())?;
                o.flush()?;
            }
            StreamLine::Event(StreamEvent::Stderr(err)) => eprint!("{err}"),
            StreamLine::Event(StreamEvent::Exit(exit)) => {
                if exit.exec.oom_killed {
                    eprintln!("hearth: {OOM_KILLED}");
                }
                if exit.exec.timed_out {
                    eprintln!("hearth: timed out");
                }
                if let Some(r) = &exit.result {
                    println!("{r}");
                }
                if let Some(e) = &exit.error {
                    eprintln!("{}", describe_script_error(e));
                }
                return Ok(exit.exec.exit_code);
            }
            StreamLine::Failed(b) => bail!("{} ({})", b.error.message, b.error.code),
        }
    }
    bail!("the stream ended without an exit status")
}

async fn download(
    c: &ClientArgs,
    id: &str,
    path: &str,
    output: Option<PathBuf>,
    extract: Option<PathBuf>,
    format: ArchiveFormat,
) -> anyhow::Result<()> {
    let client = Client::new(c)?;
    let uri = format!(
        "/v1/vms/{id}/files/download?path={}&format={}",
        query_escape(path),
        format.as_str()
    );
    let resp = client
        .send(client.request(reqwest::Method::GET, &uri))
        .await?;
    let name = Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "workspace".into());
    // The archive always lands in a file first; extraction reads it back (tar needs Read).
    let archive = match (&output, &extract) {
        (Some(o), _) => o.clone(),
        (None, Some(dir)) => dir.join(format!(".{name}.hearth-download.{}", format.as_str())),
        (None, None) => PathBuf::from(format!("{name}.{}", format.as_str())),
    };
    if let Some(dir) = &extract {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::File::create(&archive)
        .with_context(|| format!("creating {}", archive.display()))?;
    let mut bytes = resp.bytes_stream();
    let mut total = 0u64;
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk.context("download interrupted")?;
        total += chunk.len() as u64;
        f.write_all(&chunk)?;
    }
    f.sync_all()?;
    if let Some(dir) = extract {
        let file = std::fs::File::open(&archive)?;
        let reader: Box<dyn std::io::Read> = match format {
            ArchiveFormat::TarGz => Box::new(flate2::read::GzDecoder::new(file)),
            ArchiveFormat::Tar => Box::new(file),
        };
        tar::Archive::new(reader)
            .unpack(&dir)
            .with_context(|| format!("extracting into {}", dir.display()))?;
        if output.is_none() {
            let _ = std::fs::remove_file(&archive);
        }
        eprintln!(
            "extracted {total} bytes (compressed) into {}",
            dir.display()
        );
    } else {
        eprintln!("wrote {} ({total} bytes)", archive.display());
    }
    Ok(())
}

fn parse_format(s: &str) -> Result<ArchiveFormat, String> {
    match s {
        "tar.gz" | "tgz" => Ok(ArchiveFormat::TarGz),
        "tar" => Ok(ArchiveFormat::Tar),
        _ => Err(format!("{s:?} is not tar.gz or tar")),
    }
}

/// `KEY=VALUE` arguments as a map.
pub fn pairs(list: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    list.iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("{e:?} is not KEY=VALUE"),
        })
        .collect()
}

/// One line from a VM's `network`: its address and what it may reach.
fn network_line(n: &VmNetwork) -> String {
    format!(
        "outbound via {}, allow {}",
        or_dash(&n.address),
        allow_text(&n.allow)
    )
}

fn allow_text(allow: &[String]) -> String {
    if allow.is_empty() {
        "everything public (open)".into()
    } else {
        allow.join(", ")
    }
}

fn or_dash(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// Prints any API value as pretty JSON (the `--json` output).
pub fn print_json<T: Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
