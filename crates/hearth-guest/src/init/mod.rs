//! `hearth-init`, PID 1 of every guest. Boot: mount the kernel filesystems, stack an
//! OverlayFS (read-only base `/dev/vda`, template layers `/dev/vdc`.. if any, per-VM
//! `/dev/vdb` on top) and pivot into it, set up
//! `/dev`, `/tmp`, `/workspace`, cgroup v2, hostname and network, harden the kernel's
//! settings ([`harden`]), then supervise the agent and reap orphans until told to power
//! off. Pure decisions live in `mounts::plan_*`,
//! `cmdline` and `supervise::Backoff` so they are tested on the host.

pub mod cmdline;
pub mod disks;
pub mod harden;
pub mod log;
pub mod mounts;
pub mod net;
pub mod supervise;

use std::path::Path;

pub use log::say;

pub const AGENT: &str = "/usr/local/bin/hearth-agent";
pub const HOSTNAME: &str = "hearth";
pub const OVERLAY_DEVICE: &str = "/dev/vdb";

/// Runs PID 1 and never returns: on a fatal error the VM is shut down rather than left
/// hanging with a panicked init.
pub fn main() -> ! {
    let signals = match supervise::block_signals() {
        Ok(s) => s,
        Err(e) => fatal(&format!("cannot block signals: {e}")),
    };
    // Ctrl-Alt-Del then arrives as SIGINT, our cue for a clean shutdown.
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        say(&format!("warning: cannot disable Ctrl-Alt-Del reboot: {e}"));
    }
    if let Err(e) = boot() {
        fatal(&e);
    }
    supervise::run(signals, Path::new(AGENT))
}

fn boot() -> Result<(), String> {
    let t = std::time::Instant::now();
    mounts::apply(&mounts::plan_early())?;
    log::ensure_console();
    // Before the agent exists, so it inherits the exemption too.
    harden::exempt_from_oom().map_err(|e| format!("oom_score_adj of init: {e}"))?;
    let upper = mounts::mount_upper(OVERLAY_DEVICE)?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let layers = hearth_proto::image::layers_from_cmdline(&cmdline)?;
    disks::mount_all(layers)?;
    mounts::apply(&mounts::plan_overlay(upper, layers))?;
    mounts::pivot(mounts::NEW_ROOT)?;
    say("pivot_root into overlay done");
    mounts::apply(&mounts::plan_final())?;
    if upper == mounts::Upper::Disk {
        disks::mount_freeze_point(OVERLAY_DEVICE);
    }
    mounts::make_workspace()?;
    harden::apply_sysctls(Path::new("/proc/sys"))?;

    if let Err(e) = nix::unistd::sethostname(HOSTNAME) {
        say(&format!("warning: sethostname: {e}"));
    }
    net::setup(&cmdline);
    say(&format!(
        "boot done in {} ms (uptime {})",
        t.elapsed().as_millis(),
        std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|u| u.split_whitespace().next().map(|s| format!("{s}s")))
            .unwrap_or_else(|| "?".into())
    ));
    Ok(())
}

fn fatal(msg: &str) -> ! {
    say(&format!("FATAL: {msg}; powering off"));
    supervise::power_off()
}
