//! Operator and test tool: drives `hearth_net` directly, configured like the server
//! (`HEARTH_NET_*`). The crash test runs `setup --hold` and SIGKILLs it.
//!
//! ```text
//! hearth-netctl probe | list | reconcile [KNOWN_VM...] | rules VM | teardown VM
//! hearth-netctl setup VM SUBNET [--hold] [ALLOW...]     (SUBNET "auto" = lowest free)
//! hearth-netctl update VM SUBNET [ALLOW...]
//! ```

use std::process::ExitCode;

use hearth_net::{NetConfig, NetRequest, Network, Subnet};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth-netctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let net = Network::new(NetConfig::from_env()?);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let request = |rest: &[&str]| NetRequest {
        outbound: true,
        allow: rest.iter().map(|s| s.to_string()).collect(),
    };
    match a.as_slice() {
        ["probe"] => {
            let p = net.probe();
            for c in &p.checks {
                println!(
                    "{:5} {:8} {}",
                    if c.ok { "ok" } else { "FAIL" },
                    c.name,
                    c.detail
                );
            }
            if !p.ok() {
                return Err(p.summary().into());
            }
        }
        ["list"] => net.list_owned()?.iter().for_each(|id| println!("{id}")),
        ["reconcile", known @ ..] => {
            for id in net.reconcile(known)? {
                println!("removed {id}");
            }
        }
        ["rules", vm] => print!("{}", net.rules(vm)?),
        ["teardown", vm] => net.teardown(vm)?,
        ["setup", vm, subnet, rest @ ..] => {
            let hold = rest.first() == Some(&"--hold");
            let rest = if hold { &rest[1..] } else { rest };
            let subnet = match *subnet {
                "auto" => net.config().pool.allocate(&[])?,
                s => s.parse::<Subnet>()?,
            };
            let t = std::time::Instant::now();
            let info = net.setup(vm, subnet, &request(rest))?;
            println!(
                "ready netns={} tap={} mac={} {} setup_ms={}",
                info.netns,
                info.tap,
                info.mac,
                info.guest.to_cmdline(),
                t.elapsed().as_millis()
            );
            if hold {
                // Stands in for a server that owns the VM until it is killed.
                loop {
                    std::thread::park();
                }
            }
        }
        ["update", vm, subnet, rest @ ..] => {
            for d in net.update_allowlist(vm, subnet.parse()?, &request(rest))? {
                println!("{} port {:?}", d.net, d.port);
            }
        }
        _ => return Err("usage: see the comment at the top of hearth-netctl.rs".into()),
    }
    Ok(())
}
