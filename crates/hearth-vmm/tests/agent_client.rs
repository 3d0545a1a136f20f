//! The agent client against the real agent in a booted VM: streamed exec, error bodies,
//! streamed upload and download of a tar.gz, the sh path of `run`.
mod common;

use futures::StreamExt;
use hearth_proto::{ExecRequest, Language, RunRequest, StreamEvent};
use hearth_vmm::Error;

fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_speaks_every_endpoint_it_wraps() {
    let tmp = tempfile::tempdir().unwrap();
    let vm = common::boot(&common::spec(tmp.path(), "client")).await;
    let _reap = common::reap(&vm);
    let agent = vm.agent();

    // Streamed exec: output events, then exactly one exit event, last.
    let mut events = agent
        .exec_stream(&ExecRequest {
            cmd: "echo one; echo two >&2; exit 4".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (mut out, mut err, mut exit) = (String::new(), String::new(), None);
    while let Some(ev) = events.next().await {
        assert!(exit.is_none(), "nothing may follow the exit event");
        match ev.unwrap() {
            StreamEvent::Stdout(s) => out.push_str(&s),
            StreamEvent::Stderr(s) => err.push_str(&s),
            StreamEvent::Exit(r) => exit = Some(r.exec.exit_code),
        }
    }
    assert_eq!(
        (out.as_str(), err.as_str(), exit),
        ("one\n", "two\n", Some(4))
    );

    // The agent's error body becomes Error::Agent.
    match agent.exec(&ExecRequest::default()).await {
        Err(Error::Agent { status, code, .. }) => {
            assert!((400..500).contains(&status), "{status}");
            assert_eq!(code, hearth_proto::ErrorCode::InvalidRequest);
        }
        other => panic!("expected an agent error, got {other:?}"),
    }

    // Upload streamed in two chunks, then download it back as tar.gz.
    let archive = tar_gz(&[("dir/a.txt", b"alpha\n")]);
    let (first, second) = archive.split_at(archive.len() / 2);
    let chunks = vec![
        Ok(bytes::Bytes::copy_from_slice(first)),
        Ok(bytes::Bytes::copy_from_slice(second)),
    ];
    let up = agent
        .upload("/workspace/up", futures::stream::iter(chunks))
        .await
        .unwrap();
    assert_eq!(up.files, 1, "{up:?}");
    let run = agent
        .run(
            Language::Sh,
            &RunRequest {
                code: Some("cat /workspace/up/dir/a.txt".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(run.exec.stdout, "alpha\n");

    let mut body = Vec::new();
    let mut stream = agent.download("/workspace/up/dir/a.txt").await.unwrap();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.unwrap());
    }
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&body[..]));
    let mut found = false;
    for entry in tar.entries().unwrap() {
        let mut e = entry.unwrap();
        if e.path().unwrap().ends_with("a.txt") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            assert_eq!(s, "alpha\n");
            found = true;
        }
    }
    assert!(found, "a.txt in the downloaded archive");

    // A buffered exec answers only when the program ends: the wait for it is bounded by
    // the call's own timeout, not by the (here shortened) connect timeout.
    let mut patient = agent.clone();
    patient.connect_timeout = std::time::Duration::from_secs(2);
    let slow = patient
        .exec(&ExecRequest {
            cmd: "sleep 4; echo done".into(),
            timeout_ms: Some(20_000),
            ..Default::default()
        })
        .await
        .expect("a buffered exec longer than connect_timeout");
    assert_eq!((slow.exit_code, slow.stdout.as_str()), (0, "done\n"));

    // Firewall: a VM without a NIC accepts a deny-all policy.
    agent
        .firewall(&hearth_proto::FirewallRequest {
            outbound: false,
            allow: vec![],
        })
        .await
        .unwrap();
    vm.destroy().await.unwrap();
}

/// Deterministic incompressible bytes (xorshift).
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn collect(mut body: hearth_vmm::agent::ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

/// The newer endpoints through `AgentClient`, on one VM: files, watch, processes with
/// stdin, a background server, and a terminal over the attach WebSocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_processes_and_a_terminal_through_the_client() {
    use futures::SinkExt;
    use hearth_proto::*;
    use hearth_vmm::agent::process::AttachSocket;
    use tokio_tungstenite::tungstenite::Message;

    let tmp = tempfile::tempdir().unwrap();
    let vm = common::boot(&common::spec(tmp.path(), "client2")).await;
    let _reap = common::reap(&vm);
    let agent = vm.agent();
    assert_eq!(agent.health().await.unwrap().protocol, PROTOCOL_VERSION);

    // A 3 MB random file, streamed in 64 KiB chunks, read back byte-identical.
    let data = random_bytes(3 << 20, 11);
    let chunks: Vec<std::io::Result<bytes::Bytes>> = data
        .chunks(64 * 1024)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let q = WriteQuery {
        path: "/workspace/data/big.bin".into(),
        mode: Some("0600".into()),
        parents: true,
    };
    let t = std::time::Instant::now();
    let entry = agent
        .write_file(&q, futures::stream::iter(chunks), Some(data.len() as u64))
        .await
        .unwrap();
    let put = t.elapsed();
    assert_eq!(
        (entry.size, entry.mode, entry.kind),
        (3 << 20, 0o600, FileType::File)
    );
    let t = std::time::Instant::now();
    let file = agent.read_file("data/big.bin").await.unwrap();
    assert_eq!(file.size, 3 << 20);
    assert!(collect(file.body).await == data, "read back differs");
    eprintln!("3 MiB: PUT {put:?}, GET {:?} (QEMU/TCG)", t.elapsed());
    let (_, out) = common::sh(&vm, "stat -c '%u %a' /workspace/data/big.bin").await;
    assert_eq!(out, "1000 600\n");

    // List with depth 2, stat, move, delete.
    agent
        .mkdir(&MkdirRequest {
            path: "data/sub/deeper".into(),
            parents: true,
        })
        .await
        .unwrap();
    let list = agent
        .list_files(&ListQuery {
            path: Some("data".into()),
            depth: Some(2),
        })
        .await
        .unwrap();
    let paths: Vec<&str> = list.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/workspace/data/big.bin",
            "/workspace/data/sub",
            "/workspace/data/sub/deeper"
        ]
    );
    let moved = agent
        .move_file(&MoveRequest {
            from: "data/big.bin".into(),
            to: "data/sub/moved.bin".into(),
            overwrite: false,
        })
        .await
        .unwrap();
    assert_eq!(moved.path, "/workspace/data/sub/moved.bin");
    assert_eq!(
        agent.stat_file("data/sub/moved.bin").await.unwrap().size,
        3 << 20
    );
    agent
        .delete_file(&DeleteQuery {
            path: "data".into(),
            recursive: true,
        })
        .await
        .unwrap();
    match agent.stat_file("data").await {
        Err(Error::Agent { status: 404, .. }) => {}
        other => panic!("expected a 404, got {other:?}"),
    }

    // Escapes are refused with a 4xx.
    common::sh(&vm, "ln -s /etc /workspace/etc-link").await;
    for path in ["/etc/passwd", "etc-link/passwd", "../etc/passwd"] {
        match agent.read_file(path).await {
            Err(Error::Agent { status, .. }) if (400..500).contains(&status) => {}
            Err(e) => panic!("{path}: {e}"),
            Ok(_) => panic!("{path}: read outside the workspace"),
        }
    }
    let q = WriteQuery {
        path: "etc-link/hearth-pwned".into(),
        ..Default::default()
    };
    let body = futures::stream::iter(vec![Ok(bytes::Bytes::from_static(b"x"))]);
    assert!(agent.write_file(&q, body, None).await.is_err());
    let (_, out) = common::sh(&vm, "ls /etc/hearth-pwned 2>&1 || true").await;
    assert!(out.contains("No such file"), "{out}");

    // Watch: a file created by an exec is reported.
    let mut events = agent
        .watch(&WatchQuery {
            path: None,
            recursive: true,
        })
        .await
        .unwrap();
    common::sh(&vm, "mkdir /workspace/w && touch /workspace/w/made-by-exec").await;
    let seen = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(ev) = events.next().await {
            let ev = ev.unwrap();
            if ev.kind == WatchEventKind::Create && ev.path == "/workspace/w/made-by-exec" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "watch never reported the file");
    drop(events);

    // A background server started as a process answers a later exec.
    let server = agent
        .start_process(&ProcessStartRequest {
            cmd: "python3".into(),
            args: Some(
                ["-u", "-m", "http.server", "8123", "--bind", "127.0.0.1"]
                    .map(String::from)
                    .to_vec(),
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(server.state, ProcessState::Running);
    eprintln!("process started_at {}", server.started_at);
    let mut out = agent
        .process_output(
            server.pid,
            &OutputQuery {
                follow: true,
                since: 0,
            },
        )
        .await
        .unwrap();
    while let Some(ev) = out.next().await {
        if let ProcessEvent::Output(c) = ev.unwrap() {
            if c.data.contains("Serving HTTP") {
                break;
            }
        }
    }
    let (code, body) = common::sh(
        &vm,
        "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8123/').status)\"",
    )
    .await;
    assert_eq!((code, body.as_str()), (0, "200\n"));
    let killed = agent.kill_process(server.pid).await.unwrap();
    assert_eq!(
        (killed.state, killed.signal.as_deref()),
        (ProcessState::Exited, Some("KILL"))
    );

    // stdin.
    let reader = agent
        .start_process(&ProcessStartRequest {
            cmd: "read x; echo got:$x".into(),
            stdin: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let body = futures::stream::iter(vec![Ok(bytes::Bytes::from_static(b"hi\n"))]);
    agent
        .process_stdin(reader.pid, &StdinQuery { eof: true }, body)
        .await
        .unwrap();
    let mut out = agent
        .process_output(
            reader.pid,
            &OutputQuery {
                follow: true,
                since: 0,
            },
        )
        .await
        .unwrap();
    let (mut text, mut exit) = (String::new(), None);
    while let Some(ev) = out.next().await {
        match ev.unwrap() {
            ProcessEvent::Output(c) => text.push_str(&c.data),
            ProcessEvent::Exit { exit: e } => exit = Some(e),
            ProcessEvent::Dropped { .. } => panic!("nothing should be dropped"),
        }
    }
    assert_eq!(
        (text.as_str(), exit.unwrap().exit_code),
        ("got:hi\n", Some(0))
    );

    // A terminal through the attach WebSocket.
    let shell = agent
        .start_process(&ProcessStartRequest {
            cmd: "/bin/sh".into(),
            args: Some(vec![]),
            pty: Some(PtySize { cols: 80, rows: 24 }),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ws: AttachSocket = agent
        .attach(shell.pid, &AttachQuery::default())
        .await
        .unwrap();
    async fn until(ws: &mut AttachSocket, want: &str) -> String {
        let mut text = String::new();
        let read = async {
            while let Some(msg) = ws.next().await {
                if let Message::Binary(b) = msg.unwrap() {
                    text.push_str(&String::from_utf8_lossy(&b));
                    if text.contains(want) {
                        return;
                    }
                }
            }
        };
        if tokio::time::timeout(std::time::Duration::from_secs(30), read)
            .await
            .is_err()
        {
            panic!("no {want:?} on the terminal: {text:?}");
        }
        text
    }
    ws.send(Message::binary(&b"echo $((6*7))\n"[..]))
        .await
        .unwrap();
    until(&mut ws, "42\r\n").await;
    let resize = AttachControl::Resize {
        cols: 120,
        rows: 40,
    };
    ws.send(Message::text(serde_json::to_string(&resize).unwrap()))
        .await
        .unwrap();
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
    // Attaching to a process without a terminal is the agent's 409.
    match agent.attach(reader.pid, &AttachQuery::default()).await {
        Err(Error::Agent { status: 409, .. }) => {}
        other => panic!("expected a 409, got {:?}", other.map(|_| ())),
    }
    vm.destroy().await.unwrap();
}
