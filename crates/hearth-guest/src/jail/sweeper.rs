//! Removing cgroups of finished runs once their last process is gone (see
//! [`super::cgroup`]): a run whose main process exited may leave background processes.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::{JailError, Result};

/// Removes cgroups once they are empty: one thread, started on first use, blocked on an
/// inotify descriptor that watches the `cgroup.events` of every lingering cgroup.
#[derive(Debug)]
pub struct Sweeper {
    inotify: Inotify,
    pending: Mutex<HashMap<WatchDescriptor, PathBuf>>,
    thread: Once,
}

/// `rmdir` succeeds only on an empty cgroup; anything else is "not yet".
fn try_remove(dir: &Path) -> bool {
    match fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

impl Sweeper {
    pub(super) fn new() -> Result<Sweeper> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC)
            .map_err(|e| JailError::Setup(format!("inotify_init: {e}")))?;
        Ok(Sweeper {
            inotify,
            pending: Mutex::new(HashMap::new()),
            thread: Once::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WatchDescriptor, PathBuf>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes `dir` now if it is empty, else once it becomes empty.
    pub(super) fn linger(self: &Arc<Self>, dir: PathBuf) {
        if dir.as_os_str().is_empty() || try_remove(&dir) {
            return;
        }
        self.thread.call_once(|| {
            let me = self.clone();
            std::thread::Builder::new()
                .name("cgroup-sweeper".into())
                .spawn(move || me.run())
                .expect("starting the cgroup sweeper thread");
        });
        // Under the lock, so the thread cannot see an event for a descriptor it does not
        // know yet.
        {
            let mut pending = self.lock();
            match self
                .inotify
                .add_watch(&dir.join("cgroup.events"), AddWatchFlags::IN_MODIFY)
            {
                Ok(wd) => drop(pending.insert(wd, dir.clone())),
                Err(_) => return, // gone meanwhile
            }
        }
        // It may have emptied before the watch existed; its removal then ends the watch
        // (IN_IGNORED), which the thread handles.
        try_remove(&dir);
    }

    fn run(&self) {
        loop {
            let events = match self.inotify.read_events() {
                Ok(ev) => ev,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("hearth-agent: cgroup sweeper stopped: {e}");
                    return;
                }
            };
            let mut pending = self.lock();
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                    pending.remove(&ev.wd);
                } else if let Some(dir) = pending.get(&ev.wd) {
                    if try_remove(dir) {
                        pending.remove(&ev.wd);
                    }
                }
            }
        }
    }
}
