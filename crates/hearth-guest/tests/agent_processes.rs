//! Processes that outlive a request, through the real agent: background servers, stdin,
//! output that survives reconnects, signals, kills, retention, and a PTY over a
//! WebSocket.

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{websocket, Agent, Lines, Options};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

async fn output(a: &Agent, pid: u64, query: &str) -> Lines {
    let uri = format!("/processes/{pid}/output?{query}");
    Lines::new(a.send("GET", &uri, &[], Vec::new()).await)
}

/// Follows a process's output to its end: the text and the exit record.
async fn follow_to_exit(a: &Agent, pid: u64) -> (String, Value) {
    let mut lines = output(a, pid, "follow=true").await;
    let mut text = String::new();
    while let Some(ev) = lines.within(WAIT, "process output").await {
        if let Some(exit) = ev.get("exit") {
            return (text, exit.clone());
        }
        text.push_str(ev["data"].as_str().unwrap_or(""));
    }
    panic!("the output ended without an exit event: {text:?}");
}

/// Sessions (leaders) that still have live members.
fn session_alive(sid: u64) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[0] != "Z" && f[3].parse::<u64>().ok() == Some(sid)
    })
}

#[tokio::test]
async fn a_background_server_is_reachable_from_a_later_exec() {
    let a = Agent::start();
    std::fs::write(a.workspace().join("index.html"), b"served by hearth\n").unwrap();
    let pid = a
        .start_process(json!({
            "cmd": "python3",
            "args": ["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"],
        }))
        .await;
    // The request that started it is over; the server keeps running and says its port.
    let mut lines = output(&a, pid, "follow=true").await;
    let port = loop {
        let ev = lines
            .within(WAIT, "the server's port")
            .await
            .expect("output");
        let data = ev["data"].as_str().unwrap_or("");
        if let Some(rest) = data.split(" port ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let v = a
        .sh(&format!(
            "python3 -c \"import urllib.request as u; \
             print(u.urlopen('http://127.0.0.1:{port}/index.html').read().decode(), end='')\""
        ))
        .await;
    assert_eq!(v["stdout"], "served by hearth\n", "{v}");
    let (s, v) = a
        .call("GET", &format!("/processes/{pid}"), Vec::new())
        .await;
    assert_eq!(
        (s, &v["state"], &v["cmd"]),
        (200, &json!("running"), &json!("python3"))
    );
    assert!(v["started_at"].as_str().unwrap().ends_with('Z'), "{v}");
    let (s, v) = a.call("GET", "/processes", Vec::new()).await;
    assert_eq!(s, 200);
    assert_eq!(v["processes"][0]["pid"], pid);

    // DELETE kills it and answers with the final record; then it is gone.
    let (s, v) = a
        .call("DELETE", &format!("/processes/{pid}"), Vec::new())
        .await;
    assert_eq!(
        (s, &v["state"], &v["signal"]),
        (200, &json!("exited"), &json!("KILL")),
        "{v}"
    );
    assert_eq!(v["exit_code"], 137);
    let (s, _) = a
        .call("GET", &format!("/processes/{pid}"), Vec::new())
        .await;
    assert_eq!(s, 404);
    assert!(!session_alive(pid));
}

#[tokio::test]
async fn stdin_reaches_a_running_process() {
    let a = Agent::start();
    let pid = a
        .start_process(json!({"cmd": "read x; echo got:$x", "stdin": true}))
        .await;
    let (s, v) = a
        .call("POST", &format!("/processes/{pid}/stdin"), "hi\n")
        .await;
    assert_eq!(s, 204, "{v}");
    let (text, exit) = follow_to_exit(&a, pid).await;
    assert_eq!(text, "got:hi\n");
    assert_eq!(
        (&exit["exit_code"], &exit["stdin"]),
        (&json!(0), &json!(false))
    );
    let (s, _) = a
        .call("POST", &format!("/processes/{pid}/stdin"), "late")
        .await;
    assert_eq!(s, 409);

    // eof=true closes stdin after the body.
    let pid = a
        .start_process(json!({"cmd": "cat; echo done", "stdin": true}))
        .await;
    let (s, _) = a
        .call("POST", &format!("/processes/{pid}/stdin"), "a")
        .await;
    assert_eq!(s, 204);
    let (s, _) = a
        .call("POST", &format!("/processes/{pid}/stdin?eof=true"), "b")
        .await;
    assert_eq!(s, 204);
    let (text, exit) = follow_to_exit(&a, pid).await;
    assert_eq!((text.as_str(), &exit["exit_code"]), ("abdone\n", &json!(0)));

    // Without `stdin`, there is none to write to.
    let pid = a.start_process(json!({"cmd": "sleep 5"})).await;
    let (s, v) = a
        .call("POST", &format!("/processes/{pid}/stdin"), "x")
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    a.call("DELETE", &format!("/processes/{pid}"), Vec::new())
        .await;
}

#[tokio::test]
async fn a_reader_that_reconnects_with_since_loses_nothing() {
    let a = Agent::start();
    let pid = a
        .start_process(json!({
            "cmd": "for i in $(seq 1 300); do echo line$i; [ $((i % 30)) = 0 ] && sleep 0.05; done; echo err >&2"
        }))
        .await;
    let mut text = String::new();
    let mut seq = 0;
    // First connection: read a little, then hang up.
    {
        let mut lines = output(&a, pid, "follow=true").await;
        while text.lines().count() < 40 {
            let ev = lines.within(WAIT, "early output").await.unwrap();
            assert_eq!(ev["seq"].as_u64().unwrap(), seq + 1, "{ev}");
            seq = ev["seq"].as_u64().unwrap();
            text.push_str(ev["data"].as_str().unwrap());
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Reconnect from the last seq seen.
    let mut lines = output(&a, pid, &format!("follow=true&since={seq}")).await;
    let mut err = String::new();
    let exit = loop {
        let ev = lines.within(WAIT, "the rest").await.expect("exit event");
        if let Some(exit) = ev.get("exit") {
            break exit.clone();
        }
        assert!(
            ev.get("dropped").is_none(),
            "nothing should be dropped: {ev}"
        );
        assert_eq!(ev["seq"].as_u64().unwrap(), seq + 1, "{ev}");
        seq += 1;
        match ev["stream"].as_str().unwrap() {
            "stdout" => text.push_str(ev["data"].as_str().unwrap()),
            _ => err.push_str(ev["data"].as_str().unwrap()),
        }
    };
    let want: String = (1..=300).map(|i| format!("line{i}\n")).collect();
    assert_eq!(text, want);
    assert_eq!((err.as_str(), &exit["exit_code"]), ("err\n", &json!(0)));
    assert!(lines.next().await.is_none(), "nothing after the exit event");
    // Without follow: what is kept, then the exit record, then the end.
    let mut lines = output(&a, pid, "since=0").await;
    let mut n = 0;
    while let Some(ev) = lines.next().await {
        n += 1;
        if ev.get("exit").is_some() {
            assert!(lines.next().await.is_none());
        }
    }
    assert_eq!(n as u64, seq + 1);
}

#[tokio::test]
async fn output_beyond_the_kept_amount_is_dropped_and_marked() {
    let a = Agent::start_with(Options {
        extra_args: vec!["--process-output-keep".into(), "4096".into()],
        ..Default::default()
    });
    let pid = a.start_process(json!({"cmd": "seq 1 20000"})).await;
    let (_, exit) = follow_to_exit(&a, pid).await;
    assert!(exit["output_dropped"].as_u64().unwrap() > 100_000, "{exit}");
    let mut lines = output(&a, pid, "").await;
    let first = lines.next().await.unwrap();
    assert_eq!(first["dropped"]["from_seq"], 1, "{first}");
    let mut tail = String::new();
    while let Some(ev) = lines.next().await {
        tail.push_str(ev["data"].as_str().unwrap_or(""));
    }
    assert!(
        tail.len() <= 4096 && tail.ends_with("19999\n20000\n"),
        "{tail:?}"
    );
}

#[tokio::test]
async fn signals_timeouts_and_kills_reach_the_whole_tree() {
    let a = Agent::start();
    // Signals go to the process group.
    let pid = a
        .start_process(json!({"cmd": "sleep", "args": ["1000"]}))
        .await;
    let (s, _) = a
        .json(
            "POST",
            &format!("/processes/{pid}/signal"),
            json!({"signal": "TERM"}),
        )
        .await;
    assert_eq!(s, 204);
    let (_, exit) = follow_to_exit(&a, pid).await;
    assert_eq!(
        (&exit["exit_code"], &exit["signal"]),
        (&json!(143), &json!("TERM"))
    );
    let (s, _) = a
        .json(
            "POST",
            &format!("/processes/{pid}/signal"),
            json!({"signal": "TERM"}),
        )
        .await;
    assert_eq!(s, 409, "an exited process takes no signals");

    // A timeout kills the group and says so.
    let pid = a
        .start_process(json!({"cmd": "sleep 1000", "timeout_ms": 300}))
        .await;
    let (_, exit) = follow_to_exit(&a, pid).await;
    assert_eq!(
        (&exit["timed_out"], &exit["exit_code"]),
        (&json!(true), &json!(137))
    );

    // DELETE takes children in other process groups of the session too (as an
    // interactive shell makes for its jobs).
    let pid = a
        .start_process(json!({
            "cmd": "python3 -c 'import os, time; os.setpgid(0, 0); print(\"up\", flush=True); \
                    time.sleep(1000)' & wait"
        }))
        .await;
    let mut lines = output(&a, pid, "follow=true").await;
    lines.within(WAIT, "up").await.unwrap();
    assert!(session_alive(pid));
    let (s, v) = a
        .call("DELETE", &format!("/processes/{pid}"), Vec::new())
        .await;
    assert_eq!(s, 200, "{v}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !session_alive(pid),
        "a child of the killed process survived"
    );

    // What a process left running after it exited goes too.
    let pid = a
        .start_process(json!({"cmd": "sleep 1000 >/dev/null 2>&1 & echo up"}))
        .await;
    let (text, _) = follow_to_exit(&a, pid).await;
    assert_eq!(text, "up\n");
    assert!(session_alive(pid), "the background sleep should still run");
    let (s, v) = a
        .call("DELETE", &format!("/processes/{pid}"), Vec::new())
        .await;
    assert_eq!((s, &v["exit_code"]), (200, &json!(0)), "{v}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!session_alive(pid), "the leftover child survived");

    // Even a child that left the session with setsid: the process's cgroup holds it.
    let pid = a
        .start_process(json!({
            "cmd": "setsid sh -c 'echo $$ > /workspace/escapee.pid; exec sleep 1000' & sleep 1000"
        }))
        .await;
    let pidfile = a.workspace().join("escapee.pid");
    let deadline = std::time::Instant::now() + WAIT;
    let escapee: i32 = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "no escapee pid");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let alive = |p: i32| {
        std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    assert!(alive(escapee));
    let (s, v) = a
        .call("DELETE", &format!("/processes/{pid}"), Vec::new())
        .await;
    assert_eq!(s, 200, "{v}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!alive(escapee), "the setsid escapee survived DELETE");

    let cases = [
        (json!({"cmd": ""}), 422),
        (json!({"cmd": "x", "pty": {"cols": 0, "rows": 24}}), 422),
        (json!({"cmd": "x", "bogus": true}), 400),
        // Valid, but no such program in the VM: 404 (the schema cannot rule it out).
        (json!({"cmd": "/no/such/program", "args": []}), 404),
        (json!({"cmd": "true", "cwd": "/etc"}), 422),
        (json!({"cmd": "x", "env": {"A=B": "c"}}), 422),
    ];
    for (body, status) in cases {
        let (s, v) = a.json("POST", "/processes", body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
    }
    let (s, _) = a
        .json("POST", "/processes/1/signal", json!({"signal": "STOP"}))
        .await;
    assert_eq!(s, 400);
    for uri in ["/processes/999999999", "/processes/999999999/output"] {
        let (s, _) = a.call("GET", uri, Vec::new()).await;
        assert_eq!(s, 404, "{uri}");
    }
}

#[tokio::test]
async fn only_the_last_exited_processes_are_kept() {
    let a = Agent::start();
    let keep = hearth_proto::KEEP_EXITED_PROCESSES;
    let mut pids = Vec::new();
    for _ in 0..keep + 2 {
        pids.push(a.start_process(json!({"cmd": "true", "args": []})).await);
    }
    // Wait until every one has exited; each retires as it ends.
    let deadline = std::time::Instant::now() + WAIT;
    let v = loop {
        let (_, v) = a.call("GET", "/processes", Vec::new()).await;
        let all = v["processes"].as_array().unwrap();
        if all.iter().all(|p| p["state"] == "exited") && all.len() == keep {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let listed: Vec<u64> = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert!(listed.iter().all(|p| pids.contains(p)));
    let forgotten: Vec<&u64> = pids.iter().filter(|p| !listed.contains(p)).collect();
    assert_eq!(forgotten.len(), 2, "{v}");
    for pid in forgotten {
        let (s, _) = a
            .call("GET", &format!("/processes/{pid}"), Vec::new())
            .await;
        assert_eq!(s, 404);
    }
}

/// Reads binary frames until their text contains `want`; returns all text read.
async fn read_until<S>(ws: &mut S, want: &str) -> String
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut text = String::new();
    let read = async {
        while let Some(msg) = ws.next().await {
            if let Message::Binary(b) = msg.expect("frame") {
                text.push_str(&String::from_utf8_lossy(&b));
                if text.contains(want) {
                    return;
                }
            }
        }
    };
    if tokio::time::timeout(WAIT, read).await.is_err() {
        panic!("no {want:?} on the terminal; got {text:?}");
    }
    text
}

#[tokio::test]
async fn a_pty_session_over_a_websocket() {
    let a = Agent::start();
    let pid = a
        .start_process(json!({"cmd": "/bin/sh", "args": [], "pty": {"cols": 80, "rows": 24}}))
        .await;
    let mut ws = websocket(&a.sock, &format!("/processes/{pid}/attach")).await;
    let send = |s: &str| Message::binary(s.as_bytes().to_vec());
    ws.send(send("echo $((6*7))\n")).await.unwrap();
    read_until(&mut ws, "42\r\n").await;
    ws.send(send("stty size; echo $TERM; tty; echo END-$((1+1))\n"))
        .await
        .unwrap();
    let text = read_until(&mut ws, "END-2\r\n").await;
    for want in ["24 80\r\n", "xterm-256color\r\n", "/dev/pts/"] {
        assert!(text.contains(want), "{want:?} in {text:?}");
    }
    let resize = json!({"type": "resize", "cols": 100, "rows": 30}).to_string();
    ws.send(Message::text(resize)).await.unwrap();
    ws.send(send("stty size\n")).await.unwrap();
    read_until(&mut ws, "30 100\r\n").await;
    let (_, v) = a
        .call("GET", &format!("/processes/{pid}"), Vec::new())
        .await;
    assert_eq!(v["pty"], json!({"cols": 100, "rows": 30}));
    // A bad control message is answered, not fatal.
    ws.send(Message::text("{\"type\":\"dance\"}"))
        .await
        .unwrap();

    // A second client sees the same terminal, history included.
    let mut other = websocket(&a.sock, &format!("/processes/{pid}/attach")).await;
    read_until(&mut other, "42\r\n").await;
    drop(other);

    ws.send(send("exit 3\n")).await.unwrap();
    let mut exit = None;
    let mut error_seen = false;
    let end = async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    match v["type"].as_str() {
                        Some("exit") => exit = Some(v),
                        Some("error") => error_seen = true,
                        _ => panic!("unexpected control message {v}"),
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(WAIT, end)
        .await
        .expect("the socket closes");
    assert!(error_seen, "the bad control message was not answered");
    assert_eq!(exit, Some(json!({"type": "exit", "exit_code": 3})));
    // The NDJSON output of a PTY process is its terminal's.
    let (text, _) = follow_to_exit(&a, pid).await;
    assert!(text.contains("42\r\n"), "{text:?}");

    // Attaching needs a terminal and a WebSocket handshake.
    let plain = a.start_process(json!({"cmd": "sleep 5"})).await;
    let (s, _) = a
        .call("GET", &format!("/processes/{plain}/attach"), Vec::new())
        .await;
    assert_eq!(s, 409);
    let pid = a
        .start_process(json!({"cmd": "sleep 5", "pty": {"cols": 10, "rows": 10}}))
        .await;
    let (s, v) = a
        .call("GET", &format!("/processes/{pid}/attach"), Vec::new())
        .await;
    assert_eq!(s, 400, "{v}");
}
