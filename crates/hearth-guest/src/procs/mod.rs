//! Processes that outlive the request that started them.
//!
//! A process is started through [`crate::jail::spawn`] exactly like `/exec` (so whatever
//! the jail applies, applies here too) and then belongs to the [`Table`], not to a
//! request: a task waits for it, pumps read its output into an [`OutputBuf`] (so a
//! reader that comes back later gets what it missed), and its stdin stays open for
//! later writes. It ends on its own, by its `timeout`, when a client kills it, or with
//! the VM.
//!
//! Retention: running processes are all kept (at most
//! [`hearth_proto::MAX_RUNNING_PROCESSES`]); of the exited ones the last
//! [`hearth_proto::KEEP_EXITED_PROCESSES`] are kept, with their output, the oldest
//! dropped first. A new process that reuses the pid of a kept one replaces it.

mod kill;
mod output;
mod pty;

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hearth_proto::{
    DroppedOutput, OutputStream, ProcessInfo, ProcessState, PtySize, KEEP_EXITED_PROCESSES,
};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::ChildStdin;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use kill::{kill_tree, signal_name};
pub use output::{Chunk, OutputBuf};
pub use pty::{async_fd, Pty, VEOF};

use crate::jail::{self, Jail, JailError, JailedChild, SpawnSpec};

/// How long output is still collected after the process exited (children it left
/// behind may hold the pipes open; we do not wait for them). As for `/exec`.
const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// What to start; `spawn.cwd` is the jail path, `cwd` echoes it back.
#[derive(Debug, Clone)]
pub struct StartSpec {
    pub spawn: SpawnSpec,
    pub cmd: String,
    pub args: Option<Vec<String>>,
    pub stdin: bool,
    pub pty: Option<PtySize>,
    pub timeout: Option<Duration>,
    /// Output bytes kept.
    pub keep: usize,
}

/// Where `POST .../stdin` writes.
#[derive(Debug)]
pub enum Stdin {
    Pipe(ChildStdin),
    Pty(Arc<Pty>),
}

#[derive(Debug)]
pub struct Process {
    pub pid: u32,
    order: u64,
    info: Mutex<ProcessInfo>,
    output: Mutex<OutputBuf>,
    changed: watch::Sender<u64>,
    /// `None` once closed (or never opened).
    pub stdin: tokio::sync::Mutex<Option<Stdin>>,
    pub pty: Option<Arc<Pty>>,
    /// The cgroup holding it and everything it started (`jail::spawn`), so a kill also
    /// reaches children that left its session with `setsid`.
    cgroup: std::path::PathBuf,
}

/// What a reader sees at one moment.
#[derive(Debug)]
pub struct Snapshot {
    pub dropped: Option<DroppedOutput>,
    pub chunks: Vec<Chunk>,
    /// Set once the process has exited; all its output is then in `chunks`.
    pub exit: Option<ProcessInfo>,
}

impl Process {
    pub fn info(&self) -> ProcessInfo {
        let mut info = self.info.lock().expect("no panics under the lock").clone();
        info.output_dropped = self.output.lock().expect("no panics").dropped_bytes();
        info
    }

    pub fn is_running(&self) -> bool {
        self.info.lock().expect("no panics").state == ProcessState::Running
    }

    /// Changes (new output, exit, resize) bump the value; subscribe before reading.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Output after `seq`, and the exit record if the process has ended. The state is
    /// read before the output: once it says exited, the output is complete.
    pub fn snapshot(&self, seq: u64) -> Snapshot {
        let exited = !self.is_running();
        let (dropped, chunks) = self.output.lock().expect("no panics").after(seq);
        Snapshot {
            dropped,
            chunks,
            exit: exited.then(|| self.info()),
        }
    }

    /// SIGKILLs everything it started: its cgroup at once (`cgroup.kill`, which also
    /// catches `setsid` escapees), then its group and session for good measure. After it
    /// exited, only what it left running is hit: the cgroup is its own and never reused.
    pub fn kill_all(&self) {
        let _ = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
        if self.is_running() || !std::path::Path::new(&format!("/proc/{}", self.pid)).exists() {
            kill_tree(self.pid);
        }
    }

    pub fn set_pty_size(&self, size: PtySize) -> std::io::Result<()> {
        if let Some(pty) = &self.pty {
            pty.resize(size)?;
            self.info.lock().expect("no panics").pty = Some(size);
        }
        Ok(())
    }

    /// Records that stdin was closed.
    pub fn stdin_closed(&self) {
        self.info.lock().expect("no panics").stdin = false;
    }

    fn push(&self, stream: OutputStream, data: &[u8]) {
        self.output.lock().expect("no panics").push(stream, data);
        self.changed.send_modify(|v| *v += 1);
    }
}

/// Every process the agent started and still remembers.
#[derive(Debug, Default)]
pub struct Table {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    procs: BTreeMap<u32, Arc<Process>>,
    /// Exited pids, oldest first.
    exited: VecDeque<u32>,
}

impl Table {
    pub fn get(&self, pid: u32) -> Option<Arc<Process>> {
        self.inner
            .lock()
            .expect("no panics")
            .procs
            .get(&pid)
            .cloned()
    }

    /// All kept processes, in the order they were started.
    pub fn list(&self) -> Vec<ProcessInfo> {
        let mut procs: Vec<Arc<Process>> = {
            let inner = self.inner.lock().expect("no panics");
            inner.procs.values().cloned().collect()
        };
        procs.sort_by_key(|p| p.order);
        procs.iter().map(|p| p.info()).collect()
    }

    pub fn running(&self) -> usize {
        let inner = self.inner.lock().expect("no panics");
        inner.procs.values().filter(|p| p.is_running()).count()
    }

    /// Forgets an exited process.
    pub fn remove(&self, pid: u32) {
        let mut inner = self.inner.lock().expect("no panics");
        inner.procs.remove(&pid);
        inner.exited.retain(|p| *p != pid);
    }

    fn insert(&self, p: Arc<Process>) {
        let mut inner = self.inner.lock().expect("no panics");
        inner.exited.retain(|old| *old != p.pid);
        inner.procs.insert(p.pid, p);
    }

    fn retire(&self, p: &Arc<Process>) {
        let mut inner = self.inner.lock().expect("no panics");
        // Still ours (not forgotten or replaced meanwhile)?
        if !inner.procs.get(&p.pid).is_some_and(|q| Arc::ptr_eq(q, p)) {
            return;
        }
        inner.exited.push_back(p.pid);
        while inner.exited.len() > KEEP_EXITED_PROCESSES {
            if let Some(old) = inner.exited.pop_front() {
                inner.procs.remove(&old);
            }
        }
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Starts `spec` in the jail and hands it to `table`. Must be called from a task on the
/// runtime's worker threads, never from a blocking-pool thread: the jail's parent-death
/// signal is tied to the thread that forks, and blocking threads come and go.
pub fn start(table: &Arc<Table>, jail: &Jail, mut spec: StartSpec) -> jail::Result<Arc<Process>> {
    let (pty, stdio) = match spec.pty {
        Some(size) => {
            let (pty, slave) = pty::open(&jail.root, size, jail.uid, jail.gid)
                .map_err(JailError::io("opening a pseudo-terminal"))?;
            let dup = |fd: &OwnedFd| {
                fd.try_clone()
                    .map(Stdio::from)
                    .map_err(JailError::io("duplicating the terminal"))
            };
            let stdio = [dup(&slave)?, dup(&slave)?, Stdio::from(slave)];
            spec.spawn.controlling_tty = true;
            (Some(Arc::new(pty)), stdio)
        }
        None => {
            let stdin = if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            };
            (None, [stdin, Stdio::piped(), Stdio::piped()])
        }
    };
    let mut child = jail::spawn(jail, &spec.spawn, stdio)?;
    let pid = child
        .id()
        .ok_or_else(|| JailError::Setup("the child has no pid".into()))?;
    static ORDER: AtomicU64 = AtomicU64::new(0);
    let stdin = match (&pty, child.stdin.take()) {
        (Some(pty), _) => Some(Stdin::Pty(pty.clone())),
        (None, Some(pipe)) => Some(Stdin::Pipe(pipe)),
        (None, None) => None,
    };
    let info = ProcessInfo {
        pid,
        cmd: spec.cmd,
        args: spec.args,
        cwd: spec.spawn.cwd.clone(),
        state: ProcessState::Running,
        exit_code: None,
        signal: None,
        timed_out: false,
        started_at: now(),
        ended_at: None,
        pty: spec.pty,
        stdin: stdin.is_some(),
        output_dropped: 0,
        oom_killed: false,
    };
    let process = Arc::new(Process {
        pid,
        order: ORDER.fetch_add(1, Ordering::Relaxed),
        info: Mutex::new(info),
        output: Mutex::new(OutputBuf::new(spec.keep)),
        changed: watch::channel(0).0,
        stdin: tokio::sync::Mutex::new(stdin),
        pty: pty.clone(),
        cgroup: child.cgroup().path().to_path_buf(),
    });
    let pumps = match pty {
        Some(pty) => vec![tokio::spawn(pump_pty(process.clone(), pty))],
        None => vec![
            tokio::spawn(pump(
                process.clone(),
                child.stdout.take(),
                OutputStream::Stdout,
            )),
            tokio::spawn(pump(
                process.clone(),
                child.stderr.take(),
                OutputStream::Stderr,
            )),
        ],
    };
    table.insert(process.clone());
    tokio::spawn(wait(
        table.clone(),
        process.clone(),
        child,
        pumps,
        spec.timeout,
    ));
    Ok(process)
}

async fn pump(p: Arc<Process>, src: Option<impl AsyncRead + Unpin>, stream: OutputStream) {
    let Some(mut src) = src else { return };
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = src.read(&mut buf).await {
        p.push(stream, &buf[..n]);
    }
}

async fn pump_pty(p: Arc<Process>, pty: Arc<Pty>) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = pty.read(&mut buf).await {
        p.push(OutputStream::Stdout, &buf[..n]);
    }
}

/// Waits for the process to end (or kills it at its timeout), collects the rest of its
/// output and records how it ended.
async fn wait(
    table: Arc<Table>,
    p: Arc<Process>,
    mut child: JailedChild,
    pumps: Vec<JoinHandle<()>>,
    timeout: Option<Duration>,
) {
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let mut timed_out = false;
    let status = tokio::select! {
        s = child.wait() => s,
        _ = deadline => {
            timed_out = true;
            let _ = child.kill_all();
            kill_tree(p.pid);
            child.wait().await
        }
    };
    let aborts: Vec<_> = pumps.iter().map(|h| h.abort_handle()).collect();
    let drained = async {
        for h in pumps {
            let _ = h.await;
        }
    };
    if tokio::time::timeout(DRAIN_GRACE, drained).await.is_err() {
        aborts.iter().for_each(|h| h.abort());
    }
    p.output.lock().expect("no panics").flush();
    // Closes a pipe; for a PTY the master stays with `p.pty` for late readers.
    p.stdin.lock().await.take();
    {
        let mut info = p.info.lock().expect("no panics");
        info.state = ProcessState::Exited;
        info.timed_out = timed_out;
        info.ended_at = Some(now());
        info.stdin = false;
        info.oom_killed = child.oom_killed();
        match status {
            Ok(s) => {
                info.exit_code = s.code().or_else(|| s.signal().map(|n| 128 + n));
                info.signal = s.signal().map(signal_name);
            }
            Err(_) => info.exit_code = Some(-1),
        }
    }
    p.changed.send_modify(|v| *v += 1);
    table.retire(&p);
}
