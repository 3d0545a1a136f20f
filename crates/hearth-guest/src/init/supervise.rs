//! PID 1's steady state: keep the agent running (restart with backoff), reap every
//! orphan, and turn SIGTERM/SIGINT (Ctrl-Alt-Del) into a clean power-off.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::say;

const HANDLED: [Signal; 4] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
];

/// Restart delays: quick for a one-off crash, capped for a crash loop, reset once the
/// agent has stayed up for a while.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(5);
    pub const HEALTHY_AFTER: Duration = Duration::from_secs(10);

    pub fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    /// The delay before the next start, given how long the last run lasted.
    pub fn after_exit(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= Self::HEALTHY_AFTER {
            self.next = Self::FIRST;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

extern "C" fn ignore(_: libc::c_int) {}

/// Blocks the signals init handles so they queue for `sigtimedwait`. A real (empty)
/// handler is installed too: the kernel discards default-action signals sent to PID 1.
pub fn block_signals() -> nix::Result<SigSet> {
    let mut set = SigSet::empty();
    for s in HANDLED {
        set.add(s);
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(ignore),
            nix::sys::signal::SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: the handler does nothing, so it is async-signal-safe, and it is
        // never run anyway while the signal stays blocked.
        unsafe { nix::sys::signal::sigaction(s, &action) }?;
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    Ok(set)
}

/// Waits for one of `set` up to `timeout`; `None` on timeout or interruption.
fn wait_signal(set: &SigSet, timeout: Duration) -> Option<Signal> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` is a valid sigset_t, `ts` outlives the call, and a null siginfo
    // pointer is allowed.
    let r = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    if r < 0 {
        return None;
    }
    Signal::try_from(r).ok()
}

struct Agent {
    pid: Option<Pid>,
    started: Instant,
    restart_at: Option<Instant>,
    backoff: Backoff,
}

fn spawn_agent(path: &Path, agent: &mut Agent) {
    // std resets the signal mask and dispositions in the child, so the agent does not
    // inherit init's blocked signals.
    let r = Command::new(path)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        .current_dir("/")
        // Output goes to the console; input must not, or the agent would eat serial input.
        .stdin(Stdio::null())
        .spawn();
    agent.started = Instant::now();
    agent.restart_at = None;
    match r {
        Ok(child) => {
            let pid = child.id();
            say(&format!("agent started: {} (pid {pid})", path.display()));
            agent.pid = Some(Pid::from_raw(pid as i32));
        }
        Err(e) => {
            let delay = agent.backoff.after_exit(Duration::ZERO);
            say(&format!(
                "cannot start agent {}: {e}; retrying in {} ms",
                path.display(),
                delay.as_millis()
            ));
            agent.pid = None;
            agent.restart_at = Some(Instant::now() + delay);
        }
    }
}

fn describe(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("killed by {sig}"),
        other => format!("{other:?}"),
    }
}

/// Reaps every finished child; returns the agent's status if it was among them.
fn reap(agent_pid: Option<Pid>) -> Option<WaitStatus> {
    let mut agent_status = None;
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return agent_status,
            Ok(status) => {
                if status.pid().is_some() && status.pid() == agent_pid {
                    agent_status = Some(status);
                }
            }
        }
    }
}

pub fn run(signals: SigSet, agent_path: &Path) -> ! {
    let mut agent = Agent {
        pid: None,
        started: Instant::now(),
        restart_at: None,
        backoff: Backoff::new(),
    };
    spawn_agent(agent_path, &mut agent);
    loop {
        let timeout = agent
            .restart_at
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        match wait_signal(&signals, timeout) {
            Some(Signal::SIGCHLD) => {
                if let Some(status) = reap(agent.pid) {
                    let delay = agent.backoff.after_exit(agent.started.elapsed());
                    say(&format!(
                        "agent {} after {} ms; restarting in {} ms",
                        describe(&status),
                        agent.started.elapsed().as_millis(),
                        delay.as_millis()
                    ));
                    agent.pid = None;
                    agent.restart_at = Some(Instant::now() + delay);
                }
            }
            Some(sig @ (Signal::SIGTERM | Signal::SIGINT)) => {
                say(&format!("{sig} received: shutting down"));
                shutdown();
            }
            Some(_) => {}
            None => {}
        }
        if agent.restart_at.is_some_and(|t| Instant::now() >= t) {
            spawn_agent(agent_path, &mut agent);
        }
    }
}

/// Asks every process to stop, gives them a moment, kills the rest, syncs, powers off.
fn shutdown() -> ! {
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Err(nix::errno::Errno::ECHILD) => break,
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(20)),
            _ => {}
        }
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    while waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG))
        .is_ok_and(|s| s != WaitStatus::StillAlive)
    {}
    power_off()
}

/// Syncs and ends the VM. A reset, not a power-off: without ACPI (QEMU `-M microvm`,
/// Firecracker) a power-off only halts the CPU, while `reboot=k` makes the reset hit
/// the keyboard controller, which Firecracker treats as exit and QEMU `-no-reboot` too.
pub fn power_off() -> ! {
    nix::unistd::sync();
    say("sync done; resetting the VM");
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    // Only reached if not PID 1 or lacking CAP_SYS_BOOT (e.g. a test run on a host).
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets_when_healthy() {
        let mut b = Backoff::new();
        let quick = Duration::from_millis(5);
        let delays: Vec<u128> = (0..8).map(|_| b.after_exit(quick).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(b.after_exit(Duration::from_secs(11)), Backoff::FIRST);
        assert_eq!(b.after_exit(quick), Duration::from_millis(200));
    }

    /// `reap` waits for *any* child, which would steal statuses from other tests in this
    /// process; so the real check runs alone in a re-executed copy of the test binary.
    #[test]
    fn reaping_collects_a_real_child() {
        if std::env::var_os("HEARTH_REAP_CHILD").is_some() {
            // Deliberately not waited on through `Child`: `reap` must collect them.
            let pid = Pid::from_raw(Command::new("true").spawn().unwrap().id() as i32);
            let orphan = Command::new("sh")
                .args(["-c", "exit 3"])
                .spawn()
                .unwrap()
                .id();
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut got = None;
            while got.is_none() && Instant::now() < deadline {
                got = reap(Some(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(got, Some(WaitStatus::Exited(pid, 0)));
            std::thread::sleep(Duration::from_millis(200));
            reap(Some(pid));
            let opid = Pid::from_raw(orphan as i32);
            assert_eq!(
                waitpid(opid, Some(WaitPidFlag::WNOHANG)),
                Err(nix::errno::Errno::ECHILD),
                "orphan reaped too"
            );
            return;
        }
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "init::supervise::tests::reaping_collects_a_real_child",
                "--test-threads=1",
            ])
            .env("HEARTH_REAP_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
    }
}
