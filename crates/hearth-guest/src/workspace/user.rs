//! Threads that act as uid 1000.
//!
//! File operations must get the kernel's permission checks of user code, not the root
//! agent's. Linux keeps credentials per thread (POSIX's process-wide `setuid` is a C
//! library emulation that signals every thread), so a few dedicated threads drop to
//! uid/gid 1000 with no supplementary groups through the raw system calls, which change
//! only the calling thread. Moving every uid off 0 clears the thread's capabilities, so
//! it cannot switch back, override permissions or touch anything root-only. These
//! threads are never handed back to anyone else and never run other code; root work
//! stays on the tokio threads. Each also has its own cwd and umask (`CLONE_FS`), so the
//! watch code can `fchdir` into a resolved directory without affecting anyone.
//!
//! Jobs are short (open, rename, list, stat, ...): reading and writing the bytes of an
//! already opened file needs no credentials and happens elsewhere, so a slow client
//! never holds one of these threads.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use rustix::fs::{Gid, Mode, Uid};
use rustix::thread::UnshareFlags;

use super::{FsError, Result};

type Job = Box<dyn FnOnce() + Send>;

/// A pool of uid-1000 threads; cheap to clone.
#[derive(Debug, Clone)]
pub struct UserThreads {
    tx: Sender<Job>,
}

impl UserThreads {
    /// Starts `count` threads as `uid`/`gid`; fails if any cannot drop its credentials.
    pub fn start(count: usize, uid: u32, gid: u32) -> std::io::Result<UserThreads> {
        // A thread changing its uid makes the kernel mark the whole process
        // non-dumpable (see `commit_creds`); say so explicitly: user code of the same uid
        // must never be able to ptrace or read the memory of the agent through them.
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..count {
            let rx = rx.clone();
            let (ready_tx, ready_rx) = mpsc::channel();
            std::thread::Builder::new()
                .name(format!("uid{uid}-{i}"))
                .spawn(move || {
                    let setup = become_user(uid, gid);
                    let ok = setup.is_ok();
                    let _ = ready_tx.send(setup);
                    if ok {
                        serve(&rx);
                    }
                })?;
            ready_rx
                .recv()
                .map_err(|_| std::io::Error::other("user thread died during set-up"))??;
        }
        Ok(UserThreads { tx })
    }

    /// Runs `f` on one of the threads and waits for its result.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.spawn(move || {
            let _ = tx.send(f());
        });
        rx.await.unwrap_or_else(|_| {
            Err(FsError::Io {
                context: "file operation".into(),
                source: std::io::Error::other("the uid-1000 worker failed"),
            })
        })
    }

    /// Queues `f` without waiting (clean-ups).
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        // The receiving threads live as long as the process; a send cannot fail.
        let _ = self.tx.send(Box::new(f));
    }
}

/// Starts a thread that is confined to the directory `root` (its own root: a chroot of
/// this thread only, which `CLONE_FS` makes possible) and runs as `uid`/`gid`, then runs
/// `f` on it. For work that resolves many paths with plain path-based calls, such as
/// extracting or packing an archive: absolute paths, `..` and symlinks all stay inside
/// `root`, and no `/proc` is reachable there, so no magic link leads out either. The
/// thread ends with `f`.
pub fn spawn_confined<F>(
    root: BorrowedFd<'_>,
    uid: u32,
    gid: u32,
    name: &str,
    f: F,
) -> std::io::Result<()>
where
    F: FnOnce() + Send + 'static,
{
    let root = root.try_clone_to_owned()?;
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let setup = confine(root, uid, gid);
            let ok = setup.is_ok();
            let _ = ready_tx.send(setup);
            if ok {
                f();
            }
        })?;
    ready_rx
        .recv()
        .map_err(|_| std::io::Error::other("confined thread died during set-up"))?
}

fn confine(root: OwnedFd, uid: u32, gid: u32) -> std::io::Result<()> {
    // SAFETY: as in `become_user`: only this thread's root, cwd and umask are unshared.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS)? };
    // Still root here (CAP_SYS_CHROOT); the uid change below then drops every capability,
    // so the thread can never chroot (or do anything privileged) again.
    rustix::process::fchdir(&root)?;
    rustix::process::chroot(".")?;
    rustix::process::chdir("/")?;
    drop(root);
    become_user_after_unshare(uid, gid)
}

fn become_user(uid: u32, gid: u32) -> std::io::Result<()> {
    // SAFETY: CLONE_FS gives this thread its own root, cwd and umask; it changes no
    // file descriptor table (CLONE_FILES), so no other thread's fds are affected.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS)? };
    become_user_after_unshare(uid, gid)
}

fn become_user_after_unshare(uid: u32, gid: u32) -> std::io::Result<()> {
    rustix::thread::set_thread_groups(&[])?;
    let gid = Gid::from_raw(gid);
    rustix::thread::set_thread_res_gid(gid, gid, gid)?;
    let uid = Uid::from_raw(uid);
    rustix::thread::set_thread_res_uid(uid, uid, uid)?;
    rustix::process::umask(Mode::from(0o022));
    Ok(())
}

fn serve(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        // A panicking job drops its reply channel (the caller sees an error); the
        // thread itself stays for the next job.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The threads really are uid 1000 without capabilities (needs root to start).
    #[tokio::test]
    async fn jobs_run_as_the_user_without_privileges() {
        let pool = UserThreads::start(2, 1000, 1000).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"x").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let (ids, read) = pool
            .run(move || {
                let ids = (
                    rustix::process::getuid().as_raw(),
                    rustix::process::getgid().as_raw(),
                );
                Ok((ids, std::fs::read(&secret).map_err(|e| e.kind())))
            })
            .await
            .unwrap();
        assert_eq!(ids, (1000, 1000));
        assert_eq!(read, Err(std::io::ErrorKind::PermissionDenied));
        // The calling (tokio) thread kept root.
        assert!(rustix::process::getuid().is_root());
    }
}
