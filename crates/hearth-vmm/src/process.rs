//! Host processes of a VM: spawning them detached, recognising them again after a restart
//! (pid + start time, so a recycled pid is never mistaken for ours), and ending them.
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One process a VM owns, as recorded in `vm.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRecord {
    /// What it is: `vmm`, `vhost-vsock`.
    pub role: String,
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat` (clock ticks since boot) when we started it.
    pub start_time: u64,
}

impl ProcRecord {
    /// True while this exact process (not a later one reusing the pid) runs and is not a
    /// zombie.
    pub fn is_alive(&self) -> bool {
        match stat(self.pid) {
            Some((state, start)) => start == self.start_time && state != 'Z' && state != 'X',
            None => false,
        }
    }

    /// True while this process is stopped by a signal (SIGSTOP): state `T`.
    pub fn is_stopped(&self) -> bool {
        matches!(stat(self.pid), Some(('T', start)) if start == self.start_time)
    }

    /// Sends `sig` if the process is still ours. The pid is re-checked right before the
    /// signal; the remaining window is a pid recycled within microseconds, which needs
    /// the whole pid space to wrap around in between.
    pub fn signal(&self, sig: libc::c_int) {
        if self.is_alive() {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours.
            unsafe {
                libc::kill(self.pid as libc::pid_t, sig);
            }
        }
    }

    /// Waits up to `timeout` for the process to be gone; true if it is.
    pub async fn wait_gone(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_alive() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, then wait for it to be gone.
    pub async fn kill(&self) -> Result<()> {
        self.signal(libc::SIGKILL);
        if self.wait_gone(Duration::from_secs(10)).await {
            Ok(())
        } else {
            Err(Error::Spawn(format!(
                "{} (pid {}) survived SIGKILL for 10 s",
                self.role, self.pid
            )))
        }
    }
}

/// (state letter, start time) from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; everything after the
    // last ')' is space-separated: field 3 (state) is first, field 22 (starttime) 20th.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// How to start one VM process.
pub struct Spawn<'a> {
    pub role: &'a str,
    pub program: &'a Path,
    pub args: Vec<String>,
    /// stdout and stderr go here (appended).
    pub log: PathBuf,
    /// Network namespace (name under `/var/run/netns`) to enter before exec.
    pub netns: Option<&'a str>,
    /// Working directory (default: the caller's).
    pub cwd: Option<&'a Path>,
}

/// Starts a process in its own session (so a terminal's Ctrl-C does not reach it) and
/// without a parent-death signal (the server re-adopts VMs after it restarts). A thread
/// waits on it so it never lingers as a zombie of this process.
pub fn spawn(s: Spawn<'_>) -> Result<ProcRecord> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&s.log)
        .map_err(|e| Error::io(&s.log, e))?;
    let log2 = log.try_clone().map_err(|e| Error::io(&s.log, e))?;
    let mut cmd = Command::new(s.program);
    cmd.args(&s.args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    if let Some(dir) = s.cwd {
        cmd.current_dir(dir);
    }
    // Opened before fork: only async-signal-safe calls are allowed between fork and exec.
    let netns_file = match s.netns {
        Some(ns) => {
            let p = Path::new("/var/run/netns").join(ns);
            Some(File::open(&p).map_err(|e| Error::io(p, e))?)
        }
        None => None,
    };
    let netns_fd = netns_file.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe syscalls setsid(2) and setns(2) on an fd opened before the fork
    // (kept open by `netns_file` until spawn returns); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = netns_fd {
                if libc::setns(fd, libc::CLONE_NEWNET) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Spawn(format!("{} ({}): {e}", s.role, s.program.display())))?;
    drop(netns_file);
    let pid = child.id();
    let start_time = stat(pid).map(|(_, t)| t).unwrap_or(0);
    std::thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || {
            let _ = child.wait();
        })
        .map_err(|e| Error::Spawn(format!("reaper thread: {e}")))?;
    Ok(ProcRecord {
        role: s.role.to_string(),
        pid,
        start_time,
    })
}

/// Waits until `path` exists (a socket the process creates), failing early if the
/// process dies first.
pub async fn wait_for_path(path: &Path, proc_: &ProcRecord, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if path.exists() {
            return Ok(());
        }
        if !proc_.is_alive() {
            return Err(Error::Spawn(format!(
                "{} (pid {}) exited before creating {}",
                proc_.role,
                proc_.pid,
                path.display()
            )));
        }
        if Instant::now() >= deadline {
            return Err(Error::Spawn(format!(
                "{} did not create {} within {timeout:?}",
                proc_.role,
                path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Last `max` bytes of a log file, for error messages.
pub fn tail(path: &Path, max: usize) -> String {
    let data = std::fs::read(path).unwrap_or_default();
    let start = data.len().saturating_sub(max);
    String::from_utf8_lossy(&data[start..]).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spawned_processes_are_tracked_and_killed() {
        let dir = tempfile::tempdir().unwrap();
        let rec = spawn(Spawn {
            role: "sleeper",
            program: Path::new("/bin/sleep"),
            args: vec!["30".into()],
            log: dir.path().join("log"),
            netns: None,
            cwd: None,
        })
        .unwrap();
        assert!(rec.is_alive());
        // Own session: it is not in our process group.
        // SAFETY: getpgid/getsid take a pid and return an integer.
        let (sid, pgid) = unsafe { (libc::getsid(rec.pid as i32), libc::getpgid(rec.pid as i32)) };
        assert_eq!(sid, rec.pid as i32);
        assert_eq!(pgid, rec.pid as i32);

        // A recorded start time that does not match means "not our process".
        let impostor = ProcRecord {
            start_time: rec.start_time + 1,
            ..rec.clone()
        };
        assert!(!impostor.is_alive());

        rec.kill().await.unwrap();
        assert!(!rec.is_alive());
    }
}
