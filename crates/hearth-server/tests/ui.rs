//! The admin UI in a real browser: a real `hearth serve` on loopback (ephemeral port, temp
//! data dir, the real default image), driven through Chromium by `tests/ui/ui.test.mjs`.
//!
//! Needs `target/debug/hearth` and the default image (as `tests/e2e.rs`), plus node,
//! `/usr/bin/chromium` and `tests/ui/node_modules`, which `scripts/deps-browser.sh`
//! installs. Anything missing fails the test with what to run: a skipped browser test
//! would look green while testing nothing.

mod support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{DataDir, Server};

/// The whole browser run, boots included; past it the node process is killed.
const UI_TIMEOUT: Duration = Duration::from_secs(15 * 60);

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
    let data = DataDir::new();
    let srv = Server::spawn(data.path(), &[], &[] as &[(&str, &str)]);
    // Outside the data dir so they outlive the test, for a person to look at.
    let screenshots = std::env::temp_dir().join("hearth-ui-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let status = run_node(&srv, &screenshots);
    if !status.success() {
        let log = std::fs::read_to_string(data.path().join("server.log")).unwrap_or_default();
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
