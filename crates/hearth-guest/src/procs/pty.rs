//! Pseudo-terminals from the jail's own devpts instance.
//!
//! The master is opened through the jail's `/dev/pts/ptmx` (not the agent's), so the
//! slave lives in the devpts the jailed process sees: `tty` prints `/dev/pts/N` and a
//! program re-opening its terminal by name finds it. The slave is obtained with
//! `TIOCGPTPEER` (no path lookup) and given to uid 1000, as `grantpt` would.

use std::os::fd::OwnedFd;
use std::path::Path;

use hearth_proto::PtySize;
use rustix::fs::{Gid, Mode, OFlags, Uid};
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use tokio::io::unix::AsyncFd;

/// The terminal's end-of-file character (`^D`), sent for `stdin?eof=true`.
pub const VEOF: u8 = 0x04;

/// The master side, owned by the agent.
#[derive(Debug)]
pub struct Pty {
    master: AsyncFd<OwnedFd>,
}

/// Opens a pty of `size` in the jail at `jail_root`; returns the master and the slave.
pub fn open(
    jail_root: &Path,
    size: PtySize,
    uid: u32,
    gid: u32,
) -> std::io::Result<(Pty, OwnedFd)> {
    let ptmx = jail_root.join("dev/pts/ptmx");
    let flags = OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let master = rustix::fs::open(&ptmx, flags, Mode::empty())
        .map_err(|e| std::io::Error::new(e.kind(), format!("opening {}: {e}", ptmx.display())))?;
    rustix::pty::unlockpt(&master)?;
    let peer = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, peer)?;
    rustix::fs::fchown(&slave, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    let pty = Pty {
        master: async_fd(master)?,
    };
    pty.resize(size)?;
    Ok((pty, slave))
}

/// Registers `fd` (non-blocking) with the tokio reactor.
pub fn async_fd(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is an open descriptor that stays the same and open until the
    // `AsyncFd` (which owns it) is dropped.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

impl Pty {
    /// Sets the window size; the kernel sends SIGWINCH to the foreground process group.
    pub fn resize(&self, size: PtySize) -> std::io::Result<()> {
        let ws = Winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(self.master.get_ref(), ws)?;
        Ok(())
    }

    /// Reads what the terminal printed; 0 once every slave fd is closed (the kernel
    /// answers EIO then).
    pub async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut ready = self.master.readable().await?;
            match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut *buf)?)) {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Types `data` into the terminal.
    pub async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut ready = self.master.writable().await?;
            match ready.try_io(|fd| Ok(rustix::io::write(fd.get_ref(), data)?)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}
