//! A real VM under QEMU (`-M microvm`, TCG here) attached the way production attaches it:
//! QEMU runs inside the VM's namespace and opens `tap0` with `-netdev tap`. The guest is the
//! project's kernel with a throw-away busybox root filesystem whose `/init` applies
//! `hearth.net=` and runs one shell script, printing results on the serial console.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hearth_net::NetAttachmentInfo;

/// `$HEARTH_TEST_KERNEL`, else the default image's kernel (scripts/test.sh builds it first).
pub fn kernel() -> PathBuf {
    if let Some(k) = std::env::var_os("HEARTH_TEST_KERNEL") {
        return k.into();
    }
    let data = std::env::var_os("HEARTH_DATA_DIR").map_or("/var/lib/hearth".into(), PathBuf::from);
    let k = data.join("images/default/vmlinux");
    assert!(
        k.exists(),
        "no guest kernel at {}: build the default image (scripts/test.sh does) or set HEARTH_TEST_KERNEL",
        k.display()
    );
    k
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
ip link set lo up
for w in $(cat /proc/cmdline); do case "$w" in hearth.net=*) NET="${w#hearth.net=}";; esac; done
if [ -n "$NET" ]; then
  IFS=, read -r CIDR GW DNS <<EOF
$NET
EOF
  ip addr add "$CIDR" dev eth0 && ip link set eth0 up && ip route add default via "$GW"
  echo "nameserver $DNS" > /etc/resolv.conf
fi
echo "IFACES $(ls /sys/class/net | tr '\n' ' ')"
# A NIC is an interface backed by a device (not lo or the kernel's sit0 pseudo-tunnel).
echo "NICS $(cd /sys/class/net && for i in *; do [ -e "$i/device" ] && echo -n "$i "; done)"
sh /test.sh 2>&1
echo HEARTH-DONE
reboot -f
"#;

/// Shell helpers the scenario scripts use: `probe NAME ADDR PORT` prints
/// `PROBE NAME <banner or nothing>`.
const HELPERS: &str = r#"probe() { echo "PROBE $1 $(nc -w 2 "$2" "$3" </dev/null 2>/dev/null | head -n1)"; }
"#;

pub struct Vm {
    child: Child,
    lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Vm {
    /// Boots with `script` as the guest's `/test.sh`; `net: None` means no NIC at all.
    pub fn boot(net: Option<&NetAttachmentInfo>, script: &str) -> Vm {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy(which("busybox"), root.join("bin/busybox")).unwrap();
        write_exec(&root.join("init"), INIT);
        write_exec(&root.join("test.sh"), &format!("{HELPERS}{script}"));
        let img = dir.path().join("root.ext4");
        let ok = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&root)
            .arg(&img)
            .arg("32M")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "mkfs.ext4");

        let mut cmdline =
            "console=ttyS0 reboot=t panic=-1 root=/dev/vda rw rootfstype=ext4 init=/init"
                .to_string();
        let mut cmd = match net {
            Some(n) => {
                cmdline += &format!(" {}", n.guest.to_cmdline());
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &n.netns, "qemu-system-x86_64"]);
                c
            }
            None => Command::new("qemu-system-x86_64"),
        };
        cmd.args([
            "-M",
            "microvm,acpi=off",
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
        ])
        .args(["-m", "256", "-smp", "1", "-nodefaults", "-no-user-config"])
        .args(["-nographic", "-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel())
        .args(["-append", &cmdline])
        .arg("-drive")
        .arg(format!("id=root,file={},format=raw,if=none", img.display()))
        .args(["-device", "virtio-blk-device,drive=root"]);
        if let Some(n) = net {
            cmd.args([
                "-netdev",
                &format!("tap,id=n0,ifname={},script=no,downscript=no", n.tap),
                "-device",
                &format!("virtio-net-device,netdev=n0,mac={}", n.mac),
            ]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-system-x86_64");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l.trim_end().to_string()).is_err() {
                    break;
                }
            }
        });
        Vm {
            child,
            lines,
            _dir: dir,
        }
    }

    /// Console lines up to and including the first one starting with `marker`.
    pub fn until(&self, marker: &str, timeout: Duration) -> Vec<String> {
        let end = Instant::now() + timeout;
        let mut seen = vec![];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let done = l.starts_with(marker);
                    seen.push(l);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!(
                    "no {marker:?} within {timeout:?}; console:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `PROBE name banner` lines as (name, banner); an empty banner means unreachable.
pub fn probes(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("PROBE "))
        .map(|r| {
            let (n, b) = r.split_once(' ').unwrap_or((r, ""));
            (n.to_string(), b.trim().to_string())
        })
        .collect()
}

fn write_exec(p: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(p, text).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn which(prog: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(prog))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{prog} not on PATH"))
}
