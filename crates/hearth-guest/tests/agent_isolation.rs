//! Defence in depth around user code, against the real agent binary on the host: each run
//! in its own cgroup (ended with `cgroup.kill`, removed once empty), OOM scores, the
//! seccomp deny list, a read-only `/proc/sys`. The host's cgroup v2 may lack the memory
//! and pids controllers (hybrid hosts); those limits are checked in a VM by
//! `hearth-vmm/tests/guest_isolation.rs`.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hearth_guest::jail::seccomp::{When, DENIED};
use serde_json::json;
use support::Agent;

/// Polls `f` until it holds or `limit` passes.
async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    f()
}

fn pgrep(pattern: &str) -> String {
    let out = std::process::Command::new("pgrep")
        .args(["-a", "-u", "1000", "-f", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_timeout_kills_what_setsid_and_double_forks_started() {
    let a = Agent::start();
    let v = a
        .exec(json!({
            "cmd": "setsid sh -c 'sleep 1000.27' & (setsid sh -c 'while :; do :; done; : busy-27' &); \
                    echo started; sleep 30",
            "timeout_ms": 1500,
        }))
        .await;
    assert_eq!(v["timed_out"], true, "{v}");
    assert_eq!(v["exit_code"], 137, "{v}");
    assert_eq!(v["stdout"], "started\n", "{v}");
    // Checked from user code in a later call, as a user would...
    let v = a.sh("ps -eo args").await;
    let ps = v["stdout"].as_str().unwrap();
    assert!(ps.contains("ps -eo args"), "ps sees user processes: {v}");
    assert!(
        !ps.contains("sleep 1000.27") && !ps.contains("busy-27"),
        "left over after the timeout:\n{ps}"
    );
    // ...and from the host: nothing, and the run's cgroup is gone.
    assert_eq!(pgrep("sleep 1000.27|busy-27"), "");
    let gone = eventually(Duration::from_secs(5), || a.run_cgroups().is_empty()).await;
    assert!(gone, "cgroups left: {:?}", a.run_cgroups());
}

#[tokio::test]
async fn each_run_has_its_own_cgroup_removed_when_its_last_process_ends() {
    let a = Agent::start();
    let own = |v: &serde_json::Value| -> PathBuf {
        let text = v["stdout"].as_str().unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("0::"))
            .expect("a v2 line");
        PathBuf::from(&line[3..])
    };
    let one = a
        .sh("cat /proc/self/cgroup; cat /proc/self/oom_score_adj")
        .await;
    let two = a.sh("cat /proc/self/cgroup").await;
    let (c1, c2) = (own(&one), own(&two));
    assert_ne!(c1, c2, "two runs share a cgroup");
    let parent = a.cgroup.file_name().unwrap();
    for c in [&c1, &c2] {
        assert_eq!(c.parent().unwrap().file_name().unwrap(), parent, "{c:?}");
    }
    // The agent is exempt from the OOM killer (-1000, where the host lets it lower its
    // score; the harness started it at 500 otherwise); user code is reset to 0.
    assert!(one["stdout"].as_str().unwrap().ends_with("\n0\n"), "{one}");
    let agent_adj = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", a.pid())).unwrap();
    assert!(["-1000", "500"].contains(&agent_adj.trim()), "{agent_adj}");
    // Finished runs leave no cgroup behind.
    let empty = eventually(Duration::from_secs(5), || a.run_cgroups().is_empty()).await;
    assert!(empty, "{:?}", a.run_cgroups());

    // A background process outlives a run that ended normally (`cmd &`), in the run's
    // cgroup, which goes as soon as that process does.
    let t = Instant::now();
    let v = a.sh("sleep 1.5 & echo started").await;
    assert_eq!(v["stdout"], "started\n");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let lingering = a.run_cgroups();
    assert_eq!(lingering.len(), 1, "{lingering:?}");
    let procs = std::fs::read_to_string(lingering[0].join("cgroup.procs")).unwrap();
    assert_eq!(procs.lines().count(), 1, "the sleep: {procs:?}");
    let removed = eventually(Duration::from_secs(5), || !lingering[0].exists()).await;
    assert!(removed, "the empty cgroup was not removed");
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn seccomp_denies_the_listed_calls_and_nothing_else() {
    let a = Agent::start();
    // One raw syscall per denied entry, with zero arguments except the flags that make
    // it denied; every one must fail with exactly the listed errno.
    let mut calls = String::new();
    for d in DENIED {
        let arg0 = match d.when {
            When::Always => 0,
            When::FlagSet(bits) => bits,
        };
        calls.push_str(&format!("({:?}, {}, {arg0}),\n", d.name, d.nr));
    }
    let code = format!(
        "import ctypes\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         libc.syscall.restype = ctypes.c_long\n\
         for name, nr, arg0 in [\n{calls}]:\n\
         \x20   ctypes.set_errno(0)\n\
         \x20   rc = libc.syscall(ctypes.c_long(nr), ctypes.c_long(arg0), ctypes.c_long(0), \
                 ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))\n\
         \x20   print(name, rc, ctypes.get_errno())\n\
         print('unshare(0)', libc.syscall(ctypes.c_long({unshare}), ctypes.c_long(0)))\n",
        unshare = libc::SYS_unshare,
    );
    let v = a
        .exec(json!({"cmd": "python3", "args": ["-c", code]}))
        .await;
    assert_eq!(v["exit_code"], 0, "{v}");
    let out = v["stdout"].as_str().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), DENIED.len() + 1, "{out}");
    for (d, line) in DENIED.iter().zip(&lines) {
        assert_eq!(
            *line,
            format!("{} -1 {}", d.name, d.errno),
            "{} (also stopped by: {})",
            d.name,
            d.also
        );
    }
    // Flags other than CLONE_NEWUSER pass the filter.
    assert_eq!(lines[DENIED.len()], "unshare(0) 0", "{out}");

    // The filters are installed on every user process, and the kernel log stays shut.
    let v = a
        .sh("grep -E '^(Seccomp|Seccomp_filters|NoNewPrivs):' /proc/self/status; dmesg; echo dmesg=$?")
        .await;
    let out = v["stdout"].as_str().unwrap();
    assert!(out.contains("Seccomp:\t2\n"), "{v}");
    assert!(out.contains("Seccomp_filters:\t2\n"), "{v}");
    assert!(out.contains("NoNewPrivs:\t1\n"), "{v}");
    assert!(!out.contains("dmesg=0"), "dmesg worked: {v}");
}

#[tokio::test]
async fn proc_sys_is_read_only_in_the_jail() {
    let a = Agent::start();
    let v = a
        .sh("awk '$2 == \"/proc/sys\" {split($4, o, \",\"); print o[1]}' /proc/self/mounts")
        .await;
    assert_eq!(v["stdout"], "ro\n", "{v}");
    // Still readable.
    let v = a.sh("cat /proc/sys/kernel/ostype").await;
    assert_eq!(v["stdout"], "Linux\n", "{v}");
}
