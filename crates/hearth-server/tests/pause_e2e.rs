//! Pause and resume with real VMs, through a real `hearth serve`: a paused VM's VMM uses
//! no CPU even while its guest had a busy loop running, any call that needs the guest
//! resumes it, and a paused VM can still be stopped.
//!
//! Needs what `e2e.rs` needs: `target/debug/hearth` and the default image.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{DataDir, Server};

/// The VMM process of VM `id` (role `vmm` in its `vm.json`).
fn vmm_pid(srv: &Server, id: &str) -> u32 {
    let meta = std::fs::read(srv.data.join("vms").join(id).join("vm.json")).unwrap();
    let v: Value = serde_json::from_slice(&meta).unwrap();
    let procs = v["procs"].as_array().unwrap();
    let vmm = procs.iter().find(|p| p["role"] == "vmm").unwrap();
    vmm["pid"].as_u64().unwrap() as u32
}

/// (state letter, utime + stime in clock ticks) of `pid`.
fn cpu(pid: u32) -> (char, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses: state is field 3, utime
    // and stime fields 14 and 15.
    let rest: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let state = rest[0].chars().next().unwrap();
    let ticks = rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap();
    (state, ticks)
}

async fn post(srv: &Server, path: &str, body: Option<Value>) -> (u16, Value) {
    srv.call("POST", path, body).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_vm_uses_no_cpu_and_a_call_resumes_it() {
    let data = DataDir::new();
    let srv = Server::spawn(data.path(), &[], &[] as &[(&str, &str)]);
    let (s, vm) = post(&srv, "/v1/vms", Some(json!({}))).await;
    assert_eq!(s, 201, "{vm}");
    let id = vm["id"].as_str().unwrap().to_string();
    let exec = |cmd: &str| json!({"cmd": cmd});
    // A guest that keeps its vCPU busy, so a VMM that still ran would show it.
    let (s, r) = post(
        &srv,
        &format!("/v1/vms/{id}/exec"),
        Some(exec(
            "echo kept > /workspace/f; setsid sh -c 'while :; do :; done' >/dev/null 2>&1 &",
        )),
    )
    .await;
    assert_eq!((s, &r["exit_code"]), (200, &json!(0)), "{r}");
    let pid = vmm_pid(&srv, &id);
    let (_, before) = cpu(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, after) = cpu(pid);
    assert!(
        after > before,
        "a busy guest's VMM uses CPU ({before} -> {after})"
    );

    let (s, v) = post(&srv, &format!("/v1/vms/{id}/pause"), None).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("paused")), "{v}");
    let (s, v) = srv.call("GET", &format!("/v1/vms/{id}"), None).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("paused")), "{v}");
    let (s, list) = srv.call("GET", "/v1/vms?state=paused", None).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["vms"][0]["id"], id.as_str(), "{list}");
    let (state, t0) = cpu(pid);
    assert_eq!(state, 'T', "QEMU's process is stopped");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, t5) = cpu(pid);
    assert_eq!(t0, t5, "a paused VM's VMM used CPU");
    // Pausing again changes nothing.
    let (s, v) = post(&srv, &format!("/v1/vms/{id}/pause"), None).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("paused")), "{v}");

    // An exec on the paused VM resumes it and succeeds; the guest's files are intact.
    let (s, r) = post(
        &srv,
        &format!("/v1/vms/{id}/exec"),
        Some(exec("cat /workspace/f")),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["stdout"], "kept\n", "{r}");
    assert_eq!(srv.listed_state(&id).await, "running");
    assert_ne!(cpu(pid).0, 'T', "QEMU runs again");

    // Resume of a running VM is a no-op; pause then resume by hand.
    let (s, v) = post(&srv, &format!("/v1/vms/{id}/resume"), None).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("running")), "{v}");
    let (s, _) = post(&srv, &format!("/v1/vms/{id}/pause"), None).await;
    assert_eq!(s, 200);
    let (s, v) = post(&srv, &format!("/v1/vms/{id}/resume"), None).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("running")), "{v}");

    // A paused VM can be stopped; a stopped one cannot be paused or resumed (409).
    let (s, _) = post(&srv, &format!("/v1/vms/{id}/pause"), None).await;
    assert_eq!(s, 200);
    let (s, v) = post(&srv, &format!("/v1/vms/{id}/stop"), None).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("stopped")), "{v}");
    for what in ["pause", "resume"] {
        let (s, e) = post(&srv, &format!("/v1/vms/{id}/{what}"), None).await;
        assert_eq!(s, 409, "{what} of a stopped VM: {e}");
        assert_eq!(e["error"]["code"], "conflict", "{e}");
    }
    let (s, _) = srv.call("DELETE", &format!("/v1/vms/{id}"), None).await;
    assert_eq!(s, 204);
    let (s, e) = post(&srv, &format!("/v1/vms/{id}/pause"), None).await;
    assert_eq!(s, 404, "a deleted VM: {e}");
}

/// `idle_timeout_s`: a VM with no call in flight and none for that long is paused; a
/// call longer than the timeout is not idleness; a call after the pause resumes it.
#[tokio::test(flavor = "multi_thread")]
async fn idle_timeout_pauses_an_idle_vm_never_a_busy_one() {
    let data = DataDir::new();
    let srv = Server::spawn(data.path(), &[], &[] as &[(&str, &str)]);
    let (s, e) = post(&srv, "/v1/vms", Some(json!({"idle_timeout_s": 0}))).await;
    assert_eq!(s, 422, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("idle_timeout_s"),
        "{e}"
    );
    let (s, vm) = post(&srv, "/v1/vms", Some(json!({"idle_timeout_s": 2}))).await;
    assert_eq!(s, 201, "{vm}");
    assert_eq!(vm["idle_timeout_s"], 2, "{vm}");
    let id = vm["id"].as_str().unwrap().to_string();
    let exec = |cmd: &str| Some(json!({"cmd": cmd}));

    // Busy for longer than the timeout: not paused under the call.
    let (s, r) = post(
        &srv,
        &format!("/v1/vms/{id}/exec"),
        exec("sleep 5; echo done"),
    )
    .await;
    assert_eq!((s, r["stdout"].as_str()), (200, Some("done\n")), "{r}");
    assert_eq!(srv.listed_state(&id).await, "running");

    // Then idle: paused. (Listing VMs does not use the guest, so it is no call to it.)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while srv.listed_state(&id).await != "paused" {
        assert!(std::time::Instant::now() < deadline, "never paused");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(cpu(vmm_pid(&srv, &id)).0, 'T', "QEMU's process is stopped");

    // A call resumes it and succeeds.
    let (s, r) = post(&srv, &format!("/v1/vms/{id}/exec"), exec("echo back")).await;
    assert_eq!((s, r["stdout"].as_str()), (200, Some("back\n")), "{r}");
    assert_eq!(srv.listed_state(&id).await, "running");
    let (s, _) = srv.call("DELETE", &format!("/v1/vms/{id}"), None).await;
    assert_eq!(s, 204);
}
