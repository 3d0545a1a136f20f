//! What a new user tries in their first minutes, end to end through a real `hearth serve`
//! and one real VM: the runtimes' temp dirs and DNS/TLS reads, `result.error` in every
//! runtime and in a job, and the everyday tools of the image.
//!
//! Needs `target/debug/hearth` and the default image, like `e2e.rs`.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{DataDir, Server};

async fn run(srv: &Server, vm: &str, lang: &str, code: &str) -> Value {
    let (s, r) = srv
        .call(
            "POST",
            &format!("/v1/vms/{vm}/run-{lang}"),
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(s, 200, "run-{lang}: {r}");
    r
}

async fn exec(srv: &Server, vm: &str, cmd: &str) -> Value {
    let (s, r) = srv
        .call(
            "POST",
            &format!("/v1/vms/{vm}/exec"),
            Some(json!({"cmd": cmd, "timeout_ms": 300_000})),
        )
        .await;
    assert_eq!(s, 200, "{cmd}: {r}");
    r
}

#[tokio::test]
async fn a_new_users_first_minutes() {
    let tmp = DataDir::new();
    let srv = Server::spawn::<&str, &str>(tmp.path(), &[], &[]);
    let (s, vm) = srv.call("POST", "/v1/vms", Some(json!({}))).await;
    assert_eq!(s, 201, "{vm}");
    let vm = vm["id"].as_str().unwrap().to_string();

    // run-ts: DNS/TLS files readable, temp dirs writable, secrets and /etc still closed.
    let code = r#"
const probe = (f: () => unknown) => { try { f(); return "ok"; } catch (e) { return (e as Error).name; } };
Deno.writeTextFileSync("/tmp/x", "tmp");
Deno.writeTextFileSync("/var/tmp/y", "var");
result.set({
  resolv: probe(() => Deno.readTextFileSync("/etc/resolv.conf")),
  back: Deno.readTextFileSync("/tmp/x") + Deno.readTextFileSync("/var/tmp/y"),
  shadow: probe(() => Deno.readTextFileSync("/etc/shadow")),
  write_etc: probe(() => Deno.writeTextFileSync("/etc/evil", "x")),
});
"#;
    let r = run(&srv, &vm, "ts", code).await;
    assert_eq!(
        r["result"],
        json!({"resolv": "ok", "back": "tmpvar", "shadow": "NotCapable", "write_etc": "NotCapable"}),
        "{r}"
    );

    // result.error hands back the value and fails the run, in every runtime.
    for (lang, code) in [
        ("ts", "result.error({code: 'E_TEST'}); console.log('after')"),
        ("js", "result.error({code: 'E_TEST'}); console.log('after')"),
        ("python", "result.error({'code': 'E_TEST'}); print('after')"),
    ] {
        let r = run(&srv, &vm, lang, code).await;
        assert_eq!(r["error"], json!({"code": "E_TEST"}), "{lang}: {r}");
        assert_eq!(r["exit_code"], 1, "{lang}: {r}");
        assert_eq!(r["stdout"], "after\n", "{lang}: {r}");
    }
    // An uncaught exception keeps {name, message, stack}.
    for (lang, code) in [
        ("ts", "throw new Error('x')"),
        ("js", "throw new Error('x')"),
        ("python", "raise Exception('x')"),
    ] {
        let r = run(&srv, &vm, lang, code).await;
        let e = &r["error"];
        assert_eq!(e["message"], "x", "{lang}: {r}");
        assert!(
            e["name"].is_string() && e["stack"].is_string(),
            "{lang}: {r}"
        );
    }

    // The tools people reach for first, as uid 1000.
    let r = exec(
        &srv,
        &vm,
        "python3 -m venv /workspace/v && /workspace/v/bin/pip --version",
    )
    .await;
    assert_eq!(r["exit_code"], 0, "{r}");
    assert!(r["stdout"].as_str().unwrap().starts_with("pip "), "{r}");
    for cmd in [
        "wget --version",
        "jq --version",
        "unzip -v",
        "zip -v",
        "xz --version",
        "file --version",
        "less --version",
        "ps",
        "nc --help 2>&1 | head -1",
    ] {
        let r = exec(&srv, &vm, cmd).await;
        assert_eq!(r["exit_code"], 0, "{cmd}: {r}");
        assert!(!r["stdout"].as_str().unwrap().is_empty(), "{cmd}: {r}");
    }
    // BusyBox only fills gaps: the real tools are not its applets.
    let r = exec(
        &srv,
        &vm,
        "readlink -f $(command -v wget) $(command -v ps) $(command -v nc)",
    )
    .await;
    let paths: Vec<&str> = r["stdout"].as_str().unwrap().lines().collect();
    assert_eq!(paths.len(), 3, "{r}");
    assert!(
        !paths[0].ends_with("busybox") && !paths[1].ends_with("busybox"),
        "{r}"
    );
    assert!(paths[2].ends_with("busybox"), "nc comes from BusyBox: {r}");

    let (s, _) = srv.call("DELETE", &format!("/v1/vms/{vm}"), None).await;
    assert_eq!(s, 204);

    // A job whose script calls result.error ends `failed` with the value kept.
    let (s, job) = srv
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"language": "js", "code": "result.error({code: 'E_TEST'})"})),
        )
        .await;
    assert_eq!(s, 202, "{job}");
    let id = job["job_id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let job = loop {
        let (_, j) = srv.call("GET", &format!("/v1/jobs/{id}"), None).await;
        if !matches!(j["status"].as_str(), Some("queued" | "running")) {
            break j;
        }
        assert!(Instant::now() < deadline, "job never ended: {j}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["exit_code"], 1, "{job}");
    assert_eq!(job["script_error"], json!({"code": "E_TEST"}), "{job}");
}
