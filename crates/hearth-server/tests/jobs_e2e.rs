//! Jobs end to end: a real `hearth serve` process on loopback with real VMs from the
//! default image (QEMU/TCG here), driven over HTTP and through the `hearth` CLI.
//!
//! Needs `target/debug/hearth` (`cargo build -p hearth-cli`; `HEARTH_BIN` overrides) and
//! the image at `/var/lib/hearth/images/default` (`HEARTH_TEST_IMAGE_DIR` overrides).
//! The tests take turns (one lock): each boots several VMs and the host is small.
//! Timeouts are generous and nothing asserts on timing.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use support::{hearth_bin, DataDir, Server};

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Server {
    fn start(data: &Path, concurrency: u32) -> Server {
        Self::start_with(data, concurrency, &[])
    }

    fn start_with(data: &Path, concurrency: u32, env: &[(&str, &str)]) -> Server {
        // The concurrency first, so a test's own env can still override it.
        let mut all = vec![("HEARTH_JOB_CONCURRENCY", concurrency.to_string())];
        all.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
        Server::spawn(data, &[], &all)
    }

    async fn raw(&self, method: &str, path: &str, body: Option<String>) -> (u16, String) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = reqwest::Client::new()
            .request(m, format!("{}{path}", self.url))
            .timeout(Duration::from_secs(120))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    async fn inline(&self, lang: &str, code: &str, extra: Value) -> String {
        let mut body = json!({"language": lang, "code": code});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (s, v) = self.call("POST", "/v1/jobs", Some(body)).await;
        assert_eq!(s, 202, "{v}");
        v["job_id"].as_str().unwrap().to_string()
    }

    async fn job(&self, id: &str) -> Value {
        let (s, v) = self.call("GET", &format!("/v1/jobs/{id}"), None).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn logs(&self, id: &str, query: &str) -> String {
        let (s, text) = self
            .raw("GET", &format!("/v1/jobs/{id}/logs{query}"), None)
            .await;
        assert_eq!(s, 200, "{text}");
        text
    }

    async fn wait_final(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let j = self.job(id).await;
            let st = j["status"].as_str().unwrap();
            if !matches!(st, "queued" | "running") {
                return j;
            }
            assert!(Instant::now() < deadline, "job {id} never ended: {j}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Waits until the job's log contains `text` (so its script is really running).
    async fn wait_log(&self, id: &str, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !self.logs(id, "").await.contains(text) {
            let j = self.job(id).await;
            assert!(
                Instant::now() < deadline,
                "{id} never printed {text:?}: {j}"
            );
            assert!(
                !matches!(j["status"].as_str(), Some("succeeded" | "failed" | "error")),
                "{j}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn vm_state(&self, vm: &str) -> String {
        self.listed_state(vm).await
    }
}

fn ms(v: &Value) -> u128 {
    let t = humantime::parse_rfc3339(v.as_str().unwrap()).unwrap();
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[tokio::test(flavor = "multi_thread")]
async fn failure_timeout_cancel_and_the_cli() {
    let _turn = TURN.lock().await;
    let dir = DataDir::new();
    let srv = Server::start_with(dir.path(), 1, &[("HEARTH_MAX_JOB_LOG_BYTES", "65536")]);

    // A Python script printing lines then exiting 3: `failed`, exit 3, lines kept.
    // Pauses between writes: stdout and stderr are two pipes, so only writes apart in
    // time have an order the agent can observe.
    let py = "import sys, time\nprint('line one', flush=True)\ntime.sleep(0.5)\n\
              print('oops', file=sys.stderr, flush=True)\ntime.sleep(0.5)\n\
              print('line two', flush=True)\nresult.set({'n': 3})\nsys.exit(3)\n";
    let id = srv.inline("python", py, json!({})).await;
    let j = srv.wait_final(&id).await;
    assert_eq!(
        (j["status"].as_str(), j["exit_code"].as_i64()),
        (Some("failed"), Some(3)),
        "{j}"
    );
    assert_eq!(j["result"], json!({"n": 3}));
    assert_eq!(srv.logs(&id, "").await, "line one\noops\nline two\n");
    assert_eq!(
        srv.logs(&id, "?stream=stdout").await,
        "line one\nline two\n"
    );
    assert_eq!(srv.vm_state(j["vm_id"].as_str().unwrap()).await, "deleted");

    // A shell script sleeping past its timeout: `timed_out`, and what it printed stays.
    let id = srv
        .inline(
            "sh",
            "echo before; sleep 60; echo after",
            json!({"timeout_s": 3}),
        )
        .await;
    let j = srv.wait_final(&id).await;
    assert_eq!(j["status"], "timed_out", "{j}");
    assert_eq!(srv.logs(&id, "").await, "before\n");

    // A script the guest's OOM killer ends: `failed`, flagged, and the error says why.
    let id = srv
        .inline(
            "python",
            "print('growing', flush=True)\na = []\nwhile True:\n    a.append(b'x' * (16 << 20))\n",
            json!({}),
        )
        .await;
    let j = srv.wait_final(&id).await;
    assert_eq!(
        (
            j["status"].as_str(),
            j["exit_code"].as_i64(),
            j["oom_killed"].as_bool()
        ),
        (Some("failed"), Some(137), Some(true)),
        "{j}"
    );
    assert!(
        j["error"].as_str().unwrap().contains("out-of-memory"),
        "{j}"
    );
    assert_eq!(srv.logs(&id, "").await, "growing\n");

    // Output beyond the log cap is dropped and flagged; the job itself is unaffected.
    let id = srv
        .inline(
            "sh",
            "yes 0123456789abcdef | head -c 1000000; echo",
            json!({}),
        )
        .await;
    let j = srv.wait_final(&id).await;
    assert_eq!(
        (j["status"].as_str(), j["log_truncated"].as_bool()),
        (Some("succeeded"), Some(true)),
        "{j}"
    );
    let log = srv.logs(&id, "").await;
    assert!(log.len() < 65536 && log.ends_with("[hearth: log truncated at the size limit]\n"));
    let file = dir.path().join("jobs").join(&id).join("log.ndjson");
    assert!(std::fs::metadata(file).unwrap().len() <= 65536);

    // Cancel: one running (its VM destroyed), one queued behind it (never starts).
    let running = srv.inline("sh", "echo started; sleep 120", json!({})).await;
    let queued = srv.inline("sh", "echo must-not-run", json!({})).await;
    srv.wait_log(&running, "started").await;
    assert_eq!(srv.job(&queued).await["status"], "queued");
    let (s, v) = srv
        .call("POST", &format!("/v1/jobs/{queued}/cancel"), None)
        .await;
    assert_eq!((s, v["status"].as_str()), (202, Some("cancelled")), "{v}");
    let (s, v) = srv
        .call("POST", &format!("/v1/jobs/{running}/cancel"), None)
        .await;
    assert_eq!(s, 202, "{v}");
    let j = srv.wait_final(&running).await;
    assert_eq!(j["status"], "cancelled", "{j}");
    assert_eq!(srv.vm_state(j["vm_id"].as_str().unwrap()).await, "deleted");
    let q = srv.wait_final(&queued).await;
    assert!(q["started_at"].is_null() && q["vm_id"].is_null(), "{q}");
    assert_eq!(srv.logs(&queued, "").await, "");
    let (s, v) = srv
        .call("POST", &format!("/v1/jobs/{running}/cancel"), None)
        .await;
    assert_eq!(s, 409, "{v}");

    // The CLI: upload, run, stream, exit with the script's code.
    let script = dir.path().join("cli.py");
    std::fs::write(
        &script,
        "import sys\nprint('from cli', sys.argv[1], flush=True)\nsys.exit(5)\n",
    )
    .unwrap();
    let out = Command::new(hearth_bin())
        .args(["job", "run", "--wait", "--arg", "A1"])
        .arg(&script)
        .env("HEARTH_URL", &srv.url)
        .env("HEARTH_API_KEY", &srv.key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "from cli A1\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_jobs_at_concurrency_two_each_in_its_own_vm() {
    let _turn = TURN.lock().await;
    let dir = DataDir::new();
    let srv = Server::start(dir.path(), 2);
    // Each job checks that nothing of an earlier job is there, then leaves a trace.
    let code = "if [ -e /workspace/trace ]; then echo dirty; exit 1; fi; \
                echo $JOB_N > /workspace/trace; ls /workspace; echo clean $JOB_N";
    let mut ids = vec![];
    for n in 0..10 {
        let extra = json!({"env": {"JOB_N": n.to_string()}, "files": {"data/in.txt": "x"}});
        ids.push(srv.inline("sh", code, extra).await);
    }
    let mut vms = std::collections::HashSet::new();
    let mut spans = vec![];
    for (n, id) in ids.iter().enumerate() {
        let j = srv.wait_final(id).await;
        assert_eq!(j["status"], "succeeded", "{j}");
        let log = srv.logs(id, "").await;
        assert!(
            log.contains(&format!("clean {n}")) && log.contains("data"),
            "{log}"
        );
        let vm = j["vm_id"].as_str().unwrap().to_string();
        assert_eq!(srv.vm_state(&vm).await, "deleted");
        assert!(vms.insert(vm), "two jobs ran in one VM");
        spans.push((ms(&j["started_at"]), ms(&j["finished_at"])));
    }
    // Never more than two at once.
    for &(s, _) in &spans {
        let overlapping = spans.iter().filter(|(a, b)| *a <= s && s < *b).count();
        assert!(overlapping <= 2, "{overlapping} jobs ran at once");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_with_jobs_queued_and_running_loses_none() {
    let _turn = TURN.lock().await;
    let dir = DataDir::new();
    let mut srv = Server::start(dir.path(), 2);
    let code = "echo start; sleep 8; echo done";
    let retried = srv.inline("sh", code, json!({"max_retries": 1})).await;
    let plain = srv.inline("sh", code, json!({})).await;
    let mut queued = vec![];
    for _ in 0..3 {
        queued.push(srv.inline("sh", code, json!({})).await);
    }
    srv.wait_log(&retried, "start").await;
    srv.wait_log(&plain, "start").await;
    for id in &queued {
        assert_eq!(srv.job(id).await["status"], "queued");
    }
    let killed_vm = srv.job(&plain).await["vm_id"].as_str().unwrap().to_string();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(srv.child.id() as i32, libc::SIGKILL) };
    srv.child.wait().unwrap();
    drop(srv);

    let srv = Server::start(dir.path(), 2);
    let j = srv.wait_final(&plain).await;
    assert_eq!(
        (j["status"].as_str(), j["attempts"].as_i64()),
        (Some("error"), Some(1)),
        "{j}"
    );
    assert!(j["error"].as_str().unwrap().contains("restarted"), "{j}");
    assert_eq!(srv.logs(&plain, "").await, "start\n");
    assert_ne!(srv.vm_state(&killed_vm).await, "running");

    let j = srv.wait_final(&retried).await;
    assert_eq!(
        (j["status"].as_str(), j["attempts"].as_i64()),
        (Some("succeeded"), Some(2)),
        "{j}"
    );
    assert_eq!(
        srv.logs(&retried, "").await,
        "start\n[hearth: attempt 2]\nstart\ndone\n"
    );
    for id in &queued {
        let j = srv.wait_final(id).await;
        assert_eq!(
            (j["status"].as_str(), j["attempts"].as_i64()),
            (Some("succeeded"), Some(1)),
            "{j}"
        );
        assert_eq!(srv.logs(id, "").await, "start\ndone\n");
    }
    let (_, all) = srv.call("GET", "/v1/jobs", None).await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 5);
    let (_, vms) = srv.call("GET", "/v1/vms?state=running", None).await;
    assert_eq!(vms["vms"].as_array().unwrap().len(), 0, "{vms}");
}
