//! The seccomp filter on user code: a deny list of system calls sandboxed code has no
//! use for and guest-kernel exploits usually start from, compiled to BPF with
//! `seccompiler` (rust-vmm, as in Firecracker) once at agent start and installed by
//! [`super::spawn`] between fork and exec, after no-new-privs. It is inherited by
//! everything the process starts and cannot be removed.
//!
//! A deny list, not an allow list: the jail runs arbitrary programs (Node, Deno, Python,
//! git, compilers, whatever npm or pip installs), and an allow list would break them in
//! ways we cannot test. Each entry is defence in depth: most calls are already refused
//! by another layer, named in [`DENIED`], so a bug in one layer is not enough.
//!
//! - Denied calls fail with `EPERM`, like a missing capability, which programs handle.
//! - `clone3` fails with `ENOSYS`: its flags sit in a struct in memory the filter cannot
//!   read, so `CLONE_NEWUSER` cannot be checked there. glibc (2.34+), musl and Go fall
//!   back to `clone` on `ENOSYS`, whose flags the filter does check (the usual practice,
//!   e.g. in Docker's and systemd's filters).
//! - io_uring calls fail with `ENOSYS` too, as if the kernel lacked it (ours does), the
//!   answer on which libuv and tokio quietly use epoll.
//! - Only x86_64 system call numbers are checked; the guest kernel has no i386 or x32
//!   entry points (see the kernel config fragment), and a call with another audit arch
//!   kills the process (seccompiler's arch check).
//! - `ptrace` and `process_vm_*` stay allowed: they only reach processes of the same uid
//!   (all the VM's user code belongs to one tenant), and debuggers should work.

use std::collections::BTreeMap;
use std::io;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::{JailError, Result};

/// When a call is denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    /// Only when the first argument (the flags of `clone`/`unshare`) has these bits.
    FlagSet(u64),
}

/// One denied call: number, name, condition, errno returned, and what else stops it.
#[derive(Debug, Clone, Copy)]
pub struct Deny {
    pub nr: libc::c_long,
    pub name: &'static str,
    pub when: When,
    pub errno: i32,
    pub also: &'static str,
}

const fn deny(nr: libc::c_long, name: &'static str, also: &'static str) -> Deny {
    Deny {
        nr,
        name,
        when: When::Always,
        errno: libc::EPERM,
        also,
    }
}

const fn enosys(nr: libc::c_long, name: &'static str, also: &'static str) -> Deny {
    Deny {
        nr,
        name,
        when: When::Always,
        errno: libc::ENOSYS,
        also,
    }
}

const NEWUSER: When = When::FlagSet(libc::CLONE_NEWUSER as u64);
const NO_USERNS: &str = "kernel without CONFIG_USER_NS (EINVAL)";
const NO_CAPS: &str = "needs a capability; user code has none and no-new-privs";

/// The deny list. `also` names the layer that already refuses the call to uid 1000 in
/// the guest (kernel config, sysctl, capabilities), if any.
pub const DENIED: &[Deny] = &[
    // Namespaces: a user namespace hands an unprivileged process CAP_SYS_ADMIN over new
    // namespaces, the first step of many kernel exploits. Other namespace flags already
    // need CAP_SYS_ADMIN.
    Deny {
        when: NEWUSER,
        ..deny(libc::SYS_unshare, "unshare(CLONE_NEWUSER)", NO_USERNS)
    },
    Deny {
        when: NEWUSER,
        ..deny(libc::SYS_clone, "clone(CLONE_NEWUSER)", NO_USERNS)
    },
    enosys(libc::SYS_clone3, "clone3", "none: libc falls back to clone"),
    deny(libc::SYS_setns, "setns", NO_CAPS),
    // Kernel extension points.
    deny(
        libc::SYS_bpf,
        "bpf",
        "kernel without CONFIG_BPF_SYSCALL (ENOSYS)",
    ),
    deny(
        libc::SYS_perf_event_open,
        "perf_event_open",
        "kernel.perf_event_paranoid=3 (EACCES)",
    ),
    deny(
        libc::SYS_userfaultfd,
        "userfaultfd",
        "kernel without CONFIG_USERFAULTFD (ENOSYS)",
    ),
    deny(
        libc::SYS_keyctl,
        "keyctl",
        "kernel without CONFIG_KEYS (ENOSYS)",
    ),
    deny(
        libc::SYS_add_key,
        "add_key",
        "kernel without CONFIG_KEYS (ENOSYS)",
    ),
    deny(
        libc::SYS_request_key,
        "request_key",
        "kernel without CONFIG_KEYS (ENOSYS)",
    ),
    enosys(
        libc::SYS_io_uring_setup,
        "io_uring_setup",
        "kernel without CONFIG_IO_URING",
    ),
    enosys(
        libc::SYS_io_uring_enter,
        "io_uring_enter",
        "kernel without CONFIG_IO_URING",
    ),
    enosys(
        libc::SYS_io_uring_register,
        "io_uring_register",
        "kernel without CONFIG_IO_URING",
    ),
    // Loading code into the kernel.
    deny(
        libc::SYS_kexec_load,
        "kexec_load",
        "kernel without CONFIG_KEXEC; CAP_SYS_BOOT",
    ),
    deny(
        libc::SYS_kexec_file_load,
        "kexec_file_load",
        "kernel without kexec; CAP_SYS_BOOT",
    ),
    deny(
        libc::SYS_init_module,
        "init_module",
        "kernel without CONFIG_MODULES",
    ),
    deny(
        libc::SYS_finit_module,
        "finit_module",
        "kernel without CONFIG_MODULES",
    ),
    deny(
        libc::SYS_delete_module,
        "delete_module",
        "kernel without CONFIG_MODULES",
    ),
    // Mounts, old and new API (CAP_SYS_ADMIN).
    deny(libc::SYS_mount, "mount", NO_CAPS),
    deny(libc::SYS_umount2, "umount2", NO_CAPS),
    deny(libc::SYS_pivot_root, "pivot_root", NO_CAPS),
    deny(libc::SYS_open_tree, "open_tree", NO_CAPS),
    deny(libc::SYS_move_mount, "move_mount", NO_CAPS),
    deny(libc::SYS_fsopen, "fsopen", NO_CAPS),
    deny(libc::SYS_fsconfig, "fsconfig", NO_CAPS),
    deny(libc::SYS_fsmount, "fsmount", NO_CAPS),
    deny(libc::SYS_fspick, "fspick", NO_CAPS),
    deny(libc::SYS_mount_setattr, "mount_setattr", NO_CAPS),
    // The kernel log (it shows addresses and other runs' OOM reports).
    deny(
        libc::SYS_syslog,
        "syslog",
        "kernel.dmesg_restrict=1; no /dev/kmsg in the jail",
    ),
    // Machine-wide administration, all capability-gated.
    deny(libc::SYS_reboot, "reboot", NO_CAPS),
    deny(libc::SYS_swapon, "swapon", NO_CAPS),
    deny(libc::SYS_swapoff, "swapoff", NO_CAPS),
    deny(libc::SYS_acct, "acct", NO_CAPS),
    deny(libc::SYS_quotactl, "quotactl", NO_CAPS),
    deny(libc::SYS_open_by_handle_at, "open_by_handle_at", NO_CAPS),
    deny(libc::SYS_iopl, "iopl", NO_CAPS),
    deny(libc::SYS_ioperm, "ioperm", NO_CAPS),
    deny(libc::SYS_settimeofday, "settimeofday", NO_CAPS),
    deny(libc::SYS_clock_settime, "clock_settime", NO_CAPS),
    deny(libc::SYS_clock_adjtime, "clock_adjtime", NO_CAPS),
];

/// The compiled filters: one per errno (a seccompiler filter has one match action).
#[derive(Debug, Clone)]
pub struct Filters {
    programs: Vec<BpfProgram>,
}

fn compile(entries: &[&Deny], errno: i32) -> Result<BpfProgram> {
    let bad = |e: seccompiler::BackendError| JailError::Setup(format!("seccomp filter: {e}"));
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for d in entries {
        let chain = rules.entry(d.nr).or_default();
        if let When::FlagSet(bits) = d.when {
            let cond = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(bits),
                bits,
            )
            .map_err(bad)?;
            chain.push(SeccompRule::new(vec![cond]).map_err(bad)?);
        }
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        TargetArch::x86_64,
    )
    .map_err(bad)?;
    BpfProgram::try_from(filter).map_err(bad)
}

impl Filters {
    /// Compiles [`DENIED`].
    pub fn build() -> Result<Filters> {
        let mut errnos: Vec<i32> = DENIED.iter().map(|d| d.errno).collect();
        errnos.sort_unstable();
        errnos.dedup();
        let programs = errnos
            .into_iter()
            .map(|errno| {
                let entries: Vec<&Deny> = DENIED.iter().filter(|d| d.errno == errno).collect();
                compile(&entries, errno)
            })
            .collect::<Result<_>>()?;
        Ok(Filters { programs })
    }

    /// Installs the filters on the calling thread. Called between fork and exec: it only
    /// makes system calls (prctl, seccomp) on memory prepared before the fork, and builds
    /// errors without allocating.
    pub fn apply(&self) -> io::Result<()> {
        for p in &self.programs {
            seccompiler::apply_filter(p).map_err(|e| match e {
                seccompiler::Error::Seccomp(e) | seccompiler::Error::Prctl(e) => e,
                _ => io::Error::from_raw_os_error(libc::EINVAL),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_required_calls_are_denied_once_each() {
        let names: Vec<&str> = DENIED.iter().map(|d| d.name).collect();
        for must in [
            "unshare(CLONE_NEWUSER)",
            "clone(CLONE_NEWUSER)",
            "clone3",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
            "userfaultfd",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "mount",
            "umount2",
            "pivot_root",
        ] {
            assert!(names.contains(&must), "{must} is not denied");
        }
        let mut nrs: Vec<libc::c_long> = DENIED.iter().map(|d| d.nr).collect();
        nrs.sort_unstable();
        let before = nrs.len();
        nrs.dedup();
        assert_eq!(before, nrs.len(), "a call is listed twice");
        assert!(DENIED
            .iter()
            .all(|d| d.errno == libc::EPERM || d.errno == libc::ENOSYS));
    }

    #[test]
    fn the_filters_compile_one_per_errno() {
        let f = Filters::build().unwrap();
        assert_eq!(f.programs.len(), 2);
        assert!(f.programs.iter().all(|p| !p.is_empty() && p.len() < 4096));
    }
}
