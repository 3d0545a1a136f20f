//! In-process tests of the scripts and jobs API: the real router and a real SQLite file,
//! no workers (so every job stays queued unless a test claims it through the store, as
//! a worker would). Bad input, pagination, cancel, the atomic claim and crash recovery.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hearth_api::jobs::LogStream;
use hearth_server::jobs::logs::{log_path, LogWriter};
use hearth_server::{app, Config};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use support::inproc::Env;

/// No workers: every job stays queued unless a test claims it through the store.
async fn env_with(tweak: impl FnOnce(&mut Config)) -> Env {
    support::inproc::env_with(|c| {
        c.jobs.concurrency = 0;
        tweak(c);
    })
    .await
}

async fn env() -> Env {
    env_with(|_| {}).await
}

impl Env {
    async fn raw(&self, method: &str, uri: &str, body: &'static str) -> (StatusCode, Value) {
        let (s, v, _) = self
            .send_full(self.req(method, uri).body(Body::from(body)).unwrap())
            .await;
        (s, v)
    }

    async fn upload(&self, name: &str, body: &'static str) -> String {
        let lang = hearth_api::Language::from_file_name(name).unwrap();
        let uri = format!("/v1/scripts?name={name}&language={lang}");
        let (s, v) = self.raw("POST", &uri, body).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    async fn inline_job(&self, code: &str) -> String {
        let body = json!({"language": "sh", "code": code});
        let (s, v) = self.call("POST", "/v1/jobs", Some(body)).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        v["job_id"].as_str().unwrap().to_string()
    }

    async fn job(&self, id: &str) -> Value {
        let (s, v) = self.call("GET", &format!("/v1/jobs/{id}"), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }
}

fn assert_error(s: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(s, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn scripts_upload_raw_and_multipart_list_show_delete() {
    let e = env().await;
    let (s, v) = e
        .raw(
            "POST",
            "/v1/scripts?name=hello.py&language=python",
            "print('hi')\n",
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], "hello.py");
    assert_eq!(v["language"], "python");
    assert_eq!(v["size"], 12);
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
    let py = v["id"].as_str().unwrap().to_string();

    // Multipart: the part's file name names the script (the language is always named).
    let b = "XBOUNDARYX";
    let form = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"script\"; filename=\"run.sh\"\r\n\
         Content-Type: application/octet-stream\r\n\r\necho hi\n\r\n--{b}--\r\n"
    );
    let req = e
        .req("POST", "/v1/scripts?language=sh")
        .header("content-type", format!("multipart/form-data; boundary={b}"))
        .body(Body::from(form))
        .unwrap();
    let (s, v, _) = e.send_full(req).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["name"].as_str(), v["language"].as_str()),
        (Some("run.sh"), Some("sh"))
    );
    assert_eq!(v["size"], 8);

    // The name need not have an extension: the language is named.
    let (s, v) = e
        .raw(
            "POST",
            "/v1/scripts?name=tool&language=js",
            "console.log(1)",
        )
        .await;
    assert_eq!(
        (s, v["language"].as_str()),
        (StatusCode::CREATED, Some("js"))
    );

    let (_, list) = e.call("GET", "/v1/scripts", None).await;
    assert_eq!(list["scripts"].as_array().unwrap().len(), 3);
    let (s, v) = e.call("GET", &format!("/v1/scripts/{py}"), None).await;
    assert_eq!((s, v["name"].as_str()), (StatusCode::OK, Some("hello.py")));
    let (s, _) = e.call("DELETE", &format!("/v1/scripts/{py}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = e.call("GET", &format!("/v1/scripts/{py}"), None).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn bad_uploads_are_clear_4xx() {
    let e = env_with(|c| c.jobs.max_script_bytes = 64).await;
    // The language is named, never guessed by the server; a name is one file name.
    let (s, v) = e.raw("POST", "/v1/scripts?name=x.rb", "puts 1").await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_request");
    assert!(v["error"]["message"].as_str().unwrap().contains("language"));
    let (s, v) = e
        .raw("POST", "/v1/scripts?name=x.py&language=cobol", "1")
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_request");
    let (s, v) = e
        .raw("POST", "/v1/scripts?name=x.py&language=python", "")
        .await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let (s, v) = e.raw("POST", "/v1/scripts", "echo").await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_request");
    let (s, v) = e
        .raw("POST", "/v1/scripts?name=a%2Fb.sh&language=sh", "echo")
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_request");
    let big: &'static str = Box::leak("#".repeat(65).into_boxed_str());
    let (s, v) = e
        .raw("POST", "/v1/scripts?name=x.sh&language=sh", big)
        .await;
    assert_error(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Chunked (no Content-Length): counted while reading.
    let stream = futures::stream::iter(
        (0..3).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[b'#'; 30]))),
    );
    let req = e
        .req("POST", "/v1/scripts?name=x.sh&language=sh")
        .body(Body::from_stream(stream))
        .unwrap();
    let (s, v, _) = e.send_full(req).await;
    assert_error(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Inline code has the same limits.
    let code = "#".repeat(65);
    let (s, v) = e
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"language": "sh", "code": code})),
        )
        .await;
    assert_error(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

#[tokio::test]
async fn bad_job_requests_are_clear_4xx() {
    let e = env().await;
    let script = e.upload("ok.sh", "echo ok").await;
    let run = format!("/v1/scripts/{script}/run");
    let cases = [
        (json!({"language": "cobol", "code": "x"}), "/v1/jobs"),
        (json!({"language": "sh", "code": ""}), "/v1/jobs"),
        (json!({"language": "sh"}), "/v1/jobs"),
        (
            json!({"language": "sh", "code": "x", "bogus": 1}),
            "/v1/jobs",
        ),
        (json!({"timeout_s": 0}), run.as_str()),
        (json!({"timeout_s": 99_999_999}), run.as_str()),
        (json!({"vcpus": 99}), run.as_str()),
        (json!({"memory_mib": 1}), run.as_str()),
        (json!({"env": {"A=B": "c"}}), run.as_str()),
        (json!({"files": {"../escape": "x"}}), run.as_str()),
        (json!({"files": {"/abs": "x"}}), run.as_str()),
        (json!({"max_retries": 99}), run.as_str()),
        (json!({"args": "not a list"}), run.as_str()),
    ];
    for (body, uri) in cases {
        let (s, v) = e.call("POST", uri, Some(body.clone())).await;
        assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    }
    let (s, v) = e.raw("POST", "/v1/jobs", "{not json").await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_request");
    // An empty body is all defaults.
    let (s, v) = e.raw("POST", &run, "").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let job = e.job(v["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "queued");
    assert_eq!(job["script_id"], script.as_str());
    assert_eq!(
        (job["name"].as_str(), job["language"].as_str()),
        (Some("ok.sh"), Some("sh"))
    );
}

#[tokio::test]
async fn unknown_ids_are_404() {
    let e = env().await;
    for (m, uri) in [
        ("GET", "/v1/scripts/nope"),
        ("DELETE", "/v1/scripts/nope"),
        ("POST", "/v1/scripts/nope/run"),
        ("GET", "/v1/jobs/nope"),
        ("GET", "/v1/jobs/nope/logs"),
        ("GET", "/v1/jobs/nope/logs?follow=true"),
        ("POST", "/v1/jobs/nope/cancel"),
    ] {
        let (s, v) = e.call(m, uri, None).await;
        assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    }
}

#[tokio::test]
async fn cancel_a_queued_job_then_409_and_script_delete_waits_for_it() {
    let e = env().await;
    let script = e.upload("s.sh", "sleep 1").await;
    let (_, v) = e
        .call(
            "POST",
            &format!("/v1/scripts/{script}/run"),
            Some(json!({})),
        )
        .await;
    let id = v["job_id"].as_str().unwrap().to_string();
    // A queued job holds its script.
    let (s, v) = e
        .call("DELETE", &format!("/v1/scripts/{script}"), None)
        .await;
    assert_error(s, &v, StatusCode::CONFLICT, "conflict");

    let (s, v) = e.call("POST", &format!("/v1/jobs/{id}/cancel"), None).await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::ACCEPTED, Some("cancelled")),
        "{v}"
    );
    let job = e.job(&id).await;
    assert_eq!(job["status"], "cancelled");
    assert!(
        job["started_at"].is_null() && job["vm_id"].is_null(),
        "{job}"
    );
    assert!(job["finished_at"].is_string());
    // It never starts: a worker's claim finds nothing.
    assert!(e.state.store.claim_job("w").await.unwrap().is_none());
    let (s, v) = e.call("POST", &format!("/v1/jobs/{id}/cancel"), None).await;
    assert_error(s, &v, StatusCode::CONFLICT, "conflict");
    let (s, _) = e
        .call("DELETE", &format!("/v1/scripts/{script}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn cancel_of_a_running_job_flags_it_for_its_worker() {
    let e = env().await;
    let id = e.inline_job("sleep 100").await;
    let claimed = e.state.store.claim_job("w1").await.unwrap().unwrap();
    assert_eq!(claimed.id, id);
    assert!(!e.state.store.cancel_requested(&id).await.unwrap());
    let (s, v) = e.call("POST", &format!("/v1/jobs/{id}/cancel"), None).await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::ACCEPTED, Some("cancelling")),
        "{v}"
    );
    assert!(e.state.store.cancel_requested(&id).await.unwrap());
}

#[tokio::test]
async fn job_list_is_newest_first_filtered_and_paginated() {
    let e = env().await;
    let script = e.upload("p.sh", "true").await;
    let mut ids = vec![];
    for i in 0..5 {
        let id = if i % 2 == 0 {
            e.inline_job("true").await
        } else {
            let (_, v) = e
                .call("POST", &format!("/v1/scripts/{script}/run"), None)
                .await;
            v["job_id"].as_str().unwrap().to_string()
        };
        ids.push(id);
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    e.call("POST", &format!("/v1/jobs/{}/cancel", ids[0]), None)
        .await;
    let mut seen = vec![];
    let mut uri = "/v1/jobs?limit=2".to_string();
    loop {
        let (s, page) = e.call("GET", &uri, None).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let jobs = page["jobs"].as_array().unwrap();
        assert!(jobs.len() <= 2);
        seen.extend(jobs.iter().map(|j| j["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/jobs?limit=2&cursor={c}"),
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    let (_, v) = e.call("GET", "/v1/jobs?status=cancelled", None).await;
    assert_eq!(v["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(v["jobs"][0]["id"], ids[0].as_str());
    let (_, v) = e
        .call("GET", &format!("/v1/jobs?script_id={script}"), None)
        .await;
    assert_eq!(v["jobs"].as_array().unwrap().len(), 2);
    for bad in [
        "/v1/jobs?status=done",
        "/v1/jobs?cursor=zzz",
        "/v1/jobs?bogus=1",
    ] {
        let (s, v) = e.call("GET", bad, None).await;
        assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_request");
    }
}

/// Many workers claiming at once over several connections: every job exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_never_share_a_job() {
    let e = env().await;
    let mut ids = vec![];
    for _ in 0..30 {
        ids.push(e.inline_job("true").await);
    }
    let mut tasks = vec![];
    for w in 0..6 {
        let store = e.state.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = vec![];
            while let Some(j) = store.claim_job(&format!("w{w}")).await.unwrap() {
                got.push(j.job.id);
            }
            got
        }));
    }
    let mut claimed = vec![];
    for t in tasks {
        claimed.extend(t.await.unwrap());
    }
    claimed.sort();
    ids.sort();
    assert_eq!(claimed, ids);
    for id in &ids {
        let j = e.job(id).await;
        assert_eq!(
            (j["status"].as_str(), j["attempts"].as_i64()),
            (Some("running"), Some(1))
        );
    }
}

#[tokio::test]
async fn recovery_errors_or_requeues_jobs_a_crash_left_running() {
    let e = env().await;
    let plain = e.inline_job("sleep 9").await;
    let (_, v) = e
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"language": "sh", "code": "sleep 9", "max_retries": 1})),
        )
        .await;
    let retried = v["job_id"].as_str().unwrap().to_string();
    let queued = e.inline_job("true").await;
    e.state.store.claim_job("dead").await.unwrap();
    e.state.store.claim_job("dead").await.unwrap();
    hearth_server::jobs::recover(&e.state).await.unwrap();
    let j = e.job(&plain).await;
    assert_eq!(j["status"], "error");
    assert!(j["error"].as_str().unwrap().contains("restarted"), "{j}");
    let j = e.job(&retried).await;
    assert_eq!(
        (j["status"].as_str(), j["attempts"].as_i64()),
        (Some("queued"), Some(1))
    );
    assert_eq!(e.job(&queued).await["status"], "queued");
    // The retry is claimed again as attempt 2, before the younger queued job; a second
    // crash leaves it with no retries left.
    let again = e.state.store.claim_job("w").await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.attempts), (retried.as_str(), 2));
    hearth_server::jobs::recover(&e.state).await.unwrap();
    assert_eq!(e.job(&retried).await["status"], "error");
}

#[tokio::test]
async fn logs_interleave_filter_and_follow_ends_with_the_job() {
    let e = env().await;
    let id = e.inline_job("true").await;
    let (s, _, text) = e
        .send_full(
            e.req("GET", &format!("/v1/jobs/{id}/logs"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!((s, text.as_str()), (StatusCode::OK, ""));
    let path = log_path(&e.state.config.data_dir, &id);
    let mut w = LogWriter::open(&path, 1 << 20).await.unwrap();
    w.chunk(LogStream::Stdout, "one\n".into()).await.unwrap();
    w.chunk(LogStream::Stderr, "two\n".into()).await.unwrap();
    w.chunk(LogStream::Stdout, "three\n".into()).await.unwrap();
    for (q, want) in [
        ("", "one\ntwo\nthree\n"),
        ("?stream=stdout", "one\nthree\n"),
        ("?stream=stderr", "two\n"),
    ] {
        let (s, _, text) = e
            .send_full(
                e.req("GET", &format!("/v1/jobs/{id}/logs{q}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!((s, text.as_str()), (StatusCode::OK, want), "{q}");
    }
    let (s, v) = e
        .call("GET", &format!("/v1/jobs/{id}/logs?stream=both"), None)
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_request");
    // follow: open while the job is queued, more output arrives, then the job ends.
    let app = app(e.state.clone());
    let req = e
        .req(
            "GET",
            &format!("/v1/jobs/{id}/logs?follow=true&format=ndjson"),
        )
        .body(Body::empty())
        .unwrap();
    let reader = tokio::spawn(async move {
        let resp = app.oneshot(req).await.unwrap();
        resp.into_body().collect().await.unwrap().to_bytes()
    });
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(
        !reader.is_finished(),
        "follow ended while the job was queued"
    );
    w.chunk(LogStream::Stdout, "four\n".into()).await.unwrap();
    e.call("POST", &format!("/v1/jobs/{id}/cancel"), None).await;
    let body = tokio::time::timeout(std::time::Duration::from_secs(10), reader)
        .await
        .expect("follow did not end with the job")
        .unwrap();
    let lines: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let data: Vec<&str> = lines.iter().map(|l| l["data"].as_str().unwrap()).collect();
    assert_eq!(data, ["one\n", "two\n", "three\n", "four\n"]);
    assert_eq!(lines[1]["stream"], "stderr");
}

#[tokio::test]
async fn job_routes_are_in_openapi() {
    let e = env().await;
    let (_, doc) = e
        .send(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await;
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in [
        ("post", "/v1/scripts"),
        ("get", "/v1/scripts"),
        ("get", "/v1/scripts/{id}"),
        ("delete", "/v1/scripts/{id}"),
        ("post", "/v1/scripts/{id}/run"),
        ("post", "/v1/jobs"),
        ("get", "/v1/jobs"),
        ("get", "/v1/jobs/{id}"),
        ("get", "/v1/jobs/{id}/logs"),
        ("post", "/v1/jobs/{id}/cancel"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} not in openapi.json"
        );
    }
}
