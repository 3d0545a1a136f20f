//! What an image asks of user processes (`--image-config`, `/etc/hearth/image.json` in
//! a guest): env, working dir and login name applied to exec, runs and processes; a
//! runtime the image lacks named in a 422; freeze refused where there is no disk.

mod support;

use serde_json::json;
use support::{Agent, Options};

fn agent_with_image(config: serde_json::Value, extra: &[&str]) -> (Agent, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let mut extra_args = vec!["--image-config".to_string(), path.display().to_string()];
    extra_args.extend(extra.iter().map(|s| s.to_string()));
    let a = Agent::start_with(Options {
        extra_args,
        ..Default::default()
    });
    (a, dir)
}

#[tokio::test]
async fn image_env_workdir_and_user_apply_to_exec_runs_and_processes() {
    let (a, _cfg) = agent_with_image(
        json!({"env": ["GREETING=hello", "PATH=/usr/bin:/bin", "HOME=/nope", "broken"],
               "working_dir": "/workspace/app", "user": "node", "expose": ["srv", "etc"]}),
        &[],
    );
    let script =
        "echo $GREETING; pwd; whoami; echo $HOME $USER; echo $PATH; test -d /srv && echo srv";
    let v = a.sh(script).await;
    assert_eq!(v["exit_code"], 0, "{v}");
    assert_eq!(
        v["stdout"],
        "hello\n/workspace/app\nnode\n/workspace node\n/usr/bin:/bin:/opt/hearth/bin\nsrv\n",
        "{v}"
    );
    // The request's own env wins over the image's.
    let v = a
        .exec(json!({"cmd": "echo $GREETING", "env": {"GREETING": "hi"}}))
        .await;
    assert_eq!(v["stdout"], "hi\n", "{v}");
    // An explicit cwd still works; the image dir was created for uid 1000.
    let v = a
        .exec(json!({"cmd": "pwd; touch x", "cwd": "/workspace"}))
        .await;
    assert_eq!(v["stdout"], "/workspace\n", "{v}");
    let (status, v) = a
        .json(
            "POST",
            "/run-python",
            json!({"code": "import os; result.set([os.getcwd(), os.environ['GREETING']])"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], json!(["/workspace/app", "hello"]), "{v}");
    let (status, v) = a
        .json(
            "POST",
            "/processes",
            json!({"cmd": "echo $GREETING $(pwd)"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
}

#[tokio::test]
async fn a_working_dir_the_jail_cannot_show_falls_back_to_the_workspace() {
    let (a, _cfg) = agent_with_image(json!({"working_dir": "/no/such/dir", "user": "root"}), &[]);
    let v = a.sh("pwd; whoami").await;
    assert_eq!(
        v["stdout"], "/workspace\nuser\n",
        "root is never lent to uid 1000: {v}"
    );
}

#[tokio::test]
async fn run_endpoints_name_the_missing_runtime_and_exec_still_works() {
    let (a, _cfg) = agent_with_image(
        json!({}),
        &["--python", "python9-missing", "--node", "/usr/bin/no-node"],
    );
    for (ep, name) in [("/run-python", "Python"), ("/run-js", "Node.js")] {
        let (status, v) = a.json("POST", ep, json!({"code": "1"})).await;
        assert_eq!(status, 422, "{ep}: {v}");
        assert_eq!(v["error"]["code"], "runtime_missing", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(name) && msg.contains(ep), "{msg}");
    }
    assert_eq!(a.sh("echo ok").await["stdout"], "ok\n");
}

#[tokio::test]
async fn freeze_needs_the_per_vm_disk_and_thaw_a_freeze() {
    let a = Agent::start();
    let (status, v) = a.json("POST", "/fs/freeze", json!({})).await;
    assert_eq!(status, 409, "no /run/hearth/upper on this host: {v}");
    let (status, v) = a.json("POST", "/fs/thaw", json!({})).await;
    assert_eq!(status, 409, "{v}");
    let (status, v) = a.json("POST", "/fs/freeze", json!({"timeout_ms": 0})).await;
    assert_eq!(status, 422, "{v}");
}
