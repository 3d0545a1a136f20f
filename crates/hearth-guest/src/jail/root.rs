//! Assembling the jail root directory.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::mount::{mount, MsFlags};
use nix::unistd::{chown, Gid, Uid};

use super::cgroup::{CgroupConfig, UserCgroups};
use super::{seccomp, JailError, Result};

/// Where runtimes and the agent binary appear inside the jail.
pub const RUNTIME_BIN_DIR: &str = "/opt/hearth/bin";

/// Top-level host directories shared read-only with the jail.
const SYSTEM_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32"];
/// Top-level names the jail builds itself: an image may not expose its own there.
pub const RESERVED_DIRS: &[&str] = &[
    "etc",
    "dev",
    "proc",
    "sys",
    "tmp",
    "run",
    "var",
    "root",
    "home",
    "workspace",
    "opt",
    ".hearth",
];
/// `/etc` entries programs need for name resolution, TLS, the loader and a few tools.
/// Anything else, `shadow` in particular, stays out.
const ETC_ENTRIES: &[&str] = &[
    "hosts",
    "resolv.conf",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "alternatives",
    "protocols",
    "services",
    "mime.types",
    "gitconfig",
    "os-release",
    "debian_version",
    "python3",
    "python3.11",
    "python3.12",
    "nodejs",
    "npmrc",
];
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

#[derive(Debug, Clone)]
pub struct JailConfig {
    /// Directory the jail is assembled in; created if missing.
    pub root: PathBuf,
    /// Host directory shown read-write as `/workspace`.
    pub workspace: PathBuf,
    /// Extra executables bound into [`RUNTIME_BIN_DIR`] under their file name.
    pub runtime_bins: Vec<PathBuf>,
    pub uid: u32,
    pub gid: u32,
    /// `size=` of the jail's `/tmp` tmpfs.
    pub tmp_size: String,
    /// Where user code's cgroups live, and their limits.
    pub cgroup: CgroupConfig,
    /// More top-level directories shown read-only, like `/usr` (an OCI image's `/app`);
    /// names in [`RESERVED_DIRS`] or with a `/` are skipped.
    pub expose: Vec<String>,
    /// uid 1000's login name in the jail's `/etc/passwd`.
    pub user_name: String,
}

/// A built jail; cheap to clone and share. Every process [`super::spawn`] starts gets
/// its own cgroup under `cgroups` and the `seccomp` filters.
#[derive(Debug, Clone)]
pub struct Jail {
    pub root: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub cgroups: Arc<UserCgroups>,
    pub seccomp: Arc<seccomp::Filters>,
}

fn mnt(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(src, target, fstype, flags, data).map_err(|source| JailError::Mount {
        what: src
            .map(|s| s.display().to_string())
            .or(fstype.map(str::to_string))
            .unwrap_or_else(|| "remount".into()),
        target: target.display().to_string(),
        source,
    })
}

/// Binds `src` at `dst` (which must exist) and makes the bind read-only and nosuid.
fn bind_ro(src: &Path, dst: &Path) -> Result<()> {
    mnt(
        Some(src),
        dst,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID;
    mnt(None, dst, None, ro, None)
}

/// Creates the mount point `dst` matching the kind of `src` (a bind needs a file for a
/// file and a directory for a directory).
fn mount_point_like(src: &Path, dst: &Path) -> Result<()> {
    if src.is_dir() {
        fs::create_dir_all(dst)
    } else {
        fs::write(dst, b"")
    }
    .map_err(JailError::io(format!("creating {}", dst.display())))
}

impl Jail {
    /// Builds the jail. Must run as root, inside a mount namespace of our own (see
    /// [`crate::agent`]'s start-up), because it mounts. Also sets up the user cgroup
    /// parent and compiles the seccomp filters, so nothing can be spawned without them.
    pub fn build(cfg: &JailConfig) -> Result<Jail> {
        let seccomp = Arc::new(seccomp::Filters::build()?);
        let cgroups = Arc::new(UserCgroups::setup(&cfg.cgroup)?);
        let root = &cfg.root;
        let io = |what: &str| JailError::io(format!("{what} in {}", root.display()));
        fs::create_dir_all(root).map_err(io("creating the jail root"))?;
        let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mnt(
            None,
            root,
            Some("tmpfs"),
            nosuid,
            Some("mode=0755,size=16m"),
        )?;

        let exposed = cfg.expose.iter().map(String::as_str).filter(|d| {
            let ok = !d.is_empty()
                && !d.contains('/')
                && *d != "."
                && *d != ".."
                && !RESERVED_DIRS.contains(d)
                && !SYSTEM_DIRS.contains(d);
            if !ok {
                eprintln!("hearth-agent: not exposing {d:?} in the jail (reserved or not a name)");
            }
            ok
        });
        for d in SYSTEM_DIRS.iter().copied().chain(exposed) {
            let host = Path::new("/").join(d);
            let inside = root.join(d);
            match fs::symlink_metadata(&host) {
                // Merged-/usr systems: /bin -> usr/bin; keep the link, the target is bound.
                Ok(m) if m.file_type().is_symlink() => {
                    let target = fs::read_link(&host).map_err(io("reading a system link"))?;
                    symlink(target, &inside).map_err(io("linking a system dir"))?;
                }
                Ok(m) if m.is_dir() => {
                    fs::create_dir(&inside).map_err(io("creating a system dir"))?;
                    bind_ro(&host, &inside)?;
                }
                _ => {}
            }
        }

        Self::build_etc(root, &cfg.user_name)?;
        Self::build_dev(root)?;

        let proc_dir = root.join("proc");
        fs::create_dir(&proc_dir).map_err(io("creating /proc"))?;
        let pflags = nosuid | MsFlags::MS_NOEXEC;
        // Hide the agent's (root's) processes from user code; old kernels lack the option.
        mnt(
            None,
            &proc_dir,
            Some("proc"),
            pflags,
            Some("hidepid=invisible"),
        )
        .or_else(|_| mnt(None, &proc_dir, Some("proc"), pflags, None))?;
        // Kernel tunables are for reading only, whatever their file modes say.
        let sys = proc_dir.join("sys");
        mnt(Some(&sys), &sys, None, MsFlags::MS_BIND, None)?;
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | pflags;
        mnt(None, &sys, None, ro, None)?;

        for d in ["tmp", "run", "var", "root", "home"] {
            fs::create_dir(root.join(d)).map_err(io("creating a top-level dir"))?;
        }
        // The jail's own /tmp and /var/tmp, shared by all runs (a server started by one
        // exec can put its socket there for the next), never the agent's or the host's.
        // Two tmpfs rather than a link: programs that check /var/tmp is a directory work.
        let tmp_opts = format!("mode=1777,size={}", cfg.tmp_size);
        fs::create_dir(root.join("var/tmp")).map_err(io("creating /var/tmp"))?;
        for d in ["tmp", "var/tmp"] {
            mnt(None, &root.join(d), Some("tmpfs"), nosuid, Some(&tmp_opts))?;
        }

        let ws = root.join("workspace");
        fs::create_dir(&ws).map_err(io("creating /workspace"))?;
        let host_ws = &cfg.workspace;
        fs::create_dir_all(host_ws).map_err(io("creating the host workspace"))?;
        chown(
            host_ws,
            Some(Uid::from_raw(cfg.uid)),
            Some(Gid::from_raw(cfg.gid)),
        )
        .map_err(|e| JailError::Setup(format!("chown {}: {e}", host_ws.display())))?;
        mnt(
            Some(host_ws),
            &ws,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        let rw = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | nosuid;
        mnt(None, &ws, None, rw, None)?;

        // Per-run directories (code files, result files). 0711: user code can reach its
        // own run directory by its unguessable name but cannot list the others.
        let runs = root.join(".hearth/runs");
        fs::create_dir_all(&runs).map_err(io("creating /.hearth/runs"))?;
        mnt(
            None,
            &runs,
            Some("tmpfs"),
            nosuid,
            Some("mode=0711,size=64m"),
        )?;

        let bin = root.join(RUNTIME_BIN_DIR.trim_start_matches('/'));
        fs::create_dir_all(&bin).map_err(io("creating the runtime bin dir"))?;
        for src in &cfg.runtime_bins {
            let name = src
                .file_name()
                .ok_or_else(|| JailError::Setup(format!("{} has no file name", src.display())))?;
            let dst = bin.join(name);
            fs::write(&dst, b"").map_err(io("creating a runtime mount point"))?;
            bind_ro(src, &dst)?;
        }

        // The root itself: nothing in it is writable any more, even by root in the jail.
        let ro = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nosuid;
        mnt(None, root, Some("tmpfs"), ro, Some("mode=0755"))?;

        Ok(Jail {
            root: root.clone(),
            uid: cfg.uid,
            gid: cfg.gid,
            cgroups,
            seccomp,
        })
    }

    fn build_etc(root: &Path, user: &str) -> Result<()> {
        let etc = root.join("etc");
        let io = |what: &str| JailError::io(format!("{what} in {}", etc.display()));
        fs::create_dir(&etc).map_err(io("creating /etc"))?;
        let passwd = format!(
            "root:x:0:0:root:/root:/bin/sh\n\
             {user}:x:1000:1000:{user}:/workspace:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        );
        fs::write(etc.join("passwd"), passwd).map_err(io("writing passwd"))?;
        let group = format!("root:x:0:\n{user}:x:1000:\nnogroup:x:65534:\n");
        fs::write(etc.join("group"), group).map_err(io("writing group"))?;
        symlink("/proc/self/mounts", etc.join("mtab")).map_err(io("linking mtab"))?;
        for name in ETC_ENTRIES {
            let host = Path::new("/etc").join(name);
            // `exists` follows symlinks (resolv.conf often is one): bind what it points to.
            if !host.exists() {
                continue;
            }
            let inside = etc.join(name);
            mount_point_like(&host, &inside)?;
            bind_ro(&host, &inside)?;
        }
        Ok(())
    }

    fn build_dev(root: &Path) -> Result<()> {
        let dev = root.join("dev");
        let io = |what: &str| JailError::io(format!("{what} in {}", dev.display()));
        fs::create_dir(&dev).map_err(io("creating /dev"))?;
        mnt(
            None,
            &dev,
            Some("tmpfs"),
            MsFlags::MS_NOSUID,
            Some("mode=0755,size=64k"),
        )?;
        for d in DEVICES {
            let host = Path::new("/dev").join(d);
            if host.exists() {
                let inside = dev.join(d);
                fs::write(&inside, b"").map_err(io("creating a device mount point"))?;
                mnt(Some(&host), &inside, None, MsFlags::MS_BIND, None)?;
            }
        }
        // A private devpts instance gives the jail working ptys without exposing the host's.
        let pts = dev.join("pts");
        fs::create_dir(&pts).map_err(io("creating /dev/pts"))?;
        let opts = "newinstance,ptmxmode=0666,mode=0620";
        if mnt(None, &pts, Some("devpts"), MsFlags::MS_NOSUID, Some(opts)).is_ok() {
            symlink("pts/ptmx", dev.join("ptmx")).map_err(io("linking ptmx"))?;
        }
        let shm = dev.join("shm");
        fs::create_dir(&shm).map_err(io("creating /dev/shm"))?;
        let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mnt(
            None,
            &shm,
            Some("tmpfs"),
            nosuid,
            Some("mode=1777,size=64m"),
        )?;
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            symlink(target, dev.join(link)).map_err(io("linking a /dev entry"))?;
        }
        let ro = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID;
        mnt(None, &dev, Some("tmpfs"), ro, Some("mode=0755"))
    }

    /// Host-side path of a path inside the jail.
    pub fn host_path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }
}
