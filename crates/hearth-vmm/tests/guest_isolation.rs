//! Defence in depth inside a real guest (one VM for all checks): each run in its own
//! cgroup under a memory-capped parent, `cgroup.kill` on timeout, the OOM killer's verdict
//! reported, `pids.max` per run, kernel log closed, seccomp deny list. The host tests in
//! `hearth-guest/tests/agent_isolation.rs` cover what a host's cgroup v2 allows; the
//! memory and pids controllers are only certain here.
mod common;

use std::time::Duration;

use common::{boot, reap, sh, spec};
use hearth_proto::{ExecRequest, ExecResponse};
use hearth_vmm::AgentClient;

async fn exec(
    agent: &AgentClient,
    cmd: &str,
    args: Option<&[&str]>,
    timeout_ms: u64,
) -> ExecResponse {
    let req = ExecRequest {
        cmd: cmd.into(),
        args: args.map(|a| a.iter().map(|s| s.to_string()).collect()),
        timeout_ms: Some(timeout_ms),
        ..Default::default()
    };
    agent
        .exec(&req)
        .await
        .unwrap_or_else(|e| panic!("exec {cmd:?}: {e}"))
}

/// User processes left, as user code sees them (`ps` in a later call; root's processes
/// are hidden from it), without the `ps` itself.
async fn user_processes(vm: &hearth_vmm::VmHandle) -> Vec<String> {
    let (code, out) = sh(vm, "ps -eo args=").await;
    assert_eq!(code, 0, "{out}");
    out.lines()
        .filter(|l| !l.contains("ps -eo args="))
        .map(str::to_string)
        .collect()
}

/// Grows a list of 16 MiB strings until something stops it.
const MEMORY_BOMB: &str = "a = []\nwhile True:\n    a.append(b'x' * (16 << 20))\n";

/// Starts threads that sleep until starting one fails; prints how many started. Threads
/// count against `pids.max` like processes, and cost little memory.
const THREAD_COUNT: &str = "import threading, time\nn = 0\ntry:\n    while n < 5000:\n        \
     threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n        n += 1\n\
     except RuntimeError:\n    pass\nprint(n)\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_code_is_contained_by_cgroups_seccomp_and_kernel_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let vm = boot(&spec(tmp.path(), "isolation")).await;
    let _reap_vm = reap(&vm);
    let agent = vm.agent();
    let booted = agent.health().await.unwrap();
    // The agent says what it set up: a 512 MiB guest keeps 1/8 (64 MiB at most) back.
    let console = vm.console_tail(1 << 20);
    let line = console
        .lines()
        .find(|l| l.contains("user code in /sys/fs/cgroup/hearth-user"))
        .unwrap_or_else(|| panic!("no cgroup line on the console:\n{console}"));
    eprintln!("{line}");
    assert!(
        line.contains("pids.max 1024 per run") && line.contains("controllers: memory pids cpu"),
        "{line}"
    );

    // The runtimes work on this kernel (no io_uring, userfaultfd or user namespaces) and
    // under the seccomp filter: V8 with its JIT and worker threads, npm, Deno, Python, git.
    let (code, out) = sh(
        &vm,
        "node -e 'const {Worker} = require(\"worker_threads\");          new Worker(\"require(\\\"worker_threads\\\").parentPort.postMessage(6*7)\", {eval: true})          .on(\"message\", m => console.log(\"node\", m))' &&          deno eval 'console.log(\"deno\", 6*7)' && python3 -c 'print(\"python\", 6*7)' &&          npm --version >/dev/null && git init -q /tmp/r && echo git ok",
    )
    .await;
    assert_eq!(
        (code, out.as_str()),
        (0, "node 42\ndeno 42\npython 42\ngit ok\n")
    );

    // A timeout ends everything the run started: a setsid'd sleeper and a busy loop in a
    // double fork are gone when a later call looks.
    let r = exec(
        &agent,
        "setsid sh -c 'sleep 1000' & (setsid sh -c 'while true; do :; done' &); echo started; sleep 60",
        None,
        3000,
    )
    .await;
    assert!(r.timed_out && r.exit_code == 137, "{r:?}");
    assert_eq!(r.stdout, "started\n");
    let left = user_processes(&vm).await;
    assert!(left.is_empty(), "left after the timeout: {left:?}");

    // A memory bomb is ended by the OOM killer of the user cgroup, and says so; the agent
    // and the VM carry on.
    let r = exec(&agent, "python3", Some(&["-c", MEMORY_BOMB]), 120_000).await;
    eprintln!(
        "memory bomb ended by the OOM killer after {} ms",
        r.duration_ms
    );
    assert!(r.oom_killed, "{r:?}");
    assert_eq!((r.exit_code, r.timed_out), (137, false), "{r:?}");
    let (code, out) = sh(&vm, "echo alive").await;
    assert_eq!((code, out.as_str()), (0, "alive\n"));
    let r = exec(&agent, "true", None, 10_000).await;
    assert!(!r.oom_killed, "only the run that was killed says so: {r:?}");

    // pids.max per run (1024, counting threads): far below the uid's RLIMIT_NPROC of 4096.
    let r = exec(&agent, "python3", Some(&["-c", THREAD_COUNT]), 120_000).await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    let started: u32 = r.stdout.trim().parse().unwrap_or_else(|_| panic!("{r:?}"));
    eprintln!(
        "threads started before pids.max: {started} ({} ms)",
        r.duration_ms
    );
    assert!(
        (1000..1024).contains(&started),
        "threads started: {started}"
    );
    // A real fork bomb: the VM answers while it runs, and nothing of it is left after.
    let bomb_agent = agent.clone();
    let bomb =
        tokio::spawn(
            async move { exec(&bomb_agent, "f() { f | f & }; f; sleep 60", None, 8000).await },
        );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, out) = sh(&vm, "echo usable").await;
    assert_eq!(
        (code, out.as_str()),
        (0, "usable\n"),
        "during the fork bomb"
    );
    let r = bomb.await.unwrap();
    assert!(r.timed_out, "{r:?}");
    let left = user_processes(&vm).await;
    assert!(
        left.is_empty(),
        "left after the fork bomb: {} processes",
        left.len()
    );

    // The kernel log and kernel addresses are closed; /proc/sys is read-only.
    let (code, out) = sh(
        &vm,
        "cat /proc/sys/kernel/dmesg_restrict /proc/sys/kernel/kptr_restrict; \
         dmesg >/dev/null 2>&1; echo dmesg=$?; \
         awk '$2 == \"/proc/sys\" {split($4, o, \",\"); print o[1]}' /proc/self/mounts",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["1", "2"], "{out}");
    assert_ne!(lines[2], "dmesg=0", "dmesg worked as uid 1000");
    assert_eq!(lines[3], "ro", "{out}");

    // Seccomp: a user namespace, eBPF and the keyring are refused with EPERM.
    let code = format!(
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
         for nr, arg0 in [({}, {}), ({}, 0), ({}, 0)]:\n\
         \x20   rc = libc.syscall(ctypes.c_long(nr), ctypes.c_long(arg0), 0, 0, 0, 0)\n\
         \x20   print(rc, ctypes.get_errno())\n",
        libc::SYS_unshare,
        libc::CLONE_NEWUSER,
        libc::SYS_bpf,
        libc::SYS_keyctl,
    );
    let r = exec(&agent, "python3", Some(&["-c", &code]), 60_000).await;
    assert_eq!(r.stdout, "-1 1\n-1 1\n-1 1\n", "{r:?}");

    // The agent was never restarted along the way (init logs every restart; guest time
    // under TCG lags the host's, so uptimes cannot tell).
    let now = agent.health().await.unwrap();
    assert!(now.uptime_ms > booted.uptime_ms, "{booted:?} -> {now:?}");
    let console = vm.console_tail(1 << 20);
    assert_eq!(console.matches("agent started").count(), 1, "{console}");
    assert!(!console.contains("restarting"), "{console}");
    vm.destroy().await.unwrap();
}
