//! End-to-end: the sandbox API (single files, processes, the attach WebSocket) through a
//! real `hearth serve` on loopback and one real VM, driven over HTTP as a program would.
//! Bodies are read into `hearth-api` types, the contract the server and CLI share.
//!
//! Needs `target/debug/hearth` and the default image, as `e2e.rs` does.

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hearth_api::files::{FileEntry, FileList, FileType, WatchEvent, WatchEventKind};
use hearth_api::processes::{AttachControl, ProcessEvent, ProcessInfo, ProcessList, ProcessState};
use hearth_api::ErrorBody;
use reqwest::Method;
use serde_json::json;
use support::sandbox_api::{random_bytes, raw_http, until, Api};
use support::{hearth_bin, DataDir, Server};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The limit the server runs with: the 3 MB file fits, 5 MB does not.
const MAX_FILE: u64 = 4 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_processes_and_a_terminal_through_the_server() {
    let data = DataDir::new();
    let max = MAX_FILE.to_string();
    let srv = Server::spawn(data.path(), &[], &[("HEARTH_MAX_FILE_BYTES", max.as_str())]);
    let (s, vm) = srv.call("POST", "/v1/vms", Some(json!({}))).await;
    assert_eq!(s, 201, "{vm}");
    let api = Api {
        srv: &srv,
        http: srv.client(),
        vm: vm["id"].as_str().unwrap().to_string(),
    };

    files(&api).await;
    processes(&api).await;
    terminal(&api).await;
    cli(&api).await;

    // A stopped VM answers the new routes as it answers exec: the same status and code.
    let (s, v) = srv
        .call("POST", &format!("/v1/vms/{}/stop", api.vm), None)
        .await;
    assert_eq!(s, 200, "{v}");
    let exec = api
        .fails(
            409,
            api.req(Method::POST, "/exec").json(&json!({"cmd": "true"})),
        )
        .await;
    for r in [
        api.req(Method::GET, "/files/content")
            .query(&[("path", "x")]),
        api.req(Method::GET, "/processes"),
    ] {
        assert_eq!(api.fails(409, r).await.error.code, exec.error.code);
    }
    let (s, v) = srv
        .call("DELETE", &format!("/v1/vms/{}", api.vm), None)
        .await;
    assert_eq!(s, 204, "{v}");
}

async fn files(api: &Api<'_>) {
    // Write, read back, and the entry the PUT answers with.
    let e: FileEntry = api
        .ok(
            201,
            api.put("a.txt").query(&[("mode", "0600")]).body("hello"),
        )
        .await;
    assert_eq!(
        (e.path.as_str(), e.kind, e.size, e.mode),
        ("/workspace/a.txt", FileType::File, 5, 0o600)
    );
    assert_eq!(api.content("a.txt").await, b"hello");

    // 3 MB of random bytes, byte-identical after the round trip.
    let big = random_bytes(3_000_000, 7);
    let put = api
        .put("d/big.bin")
        .query(&[("parents", "true")])
        .body(big.clone());
    let t = std::time::Instant::now();
    let e: FileEntry = api.ok(201, put).await;
    let put_took = t.elapsed();
    assert_eq!(e.size, 3_000_000);
    let t = std::time::Instant::now();
    assert!(
        api.content("/workspace/d/big.bin").await == big,
        "read back differs"
    );
    // A figure for the log, never an assertion.
    eprintln!(
        "3 MB through the server: PUT {put_took:?}, GET {:?}",
        t.elapsed()
    );

    // Above max_file_bytes: 413, announced or streamed, and the old file stays. An
    // announced size is refused before a byte of the body moves, so that request sends
    // only its head (a client still writing the body may see the connection close).
    let head = format!(
        "PUT /v1/vms/{}/files/content?path=a.txt HTTP/1.1\r\nhost: x\r\n\
         authorization: Bearer {}\r\ncontent-length: {}\r\n\r\n",
        api.vm,
        api.srv.key,
        MAX_FILE + 1
    );
    let answer = raw_http(api.srv, &head).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"payload_too_large\""), "{answer}");
    let over = random_bytes(MAX_FILE as usize + 1, 9);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        over.chunks(256 * 1024).map(|c| Ok(c.to_vec())).collect();
    let chunked = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    api.fails(413, api.put("a.txt").body(chunked)).await;
    assert_eq!(api.content("a.txt").await, b"hello");

    // list (depth 2), stat, mkdir, move, delete.
    let list: FileList = api
        .ok(
            200,
            api.req(Method::GET, "/files/list").query(&[("depth", "2")]),
        )
        .await;
    let paths: Vec<&str> = list.entries.iter().map(|e| e.path.as_str()).collect();
    for p in ["/workspace/a.txt", "/workspace/d", "/workspace/d/big.bin"] {
        assert!(paths.contains(&p), "{p} not in {paths:?}");
    }
    let e: FileEntry = api
        .ok(
            200,
            api.req(Method::GET, "/files/stat").query(&[("path", "d")]),
        )
        .await;
    assert_eq!(e.kind, FileType::Dir);
    let mk = json!({"path": "d/e/f", "parents": true});
    let e: FileEntry = api
        .ok(201, api.req(Method::POST, "/files/mkdir").json(&mk))
        .await;
    assert_eq!(
        (e.path.as_str(), e.kind),
        ("/workspace/d/e/f", FileType::Dir)
    );
    let mv = json!({"from": "a.txt", "to": "d/e/b.txt"});
    let e: FileEntry = api
        .ok(200, api.req(Method::POST, "/files/move").json(&mv))
        .await;
    assert_eq!((e.path.as_str(), e.size), ("/workspace/d/e/b.txt", 5));
    let stat_a = api
        .req(Method::GET, "/files/stat")
        .query(&[("path", "a.txt")]);
    assert_eq!(
        api.fails(404, stat_a).await.error.code.as_str(),
        "not_found"
    );
    // A directory where a file is wanted: 409.
    let read_dir = api
        .req(Method::GET, "/files/content")
        .query(&[("path", "d")]);
    api.fails(409, read_dir).await;
    let del = api.req(Method::DELETE, "/files").query(&[("path", "d")]);
    let (s, _) = api.send(del).await;
    assert!(
        s.is_client_error(),
        "a non-empty directory went without recursive: {s}"
    );
    let del = api
        .req(Method::DELETE, "/files")
        .query(&[("path", "d"), ("recursive", "true")]);
    assert_eq!(api.send(del).await.0, 204);
    let stat_d = api.req(Method::GET, "/files/stat").query(&[("path", "d")]);
    api.fails(404, stat_d).await;

    // Escapes: refused by the server's checks (400) or the agent's (4xx), with the one
    // error shape, and nothing written outside the workspace.
    api.exec("ln -s /etc /workspace/etc-link && ln -s .. /workspace/up")
        .await;
    for path in ["../etc/passwd", "/etc/passwd", "a/../../x"] {
        let r = api
            .req(Method::GET, "/files/content")
            .query(&[("path", path)]);
        api.fails(400, r).await;
        api.fails(400, api.put(path).body("x")).await;
    }
    for path in [
        "etc-link/passwd",
        "up/etc/passwd",
        "etc-link/hearth-pwned",
        "up/pwned",
    ] {
        let (s, b) = api.send(api.put(path).body("x")).await;
        assert!(s.is_client_error(), "PUT {path}: {s}");
        let e: ErrorBody = serde_json::from_slice(&b).unwrap();
        assert!(!e.error.message.is_empty());
    }
    let r = api
        .req(Method::GET, "/files/content")
        .query(&[("path", "etc-link/passwd")]);
    assert!(api.send(r).await.0.is_client_error());
    let out = api.exec("ls /etc/hearth-pwned /pwned 2>&1; true").await;
    assert_eq!(
        out["stdout"]
            .as_str()
            .unwrap()
            .matches("No such file")
            .count(),
        2,
        "{out}"
    );

    // watch reports a file an exec creates.
    let resp = api
        .req(Method::GET, "/files/watch")
        .query(&[("recursive", "true")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    api.exec("mkdir w && touch w/made-by-exec").await;
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = String::new();
        while let Some(chunk) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            for line in buf.lines().filter(|l| l.ends_with('}')) {
                let ev: WatchEvent = serde_json::from_str(line).unwrap();
                if ev.kind == WatchEventKind::Create && ev.path == "/workspace/w/made-by-exec" {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "watch never reported the file");
}

async fn processes(api: &Api<'_>) {
    // stdin in, output out; a reader coming back with `since` gets only what is new.
    let echo = api
        .start(json!({"cmd": "while read l; do echo got:$l; done", "stdin": true}))
        .await;
    let stdin = format!("/processes/{}/stdin", echo.pid);
    assert_eq!(
        api.send(api.req(Method::POST, &stdin).body("hi\n")).await.0,
        204
    );
    let (text, seq) = api.output_until(echo.pid, 0, "got:hi\n").await;
    assert_eq!(text, "got:hi\n");
    assert_eq!(
        api.send(api.req(Method::POST, &stdin).body("again\n"))
            .await
            .0,
        204
    );
    let (text, _) = api.output_until(echo.pid, seq, "got:again\n").await;
    assert_eq!(text, "got:again\n", "since={seq} replayed old output");

    let list: ProcessList = api.ok(200, api.req(Method::GET, "/processes")).await;
    assert!(list.processes.iter().any(|p| p.pid == echo.pid), "{list:?}");

    // A signal ends it; the record says how.
    let sig = json!({"signal": "TERM"});
    let r = api.req(Method::POST, &format!("/processes/{}/signal", echo.pid));
    assert_eq!(api.send(r.json(&sig)).await.0, 204);
    let mut info = api.process(echo.pid).await;
    for _ in 0..100 {
        if info.state == ProcessState::Exited {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        info = api.process(echo.pid).await;
    }
    assert_eq!(
        (info.state, info.exit_code, info.signal.as_deref()),
        (ProcessState::Exited, Some(143), Some("TERM"))
    );
    let bad = json!({"signal": "STOP"});
    let r = api.req(Method::POST, &format!("/processes/{}/signal", echo.pid));
    api.fails(422, r.json(&bad)).await;
    api.fails(404, api.req(Method::GET, "/processes/999999"))
        .await;
    let e = api.fails(400, api.req(Method::GET, "/processes/abc")).await;
    assert!(e.error.message.contains("not a process id"), "{e:?}");
    let missing = json!({"cmd": "/no/such/program", "args": []});
    let e = api
        .fails(404, api.req(Method::POST, "/processes").json(&missing))
        .await;
    assert!(e.error.message.contains("cannot start"), "{e:?}");

    // `follow` streams until the exit event.
    let short = api
        .start(json!({"cmd": "echo a; sleep 1; echo b >&2"}))
        .await;
    let events = api.output(short.pid, 0, true).await;
    let mut text = String::new();
    for ev in &events[..events.len() - 1] {
        if let ProcessEvent::Output(c) = ev {
            text.push_str(&c.data);
        }
    }
    assert_eq!(text, "a\nb\n");
    match events.last() {
        Some(ProcessEvent::Exit { exit }) => assert_eq!(exit.exit_code, Some(0)),
        other => panic!("no exit event last: {other:?}"),
    }

    // A background server outlives the request that started it; DELETE kills it.
    let args = ["-u", "-m", "http.server", "8123", "--bind", "127.0.0.1"];
    let server = api.start(json!({"cmd": "python3", "args": args})).await;
    api.output_until(server.pid, 0, "Serving HTTP").await;
    let get = "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8123/').status)\"";
    assert_eq!(api.exec(get).await["stdout"], "200\n");
    let killed: ProcessInfo = api
        .ok(
            200,
            api.req(Method::DELETE, &format!("/processes/{}", server.pid)),
        )
        .await;
    assert_eq!(
        (killed.state, killed.signal.as_deref()),
        (ProcessState::Exited, Some("KILL"))
    );
}

async fn terminal(api: &Api<'_>) {
    let shell = api
        .start(json!({"cmd": "/bin/sh", "args": [], "pty": {"cols": 80, "rows": 24}}))
        .await;
    let path = format!("/v1/vms/{}/processes/{}/attach", api.vm, shell.pid);
    // Without an upgrade the route answers a plain 400.
    let plain = api.req(Method::GET, &format!("/processes/{}/attach", shell.pid));
    api.fails(400, plain).await;

    let addr = api.srv.url.strip_prefix("http://").unwrap();
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    let auth = format!("Bearer {}", api.srv.key).parse().unwrap();
    req.headers_mut().insert("authorization", auth);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();

    ws.send(Message::binary(&b"echo $((6*7))\n"[..]))
        .await
        .unwrap();
    let seen = until(&mut ws, "42\r\n").await;
    assert!(
        seen.contains("echo $((6*7))"),
        "typed input not echoed: {seen:?}"
    );
    let resize = json!({"type": "resize", "cols": 120, "rows": 40}).to_string();
    ws.send(Message::text(resize)).await.unwrap();
    ws.send(Message::binary(&b"stty size\n"[..])).await.unwrap();
    until(&mut ws, "40 120\r\n").await;
    ws.send(Message::binary(&b"exit 5\n"[..])).await.unwrap();
    let mut exit = None;
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(t) = msg {
            exit = Some(serde_json::from_str::<AttachControl>(&t).unwrap());
        }
    }
    assert_eq!(
        exit,
        Some(AttachControl::Exit {
            exit_code: Some(5),
            signal: None
        })
    );
    // No terminal, no attach: the agent's 409 comes back as an HTTP answer.
    let piped = api.start(json!({"cmd": "sleep 30"})).await;
    let path = format!("/v1/vms/{}/processes/{}/attach", api.vm, piped.pid);
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", api.srv.key).parse().unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 409)
        }
        other => panic!("expected a 409, got {:?}", other.map(|_| ())),
    }
}

/// `hearth vm put|cat|ls ID|ps|kill` against the same server and VM.
async fn cli(api: &Api<'_>) {
    let run = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(hearth_bin())
            .args(&args)
            .env("HEARTH_URL", &api.srv.url)
            .env("HEARTH_API_KEY", &api.srv.key)
            .output()
            .await
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (
            out.status.code().unwrap_or(-1),
            out.stdout,
            text(&out.stderr),
        )
    };
    let vm = api.vm.clone();
    let a = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local.bin");
    let data = random_bytes(100_000, 3);
    std::fs::write(&local, &data).unwrap();
    let local = local.to_str().unwrap();
    let (code, _, err) = run(a(&["vm", "put", &vm, local, "cli/x.bin", "--parents"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("/workspace/cli/x.bin (100000 bytes"), "{err}");
    let (code, out, err) = run(a(&["vm", "cat", &vm, "cli/x.bin"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out == data, "cat gave other bytes");
    let (code, out, err) = run(a(&["vm", "ls", &vm, "cli"])).await;
    assert_eq!(code, 0, "{err}");
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains(" 100000 ") && out.contains("/workspace/cli/x.bin"),
        "{out}"
    );
    let (code, _, err) = run(a(&["vm", "cat", &vm, "../etc/passwd"])).await;
    assert_ne!(code, 0);
    assert!(err.contains("not a path in /workspace"), "{err}");

    let sleeper = api.start(json!({"cmd": "sleep 300"})).await;
    let pid = sleeper.pid.to_string();
    let (code, out, err) = run(a(&["vm", "ps", &vm])).await;
    assert_eq!(code, 0, "{err}");
    let out = String::from_utf8(out).unwrap();
    let line = out.lines().find(|l| l.trim_start().starts_with(&pid));
    assert!(
        line.is_some_and(|l| l.contains("running") && l.contains("sleep 300")),
        "{out}"
    );
    let (code, _, err) = run(a(&["vm", "kill", &vm, &pid, "--signal", "STOP"])).await;
    assert_ne!(code, 0);
    assert!(err.contains("unknown signal"), "{err}");
    let (code, _, err) = run(a(&["vm", "kill", &vm, &pid])).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("exited") && err.contains("KILL"), "{err}");
    // A killed process leaves the table (its final record was the DELETE's answer).
    let gone = api.req(Method::GET, &format!("/processes/{}", sleeper.pid));
    api.fails(404, gone).await;
}
