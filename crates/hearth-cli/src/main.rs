//! `hearth`: the one user-facing binary. This file only parses the command line and
//! dispatches; each command family lives in its own module.

mod bench_io;
mod bench_server;
mod client;
mod cmd_bench;
mod cmd_bench_create;
mod cmd_bench_jobs;
mod cmd_doctor;
mod cmd_image;
mod cmd_job;
mod cmd_keys;
mod cmd_run;
mod cmd_serve;
mod cmd_vm;
mod cmd_vm_files;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "hearth", version, about = "Run untrusted code in microVMs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a fresh VM, run code in it, stream its output, destroy it.
    Run(cmd_run::Args),
    /// Report what this host can run; `--boot` boots a VM and times it.
    Doctor(cmd_doctor::Args),
    /// Build and list guest images.
    #[command(subcommand)]
    Image(cmd_image::Command),
    /// Run the manager: REST API, VM lifecycle, jobs.
    Serve(cmd_serve::Args),
    /// Manage VMs on a server.
    #[command(subcommand)]
    Vm(cmd_vm::Command),
    /// Manage API keys on a server.
    #[command(subcommand)]
    Keys(cmd_keys::Command),
    /// Run scripts as jobs on a server.
    #[command(subcommand)]
    Job(cmd_job::Command),
    /// Manage uploaded scripts on a server.
    #[command(subcommand)]
    Script(cmd_job::ScriptCommand),
    /// Print performance figures.
    #[command(subcommand)]
    Bench(cmd_bench::Command),
}

fn main() {
    let cli = Cli::parse();
    // The server logs its lifecycle at info; one-shot commands stay quiet by default.
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HEARTH_LOG")
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr);
    if std::env::var("HEARTH_LOG_FORMAT").is_ok_and(|v| v == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    // The command runs as a task on a worker thread, not on this (non-worker) thread:
    // the tasks it spawns (hyper's connections) then wake and run on the same worker
    // instead of handing off between threads, which cost ~0.2 ms per agent call here.
    let command = rt.spawn(async move {
        match cli.command {
            Command::Run(a) => cmd_run::main(a).await,
            Command::Doctor(a) => cmd_doctor::main(a).await,
            Command::Image(c) => cmd_image::main(c).await,
            Command::Serve(a) => cmd_serve::main(a).await,
            Command::Vm(c) => cmd_vm::main(c).await,
            Command::Keys(c) => cmd_keys::main(c).await,
            Command::Job(c) => cmd_job::main(c).await,
            Command::Script(c) => cmd_job::script_main(c).await,
            Command::Bench(c) => cmd_bench::main(c).await,
        }
    });
    let code = match rt.block_on(command) {
        Ok(code) => code,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    match code {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("hearth: error: {e:#}");
            std::process::exit(1);
        }
    }
}
