//! Listeners: vsock in the guest; Unix sockets and loopback TCP for tests on the host.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::{handle, AgentError, ClientGone, Result, State};

/// `vsock:PORT`, `unix:/path` or `tcp:127.0.0.1:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Vsock(u32),
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl FromStr for Listen {
    type Err = AgentError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| AgentError::Invalid(format!("--listen {s:?}: {why}"));
        match s.split_once(':') {
            Some(("vsock", port)) => Ok(Listen::Vsock(port.parse().map_err(|_| bad("bad port"))?)),
            Some(("unix", path)) if !path.is_empty() => Ok(Listen::Unix(path.into())),
            Some(("tcp", addr)) => {
                let addr: SocketAddr = addr.parse().map_err(|_| bad("bad address"))?;
                // The agent has no authentication: it must never be reachable from a network.
                if !addr.ip().is_loopback() {
                    return Err(bad("only loopback TCP addresses are allowed"));
                }
                Ok(Listen::Tcp(addr))
            }
            _ => Err(bad("expected vsock:PORT, unix:PATH or tcp:ADDR:PORT")),
        }
    }
}

/// A connection that reports when the client's side reaches EOF (see [`ClientGone`]).
struct Watched<S> {
    inner: S,
    gone: watch::Sender<bool>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let eof = matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() == before;
        if (eof && buf.remaining() > 0) || matches!(res, Poll::Ready(Err(_))) {
            self.gone.send_replace(true);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn serve_conn<S>(state: Arc<State>, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (gone, watch) = watch::channel(false);
    let io = Watched { inner: io, gone };
    tokio::spawn(async move {
        let svc = service_fn(move |mut req: hyper::Request<Incoming>| {
            let state = state.clone();
            req.extensions_mut().insert(ClientGone(watch.clone()));
            async move { Ok::<_, std::convert::Infallible>(handle(state, req).await) }
        });
        // Errors here are a client going away mid-request; nothing to report to anyone.
        // `with_upgrades`: `/processes/{pid}/attach` turns the connection into a WebSocket.
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades()
            .await;
    });
}

/// Receive buffer of every vsock connection (accepted sockets inherit the listener's).
/// The kernel's default, 256 KiB, is also the credit the host may send ahead of what the
/// agent has read; under TCG an upload then stalls whenever the guest falls behind.
pub const VSOCK_BUFFER: u64 = 4 << 20;

/// `SO_VM_SOCKETS_BUFFER_MAX_SIZE` then `SO_VM_SOCKETS_BUFFER_SIZE` (the size is clamped
/// to the maximum, so the maximum goes first).
fn set_vsock_buffer(sock: &impl std::os::fd::AsRawFd, bytes: u64) -> std::io::Result<()> {
    // From linux/vm_sockets.h; the libc crate does not carry them.
    const SO_VM_SOCKETS_BUFFER_SIZE: libc::c_int = 0;
    const SO_VM_SOCKETS_BUFFER_MAX_SIZE: libc::c_int = 2;
    for opt in [SO_VM_SOCKETS_BUFFER_MAX_SIZE, SO_VM_SOCKETS_BUFFER_SIZE] {
        // SAFETY: setsockopt reads `size_of::<u64>()` bytes from a live u64; the fd is
        // owned by `sock` for the duration of the call.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::AF_VSOCK,
                opt,
                (&bytes as *const u64).cast(),
                std::mem::size_of::<u64>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Only the host may talk to the agent over vsock. Without this check, user code in a
/// guest whose kernel has vsock loopback could connect to the agent itself (as the local
/// CID) and, say, open the firewall.
pub fn peer_allowed(cid: u32) -> bool {
    cid == tokio_vsock::VMADDR_CID_HOST
}

/// Binds every listener, prints `listening on <addr>` for each (tests wait for these
/// lines), then serves forever.
pub async fn serve(state: Arc<State>, listens: Vec<Listen>) -> std::io::Result<()> {
    let mut tasks = Vec::new();
    for l in listens {
        let state = state.clone();
        match l {
            Listen::Vsock(port) => {
                let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port);
                let lis = tokio_vsock::VsockListener::bind(addr)?;
                set_vsock_buffer(&lis, VSOCK_BUFFER)?;
                println!("listening on vsock:{port}");
                tasks.push(tokio::spawn(async move {
                    loop {
                        match lis.accept().await {
                            Ok((s, peer)) if peer_allowed(peer.cid()) => {
                                serve_conn(state.clone(), s)
                            }
                            Ok((_, peer)) => {
                                eprintln!("hearth-agent: refused vsock peer cid {}", peer.cid())
                            }
                            Err(_) => {}
                        }
                    }
                }));
            }
            Listen::Unix(path) => {
                let _ = std::fs::remove_file(&path);
                let lis = tokio::net::UnixListener::bind(&path)?;
                println!("listening on unix:{}", path.display());
                tasks.push(tokio::spawn(async move {
                    loop {
                        if let Ok((s, _)) = lis.accept().await {
                            serve_conn(state.clone(), s);
                        }
                    }
                }));
            }
            Listen::Tcp(addr) => {
                let lis = tokio::net::TcpListener::bind(addr).await?;
                println!("listening on tcp:{}", lis.local_addr()?);
                tasks.push(tokio::spawn(async move {
                    loop {
                        if let Ok((s, _)) = lis.accept().await {
                            let _ = s.set_nodelay(true);
                            serve_conn(state.clone(), s);
                        }
                    }
                }));
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_specs_parse() {
        assert_eq!("vsock:8080".parse::<Listen>().unwrap(), Listen::Vsock(8080));
        assert_eq!(
            "unix:/tmp/a.sock".parse::<Listen>().unwrap(),
            Listen::Unix("/tmp/a.sock".into())
        );
        assert!("tcp:127.0.0.1:0".parse::<Listen>().is_ok());
        assert!("tcp:[::1]:80".parse::<Listen>().is_ok());
        assert!(peer_allowed(2));
        for cid in [0, 1, 3, u32::MAX] {
            assert!(!peer_allowed(cid), "{cid}");
        }
        for bad in [
            "tcp:0.0.0.0:80",
            "tcp:10.0.0.1:80",
            "vsock:x",
            "unix:",
            "http:x",
            "8080",
        ] {
            assert!(bad.parse::<Listen>().is_err(), "{bad}");
        }
    }
}
