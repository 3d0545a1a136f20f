//! `hearth job ...` and `hearth script ...`: scripts run as jobs on a server, through
//! [`crate::client`].

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{query_escape, Client, ClientArgs};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Upload FILE and run it as a job in a fresh VM; prints the job id.
    Run {
        #[command(flatten)]
        c: ClientArgs,
        file: PathBuf,
        /// Argument for the script (repeatable).
        #[arg(long = "arg", allow_hyphen_values = true)]
        args: Vec<String>,
        /// Environment entry KEY=VALUE (repeatable).
        #[arg(long = "env", short = 'e')]
        env: Vec<String>,
        /// Seconds before the script is killed (`timed_out`).
        #[arg(long)]
        timeout: Option<u64>,
        /// Language instead of the one the extension gives (sh, python, ts, js).
        #[arg(long)]
        language: Option<String>,
        #[arg(long)]
        vcpus: Option<u8>,
        #[arg(long)]
        memory_mib: Option<u32>,
        /// Run again when our side fails (VM boot, server restart).
        #[arg(long, default_value_t = 0)]
        retries: u32,
        /// Stream the logs until the job ends and exit with its exit code.
        #[arg(long)]
        wait: bool,
        /// `--outbound [--allow DEST]...`: the job's VM network (default: no NIC).
        #[command(flatten)]
        net: crate::cmd_vm::NetArgs,
    },
    /// List jobs, newest first.
    Ls {
        #[command(flatten)]
        c: ClientArgs,
        /// Only this status (queued, running, succeeded, failed, timed_out, cancelled, error).
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this script.
        #[arg(long)]
        script: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one job.
    Show {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
    },
    /// Print a job's output (stdout and stderr in the order produced).
    Logs {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
        /// Keep printing until the job ends.
        #[arg(short, long)]
        follow: bool,
        /// Only `stdout` or `stderr`.
        #[arg(long)]
        stream: Option<String>,
    },
    /// Cancel a queued or running job.
    Cancel {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
    },
}

#[derive(clap::Subcommand)]
pub enum ScriptCommand {
    /// List uploaded scripts.
    Ls {
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Delete scripts (refused while they have queued or running jobs).
    Rm {
        #[command(flatten)]
        c: ClientArgs,
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

pub async fn main(cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Run {
            c,
            file,
            args,
            env,
            timeout,
            language,
            vcpus,
            memory_mib,
            retries,
            wait,
            net,
        } => {
            let client = Client::new(&c)?;
            let data =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .context("FILE needs a UTF-8 file name")?;
            let mut path = format!("/v1/scripts?name={}", query_escape(name));
            if let Some(l) = &language {
                path.push_str(&format!("&language={}", query_escape(l)));
            }
            let req = client.request(Method::POST, &path).body(data);
            let script: Value = client.send(req).await?.json().await?;
            let mut envs = serde_json::Map::new();
            for e in &env {
                let (k, v) = e
                    .split_once('=')
                    .with_context(|| format!("--env {e:?}: KEY=VALUE"))?;
                envs.insert(k.to_string(), json!(v));
            }
            let body = json!({
                "args": args, "env": envs, "timeout_s": timeout, "vcpus": vcpus,
                "memory_mib": memory_mib, "max_retries": retries, "network": net.body(),
            });
            let sid = s(&script["id"]);
            let r: Value = client
                .post(&format!("/v1/scripts/{sid}/run"), &body)
                .await?;
            let id = s(&r["job_id"]).to_string();
            if !wait {
                if c.json {
                    print_json(&r);
                } else {
                    println!("{id}");
                }
                return Ok(0);
            }
            eprintln!("hearth: job {id} queued");
            follow_split(&client, &id).await?;
            let job: Value = client.get(&format!("/v1/jobs/{id}")).await?;
            if c.json {
                print_json(&job);
            }
            Ok(exit_code_of(&job))
        }
        Command::Ls {
            c,
            status,
            script,
            limit,
        } => {
            let client = Client::new(&c)?;
            let mut q = format!("/v1/jobs?limit={limit}");
            if let Some(st) = status {
                q.push_str(&format!("&status={}", query_escape(&st)));
            }
            if let Some(sc) = script {
                q.push_str(&format!("&script_id={}", query_escape(&sc)));
            }
            let v: Value = client.get(&q).await?;
            if c.json {
                print_json(&v);
                return Ok(0);
            }
            println!(
                "{:<36}  {:<9}  {:>4}  {:<24}  NAME",
                "ID", "STATUS", "EXIT", "QUEUED"
            );
            for j in v["jobs"].as_array().into_iter().flatten() {
                println!(
                    "{:<36}  {:<9}  {:>4}  {:<24}  {}",
                    s(&j["id"]),
                    s(&j["status"]),
                    j["exit_code"]
                        .as_i64()
                        .map(|c| c.to_string())
                        .unwrap_or_default(),
                    s(&j["queued_at"]),
                    s(&j["name"]),
                );
            }
            Ok(0)
        }
        Command::Show { c, id } => {
            let v: Value = Client::new(&c)?.get(&format!("/v1/jobs/{id}")).await?;
            print_json(&v);
            Ok(0)
        }
        Command::Logs {
            c,
            id,
            follow,
            stream,
        } => {
            let client = Client::new(&c)?;
            let mut q = format!("/v1/jobs/{id}/logs?follow={follow}");
            if let Some(st) = stream {
                q.push_str(&format!("&stream={}", query_escape(&st)));
            }
            let resp = client.send(client.request(Method::GET, &q)).await?;
            let mut body = resp.bytes_stream();
            let mut out = std::io::stdout();
            while let Some(chunk) = body.next().await {
                out.write_all(&chunk?)?;
                out.flush()?;
            }
            Ok(0)
        }
        Command::Cancel { c, id } => {
            let v: Value = Client::new(&c)?
                .post(&format!("/v1/jobs/{id}/cancel"), &json!({}))
                .await?;
            if c.json {
                print_json(&v);
            } else {
                eprintln!("{id}: {}", s(&v["status"]));
            }
            Ok(0)
        }
    }
}

pub async fn script_main(cmd: ScriptCommand) -> anyhow::Result<i32> {
    match cmd {
        ScriptCommand::Ls { c } => {
            let v: Value = Client::new(&c)?.get("/v1/scripts").await?;
            if c.json {
                print_json(&v);
                return Ok(0);
            }
            println!(
                "{:<36}  {:<6}  {:>8}  {:<24}  NAME",
                "ID", "LANG", "SIZE", "CREATED"
            );
            for sc in v["scripts"].as_array().into_iter().flatten() {
                println!(
                    "{:<36}  {:<6}  {:>8}  {:<24}  {}",
                    s(&sc["id"]),
                    s(&sc["language"]),
                    sc["size"].as_i64().unwrap_or_default(),
                    s(&sc["created_at"]),
                    s(&sc["name"]),
                );
            }
            Ok(0)
        }
        ScriptCommand::Rm { c, ids } => {
            let client = Client::new(&c)?;
            let mut failed = 0;
            for id in ids {
                match client.delete(&format!("/v1/scripts/{id}")).await {
                    Ok(()) => eprintln!("deleted {id}"),
                    Err(e) => {
                        eprintln!("hearth: {id}: {e:#}");
                        failed += 1;
                    }
                }
            }
            Ok(i32::from(failed > 0))
        }
    }
}

/// Follows the framed log, writing each chunk to our stdout or stderr as the job did.
async fn follow_split(client: &Client, id: &str) -> anyhow::Result<()> {
    let path = format!("/v1/jobs/{id}/logs?follow=true&format=ndjson");
    let resp = client.send(client.request(Method::GET, &path)).await?;
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let data = s(&v["data"]).as_bytes();
            if v["stream"] == "stderr" {
                err.write_all(data)?;
            } else {
                out.write_all(data)?;
                out.flush()?;
            }
            if v["truncated"] == true {
                eprintln!("hearth: the job's log hit its size limit; later output was dropped");
            }
        }
    }
    Ok(())
}

/// The script's exit code; for ends without one, the conventions of `timeout(1)` (124)
/// and of a signal-killed shell job (130 for cancel), 1 for our own errors.
fn exit_code_of(job: &Value) -> i32 {
    let status = s(&job["status"]);
    match status {
        "succeeded" | "failed" => {
            if job["oom_killed"] == true {
                eprintln!(
                    "hearth: job {}: {}",
                    s(&job["id"]),
                    crate::cmd_vm::OOM_KILLED
                );
            }
            job["exit_code"].as_i64().unwrap_or(1) as i32
        }
        _ => {
            let why = job["error"].as_str().unwrap_or_default();
            eprintln!(
                "hearth: job {status}{}",
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            );
            match status {
                "timed_out" => 124,
                "cancelled" => 130,
                _ => 1,
            }
        }
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
