//! Packing a workspace file or directory as tar.gz, never following a symlink.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;
use tar::{EntryType, Header, HeaderMode};

use hearth_proto::ArchiveFormat;

use super::{ArchiveError, Result, WorkspacePath};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackStats {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// Symlinks, sockets, FIFOs and devices left out.
    pub skipped: u64,
}

/// Checks, before anything is written, that `path` exists under `root` and that no
/// component of it is a symlink.
pub fn check_source(root: &Path, path: &WorkspacePath) -> Result<()> {
    let mut at = WorkspacePath::root();
    for c in path.components() {
        at = at
            .join(&WorkspacePath::parse(c).expect("components of a valid path are valid"))
            .expect("prefix of a valid path");
        match fs::symlink_metadata(at.under(root)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ArchiveError::NotFound(at.to_string()))
            }
            Err(e) => return Err(ArchiveError::io(format!("inspecting {at}"))(e)),
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ArchiveError::SymlinkInPath(at.to_string()))
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Writes `path` as tar.gz to `out`. A file becomes one entry named after it; a directory
/// becomes a tree whose top entry is its name (the workspace root: its contents, unnamed).
pub fn pack(root: &Path, path: &WorkspacePath, out: impl Write) -> Result<PackStats> {
    pack_as(root, path, out, ArchiveFormat::TarGz)
}

/// [`pack`] in either format.
pub fn pack_as(
    root: &Path,
    path: &WorkspacePath,
    out: impl Write,
    format: ArchiveFormat,
) -> Result<PackStats> {
    check_source(root, path)?;
    let finish = ArchiveError::io("finishing the archive");
    match format {
        ArchiveFormat::TarGz => {
            let gz = GzEncoder::new(out, Compression::fast());
            let (gz, stats) = pack_into(root, path, gz)?;
            gz.finish().and_then(|mut w| w.flush()).map_err(finish)?;
            Ok(stats)
        }
        ArchiveFormat::Tar => {
            let (mut w, stats) = pack_into(root, path, out)?;
            w.flush().map_err(finish)?;
            Ok(stats)
        }
    }
}

fn pack_into<W: Write>(root: &Path, path: &WorkspacePath, out: W) -> Result<(W, PackStats)> {
    let mut builder = tar::Builder::new(out);
    builder.mode(HeaderMode::Complete);
    builder.follow_symlinks(false);
    let mut stats = PackStats::default();
    let name = path.file_name().unwrap_or("").to_string();
    add(&mut builder, &path.under(root), &name, &mut stats)?;
    let out = builder
        .into_inner()
        .map_err(ArchiveError::io("finishing the archive"))?;
    Ok((out, stats))
}

fn add<W: Write>(
    b: &mut tar::Builder<W>,
    disk: &Path,
    name: &str,
    stats: &mut PackStats,
) -> Result<()> {
    let meta = fs::symlink_metadata(disk).map_err(ArchiveError::io(format!("reading {name}")))?;
    let ft = meta.file_type();
    let werr = |e| ArchiveError::io(format!("writing the archive entry {name}"))(e);
    if ft.is_dir() {
        if !name.is_empty() {
            let mut h = Header::new_gnu();
            h.set_metadata_in_mode(&meta, HeaderMode::Complete);
            h.set_entry_type(EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, format!("{name}/"), io::empty())
                .map_err(werr)?;
            stats.dirs += 1;
        }
        let mut children: Vec<_> = fs::read_dir(disk)
            .map_err(ArchiveError::io(format!("listing {name}")))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        children.sort();
        for c in children {
            let child = c.to_string_lossy();
            let child_name = if name.is_empty() {
                child.into_owned()
            } else {
                format!("{name}/{child}")
            };
            add(b, &disk.join(&c), &child_name, stats)?;
        }
    } else if ft.is_file() {
        // O_NOFOLLOW: if the file was swapped for a symlink since we looked, fail instead
        // of reading through it.
        let file: File = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(disk)
            .map_err(ArchiveError::io(format!("opening {name}")))?;
        let meta = file
            .metadata()
            .map_err(ArchiveError::io(format!("reading {name}")))?;
        let mut h = Header::new_gnu();
        h.set_metadata_in_mode(&meta, HeaderMode::Complete);
        h.set_entry_type(EntryType::Regular);
        h.set_size(meta.len());
        b.append_data(&mut h, name, io::Read::take(file, meta.len()))
            .map_err(werr)?;
        stats.files += 1;
        stats.bytes += meta.len();
    } else {
        stats.skipped += 1;
    }
    Ok(())
}
