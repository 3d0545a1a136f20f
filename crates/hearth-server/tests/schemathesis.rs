//! Schemathesis (property-based testing from the OpenAPI document, from PyPI) against a
//! real `hearth serve` with real VMs, `--checks all`: every answer must be documented
//! (status, content type, headers, body schema), every request the schema allows must be
//! accepted and every one it forbids refused, and links (create, then use the id) must
//! hold. The run must find nothing.
//!
//! The fuzzer may delete images and create VMs, so the server gets a data dir of its own
//! whose image is a hard-linked copy of the default one (deleting it removes only the
//! links), and limits that keep it small: one vCPU, at most 256 MiB, two VMs, 120 s TTLs,
//! 10 s timeouts, no job workers and no VM networking. Every VM is deleted afterwards and
//! checked gone.
//!
//! Schemathesis is installed, pinned, into a virtual environment under the target dir on
//! first use (`python3 -m venv`, Debian's `python3-venv`; pip fetches from PyPI). `HEARTH_FUZZ_EXAMPLES` sets the
//! examples per operation (default 8), `HEARTH_FUZZ_SEED` the seed (default: random,
//! printed in the summary so a failure can be replayed).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{image_dir, DataDir, Server};

const SCHEMATHESIS: &str = "4.32.5";

/// The server's limits for the run: they keep what the fuzzer can start small, and the
/// served schema carries them, so the fuzzer stays within them.
const CONFIG: &str = r#"
networking = false
image_builds = false
[limits]
max_vms = 2
max_vcpus = 1
max_memory_mib = 256
max_ttl_s = 120
max_timeout_ms = 10000
max_concurrent_boots = 1
[defaults]
vcpus = 1
memory_mib = 256
[jobs]
concurrency = 0
"#;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `schemathesis` from a venv of its own, made on first use. A marker written after the
/// install tells a finished venv from an interrupted one (which is made again).
fn schemathesis() -> PathBuf {
    let venv = target_dir().join(format!("schemathesis-{SCHEMATHESIS}"));
    let (python, done) = (venv.join("bin/python"), venv.join(".installed"));
    let st = venv.join("bin/schemathesis");
    if done.exists() {
        return st;
    }
    let _ = std::fs::remove_dir_all(&venv);
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(format!("schemathesis=={SCHEMATHESIS}")));
    std::fs::write(&done, SCHEMATHESIS).unwrap();
    st
}

/// The default image as hard links (a copy across file systems) in `data`'s images.
fn link_image(data: &Path) -> PathBuf {
    let (src, dst) = (image_dir(), data.join("images/default"));
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["vmlinux", "rootfs.ext4", "manifest.json"] {
        if !src.join(f).exists() {
            continue;
        }
        if std::fs::hard_link(src.join(f), dst.join(f)).is_err() {
            std::fs::copy(src.join(f), dst.join(f)).unwrap();
        }
    }
    dst
}

#[test]
fn schemathesis_finds_nothing() {
    let st = schemathesis();
    let data = DataDir::new();
    let img = link_image(data.path());
    let config = data.path().join("hearth.toml");
    std::fs::write(&config, CONFIG).unwrap();
    // The built-in image points at the copies too, never at the shared files.
    let srv = Server::spawn(
        data.path(),
        &["--config", config.to_str().unwrap()],
        &[
            ("KERNEL_PATH", img.join("vmlinux")),
            ("BASE_ROOTFS_PATH", img.join("rootfs.ext4")),
        ],
    );
    let work = data.path().join("schemathesis");
    std::fs::create_dir_all(&work).unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    for f in ["schemathesis.toml", "hooks.py"] {
        std::fs::copy(here.join(f), work.join(f)).unwrap();
    }
    let examples = std::env::var("HEARTH_FUZZ_EXAMPLES").unwrap_or_else(|_| "8".into());
    let mut cmd = Command::new(&st);
    cmd.current_dir(&work)
        .arg("run")
        .arg(format!("{}/openapi.json", srv.url))
        .args(["--checks", "all", "--max-examples", &examples])
        .env("HEARTH_FUZZ_KEY", &srv.key)
        .env("NO_COLOR", "1");
    if let Ok(seed) = std::env::var("HEARTH_FUZZ_SEED") {
        cmd.args(["--seed", &seed]);
    }
    let out = cmd.output().expect("running schemathesis");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // The summary goes to the test's output either way.
    let summary = text
        .find("=== SUMMARY ===")
        .or_else(|| text.find("SUMMARY"))
        .map_or(text.as_str(), |i| {
            &text[text[..i].rfind('\n').unwrap_or(0)..]
        });
    eprintln!("{summary}");

    let leftovers = delete_all_vms(&srv);
    // The data dir goes with the test: what the server logged about its failures (5xx
    // details are only there) goes into the message.
    let log = std::fs::read_to_string(data.path().join("server.log")).unwrap_or_default();
    let failures: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\nserver errors:\n{}",
        failures.join("\n")
    );
    assert!(
        leftovers.is_empty(),
        "VMs still live after deletion: {leftovers:?}"
    );
}

/// Deletes every VM the fuzzer left and returns those that are still not `deleted`.
fn delete_all_vms(srv: &Server) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (_, list) = srv.call("GET", "/v1/vms", None).await;
        let live = |list: &Value| -> Vec<String> {
            list["vms"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v["state"] != "deleted")
                .map(|v| v["id"].as_str().unwrap_or_default().to_string())
                .collect()
        };
        for id in live(&list) {
            srv.call("DELETE", &format!("/v1/vms/{id}"), None).await;
        }
        let (_, list) = srv.call("GET", "/v1/vms", None).await;
        live(&list)
    })
}
