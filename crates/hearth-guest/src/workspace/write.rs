//! Whole-file reads and atomic replacement.
//!
//! A write goes to a fresh hidden file (`.hearth-tmp-<random>`, created `O_EXCL`,
//! mode 0600) in the target's own directory, is flushed to disk, gets its final mode, and
//! only then is renamed over the target. `rename(2)` within a directory is atomic, so a
//! reader opens either the old file or the new one, never a half-written one; a write
//! that fails (client gone, size limit, disk full) unlinks the temporary file and leaves
//! the old one as it was. `rename` replaces a symlink at the target itself and never
//! writes through it; we refuse a symlink target up front anyway (see [`FsError::Symlink`]).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use hearth_proto::FileEntry;
use rustix::fs::{AtFlags, FileType as Kind, Mode, OFlags};

use super::{FsError, Result, Workspace};
use crate::archive::WorkspacePath;

/// Prefix of the temporary files writes go through.
pub const TEMP_PREFIX: &str = ".hearth-tmp-";
/// Mode of a new file when the request names none.
const DEFAULT_MODE: u32 = 0o644;

/// Opens the regular file `p` for reading (symlinks inside the workspace followed) and
/// returns it with its size. Never blocks on a FIFO: those are refused.
pub fn open_read(ws: &Workspace, p: &WorkspacePath) -> Result<(File, u64)> {
    let fd = ws.open_at(p, OFlags::RDONLY | OFlags::NONBLOCK)?;
    let st = rustix::fs::fstat(&fd).map_err(FsError::on(p))?;
    match Kind::from_raw_mode(st.st_mode) {
        Kind::RegularFile => {}
        Kind::Directory => return Err(FsError::IsDir(p.to_string())),
        _ => return Err(FsError::NotRegular(p.to_string())),
    }
    // Regular files ignore O_NONBLOCK; clear it anyway so the reader sees plain reads.
    rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(FsError::on(p))?;
    Ok((File::from(fd), st.st_size.max(0) as u64))
}

/// A write in progress: the temporary file exists; [`PendingWrite::commit`] renames it
/// into place, [`PendingWrite::abort`] removes it.
#[derive(Debug)]
pub struct PendingWrite {
    dir: OwnedFd,
    name: String,
    temp: String,
    path: WorkspacePath,
    mode: u32,
}

impl PendingWrite {
    /// Creates the temporary file for replacing `p`. `mode` defaults to that of the file
    /// being replaced, else 0644; `parents` creates missing directories first.
    pub fn create(
        ws: &Workspace,
        p: &WorkspacePath,
        mode: Option<u32>,
        parents: bool,
    ) -> Result<(PendingWrite, File)> {
        if parents {
            if let Some(parent) = p.parent() {
                ws.mkdir_all(&parent)?;
            }
        }
        let (dir, name) = ws.parent(p, "write")?;
        let existing = match rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => match Kind::from_raw_mode(st.st_mode) {
                Kind::RegularFile => Some(st.st_mode & 0o777),
                Kind::Directory => return Err(FsError::IsDir(p.to_string())),
                Kind::Symlink => return Err(FsError::Symlink(p.to_string())),
                _ => return Err(FsError::NotRegular(p.to_string())),
            },
            Err(rustix::io::Errno::NOENT) => None,
            Err(e) => return Err(FsError::from_io(p, e.into())),
        };
        let temp = format!("{TEMP_PREFIX}{}", crate::jail::random_token());
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let fd = rustix::fs::openat(
            &dir,
            temp.as_str(),
            flags | OFlags::CLOEXEC,
            Mode::from(0o600),
        )
        .map_err(FsError::on(p))?;
        let pending = PendingWrite {
            dir,
            name,
            temp,
            path: p.clone(),
            mode: mode.or(existing).unwrap_or(DEFAULT_MODE),
        };
        Ok((pending, File::from(fd)))
    }

    pub fn path(&self) -> &WorkspacePath {
        &self.path
    }

    /// Flushes `file` (the one [`PendingWrite::create`] returned), applies the mode and
    /// renames it over the target.
    pub fn commit(self, file: File) -> Result<FileEntry> {
        let shown = self.path.to_string();
        let done = file
            .sync_data()
            .map_err(|e| FsError::from_io(&shown, e))
            .and_then(|()| {
                rustix::fs::fchmod(&file, Mode::from(self.mode)).map_err(FsError::on(&shown))
            });
        drop(file);
        let done = done.and_then(|()| {
            rustix::fs::renameat(&self.dir, self.temp.as_str(), &self.dir, self.name.as_str())
                .map_err(FsError::on(&shown))
        });
        if let Err(e) = done {
            self.abort();
            return Err(e);
        }
        super::ops::stat_in(self.dir.as_fd(), &self.name, &shown)
    }

    /// Removes the temporary file; the target is untouched.
    pub fn abort(&self) {
        let _ = rustix::fs::unlinkat(&self.dir, self.temp.as_str(), AtFlags::empty());
    }
}
