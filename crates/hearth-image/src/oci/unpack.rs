//! Unpacking image layers into a staging root, in order, with OCI whiteouts honoured
//! (`.wh.NAME` removes NAME from lower layers, `.wh..wh..opq` hides a directory's lower
//! contents). The same discipline as the agent's archive policy, for an archive that
//! may hold links: every path is resolved from the root's directory fd, one component
//! at a time with `O_NOFOLLOW`, so nothing is ever written through a link.
//! - A `..` component anywhere (entry or hard-link target) refuses the whole layer.
//! - An entry whose parent path runs through a symlink (absolute or not) is refused:
//!   links are stored as data, for the guest to resolve in its own root, never followed.
//! - Hard links must name an existing non-directory inside the root.
//! - Device nodes are skipped and listed; FIFOs are made; anything else is refused.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timestamps};
use rustix::io::Errno;
use tar::EntryType;

use crate::{Error, Result};

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// A layer path: normalised components, no `.`, `..` or empty ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayerPath(Vec<OsString>);

impl LayerPath {
    /// Leading `/` and `./` are dropped (tar writers differ); `..` is refused.
    pub fn parse(raw: &[u8]) -> std::result::Result<LayerPath, String> {
        if raw.contains(&0) {
            return Err("NUL in path".into());
        }
        if raw.len() > 4096 {
            return Err("path longer than 4096 bytes".into());
        }
        let mut parts = Vec::new();
        for c in raw.split(|b| *b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => return Err("`..` component".into()),
                c if c.len() > 255 => return Err("component longer than 255 bytes".into()),
                c => parts.push(OsStr::from_bytes(c).to_os_string()),
            }
        }
        Ok(LayerPath(parts))
    }

    fn parent(&self) -> &[OsString] {
        &self.0[..self.0.len().saturating_sub(1)]
    }

    fn name(&self) -> Option<&OsStr> {
        self.0.last().map(OsString::as_os_str)
    }

    fn ancestors(&self) -> impl Iterator<Item = LayerPath> + '_ {
        (1..=self.0.len()).map(|n| LayerPath(self.0[..n].to_vec()))
    }

    fn child(&self, name: &OsStr) -> LayerPath {
        let mut v = self.0.clone();
        v.push(name.to_os_string());
        LayerPath(v)
    }
}

impl std::fmt::Display for LayerPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<_> = self.0.iter().map(|p| p.to_string_lossy()).collect();
        write!(f, "/{}", parts.join("/"))
    }
}

/// The staging root and what unpacking skipped.
pub struct Unpacker {
    root: OwnedFd,
    /// Device nodes not created, as `/path (char device)`.
    pub skipped: Vec<String>,
}

fn refuse(entry: &str, why: impl std::fmt::Display) -> Error {
    Error::Other(format!("layer entry {entry:?} refused: {why}"))
}

fn io(entry: &str, what: &str, e: Errno) -> Error {
    Error::Other(format!("layer entry {entry:?}: {what}: {e}"))
}

impl Unpacker {
    pub fn new(root: &Path) -> Result<Unpacker> {
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let fd = rfs::open(
            root,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(root, e.into()))?;
        Ok(Unpacker {
            root: fd,
            skipped: Vec::new(),
        })
    }

    /// Opens the directory `components` beneath the root without following any link;
    /// missing directories are created (0755) when `create`, else `Ok(None)`.
    fn open_dir(
        &self,
        components: &[OsString],
        create: bool,
        entry: &str,
    ) -> Result<Option<OwnedFd>> {
        let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
        let mut cur = rfs::openat(&self.root, ".", flags, Mode::empty())
            .map_err(|e| io(entry, "opening the root", e))?;
        for c in components {
            let next = match rfs::openat(&cur, c.as_os_str(), flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rfs::mkdirat(&cur, c.as_os_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io(entry, "creating a parent", e)),
                    }
                    rfs::openat(&cur, c.as_os_str(), flags, Mode::empty())
                        .map_err(|e| io(entry, "opening a parent", e))?
                }
                Err(Errno::NOENT) => return Ok(None),
                // O_NOFOLLOW|O_DIRECTORY on a link: ELOOP; on a file: ENOTDIR.
                Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                    let st = rfs::statat(&cur, c.as_os_str(), AtFlags::SYMLINK_NOFOLLOW);
                    let kind = match st.map(|s| FileType::from_raw_mode(s.st_mode)) {
                        Ok(FileType::Symlink) => "a symlink",
                        _ => "not a directory",
                    };
                    return Err(refuse(
                        entry,
                        format!(
                            "its parent {:?} is {kind}; entries are never written through links",
                            c
                        ),
                    ));
                }
                Err(e) => return Err(io(entry, "opening a parent", e)),
            };
            cur = next;
        }
        Ok(Some(cur))
    }

    /// Applies one layer (an uncompressed tar stream) on top of what is unpacked.
    pub fn apply(&mut self, layer: impl Read) -> Result<()> {
        let mut ar = tar::Archive::new(layer);
        // Paths this layer created or went through: an opaque marker or a whiteout
        // only hides what lower layers left.
        let mut ours: HashSet<LayerPath> = HashSet::new();
        let mut opaque: Vec<LayerPath> = Vec::new();
        let entries = ar
            .entries()
            .map_err(|e| Error::Other(format!("reading a layer: {e}")))?;
        for entry in entries {
            let mut e = entry.map_err(|e| Error::Other(format!("reading a layer: {e}")))?;
            let raw = e.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let path = LayerPath::parse(&raw).map_err(|why| refuse(&shown, why))?;
            let Some(name) = path.name().map(OsStr::to_os_string) else {
                continue; // the root itself
            };
            let dir = LayerPath(path.parent().to_vec());
            if name.as_bytes() == OPAQUE {
                ours.extend(dir.ancestors());
                opaque.push(dir);
                continue;
            }
            if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT) {
                let hidden = OsStr::from_bytes(hidden);
                if !ours.contains(&dir.child(hidden)) {
                    if let Some(fd) = self.open_dir(path.parent(), false, &shown)? {
                        remove_tree(&fd, hidden).map_err(|e| io(&shown, "whiting out", e))?;
                    }
                }
                continue;
            }
            let kind = e.header().entry_type();
            if matches!(kind, EntryType::XGlobalHeader) {
                continue;
            }
            let parent = self
                .open_dir(path.parent(), true, &shown)?
                .expect("created");
            ours.extend(path.ancestors());
            self.entry(&mut e, kind, &parent, &name, &path, &shown)?;
        }
        for dir in opaque {
            if let Some(fd) = self.open_dir(&dir.0, false, &dir.to_string())? {
                clear_lower(&fd, &dir, &ours).map_err(|e| io(&dir.to_string(), "opaque dir", e))?;
            }
        }
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        kind: EntryType,
        parent: &OwnedFd,
        name: &OsStr,
        path: &LayerPath,
        shown: &str,
    ) -> Result<()> {
        let h = e.header();
        let mode = Mode::from_raw_mode(h.mode().unwrap_or(0o644) & 0o7777);
        let owner = (
            Some(rfs::Uid::from_raw(h.uid().unwrap_or(0) as u32)),
            Some(rfs::Gid::from_raw(h.gid().unwrap_or(0) as u32)),
        );
        let mtime = h.mtime().unwrap_or(0) as i64;
        let err = |what: &'static str| move |e: Errno| io(shown, what, e);
        if kind != EntryType::Directory {
            replace(parent, name).map_err(err("replacing"))?;
        }
        match kind {
            EntryType::Directory => {
                match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                    Ok(_) => {
                        remove_tree(parent, name).map_err(err("replacing"))?;
                        rfs::mkdirat(parent, name, mode).map_err(err("mkdir"))?;
                    }
                    Err(_) => rfs::mkdirat(parent, name, mode).map_err(err("mkdir"))?,
                }
                let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
                let fd = rfs::openat(parent, name, flags, Mode::empty()).map_err(err("open"))?;
                rfs::fchown(&fd, owner.0, owner.1).map_err(err("chown"))?;
                rfs::fchmod(&fd, mode).map_err(err("chmod"))?;
            }
            EntryType::Regular | EntryType::Continuous => {
                let flags = OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::WRONLY
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let fd = rfs::openat(parent, name, flags, Mode::from_raw_mode(0o600))
                    .map_err(err("create"))?;
                let mut file = std::fs::File::from(fd);
                std::io::copy(e, &mut file)
                    .map_err(|x| Error::Other(format!("layer entry {shown:?}: writing: {x}")))?;
                rfs::fchown(&file, owner.0, owner.1).map_err(err("chown"))?;
                // After chown, which clears set-id bits.
                rfs::fchmod(&file, mode).map_err(err("chmod"))?;
                let t = rfs::Timespec {
                    tv_sec: mtime,
                    tv_nsec: 0,
                };
                let ts = Timestamps {
                    last_access: t,
                    last_modification: t,
                };
                rfs::futimens(&file, &ts).map_err(err("utimes"))?;
            }
            EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| refuse(shown, "symlink without a target"))?
                    .into_owned();
                rfs::symlinkat(OsStr::from_bytes(&target), parent, name).map_err(err("symlink"))?;
                rfs::chownat(parent, name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(err("chown"))?;
            }
            EntryType::Link => {
                let raw = e
                    .link_name_bytes()
                    .ok_or_else(|| refuse(shown, "hard link without a target"))?
                    .into_owned();
                let target = LayerPath::parse(&raw)
                    .map_err(|why| refuse(shown, format!("hard link target: {why}")))?;
                let tname = target
                    .name()
                    .ok_or_else(|| refuse(shown, "hard link to the root"))?;
                let tdir = self
                    .open_dir(target.parent(), false, shown)?
                    .ok_or_else(|| {
                        refuse(shown, format!("hard link target {target} does not exist"))
                    })?;
                let st = rfs::statat(&tdir, tname, AtFlags::SYMLINK_NOFOLLOW).map_err(|_| {
                    refuse(shown, format!("hard link target {target} does not exist"))
                })?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    return Err(refuse(shown, "hard link to a directory"));
                }
                rfs::linkat(&tdir, tname, parent, name, AtFlags::empty()).map_err(err("link"))?;
            }
            EntryType::Fifo => {
                rfs::mknodat(parent, name, FileType::Fifo, mode, 0).map_err(err("mkfifo"))?;
                rfs::chownat(parent, name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(err("chown"))?;
            }
            EntryType::Char | EntryType::Block => {
                let what = if kind == EntryType::Char {
                    "char device"
                } else {
                    "block device"
                };
                self.skipped.push(format!("{path} ({what})"));
            }
            other => return Err(refuse(shown, format!("unsupported entry type {other:?}"))),
        }
        Ok(())
    }
}

/// Makes room for a non-directory entry: whatever is at `name` goes (a file, a link,
/// a whole directory).
fn replace(dir: &OwnedFd, name: &OsStr) -> rustix::io::Result<()> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => remove_tree(dir, name),
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes `name` in `dir` and, for a directory, everything below it; links are
/// removed, never followed. Missing is fine.
fn remove_tree(dir: &impl AsFd, name: &OsStr) -> rustix::io::Result<()> {
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return rfs::unlinkat(dir, name, AtFlags::empty());
    }
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
    let sub = rfs::openat(dir, name, flags, Mode::empty())?;
    for child in children(&sub)? {
        remove_tree(&sub, &child)?;
    }
    rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

fn children(dir: &OwnedFd) -> rustix::io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for ent in rfs::Dir::read_from(dir)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(out)
}

/// An opaque directory: everything beneath `dir` that this layer did not create goes.
fn clear_lower(fd: &OwnedFd, dir: &LayerPath, ours: &HashSet<LayerPath>) -> rustix::io::Result<()> {
    for child in children(fd)? {
        let p = dir.child(&child);
        if !ours.contains(&p) {
            remove_tree(fd, &child)?;
            continue;
        }
        let st = rfs::statat(fd, child.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
            let sub = rfs::openat(fd, child.as_os_str(), flags, Mode::empty())?;
            clear_lower(&sub, &p, ours)?;
        }
    }
    Ok(())
}
