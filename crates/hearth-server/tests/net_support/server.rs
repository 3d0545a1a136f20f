//! A real `hearth serve` process on loopback and a data dir guard that kills its VMs even
//! after a panic (the same approach as `tests/e2e.rs`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

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
        "{} is missing: cargo build -p hearth-cli",
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

/// SIGKILLs, on drop, every VM process recorded under the dir whose command line names it.
pub struct DataDir(pub tempfile::TempDir);

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
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&entry.path().display().to_string()) {
                    // SAFETY: kill(2) on a VM process of this test.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
        // Give the kernel a moment to reap them: their namespaces go only then.
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub struct Server {
    child: Child,
    pub url: String,
    key: String,
    data: PathBuf,
}

impl Server {
    pub fn start(data: &Path, env: &[(&str, String)]) -> Server {
        let img = image_dir();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("server.log"))
            .unwrap();
        let mut cmd = Command::new(hearth_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .env("HEARTH_DATA_DIR", data)
            .env("KERNEL_PATH", img.join("vmlinux"))
            .env("BASE_ROOTFS_PATH", img.join("rootfs.ext4"))
            .env("HEARTH_LOG", "info")
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
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let key = std::fs::read_to_string(data.join("admin.key")).unwrap();
        Server {
            child,
            url,
            key: key.trim().to_string(),
            data: data.to_path_buf(),
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .unwrap();
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = client
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

    /// Creates a VM; returns it and how long `POST /v1/vms` took.
    pub async fn create_vm(&self, body: Value) -> (Value, Duration) {
        let t = Instant::now();
        let (s, vm) = self.call("POST", "/v1/vms", Some(body)).await;
        assert_eq!(s, 201, "{vm}");
        (vm, t.elapsed())
    }

    pub async fn delete_vm(&self, id: &str) {
        let (s, v) = self.call("DELETE", &format!("/v1/vms/{id}"), None).await;
        assert_eq!(s, 204, "{v}");
    }

    /// `sh -c script` in the guest; stdout.
    pub async fn sh(&self, vm: &str, script: &str) -> String {
        let body = json!({"cmd": script, "timeout_ms": 120_000});
        let (s, r) = self
            .call("POST", &format!("/v1/vms/{vm}/exec"), Some(body))
            .await;
        assert_eq!(s, 200, "{r}");
        r["stdout"].as_str().unwrap_or_default().to_string()
    }

    /// The `hearth` CLI against this server: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(hearth_bin())
            .args(args)
            .env("HEARTH_URL", &self.url)
            .env("HEARTH_DATA_DIR", &self.data) // the key comes from admin.key
            .env_remove("HEARTH_API_KEY")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
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
