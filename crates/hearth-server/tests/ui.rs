//! The admin UI in a real browser: a real `hearth serve` on loopback (ephemeral port, temp
//! data dir, the real default image), driven through Chromium by `tests/ui/ui.test.mjs`.
//!
//! Needs `target/debug/hearth` and the default image (as `tests/e2e.rs`), plus node,
//! `/usr/bin/chromium` and `tests/ui/node_modules`, which `scripts/deps-browser.sh`
//! installs. Anything missing fails the test with what to run: a skipped browser test
//! would look green while testing nothing.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The whole browser run, boots included; past it the node process is killed.
const UI_TIMEOUT: Duration = Duration::from_secs(15 * 60);

fn hearth_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HEARTH_BIN") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let p = target.join("debug/hearth");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p hearth-cli` first",
        p.display()
    );
    p
}

fn image_dir() -> PathBuf {
    let dir = std::env::var_os("HEARTH_TEST_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/lib/hearth/images/default".into());
    assert!(
        dir.join("vmlinux").exists() && dir.join("rootfs.ext4").exists(),
        "no image in {}: run `hearth image build --name default` first",
        dir.display()
    );
    dir
}

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

/// Fails (never skips) when the browser toolchain is missing.
fn check_browser_deps() {
    let fix = "run `bash scripts/deps-browser.sh` (as root) to install it";
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is not installed or not on PATH ({node:?}): {fix}"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: {fix}"
    );
    assert!(
        ui_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is not installed in {}: {fix}",
        ui_dir().display()
    );
}

/// A temp data dir that, when dropped (test passed or panicked), SIGKILLs every VM
/// process recorded under it: the server's own DELETE may never have run.
struct DataDir(tempfile::TempDir);

impl Drop for DataDir {
    fn drop(&mut self) {
        let Ok(rd) = std::fs::read_dir(self.0.path().join("vms")) else {
            return;
        };
        for entry in rd.flatten() {
            let Ok(meta) = std::fs::read(entry.path().join("vm.json")) else {
                continue;
            };
            let v: Value = serde_json::from_slice(&meta).unwrap_or_default();
            let dir = entry.path().display().to_string();
            for pid in v["pids"].as_array().into_iter().flatten() {
                let Some(pid) = pid.as_i64() else { continue };
                // Only a process whose command line names this VM's dir: a stale pid
                // may belong to someone else's process by now.
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&dir) {
                    // SAFETY: kill(2) on a VM process this test's server started.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
    }
}

/// `hearth serve`; killed on drop (before the data dir, which is declared first).
struct Server {
    child: Child,
    url: String,
    key: String,
}

impl Server {
    fn start(data: &Path) -> Server {
        let img = image_dir();
        let log = std::fs::File::create(data.join("server.log")).unwrap();
        let mut child = Command::new(hearth_bin())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("HEARTH_DATA_DIR", data)
            .env("KERNEL_PATH", img.join("vmlinux"))
            .env("BASE_ROOTFS_PATH", img.join("rootfs.ext4"))
            .env("HEARTH_LOG", "info")
            // Plain text in server.log, which a failure prints.
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn hearth serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).expect("read listen line");
        let url = line
            .trim()
            .strip_prefix("hearth: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let key = std::fs::read_to_string(data.join("admin.key"))
            .unwrap()
            .trim()
            .to_string();
        Server { child, url, key }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `node ui.test.mjs`, killing it and its Chromium if it outlives [`UI_TIMEOUT`].
fn run_node(srv: &Server, screenshots: &Path) -> std::process::ExitStatus {
    let mut child = Command::new("node")
        .arg("ui.test.mjs")
        .args([&srv.url, &srv.key])
        .current_dir(ui_dir())
        .env("HEARTH_UI_SCREENSHOTS", screenshots)
        // Its own process group, so a time-out kills the browser processes too.
        .process_group(0)
        .spawn()
        .expect("spawn node");
    let deadline = Instant::now() + UI_TIMEOUT;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the process group of our own child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!("the browser test ran longer than {UI_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn admin_ui_in_a_real_browser() {
    check_browser_deps();
    let data = DataDir(tempfile::tempdir().unwrap());
    let srv = Server::start(data.0.path());
    // Outside the data dir so they outlive the test, for a person to look at.
    let screenshots = std::env::temp_dir().join("hearth-ui-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let status = run_node(&srv, &screenshots);
    if !status.success() {
        let log = std::fs::read_to_string(data.0.path().join("server.log")).unwrap_or_default();
        // Only the log records: a boot failure's record is followed by the whole guest
        // console, which would push everything else out of view.
        let records: Vec<&str> = log.lines().filter(|l| l.starts_with("20")).collect();
        let tail = &records[records.len().saturating_sub(40)..];
        eprintln!("server log (last records):\n{}", tail.join("\n"));
    }
    assert!(status.success(), "ui.test.mjs failed: {status}");
    eprintln!(
        "screenshots: {}/{{vms,jobs,keys,wrong-key}}.png",
        screenshots.display()
    );
}
