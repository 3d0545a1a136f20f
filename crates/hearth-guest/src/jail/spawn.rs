//! Starting one process inside the jail.

use std::ffi::CString;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::cgroup::RunCgroup;
use super::{Jail, JailError, Result};

/// `RLIMIT_NPROC` for user code: generous for builds and worker pools.
pub const MAX_USER_PROCS: libc::rlim_t = 4096;

/// What to start. `cwd` is a path inside the jail; `env` is the complete environment.
#[derive(Debug, Clone, Default)]
pub struct SpawnSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    /// Make stdin (a pty slave) the new session's controlling terminal.
    pub controlling_tty: bool,
}

fn cstr(s: impl AsRef<std::ffi::OsStr>) -> Result<CString> {
    CString::new(s.as_ref().as_bytes())
        .map_err(|_| JailError::Setup(format!("{:?} contains a NUL byte", s.as_ref())))
}

/// Turns a -1 return into the current `errno` as an `io::Error`.
fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A jailed process and the cgroup holding it and everything it starts. Derefs to the
/// tokio [`Child`]. Dropped while the main process still runs (a cancelled request),
/// it kills the whole cgroup; dropped after the main process ended, it leaves any
/// background processes running, and their cgroup is removed once they are gone.
#[derive(Debug)]
pub struct JailedChild {
    child: Child,
    cgroup: RunCgroup,
}

impl JailedChild {
    /// SIGKILLs the main process and everything it started (`cgroup.kill`).
    pub fn kill_all(&self) -> io::Result<()> {
        self.cgroup.kill()
    }

    /// Whether the OOM killer killed one of this run's processes.
    pub fn oom_killed(&self) -> bool {
        self.cgroup.oom_killed()
    }

    pub fn cgroup(&self) -> &RunCgroup {
        &self.cgroup
    }
}

impl Deref for JailedChild {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl DerefMut for JailedChild {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for JailedChild {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.cgroup.kill();
        }
    }
}

/// Starts `spec` jailed, with the given standard streams, in a cgroup of its own. The
/// child also leads its own session and process group (pgid == pid).
pub fn spawn(jail: &Jail, spec: &SpawnSpec, stdio: [Stdio; 3]) -> Result<JailedChild> {
    // Everything the child needs is allocated here, in the parent: after fork only
    // async-signal-safe calls are allowed, which rules out allocation.
    let root = cstr(jail.root.as_os_str())?;
    let cwd = cstr(&spec.cwd)?;
    let (uid, gid) = (jail.uid, jail.gid);
    let controlling_tty = spec.controlling_tty;
    let slash = c"/";
    let oom_adj = c"/proc/self/oom_score_adj";
    let mut cgroup = jail.cgroups.new_run()?;
    let procs = cgroup
        .take_procs()
        .expect("a new run cgroup has its procs fd");
    let procs_fd = procs.as_raw_fd();
    let seccomp = jail.seccomp.clone();

    let [stdin, stdout, stderr] = stdio;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec. It only makes raw
    // system calls (write, open, close, sigprocmask (after sigemptyset on a local set),
    // setsid, ioctl, chroot, chdir, prctl, setrlimit, setgroups, setres[ug]id, umask,
    // seccomp), all async-signal-safe, and only reads
    // the CStrings, the descriptor and the compiled filters prepared above, which the
    // closure owns or shares read-only; it allocates nothing, takes no locks and touches
    // no shared state, so it cannot deadlock on a lock another parent thread held at fork
    // time. `io::Error::last_os_error` only reads errno. `procs_fd` stays open in the
    // parent until `spawn` returns (`procs` is dropped at the end of this function).
    unsafe {
        cmd.pre_exec(move || {
            // First, as root: into the run's cgroup, so everything from here on (and every
            // descendant) is counted, limited and killable as one.
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(io::Error::last_os_error());
            }
            // The agent runs with oom_score_adj -1000 (from init); user code must be the
            // OOM killer's first choice, not immune.
            let fd = libc::open(oom_adj.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd == -1 {
                return Err(io::Error::last_os_error());
            }
            let wrote = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if wrote != 1 {
                return Err(io::Error::last_os_error());
            }
            // Init blocks the signals it waits for, and a blocked mask survives fork and
            // exec: user code must start with none blocked, or a TERM, INT or HUP sent to
            // it (`POST .../signal`, a terminal's Ctrl-C) would stay pending for ever.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            check(libc::sigprocmask(
                libc::SIG_SETMASK,
                &none,
                std::ptr::null_mut(),
            ))?;
            check(libc::setsid())?;
            if controlling_tty {
                // Only a session leader without a terminal may take one: right after setsid.
                check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
            }
            check(libc::chroot(root.as_ptr()))?;
            check(libc::chdir(slash.as_ptr()))?;
            // Empty the bounding set while we still hold CAP_SETPCAP; the uid change below
            // clears the permitted/effective/ambient sets. EINVAL marks the end of the
            // kernel's capability list.
            for cap in 0..64 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) == -1
                    && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
                {
                    break;
                }
            }
            // Still root, so this may raise the hard limit too. A fork bomb stops at this
            // many processes of uid 1000 instead of exhausting the guest's pids (the agent,
            // as root, is not counted against it).
            let nproc = libc::rlimit {
                rlim_cur: MAX_USER_PROCS,
                rlim_max: MAX_USER_PROCS,
            };
            check(libc::setrlimit(libc::RLIMIT_NPROC, &nproc))?;
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(gid, gid, gid))?;
            check(libc::setresuid(uid, uid, uid))?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            // Set after the uid change, which clears it. If the agent dies, so does the
            // leader; the rest of the group is killed by the agent's timeout handling.
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            check(libc::setrlimit(libc::RLIMIT_CORE, &no_core))?;
            libc::umask(0o022);
            // As the user, so a cwd the user may not enter fails here.
            check(libc::chdir(cwd.as_ptr()))?;
            // Last, after no-new-privs (which it requires): from here on the deny list
            // applies, to exec and everything after it.
            seccomp.apply()?;
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| JailError::Spawn {
        program: spec.program.clone(),
        source,
    })?;
    drop(procs);
    Ok(JailedChild { child, cgroup })
}
