//! The mount plan. Boot happens in three phases: kernel filesystems on the base root,
//! the overlay stacked in a staging dir under a tmpfs `/run`, and the final layout
//! after `pivot_root`. The plans are plain data (tested on the host); `apply` and
//! `pivot` do the syscalls.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::say;

pub const STAGING: &str = "/run/hearth";
pub const UPPER_MNT: &str = "/run/hearth/ovl";
pub const NEW_ROOT: &str = "/run/hearth/root";
pub const WORKSPACE: &str = "/workspace";
pub const HOME: &str = "/home/user";
pub const USER_ID: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Mkdir {
        path: String,
        mode: u32,
    },
    Mount {
        source: String,
        target: String,
        fstype: String,
        flags: MsFlags,
        data: Option<String>,
        /// Boot fails if a required mount fails; others only log.
        required: bool,
    },
    Symlink {
        target: String,
        link: String,
    },
}

/// Where the overlay's upper and work dirs live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upper {
    /// The per-VM disk: writes survive a restart of the same VM.
    Disk,
    /// No usable disk: writes live in RAM and the VM still boots.
    Tmpfs,
}

fn mkdir(path: &str, mode: u32) -> Step {
    Step::Mkdir {
        path: path.into(),
        mode,
    }
}

fn mnt(source: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Step {
    Step::Mount {
        source: source.into(),
        target: target.into(),
        fstype: fstype.into(),
        flags,
        data: data.map(str::to_string),
        required: true,
    }
}

fn optional(step: Step) -> Step {
    match step {
        Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
            ..
        } => Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
            required: false,
        },
        other => other,
    }
}

fn kernel_fs_flags() -> MsFlags {
    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
}

/// On the read-only base root: what later phases need (`/dev/vdb`, a writable `/run`).
pub fn plan_early() -> Vec<Step> {
    vec![
        optional(mnt("proc", "/proc", "proc", kernel_fs_flags(), None)),
        optional(mnt("sysfs", "/sys", "sysfs", kernel_fs_flags(), None)),
        // CONFIG_DEVTMPFS_MOUNT usually did this already; stacking again is harmless.
        optional(mnt(
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        )),
        mnt(
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        mkdir(STAGING, 0o700),
        mkdir(UPPER_MNT, 0o755),
        mkdir(NEW_ROOT, 0o755),
    ]
}

/// Upper/work dirs on the mounted upper filesystem, then the overlay itself over the
/// `layers` template layers (see [`super::disks`]) and the whole base root.
pub fn plan_overlay(_upper: Upper, layers: usize) -> Vec<Step> {
    let upper = format!("{UPPER_MNT}/upper");
    let work = format!("{UPPER_MNT}/work");
    let lower = super::disks::lowerdir(layers);
    let data = format!("lowerdir={lower},upperdir={upper},workdir={work}");
    vec![
        mkdir(&upper, 0o755),
        mkdir(&work, 0o755),
        mnt(
            "overlay",
            NEW_ROOT,
            "overlay",
            MsFlags::MS_NOATIME,
            Some(&data),
        ),
    ]
}

/// Inside the overlay after `pivot_root`: the layout programs expect.
pub fn plan_final() -> Vec<Step> {
    let tmp_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    vec![
        mnt("proc", "/proc", "proc", kernel_fs_flags(), None),
        mnt("sysfs", "/sys", "sysfs", kernel_fs_flags(), None),
        mnt(
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        mkdir("/dev/pts", 0o755),
        mkdir("/dev/shm", 0o1777),
        mnt(
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ),
        mnt("tmpfs", "/dev/shm", "tmpfs", tmp_flags, Some("mode=1777")),
        mnt("tmpfs", "/tmp", "tmpfs", tmp_flags, Some("mode=1777")),
        mnt("tmpfs", "/run", "tmpfs", tmp_flags, Some("mode=0755")),
        // Required: the agent puts every user process in a cgroup of its own and will not
        // start without them.
        mnt(
            "cgroup2",
            "/sys/fs/cgroup",
            "cgroup2",
            kernel_fs_flags(),
            None,
        ),
        Step::Symlink {
            target: "/proc/self/fd".into(),
            link: "/dev/fd".into(),
        },
        Step::Symlink {
            target: "/proc/self/fd/0".into(),
            link: "/dev/stdin".into(),
        },
        Step::Symlink {
            target: "/proc/self/fd/1".into(),
            link: "/dev/stdout".into(),
        },
        Step::Symlink {
            target: "/proc/self/fd/2".into(),
            link: "/dev/stderr".into(),
        },
    ]
}

pub fn apply(steps: &[Step]) -> Result<(), String> {
    for step in steps {
        match step {
            Step::Mkdir { path, mode } => {
                std::fs::create_dir_all(path).map_err(|e| format!("mkdir {path}: {e}"))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| format!("chmod {path}: {e}"))?;
            }
            Step::Mount {
                source,
                target,
                fstype,
                flags,
                data,
                required,
            } => {
                let r = mount(
                    Some(source.as_str()),
                    target.as_str(),
                    Some(fstype.as_str()),
                    *flags,
                    data.as_deref(),
                );
                match r {
                    Ok(()) => {}
                    // Already there (the kernel automounts devtmpfs): nothing to do.
                    Err(nix::errno::Errno::EBUSY) if !required => {}
                    Err(e) if !required => {
                        say(&format!("warning: mount {fstype} on {target}: {e}"))
                    }
                    Err(e) => return Err(format!("mount {fstype} on {target} ({data:?}): {e}")),
                }
            }
            Step::Symlink { target, link } => match std::os::unix::fs::symlink(target, link) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    say(&format!("warning: symlink {link}: {e}"))
                }
                _ => {}
            },
        }
    }
    Ok(())
}

pub(crate) fn mkdir_mode(path: &str, mode: u32) -> Result<(), String> {
    apply(&[mkdir(path, mode)])
}

/// virtio probing normally finishes before init runs; the wait covers slow hosts.
pub(crate) fn wait_for_device(device: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !Path::new(device).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mounts the per-VM disk for the overlay's upper layer, falling back to RAM so a
/// missing or unformatted disk degrades the VM instead of killing it.
pub fn mount_upper(device: &str) -> Result<Upper, String> {
    wait_for_device(device);
    match mount(
        Some(device),
        UPPER_MNT,
        Some("ext4"),
        MsFlags::MS_NOATIME | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    ) {
        Ok(()) => {
            say(&format!("overlay upper on {device} (ext4)"));
            Ok(Upper::Disk)
        }
        Err(e) => {
            say(&format!(
                "warning: cannot mount {device} ({e}); overlay upper falls back to tmpfs, writes are not persistent"
            ));
            mount(
                Some("tmpfs"),
                UPPER_MNT,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("mode=0755"),
            )
            .map_err(|e| format!("tmpfs for overlay upper: {e}"))?;
            Ok(Upper::Tmpfs)
        }
    }
}

/// Makes `new_root` the root. `pivot_root(".", ".")` stacks the old root under the new
/// one at "/", so it can be detached without a put-old directory.
pub fn pivot(new_root: &str) -> Result<(), String> {
    // pivot_root refuses shared mounts; nothing here relies on propagation.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make / private: {e}"))?;
    nix::unistd::chdir(new_root).map_err(|e| format!("chdir {new_root}: {e}"))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

/// `/workspace` shows the user's home, so files written via either path are the same
/// and owned by uid 1000.
pub fn make_workspace() -> Result<(), String> {
    for dir in [HOME, WORKSPACE] {
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {dir}: {e}"))?;
    }
    let id = Some(nix::unistd::Uid::from_raw(USER_ID));
    let gid = Some(nix::unistd::Gid::from_raw(USER_ID));
    nix::unistd::chown(HOME, id, gid).map_err(|e| format!("chown {HOME}: {e}"))?;
    mount(
        Some(HOME),
        WORKSPACE,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind {HOME} on {WORKSPACE}: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(plan: &[Step]) -> Vec<&str> {
        plan.iter()
            .filter_map(|s| match s {
                Step::Mount { target, .. } => Some(target.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Every dir a step needs was made earlier in the same plan, or is one the base
    /// image or a kernel filesystem provides.
    fn assert_dirs_exist_before_use(plan: &[Step], provided: &[&str]) {
        let mut made: Vec<String> = provided.iter().map(|s| s.to_string()).collect();
        for step in plan {
            match step {
                Step::Mkdir { path, .. } => {
                    let parent = Path::new(path).parent().unwrap().to_str().unwrap();
                    assert!(
                        made.iter().any(|m| m == parent),
                        "{path}: parent {parent} not there yet"
                    );
                    made.push(path.clone());
                }
                Step::Mount { target, .. } => {
                    assert!(
                        made.iter().any(|m| m == target),
                        "mount on missing dir {target}"
                    );
                }
                Step::Symlink { .. } => {}
            }
        }
    }

    #[test]
    fn early_plan_prepares_staging_on_a_tmpfs_run() {
        let plan = plan_early();
        assert_dirs_exist_before_use(&plan, &["/", "/proc", "/sys", "/dev", "/run"]);
        let run = plan
            .iter()
            .position(|s| matches!(s, Step::Mount { target, .. } if target == "/run"))
            .unwrap();
        let staging = plan
            .iter()
            .position(|s| matches!(s, Step::Mkdir { path, .. } if path == STAGING))
            .unwrap();
        assert!(
            run < staging,
            "staging must live on the tmpfs, the base is read-only"
        );
    }

    #[test]
    fn overlay_uses_base_as_lower_and_disk_for_upper_and_work() {
        let plan = plan_overlay(Upper::Disk, 0);
        assert_dirs_exist_before_use(&plan, &[UPPER_MNT, NEW_ROOT]);
        let data = plan
            .iter()
            .find_map(|s| match s {
                Step::Mount {
                    fstype,
                    data,
                    required,
                    ..
                } if fstype == "overlay" => {
                    assert!(required);
                    data.clone()
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(
            data,
            "lowerdir=/,upperdir=/run/hearth/ovl/upper,workdir=/run/hearth/ovl/work"
        );
        assert_eq!(targets(&plan), [NEW_ROOT]);
        let layered = plan_overlay(Upper::Disk, 1);
        assert!(layered
            .iter()
            .any(|s| matches!(s, Step::Mount { data: Some(d), .. }
            if d.starts_with("lowerdir=/run/hearth/layers/0/upper:/,upperdir="))));
    }

    #[test]
    fn final_plan_gives_the_usual_layout() {
        let plan = plan_final();
        assert_dirs_exist_before_use(
            &plan,
            &["/proc", "/sys", "/dev", "/tmp", "/run", "/sys/fs/cgroup"],
        );
        let t = targets(&plan);
        for want in [
            "/proc",
            "/sys",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/tmp",
            "/run",
            "/sys/fs/cgroup",
        ] {
            assert!(t.contains(&want), "{want} not mounted");
        }
        let cgroup = plan.iter().find(|s| {
            matches!(s, Step::Mount { fstype, required, .. } if fstype == "cgroup2" && *required)
        });
        assert!(cgroup.is_some(), "cgroup2 must be mounted, and required");
        let dev = t.iter().position(|x| *x == "/dev").unwrap();
        let pts = t.iter().position(|x| *x == "/dev/pts").unwrap();
        assert!(dev < pts);
        for s in &plan {
            if let Step::Mount { target, data, .. } = s {
                if target == "/tmp" || target == "/dev/shm" {
                    assert_eq!(
                        data.as_deref(),
                        Some("mode=1777"),
                        "{target} must be world-writable+sticky"
                    );
                }
            }
        }
    }
}
