//! Per-VM overlay disks: a sparse, empty ext4 cloned from a template in milliseconds.
//!
//! The template is `overlay.ext4` next to the image's `rootfs.ext4` when the image ships
//! one of the requested size, else one made once with `mkfs.ext4` in the cache dir.
//! Cloning is a reflink (FICLONE, instant and shared on btrfs/xfs) or else a copy of only
//! the template's data extents (SEEK_DATA/SEEK_HOLE), leaving holes sparse. The base
//! rootfs is never copied: it is attached read-only and shared.
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, Result};

const MIB: u64 = 1024 * 1024;

/// `_IOW(0x94, 9, int)` from linux/fs.h, spelled out so the build does not depend on the
/// libc crate's coverage of it.
const FICLONE: libc::c_ulong = 0x4004_9409;

/// Where templates made by `mkfs.ext4` are cached: `$HEARTH_CACHE_DIR/overlay`
/// (default `~/.cache/hearth/overlay`).
pub fn template_cache_dir() -> PathBuf {
    let base = std::env::var_os("HEARTH_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/hearth")
        });
    base.join("overlay")
}

/// Creates a fresh overlay disk of `size_mib` at `dest` for a VM booting `rootfs`.
pub fn create(rootfs: &Path, dest: &Path, size_mib: u32) -> Result<()> {
    let template = template_for(rootfs, size_mib)?;
    clone_sparse(&template, dest)
}

/// The template to clone: the image's own when its size matches and its file system
/// shows where its holes are, else the cached one.
///
/// Why the holes: a clone copies only the template's data extents, found with
/// SEEK_HOLE. A file system that cannot report holes (9p, as in scripts/nested.sh)
/// presents the whole GiB as data, and every clone would read it all.
pub fn template_for(rootfs: &Path, size_mib: u32) -> Result<PathBuf> {
    let want = u64::from(size_mib) * MIB;
    if let Some(dir) = rootfs.parent() {
        let shipped = dir.join("overlay.ext4");
        if std::fs::metadata(&shipped)
            .map(|m| m.len() == want)
            .unwrap_or(false)
            && reports_holes(&shipped)
        {
            return Ok(shipped);
        }
    }
    cached_template(&template_cache_dir(), size_mib)
}

/// True if SEEK_HOLE finds a hole before the end of `path` (an ext4 template of any
/// useful size has many).
fn reports_holes(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let Ok(len) = f.metadata().map(|m| m.len()) else {
        return false;
    };
    // SAFETY: lseek on an fd we own; no memory is passed.
    let hole = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_HOLE) };
    hole >= 0 && (hole as u64) < len
}

/// Returns the cached template of this size, making it first if needed. Several VMs may
/// start at once: each builds into its own temporary name and renames it into place, so
/// a reader never sees a half-written template.
pub fn cached_template(cache: &Path, size_mib: u32) -> Result<PathBuf> {
    let path = cache.join(format!("overlay-{size_mib}M.ext4"));
    if path.exists() && reports_holes(&path) {
        return Ok(path);
    }
    std::fs::create_dir_all(cache).map_err(|e| Error::io(cache, e))?;
    let tmp = cache.join(format!(".overlay-{size_mib}M.{}.tmp", std::process::id()));
    let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    file.set_len(u64::from(size_mib) * MIB)
        .map_err(|e| Error::io(&tmp, e))?;
    drop(file);
    // root_owner: without it mkfs makes the root dir owned by whoever runs it.
    // lazy init: the file is all holes, which already read as zeroes.
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0", "-L", "hearth-overlay", "-E"])
        .arg("root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1")
        .arg(&tmp)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Spawn(format!("mkfs.ext4: {e}")))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Spawn(format!(
            "mkfs.ext4 {} failed: {}",
            tmp.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

/// Copies `src` to a new file `dest` sharing or skipping everything it can: reflink,
/// else data extents only. `dest` must not exist.
pub fn clone_sparse(src: &Path, dest: &Path) -> Result<()> {
    let input = File::open(src).map_err(|e| Error::io(src, e))?;
    let output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| Error::io(dest, e))?;
    let result = reflink(&input, &output).or_else(|_| copy_extents(&input, &output));
    if let Err(e) = result {
        drop(output);
        let _ = std::fs::remove_file(dest);
        return Err(Error::io(dest, e));
    }
    Ok(())
}

fn reflink(input: &File, output: &File) -> std::io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its integer argument; both fds are open for
    // the duration of the call.
    let r = unsafe { libc::ioctl(output.as_raw_fd(), FICLONE as _, input.as_raw_fd()) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Copies only the data extents, found with SEEK_DATA/SEEK_HOLE, and sets the length so
/// the rest stays a hole.
fn copy_extents(input: &File, output: &File) -> std::io::Result<()> {
    let len = input.metadata()?.len();
    output.set_len(len)?;
    let (inf, outf) = (input.as_raw_fd(), output.as_raw_fd());
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek on an fd we own; no memory is passed.
        let data = unsafe { libc::lseek(inf, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            // ENXIO: no data after `pos`, the rest is a hole.
            if e.raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(inf, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (mut off_in, mut off_out) = (data, data);
        let mut left = (hole - data) as usize;
        while left > 0 {
            // SAFETY: both offsets point to live i64s; the kernel copies between the fds.
            let n = unsafe { libc::copy_file_range(inf, &mut off_in, outf, &mut off_out, left, 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                // Across file systems (EXDEV since Linux 5.19, e.g. an image on one disk
                // and the state dir on tmpfs or overlayfs) the kernel will not copy:
                // read and write instead.
                match e.raw_os_error() {
                    Some(libc::EXDEV | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS) => {
                        copy_range(input, output, off_in as u64, left)?;
                        break;
                    }
                    _ => return Err(e),
                }
            }
            if n == 0 {
                break;
            }
            left -= n as usize;
        }
        pos = hole;
    }
    Ok(())
}

/// Copies `len` bytes at `offset` from `input` to the same offset in `output`, leaving
/// all-zero blocks unwritten (they stay holes: `output` already has its full length).
fn copy_range(input: &File, output: &File, mut offset: u64, len: usize) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const BLOCK: usize = 64 * 1024;
    let mut buf = vec![0u8; len.min(1 << 20)];
    let end = offset + len as u64;
    while offset < end {
        let want = buf.len().min((end - offset) as usize);
        let n = input.read_at(&mut buf[..want], offset)?;
        if n == 0 {
            break;
        }
        for (i, block) in buf[..n].chunks(BLOCK).enumerate() {
            if block.iter().any(|&b| b != 0) {
                output.write_all_at(block, offset + (i * BLOCK) as u64)?;
            }
        }
        offset += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::time::Instant;

    #[test]
    fn overlays_are_sparse_ext4_clones_of_one_template() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let t = cached_template(&cache, 256).unwrap();
        assert_eq!(
            cached_template(&cache, 256).unwrap(),
            t,
            "template is reused"
        );

        let a = dir.path().join("a.ext4");
        let started = Instant::now();
        clone_sparse(&t, &a).unwrap();
        let took = started.elapsed();
        let meta = std::fs::metadata(&a).unwrap();
        assert_eq!(meta.len(), 256 * MIB);
        assert!(
            meta.blocks() * 512 < 64 * MIB,
            "clone is sparse: {} bytes allocated",
            meta.blocks() * 512
        );
        eprintln!("clone took {took:?}");
        // The clone is a valid, clean file system.
        let out = Command::new("e2fsck")
            .args(["-n", "-f"])
            .arg(&a)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(clone_sparse(&t, &a).is_err(), "never overwrites");
    }

    #[test]
    fn clones_work_across_file_systems() {
        // /dev/shm is a tmpfs: from the temp dir's file system the kernel refuses
        // copy_file_range (EXDEV), and the clone falls back to reading and writing.
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let file = File::create(&src).unwrap();
        file.set_len(8 * MIB).unwrap();
        use std::os::unix::fs::FileExt;
        file.write_all_at(b"data far in", 5 * MIB).unwrap();
        drop(file);
        let dest = shm.path().join("dest");
        clone_sparse(&src, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&src).unwrap());
        let allocated = std::fs::metadata(&dest).unwrap().blocks() * 512;
        assert!(
            allocated < MIB,
            "zeros stay holes: {allocated} bytes allocated"
        );
    }

    #[test]
    fn an_image_template_of_the_right_size_wins() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs.ext4");
        std::fs::write(&rootfs, b"").unwrap();
        let shipped = dir.path().join("overlay.ext4");
        File::create(&shipped).unwrap().set_len(8 * MIB).unwrap();
        assert_eq!(template_for(&rootfs, 8).unwrap(), shipped);
    }
}
