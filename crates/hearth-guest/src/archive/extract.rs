//! Streaming, all-or-nothing extraction of a tar.gz into the workspace.

use std::cell::Cell;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::rc::Rc;

use flate2::read::GzDecoder;
use hearth_proto::{ArchiveFormat, UploadResponse};

use super::{check_entry, ArchiveError, EntryKind, Limits, Result, Tally, WorkspacePath};

/// Extracts `body` (tar.gz) into `dest` under the workspace directory `root`.
///
/// Entries land in a fresh staging directory inside `root` (same file system, so the
/// final step is renames). Only when the whole archive has passed the policy and been
/// written is it moved into place; any failure removes the staging directory, so a
/// rejected archive leaves nothing behind. Files replace files; directories merge; a file
/// meeting a directory (or the reverse) is a conflict, found before anything moves.
pub fn extract(
    body: impl Read,
    root: &Path,
    dest: &WorkspacePath,
    limits: &Limits,
) -> Result<UploadResponse> {
    extract_as(body, root, dest, limits, ArchiveFormat::TarGz)
}

/// [`extract`] of either format.
pub fn extract_as(
    body: impl Read,
    root: &Path,
    dest: &WorkspacePath,
    limits: &Limits,
    format: ArchiveFormat,
) -> Result<UploadResponse> {
    let staging = root.join(format!(".hearth-upload-{}", crate::jail::random_token()));
    fs::create_dir(&staging).map_err(ArchiveError::io("creating the staging directory"))?;
    let body: Box<dyn Read> = match format {
        ArchiveFormat::TarGz => Box::new(GzDecoder::new(body)),
        ArchiveFormat::Tar => Box::new(body),
    };
    let outcome = unpack(body, &staging, dest, limits).and_then(|resp| {
        move_into_place(&staging, &dest.under(root), dest)?;
        Ok(resp)
    });
    // After a successful move only empty directories remain; after a failure everything.
    let _ = fs::remove_dir_all(&staging);
    outcome
}

fn unpack(
    body: impl Read,
    staging: &Path,
    dest: &WorkspacePath,
    limits: &Limits,
) -> Result<UploadResponse> {
    // The tar reader buffers some records (long names, pax headers) whole, outside our
    // per-entry accounting; capping the decompressed stream bounds those too.
    let exceeded = Rc::new(Cell::new(false));
    let cap = limits
        .max_bytes
        .saturating_add(limits.max_entries.saturating_mul(3 * 512))
        .saturating_add(1 << 20);
    let capped = Capped {
        inner: body,
        left: cap,
        exceeded: exceeded.clone(),
    };
    let too_big = || ArchiveError::TooManyBytes {
        max: limits.max_bytes,
        entry: "(archive stream)".into(),
    };
    let corrupt = |e: io::Error| {
        if exceeded.get() {
            too_big()
        } else {
            ArchiveError::Corrupt(e.to_string())
        }
    };
    let mut archive = tar::Archive::new(capped);
    let mut buf = vec![0u8; COPY_BUF];
    let mut tally = Tally::default();
    let mut resp = UploadResponse {
        dest: dest.to_string(),
        ..Default::default()
    };
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = entry.path_bytes().into_owned();
        let (path, kind) = check_entry(
            entry.header().entry_type(),
            &raw,
            entry.size(),
            dest,
            limits,
            &mut tally,
        )?;
        let rel = path
            .strip_prefix(dest)
            .expect("policy keeps paths under dest");
        let target = rel.under(staging);
        let shown = || String::from_utf8_lossy(&raw).into_owned();
        let on_disk = |e: io::Error| match e.kind() {
            io::ErrorKind::AlreadyExists
            | io::ErrorKind::NotADirectory
            | io::ErrorKind::IsADirectory => ArchiveError::Conflict {
                entry: shown(),
                existing: "entry of another type in the same archive",
            },
            _ if exceeded.get() => too_big(),
            _ => ArchiveError::Io {
                context: format!("writing {}", shown()),
                source: e,
            },
        };
        match kind {
            EntryKind::Skip => {}
            EntryKind::Dir => {
                fs::create_dir_all(&target).map_err(on_disk)?;
                if !rel.is_root() {
                    resp.dirs += 1;
                }
            }
            EntryKind::File { .. } => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(on_disk)?;
                }
                // Only permission bits survive: no setuid/setgid/sticky, and the owner
                // can always read and write what it uploaded.
                let mode = (entry.header().mode().unwrap_or(0o644) & 0o777) | 0o600;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(mode)
                    .open(&target)
                    .map_err(on_disk)?;
                let n = copy(&mut entry, &mut file, &mut buf).map_err(|e| match e {
                    CopyError::Read(_) if exceeded.get() => too_big(),
                    CopyError::Read(e) => ArchiveError::Corrupt(e.to_string()),
                    CopyError::Write(e) => on_disk(e),
                })?;
                // Keep the archive's mtime: build tools compare them.
                if let Ok(secs) = entry.header().mtime() {
                    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
                    let _ = file.set_modified(when);
                }
                resp.files += 1;
                resp.bytes += n;
            }
        }
    }
    Ok(resp)
}

/// Moves the staged tree into `dst`, after checking that nothing conflicts.
fn move_into_place(staging: &Path, dst: &Path, dest: &WorkspacePath) -> Result<()> {
    match fs::symlink_metadata(dst) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(ArchiveError::Conflict {
                entry: dest.to_string(),
                existing: "non-directory",
            })
        }
        Err(_) => fs::create_dir_all(dst).map_err(|_| ArchiveError::Conflict {
            entry: dest.to_string(),
            existing: "non-directory on the way",
        })?,
    }
    check_conflicts(staging, dst, dest)?;
    apply(staging, dst)
}

fn check_conflicts(src: &Path, dst: &Path, at: &WorkspacePath) -> Result<()> {
    for e in fs::read_dir(src).map_err(ArchiveError::io("reading staging"))? {
        let e = e.map_err(ArchiveError::io("reading staging"))?;
        let src_is_dir = e
            .file_type()
            .map_err(ArchiveError::io("reading staging"))?
            .is_dir();
        let name = e.file_name();
        let sub = WorkspacePath::parse(&name.to_string_lossy())
            .ok()
            .and_then(|n| at.join(&n).ok())
            .unwrap_or_else(|| at.clone());
        match fs::symlink_metadata(dst.join(&name)) {
            Err(_) => {}
            Ok(m) if m.is_dir() && src_is_dir => {
                check_conflicts(&e.path(), &dst.join(&name), &sub)?
            }
            Ok(m) if !m.is_dir() && !src_is_dir => {}
            Ok(m) => {
                return Err(ArchiveError::Conflict {
                    entry: sub.to_string(),
                    existing: if m.is_dir() { "directory" } else { "file" },
                })
            }
        }
    }
    Ok(())
}

fn apply(src: &Path, dst: &Path) -> Result<()> {
    for e in fs::read_dir(src).map_err(ArchiveError::io("reading staging"))? {
        let e = e.map_err(ArchiveError::io("reading staging"))?;
        let target = dst.join(e.file_name());
        let both_dirs = e.file_type().map(|t| t.is_dir()).unwrap_or(false)
            && fs::symlink_metadata(&target)
                .map(|m| m.is_dir())
                .unwrap_or(false);
        if both_dirs {
            apply(&e.path(), &target)?;
        } else {
            // rename(2) replaces a file or symlink at `target` itself, never what a
            // symlink points to.
            fs::rename(e.path(), &target).map_err(ArchiveError::io(format!(
                "moving into {}",
                target.display()
            )))?;
        }
    }
    Ok(())
}

/// File data moves in chunks this big: `io::copy`'s 8 KiB means a read and a write system
/// call per 8 KiB, which under TCG costs more than the bytes themselves.
const COPY_BUF: usize = 1 << 20;

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// `io::copy` with the caller's (large) buffer, telling read errors (a corrupt or
/// oversized archive) from write errors (the disk).
fn copy(from: &mut impl Read, to: &mut impl io::Write, buf: &mut [u8]) -> Result<u64, CopyError> {
    let mut total = 0u64;
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
}

/// A reader that fails once more than `left` bytes went through.
struct Capped<R> {
    inner: R,
    left: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.exceeded.set(true);
            return Err(io::Error::other(
                "decompressed archive exceeds the size limit",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
