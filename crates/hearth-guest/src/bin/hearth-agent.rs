//! `hearth-agent`: the guest's HTTP API (vsock port 8080), started as root by init.
//!
//! Also runs on a host for tests: `--listen unix:/path` or `--listen tcp:127.0.0.1:0`,
//! `--workspace DIR`, `--jail-root DIR`. It always enters a mount namespace of its own
//! first, so the jail's mounts never show up outside the agent.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use hearth_guest::agent::{self, Config, Listen, State};
use hearth_guest::jail::{CgroupConfig, Jail, JailConfig};
use hearth_guest::workspace::{UserThreads, Workspace};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

const USAGE: &str = "usage: hearth-agent [--listen vsock:PORT|unix:PATH|tcp:127.0.0.1:PORT]...
    [--workspace DIR] [--jail-root DIR] [--runtime-bin PATH]... [--tmp-size SIZE]
    [--cgroup DIR] [--cgroup-require memory,pids] [--pids-max N] [--memory-reserve-mib N]
    [--deno CMD] [--node CMD] [--python CMD] [--nft CMD]
    [--output-cap BYTES] [--max-upload-entries N] [--max-upload-bytes N]
    [--max-file-bytes N] [--process-output-keep BYTES] [--image-config PATH]";

/// Threads that do file operations as uid 1000; each job is short (no byte copying).
const USER_THREADS: usize = 4;

struct Options {
    listen: Vec<Listen>,
    jail: JailConfig,
    config: Config,
    image_config: PathBuf,
}

fn parse(args: Vec<String>) -> Result<Options, String> {
    let mut o = Options {
        listen: Vec::new(),
        jail: JailConfig {
            root: "/run/hearth-jail".into(),
            workspace: "/home/user".into(),
            runtime_bins: Vec::new(),
            uid: hearth_proto::USER_UID,
            gid: hearth_proto::USER_GID,
            tmp_size: "256m".into(),
            cgroup: CgroupConfig::default(),
            expose: Vec::new(),
            user_name: "user".into(),
        },
        config: Config::default(),
        image_config: hearth_proto::IMAGE_CONFIG_PATH.into(),
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--listen" => o.listen.push(value()?.parse().map_err(|e| format!("{e}"))?),
            "--workspace" => o.jail.workspace = value()?.into(),
            "--jail-root" => o.jail.root = value()?.into(),
            "--runtime-bin" => o.jail.runtime_bins.push(PathBuf::from(value()?)),
            "--tmp-size" => o.jail.tmp_size = value()?,
            "--cgroup" => o.jail.cgroup.parent = value()?.into(),
            "--cgroup-require" => {
                o.jail.cgroup.require = value()?
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            "--pids-max" => o.jail.cgroup.pids_max = number(value()?)?,
            "--memory-reserve-mib" => o.jail.cgroup.memory_reserve = Some(number(value()?)? << 20),
            "--deno" => o.config.deno = value()?,
            "--node" => o.config.node = value()?,
            "--python" => o.config.python = value()?,
            "--nft" => o.config.nft = value()?,
            "--output-cap" => o.config.output_cap = number(value()?)? as usize,
            "--max-upload-entries" => o.config.upload_limits.max_entries = number(value()?)?,
            "--max-upload-bytes" => o.config.upload_limits.max_bytes = number(value()?)?,
            "--max-file-bytes" => o.config.max_file_bytes = number(value()?)?,
            "--process-output-keep" => o.config.process_output_keep = number(value()?)? as usize,
            "--image-config" => o.image_config = value()?.into(),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.jail.tmp_size.contains(',') {
        return Err("--tmp-size must be a single tmpfs size".into());
    }
    if o.listen.is_empty() {
        o.listen.push(Listen::Vsock(hearth_proto::AGENT_PORT));
    }
    o.config.image = agent::image::load(&o.image_config);
    o.jail.expose = o.config.image.expose.clone();
    if let Some(name) = o.config.image.login_name() {
        o.jail.user_name = name;
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("hearth-agent: {e}");
            return ExitCode::from(2);
        }
    };
    // Before any thread exists: a private mount namespace, so that the jail's mounts stay
    // ours (and, on a host, never leak into the host's mount table).
    let private = unshare(CloneFlags::CLONE_NEWNS).and_then(|_| {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
    });
    if let Err(e) = private {
        eprintln!("hearth-agent: entering a private mount namespace: {e} (must run as root)");
        return ExitCode::from(1);
    }
    // Inherited from init in the guest; set again so the agent stays exempt wherever it
    // runs. User processes are reset to 0 by the jail.
    if let Err(e) = hearth_guest::init::harden::exempt_from_oom() {
        eprintln!("hearth-agent: warning: cannot set oom_score_adj: {e}");
    }
    let jail = match Jail::build(&opts.jail) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("hearth-agent: building the jail: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!("hearth-agent: {}", jail.cgroups.summary());
    let mut opts = opts;
    opts.config.default_cwd = agent::image::default_cwd(&jail, &opts.config.image);
    let workspace = match Workspace::open(&jail.host_path(hearth_proto::WORKSPACE)) {
        Ok(w) => Arc::new(w),
        Err(e) => {
            eprintln!("hearth-agent: opening the workspace: {e}");
            return ExitCode::from(1);
        }
    };
    let users = match UserThreads::start(USER_THREADS, jail.uid, jail.gid) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("hearth-agent: starting the uid-{} threads: {e}", jail.uid);
            return ExitCode::from(1);
        }
    };
    let state = Arc::new(State {
        config: opts.config,
        jail,
        workspace,
        users,
        procs: Default::default(),
        started: Instant::now(),
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hearth-agent: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(agent::serve(state, opts.listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth-agent: {e}");
            ExitCode::from(1)
        }
    }
}
