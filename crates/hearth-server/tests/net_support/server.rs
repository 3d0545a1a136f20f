//! The networking tests' calls on the shared `hearth serve` harness (`tests/support`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub use crate::support::{hearth_bin, DataDir, Server};

impl Server {
    pub fn start(data: &Path, env: &[(&str, String)]) -> Server {
        Server::spawn(data, &[], env)
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
}
