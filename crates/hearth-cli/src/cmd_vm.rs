//! `hearth vm ...`: VMs on a server, through [`crate::client`].

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};

/// Kept here too: `cmd_job` imports it from this module.
pub use crate::client::query_escape;
use crate::client::{pack_tar_gz, Client, ClientArgs};

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
    /// List VMs.
    Ls {
        #[command(flatten)]
        c: ClientArgs,
        /// Only this state (creating, running, stopped, failed, deleted).
        #[arg(long)]
        state: Option<String>,
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
    /// Upload a file or directory (packed as tar.gz on the fly).
    Upload {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
        local: PathBuf,
        /// Directory in the VM to extract into.
        #[arg(long, default_value = "/workspace")]
        dest: String,
    },
    /// Download a file or directory: writes the tar.gz, or extracts it with `-x`.
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
    },
    /// The end of the VM's console log.
    Logs {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
        #[arg(long, default_value_t = 100)]
        tail: usize,
    },
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
    pub fn body(&self) -> Option<Value> {
        self.outbound
            .then(|| json!({"outbound": true, "allow": self.allow}))
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
            meta,
            net,
        } => {
            let mut body = json!({"env": pairs(&env)?, "metadata": pairs(&meta)?});
            if let Some(n) = net.body() {
                body["network"] = n;
            }
            if let Some(i) = image {
                body["image"] = json!(i);
            }
            if let Some(v) = vcpus {
                body["vcpus"] = json!(v);
            }
            if let Some(m) = memory_mib {
                body["memory_mib"] = json!(m);
            }
            if let Some(t) = ttl {
                body["ttl_s"] = json!(t);
            }
            let vm: Value = Client::new(&c)?.post("/v1/vms", &body).await?;
            if c.json {
                print_json(&vm);
            } else {
                println!("{}", vm["id"].as_str().unwrap_or_default());
                eprintln!(
                    "running: {} on {}/{} in {} ms",
                    vm["image"].as_str().unwrap_or("?"),
                    vm["vmm"].as_str().unwrap_or("?"),
                    vm["accel"].as_str().unwrap_or("?"),
                    vm["boot_ms"]
                );
                if let Some(n) = vm.get("network") {
                    eprintln!("network: {}", network_line(n));
                }
            }
        }
        Command::Firewall { c, id, net } => {
            let client = Client::new(&c)?;
            let fw: Value = match net.body() {
                Some(body) => {
                    client
                        .post(&format!("/v1/vms/{id}/firewall/allowlist"), &body)
                        .await?
                }
                None => client.get(&format!("/v1/vms/{id}/firewall")).await?,
            };
            if c.json {
                print_json(&fw);
            } else if fw["outbound"] != true {
                println!("no network (created without --outbound)");
            } else {
                println!("address: {}  dns: {}", s(&fw["address"]), s(&fw["dns"]));
                println!("allow:   {}", allow_text(&fw["allow"]));
                match fw["rules"].as_str() {
                    Some(r) => println!("host rules:\n{r}"),
                    None => println!("host rules: none (the VM is not running)"),
                }
            }
        }
        Command::Ls { c, state, all } => {
            let path = match &state {
                Some(s) => format!("/v1/vms?state={s}"),
                None => "/v1/vms".into(),
            };
            let list: Value = Client::new(&c)?.get(&path).await?;
            let vms: Vec<&Value> = list["vms"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            let vms: Vec<&Value> = vms
                .into_iter()
                .filter(|v| all || state.is_some() || v["state"] != "deleted")
                .collect();
            if c.json {
                print_json(&json!(vms));
            } else {
                println!(
                    "{:<36}  {:<8}  {:<10}  {:>5}  {:>6}  CREATED",
                    "ID", "STATE", "IMAGE", "VCPUS", "MEM"
                );
                for v in vms {
                    println!(
                        "{:<36}  {:<8}  {:<10}  {:>5}  {:>6}  {}",
                        s(&v["id"]),
                        s(&v["state"]),
                        s(&v["image"]),
                        v["vcpus"],
                        v["memory_mib"],
                        s(&v["created_at"])
                    );
                }
            }
        }
        Command::Show { c, id } => {
            let vm: Value = Client::new(&c)?.get(&format!("/v1/vms/{id}")).await?;
            print_json(&vm);
            if !c.json {
                let n = vm.get("network").map_or("none".into(), network_line);
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
        Command::Exec {
            c,
            id,
            timeout_ms,
            cwd,
            cmd,
        } => {
            let mut body = if cmd.len() == 1 {
                json!({"cmd": cmd[0]})
            } else {
                json!({"cmd": cmd[0], "args": cmd[1..]})
            };
            if let Some(t) = timeout_ms {
                body["timeout_ms"] = json!(t);
            }
            if let Some(d) = cwd {
                body["cwd"] = json!(d);
            }
            return run_call(&c, &format!("/v1/vms/{id}/exec"), &body).await;
        }
        Command::RunTs(a) => return run_script(a, "run-ts").await,
        Command::RunJs(a) => return run_script(a, "run-js").await,
        Command::RunPython(a) => return run_script(a, "run-python").await,
        Command::Upload { c, id, local, dest } => {
            let stream = pack_tar_gz(local)?;
            let path = format!("/v1/vms/{id}/files/upload?dest={}", query_escape(&dest));
            let r: Value = Client::new(&c)?
                .post_stream(&path, "application/gzip", stream)
                .await?;
            if c.json {
                print_json(&r);
            } else {
                eprintln!(
                    "uploaded {} files, {} dirs, {} bytes to {}",
                    r["files"],
                    r["dirs"],
                    r["bytes"],
                    s(&r["dest"])
                );
            }
        }
        Command::Download {
            c,
            id,
            path,
            output,
            extract,
        } => download(&c, &id, &path, output, extract).await?,
        Command::Logs { c, id, tail } => {
            let v: Value = Client::new(&c)?
                .get(&format!("/v1/vms/{id}/logs?tail={tail}"))
                .await?;
            if c.json {
                print_json(&v);
            } else {
                for l in v["lines"].as_array().into_iter().flatten() {
                    println!("{}", l.as_str().unwrap_or_default());
                }
            }
        }
        Command::History { c, id, limit } => {
            let v: Value = Client::new(&c)?
                .get(&format!("/v1/vms/{id}/history?limit={limit}"))
                .await?;
            if c.json {
                print_json(&v);
            } else {
                for call in v["calls"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {:<10}  exit={:<4}  {:>6} ms  {}",
                        s(&call["created_at"]),
                        s(&call["kind"]),
                        call["exit_code"],
                        call["duration_ms"],
                        call["input"]
                    );
                }
            }
        }
    }
    Ok(0)
}

async fn lifecycle(c: &ClientArgs, id: &str, what: &str) -> anyhow::Result<()> {
    let vm: Value = Client::new(c)?
        .post(&format!("/v1/vms/{id}/{what}"), &json!({}))
        .await?;
    if c.json {
        print_json(&vm);
    } else {
        eprintln!("{id}: {}", s(&vm["state"]));
    }
    Ok(())
}

async fn run_script(a: RunArgs, kind: &str) -> anyhow::Result<i32> {
    let code = if a.file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?
    };
    let mut body = json!({"code": code, "args": a.args, "env": a.env});
    if let Some(t) = a.timeout_ms {
        body["timeout_ms"] = json!(t);
    }
    run_call(&a.c, &format!("/v1/vms/{}/{kind}", a.id), &body).await
}

/// Human mode streams output live and exits with the program's code; `--json` prints
/// the buffered response.
async fn run_call(c: &ClientArgs, path: &str, body: &Value) -> anyhow::Result<i32> {
    let client = Client::new(c)?;
    if c.json {
        let r: Value = client.post(path, body).await?;
        print_json(&r);
        return Ok(r["exit_code"].as_i64().unwrap_or(1) as i32);
    }
    let mut events = Box::pin(
        client
            .post_ndjson(&format!("{path}?stream=true"), body)
            .await?,
    );
    while let Some(ev) = events.next().await {
        let ev = ev?;
        if let Some(out) = ev["stdout"].as_str() {
            let mut o = std::io::stdout();
            o.write_all(out.as_bytes())?;
            o.flush()?;
        } else if let Some(err) = ev["stderr"].as_str() {
            eprint!("{err}");
        } else if let Some(exit) = ev.get("exit") {
            if exit["oom_killed"] == true {
                eprintln!("hearth: {OOM_KILLED}");
            }
            if exit["timed_out"] == true {
                eprintln!("hearth: timed out");
            }
            if !exit["result"].is_null() {
                println!("{}", exit["result"]);
            }
            if let Some(e) = exit.get("error").filter(|e| !e.is_null()) {
                eprintln!("{}: {}", s(&e["name"]), s(&e["message"]));
            }
            return Ok(exit["exit_code"].as_i64().unwrap_or(1) as i32);
        } else if let Some(e) = ev.get("error") {
            bail!("{} ({})", s(&e["message"]), s(&e["code"]));
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
) -> anyhow::Result<()> {
    let client = Client::new(c)?;
    let uri = format!("/v1/vms/{id}/files/download?path={}", query_escape(path));
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
        (None, Some(dir)) => dir.join(format!(".{name}.hearth-download.tar.gz")),
        (None, None) => PathBuf::from(format!("{name}.tar.gz")),
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
        tar::Archive::new(flate2::read::GzDecoder::new(file))
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

fn pairs(list: &[String]) -> anyhow::Result<serde_json::Map<String, Value>> {
    list.iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), json!(v))),
            _ => bail!("{e:?} is not KEY=VALUE"),
        })
        .collect()
}

/// One line from a VM's `network`: its address and what it may reach.
fn network_line(n: &Value) -> String {
    format!(
        "outbound via {}, allow {}",
        s(&n["address"]),
        allow_text(&n["allow"])
    )
}

fn allow_text(allow: &Value) -> String {
    let list: Vec<&str> = allow
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if list.is_empty() {
        "everything public (open)".into()
    } else {
        list.join(", ")
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
