//! Running a jailed process to completion: stdin feeding, capped or streamed output,
//! timeout (or a gone client) ending the whole run with `cgroup.kill`.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hearth_proto::{ExecResponse, StreamEvent};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::{spawn, Jail, Result, SpawnSpec};

/// How long output is still collected after the main process exited. Background
/// processes it left behind may hold the pipes open; we do not wait for them.
const DRAIN_GRACE: Duration = Duration::from_millis(250);
/// How long a killed run may take to be gone entirely before we answer anyway.
const KILL_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub spawn: SpawnSpec,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Bytes kept per stream when capturing; the rest is read and dropped.
    pub output_cap: usize,
    /// Becomes `true` (or its sender goes away) when the client has hung up; the run's
    /// cgroup is then killed.
    pub cancel: Option<watch::Receiver<bool>>,
}

/// Where output goes.
#[derive(Debug, Clone)]
pub enum OutputSink {
    /// Into the response, up to `output_cap` per stream.
    Capture,
    /// As NDJSON events, as produced, up to `output_cap` per stream: past it output is
    /// drained and dropped and the final `Exit` event flags it, so `yes` cannot flood a
    /// client. The channel is bounded, so a slow client slows the process down instead of
    /// growing memory. The caller sends the final `Exit` event.
    Stream(mpsc::Sender<StreamEvent>),
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    /// Bytes already sent as stream events (the stream's share of the cap).
    streamed: usize,
    truncated: bool,
}

/// Runs `spec` in the jail and reports how it ended. Exit code is `128 + signal` when a
/// signal ended it; on timeout or when the client is gone, every process of the run gets
/// SIGKILL through its cgroup. A request cancelled mid-run (its future dropped) kills it
/// too: see [`super::JailedChild`].
pub async fn run(jail: &Jail, spec: ExecSpec, sink: OutputSink) -> Result<ExecResponse> {
    let started = Instant::now();
    let stdin = if spec.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = spawn(jail, &spec.spawn, [stdin, Stdio::piped(), Stdio::piped()])?;
    let kill = |child: &super::JailedChild| {
        if let Err(e) = child.kill_all() {
            eprintln!("hearth-agent: cgroup.kill of a run: {e}");
        }
    };

    // A process that never reads its stdin must not block us: write in a task, ignore
    // EPIPE, and abort the task when the run is over.
    let feeder = match (spec.stdin, child.stdin.take()) {
        (Some(data), Some(mut w)) => Some(tokio::spawn(async move {
            let _ = w.write_all(&data).await;
        })),
        _ => None,
    };
    let out = Arc::new(Mutex::new(Captured::default()));
    let err = Arc::new(Mutex::new(Captured::default()));
    let tx = match &sink {
        OutputSink::Capture => None,
        OutputSink::Stream(tx) => Some(tx.clone()),
    };
    let pumps = [
        tokio::spawn(pump(
            child.stdout.take(),
            out.clone(),
            spec.output_cap,
            tx.clone(),
            true,
        )),
        tokio::spawn(pump(
            child.stderr.take(),
            err.clone(),
            spec.output_cap,
            tx.clone(),
            false,
        )),
    ];

    let stream_gone = async {
        match &tx {
            Some(tx) => tx.closed().await,
            None => std::future::pending().await,
        }
    };
    let mut cancel = spec.cancel;
    let client_gone = async {
        match &mut cancel {
            // An error means the sender (the connection) is gone: the same thing.
            Some(rx) => drop(rx.wait_for(|gone| *gone).await),
            None => std::future::pending().await,
        }
    };
    let mut timed_out = false;
    let mut killed = false;
    let status = tokio::select! {
        s = child.wait() => s,
        _ = tokio::time::sleep(spec.timeout) => {
            timed_out = true;
            killed = true;
            kill(&child);
            child.wait().await
        }
        _ = stream_gone => {
            killed = true;
            kill(&child);
            child.wait().await
        }
        _ = client_gone => {
            killed = true;
            kill(&child);
            child.wait().await
        }
    }
    .map_err(super::JailError::io("waiting for the child"))?;
    // A killed run is answered only once every process of it is gone, so the next call
    // never sees its remains.
    if killed && !child.cgroup().wait_empty(KILL_WAIT).await {
        eprintln!("hearth-agent: a killed run still has processes after {KILL_WAIT:?}");
    }
    // The main process is gone; processes it left behind keep running (that is how
    // `cmd &` works) unless the run was killed above; their cgroup goes when they do.

    let [a, b] = pumps;
    let aborts = [a.abort_handle(), b.abort_handle()];
    let both = async {
        let _ = a.await;
        let _ = b.await;
    };
    if tokio::time::timeout(DRAIN_GRACE, both).await.is_err() {
        aborts.iter().for_each(|h| h.abort());
    }
    if let Some(f) = feeder {
        f.abort();
    }

    let exit_code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    let take = |c: &Arc<Mutex<Captured>>| {
        let mut c = c.lock().expect("pump does not panic");
        (
            String::from_utf8_lossy(&std::mem::take(&mut c.bytes)).into_owned(),
            c.truncated,
        )
    };
    let (stdout, stdout_truncated) = take(&out);
    let (stderr, stderr_truncated) = take(&err);
    Ok(ExecResponse {
        exit_code,
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        timed_out,
        oom_killed: child.oom_killed(),
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

async fn pump(
    src: Option<impl AsyncRead + Unpin>,
    into: Arc<Mutex<Captured>>,
    cap: usize,
    tx: Option<mpsc::Sender<StreamEvent>>,
    is_stdout: bool,
) {
    let Some(mut src) = src else { return };
    let mut buf = vec![0u8; 16 * 1024];
    let mut carry = Vec::new();
    loop {
        let n = match src.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match &tx {
            Some(tx) => {
                let keep = {
                    let mut c = into.lock().expect("no panics while locked");
                    let keep = n.min(cap.saturating_sub(c.streamed));
                    c.streamed += keep;
                    c.truncated |= keep < n;
                    keep
                };
                if keep == 0 {
                    continue;
                }
                let text = utf8_chunk(&mut carry, &buf[..keep]);
                let ev = if is_stdout {
                    StreamEvent::Stdout(text)
                } else {
                    StreamEvent::Stderr(text)
                };
                // A gone client is noticed by `run`; keep draining so the child never
                // blocks on a full pipe meanwhile.
                let _ = tx.send(ev).await;
            }
            None => {
                let mut c = into.lock().expect("no panics while locked");
                let room = cap.saturating_sub(c.bytes.len());
                c.bytes.extend_from_slice(&buf[..n.min(room)]);
                c.truncated |= n > room;
            }
        }
    }
    if let (Some(tx), false) = (&tx, carry.is_empty()) {
        let text = String::from_utf8_lossy(&carry).into_owned();
        let ev = if is_stdout {
            StreamEvent::Stdout(text)
        } else {
            StreamEvent::Stderr(text)
        };
        let _ = tx.send(ev).await;
    }
}

/// Converts `chunk` to text, holding back an incomplete UTF-8 sequence at its end for
/// the next chunk, so a character split across reads is not mangled.
fn utf8_chunk(carry: &mut Vec<u8>, chunk: &[u8]) -> String {
    carry.extend_from_slice(chunk);
    let cut = match std::str::from_utf8(carry) {
        Ok(_) => carry.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => carry.len(),
    };
    let rest = carry.split_off(cut);
    let text = String::from_utf8_lossy(carry).into_owned();
    *carry = rest;
    text
}

#[cfg(test)]
mod tests {
    use super::utf8_chunk;

    #[test]
    fn split_characters_survive_chunking() {
        let snow = "☃".as_bytes();
        let mut carry = Vec::new();
        assert_eq!(utf8_chunk(&mut carry, &[b'a', snow[0]]), "a");
        assert_eq!(utf8_chunk(&mut carry, &snow[1..2]), "");
        assert_eq!(utf8_chunk(&mut carry, &[snow[2], b'b']), "☃b");
        assert!(carry.is_empty());
        assert_eq!(utf8_chunk(&mut carry, &[0xff, b'c']), "\u{fffd}c");
    }
}
