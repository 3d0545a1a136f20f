//! inotify watches on workspace directories, and turning raw events into wire events.
//!
//! A watch is added by `fchdir` into a directory fd that was resolved beneath the
//! workspace and then `inotify_add_watch(".")`, so it lands on exactly the directory we
//! resolved, whatever happens to its path meanwhile. That runs on a uid-1000 thread (it
//! needs the user's read permission, and its own cwd: see `user`). Reading events needs
//! no credentials and happens in the agent's async code ([`Watch::translate`]).

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use hearth_proto::{WatchEvent, WatchEventKind};
use rustix::fs::inotify::{self, ReadFlags, WatchFlags};
use rustix::fs::{AtFlags, FileType as Kind, OFlags};

use super::events::event;
use super::{FsError, Result, Workspace};
use crate::archive::WorkspacePath;

/// Directories one watch stream may cover; beyond it the client gets an `overflow`.
pub const MAX_WATCHES: usize = 8192;

const MASK: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::ONLYDIR)
    .union(WatchFlags::EXCL_UNLINK);

/// Watches added by one call, and what else it found.
#[derive(Debug, Default)]
pub struct Added {
    /// Watch descriptor and the directory's path as shown to the client.
    pub dirs: Vec<(i32, String)>,
    /// For a directory that appeared while watching: everything found inside it, which
    /// was created before its own watch existed.
    pub found: Vec<WatchEvent>,
    /// [`MAX_WATCHES`] was reached.
    pub full: bool,
}

/// Creates the inotify instance and watches `p` (and, if `recursive`, every directory
/// below). Runs on a uid-1000 thread.
pub fn start(ws: &Workspace, p: &WorkspacePath, recursive: bool) -> Result<(OwnedFd, Added)> {
    let dir = ws.open_at(p, OFlags::RDONLY | OFlags::DIRECTORY)?;
    let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)
        .map_err(FsError::on(p))?;
    let shown = p.to_string();
    let mut added = Added::default();
    let wd = add(fd.as_fd(), dir.as_fd()).map_err(FsError::on(p))?;
    added.dirs.push((wd, shown.clone()));
    if recursive {
        add_below(fd.as_fd(), dir.as_fd(), &shown, 1, &mut added, false);
    }
    Ok((fd, added))
}

/// Watches a directory that appeared at `shown` (and what is below it), reporting what
/// it already holds as `create` events. Runs on a uid-1000 thread.
pub fn add_new(inotify: BorrowedFd<'_>, ws: &Workspace, shown: &str, watched: usize) -> Added {
    let mut added = Added::default();
    // A name we cannot address again (not UTF-8, or a backslash) is not watched.
    let Ok(p) = WorkspacePath::parse(shown) else {
        return added;
    };
    let Ok(dir) = ws.open_at(&p, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW) else {
        return added;
    };
    if watched >= MAX_WATCHES {
        added.full = true;
        return added;
    }
    if let Ok(wd) = add(inotify, dir.as_fd()) {
        added.dirs.push((wd, shown.to_string()));
        add_below(inotify, dir.as_fd(), shown, watched + 1, &mut added, true);
    }
    added
}

fn add(inotify: BorrowedFd<'_>, dir: BorrowedFd<'_>) -> rustix::io::Result<i32> {
    rustix::process::fchdir(dir)?;
    let wd = inotify::add_watch(inotify, c".", MASK);
    // Leave at once: a cwd inside would pin the directory, and its removal would not be
    // reported (`DELETE_SELF` comes when the last reference goes).
    rustix::process::chdir(c"/")?;
    wd
}

/// Adds watches to every directory below `dir`, depth-first, never through a symlink.
fn add_below(
    inotify: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    shown: &str,
    mut watched: usize,
    added: &mut Added,
    report: bool,
) -> usize {
    let Ok(list) = rustix::fs::Dir::read_from(dir) else {
        return watched;
    };
    for entry in list.flatten() {
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let path = format!("{shown}/{}", String::from_utf8_lossy(name.to_bytes()));
        let Ok(st) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        if report {
            added
                .found
                .push(event(WatchEventKind::Create, path.clone()));
        }
        if Kind::from_raw_mode(st.st_mode) != Kind::Directory {
            continue;
        }
        if watched >= MAX_WATCHES {
            added.full = true;
            return watched;
        }
        let Ok(sub) = open_child(dir, name) else {
            continue;
        };
        if let Ok(wd) = add(inotify, sub.as_fd()) {
            watched += 1;
            added.dirs.push((wd, path.clone()));
            watched = add_below(inotify, sub.as_fd(), &path, watched, added, report);
        }
    }
    watched
}

fn open_child(dir: BorrowedFd<'_>, name: &CStr) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let resolve = rustix::fs::ResolveFlags::BENEATH | rustix::fs::ResolveFlags::NO_SYMLINKS;
    rustix::fs::openat2(dir, name, flags, rustix::fs::Mode::empty(), resolve)
}

/// One inotify event, owned.
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub wd: i32,
    pub flags: ReadFlags,
    pub cookie: u32,
    pub name: Option<String>,
}

/// Reads every event queued on the (non-blocking) inotify fd.
pub fn read_events(fd: BorrowedFd<'_>) -> rustix::io::Result<Vec<RawEvent>> {
    let mut buf = [std::mem::MaybeUninit::uninit(); 64 * 1024];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    let mut out = Vec::new();
    loop {
        match reader.next() {
            Ok(e) => out.push(RawEvent {
                wd: e.wd(),
                flags: e.events(),
                cookie: e.cookie(),
                name: e
                    .file_name()
                    .map(|n| String::from_utf8_lossy(n.to_bytes()).into_owned()),
            }),
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(out),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}
