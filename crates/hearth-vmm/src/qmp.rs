//! A minimal QMP client (QEMU Machine Protocol, JSON lines on a Unix socket): one
//! connection per command, which is all pause/resume need.
//!
//! The exchange: QEMU greets with `{"QMP": ...}`, the client sends
//! `{"execute":"qmp_capabilities"}` to leave negotiation mode, then its command; every
//! command gets one `{"return": ...}` or `{"error": {"class","desc"}}`, and asynchronous
//! `{"event": ...}` lines may arrive in between (skipped here).
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::{Error, Result};

/// Longest wait for QEMU to answer one command (it answers `stop`/`cont` at once).
const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `command` (with optional `arguments`) and returns its `return` value.
pub async fn execute(socket: &Path, command: &str, arguments: Option<Value>) -> Result<Value> {
    tokio::time::timeout(TIMEOUT, execute_inner(socket, command, arguments))
        .await
        .map_err(|_| qmp_err(command, format!("no answer within {TIMEOUT:?}")))?
}

async fn execute_inner(socket: &Path, command: &str, arguments: Option<Value>) -> Result<Value> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| Error::io(socket, e))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let greeting = next_message(&mut lines, command).await?;
    if greeting.get("QMP").is_none() {
        return Err(qmp_err(command, format!("unexpected greeting {greeting}")));
    }
    let caps = to_line(json!({"execute": "qmp_capabilities"}));
    write
        .write_all(caps.as_bytes())
        .await
        .map_err(|e| Error::io(socket, e))?;
    reply(&mut lines, "qmp_capabilities").await?;
    let mut msg = json!({ "execute": command });
    if let Some(args) = arguments {
        msg["arguments"] = args;
    }
    let line = to_line(msg);
    write
        .write_all(line.as_bytes())
        .await
        .map_err(|e| Error::io(socket, e))?;
    reply(&mut lines, command).await
}

fn to_line(msg: Value) -> String {
    let mut line = msg.to_string();
    line.push('\n');
    line
}

type Lines = tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>;

async fn next_message(lines: &mut Lines, command: &str) -> Result<Value> {
    let line = lines
        .next_line()
        .await
        .map_err(|e| qmp_err(command, e.to_string()))?
        .ok_or_else(|| qmp_err(command, "QEMU closed the QMP connection".into()))?;
    serde_json::from_str(&line).map_err(|e| qmp_err(command, format!("{e}: {line}")))
}

/// The answer to the command just sent: its `return`, or its `error` as an `Err`.
async fn reply(lines: &mut Lines, command: &str) -> Result<Value> {
    loop {
        let msg = next_message(lines, command).await?;
        if let Some(ret) = msg.get("return") {
            return Ok(ret.clone());
        }
        if let Some(err) = msg.get("error") {
            let desc = err["desc"].as_str().unwrap_or("no description");
            return Err(qmp_err(command, desc.to_string()));
        }
        // An event: not the answer.
    }
}

fn qmp_err(command: &str, detail: String) -> Error {
    Error::Qmp {
        command: command.to_string(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

    /// A stand-in QEMU that greets, accepts the capabilities, sends an event before the
    /// answer, and fails an unknown command the way QEMU does.
    #[tokio::test]
    async fn events_are_skipped_and_errors_carry_qemus_description() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            for answer in [
                r#"{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}
{"return": {}}"#,
                r#"{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#,
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                s.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                    .await
                    .unwrap();
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                assert!(String::from_utf8_lossy(&buf[..n]).contains("qmp_capabilities"));
                s.write_all(b"{\"return\": {}}\n").await.unwrap();
                let n = s.read(&mut buf).await.unwrap();
                assert!(String::from_utf8_lossy(&buf[..n]).contains("\"execute\""));
                s.write_all(format!("{answer}\n").as_bytes()).await.unwrap();
            }
        });
        assert_eq!(execute(&path, "stop", None).await.unwrap(), json!({}));
        let e = execute(&path, "nope", None).await.unwrap_err().to_string();
        assert!(
            e.contains("has not been found") && e.contains("nope"),
            "{e}"
        );
        server.await.unwrap();
    }
}
