//! Interface setup with the classic ioctls: `lo` up always, `eth0` address, default
//! route and resolver only when the host passed `hearth.net=`. No netlink library and
//! no shelling out keeps PID 1 small and independent of the rootfs.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::cmdline;
use super::say;

pub const GUEST_IF: &str = "eth0";

pub fn setup(cmdline_text: &str) {
    match if_up("lo") {
        Ok(()) => say("lo up"),
        Err(e) => say(&format!("warning: lo up: {e}")),
    }
    let net = match cmdline::guest_net(cmdline_text) {
        Ok(Some(n)) => n,
        Ok(None) => {
            say("no hearth.net= on the kernel command line: no network");
            return;
        }
        Err(e) => {
            say(&format!("warning: bad hearth.net= ({e}): no network"));
            return;
        }
    };
    // virtio-net is probed before init; a short wait covers slow hosts.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !std::path::Path::new("/sys/class/net")
        .join(GUEST_IF)
        .exists()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = set_addr(GUEST_IF, net.addr, cmdline::netmask(net.prefix))
        .and_then(|()| if_up(GUEST_IF))
        .and_then(|()| add_default_route(net.gateway));
    match r {
        Ok(()) => say(&format!(
            "{GUEST_IF} {}/{} via {}",
            net.addr, net.prefix, net.gateway
        )),
        Err(e) => say(&format!("warning: configuring {GUEST_IF}: {e}")),
    }
    if let Err(e) = std::fs::write("/etc/resolv.conf", cmdline::resolv_conf(net.dns)) {
        say(&format!("warning: /etc/resolv.conf: {e}"));
    }
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and the kernel
    // reads this as sockaddr_in because sin_family is AF_INET.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl<T>(fd: &OwnedFd, req: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: every caller passes the struct type the kernel expects for `req`
    // (ifreq for SIOC*IF*, rtentry for SIOCADDRT), valid for the call's duration.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg as *mut T) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn if_up(name: &str) -> io::Result<()> {
    let fd = socket()?;
    let mut req = ifreq(name)?;
    ioctl(&fd, libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl(&fd, libc::SIOCSIFFLAGS, &mut req)
}

fn set_addr(name: &str, addr: Ipv4Addr, mask: Ipv4Addr) -> io::Result<()> {
    let fd = socket()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr(addr);
    ioctl(&fd, libc::SIOCSIFADDR, &mut req)?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_netmask = sockaddr(mask);
    ioctl(&fd, libc::SIOCSIFNETMASK, &mut req)
}

/// `struct rtentry` from <linux/route.h>; glibc's libc crate bindings lack it.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn add_default_route(gateway: Ipv4Addr) -> io::Result<()> {
    let fd = socket()?;
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr(gateway),
        rt_genmask: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: std::ptr::null_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    ioctl(&fd, libc::SIOCADDRT, &mut rt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtentry_matches_the_kernel_layout() {
        // x86_64 <linux/route.h>: 120 bytes, flags right after three sockaddrs.
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_flags), 56);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_dev), 88);
    }

    #[test]
    fn sockaddr_carries_the_address_in_network_order() {
        let sa = sockaddr("172.30.0.2".parse().unwrap());
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        assert_eq!(&sa.sa_data[2..6], &[172u8 as libc::c_char, 30, 0, 2]);
    }

    #[test]
    fn reading_loopback_flags_works_on_the_host() {
        let fd = socket().unwrap();
        let mut req = ifreq("lo").unwrap();
        ioctl(&fd, libc::SIOCGIFFLAGS, &mut req).unwrap();
        // SAFETY: SIOCGIFFLAGS filled the flags member.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        assert_ne!(flags as libc::c_int & libc::IFF_LOOPBACK, 0);
        assert!(ifreq("a-name-longer-than-ifnamsiz").is_err());
    }
}
