//! Kernel command-line settings init acts on.

use hearth_proto::GuestNet;

/// `hearth.net=` if present and valid; a malformed value is reported, not fatal, so a
/// host bug costs the network rather than the whole VM.
pub fn guest_net(cmdline: &str) -> Result<Option<GuestNet>, String> {
    GuestNet::from_cmdline(cmdline).map_err(|e| e.to_string())
}

/// IPv4 netmask for a prefix length, e.g. 30 -> 255.255.255.252.
pub fn netmask(prefix: u8) -> std::net::Ipv4Addr {
    let bits = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    std::net::Ipv4Addr::from(bits)
}

pub fn resolv_conf(dns: std::net::Ipv4Addr) -> String {
    format!("nameserver {dns}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_net_from_a_real_cmdline() {
        let line = "console=ttyS0 reboot=k panic=-1 root=/dev/vda ro rootfstype=ext4 \
                    init=/sbin/init virtio_mmio.device=512@0xfeb00e00:12 \
                    hearth.net=172.30.0.2/30,172.30.0.1,172.30.0.1\n";
        let n = guest_net(line).unwrap().unwrap();
        assert_eq!(n.addr.to_string(), "172.30.0.2");
        assert_eq!(n.prefix, 30);
        assert_eq!(guest_net("console=ttyS0 ro").unwrap(), None);
        assert!(guest_net("hearth.net=garbage").is_err());
    }

    #[test]
    fn netmasks() {
        assert_eq!(netmask(30).to_string(), "255.255.255.252");
        assert_eq!(netmask(24).to_string(), "255.255.255.0");
        assert_eq!(netmask(32).to_string(), "255.255.255.255");
        assert_eq!(netmask(1).to_string(), "128.0.0.0");
    }

    #[test]
    fn resolv_conf_names_the_server() {
        assert_eq!(
            resolv_conf("10.0.0.1".parse().unwrap()),
            "nameserver 10.0.0.1\n"
        );
    }
}
