//! Test harness: starts the real `hearth-agent` binary on the host (it enters its own
//! mount namespace, so nothing leaks into the host's mounts) and talks HTTP to it over a
//! Unix socket with hyper's client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

pub struct Agent {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub child: Child,
    /// The cgroup holding this agent's user code (removed, with anything left in it,
    /// when the agent is dropped).
    pub cgroup: PathBuf,
}

/// The host's cgroup v2 mount point (`/sys/fs/cgroup` on a unified host,
/// `/sys/fs/cgroup/unified` on a hybrid one) and the controllers its root offers. The
/// agent's cgroup tests run for real on either: `cgroup.kill` needs no controller.
pub fn cgroup2() -> (PathBuf, Vec<String>) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("reading mounts");
    let mnt = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]))
        .expect("these tests need a cgroup v2 hierarchy mounted on the host");
    let offered = std::fs::read_to_string(mnt.join("cgroup.controllers")).unwrap_or_default();
    let offered = offered
        .split_whitespace()
        .filter(|c| ["memory", "pids"].contains(c))
        .map(str::to_string)
        .collect();
    (mnt, offered)
}

/// Kills everything in `dir` (a cgroup v2 directory) and removes it with its children.
pub fn remove_cgroup_tree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        if std::fs::remove_dir(dir).is_ok() || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where the tests find the Deno binary: `$HEARTH_TEST_DENO`, else the binary of the
/// PyPI `deno` package (`pip install deno`), else a `deno` executable on `PATH`. Only a
/// real ELF binary will do: wrapper scripts (pyenv shims) do not work inside the jail.
pub fn deno_path() -> PathBuf {
    if let Some(p) = std::env::var_os("HEARTH_TEST_DENO") {
        return p.into();
    }
    let from_python = Command::new("python3")
        .args(["-c", "import deno; print(deno.find_deno_bin())"])
        .output();
    let from_path = Command::new("sh").args(["-c", "command -v deno"]).output();
    for out in [from_python, from_path].into_iter().flatten() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let Ok(p) = std::fs::canonicalize(&p) else {
            continue;
        };
        let mut magic = [0u8; 4];
        let is_elf = std::fs::File::open(&p)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
            && magic == *b"\x7fELF";
        if is_elf {
            return p;
        }
    }
    panic!("no deno binary: `pip install deno` or set HEARTH_TEST_DENO=/path/to/deno");
}

#[derive(Default)]
pub struct Options {
    pub extra_args: Vec<String>,
    /// Run the agent in a fresh network namespace (firewall tests).
    pub new_netns: bool,
}

impl Agent {
    pub fn start() -> Agent {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("agent.sock");
        // HEARTH_TEST_AGENT_BIN runs the suite against another build, e.g. the static
        // guest binary from scripts/build-guest.sh.
        let bin = std::env::var_os("HEARTH_TEST_AGENT_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_hearth-agent").into());
        let (mnt, offered) = cgroup2();
        let name = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let cgroup = mnt.join(format!("hearth-test-{name}"));
        let mut cmd = Command::new(bin);
        cmd.arg("--cgroup")
            .arg(&cgroup)
            .arg("--cgroup-require")
            .arg(offered.join(","))
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .arg("--workspace")
            .arg(dir.path().join("ws"))
            .arg("--jail-root")
            .arg(dir.path().join("jail"))
            .arg("--runtime-bin")
            .arg(deno_path())
            .args(&opts.extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // The agent starts at oom_score_adj 500 and then lowers itself to -1000 where
        // the host grants CAP_SYS_RESOURCE (the guest does); either way its score is
        // not 0, so the jail's reset of user code to 0 is visible.
        // SAFETY: open/write/close of a fixed path, all async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
                if fd >= 0 {
                    libc::write(fd, b"500".as_ptr().cast(), 3);
                    libc::close(fd);
                }
                Ok(())
            });
        }
        if opts.new_netns {
            // SAFETY: unshare is a single async-signal-safe system call.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::unshare(libc::CLONE_NEWNET) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("start hearth-agent");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the listening line");
        assert!(
            line.starts_with("listening on unix:"),
            "agent did not start: {line:?}"
        );
        Agent {
            dir,
            sock,
            child,
            cgroup,
        }
    }

    /// The cgroups of this agent's runs that exist right now.
    pub fn run_cgroups(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&self.cgroup)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        dirs
    }

    pub fn workspace(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    pub async fn connect(&self) -> Client {
        Client::connect(&self.sock).await
    }

    /// One request on a fresh connection; returns status and the whole body.
    pub async fn request(&self, method: &str, path: &str, body: impl Into<Bytes>) -> (u16, Bytes) {
        let mut c = self.connect().await;
        let resp = c.send(method, path, body.into()).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    }

    /// Sends `body` as JSON; the answer parsed as JSON (`null` when empty, as for 204).
    pub async fn json(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        self.call(method, path, serde_json::to_vec(&body).unwrap())
            .await
    }

    pub async fn exec(&self, body: Value) -> Value {
        let (status, v) = self.json("POST", "/exec", body).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    pub async fn sh(&self, cmd: &str) -> Value {
        self.exec(serde_json::json!({ "cmd": cmd })).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_cgroup_tree(&self.cgroup);
    }
}

/// A kept-open HTTP/1.1 connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(sock: &Path) -> Client {
        let stream = UnixStream::connect(sock).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Client { sender }
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> hyper::Response<Incoming> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "agent")
            .body(Full::new(body))
            .unwrap();
        self.sender.ready().await.expect("ready");
        self.sender.send_request(req).await.expect("send")
    }
}

/// Reads a streamed body frame by frame, noting when each frame arrived.
pub async fn frames(resp: hyper::Response<Incoming>) -> Vec<(Duration, Bytes)> {
    let start = Instant::now();
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(f) = body.frame().await {
        if let Ok(data) = f.expect("frame").into_data() {
            out.push((start.elapsed(), data));
        }
    }
    out
}

/// A gzip'd tar built from `(path, contents)` pairs with the tar crate's checks.
pub fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, path, std::io::empty()).unwrap();
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_mtime(1_234_567_890);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, *data).unwrap();
        }
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// Appends an entry with a raw name and type, bypassing the tar crate's own path checks
/// (it refuses `..` and absolute paths, which is exactly what the tests need to send).
pub fn raw_entry<W: std::io::Write>(
    b: &mut tar::Builder<W>,
    name: &[u8],
    kind: tar::EntryType,
    data: &[u8],
    link: Option<&str>,
) {
    let mut h = tar::Header::new_gnu();
    let field = &mut h.as_gnu_mut().expect("gnu header").name;
    assert!(name.len() < field.len());
    field.fill(0);
    field[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    if let Some(l) = link {
        h.set_link_name(l).unwrap();
    }
    if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

pub fn gz_builder() -> tar::Builder<flate2::write::GzEncoder<Vec<u8>>> {
    tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ))
}

pub fn finish(b: tar::Builder<flate2::write::GzEncoder<Vec<u8>>>) -> Vec<u8> {
    b.into_inner().unwrap().finish().unwrap()
}

/// Every path under `dir`, relative, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

impl Agent {
    /// One request with extra headers on a fresh connection; the response unread.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> hyper::Response<Incoming> {
        let mut c = self.connect().await;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "agent");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).unwrap();
        c.sender.ready().await.expect("ready");
        c.sender.send_request(req).await.expect("send")
    }

    /// Like [`Agent::request`], returning the body parsed as JSON (`null` when empty).
    pub async fn call(&self, method: &str, path: &str, body: impl Into<Bytes>) -> (u16, Value) {
        let (status, bytes) = self.request(method, path, body).await;
        if bytes.is_empty() {
            return (status, Value::Null);
        }
        let v = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, v)
    }

    /// Starts a process; panics unless the agent answers 201. Returns its pid.
    pub async fn start_process(&self, body: Value) -> u64 {
        let (status, v) = self.json("POST", "/processes", body).await;
        assert_eq!(status, 201, "{v}");
        v["pid"].as_u64().unwrap()
    }
}

/// Reads NDJSON lines from a streamed body as they arrive.
pub struct Lines {
    body: Incoming,
    buf: Vec<u8>,
}

impl Lines {
    pub fn new(resp: hyper::Response<Incoming>) -> Lines {
        assert_eq!(resp.status(), 200, "streamed response status");
        Lines {
            body: resp.into_body(),
            buf: Vec::new(),
        }
    }

    /// The next line, or `None` at the end of the body.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                return Some(serde_json::from_slice(&line).expect("an NDJSON line"));
            }
            let frame = self.body.frame().await?.expect("body frame");
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }

    /// The next line within `limit`, panicking with `what` otherwise.
    pub async fn within(&mut self, limit: Duration, what: &str) -> Option<Value> {
        tokio::time::timeout(limit, self.next())
            .await
            .unwrap_or_else(|_| panic!("no line within {limit:?} while waiting for {what}"))
    }
}

/// Opens `path` on the agent as a WebSocket client (tokio-tungstenite's handshake).
pub async fn websocket(sock: &Path, path: &str) -> tokio_tungstenite::WebSocketStream<UnixStream> {
    let stream = UnixStream::connect(sock).await.expect("connect");
    let (ws, resp) = tokio_tungstenite::client_async(format!("ws://agent{path}"), stream)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough for size tests.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
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

/// Sends `PUT path` with a chunked body (no declared length), ignoring write errors (the
/// agent may answer early); returns the status the agent answered.
pub async fn put_chunked(sock: &Path, path: &str, chunks: &[Vec<u8>]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = UnixStream::connect(sock).await.expect("connect");
    let head = format!("PUT {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    let _ = s.write_all(head.as_bytes()).await;
    for c in chunks {
        let _ = s.write_all(format!("{:x}\r\n", c.len()).as_bytes()).await;
        let _ = s.write_all(c).await;
        let _ = s.write_all(b"\r\n").await;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut resp = vec![0u8; 12];
    s.read_exact(&mut resp).await.expect("a status line");
    let line = String::from_utf8_lossy(&resp);
    line[9..12]
        .parse()
        .unwrap_or_else(|_| panic!("status line {line:?}"))
}

/// Sends `PUT path` declaring `declared` bytes, sends `sent` of them, and hangs up.
pub async fn put_and_hang_up(sock: &Path, path: &str, declared: usize, sent: usize) {
    use tokio::io::AsyncWriteExt;
    let mut s = UnixStream::connect(sock).await.expect("connect");
    let head = format!("PUT {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {declared}\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b'h'; sent]).await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
}
