//! Console logging. The kernel normally hands PID 1 the console as stdin/stdout/stderr;
//! everything goes to stderr with a `hearth-init:` prefix so it stands out among kernel
//! and agent lines.

use std::io::Write;
use std::os::fd::{AsRawFd, IntoRawFd};

pub fn say(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "hearth-init: {msg}");
}

/// If the kernel could not open `/dev/console` for us (no node on the root fs), open it
/// now that devtmpfs is mounted, so our log and the agent's output reach the console.
pub fn ensure_console() {
    let stderr_ok =
        nix::fcntl::fcntl(std::io::stderr().as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).is_ok();
    if stderr_ok {
        return;
    }
    let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    let fd = console.into_raw_fd();
    for target in 0..3 {
        if fd != target {
            let _ = nix::unistd::dup2(fd, target);
        }
    }
    if fd > 2 {
        let _ = nix::unistd::close(fd);
    }
}
