//! Ending a process and everything it started.
//!
//! Every process the agent starts leads its own session and process group (see
//! `jail::spawn`). Its children stay in that session even when they make process groups
//! of their own, as an interactive shell does for each job, so killing the group alone
//! would miss them: we also SIGKILL every process whose session is the leader's, found in
//! `/proc`. Only a child that starts a new session (`setsid`) escapes both; a cgroup per
//! process would catch that one too.

/// SIGKILLs the process group `pid` and every process in session `pid`. Repeats the
/// scan a few times, for children forked while we were killing.
pub fn kill_tree(pid: u32) {
    let pid = pid as i32;
    // SAFETY: plain syscall; a negative pid addresses the process group.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    for _ in 0..3 {
        let members = session_members(pid);
        if members.is_empty() {
            return;
        }
        for p in members {
            // SAFETY: plain syscall on a pid we just read from /proc.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
}

/// Live processes (not zombies) whose session id is `sid`.
fn session_members(sid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                return false;
            };
            // After the command name (which may hold spaces and parentheses): state,
            // ppid, pgrp, session.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first().is_some_and(|s| *s != "Z")
                && fields.get(3).and_then(|s| s.parse::<i32>().ok()) == Some(sid)
        })
        .collect()
}

/// Linux's name for signal `n` (`TERM`), or `SIG<n>` for the rest.
pub fn signal_name(n: i32) -> String {
    const NAMES: [&str; 31] = [
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
        "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
        "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
    ];
    usize::try_from(n - 1)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| format!("SIG{n}"), |s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_match_the_numbers() {
        assert_eq!(signal_name(libc::SIGKILL), "KILL");
        assert_eq!(signal_name(libc::SIGTERM), "TERM");
        assert_eq!(signal_name(libc::SIGSYS), "SYS");
        assert_eq!(signal_name(libc::SIGWINCH), "WINCH");
        assert_eq!(signal_name(40), "SIG40");
        assert_eq!(signal_name(0), "SIG0");
        for s in [
            hearth_proto::Signal::HUP,
            hearth_proto::Signal::INT,
            hearth_proto::Signal::KILL,
            hearth_proto::Signal::USR1,
            hearth_proto::Signal::USR2,
            hearth_proto::Signal::TERM,
        ] {
            assert_eq!(signal_name(s.number()), format!("{s:?}"));
        }
    }
}
