//! Shared by the tests that start a real `hearth serve` on loopback: where the binary
//! and the image are, a data dir that takes its VMs with it, and the server process.
#![allow(dead_code)] // each test binary uses its own subset

pub mod inproc;
pub mod sandbox_api;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The `hearth` binary under test (`HEARTH_BIN`, else the workspace's debug build, which
/// `scripts/test.sh` builds before the tests).
pub fn hearth_bin() -> PathBuf {
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

/// The real default image (`HEARTH_TEST_IMAGE_DIR` overrides): these tests boot real
/// VMs and never skip.
pub fn image_dir() -> PathBuf {
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

/// A `hearth serve` process on an ephemeral loopback port, killed on drop. Its log is
/// appended to `DATA/server.log` (across restarts), which failing tests print.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub key: String,
    pub data: PathBuf,
}

impl Server {
    pub fn spawn<K, V>(data: &Path, args: &[&str], env: &[(K, V)]) -> Server
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let img = image_dir();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("server.log"))
            .unwrap();
        let mut cmd = Command::new(hearth_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("HEARTH_DATA_DIR", data)
            .env("KERNEL_PATH", img.join("vmlinux"))
            .env("BASE_ROOTFS_PATH", img.join("rootfs.ext4"))
            .env("HEARTH_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn hearth serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).expect("read listen line");
        let url = line
            .trim()
            .strip_prefix("hearth: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}; see server.log"))
            .to_string();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let key = std::fs::read_to_string(data.join("admin.key")).unwrap();
        Server {
            child,
            url,
            key: key.trim().to_string(),
            data: data.to_path_buf(),
        }
    }

    /// A client patient enough for VM boots and long runs under TCG.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .unwrap()
    }

    /// An authenticated JSON call; a non-JSON answer comes back as a string value.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client()
            .request(m, format!("{}{path}", self.url))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    /// A VM's state as `GET /v1/vms` lists it (a deleted VM's own routes answer 404).
    pub async fn listed_state(&self, vm: &str) -> String {
        let (s, list) = self.call("GET", "/v1/vms", None).await;
        assert_eq!(s, 200, "{list}");
        let found = list["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["id"] == vm);
        let found = found.unwrap_or_else(|| panic!("VM {vm} is not listed: {list}"));
        found["state"].as_str().unwrap().to_string()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A temp `HEARTH_DATA_DIR` that, when dropped, kills the VM processes recorded under
/// its `vms/`. A server stopped gracefully leaves its VMs running by design (it re-adopts
/// them on start), so without this a test that ends early, or panics, would leave VMs
/// burning CPU after their directory is gone.
pub struct DataDir(tempfile::TempDir);

impl DataDir {
    pub fn new() -> DataDir {
        DataDir(tempfile::tempdir().unwrap())
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let Ok(rd) = std::fs::read_dir(self.path().join("vms")) else {
            return;
        };
        for entry in rd.flatten() {
            let Ok(meta) = std::fs::read(entry.path().join("vm.json")) else {
                continue;
            };
            let v: Value = serde_json::from_slice(&meta).unwrap_or_default();
            for pid in v["pids"].as_array().into_iter().flatten() {
                let Some(pid) = pid.as_i64() else { continue };
                // Only a process whose command line names this VM's dir (a stale pid may
                // have been reused by someone else's process).
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let dir = entry.path().display().to_string();
                if String::from_utf8_lossy(&cmdline).contains(&dir) {
                    // SAFETY: kill(2) on a VM process of this test.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
        // Give the kernel a moment to reap them: a VM's network namespace goes only then.
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The VMM processes a VM's state dir records (`vms/ID/vm.json` under `data`).
pub fn vm_pids(data: &Path, vm: &str) -> Vec<i32> {
    let meta = std::fs::read(data.join("vms").join(vm).join("vm.json")).unwrap();
    let v: Value = serde_json::from_slice(&meta).unwrap();
    v["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap() as i32)
        .collect()
}

/// Whether `pid` still runs; a zombie (`/proc/PID/stat` state Z) has exited.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A tar.gz of `(name, content)` files, mode 0644, as an upload body.
pub fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}
