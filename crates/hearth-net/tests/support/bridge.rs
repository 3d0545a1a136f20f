//! Plays the VMM's part: opens the VM namespace's `tap0` the way QEMU/Firecracker do
//! (TUNSETIFF, IFF_TAP | IFF_NO_PI) and copies Ethernet frames to and from a TAP in the fake
//! guest's namespace, whose kernel stack then acts as the guest.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use super::servers::enter;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca; // _IOW('T', 202, int)
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Attaches to TAP `name` in the calling thread's namespace, creating it if absent.
fn open_tap(name: &str) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .expect("open /dev/net/tun");
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    assert!(name.len() < libc::IFNAMSIZ);
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `f` is an open tun fd and `req` is a properly sized, initialised ifreq that
    // outlives the call; TUNSETIFF only reads and writes within it.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    assert_eq!(
        rc,
        0,
        "TUNSETIFF {name}: {}",
        std::io::Error::last_os_error()
    );
    f
}

pub struct TapBridge {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TapBridge {
    /// Returns once both TAPs are attached (so the guest side can be configured).
    pub fn start(vm_ns: &str, vm_tap: &str, guest_ns: &str, guest_tap: &str) -> TapBridge {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let args = (vm_ns.to_string(), vm_tap.to_string(), guest_ns.to_string());
        let guest_tap = guest_tap.to_string();
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            enter(&args.0);
            let a = open_tap(&args.1);
            enter(&args.2);
            let b = open_tap(&guest_tap);
            tx.send(()).unwrap();
            pump(a, b, &st);
        });
        rx.recv().expect("bridge attached");
        TapBridge {
            stop,
            thread: Some(thread),
        }
    }
}

/// Non-blocking fds and a short poll timeout, so `Drop` can stop the thread: an fd left open
/// would keep its namespace alive after the test deleted its name.
fn pump(mut a: File, mut b: File, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [
            libc::pollfd {
                fd: a.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: b.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 50) };
        if n <= 0 {
            continue;
        }
        if fds[0].revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            return; // the VM's tap0 was deleted (teardown)
        }
        if fds[0].revents & libc::POLLIN != 0 {
            while let Ok(n @ 1..) = a.read(&mut buf) {
                let _ = b.write(&buf[..n]);
            }
        }
        if fds[1].revents & libc::POLLIN != 0 {
            while let Ok(n @ 1..) = b.read(&mut buf) {
                let _ = a.write(&buf[..n]);
            }
        }
    }
}

impl Drop for TapBridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
