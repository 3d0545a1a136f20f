//! Resolving workspace paths without ever leaving the workspace.
//!
//! Every lookup starts at one directory fd of `/workspace` and goes through
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the kernel refuses any step that
//! would leave that directory (`..` past it, an absolute symlink, a relative one climbing
//! out, `/proc` magic links), and it does so during the one walk that also opens the
//! result, so user code swapping a directory for a symlink between a check and a use
//! has no window. Later steps work `*at()` on the fds obtained here and never resolve a
//! path string again. Symlinks that stay inside are followed on the way; the last
//! component is left to each operation (see `ops`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::{FsError, Result};
use crate::archive::WorkspacePath;

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);
/// openat2 answers EAGAIN when a concurrent rename may have raced a `..` step; retry.
const EAGAIN_RETRIES: usize = 16;

/// Parses a client's path (`rel`, `/workspace/rel`; no `..`, NUL or over-long parts).
pub fn parse(raw: &str) -> Result<WorkspacePath> {
    WorkspacePath::parse(raw).map_err(|source| FsError::BadPath {
        path: raw.to_string(),
        source,
    })
}

/// The workspace directory, held open for the agent's lifetime.
#[derive(Debug)]
pub struct Workspace {
    fd: OwnedFd,
}

impl Workspace {
    /// Opens `dir` (the jail's `/workspace`, as the agent sees it) as the anchor.
    pub fn open(dir: &Path) -> std::io::Result<Workspace> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(dir, flags, Mode::empty())?;
        Ok(Workspace { fd })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens `p` with `flags` beneath the workspace, following symlinks that stay inside.
    pub fn open_at(&self, p: &WorkspacePath, flags: OFlags) -> Result<OwnedFd> {
        open_beneath(self.fd(), rel(p), flags).map_err(FsError::on(p))
    }

    /// The directory that holds `p` (opened `O_PATH`) and `p`'s last component, which is
    /// not resolved: each operation decides whether a symlink there is followed.
    pub fn parent(&self, p: &WorkspacePath, op: &'static str) -> Result<(OwnedFd, String)> {
        let Some(name) = p.file_name() else {
            return Err(FsError::Root { op });
        };
        let parent = p.as_str()[..p.as_str().len() - name.len()].trim_end_matches('/');
        let flags = OFlags::PATH | OFlags::DIRECTORY;
        let fd = open_beneath(
            self.fd(),
            if parent.is_empty() { "." } else { parent },
            flags,
        )
        .map_err(|e| {
            let shown = match parent {
                "" => hearth_proto::WORKSPACE.to_string(),
                p => format!("{}/{p}", hearth_proto::WORKSPACE),
            };
            FsError::from_io(shown, e.into())
        })?;
        Ok((fd, name.to_string()))
    }

    /// Creates `p` and every missing directory above it (mode 0755), like `mkdir -p`.
    /// Returns whether `p` itself was created.
    pub fn mkdir_all(&self, p: &WorkspacePath) -> Result<bool> {
        let mut at = WorkspacePath::root();
        let mut created = false;
        for c in p.components() {
            at = at.join(&parse(c)?).map_err(|source| FsError::BadPath {
                path: p.to_string(),
                source,
            })?;
            let (dir, name) = self.parent(&at, "mkdir")?;
            created = match rustix::fs::mkdirat(&dir, name.as_str(), Mode::from(0o755)) {
                Ok(()) => true,
                Err(Errno::EXIST) => false,
                Err(e) => return Err(FsError::from_io(&at, e.into())),
            };
        }
        // An existing non-directory (or a symlink out) must not pass as done.
        self.open_at(p, OFlags::PATH | OFlags::DIRECTORY)?;
        Ok(created)
    }
}

/// `p` relative to the workspace fd (`.` for the root).
fn rel(p: &WorkspacePath) -> &str {
    if p.is_root() {
        "."
    } else {
        p.as_str()
    }
}

/// One `openat2` beneath `dir`. Plain `O_CLOEXEC`; never creates.
pub(crate) fn open_beneath(
    dir: BorrowedFd<'_>,
    path: &str,
    flags: OFlags,
) -> std::result::Result<OwnedFd, Errno> {
    // openat2 refuses any flag O_PATH ignores (open(2) drops them silently).
    let flags = if flags.contains(OFlags::PATH) {
        flags | OFlags::CLOEXEC
    } else {
        flags | OFlags::CLOEXEC | OFlags::NOCTTY
    };
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir, path, flags, Mode::empty(), RESOLVE) {
            Err(Errno::AGAIN) if tries < EAGAIN_RETRIES => tries += 1,
            other => return other,
        }
    }
}
