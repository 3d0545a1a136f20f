//! Runs the real `hearth` binary against real VMs (QEMU/TCG where KVM is unusable):
//! `doctor`, `run` with its exit codes, streams, JSON and upload. Every test gets its own
//! run dir (`HEARTH_RUN_DIR`) and checks that nothing is left in it.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn image_dir() -> PathBuf {
    let dir = hearth_image::paths::image_dir("default");
    for f in ["vmlinux", "rootfs.ext4"] {
        assert!(
            dir.join(f).exists(),
            "guest image file {} is missing: build it with `bash scripts/build-guest.sh && \
             hearth image build` (scripts/test.sh does both)",
            dir.join(f).display()
        );
    }
    dir
}

fn hearth(run_dir: &Path, args: &[&str]) -> Output {
    image_dir();
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .env("HEARTH_RUN_DIR", run_dir)
        .output()
        .expect("hearth runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_run_dir_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn doctor_reports_the_host_and_boots_the_default_image() {
    let run = tempfile::tempdir().unwrap();
    let out = hearth(run.path(), &["doctor", "--json", "--boot"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for key in [
        "kvm_present",
        "kvm_usable",
        "vmm",
        "accel",
        "image",
        "agent_ready",
        "boot_ms",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["agent_ready"], true);
    assert!(v["boot_ms"].as_u64().unwrap() > 0);
    if Path::new("/sys/module/kvm_pvm").exists() {
        assert_eq!(v["kvm_usable"], false);
        assert_eq!(
            (v["vmm"].as_str(), v["accel"].as_str()),
            (Some("qemu"), Some("tcg"))
        );
    }
    assert_run_dir_empty(run.path());
}

#[test]
fn run_streams_both_outputs_and_exits_with_the_program_code() {
    let run = tempfile::tempdir().unwrap();
    let out = hearth(
        run.path(),
        &[
            "run",
            "--env",
            "GREETING=hi",
            "--",
            "sh",
            "-c",
            "echo $GREETING; echo oops >&2; id -u; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n1000\n");
    assert!(text(&out.stderr).contains("oops"));
    assert_run_dir_empty(run.path());
}

#[test]
fn run_json_reports_the_structured_result() {
    let run = tempfile::tempdir().unwrap();
    let out = hearth(run.path(), &["run", "--json", "-c", "echo out; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["stdout"], "out\n");
    assert!(v.get("result").is_some() && v.get("error").is_some(), "{v}");
    assert_run_dir_empty(run.path());
}

#[test]
fn run_uploads_a_directory_into_the_workspace() {
    let run = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir(data.path().join("sub")).unwrap();
    std::fs::write(data.path().join("sub/hello.txt"), "uploaded\n").unwrap();
    let dir = data.path().to_str().unwrap();
    let out = hearth(
        run.path(),
        &[
            "run",
            "--upload",
            dir,
            "--",
            "cat",
            "/workspace/sub/hello.txt",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "uploaded\n");
    assert_run_dir_empty(run.path());
}

#[test]
fn run_reports_a_timeout_on_stderr() {
    let run = tempfile::tempdir().unwrap();
    let out = hearth(run.path(), &["run", "--timeout", "2", "-c", "sleep 30"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("timed out"),
        "{}",
        text(&out.stderr)
    );
    assert_run_dir_empty(run.path());
}

#[test]
fn run_reports_an_oom_kill_on_stderr() {
    let run = tempfile::tempdir().unwrap();
    let bomb = "a = []\nwhile True:\n    a.append(b'x' * (16 << 20))\n";
    let out = hearth(
        run.path(),
        &[
            "run",
            "--memory",
            "256",
            "--timeout",
            "300",
            "--",
            "python3",
            "-c",
            bomb,
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(137), "{err}");
    assert!(err.contains("killed by the out-of-memory killer"), "{err}");
    assert!(!err.contains("timed out"), "{err}");
    assert_run_dir_empty(run.path());
}

#[test]
fn run_infers_python_from_the_file_name() {
    let run = tempfile::tempdir().unwrap();
    let src = tempfile::Builder::new().suffix(".py").tempfile().unwrap();
    std::fs::write(src.path(), "print(6 * 7)\n").unwrap();
    let out = hearth(run.path(), &["run", "--file", src.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "42\n");
    assert_run_dir_empty(run.path());
}

#[test]
fn ctrl_c_destroys_the_vm() {
    let run = tempfile::tempdir().unwrap();
    image_dir();
    let child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["run", "--", "sleep", "120"])
        .env("HEARTH_RUN_DIR", run.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the VM to be recorded, then give the guest time to start the program.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let meta = loop {
        let found = std::fs::read_dir(run.path())
            .unwrap()
            .flatten()
            .map(|e| e.path().join("vm.json"))
            .find(|p| p.exists());
        if let Some(m) = found {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "no VM appeared");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    std::thread::sleep(std::time::Duration::from_secs(3));
    let vm: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    for pid in vm["pids"].as_array().unwrap() {
        let pid = pid.as_u64().unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "VM process {pid} survived Ctrl-C"
        );
    }
    assert_run_dir_empty(run.path());
}

#[test]
fn doctor_boot_fails_loudly_without_an_image() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["doctor", "--json", "--boot"])
        .env("HEARTH_DATA_DIR", data.path())
        .env("HEARTH_RUN_DIR", data.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["agent_ready"], false);
    assert!(v["boot_error"].as_str().unwrap().contains("missing"), "{v}");
}

/// The examples the agent issue gives for `hearth run`, each in its own fresh VM.
#[test]
fn the_documented_run_examples_hold() {
    let run = tempfile::tempdir().unwrap();
    let ok = |args: &[&str]| {
        let out = hearth(run.path(), args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };

    assert_eq!(ok(&["run", "--", "id", "-u"]), "1000\n");
    assert_eq!(
        hearth(run.path(), &["run", "-c", "exit 7"]).status.code(),
        Some(7)
    );

    let json = ok(&[
        "run",
        "--lang",
        "ts",
        "-c",
        "result.set({a: 1 + 1})",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["result"], serde_json::json!({"a": 2}), "{json}");

    let js = ok(&[
        "run",
        "--lang",
        "js",
        "-c",
        "console.log(process.env.K)",
        "--env",
        "K=v",
    ]);
    assert_eq!(js, "v\n");
    assert_eq!(ok(&["run", "--lang", "python", "-c", "print(6*7)"]), "42\n");

    let shadow = hearth(
        run.path(),
        &[
            "run",
            "--lang",
            "ts",
            "-c",
            r#"Deno.readTextFileSync("/etc/shadow")"#,
        ],
    );
    assert_ne!(shadow.status.code(), Some(0));
    let err = text(&shadow.stderr);
    assert!(
        err.contains("NotCapable") || err.contains("ermission"),
        "{err}"
    );

    let yes = hearth(run.path(), &["run", "-c", "yes", "--timeout", "2"]);
    assert_ne!(yes.status.code(), Some(0));
    assert_eq!(yes.stdout.len(), hearth_proto::DEFAULT_OUTPUT_CAP);
    let err = text(&yes.stderr);
    assert!(
        err.contains("timed out") && err.contains("truncated"),
        "{err}"
    );
    assert_run_dir_empty(run.path());
}
