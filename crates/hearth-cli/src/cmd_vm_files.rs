//! `hearth vm cat|put|ls ID|ps|kill`: single files and processes in a VM, through the
//! server's sandbox API with `hearth-api`'s types.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use futures::StreamExt;
use hearth_api::files::{FileEntry, FileList, FileType};
use hearth_api::processes::{ProcessInfo, ProcessList, Signal, SignalRequest};
use reqwest::Method;

use crate::client::{query_escape, Client, ClientArgs};
use crate::cmd_vm::print_json;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Print a file from the VM's /workspace (streamed, bytes as they are).
    Cat {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
        /// A path in /workspace (relative ones are taken from /workspace).
        path: String,
    },
    /// Write a local file (`-` for stdin) to a path in the VM, atomically.
    Put {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
        local: PathBuf,
        path: String,
        /// Octal permission bits, e.g. 0755 (default: the replaced file's, else 0644).
        #[arg(long)]
        mode: Option<String>,
        /// Create missing parent directories.
        #[arg(long, short)]
        parents: bool,
    },
    /// The VM's processes started with `POST .../processes`: running and recently exited.
    Ps {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
    },
    /// Kill a process and everything it started, or send it one signal with --signal.
    Kill {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
        pid: u32,
        /// HUP, INT, KILL, USR1, USR2 or TERM.
        #[arg(long, short, value_parser = parse_signal)]
        signal: Option<Signal>,
    },
}

fn parse_signal(s: &str) -> Result<Signal, String> {
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    serde_json::from_value(serde_json::Value::String(name))
        .map_err(|_| format!("unknown signal {s:?}: use HUP, INT, KILL, USR1, USR2 or TERM"))
}

pub async fn main(cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Cat { c, id, path } => {
            let client = Client::new(&c)?;
            let uri = format!("/v1/vms/{id}/files/content?path={}", query_escape(&path));
            let resp = client.send(client.request(Method::GET, &uri)).await?;
            let mut body = resp.bytes_stream();
            // No stdout lock across an await: the command's future must be Send.
            while let Some(chunk) = body.next().await {
                let chunk = chunk.context("reading the file interrupted")?;
                std::io::stdout().write_all(&chunk)?;
            }
            std::io::stdout().flush()?;
        }
        Command::Put {
            c,
            id,
            local,
            path,
            mode,
            parents,
        } => {
            let mut uri = format!(
                "/v1/vms/{id}/files/content?path={}&parents={parents}",
                query_escape(&path)
            );
            if let Some(m) = mode {
                uri.push_str(&format!("&mode={}", query_escape(&m)));
            }
            let client = Client::new(&c)?;
            let req = client
                .request(Method::PUT, &uri)
                .header("content-type", "application/octet-stream");
            // A file goes with its length (refused at once when too large) and streamed;
            // stdin is read whole first, since its length is known only at the end.
            let req = if local.as_os_str() == "-" {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
                req.body(buf)
            } else {
                let f = tokio::fs::File::open(&local)
                    .await
                    .with_context(|| format!("opening {}", local.display()))?;
                let len = f.metadata().await?.len();
                req.header("content-length", len).body(f)
            };
            let e: FileEntry = client.send(req).await?.json().await?;
            if c.json {
                print_json(&e);
            } else {
                eprintln!("wrote {} ({} bytes, mode {:o})", e.path, e.size, e.mode);
            }
        }
        Command::Ps { c, id } => {
            let list: ProcessList = Client::new(&c)?
                .get(&format!("/v1/vms/{id}/processes"))
                .await?;
            if c.json {
                print_json(&list);
            } else {
                println!(
                    "{:>7}  {:<8}  {:>5}  {:<24}  CMD",
                    "PID", "STATE", "EXIT", "STARTED"
                );
                for p in &list.processes {
                    println!("{}", process_line(p));
                }
            }
        }
        Command::Kill { c, id, pid, signal } => {
            let client = Client::new(&c)?;
            match signal {
                Some(signal) => {
                    let uri = format!("/v1/vms/{id}/processes/{pid}/signal");
                    let req = client
                        .request(Method::POST, &uri)
                        .json(&SignalRequest { signal });
                    client.send(req).await?;
                }
                None => {
                    let uri = format!("/v1/vms/{id}/processes/{pid}");
                    let req = client.request(Method::DELETE, &uri);
                    let p: ProcessInfo = client.send(req).await?.json().await?;
                    if c.json {
                        print_json(&p);
                    } else {
                        eprintln!("{}", process_line(&p));
                    }
                }
            }
        }
    }
    Ok(0)
}

/// `hearth vm ls ID [PATH]`: a directory in the VM (default /workspace).
pub async fn list_files(
    c: &ClientArgs,
    id: &str,
    path: Option<String>,
    depth: u32,
) -> anyhow::Result<()> {
    let mut uri = format!("/v1/vms/{id}/files/list?depth={depth}");
    if let Some(p) = path {
        uri.push_str(&format!("&path={}", query_escape(&p)));
    }
    let list: FileList = Client::new(c)?.get(&uri).await?;
    if c.json {
        print_json(&list);
    } else {
        for e in &list.entries {
            println!("{}", entry_line(e));
        }
        if list.truncated {
            eprintln!("(listing truncated)");
        }
    }
    Ok(())
}

fn entry_line(e: &FileEntry) -> String {
    let kind = match e.kind {
        FileType::File => '-',
        FileType::Dir => 'd',
        FileType::Symlink => 'l',
        FileType::Other => '?',
    };
    let target = e
        .target
        .as_ref()
        .map_or(String::new(), |t| format!(" -> {t}"));
    format!(
        "{kind}{:04o} {:>10}  {}  {}{target}",
        e.mode, e.size, e.mtime, e.path
    )
}

fn process_line(p: &ProcessInfo) -> String {
    let state = serde_json::to_value(p.state)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let exit = match (&p.exit_code, &p.signal) {
        (_, Some(sig)) => sig.clone(),
        (Some(code), None) => code.to_string(),
        (None, None) => "-".into(),
    };
    let mut cmd = p.cmd.clone();
    for a in p.args.iter().flatten() {
        cmd.push(' ');
        cmd.push_str(a);
    }
    format!(
        "{:>7}  {state:<8}  {exit:>5}  {:<24}  {cmd}",
        p.pid, p.started_at
    )
}
