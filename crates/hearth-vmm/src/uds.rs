//! Connecting to Unix sockets whose path is longer than `sockaddr_un` holds (108 bytes
//! with the NUL). A jailed Firecracker's sockets live deep in its chroot
//! (`vms/<id>/jail/firecracker/<id>/root/fc.sock`), past that limit under any data dir.
use std::os::fd::AsRawFd;
use std::path::Path;

use tokio::net::UnixStream;

/// Longest path `connect(2)` takes directly (`sun_path` is 108 bytes with the NUL).
const MAX_DIRECT: usize = 107;

/// Connects to the socket at `path`; a longer path is reached through the directory's
/// file descriptor (`/proc/self/fd/N/name`), which the kernel resolves like the path.
pub async fn connect(path: &Path) -> std::io::Result<UnixStream> {
    if path.as_os_str().len() <= MAX_DIRECT {
        return UnixStream::connect(path).await;
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return UnixStream::connect(path).await;
    };
    let dir = std::fs::File::open(dir)?;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    let stream = UnixStream::connect(&short).await;
    drop(dir);
    stream
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sockets_past_the_sun_path_limit_are_reached() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let path = deep.join("s.sock");
        assert!(path.as_os_str().len() > MAX_DIRECT);
        // Bind through the same detour: the listener side has the same limit.
        let dir = std::fs::File::open(&deep).unwrap();
        let via = Path::new("/proc/self/fd")
            .join(dir.as_raw_fd().to_string())
            .join("s.sock");
        let listener = tokio::net::UnixListener::bind(&via).unwrap();
        assert!(
            UnixStream::connect(&path).await.is_err(),
            "too long directly"
        );
        let (client, server) = tokio::join!(connect(&path), listener.accept());
        client.unwrap();
        server.unwrap();
    }
}
