//! `/exec` against the real agent binary: the jail, output handling, timeouts, streaming.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{frames, Agent, Options};

#[tokio::test]
async fn exec_runs_through_sh_or_directly() {
    let a = Agent::start();
    let v = a.sh("echo out; echo err >&2; exit 3").await;
    assert_eq!(v["stdout"], "out\n");
    assert_eq!(v["stderr"], "err\n");
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["timed_out"], false);

    let v = a
        .exec(json!({"cmd": "printf", "args": ["%s|", "a b", "$HOME"]}))
        .await;
    assert_eq!(v["stdout"], "a b|$HOME|", "args are not shell-expanded");

    let v = a
        .exec(json!({"cmd": "cat", "args": [], "stdin": "fed via stdin"}))
        .await;
    assert_eq!(v["stdout"], "fed via stdin");

    let v = a.exec(json!({"cmd": "no-such-program", "args": []})).await;
    assert_eq!(v["exit_code"], 127, "{v}");
}

#[tokio::test]
async fn user_code_is_jailed() {
    let a = Agent::start();
    let v = a
        .sh("id -u; id -g; id -G; pwd; echo $HOME; ulimit -c; \
             awk '/Max processes/ {print $3}' /proc/self/limits")
        .await;
    assert_eq!(
        v["stdout"], "1000\n1000\n1000\n/workspace\n/workspace\n0\n4096\n",
        "{v}"
    );

    // No capabilities at all, and no way to gain any.
    let v = a
        .sh("grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status")
        .await;
    let status = v["stdout"].as_str().unwrap();
    for line in status.lines() {
        let value = line.split_whitespace().nth(1).unwrap();
        let want = if line.starts_with("NoNewPrivs") {
            "1"
        } else {
            "0000000000000000"
        };
        assert_eq!(value, want, "{line}");
    }

    // Own session and process group.
    let v = a.sh("cut -d' ' -f1,5,6 /proc/self/stat").await;
    let f: Vec<&str> = v["stdout"].as_str().unwrap().split_whitespace().collect();
    assert_eq!(f[1], f[2], "pgid == sid: {f:?}");

    // Only the workspace and /tmp are writable; no shadow; root's processes are hidden.
    let v = a
        .sh(
            "touch /workspace/ok && echo ws-ok; touch /tmp/ok && echo tmp-ok; \
             touch /usr/x 2>/dev/null || echo usr-ro; touch /x 2>/dev/null || echo root-ro; \
             touch /etc/x 2>/dev/null || echo etc-ro; \
             test -e /etc/shadow || echo no-shadow; test -e /proc/1 || echo pid1-hidden; \
             grep -c . /etc/passwd",
        )
        .await;
    assert_eq!(
        v["stdout"], "ws-ok\ntmp-ok\nusr-ro\nroot-ro\netc-ro\nno-shadow\npid1-hidden\n3\n",
        "{v}"
    );
    let meta = std::fs::metadata(a.workspace().join("ok")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 1000);

    // /tmp is the jail's own: it persists between runs and is not the host's.
    a.sh("echo kept > /tmp/hearth-test-left-behind").await;
    let v = a.sh("cat /tmp/hearth-test-left-behind").await;
    assert_eq!(v["stdout"], "kept\n", "{v}");
    assert!(!std::path::Path::new("/tmp/hearth-test-left-behind").exists());

    // The environment is exactly the base plus what was asked for.
    let v = a
        .exec(json!({"cmd": "env | sort", "env": {"FOO": "bar"}}))
        .await;
    let mut keys: Vec<&str> = v["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .map(|l| l.split('=').next().unwrap())
        .collect();
    keys.retain(|k| *k != "PWD" && *k != "SHLVL" && *k != "_");
    assert_eq!(keys, ["FOO", "HOME", "LANG", "PATH"], "{v}");
}

#[tokio::test]
async fn the_tools_work_inside_the_jail() {
    let a = Agent::start();
    let v = a
        .sh(
            "busybox true && git --version >/dev/null && tar --version >/dev/null && \
             node -e 'process.exit(0)' && python3 -c 'import ssl, json' && \
             npm --version >/dev/null && deno --version >/dev/null && \
             cd /workspace && git init -q r && cd r && git -c user.email=u@x -c user.name=u \
             commit -q --allow-empty -m one && git log --oneline | wc -l && \
             python3 -c 'import os; print(os.getuid())' && ls -l /dev/null | cut -c1",
        )
        .await;
    assert_eq!(v["stdout"], "1\n1000\nc\n", "{v}");
    assert_eq!(v["exit_code"], 0, "{v}");
}

#[tokio::test]
async fn cwd_must_be_inside_the_workspace() {
    let a = Agent::start();
    std::fs::create_dir(a.workspace().join("sub")).unwrap();
    let v = a.exec(json!({"cmd": "pwd", "cwd": "sub"})).await;
    assert_eq!(v["stdout"], "/workspace/sub\n");
    let v = a.exec(json!({"cmd": "pwd", "cwd": "/workspace/sub"})).await;
    assert_eq!(v["stdout"], "/workspace/sub\n");
    // A relative program path is relative to `cwd` inside the jail.
    let script = a.workspace().join("sub/s.sh");
    std::fs::write(&script, "#!/bin/sh\necho from script $1\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let v = a
        .exec(json!({"cmd": "./s.sh", "args": ["x"], "cwd": "sub"}))
        .await;
    assert_eq!(v["stdout"], "from script x\n", "{v}");
    for (bad, status, code) in [
        ("/etc", 422, "invalid_request"),
        ("../", 422, "invalid_request"),
        ("/workspace/../etc", 422, "invalid_request"),
        ("missing", 404, "not_found"),
    ] {
        let (s, v) = a
            .json("POST", "/exec", json!({"cmd": "pwd", "cwd": bad}))
            .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{bad}: {v}"
        );
    }
}

#[tokio::test]
async fn timeouts_kill_the_whole_group() {
    let a = Agent::start();
    let t = Instant::now();
    let v = a
        .exec(json!({"cmd": "sleep 31.4159 & echo started; sleep 31.4159", "timeout_ms": 500}))
        .await;
    assert_eq!(v["timed_out"], true, "{v}");
    assert_eq!(v["exit_code"], 137);
    assert_eq!(v["stdout"], "started\n");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Neither sleep survives (the odd duration tells them apart from other tests').
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = std::process::Command::new("pgrep")
        .args(["-u", "1000", "-f", "sleep 31.4159"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "left over: {:?}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[tokio::test]
async fn output_beyond_the_cap_is_dropped_and_flagged() {
    let a = Agent::start_with(Options {
        extra_args: vec!["--output-cap".into(), "1000".into()],
        ..Default::default()
    });
    let v = a
        .sh("head -c 5000000 /dev/zero | tr '\\0' x; echo small >&2")
        .await;
    assert_eq!(v["stdout"].as_str().unwrap().len(), 1000);
    assert_eq!(v["stdout_truncated"], true);
    assert_eq!(v["stderr"], "small\n");
    assert_eq!(v["stderr_truncated"], false);
    assert_eq!(v["exit_code"], 0, "the writer was drained, not blocked");
}

#[tokio::test]
async fn streamed_output_beyond_the_cap_is_dropped_and_flagged() {
    let a = Agent::start_with(Options {
        extra_args: vec!["--output-cap".into(), "1000".into()],
        ..Default::default()
    });
    let mut c = a.connect().await;
    let body = json!({"cmd": "head -c 5000000 /dev/zero | tr '\\0' x; echo small >&2"});
    let resp = c
        .send(
            "POST",
            "/exec?stream=true",
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let (mut out, mut err, mut exit) = (0, String::new(), None);
    for (_, data) in frames(resp).await {
        for line in std::str::from_utf8(&data).unwrap().lines() {
            let ev: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(s) = ev["stdout"].as_str() {
                out += s.len();
            } else if let Some(s) = ev["stderr"].as_str() {
                err.push_str(s);
            } else {
                exit = Some(ev["exit"].clone());
            }
        }
    }
    let exit = exit.expect("an exit event");
    assert_eq!(out, 1000, "streamed stdout stops at the cap");
    assert_eq!(err, "small\n");
    assert_eq!(exit["stdout_truncated"], true, "{exit}");
    assert_eq!(exit["stderr_truncated"], false, "{exit}");
    assert_eq!(exit["exit_code"], 0, "the writer was drained, not blocked");
}

#[tokio::test]
async fn default_cap_is_one_mebibyte() {
    let a = Agent::start();
    let v = a.sh("head -c 3000000 /dev/zero | tr '\\0' y").await;
    assert_eq!(
        v["stdout"].as_str().unwrap().len(),
        hearth_proto::DEFAULT_OUTPUT_CAP
    );
    assert_eq!(v["stdout_truncated"], true);
}

#[tokio::test]
async fn background_processes_do_not_hold_the_response() {
    let a = Agent::start();
    let t = Instant::now();
    let v = a.sh("sleep 5 & echo done").await;
    assert_eq!(v["stdout"], "done\n");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test]
async fn streaming_sends_output_as_it_is_produced() {
    let a = Agent::start();
    let mut c = a.connect().await;
    let body = json!({"cmd": "echo one; sleep 0.6; echo two >&2; sleep 0.6; echo three; exit 4"});
    let resp = c
        .send(
            "POST",
            "/exec?stream=true",
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let frames = frames(resp).await;
    let mut events = Vec::new();
    for (at, data) in &frames {
        for line in std::str::from_utf8(data).unwrap().lines() {
            events.push((
                *at,
                serde_json::from_str::<serde_json::Value>(line).unwrap(),
            ));
        }
    }
    let kinds: Vec<String> = events
        .iter()
        .map(|(_, e)| e.as_object().unwrap().keys().next().unwrap().clone())
        .collect();
    assert_eq!(kinds, ["stdout", "stderr", "stdout", "exit"], "{events:?}");
    assert_eq!(events[0].1["stdout"], "one\n");
    assert_eq!(events[1].1["stderr"], "two\n");
    assert_eq!(events[3].1["exit"]["exit_code"], 4);
    // Each event arrived when it was produced, not all at the end.
    assert!(
        events[1].0 - events[0].0 >= Duration::from_millis(400),
        "{events:?}"
    );
    assert!(
        events[2].0 - events[1].0 >= Duration::from_millis(400),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_slow_run_never_blocks_health() {
    let a = Agent::start();
    let mut slow = Vec::new();
    for _ in 0..4 {
        let sock = a.sock.clone();
        slow.push(tokio::spawn(async move {
            let mut c = support::Client::connect(&sock).await;
            let body = json!({"cmd": "sleep 3", "timeout_ms": 2000});
            c.send("POST", "/exec", serde_json::to_vec(&body).unwrap().into())
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let (status, v) = a.json("GET", "/health", json!(null)).await;
    assert_eq!(status, 200);
    assert!(v["uptime_ms"].as_u64().unwrap() > 0);
    // The slow runs take 2 s (their timeout); well under that means /health was not
    // queued behind them.
    let took = t.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
    for s in slow {
        assert_eq!(s.await.unwrap().status(), 200);
    }
}

#[tokio::test]
async fn exec_true_round_trip_latency() {
    let a = Agent::start();
    let mut c = a.connect().await;
    let body = serde_json::to_vec(&json!({"cmd": "true", "args": []})).unwrap();
    let mut times = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        let resp = c.send("POST", "/exec", body.clone().into()).await;
        assert_eq!(resp.status(), 200);
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    eprintln!(
        "exec `true` over a Unix socket: median {:?}, p90 {:?}, max {:?}",
        times[50], times[90], times[99]
    );
    assert!(
        times[50] < Duration::from_millis(250),
        "median {:?}",
        times[50]
    );
}

#[test]
fn a_client_that_leaves_kills_its_run() {
    use std::io::{BufRead, BufReader, Write};
    let a = Agent::start();
    for (n, path) in ["/exec?stream=true", "/exec", "/run-python"]
        .iter()
        .enumerate()
    {
        let marker = format!("sleep 42.{n}424");
        let body = if path.starts_with("/run") {
            format!(r#"{{"code": "import subprocess; subprocess.run(['sh', '-c', '{marker}'])"}}"#)
        } else {
            format!(r#"{{"cmd": "echo up; {marker}"}}"#)
        };
        let mut s = std::os::unix::net::UnixStream::connect(&a.sock).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let running = || {
            let out = std::process::Command::new("pgrep")
                .args(["-u", "1000", "-f", &marker])
                .output()
                .unwrap();
            !out.stdout.is_empty()
        };
        if path.contains("stream") {
            // The first event arrives before the client leaves.
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while !line.contains("stdout") {
                line.clear();
                r.read_line(&mut line).unwrap();
            }
        }
        let t = Instant::now();
        while !running() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(running(), "{path}: never started");
        drop(s);
        let t = Instant::now();
        while running() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!running(), "{path}: the run outlived its client");
    }
}
