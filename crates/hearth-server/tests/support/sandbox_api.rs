//! The sandbox API's client side for `sandbox_api_e2e.rs`: calls on one VM that check
//! the status and read `hearth-api` types, a raw HTTP exchange, and terminal reads.

use std::time::Duration;

use futures::StreamExt;
use hearth_api::processes::{ProcessEvent, ProcessInfo, ProcessState};
use hearth_api::ErrorBody;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::Server;

/// A small deterministic PRNG (xorshift): random-looking bytes without a dependency.
pub fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

pub struct Api<'a> {
    pub srv: &'a Server,
    pub http: reqwest::Client,
    pub vm: String,
}

impl Api<'_> {
    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}/v1/vms/{}{path}", self.srv.url, self.vm);
        self.http.request(method, url).bearer_auth(&self.srv.key)
    }

    pub async fn send(&self, r: reqwest::RequestBuilder) -> (StatusCode, bytes::Bytes) {
        let resp = r.send().await.unwrap();
        (resp.status(), resp.bytes().await.unwrap())
    }

    /// A JSON call that must answer `want`, read as `T`.
    pub async fn ok<T: serde::de::DeserializeOwned>(
        &self,
        want: u16,
        r: reqwest::RequestBuilder,
    ) -> T {
        let (s, b) = self.send(r).await;
        let text = String::from_utf8_lossy(&b).into_owned();
        assert_eq!(s.as_u16(), want, "{text}");
        serde_json::from_slice(&b).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// A call that must fail with `want` and the one error shape.
    pub async fn fails(&self, want: u16, r: reqwest::RequestBuilder) -> ErrorBody {
        let (s, b) = self.send(r).await;
        let text = String::from_utf8_lossy(&b).into_owned();
        assert_eq!(s.as_u16(), want, "{text}");
        serde_json::from_slice(&b).unwrap_or_else(|e| panic!("not an ErrorBody ({e}): {text}"))
    }

    pub async fn exec(&self, cmd: &str) -> Value {
        self.ok(
            200,
            self.req(Method::POST, "/exec").json(&json!({"cmd": cmd})),
        )
        .await
    }

    pub async fn content(&self, path: &str) -> Vec<u8> {
        let r = self
            .req(Method::GET, "/files/content")
            .query(&[("path", path)]);
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let len = resp.content_length();
        let body = resp.bytes().await.unwrap().to_vec();
        assert_eq!(len, Some(body.len() as u64), "Content-Length");
        body
    }

    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.req(Method::PUT, "/files/content")
            .query(&[("path", path)])
    }

    pub async fn start(&self, body: Value) -> ProcessInfo {
        let info: ProcessInfo = self
            .ok(201, self.req(Method::POST, "/processes").json(&body))
            .await;
        assert_eq!(info.state, ProcessState::Running);
        info
    }

    /// Output events after `since`, as kept now (no follow), or until exit (follow).
    pub async fn output(&self, pid: u32, since: u64, follow: bool) -> Vec<ProcessEvent> {
        let q = [("since", since.to_string()), ("follow", follow.to_string())];
        let r = self
            .req(Method::GET, &format!("/processes/{pid}/output"))
            .query(&q);
        let (s, b) = self.send(r).await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        let text = String::from_utf8(b.to_vec()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Polls `output` until its text contains `want`; the text and the last seq.
    pub async fn output_until(&self, pid: u32, since: u64, want: &str) -> (String, u64) {
        for _ in 0..300 {
            let (mut text, mut last) = (String::new(), since);
            for ev in self.output(pid, since, false).await {
                if let ProcessEvent::Output(c) = ev {
                    text.push_str(&c.data);
                    last = c.seq;
                }
            }
            if text.contains(want) {
                return (text, last);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {want:?} in the output of {pid}");
    }

    pub async fn process(&self, pid: u32) -> ProcessInfo {
        self.ok(200, self.req(Method::GET, &format!("/processes/{pid}")))
            .await
    }
}

/// Sends `head` on a new connection and returns what the server answers.
pub async fn raw_http(srv: &Server, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = srv.url.strip_prefix("http://").unwrap();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    let read = async {
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&got).contains("}}") {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), read).await;
    String::from_utf8_lossy(&got).into_owned()
}

pub type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Reads terminal bytes until `want` shows up.
pub async fn until(ws: &mut Socket, want: &str) -> String {
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
    if tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .is_err()
    {
        panic!("no {want:?} on the terminal: {text:?}");
    }
    text
}
