//! Host side of Firecracker's hybrid vsock: connect to the Unix socket, send
//! `CONNECT <port>\n`, expect `OK <n>\n`, then the stream is the guest connection.
//! QEMU VMs speak the same protocol through `vhost-device-vsock`.
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::{Error, Result};

/// Longest acknowledgement we accept: `OK ` plus a u32 port and the newline fit easily.
const MAX_ACK: usize = 32;

/// Opens a stream to the guest's vsock `port` through the hybrid socket at `path`.
///
/// Once `CONNECT` is sent, the stream is never closed before the VMM's answer arrives,
/// even if this future is dropped (a caller's timeout): `vhost-device-vsock` 0.3 panics
/// if it cannot write its `OK` to a host socket that is already closed, and the panic
/// takes the device thread with it, leaving the VM without vsock for good. (Seen here
/// when a busy guest answered after the client had given up.) The wait for the answer
/// therefore runs in a task of its own that outlives the caller; it ends with the answer
/// or with the VMM's side of the socket.
pub async fn connect(path: &Path, port: u32) -> Result<UnixStream> {
    let mut stream = crate::uds::connect(path)
        .await
        .map_err(|e| Error::Handshake(format!("connect {}: {e}", path.display())))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let result = handshake(&mut stream, port).await.map(|()| stream);
        // A caller that gave up dropped `rx`: the stream is closed here, after the answer.
        let _ = tx.send(result);
    });
    rx.await
        .map_err(|_| Error::Handshake("the handshake task ended without an answer".into()))?
}

async fn handshake(stream: &mut UnixStream, port: u32) -> Result<()> {
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|e| Error::Handshake(format!("send CONNECT: {e}")))?;
    // One byte at a time: whatever follows the newline is already the guest's data and
    // must stay in the socket for the caller.
    let mut line = Vec::with_capacity(MAX_ACK);
    loop {
        let mut b = [0u8; 1];
        let n = stream
            .read(&mut b)
            .await
            .map_err(|e| Error::Handshake(format!("read ack: {e}")))?;
        if n == 0 {
            return Err(Error::Handshake(format!(
                "closed before acknowledging port {port} (guest not listening yet?), got {:?}",
                String::from_utf8_lossy(&line)
            )));
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > MAX_ACK {
            return Err(Error::Handshake(format!(
                "acknowledgement too long: {:?}",
                String::from_utf8_lossy(&line)
            )));
        }
    }
    parse_ack(&line).map(drop)
}

/// `OK <n>` → the host-side port number.
fn parse_ack(line: &[u8]) -> Result<u32> {
    let text = std::str::from_utf8(line).map_err(|_| Error::Handshake("non-UTF-8 ack".into()))?;
    text.strip_prefix("OK ")
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| Error::Handshake(format!("unexpected reply {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::UnixListener;

    #[test]
    fn acks_are_parsed_strictly() {
        assert_eq!(parse_ack(b"OK 1073741824").unwrap(), 1073741824);
        for bad in [&b"KO 1"[..], b"OK", b"OK x", b"", b"ok 5"] {
            assert!(parse_ack(bad).is_err(), "{bad:?}");
        }
    }

    /// A stand-in for the VMM's socket: checks what the client sends and that bytes after
    /// the ack reach the caller (nothing over-read).
    #[tokio::test]
    async fn handshake_leaves_guest_bytes_in_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 13];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"CONNECT 8080\n");
            s.write_all(b"OK 1234\nhello").await.unwrap();
            let (mut s2, _) = listener.accept().await.unwrap();
            s2.read_exact(&mut buf).await.unwrap();
            s2.write_all(b"NOPE\n").await.unwrap();
        });
        let mut s = connect(&path, 8080).await.unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        let err = connect(&path, 8080).await.unwrap_err().to_string();
        assert!(err.contains("NOPE"), "{err}");
        server.await.unwrap();
        assert!(connect(&dir.path().join("absent"), 8080).await.is_err());
    }

    /// A caller that gives up while the guest is slow to answer must not close the
    /// socket under the VMM (vhost-device-vsock 0.3 panics writing its `OK` to it).
    #[tokio::test]
    async fn a_caller_giving_up_leaves_the_socket_open_until_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let vmm = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 13];
            s.read_exact(&mut buf).await.unwrap();
            // The guest answers after the caller's deadline.
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.write_all(b"OK 7\n")
                .await
                .expect("the socket is still open");
            // ...and only then is it closed.
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
        });
        let gave_up = tokio::time::timeout(Duration::from_millis(50), connect(&path, 8080)).await;
        assert!(gave_up.is_err(), "the answer came too early");
        tokio::time::timeout(Duration::from_secs(10), vmm)
            .await
            .expect("the stream was closed after the answer")
            .unwrap();
    }
}
