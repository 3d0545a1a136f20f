//! Single-file operations through the real agent: content read and atomic write, list,
//! stat, mkdir, move, delete, watch, plain-tar transfers.

mod support;

use std::os::unix::fs::{symlink, MetadataExt};
use std::time::Duration;

use serde_json::{json, Value};
use support::{random_bytes, tree, Agent, Lines, Options};

async fn put(a: &Agent, query: &str, body: Vec<u8>) -> (u16, Value) {
    a.call("PUT", &format!("/files/content?{query}"), body)
        .await
}

async fn get(a: &Agent, path: &str) -> (u16, bytes::Bytes) {
    a.request("GET", &format!("/files/content?path={path}"), Vec::new())
        .await
}

/// Names in the workspace that a write left behind.
fn temp_files(a: &Agent) -> Vec<String> {
    tree(&a.workspace())
        .into_iter()
        .filter(|p| p.contains(".hearth-tmp-"))
        .collect()
}

#[tokio::test]
async fn content_round_trips_a_3mb_random_file_as_uid_1000() {
    let a = Agent::start();
    let data = random_bytes(3 << 20, 7);
    let (s, v) = put(&a, "path=/workspace/big.bin", data.clone()).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (&v["path"], &v["name"], &v["type"], &v["size"], &v["mode"]),
        (
            &json!("/workspace/big.bin"),
            &json!("big.bin"),
            &json!("file"),
            &json!(3 << 20),
            &json!(0o644)
        )
    );
    assert!(v["mtime"].as_str().unwrap().ends_with('Z'), "{v}");
    let resp = a
        .send("GET", "/files/content?path=big.bin", &[], Vec::new())
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], "3145728");
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(body == data, "read back differs");
    let m = std::fs::metadata(a.workspace().join("big.bin")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (1000, 1000, 0o644));

    // `mode` and `parents`; a replacement keeps the old mode unless told otherwise.
    let (s, v) = put(
        &a,
        "path=d/e/run.sh&mode=0750&parents=true",
        b"#!/bin/sh\necho ok\n".to_vec(),
    )
    .await;
    assert_eq!((s, &v["mode"]), (201, &json!(0o750)), "{v}");
    let v = a.sh("/workspace/d/e/run.sh").await;
    assert_eq!(v["stdout"], "ok\n", "{v}");
    let (s, v) = put(&a, "path=d/e/run.sh", b"#!/bin/sh\necho two\n".to_vec()).await;
    assert_eq!((s, &v["mode"]), (201, &json!(0o750)), "{v}");
    let m = std::fs::metadata(a.workspace().join("d/e")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (1000, 0o755));
    let (s, v) = put(&a, "path=empty", Vec::new()).await;
    assert_eq!((s, &v["size"]), (201, &json!(0)), "{v}");
    let (s, body) = get(&a, "empty").await;
    assert_eq!((s, body.len()), (200, 0));

    // The errors the issue names, and the user's own permissions.
    let cases: &[(&str, &str, u16)] = &[
        ("GET", "/files/content?path=missing", 404),
        ("GET", "/files/content?path=d", 409),
        ("GET", "/files/content", 400),
        ("GET", "/files/content?path=x&bogus=1", 400),
        ("PUT", "/files/content?path=d", 409),
        ("PUT", "/files/content?path=no/such/dir/f", 404),
        ("PUT", "/files/content?path=f&mode=4755", 422),
        ("PUT", "/files/content?path=f&mode=rw", 422),
        ("PUT", "/files/content?path=/workspace", 422),
        ("POST", "/files/content?path=f", 405),
    ];
    for (method, uri, status) in cases {
        let (s, v) = a.call(method, uri, Vec::new()).await;
        assert_eq!(s, *status, "{method} {uri}: {v}");
        assert!(v["error"]["code"].is_string(), "{method} {uri}: {v}");
    }
    a.sh("mkdir /workspace/locked && chmod 500 /workspace/locked")
        .await;
    let (s, v) = put(&a, "path=locked/f", b"x".to_vec()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    a.sh("echo secret > /workspace/private && chmod 000 /workspace/private")
        .await;
    let (s, _) = get(&a, "private").await;
    assert_eq!(s, 403);
    assert!(temp_files(&a).is_empty(), "{:?}", temp_files(&a));
}

#[tokio::test]
async fn a_reader_racing_a_writer_never_sees_a_partial_file() {
    let a = std::sync::Arc::new(Agent::start());
    let (small, large) = (vec![b'a'; 300_000], vec![b'b'; 700_000]);
    let (s, _) = put(&a, "path=race", small.clone()).await;
    assert_eq!(s, 201);
    let writer = {
        let (a, small, large) = (a.clone(), small.clone(), large.clone());
        tokio::spawn(async move {
            for i in 0..40 {
                let body = if i % 2 == 0 {
                    large.clone()
                } else {
                    small.clone()
                };
                let (s, v) = put(&a, "path=race", body).await;
                assert_eq!(s, 201, "{v}");
            }
        })
    };
    let mut reads = (0, 0);
    while !writer.is_finished() {
        let (s, body) = get(&a, "race").await;
        assert_eq!(s, 200);
        if body == small {
            reads.0 += 1;
        } else if body == large {
            reads.1 += 1;
        } else {
            panic!("a reader saw a partial file of {} bytes", body.len());
        }
    }
    writer.await.unwrap();
    eprintln!("reads: {} small, {} large", reads.0, reads.1);
    assert!(
        reads.0 + reads.1 > 5,
        "too few reads to mean anything: {reads:?}"
    );
    assert!(temp_files(&a).is_empty());
}

#[tokio::test]
async fn a_failed_write_leaves_the_old_file() {
    let a = Agent::start_with(Options {
        extra_args: vec!["--max-file-bytes".into(), "100000".into()],
        ..Default::default()
    });
    let (s, _) = put(&a, "path=keep", b"old".to_vec()).await;
    assert_eq!(s, 201);
    // Declared too large: refused before anything is written.
    let (s, v) = put(&a, "path=keep", vec![b'x'; 100_001]).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{v}"
    );
    // Too large without a declared length (chunked): found while streaming.
    let chunks = vec![vec![b'y'; 8192]; 30];
    let status = support::put_chunked(&a.sock, "/files/content?path=keep", &chunks).await;
    assert_eq!(status, 413);
    // A client that hangs up half-way.
    support::put_and_hang_up(&a.sock, "/files/content?path=keep", 50_000, 1_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(std::fs::read(a.workspace().join("keep")).unwrap(), b"old");
    assert!(temp_files(&a).is_empty(), "{:?}", temp_files(&a));
    // The limit is inclusive.
    let (s, v) = put(&a, "path=keep", vec![b'z'; 100_000]).await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn list_stat_mkdir_move_and_delete() {
    let a = Agent::start();
    let ws = a.workspace();
    a.sh("mkdir -p p/q/r && echo 1 > p/a && echo 22 > p/q/b && echo 333 > p/q/r/c && ln -s q/b p/link")
        .await;
    let names = |v: &Value| -> Vec<String> {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e["path"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("/workspace/")
                    .to_string()
            })
            .collect()
    };
    let (s, v) = a.call("GET", "/files/list?path=p", Vec::new()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(names(&v), ["p/a", "p/link", "p/q"]);
    assert_eq!(v["truncated"], false);
    let (_, v) = a
        .call("GET", "/files/list?path=/workspace/p&depth=2", Vec::new())
        .await;
    assert_eq!(names(&v), ["p/a", "p/link", "p/q", "p/q/b", "p/q/r"]);
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries[0]["size"], 2);
    assert_eq!(entries[1]["type"], "symlink");
    assert_eq!(entries[1]["target"], "q/b");
    assert_eq!(entries[2]["type"], "dir");
    assert!(entries[0].get("target").is_none());
    let (_, v) = a
        .call("GET", "/files/list?path=p&depth=10", Vec::new())
        .await;
    assert_eq!(names(&v).len(), 6);
    let (_, v) = a.call("GET", "/files/list", Vec::new()).await;
    assert!(names(&v).contains(&"p".to_string()), "{v}");
    for bad in ["depth=0", "depth=11", "depth=x", "path=p/a", "path=nope"] {
        let (s, v) = a
            .call("GET", &format!("/files/list?{bad}"), Vec::new())
            .await;
        assert!((400..500).contains(&s), "{bad}: {v}");
    }

    let (s, v) = a.call("GET", "/files/stat?path=p/link", Vec::new()).await;
    assert_eq!(
        (s, &v["type"], &v["target"]),
        (200, &json!("symlink"), &json!("q/b"))
    );
    let (_, v) = a
        .call("GET", "/files/stat?path=/workspace", Vec::new())
        .await;
    assert_eq!(
        (&v["type"], &v["path"]),
        (&json!("dir"), &json!("/workspace"))
    );
    // Reading through a link that stays inside works.
    let (s, body) = get(&a, "p/link").await;
    assert_eq!((s, &body[..]), (200, &b"22\n"[..]));

    let mk = |path: &str, parents: bool| json!({"path": path, "parents": parents});
    let (s, v) = a.json("POST", "/files/mkdir", mk("m", false)).await;
    assert_eq!((s, &v["type"]), (201, &json!("dir")), "{v}");
    assert_eq!(std::fs::metadata(ws.join("m")).unwrap().uid(), 1000);
    let (s, _) = a.json("POST", "/files/mkdir", mk("m", false)).await;
    assert_eq!(s, 409);
    let (s, _) = a.json("POST", "/files/mkdir", mk("m", true)).await;
    assert_eq!(s, 200);
    let (s, _) = a.json("POST", "/files/mkdir", mk("m/x/y/z", true)).await;
    assert_eq!(s, 201);
    let (s, _) = a.json("POST", "/files/mkdir", mk("n/o", false)).await;
    assert_eq!(s, 404);
    let (s, _) = a.json("POST", "/files/mkdir", mk("p/a/sub", true)).await;
    assert_eq!(s, 409);

    let mv = |from: &str, to: &str, overwrite: bool| json!({"from": from, "to": to, "overwrite": overwrite});
    let (s, v) = a
        .json("POST", "/files/move", mv("p/a", "m/a2", false))
        .await;
    assert_eq!((s, &v["path"]), (200, &json!("/workspace/m/a2")), "{v}");
    let (s, _) = a
        .json("POST", "/files/move", mv("p/q/b", "m/a2", false))
        .await;
    assert_eq!(s, 409);
    let (s, _) = a
        .json("POST", "/files/move", mv("p/q/b", "m/a2", true))
        .await;
    assert_eq!(s, 200);
    assert_eq!(std::fs::read(ws.join("m/a2")).unwrap(), b"22\n");
    let (s, v) = a
        .json("POST", "/files/move", mv("m", "m/x/inside", false))
        .await;
    assert_eq!(s, 422, "{v}");
    let (s, _) = a.json("POST", "/files/move", mv("nope", "x", false)).await;
    assert_eq!(s, 404);
    let (s, _) = a
        .json("POST", "/files/move", mv("/workspace", "x", false))
        .await;
    assert_eq!(s, 422);
    // A symlink moves as itself.
    let (s, v) = a
        .json("POST", "/files/move", mv("p/link", "link2", false))
        .await;
    assert_eq!((s, &v["type"]), (200, &json!("symlink")), "{v}");

    let (s, v) = a.call("DELETE", "/files?path=p", Vec::new()).await;
    assert_eq!(s, 409, "{v}");
    let (s, _) = a.call("DELETE", "/files?path=link2", Vec::new()).await;
    assert_eq!(s, 204);
    let (s, _) = a
        .call("DELETE", "/files?path=p&recursive=true", Vec::new())
        .await;
    assert_eq!(s, 204);
    assert!(!ws.join("p").exists());
    let (s, _) = a.call("DELETE", "/files?path=m/x/y/z", Vec::new()).await;
    assert_eq!(s, 204);
    let (s, _) = a
        .call(
            "DELETE",
            "/files?path=/workspace&recursive=true",
            Vec::new(),
        )
        .await;
    assert_eq!(s, 422);
    let (s, _) = a.call("DELETE", "/files?path=gone", Vec::new()).await;
    assert_eq!(s, 404);
    // A link to a directory outside is removed, not followed.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("keep"), b"k").unwrap();
    symlink(outside.path(), ws.join("out")).unwrap();
    let (s, _) = a
        .call("DELETE", "/files?path=out&recursive=true", Vec::new())
        .await;
    assert_eq!(s, 204);
    assert!(outside.path().join("keep").exists());
}

/// Waits for an event of `kind` at `path` (`/workspace/...`), skipping others.
async fn expect_event(lines: &mut Lines, kind: &str, path: &str) -> Value {
    loop {
        let ev = lines
            .within(Duration::from_secs(10), &format!("{kind} {path}"))
            .await
            .expect("the watch ended early");
        if ev["type"] == kind && ev["path"] == path {
            return ev;
        }
    }
}

#[tokio::test]
async fn watch_reports_what_execs_do_as_it_happens() {
    let a = Agent::start();
    let resp = a
        .send(
            "GET",
            "/files/watch?path=/workspace&recursive=true",
            &[],
            Vec::new(),
        )
        .await;
    let mut lines = Lines::new(resp);
    a.sh("mkdir /workspace/sub").await;
    expect_event(&mut lines, "create", "/workspace/sub").await;
    a.sh("mkdir /workspace/sub/deeper").await;
    expect_event(&mut lines, "create", "/workspace/sub/deeper").await;
    a.sh("echo hi > /workspace/sub/deeper/f").await;
    expect_event(&mut lines, "create", "/workspace/sub/deeper/f").await;
    expect_event(&mut lines, "modify", "/workspace/sub/deeper/f").await;
    a.sh("mv /workspace/sub/deeper/f /workspace/sub/g").await;
    let ev = expect_event(&mut lines, "move", "/workspace/sub/g").await;
    assert_eq!(ev["from"], "/workspace/sub/deeper/f");
    a.sh("rm /workspace/sub/g").await;
    expect_event(&mut lines, "delete", "/workspace/sub/g").await;
    // A tree made in one go: what was there before its watches existed is reported too.
    a.sh("mkdir -p /workspace/t/u/v && touch /workspace/t/u/v/w")
        .await;
    expect_event(&mut lines, "create", "/workspace/t/u/v/w").await;
    // A PUT shows up as well.
    let (s, _) = put(&a, "path=sub/put.txt", b"x".to_vec()).await;
    assert_eq!(s, 201);
    expect_event(&mut lines, "move", "/workspace/sub/put.txt").await;

    // Not recursive: only the directory's own entries.
    let resp = a
        .send("GET", "/files/watch?path=sub", &[], Vec::new())
        .await;
    let mut flat = Lines::new(resp);
    a.sh("touch /workspace/sub/deeper/hidden /workspace/sub/seen")
        .await;
    let ev = flat
        .within(Duration::from_secs(10), "create sub/seen")
        .await
        .unwrap();
    assert_eq!(
        (&ev["type"], &ev["path"]),
        (&json!("create"), &json!("/workspace/sub/seen"))
    );
    // Deleting the watched directory ends the stream.
    a.sh("rm -r /workspace/sub").await;
    while let Some(ev) = flat
        .within(Duration::from_secs(10), "the end of the watch")
        .await
    {
        assert_ne!(ev["path"], "/workspace/sub/deeper/hidden", "{ev}");
    }

    for (uri, status) in [
        ("/files/watch?path=missing", 404),
        ("/files/watch?path=t/u/v/w", 409),
        ("/files/watch?path=../x", 422),
    ] {
        let (s, v) = a.call("GET", uri, Vec::new()).await;
        assert_eq!(s, status, "{uri}: {v}");
    }
}

#[tokio::test]
async fn archives_travel_as_plain_tar_or_gzip() {
    let a = Agent::start();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "plain/hello.txt", &b"hello"[..])
        .unwrap();
    let tar = b.into_inner().unwrap();
    let resp = a
        .send(
            "POST",
            "/files/upload?dest=/workspace",
            &[("content-type", "application/x-tar")],
            tar,
        )
        .await;
    let status = resp.status();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        std::fs::read(a.workspace().join("plain/hello.txt")).unwrap(),
        b"hello"
    );
    // gzip is still the default.
    let (s, _) = a
        .request(
            "POST",
            "/files/upload",
            support::tar_gz(&[("gz.txt", b"g")]),
        )
        .await;
    assert_eq!(s, 200);

    let resp = a
        .send(
            "GET",
            "/files/download?path=plain&format=tar",
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(resp.headers()["content-type"], "application/x-tar");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let mut names = Vec::new();
    for e in tar::Archive::new(&body[..]).entries().unwrap() {
        let name = e.unwrap().path().unwrap().display().to_string();
        names.push(name.trim_end_matches('/').to_string());
    }
    assert_eq!(names, ["plain", "plain/hello.txt"]);
    let (s, body) = a
        .request(
            "GET",
            "/files/download?path=gz.txt&format=tar.gz",
            Vec::new(),
        )
        .await;
    assert_eq!((s, &body[..2]), (200, &[0x1f, 0x8b][..]));
    let (s, _) = a
        .request("GET", "/files/download?path=gz.txt&format=zip", Vec::new())
        .await;
    assert_eq!(s, 400);
}
