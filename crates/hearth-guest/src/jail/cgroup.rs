//! cgroup v2 for user code: one parent holds every user process, each run gets a child.
//!
//! ```text
//! /sys/fs/cgroup                  init, the agent (root cgroup: no limits)
//! └── hearth-user                 memory.max = guest memory - reserve; cpu share = one
//!     ├── <run token>             pids.max, memory.oom.group = 1; ended with cgroup.kill
//!     └── <run token>             (removed as soon as it is empty)
//! ```
//!
//! - **Memory.** The parent's `memory.max` leaves a reserve for the kernel, init and the
//!   agent: min(guest memory / 8, 128 MiB), E2B's envd choice, but never less than
//!   [`MIN_RESERVE`] (the agent alone uses a few MiB, and a 256 MiB VM's eighth is too
//!   thin a margin for its page cache and the kernel's unaccounted memory). When user code
//!   needs more, the memory-cgroup OOM killer picks a victim among user processes only;
//!   `memory.oom.group` makes it take the victim's whole run, and that run's
//!   `memory.events` `oom_kill` count is how the agent reports `oom_killed`.
//! - **Processes.** `pids.max` per run ([`DEFAULT_PIDS_MAX`]: room for `make -j`, worker
//!   pools and runtimes' thread pools, far from the 4096 the whole uid may have through
//!   `RLIMIT_NPROC`), so a fork bomb in one run stops there and the VM stays usable.
//! - **CPU.** With the `cpu` controller on, the whole user tree is one scheduling entity
//!   against the agent's threads: a fork bomb or busy loop cannot starve the agent.
//! - **Ending a run** is a write to its `cgroup.kill`: every process in it dies, setsid,
//!   double fork or not. A run whose main process exits normally keeps its background
//!   processes (`cmd &`); its cgroup lingers until they are gone and is then removed by
//!   the [`Sweeper`] (`super::sweeper`), which waits on `cgroup.events` with inotify (the
//!   kernel signals every change of `populated`).
//!
//! Controllers the kernel does not offer (a host whose cgroup v2 has no memory/pids
//! controllers, in the host tests) are skipped unless listed in
//! [`CgroupConfig::require`]; `cgroup.kill` itself needs only cgroup v2 (Linux 5.14+).

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::sweeper::Sweeper;
use super::{JailError, Result};

/// Default parent of all user code in the guest.
pub const DEFAULT_PARENT: &str = "/sys/fs/cgroup/hearth-user";
/// Default `pids.max` of one run (processes and threads).
pub const DEFAULT_PIDS_MAX: u64 = 1024;
/// Largest and smallest memory kept out of the user cgroup's reach.
pub const MAX_RESERVE: u64 = 128 << 20;
pub const MIN_RESERVE: u64 = 32 << 20;
/// Controllers the agent enables (when offered), in this order.
pub const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

#[derive(Debug, Clone)]
pub struct CgroupConfig {
    /// The cgroup v2 directory that holds all user code; created if missing. Its parent
    /// must be a cgroup v2 directory (checked: never a plain directory by mistake).
    pub parent: PathBuf,
    /// Controllers that must be available; the agent refuses to start without them.
    pub require: Vec<String>,
    pub pids_max: u64,
    /// Bytes kept from user code; `None`: [`reserve_for`] the guest's memory.
    pub memory_reserve: Option<u64>,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        CgroupConfig {
            parent: DEFAULT_PARENT.into(),
            require: vec!["memory".into(), "pids".into()],
            pids_max: DEFAULT_PIDS_MAX,
            memory_reserve: None,
        }
    }
}

/// The reserve for a guest with `total` bytes of memory (see the module docs).
pub fn reserve_for(total: u64) -> u64 {
    (total / 8).clamp(MIN_RESERVE, MAX_RESERVE)
}

/// `memory.max` of the user parent: what is left after the reserve, never below a
/// quarter of the guest (a tiny VM must still run something).
pub fn user_memory_max(total: u64, reserve: u64) -> u64 {
    total.saturating_sub(reserve).max(total / 4)
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn mem_total() -> Result<u64> {
    let text =
        fs::read_to_string("/proc/meminfo").map_err(JailError::io("reading /proc/meminfo"))?;
    parse_mem_total(&text).ok_or_else(|| JailError::Setup("no MemTotal in /proc/meminfo".into()))
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The `oom_kill` count of a `memory.events` file.
fn parse_oom_kills(events: &str) -> u64 {
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(JailError::io(format!(
        "writing {value:?} to {}",
        path.display()
    )))
}

fn is_cgroup2(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// The user parent, set up once at agent start.
#[derive(Debug)]
pub struct UserCgroups {
    parent: PathBuf,
    pids_max: Option<u64>,
    memory: bool,
    /// What was set up, for the agent's start-up log line.
    summary: String,
    sweeper: Arc<Sweeper>,
}

impl UserCgroups {
    /// Creates the parent, enables the controllers, sets its `memory.max`, and adopts
    /// what a previous agent left (runs still going are removed once they end).
    pub fn setup(cfg: &CgroupConfig) -> Result<UserCgroups> {
        let parent = &cfg.parent;
        let above = parent.parent().filter(|p| is_cgroup2(p)).ok_or_else(|| {
            JailError::Setup(format!(
                "{} is not inside a cgroup v2 hierarchy (is cgroup2 mounted?)",
                parent.display()
            ))
        })?;
        match fs::create_dir(parent) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(JailError::io(format!("creating {}", parent.display()))(e))
            }
            _ => {}
        }
        let offered = fs::read_to_string(above.join("cgroup.controllers"))
            .map_err(JailError::io("reading cgroup.controllers"))?;
        let offered: Vec<&str> = offered.split_whitespace().collect();
        for want in &cfg.require {
            if !offered.contains(&want.as_str()) {
                return Err(JailError::Setup(format!(
                    "the {want} cgroup controller is not available in {} (offered: {offered:?})",
                    above.display()
                )));
            }
        }
        let mut enabled = Vec::new();
        for c in CONTROLLERS.iter().filter(|c| offered.contains(c)) {
            // Above (so the parent has the files) and in the parent (so each run does).
            write(&above.join("cgroup.subtree_control"), &format!("+{c}"))?;
            write(&parent.join("cgroup.subtree_control"), &format!("+{c}"))?;
            enabled.push(*c);
        }
        let memory = enabled.contains(&"memory");
        let pids_max = enabled.contains(&"pids").then_some(cfg.pids_max);
        let mut summary = format!("user code in {} (", parent.display());
        if memory {
            let total = mem_total()?;
            let reserve = cfg.memory_reserve.unwrap_or_else(|| reserve_for(total));
            let max = user_memory_max(total, reserve);
            write(&parent.join("memory.max"), &max.to_string())?;
            summary += &format!("memory.max {} MiB of {} MiB, ", max >> 20, total >> 20);
        }
        if let Some(n) = pids_max {
            summary += &format!("pids.max {n} per run, ");
        }
        summary += &format!("controllers: {})", enabled.join(" "));
        let cg = UserCgroups {
            parent: parent.clone(),
            pids_max,
            memory,
            summary,
            sweeper: Arc::new(Sweeper::new()?),
        };
        for entry in fs::read_dir(parent).map_err(JailError::io("listing the user cgroup"))? {
            let Ok(entry) = entry else { continue };
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                cg.sweeper.linger(entry.path());
            }
        }
        Ok(cg)
    }

    pub fn parent(&self) -> &Path {
        &self.parent
    }

    /// One line saying where user code lives and with which limits.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// A fresh cgroup for one run, with its limits set.
    pub fn new_run(&self) -> Result<RunCgroup> {
        let dir = self.parent.join(super::random_token());
        fs::create_dir(&dir).map_err(JailError::io(format!("creating {}", dir.display())))?;
        let mut run = RunCgroup {
            procs: None,
            dir,
            sweeper: self.sweeper.clone(),
        };
        if let Some(max) = self.pids_max {
            write(&run.dir.join("pids.max"), &max.to_string())?;
        }
        if self.memory {
            write(&run.dir.join("memory.oom.group"), "1")?;
        }
        let procs = OpenOptions::new()
            .write(true)
            .open(run.dir.join("cgroup.procs"))
            .map_err(JailError::io("opening cgroup.procs"))?;
        run.procs = Some(procs.into());
        Ok(run)
    }
}

/// One run's cgroup. Dropping it never kills anything: it is removed now if empty, or
/// as soon as its last process ends.
#[derive(Debug)]
pub struct RunCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, opened by the agent; the child writes "0" to it between fork and
    /// exec to move itself in.
    procs: Option<OwnedFd>,
    sweeper: Arc<Sweeper>,
}

impl RunCgroup {
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The `cgroup.procs` descriptor for the child to join with; `None` once spawned.
    pub(crate) fn take_procs(&mut self) -> Option<OwnedFd> {
        self.procs.take()
    }

    /// SIGKILLs every process in the run at once (`cgroup.kill`).
    pub fn kill(&self) -> io::Result<()> {
        fs::write(self.dir.join("cgroup.kill"), "1")
    }

    /// Whether no process is left in the run (`populated 0` in `cgroup.events`).
    pub fn is_empty(&self) -> bool {
        fs::read_to_string(self.dir.join("cgroup.events"))
            .map(|e| e.lines().any(|l| l == "populated 0"))
            .unwrap_or(true)
    }

    /// Waits until the run has no process left, at most `limit`; false if some remain.
    /// After [`Self::kill`], the killed processes still have to run their exit.
    pub async fn wait_empty(&self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
    }

    /// Whether the OOM killer killed a process of this run.
    pub fn oom_killed(&self) -> bool {
        fs::read_to_string(self.dir.join("memory.events"))
            .map(|e| parse_oom_kills(&e) > 0)
            .unwrap_or(false)
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        self.procs = None;
        self.sweeper.linger(std::mem::take(&mut self.dir));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_an_eighth_within_bounds() {
        let mib = 1 << 20;
        let table = [
            (128 * mib, MIN_RESERVE),
            (256 * mib, MIN_RESERVE),
            (512 * mib, 64 * mib),
            (1024 * mib, 128 * mib),
            (8192 * mib, MAX_RESERVE),
        ];
        for (total, want) in table {
            assert_eq!(reserve_for(total), want, "{total}");
        }
        assert_eq!(user_memory_max(512 * mib, 64 * mib), 448 * mib);
        // An absurd reserve still leaves user code a quarter.
        assert_eq!(user_memory_max(128 * mib, 1024 * mib), 32 * mib);
    }

    #[test]
    fn meminfo_and_memory_events_parse() {
        let meminfo = "MemTotal:         492116 kB\nMemFree:          400000 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(492116 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\n";
        assert_eq!(parse_oom_kills(events), 1);
        assert_eq!(parse_oom_kills("low 0\noom 0\noom_kill 0\n"), 0);
        assert_eq!(parse_oom_kills(""), 0);
    }
}
