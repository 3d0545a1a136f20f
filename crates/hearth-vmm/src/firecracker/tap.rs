//! Handing a VM's TAP to the jail's uid/gid. A jailed Firecracker drops privileges
//! before it opens its TAP, and a TAP only lets its owner (or CAP_NET_ADMIN) attach.
//!
//! Why not `ip tuntap add ... user U`: on an existing TAP (the networking layer made it,
//! addressed and up) iproute2 asks for exclusive creation (`IFF_TUN_EXCL`) and gets
//! EBUSY. Attaching without that flag and setting the owner works on the existing one.
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::{Error, Result};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca; // _IOW('T', 202, int)
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc; // _IOW('T', 204, int)
const TUNSETGROUP: libc::c_ulong = 0x4004_54ce; // _IOW('T', 206, int)
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;

/// Sets owner and group of the persistent TAP `name`, inside network namespace `netns`
/// (a name under `/var/run/netns`) when given. Runs on a thread of its own, since
/// entering a namespace changes the calling thread.
pub fn set_owner(netns: Option<&str>, name: &str, uid: u32, gid: u32) -> Result<()> {
    let ns = netns.map(|n| Path::new("/var/run/netns").join(n));
    let name = name.to_string();
    std::thread::spawn(move || -> std::io::Result<()> {
        if let Some(ns) = ns {
            let f = File::open(&ns)?;
            // SAFETY: setns on an fd we own; it only changes this thread's namespace.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        // struct ifreq: the name (16 bytes, NUL-terminated), then the flags (short).
        let mut ifr = [0u8; 40];
        if name.len() >= 16 {
            return Err(std::io::Error::other("TAP name too long"));
        }
        ifr[..name.len()].copy_from_slice(name.as_bytes());
        ifr[16..18].copy_from_slice(&(IFF_TAP | IFF_NO_PI).to_ne_bytes());
        let fd = tun.as_raw_fd();
        // SAFETY: TUNSETIFF reads and writes the 40-byte ifreq buffer we pass; TUNSETOWNER
        // and TUNSETGROUP take integers.
        unsafe {
            if libc::ioctl(fd, TUNSETIFF as _, ifr.as_mut_ptr()) < 0
                || libc::ioctl(fd, TUNSETOWNER as _, uid as libc::c_ulong) < 0
                || libc::ioctl(fd, TUNSETGROUP as _, gid as libc::c_ulong) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    })
    .join()
    .map_err(|_| Error::Spawn("TAP owner thread panicked".into()))?
    .map_err(|e| Error::Spawn(format!("giving TAP to uid {uid}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn ip(args: &[&str]) {
        let ok = Command::new("ip").args(args).status().unwrap().success();
        assert!(ok, "ip {args:?}");
    }

    struct Netns(String);
    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    #[test]
    fn an_existing_addressed_tap_gets_the_jail_owner() {
        let ns = Netns(format!("hvmm-tap-{}", std::process::id()));
        ip(&["netns", "add", &ns.0]);
        ip(&["-n", &ns.0, "tuntap", "add", "dev", "tap0", "mode", "tap"]);
        ip(&["-n", &ns.0, "addr", "add", "172.31.252.1/30", "dev", "tap0"]);
        set_owner(Some(&ns.0), "tap0", 65534, 65533).unwrap();
        let read = |attr: &str| {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns.0, "cat"])
                .arg(format!("/sys/class/net/tap0/{attr}"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(read("owner"), "65534");
        assert_eq!(read("group"), "65533");
        let addr = Command::new("ip")
            .args(["-n", &ns.0, "addr", "show", "dev", "tap0"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&addr.stdout).contains("172.31.252.1/30"));
    }
}
