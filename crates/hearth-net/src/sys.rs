//! Running `ip`, `nft` and `sysctl`, optionally inside a named network namespace.
//!
//! Arguments are passed as argv (never through a shell) and every value in them was
//! validated or produced from typed values by this crate.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{NetError, Result};

/// `None` is the namespace this process runs in (the host for a server).
pub type Ns<'a> = Option<&'a str>;

pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Named namespaces, from the directory `ip netns` itself uses.
pub fn netns_list() -> Result<Vec<String>> {
    match std::fs::read_dir("/run/netns") {
        Ok(rd) => Ok(rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e.into()),
    }
}

fn run(mut cmd: Command, stdin: Option<&str>) -> Result<String> {
    let shown = format!("{cmd:?}").replace('"', "");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let spawn_err = |source| NetError::Spawn {
        cmd: shown.clone(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(text.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(NetError::Command {
            cmd: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `prog args...` in `ns`. `ip netns exec` gives the namespace's own /sys too, which sysctl
/// and nft do not need but which keeps behaviour identical to running it by hand.
fn in_ns(ns: Ns, prog: &str) -> Command {
    match ns {
        None => Command::new(prog),
        Some(n) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", n, prog]);
            c
        }
    }
}

/// One `ip` command.
pub fn ip(ns: Ns, args: &[&str]) -> Result<String> {
    let mut c = Command::new("ip");
    if let Some(n) = ns {
        c.args(["-n", n]);
    }
    c.args(args);
    run(c, None)
}

/// Several `ip` commands in one process (`ip -batch`), stopping at the first failure.
pub fn ip_batch(ns: Ns, lines: &[String]) -> Result<()> {
    let mut c = Command::new("ip");
    if let Some(n) = ns {
        c.args(["-n", n]);
    }
    c.args(["-batch", "-"]);
    run(c, Some(&(lines.join("\n") + "\n"))).map(drop)
}

/// Applies a ruleset atomically (`nft -f -` is one transaction).
pub fn nft_apply(ns: Ns, ruleset: &str) -> Result<()> {
    let mut c = in_ns(ns, "nft");
    c.args(["-f", "-"]);
    run(c, Some(ruleset)).map(drop)
}

pub fn nft(ns: Ns, args: &[&str]) -> Result<String> {
    let mut c = in_ns(ns, "nft");
    c.args(args);
    run(c, None)
}

/// Names of the nftables tables of `family` in `ns`.
pub fn nft_tables(ns: Ns, family: &str) -> Result<Vec<String>> {
    let out = nft(ns, &["-j", "list", "tables", family])?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|source| NetError::Output {
        cmd: "nft -j list tables".into(),
        source,
    })?;
    Ok(v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["table"]["name"].as_str().map(String::from))
        .collect())
}

pub fn sysctl(ns: Ns, settings: &[&str]) -> Result<()> {
    let mut c = in_ns(ns, "sysctl");
    c.args(["-q", "-w"]).args(settings);
    run(c, None).map(drop)
}

/// `(name, alias)` of every veth in `ns`; the alias records which VM owns it.
pub fn veths(ns: Ns) -> Result<Vec<(String, Option<String>)>> {
    let out = ip(ns, &["-j", "link", "show", "type", "veth"])?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|source| NetError::Output {
        cmd: "ip -j link show type veth".into(),
        source,
    })?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let name = l["ifname"].as_str()?.to_string();
            Some((name, l["ifalias"].as_str().map(String::from)))
        })
        .collect())
}
