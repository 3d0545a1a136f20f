//! The whole stack: the default image booted by `hearth-vmm` (QEMU/TCG here, inside the VM
//! namespace), its init applying `hearth.net=`, commands run through the guest agent's
//! `/exec`, and the agent's in-guest rules fed from `Network::guest_allow`. Needs the default
//! image (scripts/test.sh builds it). `--nocapture` shows the figures.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hearth_net::{NetAttachmentInfo, NetRequest};
use hearth_proto::{ExecRequest, FirewallRequest};
use hearth_vmm::{NetAttachment, VmHandle, VmSpec};
use support::*;

fn image() -> (PathBuf, PathBuf) {
    let data = std::env::var_os("HEARTH_DATA_DIR").map_or("/var/lib/hearth".into(), PathBuf::from);
    let dir = data.join("images/default");
    let (k, r) = (dir.join("vmlinux"), dir.join("rootfs.ext4"));
    assert!(
        k.exists() && r.exists(),
        "no default image in {}: build it first (scripts/test.sh does)",
        dir.display()
    );
    (k, r)
}

/// Boots and waits for the agent; returns the handle and the boot time.
async fn boot(
    id: &str,
    state: &std::path::Path,
    net: Option<&NetAttachmentInfo>,
) -> (VmHandle, Duration) {
    let (kernel, rootfs) = image();
    let mut spec = VmSpec::new(id, kernel, rootfs, state.join(id));
    spec.memory_mib = 256;
    spec.net = net.map(|n| NetAttachment {
        tap: n.tap.clone(),
        netns: Some(n.netns.clone()),
        mac: n.mac.clone(),
        guest: n.guest,
    });
    let vmm = hearth_vmm::select_from_env().expect("a VMM backend");
    let t = Instant::now();
    let h = vmm.start(&spec).await.expect("VM starts");
    if let Err(e) = h.wait_agent(Duration::from_secs(240)).await {
        panic!("agent not ready: {e}\n{}", h.console_tail(4000));
    }
    (h, t.elapsed())
}

/// `sh -c script` in the guest; returns stdout (stderr is appended on failure for context).
async fn sh(h: &VmHandle, script: &str) -> String {
    // A buffered exec waits for its own timeout_ms (denied probes and the throughput run
    // are slow under TCG).
    let r = h
        .agent()
        .exec(&ExecRequest {
            cmd: script.into(),
            timeout_ms: Some(120_000),
            ..Default::default()
        })
        .await
        .expect("exec");
    format!(
        "{}{}",
        r.stdout,
        if r.exit_code != 0 {
            r.stderr
        } else {
            String::new()
        }
    )
}

/// Interfaces other than loopback and the kernel's `sit0` pseudo-tunnel, one a line (the
/// agent's jail has no /sys, so /proc/net/dev it is).
const NICS: &str =
    "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | grep -vx -e lo -e sit0; true";

/// The banner of `addr:port` as seen from the guest, or "" when unreachable.
async fn probe(h: &VmHandle, addr: impl std::fmt::Display, port: u16) -> String {
    let out = sh(
        h,
        &format!("busybox nc -w 3 {addr} {port} </dev/null 2>/dev/null | head -n1"),
    )
    .await;
    out.trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_vm_without_network_has_only_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let (h, boot) = boot("nonet", dir.path(), None).await;
    let nics = sh(&h, NICS).await;
    let routes = sh(&h, "cat /proc/net/route").await;
    h.destroy().await.unwrap();
    eprintln!("FIGURES agent_boot_no_net_ms={}", boot.as_millis());
    assert_eq!(nics.trim(), "", "no NIC at all");
    assert_eq!(routes.lines().count(), 1, "no IPv4 routes: {routes}");
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_vm_egress_allowlist_update_and_throughput() {
    let mut w = World::new();
    let _host_srv = Servers::start(&w.host, &[]);
    let peer = w.guest(
        "peer",
        &NetRequest {
            outbound: true,
            allow: vec![],
        },
    );
    let _peer_srv = Servers::start(&peer.ns, &[]);
    let subnet = w.net.config().pool.allocate(&[peer.subnet]).unwrap();
    let req = NetRequest {
        outbound: true,
        allow: vec!["203.0.113.10:80".into(), "203.0.113.20:7000".into()],
    };
    let t = Instant::now();
    let info = w.net.setup("agentvm", subnet, &req).unwrap();
    let setup = t.elapsed();
    let dir = tempfile::tempdir().unwrap();
    let (h, boot) = boot("agentvm", dir.path(), Some(&info)).await;
    // Host rules first (done by setup), then the agent's in-guest rules.
    let fw = FirewallRequest {
        outbound: true,
        allow: w.net.guest_allow(&info.allow),
    };
    h.agent().firewall(&fw).await.expect("in-guest rules");

    let nics = sh(&h, NICS).await;
    assert_eq!(nics.trim(), "eth0");
    assert!(probe(&h, WEB, 80)
        .await
        .starts_with(&format!("{WEB}:80 {HOST_WAN}:")));
    for (a, p, what) in [
        (WEB, 443, "unlisted port"),
        (OTHER, 80, "unlisted address"),
        (METADATA, 80, "metadata"),
        (HOST_WAN, 7000, "the host"),
        (subnet.uplink_addr(), 7000, "the host's end of the link"),
        (peer.info.guest.addr, 7000, "another VM"),
    ] {
        assert_eq!(
            probe(&h, a, p).await,
            "",
            "{what} ({a}:{p}) must be unreachable"
        );
    }

    // TCP throughput VM -> fake internet, measured by the receiving server. The sender reads
    // the server's banner first: closing with unread data would reset, not finish, the stream.
    let mib = 32u64;
    sh(
        &h,
        &format!(
            "python3 -c 'import socket; s = socket.create_connection((\"{OTHER}\", 7000)); \
             s.recv(128); b = bytes(1 << 16); [s.sendall(b) for _ in range({})]; s.close()'",
            mib * 16
        ),
    )
    .await;
    let transfers = w
        .servers
        .as_ref()
        .unwrap()
        .transfers
        .lock()
        .unwrap()
        .clone();
    let (bytes, secs) = *transfers
        .iter()
        .find(|(b, _)| *b == mib << 20)
        .unwrap_or_else(|| panic!("{mib} MiB should have arrived: {transfers:?}"));

    // Open the VM up while it runs: host first, then the guest.
    let open = NetRequest {
        outbound: true,
        allow: vec![],
    };
    let dests = w.net.update_allowlist("agentvm", subnet, &open).unwrap();
    let fw = FirewallRequest {
        outbound: true,
        allow: w.net.guest_allow(&dests),
    };
    h.agent().firewall(&fw).await.unwrap();
    assert!(
        probe(&h, OTHER, 80)
            .await
            .starts_with(&format!("{OTHER}:80")),
        "now open"
    );
    assert_eq!(
        probe(&h, METADATA, 80).await,
        "",
        "still never the metadata address"
    );

    h.destroy().await.unwrap();
    let t = Instant::now();
    w.net.teardown("agentvm").unwrap();
    let teardown = t.elapsed();
    assert_eq!(w.net.list_owned().unwrap(), ["peer"]);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!("FIGURES host load average while measuring: {load}");
    eprintln!(
        "FIGURES net_setup_ms={} net_teardown_ms={} agent_boot_with_net_ms={} tcp_vm_to_internet_MiBps={:.1}",
        setup.as_millis(),
        teardown.as_millis(),
        boot.as_millis(),
        bytes as f64 / 1048576.0 / secs.max(1e-6)
    );
}
