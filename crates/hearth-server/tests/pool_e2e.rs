//! Warm pools end to end: a real `hearth serve` with `HEARTH_POOL_SIZE=1` and real VMs.
//! A pooled create gets a fresh VM (empty `/workspace`, an overlay of its own), the pool
//! refills after a claim, and after SIGKILL of the server the warm VM is re-adopted when
//! still wanted and destroyed when not, never leaked.
//!
//! Needs what `e2e.rs` needs: `target/debug/hearth` and the default image.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{alive, vm_pids, DataDir, Server};

/// Ids of the VMs under `vms/` that carry the pool marker.
fn warm_ids(data: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(data.join("vms")) else {
        return vec![];
    };
    let mut ids: Vec<String> = rd
        .flatten()
        .filter(|e| e.path().join("pool.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    ids
}

fn vm_dir(data: &Path, id: &str) -> PathBuf {
    data.join("vms").join(id)
}

/// `GET /v1/pool`'s one spec, once it shows `ready` VMs and none booting.
async fn wait_ready(srv: &Server, ready: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (s, pool) = srv.call("GET", "/v1/pool", None).await;
        assert_eq!(s, 200, "{pool}");
        let spec = pool["specs"][0].clone();
        if spec["ready"] == ready && spec["booting"] == 0 {
            return spec;
        }
        assert!(
            Instant::now() < deadline,
            "the pool never got {ready} ready: {pool}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn metric(srv: &Server, line: &str) -> String {
    let (s, text) = srv.call("GET", "/metrics", None).await;
    assert_eq!(s, 200);
    let text = text.as_str().unwrap().to_string();
    text.lines()
        .find(|l| l.starts_with(line))
        .unwrap_or_else(|| panic!("no {line} in /metrics:\n{text}"))
        .to_string()
}

async fn create(srv: &Server) -> Value {
    let (s, vm) = srv
        .call("POST", "/v1/vms", Some(json!({"metadata": {"t": "pool"}})))
        .await;
    assert_eq!(s, 201, "{vm}");
    assert_eq!(vm["state"], "running", "{vm}");
    vm
}

/// What is in `/workspace` beside the image's skeleton dotfiles (`.bashrc` ...), which
/// every VM, pooled or cold, starts with.
async fn workspace_listing(srv: &Server, id: &str) -> String {
    let (s, r) = srv
        .call(
            "POST",
            &format!("/v1/vms/{id}/exec"),
            Some(json!({"cmd": "ls /workspace"})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["exit_code"], 0, "{r}");
    r["stdout"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn pooled_creates_get_fresh_vms_and_sigkill_leaks_none() {
    let data = DataDir::new();
    let pool1 = [("HEARTH_POOL_SIZE", "1")];
    let mut srv = Server::spawn(data.path(), &[], &pool1);

    let spec = wait_ready(&srv, 1).await;
    assert_eq!(spec["target"], 1, "{spec}");
    assert_eq!(spec["image"], "builtin", "{spec}");
    let warm = warm_ids(data.path());
    assert_eq!(warm.len(), 1, "one marked warm VM: {warm:?}");
    // Warm VMs have no row: the API lists none of them.
    let (_, list) = srv.call("GET", "/v1/vms", None).await;
    assert_eq!(list["vms"].as_array().unwrap().len(), 0, "{list}");

    // A create of the default spec takes the warm VM.
    let a = create(&srv).await;
    let a_id = a["id"].as_str().unwrap().to_string();
    assert_eq!(a_id, warm[0], "the create was served by the warm VM");
    assert_eq!(a["metadata"]["t"], "pool", "{a}");
    assert!(
        !vm_dir(data.path(), &a_id).join("pool.json").exists(),
        "a claimed VM is no longer the pool's"
    );
    assert_eq!(
        metric(&srv, "hearth_pool_claims_total{result=\"hit\"}").await,
        "hearth_pool_claims_total{result=\"hit\"} 1"
    );
    assert_eq!(
        workspace_listing(&srv, &a_id).await,
        "",
        "a fresh /workspace"
    );
    let (s, r) = srv
        .call(
            "POST",
            &format!("/v1/vms/{a_id}/exec"),
            Some(json!({"cmd": "echo secret > /workspace/mine && sync"})),
        )
        .await;
    assert_eq!((s, &r["exit_code"]), (200, &json!(0)), "{r}");

    // The pool refills with a new VM, which gets an overlay of its own.
    wait_ready(&srv, 1).await;
    let warm2 = warm_ids(data.path());
    assert_eq!(warm2.len(), 1, "{warm2:?}");
    assert_ne!(warm2[0], a_id, "nothing returns to a pool");
    let inode = |id: &str| {
        std::fs::metadata(vm_dir(data.path(), id).join("overlay.ext4"))
            .unwrap()
            .ino()
    };
    assert_ne!(inode(&a_id), inode(&warm2[0]), "overlays are not shared");
    let b = create(&srv).await;
    let b_id = b["id"].as_str().unwrap().to_string();
    assert_eq!(b_id, warm2[0]);
    assert_eq!(
        workspace_listing(&srv, &b_id).await,
        "",
        "the next user sees nothing of the previous one's files"
    );

    // SIGKILL with a warm VM ready: a restart that still wants it adopts it (no new
    // boot), one that does not destroys it.
    let warm3 = wait_ready(&srv, 1).await;
    assert_eq!(warm3["ready"], 1);
    let warm3 = warm_ids(data.path());
    assert_eq!(warm3.len(), 1, "{warm3:?}");
    let warm_pids = vm_pids(data.path(), &warm3[0]);
    assert!(warm_pids.iter().all(|p| alive(*p)));
    srv.kill(); // SIGKILL: no shutdown path runs
    let srv = Server::spawn(data.path(), &[], &pool1);
    let spec = wait_ready(&srv, 1).await;
    assert_eq!(warm_ids(data.path()), warm3, "the same warm VM, re-adopted");
    assert_eq!(spec["ready"], 1);
    // The claimed VMs are users' VMs: re-adopted as running like any other.
    assert_eq!(srv.listed_state(&a_id).await, "running");
    drop(srv); // SIGKILL again

    let srv = Server::spawn(data.path(), &[], &[("HEARTH_POOL_SIZE", "0")]);
    let (s, pool) = srv.call("GET", "/v1/pool", None).await;
    assert_eq!(s, 200, "{pool}");
    assert_eq!(pool["specs"], json!([]), "no pool configured: {pool}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while warm_pids.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < deadline, "the unwanted warm VM still runs");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(warm_ids(data.path()), Vec::<String>::new());
    assert!(
        !vm_dir(data.path(), &warm3[0]).exists(),
        "its files are gone"
    );
    // The users' VMs were untouched by all this.
    assert_eq!(workspace_listing(&srv, &a_id).await, "mine\n");
    for id in [&a_id, &b_id] {
        let (s, _) = srv.call("DELETE", &format!("/v1/vms/{id}"), None).await;
        assert_eq!(s, 204);
    }
}
