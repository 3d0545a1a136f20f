//! Stat, list, mkdir, move and delete, on fds from [`Workspace`]. All of them run on a
//! uid-1000 thread (see `user`). The last component of a path is never followed: a
//! symlink is reported, moved or deleted as itself.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, UNIX_EPOCH};

use hearth_proto::{FileEntry, FileList, FileType, MAX_LIST_ENTRIES};
use rustix::fs::{AtFlags, Dir, FileType as Kind, Mode, OFlags, RenameFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use super::{FsError, Result, Workspace};
use crate::archive::WorkspacePath;

/// Retries of a recursive delete when new entries keep appearing.
const DELETE_RETRIES: usize = 3;

/// The entry for `path` from its `lstat` (and link text).
pub fn entry_from(path: &str, st: &Stat, target: Option<String>) -> FileEntry {
    let kind = match Kind::from_raw_mode(st.st_mode) {
        Kind::RegularFile => FileType::File,
        Kind::Directory => FileType::Dir,
        Kind::Symlink => FileType::Symlink,
        _ => FileType::Other,
    };
    let name = path.rsplit('/').next().unwrap_or(path).to_string();
    let secs = Duration::from_secs(st.st_mtime.max(0) as u64);
    let mtime = UNIX_EPOCH + secs + Duration::from_nanos(st.st_mtime_nsec);
    FileEntry {
        path: path.to_string(),
        name,
        kind,
        size: st.st_size.max(0) as u64,
        mode: st.st_mode & 0o7777,
        mtime: humantime::format_rfc3339_millis(mtime).to_string(),
        target,
    }
}

/// `lstat` of `name` in `dir`, shown as `path`.
fn lstat_entry(dir: BorrowedFd<'_>, name: &CStr, path: &str) -> Result<FileEntry> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(FsError::on(path))?;
    let target = if Kind::from_raw_mode(st.st_mode) == Kind::Symlink {
        let t = rustix::fs::readlinkat(dir, name, Vec::new()).map_err(FsError::on(path))?;
        Some(String::from_utf8_lossy(t.as_bytes()).into_owned())
    } else {
        None
    };
    Ok(entry_from(path, &st, target))
}

/// The entry of `name` in `dir` (not followed), shown as `shown`.
pub fn stat_in(dir: BorrowedFd<'_>, name: &str, shown: &str) -> Result<FileEntry> {
    lstat_entry(dir, &cname(name), shown)
}

fn cname(name: &str) -> CString {
    CString::new(name).expect("workspace paths hold no NUL")
}

/// `GET /files/stat`: the entry itself (a symlink is not followed).
pub fn stat(ws: &Workspace, p: &WorkspacePath) -> Result<FileEntry> {
    if p.is_root() {
        let st = rustix::fs::fstat(ws.fd()).map_err(FsError::on(p))?;
        return Ok(entry_from(&p.to_string(), &st, None));
    }
    let (dir, name) = ws.parent(p, "stat")?;
    lstat_entry(dir.as_fd(), &cname(&name), &p.to_string())
}

/// `GET /files/list`: `depth` levels below `p` (a directory, symlinks inside followed to
/// reach it), depth-first, names sorted within each directory. Subdirectories are
/// entered with `O_NOFOLLOW` one component at a time, never through a symlink.
pub fn list(ws: &Workspace, p: &WorkspacePath, depth: u32) -> Result<FileList> {
    let fd = ws.open_at(p, OFlags::RDONLY | OFlags::DIRECTORY)?;
    let mut out = FileList::default();
    walk(fd, &p.to_string(), depth, &mut out)?;
    Ok(out)
}

/// Names in a directory except `.` and `..`, sorted by their bytes.
fn names(dir: &OwnedFd, shown: &str) -> Result<Vec<CString>> {
    let mut out = Vec::new();
    for e in Dir::read_from(dir).map_err(FsError::on(shown))? {
        let e = e.map_err(FsError::on(shown))?;
        let n = e.file_name();
        if n != c"." && n != c".." {
            out.push(n.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

fn walk(dir: OwnedFd, shown: &str, depth: u32, out: &mut FileList) -> Result<()> {
    for name in names(&dir, shown)? {
        if out.entries.len() >= MAX_LIST_ENTRIES {
            out.truncated = true;
            return Ok(());
        }
        let path = format!("{shown}/{}", String::from_utf8_lossy(name.as_bytes()));
        let entry = match lstat_entry(dir.as_fd(), &name, &path) {
            Ok(e) => e,
            // Removed since we read the directory.
            Err(FsError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        let is_dir = entry.kind == FileType::Dir;
        out.entries.push(entry);
        if is_dir && depth > 1 {
            // Swapped for a link or removed meanwhile: skip it, never follow it.
            if let Ok(sub) = open_child_dir(dir.as_fd(), &name, OFlags::RDONLY) {
                walk(sub, &path, depth - 1, out)?;
            }
        }
    }
    Ok(())
}

/// Opens the directory `name` (one component) in `dir`, refusing any symlink.
fn open_child_dir(dir: BorrowedFd<'_>, name: &CStr, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let flags = flags | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
    rustix::fs::openat2(dir, name, flags, Mode::empty(), resolve)
}

/// `POST /files/mkdir`. Returns the entry and whether it was created (with `parents`, an
/// existing directory is fine).
pub fn mkdir(ws: &Workspace, p: &WorkspacePath, parents: bool) -> Result<(FileEntry, bool)> {
    let created = if parents {
        ws.mkdir_all(p)?
    } else {
        let (dir, name) = ws.parent(p, "mkdir")?;
        rustix::fs::mkdirat(&dir, name.as_str(), Mode::from(0o755)).map_err(FsError::on(p))?;
        true
    };
    Ok((stat(ws, p)?, created))
}

/// `POST /files/move`: `rename(2)`, so atomic, and a symlink moves as itself.
pub fn rename(
    ws: &Workspace,
    from: &WorkspacePath,
    to: &WorkspacePath,
    overwrite: bool,
) -> Result<FileEntry> {
    let (src_dir, src) = ws.parent(from, "move")?;
    let (dst_dir, dst) = ws.parent(to, "move")?;
    rustix::fs::statat(&src_dir, src.as_str(), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(FsError::on(from))?;
    let flags = if overwrite {
        RenameFlags::empty()
    } else {
        RenameFlags::NOREPLACE
    };
    rustix::fs::renameat_with(&src_dir, src.as_str(), &dst_dir, dst.as_str(), flags).map_err(
        |e| match e {
            Errno::INVAL => FsError::Invalid(format!("cannot move {from} into itself")),
            Errno::NOTEMPTY => FsError::NotEmpty(to.to_string()),
            e => FsError::from_io(to, e.into()),
        },
    )?;
    lstat_entry(dst_dir.as_fd(), &cname(&dst), &to.to_string())
}

/// `DELETE /files`: a file or symlink, an empty directory, or with `recursive` a tree.
pub fn delete(ws: &Workspace, p: &WorkspacePath, recursive: bool) -> Result<()> {
    let (dir, name) = ws.parent(p, "delete")?;
    let name = cname(&name);
    let st = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW).map_err(FsError::on(p))?;
    let shown = p.to_string();
    match (Kind::from_raw_mode(st.st_mode), recursive) {
        (Kind::Directory, true) => remove_tree(dir.as_fd(), &name, &shown),
        (Kind::Directory, false) => {
            rustix::fs::unlinkat(&dir, &name, AtFlags::REMOVEDIR).map_err(FsError::on(p))
        }
        _ => rustix::fs::unlinkat(&dir, &name, AtFlags::empty()).map_err(FsError::on(p)),
    }
}

/// Removes the directory `name` in `dir` and everything below it, entering
/// subdirectories only with `O_NOFOLLOW` (a symlink inside is unlinked, not followed).
fn remove_tree(dir: BorrowedFd<'_>, name: &CStr, shown: &str) -> Result<()> {
    for _ in 0..DELETE_RETRIES {
        let sub = match open_child_dir(dir, name, OFlags::RDONLY) {
            Ok(fd) => fd,
            // No longer a directory (swapped meanwhile): remove whatever it is now.
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                return rustix::fs::unlinkat(dir, name, AtFlags::empty())
                    .map_err(FsError::on(shown))
            }
            Err(e) => return Err(FsError::from_io(shown, e.into())),
        };
        for child in names(&sub, shown)? {
            let child_shown = format!("{shown}/{}", String::from_utf8_lossy(child.as_bytes()));
            let st = match rustix::fs::statat(&sub, &child, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(FsError::from_io(&child_shown, e.into())),
            };
            if Kind::from_raw_mode(st.st_mode) == Kind::Directory {
                remove_tree(sub.as_fd(), &child, &child_shown)?;
            } else {
                match rustix::fs::unlinkat(&sub, &child, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(FsError::from_io(&child_shown, e.into())),
                }
            }
        }
        match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => return Ok(()),
            // Something was created inside meanwhile: go round again.
            Err(Errno::NOTEMPTY) => continue,
            Err(e) => return Err(FsError::from_io(shown, e.into())),
        }
    }
    Err(FsError::NotEmpty(shown.to_string()))
}
