//! `hearth job ...` and `hearth script ...`: scripts run as jobs on a server, through
//! [`crate::client`].

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use futures::StreamExt;
use hearth_api::jobs::{
    Cancelled, Enqueued, Job, JobList, JobParams, JobStatus, LogLine, LogStream,
};
use hearth_api::scripts::{Script, ScriptList};
use hearth_api::Language;
use reqwest::Method;

use crate::client::{ndjson_lines, query_escape, Client, ClientArgs};
use crate::cmd_vm::{pairs, print_json};

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
        language: Option<Language>,
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
        #[arg(long, value_parser = parse_status)]
        status: Option<JobStatus>,
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
        #[arg(long, value_parser = parse_stream)]
        stream: Option<LogStream>,
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
            // The server wants the language named; the extension tells it unless given.
            let language = match language {
                Some(l) => l,
                None => Language::from_file_name(name)
                    .with_context(|| format!("{name}: pass --language"))?,
            };
            let path = format!(
                "/v1/scripts?name={}&language={language}",
                query_escape(name)
            );
            let req = client.request(Method::POST, &path).body(data);
            let script: Script = client.send(req).await?.json().await?;
            let params = JobParams {
                args,
                env: pairs(&env).context("--env")?,
                timeout_s: timeout,
                vcpus,
                memory_mib,
                files: Default::default(),
                max_retries: retries,
                network: net.spec(),
            };
            let r: Enqueued = client
                .post(&format!("/v1/scripts/{}/run", script.id), &params)
                .await?;
            let id = r.job_id.clone();
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
            let job: Job = client.get(&format!("/v1/jobs/{id}")).await?;
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
                q.push_str(&format!("&status={st}"));
            }
            if let Some(sc) = script {
                q.push_str(&format!("&script_id={}", query_escape(&sc)));
            }
            let list: JobList = client.get(&q).await?;
            if c.json {
                print_json(&list);
                return Ok(0);
            }
            println!(
                "{:<36}  {:<9}  {:>4}  {:<24}  NAME",
                "ID", "STATUS", "EXIT", "QUEUED"
            );
            for j in list.jobs {
                println!(
                    "{:<36}  {:<9}  {:>4}  {:<24}  {}",
                    j.id,
                    j.status,
                    j.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                    j.queued_at,
                    j.name,
                );
            }
            Ok(0)
        }
        Command::Show { c, id } => {
            let job: Job = Client::new(&c)?.get(&format!("/v1/jobs/{id}")).await?;
            print_json(&job);
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
                q.push_str(&format!("&stream={}", st.as_str()));
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
            let r: Cancelled = Client::new(&c)?
                .post_empty(&format!("/v1/jobs/{id}/cancel"))
                .await?;
            if c.json {
                print_json(&r);
            } else {
                eprintln!("{id}: {}", r.status.as_str());
            }
            Ok(0)
        }
    }
}

pub async fn script_main(cmd: ScriptCommand) -> anyhow::Result<i32> {
    match cmd {
        ScriptCommand::Ls { c } => {
            let list: ScriptList = Client::new(&c)?.get("/v1/scripts").await?;
            if c.json {
                print_json(&list);
                return Ok(0);
            }
            println!(
                "{:<36}  {:<6}  {:>8}  {:<24}  NAME",
                "ID", "LANG", "SIZE", "CREATED"
            );
            for sc in list.scripts {
                println!(
                    "{:<36}  {:<6}  {:>8}  {:<24}  {}",
                    sc.id, sc.language, sc.size, sc.created_at, sc.name,
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
    let mut lines = Box::pin(ndjson_lines::<LogLine>(resp.bytes_stream()));
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some(line) = lines.next().await {
        let line = line?;
        let data = line.data.unwrap_or_default();
        if line.stream == Some(LogStream::Stderr) {
            err.write_all(data.as_bytes())?;
        } else {
            out.write_all(data.as_bytes())?;
            out.flush()?;
        }
        if line.truncated {
            eprintln!("hearth: the job's log hit its size limit; later output was dropped");
        }
    }
    Ok(())
}

/// The script's exit code; for ends without one, the conventions of `timeout(1)` (124)
/// and of a signal-killed shell job (130 for cancel), 1 for our own errors.
fn exit_code_of(job: &Job) -> i32 {
    match job.status {
        JobStatus::Succeeded | JobStatus::Failed => {
            if job.oom_killed {
                eprintln!("hearth: job {}: {}", job.id, crate::cmd_vm::OOM_KILLED);
            }
            job.exit_code.unwrap_or(1)
        }
        status => {
            let why = job.error.as_deref().unwrap_or_default();
            eprintln!(
                "hearth: job {status}{}",
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            );
            match status {
                JobStatus::TimedOut => 124,
                JobStatus::Cancelled => 130,
                _ => 1,
            }
        }
    }
}

fn parse_status(s: &str) -> Result<JobStatus, String> {
    s.parse()
}

fn parse_stream(s: &str) -> Result<LogStream, String> {
    match s {
        "stdout" => Ok(LogStream::Stdout),
        "stderr" => Ok(LogStream::Stderr),
        _ => Err(format!("{s:?}: stdout or stderr")),
    }
}
