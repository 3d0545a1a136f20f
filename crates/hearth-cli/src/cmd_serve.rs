//! `hearth serve`: runs the manager until SIGTERM / Ctrl-C. Running VMs are left running
//! on a graceful stop and re-adopted on the next start (see `hearth_server` docs).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on [env: HEARTH_LISTEN; default 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// TOML config file (limits, defaults, vmm); `HEARTH_*` env vars override it.
    #[arg(long, env = "HEARTH_CONFIG")]
    config: Option<PathBuf>,
}

pub async fn main(args: Args) -> anyhow::Result<i32> {
    let mut config =
        hearth_server::Config::load(args.config.as_deref()).context("loading config")?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    hearth_server::serve(config).await.context("hearth serve")?;
    Ok(0)
}
