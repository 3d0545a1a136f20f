//! Kernel settings init applies at boot, before the agent starts: sysctls that close
//! kernel information and interfaces to user code, and OOM immunity for init itself
//! (inherited by the agent, which sets it again for itself; the jail resets it to 0 for
//! every user process).

use std::path::Path;

/// `(path under /proc/sys, value, why)`.
pub const SYSCTLS: &[(&str, &str, &str)] = &[
    (
        "kernel/dmesg_restrict",
        "1",
        "the kernel log (addresses, other runs' OOM reports) is for root only",
    ),
    (
        "kernel/kptr_restrict",
        "2",
        "kernel pointers print as zeros in /proc and the log, for everyone",
    ),
    (
        "kernel/perf_event_paranoid",
        "3",
        "no perf events without privileges (Debian's level 3)",
    ),
];

/// The `oom_score_adj` of init and the agent: never chosen by the OOM killer.
pub const OOM_SCORE_ADJ_EXEMPT: &str = "-1000";

/// Writes every entry of [`SYSCTLS`] under `proc_sys`; the first failure is fatal (the
/// guest kernel is ours, so a missing knob means a broken build).
pub fn apply_sysctls(proc_sys: &Path) -> Result<(), String> {
    for (key, value, _) in SYSCTLS {
        let path = proc_sys.join(key);
        std::fs::write(&path, value)
            .map_err(|e| format!("sysctl {} = {value}: {e}", path.display()))?;
    }
    Ok(())
}

/// Makes the calling process exempt from the OOM killer (needs CAP_SYS_RESOURCE).
pub fn exempt_from_oom() -> std::io::Result<()> {
    std::fs::write("/proc/self/oom_score_adj", OOM_SCORE_ADJ_EXEMPT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctls_are_written_where_they_belong() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("kernel")).unwrap();
        apply_sysctls(dir.path()).unwrap();
        for (key, want) in [
            ("kernel/dmesg_restrict", "1"),
            ("kernel/kptr_restrict", "2"),
            ("kernel/perf_event_paranoid", "3"),
        ] {
            let got = std::fs::read_to_string(dir.path().join(key)).unwrap();
            assert_eq!(got, want, "{key}");
        }
        let missing = tempfile::tempdir().unwrap();
        let err = apply_sysctls(missing.path()).unwrap_err();
        assert!(err.contains("kernel/dmesg_restrict"), "{err}");
    }
}
