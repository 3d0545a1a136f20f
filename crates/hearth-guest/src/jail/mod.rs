//! The jail user code runs in.
//!
//! At agent start, [`Jail::build`] assembles a root directory (default
//! `/run/hearth-jail`) on a fresh tmpfs inside the agent's private mount namespace:
//! read-only, nosuid bind mounts of `/usr`, `/bin`, `/sbin`, `/lib*`; a curated `/etc`
//! (synthesised `passwd`/`group`, no `shadow`, read-only binds of the resolver, TLS and
//! loader files); a minimal `/dev`; `/proc` with `hidepid=invisible` and a read-only
//! `/proc/sys`; a `/tmp` tmpfs of its own (shared by all runs, persistent while the agent
//! runs); the workspace bound read-write at `/workspace`; and `/opt/hearth/bin` for
//! runtimes that live elsewhere.
//! The tmpfs is then made read-only.
//!
//! Each process started with [`spawn`] gets, between fork and exec: its own cgroup v2
//! under the user parent ([`cgroup`]: memory, pids and CPU limits, killed as a whole with
//! `cgroup.kill`), `oom_score_adj` 0, a new session and process group, `chroot`, an empty
//! capability bounding set, no supplementary groups, uid/gid 1000, no-new-privs, a
//! parent-death SIGKILL and, last, the seccomp deny list ([`seccomp`]). Nothing here is
//! specific to the guest, so the integration tests build the same jail on the host (as
//! root, in the agent's private mount namespace, with a cgroup of the host's cgroup v2).

pub mod cgroup;
mod error;
mod output;
mod root;
pub mod seccomp;
mod spawn;
mod sweeper;

pub use cgroup::CgroupConfig;
pub use error::{JailError, Result};
pub use output::{run, ExecSpec, OutputSink};
pub use root::{Jail, JailConfig, RUNTIME_BIN_DIR};
pub use spawn::{spawn, JailedChild, SpawnSpec};

/// Default `PATH` inside the jail.
pub const JAIL_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/hearth/bin";

/// 128 random bits as hex, from the kernel's CSPRNG: names nobody else can guess
/// (staging directories, per-run result directories).
pub fn random_token() -> String {
    let mut buf = [0u8; 16];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            panic!("getrandom failed: {}", std::io::Error::last_os_error());
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
