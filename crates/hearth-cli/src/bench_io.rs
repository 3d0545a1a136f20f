//! Raw-channel and bulk-transfer figures for `hearth bench exec|upload`: what the agent
//! adds on top of the vsock itself, and how fast a workspace upload streams.
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hearth_proto::{ArchiveFormat, ExecRequest};
use hearth_vmm::VmHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Guest port of the echo server; above 1023 so uid 1000 may bind it.
const ECHO_PORT: u32 = 9000;

/// A vsock echo server run as user code (python3 in the jail), detached from the exec
/// that starts it so it outlives the call.
const ECHO_SERVER: &str = r#"setsid python3 -c '
import socket
s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
s.bind((socket.VMADDR_CID_ANY, 9000))
s.listen(8)
while True:
    c, _ = s.accept()
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.close()
' >/dev/null 2>&1 &"#;

/// 64-byte echo round trips through the raw hybrid vsock: on one open connection, and
/// each on a new connection (as the agent client makes its calls).
pub async fn echo(vm: &VmHandle, n: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let started = vm
        .agent()
        .exec(&ExecRequest {
            cmd: ECHO_SERVER.into(),
            ..Default::default()
        })
        .await?;
    anyhow::ensure!(started.exit_code == 0, "echo server: {}", started.stderr);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match hearth_vmm::vsock::connect(&vm.vsock_path, ECHO_PORT).await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("the guest echo server never listened")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let msg = [0x5au8; 64];
    let mut buf = [0u8; 64];
    round_trip(&mut conn, &msg, &mut buf).await?; // warm-up
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        round_trip(&mut conn, &msg, &mut buf).await?;
        open.push(t.elapsed());
    }
    drop(conn);
    let mut fresh = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut c = hearth_vmm::vsock::connect(&vm.vsock_path, ECHO_PORT).await?;
        round_trip(&mut c, &msg, &mut buf).await?;
        fresh.push(t.elapsed());
    }
    Ok((open, fresh))
}

async fn round_trip<S>(conn: &mut S, msg: &[u8], buf: &mut [u8]) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    conn.write_all(msg).await?;
    conn.read_exact(buf).await?;
    anyhow::ensure!(buf == msg, "echo answered different bytes");
    Ok(())
}

/// One transfer of `mib` MiB of incompressible bytes into the workspace in `format`:
/// the archive size and how long the streamed upload (send, extract, answer) took.
pub async fn upload(
    vm: &VmHandle,
    mib: usize,
    format: ArchiveFormat,
) -> anyhow::Result<(usize, Duration)> {
    let archive =
        tokio::task::spawn_blocking(move || incompressible_archive(mib, format)).await??;
    let size = archive.len();
    let chunks: Vec<std::io::Result<Bytes>> = archive
        .chunks(1 << 20)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let agent = vm.agent();
    let t = Instant::now();
    let r = agent
        .upload_as("/workspace/bench", format, futures::stream::iter(chunks))
        .await?;
    let took = t.elapsed();
    anyhow::ensure!(r.files == 1, "upload extracted {r:?}");
    remove(vm, "/workspace/bench").await?;
    Ok((size, took))
}

/// The guest's own disk write speed, the ceiling of any upload: `dd` of `mib` MiB into
/// the workspace with an fsync at the end (dd's own timing, in MB/s as dd counts).
pub async fn dd(vm: &VmHandle, mib: usize) -> anyhow::Result<Duration> {
    let cmd = format!(
        "dd if=/dev/zero of=/workspace/dd.bin bs=1M count={mib} conv=fsync 2>&1; rm -f /workspace/dd.bin"
    );
    let r = vm
        .agent()
        .exec(&ExecRequest {
            cmd,
            timeout_ms: Some(600_000),
            ..Default::default()
        })
        .await?;
    anyhow::ensure!(r.exit_code == 0, "dd failed: {}{}", r.stdout, r.stderr);
    // "104857600 bytes (105 MB, 100 MiB) copied, 1.19207 s, 88.0 MB/s"
    let secs = r
        .stdout
        .lines()
        .find_map(|l| {
            l.rsplit(", ")
                .nth(1)?
                .strip_suffix(" s")?
                .parse::<f64>()
                .ok()
        })
        .with_context(|| format!("no time in dd's output: {}", r.stdout))?;
    Ok(Duration::from_secs_f64(secs))
}

async fn remove(vm: &VmHandle, path: &str) -> anyhow::Result<()> {
    let r = vm
        .agent()
        .exec(&ExecRequest {
            cmd: "rm".into(),
            args: Some(vec!["-rf".into(), path.into()]),
            ..Default::default()
        })
        .await?;
    anyhow::ensure!(r.exit_code == 0, "rm {path}: {}", r.stderr);
    Ok(())
}

/// Random-looking data (xorshift) so gzip cannot shrink it: the figure is then about
/// moving bytes, not about compression ratio.
fn incompressible_archive(mib: usize, format: ArchiveFormat) -> std::io::Result<Vec<u8>> {
    let mut data = vec![0u8; mib << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    match format {
        ArchiveFormat::Tar => {
            let mut tar = tar::Builder::new(Vec::with_capacity(data.len() + 4096));
            tar.append_data(&mut h, "blob.bin", &data[..])?;
            tar.into_inner()
        }
        ArchiveFormat::TarGz => {
            let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let mut tar = tar::Builder::new(gz);
            tar.append_data(&mut h, "blob.bin", &data[..])?;
            tar.into_inner()?.finish()
        }
    }
}
