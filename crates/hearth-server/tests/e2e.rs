//! End-to-end: a real `hearth serve` process on loopback (ephemeral port, temp data dir),
//! real VMs booted from the default image (QEMU/TCG on hosts without usable KVM).
//!
//! Needs `target/debug/hearth` (`cargo build -p hearth-cli`; `HEARTH_BIN` overrides) and
//! the image at `/var/lib/hearth/images/default` (`HEARTH_TEST_IMAGE_DIR` overrides),
//! which `scripts/test.sh` builds before running the tests.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{alive, hearth_bin, tar_gz, DataDir, Server};

impl Server {
    fn start(data: &Path) -> Server {
        Self::start_with(data, &[], &[])
    }

    fn start_with(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::spawn(data, args, env)
    }

    async fn create_vm(&self, body: Value) -> String {
        let (s, vm) = self.call("POST", "/v1/vms", Some(body)).await;
        assert_eq!(s, 201, "{vm}");
        assert_eq!(vm["state"], "running");
        vm["id"].as_str().unwrap().to_string()
    }

    async fn exec(&self, vm: &str, cmd: &str) -> Value {
        let (s, r) = self
            .call(
                "POST",
                &format!("/v1/vms/{vm}/exec"),
                Some(json!({"cmd": cmd})),
            )
            .await;
        assert_eq!(s, 200, "{r}");
        r
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn vm_pids(&self, vm: &str) -> Vec<i32> {
        support::vm_pids(&self.data, vm)
    }
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn untar_gz(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let name = e.path().unwrap().display().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push((name, data));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_lifecycle_over_http() {
    let tmp = DataDir::new();
    let srv = Server::start(tmp.path());

    // Auth and unknown ids.
    let resp = srv
        .client()
        .get(format!("{}/v1/vms", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let (s, v) = srv.call("GET", "/v1/vms/no-such-vm", None).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"]["code"], "not_found");

    let vm = srv
        .create_vm(json!({"env": {"GREETING": "hi"}, "metadata": {"t": "e2e"}}))
        .await;
    let r = srv.exec(&vm, "id -u").await;
    assert_eq!(r["stdout"].as_str().unwrap().trim(), "1000", "{r}");
    assert_eq!(r["exit_code"], 0);
    let r = srv.exec(&vm, "echo $GREETING").await;
    assert_eq!(
        r["stdout"].as_str().unwrap().trim(),
        "hi",
        "VM env reaches exec: {r}"
    );

    // A buffered call longer than the agent client's default header timeout (10 s).
    let r = srv.exec(&vm, "sleep 11; echo slept").await;
    assert_eq!(r["stdout"].as_str().unwrap().trim(), "slept", "{r}");

    // Upload a tar.gz, download it back: same bytes.
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let archive = tar_gz(&[("data/blob.bin", &payload), ("data/note.txt", b"hello\n")]);
    let resp = srv
        .client()
        .post(format!(
            "{}/v1/vms/{vm}/files/upload?dest=/workspace",
            srv.url
        ))
        .bearer_auth(&srv.key)
        .header("content-type", "application/gzip")
        .body(archive)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let up: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{up}");
    assert_eq!(up["files"], 2, "{up}");
    let resp = srv
        .client()
        .get(format!(
            "{}/v1/vms/{vm}/files/download?path=/workspace/data",
            srv.url
        ))
        .bearer_auth(&srv.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let files = untar_gz(&resp.bytes().await.unwrap());
    let blob = files
        .iter()
        .find(|(n, _)| n.ends_with("blob.bin"))
        .unwrap_or_else(|| {
            panic!(
                "no blob.bin in {:?}",
                files.iter().map(|f| &f.0).collect::<Vec<_>>()
            )
        });
    assert!(
        blob.1 == payload,
        "downloaded bytes differ from uploaded ones"
    );

    // run-ts with result.set.
    let (s, r) = srv
        .call(
            "POST",
            &format!("/v1/vms/{vm}/run-ts"),
            Some(json!({"code": "result.set({sum: 1 + 2}); console.log('ok')"})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["result"], json!({"sum": 3}), "{r}");
    assert_eq!(r["exit_code"], 0, "{r}");

    // run-python, streamed: the run path passes NDJSON through too.
    let text = srv
        .client()
        .post(format!("{}/v1/vms/{vm}/run-python?stream=true", srv.url))
        .bearer_auth(&srv.key)
        .json(&json!({"code": "print(6 * 7)"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("42"), "{text}");
    assert!(text.lines().last().unwrap().contains("\"exit\""), "{text}");

    // Streamed exec passes NDJSON through, ending with the exit event.
    let text = srv
        .client()
        .post(format!("{}/v1/vms/{vm}/exec?stream=true", srv.url))
        .bearer_auth(&srv.key)
        .json(&json!({"cmd": "echo one; echo two >&2; exit 3"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.last().unwrap()["exit"]["exit_code"], 3, "{text}");
    assert!(text.contains("one") && text.contains("two"), "{text}");

    // History and logs.
    let (_, h) = srv
        .call("GET", &format!("/v1/vms/{vm}/history?limit=10"), None)
        .await;
    let calls = h["calls"].as_array().unwrap();
    assert!(calls.len() >= 4, "{h}");
    assert!(
        calls
            .iter()
            .any(|c| c["kind"] == "run-ts" && c["exit_code"] == 0),
        "{h}"
    );
    let (_, l) = srv
        .call("GET", &format!("/v1/vms/{vm}/logs?tail=20"), None)
        .await;
    assert!(!l["lines"].as_array().unwrap().is_empty(), "{l}");

    // Stop keeps the overlay: a file written before is there after start.
    srv.exec(&vm, "echo kept > /workspace/kept.txt && sync")
        .await;
    let (s, v) = srv.call("POST", &format!("/v1/vms/{vm}/stop"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "stopped");
    let (s, v) = srv
        .call(
            "POST",
            &format!("/v1/vms/{vm}/exec"),
            Some(json!({"cmd": "true"})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = srv.call("POST", &format!("/v1/vms/{vm}/start"), None).await;
    assert_eq!(s, 200, "{v}");
    let r = srv.exec(&vm, "cat /workspace/kept.txt").await;
    assert_eq!(r["stdout"].as_str().unwrap().trim(), "kept", "{r}");

    // The image is in use: 409.
    let (_, imgs) = srv.call("GET", "/v1/images", None).await;
    let img = imgs["images"][0]["id"].as_str().unwrap().to_string();
    let (s, v) = srv.call("DELETE", &format!("/v1/images/{img}"), None).await;
    assert_eq!(s, 409, "{v}");

    let pids = srv.vm_pids(&vm);
    let (s, _) = srv.call("DELETE", &format!("/v1/vms/{vm}"), None).await;
    assert_eq!(s, 204);
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "VM processes survive delete"
    );
    assert!(
        !srv.data.join("vms").join(&vm).exists(),
        "state dir survives delete"
    );
    let (s, _) = srv.call("GET", &format!("/v1/vms/{vm}"), None).await;
    assert_eq!(s, 404, "a deleted VM is gone");
    assert_eq!(srv.listed_state(&vm).await, "deleted");
    let (s, v) = srv
        .call(
            "POST",
            &format!("/v1/vms/{vm}/exec"),
            Some(json!({"cmd": "true"})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_destroys_the_vm() {
    let tmp = DataDir::new();
    let srv = Server::start(tmp.path());
    let started = Instant::now();
    let vm = srv.create_vm(json!({"ttl_s": 15})).await;
    let pids = srv.vm_pids(&vm);
    let url = format!("/v1/vms/{vm}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, v) = srv.call("GET", &url, None).await;
        if s == 404 {
            assert_eq!(srv.listed_state(&vm).await, "deleted");
            break;
        }
        assert!(Instant::now() < deadline, "TTL never fired: {v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(15),
        "destroyed before its TTL"
    );
    wait_for("VM processes to exit", Duration::from_secs(10), || {
        pids.iter().all(|p| !alive(*p))
    })
    .await;
    // `deleted` is written before the VM is torn down; the files go right after.
    let dir = tmp.path().join("vms").join(&vm);
    wait_for("the state dir to go", Duration::from_secs(10), || {
        !dir.exists()
    })
    .await;
}

/// Documented behaviour: a graceful stop leaves VMs running and the next start re-adopts
/// them; a SIGKILLed server recovers the same way; a boot cut short by SIGKILL becomes
/// `failed` with nothing left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_readopts_and_sigkill_leaks_nothing() {
    let tmp = DataDir::new();
    let mut srv = Server::start(tmp.path());
    let vm = srv.create_vm(json!({})).await;
    srv.exec(&vm, "echo before > /workspace/f").await;
    let pids = srv.vm_pids(&vm);

    // Graceful stop: the VM keeps running.
    srv.signal(libc::SIGTERM);
    assert!(srv.wait_exit().success());
    assert!(pids.iter().all(|p| alive(*p)), "VM died with the server");
    drop(srv);

    let mut srv = Server::start(tmp.path());
    let (_, v) = srv.call("GET", &format!("/v1/vms/{vm}"), None).await;
    assert_eq!(v["state"], "running", "{v}");
    let r = srv.exec(&vm, "cat /workspace/f").await;
    assert_eq!(r["stdout"].as_str().unwrap().trim(), "before", "{r}");

    // SIGKILL while a second VM is booting.
    let client = srv.client();
    let (url, key) = (srv.url.clone(), srv.key.clone());
    let booting = tokio::spawn(async move {
        client
            .post(format!("{url}/v1/vms"))
            .bearer_auth(key)
            .json(&json!({}))
            .send()
            .await
    });
    let vms_dir = tmp.path().join("vms");
    wait_for("the second VM's state dir", Duration::from_secs(30), || {
        std::fs::read_dir(&vms_dir)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name() != vm.as_str() && e.path().join("vm.json").exists())
            })
            .unwrap_or(false)
    })
    .await;
    let second: String = std::fs::read_dir(&vms_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|n| n != &vm)
        .unwrap();
    let second_pids = srv.vm_pids(&second);
    srv.signal(libc::SIGKILL);
    srv.wait_exit();
    let _ = booting.await;
    drop(srv);
    // A stray dir nobody knows about.
    std::fs::create_dir_all(vms_dir.join("stray")).unwrap();
    std::fs::File::create(vms_dir.join("stray/overlay.ext4"))
        .unwrap()
        .write_all(b"x")
        .unwrap();

    let srv = Server::start(tmp.path());
    let (_, v) = srv.call("GET", &format!("/v1/vms/{second}"), None).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert!(
        second_pids.iter().all(|p| !alive(*p)),
        "booting VM leaked processes"
    );
    assert!(!vms_dir.join(&second).exists(), "booting VM leaked files");
    assert!(!vms_dir.join("stray").exists(), "stray dir not removed");
    let (_, v) = srv.call("GET", &format!("/v1/vms/{vm}"), None).await;
    assert_eq!(v["state"], "running", "{v}");
    let r = srv.exec(&vm, "cat /workspace/f").await;
    assert_eq!(r["stdout"].as_str().unwrap().trim(), "before");

    let (s, _) = srv.call("DELETE", &format!("/v1/vms/{vm}"), None).await;
    assert_eq!(s, 204);
    assert!(pids.iter().all(|p| !alive(*p)));
    let left: Vec<_> = std::fs::read_dir(&vms_dir).unwrap().flatten().collect();
    assert!(left.is_empty(), "leftovers: {left:?}");
}

/// The `hearth vm` / `hearth keys` client against a real server: human output, `--json`,
/// exit codes passed through, and the server's message on errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_client_round_trip() {
    let tmp = DataDir::new();
    let srv = Server::start(tmp.path());
    let cli = |args: &[&str]| {
        let out = Command::new(hearth_bin())
            .args(args)
            .env("HEARTH_URL", &srv.url)
            .env("HEARTH_DATA_DIR", tmp.path()) // key comes from admin.key
            .env_remove("HEARTH_API_KEY")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, id, err) = cli(&["vm", "create", "--ttl", "600", "--meta", "who=cli"]);
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_string();
    let (code, out, _) = cli(&["vm", "exec", &id, "--", "sh", "-c", "echo hi; exit 7"]);
    assert_eq!((code, out.trim()), (7, "hi"));
    // A run the guest's OOM killer ends says so: in the API's response, and on stderr.
    // (Under TCG on a busy host the OOM killer can take tens of seconds to act: reclaim
    // evicts and refaults file pages first, hence the long timeout.)
    let bomb = "a = []\nwhile True:\n    a.append(b'x' * (16 << 20))\n";
    let long = "--timeout-ms=300000";
    let (code, out, err) = cli(&[
        "vm", "exec", "--json", long, &id, "--", "python3", "-c", bomb,
    ]);
    assert_eq!(code, 137, "{out} {err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (r["oom_killed"].as_bool(), r["timed_out"].as_bool()),
        (Some(true), Some(false)),
        "{r}"
    );
    let (code, _, err) = cli(&["vm", "exec", long, &id, "--", "python3", "-c", bomb]);
    assert_eq!(code, 137, "{err}");
    assert!(err.contains("killed by the out-of-memory killer"), "{err}");
    let (code, out, _) = cli(&["vm", "exec", &id, "--", "echo", "still here"]);
    assert_eq!((code, out.trim()), (0, "still here"));
    let (code, out, _) = cli(&["vm", "ls", "--json"]);
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["metadata"]["who"], "cli");

    let local = tmp.path().join("payload");
    std::fs::create_dir_all(local.join("d")).unwrap();
    std::fs::write(local.join("d/x.txt"), b"cli bytes").unwrap();
    let (code, _, err) = cli(&["vm", "upload", &id, local.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let back = tmp.path().join("back");
    let (code, _, err) = cli(&[
        "vm",
        "download",
        &id,
        "/workspace/payload",
        "-x",
        back.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(back.join("payload/d/x.txt")).unwrap(),
        b"cli bytes"
    );
    // The same as a plain tar, both ways (no gzip: what the guest need not inflate).
    std::fs::write(local.join("d/x.txt"), b"plain bytes").unwrap();
    let up = [
        "vm",
        "upload",
        &id,
        local.to_str().unwrap(),
        "--format",
        "tar",
    ];
    let (code, _, err) = cli(&up);
    assert_eq!(code, 0, "{err}");
    let tar_file = tmp.path().join("payload.tar");
    let down = [
        "vm",
        "download",
        &id,
        "/workspace/payload",
        "--format",
        "tar",
        "-o",
        tar_file.to_str().unwrap(),
    ];
    let (code, _, err) = cli(&down);
    assert_eq!(code, 0, "{err}");
    let mut plain = tar::Archive::new(std::fs::File::open(&tar_file).unwrap());
    let entry = plain
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.path().unwrap().ends_with("d/x.txt"))
        .map(|mut e| {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            data
        });
    assert_eq!(
        entry.as_deref(),
        Some(&b"plain bytes"[..]),
        "a plain tar back"
    );

    let (code, _, err) = cli(&["vm", "show", "no-such-vm"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no VM with id") && err.contains("not_found"),
        "{err}"
    );

    let (code, key, _) = cli(&["keys", "create", "robot"]);
    assert_eq!(code, 0);
    let (code, out, _) = cli(&["keys", "ls"]);
    assert_eq!(code, 0);
    assert!(out.contains("robot") && !out.contains(key.trim()), "{out}");

    let (code, _, err) = cli(&["vm", "rm", &id]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&["vm", "exec", &id, "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("deleted"), "{err}");
}

/// Requests racing on one VM are applied one at a time by its owner: every answer is a
/// success or a clean 409, and the VM ends deleted with nothing left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_one_vm() {
    let tmp = DataDir::new();
    let srv = Server::start(tmp.path());
    let vm = srv.create_vm(json!({})).await;
    let pids = srv.vm_pids(&vm);
    let mut calls = Vec::new();
    for i in 0..6 {
        let (m, path, body) = match i {
            2 => ("POST", format!("/v1/vms/{vm}/stop"), None),
            4 => ("DELETE", format!("/v1/vms/{vm}"), None),
            _ => (
                "POST",
                format!("/v1/vms/{vm}/exec"),
                Some(json!({"cmd": "echo $((6*7))"})),
            ),
        };
        let srv = &srv;
        calls.push(async move { (i, srv.call(m, &path, body).await) });
    }
    for (i, (status, body)) in futures::future::join_all(calls).await {
        match i {
            4 => assert_eq!(status, 204, "delete: {body}"),
            _ => assert!(
                status == 200 || status == 204 || status == 409,
                "call {i}: {status} {body}"
            ),
        }
        if status == 409 {
            // Refused up front (`conflict`), or the VM went away mid-call (`vm_unreachable`).
            let code = body["error"]["code"].as_str().unwrap();
            assert!(code == "conflict" || code == "vm_unreachable", "{body}");
        }
    }
    assert_eq!(srv.listed_state(&vm).await, "deleted");
    assert!(pids.iter().all(|p| !alive(*p)));
    assert!(!tmp.path().join("vms").join(&vm).exists());
}

/// `hearth serve --config FILE`: limits come from the file, `HEARTH_*` env overrides it,
/// and refusals name the limit. Nothing here boots a VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_and_env_set_the_limits() {
    let tmp = DataDir::new();
    let cfg = tmp.path().join("hearth.toml");
    std::fs::write(
        &cfg,
        "[limits]\nmax_vcpus = 1\nmax_memory_mib = 300\n[defaults]\nmemory_mib = 256\n",
    )
    .unwrap();
    let srv = Server::start_with(
        tmp.path(),
        &["--config", cfg.to_str().unwrap()],
        &[("HEARTH_MAX_MEMORY_MIB", "280")],
    );
    let (s, v) = srv.call("POST", "/v1/vms", Some(json!({"vcpus": 2}))).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 (limit max_vcpus)"),
        "{v}"
    );
    let (s, v) = srv
        .call("POST", "/v1/vms", Some(json!({"memory_mib": 290})))
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("280 (limit max_memory_mib)"),
        "{v}"
    );
    let (s, v) = srv.call("GET", "/metrics", None).await;
    assert_eq!(s, 200);
    assert!(v.as_str().unwrap().contains("status=\"422\""), "{v}");
}
