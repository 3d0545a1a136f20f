//! The guest kernel: Debian's `linux-source-6.1` configured from `make tinyconfig` plus
//! our fragment, everything built in. Cached under `$HEARTH_CACHE_DIR/kernel/<key>/`
//! where the key covers the fragment, the source package version and this recipe.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{self, Progress};
use crate::{Error, Result};

/// The config fragment, compiled in so the key and the build cannot disagree.
pub const FRAGMENT: &str = include_str!("../kernel/hearth.config");

/// Bump when the steps below change in a way that changes the output.
const RECIPE: &str = "kernel-recipe-1: tinyconfig; merge_config.sh -m; olddefconfig; make vmlinux";

const SOURCE_PACKAGE: &str = "linux-source-6.1";

#[derive(Debug, Clone)]
pub struct Kernel {
    pub vmlinux: PathBuf,
    pub release: String,
    pub key: String,
}

fn source_tarball() -> PathBuf {
    std::env::var_os("HEARTH_LINUX_SOURCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/usr/src/{SOURCE_PACKAGE}.tar.xz")))
}

/// The package version when the tarball is Debian's; otherwise a hash of the tarball
/// itself, so a hand-supplied source still gets a correct key.
fn source_version(tarball: &Path) -> Result<String> {
    if std::env::var_os("HEARTH_LINUX_SOURCE").is_none() {
        if let Ok(v) =
            util::run(Command::new("dpkg-query").args(["-W", "-f=${Version}", SOURCE_PACKAGE]))
        {
            if !v.trim().is_empty() {
                return Ok(format!("{SOURCE_PACKAGE} {}", v.trim()));
            }
        }
    }
    Ok(format!("sha256 {}", util::sha256_file(tarball)?))
}

pub fn cache_key(source_version: &str) -> String {
    util::key_of(&[
        ("recipe", RECIPE.as_bytes()),
        ("source", source_version.as_bytes()),
        ("fragment", FRAGMENT.as_bytes()),
    ])
}

/// The `CONFIG_X=y` lines the fragment demands.
pub fn required_options(fragment: &str) -> Vec<&str> {
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_") && l.ends_with("=y"))
        .collect()
}

/// The `CONFIG_X` names of the fragment's `# CONFIG_X is not set` lines: options left
/// out on purpose (attack surface nothing needs).
pub fn excluded_options(fragment: &str) -> Vec<&str> {
    fragment
        .lines()
        .filter_map(|l| l.trim().strip_prefix("# "))
        .filter_map(|l| l.strip_suffix(" is not set"))
        .filter(|name| name.starts_with("CONFIG_"))
        .collect()
}

/// Options from the fragment that Kconfig dropped (unmet dependency, renamed symbol),
/// and options the fragment leaves out that another option selected back in.
pub fn missing_options(fragment: &str, config: &str) -> Vec<String> {
    let have: std::collections::HashSet<&str> = config.lines().map(str::trim).collect();
    let dropped = required_options(fragment)
        .into_iter()
        .filter(|want| !have.contains(want))
        .map(|want| want.trim_end_matches("=y").to_string());
    let selected = excluded_options(fragment)
        .into_iter()
        .filter(|name| {
            have.contains(format!("{name}=y").as_str())
                || have.contains(format!("{name}=m").as_str())
        })
        .map(|name| format!("{name} (must stay unset)"));
    dropped.chain(selected).collect()
}

/// Returns the cached kernel for the current inputs, building it if needed.
pub fn ensure(progress: &Progress) -> Result<Kernel> {
    let tarball = source_tarball();
    if !tarball.exists() {
        return Err(Error::Other(format!(
            "kernel source {} not found; run scripts/deps.sh (installs {SOURCE_PACKAGE})",
            tarball.display()
        )));
    }
    let key = cache_key(&source_version(&tarball)?);
    let root = util::cache_dir_for("kernel");
    let done = root.join(&key);
    if done.join("vmlinux").exists() {
        progress.say(format!("kernel: cached ({})", &key[..12]));
        return read_done(&done, key);
    }
    progress.step("kernel: build (make vmlinux, several minutes)", || {
        build(&tarball, &root, &key, progress)
    })?;
    read_done(&done, key)
}

fn read_done(done: &Path, key: String) -> Result<Kernel> {
    let release_path = done.join("release");
    let release = std::fs::read_to_string(&release_path)
        .map_err(|e| Error::io(&release_path, e))?
        .trim()
        .to_string();
    Ok(Kernel {
        vmlinux: done.join("vmlinux"),
        release,
        key,
    })
}

/// Builds in `<key>.build/` (kept on failure so a retry is incremental), publishes
/// `vmlinux`, `config` and `release` into `<key>/`, then drops the object tree.
fn build(tarball: &Path, root: &Path, key: &str, progress: &Progress) -> Result<()> {
    let work = root.join(format!("{key}.build"));
    util::mkdirs(&work)?;
    let src = work.join(SOURCE_PACKAGE);
    let unpacked = work.join(".unpacked");
    if !unpacked.exists() {
        progress.say("kernel: unpacking source");
        util::remove_dir_all_if_exists(&src)?;
        util::run(
            Command::new("tar")
                .arg("-xf")
                .arg(tarball)
                .arg("-C")
                .arg(&work),
        )?;
        std::fs::write(&unpacked, b"").map_err(|e| Error::io(&unpacked, e))?;
    }
    // Configure once per build dir: re-running tinyconfig would touch .config and make
    // an interrupted build start over.
    let configured = work.join(".configured");
    if !configured.exists() {
        progress.say("kernel: configuring (tinyconfig + fragment)");
        let fragment = work.join("hearth.config");
        std::fs::write(&fragment, FRAGMENT).map_err(|e| Error::io(&fragment, e))?;
        util::run(Command::new("make").current_dir(&src).arg("tinyconfig"))?;
        util::run(
            Command::new("scripts/kconfig/merge_config.sh")
                .current_dir(&src)
                .args(["-m", ".config"])
                .arg(&fragment),
        )?;
        util::run(Command::new("make").current_dir(&src).arg("olddefconfig"))?;
        std::fs::write(&configured, b"").map_err(|e| Error::io(&configured, e))?;
    }
    let config_path = src.join(".config");
    let config = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let missing = missing_options(FRAGMENT, &config);
    if !missing.is_empty() {
        // A new configure pass is pointless until the fragment changes (new key).
        return Err(Error::KernelConfig(missing));
    }
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    progress.say(format!(
        "kernel: make -j{jobs} vmlinux (log: {}/build.log)",
        work.display()
    ));
    util::run_logged(
        Command::new("make")
            .current_dir(&src)
            .arg(format!("-j{jobs}"))
            .arg("vmlinux"),
        &work.join("build.log"),
    )?;
    let release = util::run(
        Command::new("make")
            .current_dir(&src)
            .args(["-s", "kernelrelease"]),
    )?;

    let done = root.join(key);
    let tmp = util::scratch_for(&done)?;
    for (from, to) in [("vmlinux", "vmlinux"), (".config", "config")] {
        std::fs::copy(src.join(from), tmp.join(to)).map_err(|e| Error::io(src.join(from), e))?;
    }
    std::fs::write(tmp.join("release"), release.trim()).map_err(|e| Error::io(&tmp, e))?;
    util::publish_dir(&tmp, &done)?;
    util::remove_dir_all_if_exists(&work)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_asks_for_what_the_guest_needs() {
        let req = required_options(FRAGMENT);
        for must in [
            "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y",
            "CONFIG_VIRTIO_BLK=y",
            "CONFIG_VIRTIO_VSOCKETS=y",
            "CONFIG_OVERLAY_FS=y",
            "CONFIG_EXT4_FS=y",
            "CONFIG_DEVTMPFS=y",
            "CONFIG_SERIAL_8250_CONSOLE=y",
            "CONFIG_NF_TABLES_INET=y",
            "CONFIG_MEMBARRIER=y",
            "CONFIG_PVH=y",
            "CONFIG_MEMCG=y",
            "CONFIG_CGROUP_PIDS=y",
            "CONFIG_SECCOMP_FILTER=y",
        ] {
            assert!(req.contains(&must), "{must}");
        }
        let out = excluded_options(FRAGMENT);
        for never in [
            "CONFIG_USER_NS",
            "CONFIG_BPF_SYSCALL",
            "CONFIG_MODULES",
            "CONFIG_KEXEC",
            "CONFIG_KEYS",
            "CONFIG_USERFAULTFD",
            "CONFIG_IO_URING",
            "CONFIG_X86_X32_ABI",
            "CONFIG_IA32_EMULATION",
        ] {
            assert!(out.contains(&never), "{never}");
        }
        for name in &out {
            assert!(
                !req.iter().any(|r| r.trim_end_matches("=y") == *name),
                "{name} both required and excluded"
            );
        }
        assert!(
            !FRAGMENT.lines().any(|l| l.trim().ends_with("=m")),
            "no modules"
        );
    }

    #[test]
    fn dropped_options_are_named() {
        let frag = "# c\nCONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n";
        let config = "CONFIG_A=y\n# CONFIG_B is not set\n";
        assert_eq!(missing_options(frag, config), vec!["CONFIG_B"]);
        assert!(missing_options(frag, "CONFIG_A=y\nCONFIG_B=y\n").is_empty());
        // An excluded option that came back (selected by another) is named too.
        assert_eq!(
            missing_options(frag, "CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\n"),
            vec!["CONFIG_C (must stay unset)"]
        );
        assert_eq!(excluded_options(frag), vec!["CONFIG_C"]);
    }

    #[test]
    fn key_changes_with_source_version() {
        assert_ne!(
            cache_key("linux-source-6.1 1"),
            cache_key("linux-source-6.1 2")
        );
        assert_eq!(cache_key("v"), cache_key("v"));
    }
}
