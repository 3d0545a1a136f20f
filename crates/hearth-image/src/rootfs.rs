//! The shared Debian base tree: debootstrap + user + Deno, stripped of docs. Cached
//! under `$HEARTH_CACHE_DIR/rootfs-base/<key>/{root,base.json}`; built in a scratch dir
//! and renamed into place, so an interrupted build is never reused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::util::{self, Progress};
use crate::{Error, Result};

pub const SUITE: &str = "bookworm";

/// Bump when the steps below change in a way that changes the tree.
const RECIPE: &str = "rootfs-recipe-3";

/// Installed by debootstrap itself.
pub const PACKAGES: &[&str] = &[
    "busybox",
    "python3",
    "nodejs",
    "git",
    "tar",
    "xz-utils",
    "ca-certificates",
    "curl",
    "iproute2",
    "iputils-ping",
    "nftables",
    "procps",
    // What people reach for first in a shell (issue 9): fetch, unpack, inspect.
    "wget",
    "unzip",
    "zip",
    "jq",
    "file",
    "less",
];

/// Installed afterwards with apt in the chroot: debootstrap's resolver ignores virtual
/// packages (Provides:), and npm's dependency tree relies on them.
pub const APT_PACKAGES: &[&str] = &["npm", "python3-pip", "python3-venv"];

/// Run in the chroot by BusyBox's own shell; see `build`.
const BUSYBOX_LINKS: &str = r#"set -e
for a in $(/bin/busybox --list); do
  case "$a" in init|linuxrc|halt|poweroff|reboot|busybox) continue ;; esac
  found=
  for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
    if [ -e "$d/$a" ] || [ -L "$d/$a" ]; then found=1; break; fi
  done
  [ -n "$found" ] || ln -s /bin/busybox "/usr/local/bin/$a"
done
"#;

/// What went into the base, for the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaseInfo {
    pub key: String,
    pub suite: String,
    pub mirror: String,
    pub node: Option<String>,
    pub python: Option<String>,
    pub deno: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Base {
    pub root: PathBuf,
    pub info: BaseInfo,
}

/// The first enabled `deb` source for `suite` in apt's configuration, either format.
/// `files` are (file name, contents); only `.list` and `.sources` files count, like apt.
pub fn mirror_from_sources(files: &[(String, String)], suite: &str) -> Option<String> {
    for (name, text) in files {
        if name.ends_with(".list") {
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                let mut words = line.split_whitespace();
                if words.next() != Some("deb") {
                    continue;
                }
                let mut rest: Vec<&str> = words.collect();
                if rest.first().is_some_and(|w| w.starts_with('[')) {
                    let end = rest.iter().position(|w| w.ends_with(']')).unwrap_or(0);
                    rest.drain(..=end);
                }
                if rest.len() >= 2 && rest[1] == suite {
                    return Some(rest[0].trim_end_matches('/').to_string());
                }
            }
        } else if name.ends_with(".sources") {
            for para in text.split("\n\n") {
                let field = |key: &str| {
                    para.lines()
                        .filter(|l| !l.trim_start().starts_with('#'))
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.trim()
                                .eq_ignore_ascii_case(key)
                                .then(|| v.trim().to_string())
                        })
                };
                let enabled = field("Enabled").is_none_or(|v| v != "no");
                let types = field("Types").unwrap_or_default();
                let suites = field("Suites").unwrap_or_default();
                if enabled
                    && types.split_whitespace().any(|t| t == "deb")
                    && suites.split_whitespace().any(|s| s == suite)
                {
                    if let Some(uri) =
                        field("URIs").and_then(|u| u.split_whitespace().next().map(str::to_string))
                    {
                        return Some(uri.trim_end_matches('/').to_string());
                    }
                }
            }
        }
    }
    None
}

/// `HEARTH_DEBIAN_MIRROR`, else whatever this host's apt uses.
pub fn host_mirror(suite: &str) -> Result<String> {
    if let Some(m) = std::env::var_os("HEARTH_DEBIAN_MIRROR").filter(|m| !m.is_empty()) {
        return Ok(m.to_string_lossy().into_owned());
    }
    let mut files = Vec::new();
    let mut add = |p: &Path| {
        if let Ok(text) = std::fs::read_to_string(p) {
            files.push((p.to_string_lossy().into_owned(), text));
        }
    };
    add(Path::new("/etc/apt/sources.list"));
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        paths.sort();
        paths.iter().for_each(|p| add(p));
    }
    mirror_from_sources(&files, suite).ok_or_else(|| Error::NoMirror(suite.to_string()))
}

fn deno_spec() -> String {
    std::env::var("HEARTH_DENO_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .map_or_else(|| "deno".to_string(), |v| format!("deno=={v}"))
}

pub fn cache_key(mirror: &str, deno: &str) -> String {
    util::key_of(&[
        ("recipe", RECIPE.as_bytes()),
        ("suite", SUITE.as_bytes()),
        ("mirror", mirror.as_bytes()),
        ("packages", PACKAGES.join(",").as_bytes()),
        ("apt-packages", APT_PACKAGES.join(",").as_bytes()),
        ("deno", deno.as_bytes()),
    ])
}

/// Returns the cached base tree for the current inputs, building it if needed.
pub fn ensure(progress: &Progress) -> Result<Base> {
    let mirror = host_mirror(SUITE)?;
    let deno = deno_spec();
    let key = cache_key(&mirror, &deno);
    let done = util::cache_dir_for("rootfs-base").join(&key);
    let info_path = done.join("base.json");
    if !info_path.exists() {
        progress.step("rootfs: debootstrap base tree", || {
            let tmp = util::scratch_for(&done)?;
            let info = build(&tmp, &key, &mirror, &deno, progress)?;
            let json = serde_json::to_vec_pretty(&info).expect("plain struct serializes");
            let p = tmp.join("base.json");
            std::fs::write(&p, json).map_err(|e| Error::io(&p, e))?;
            util::publish_dir(&tmp, &done)
        })?;
    } else {
        progress.say(format!("rootfs: cached base ({})", &key[..12]));
    }
    let text = std::fs::read(&info_path).map_err(|e| Error::io(&info_path, e))?;
    let info = serde_json::from_slice(&text).map_err(|source| Error::Manifest {
        path: info_path.clone(),
        source,
    })?;
    Ok(Base {
        root: done.join("root"),
        info,
    })
}

fn build(tmp: &Path, key: &str, mirror: &str, deno: &str, progress: &Progress) -> Result<BaseInfo> {
    let root = tmp.join("root");
    progress.say(format!("rootfs: debootstrap {SUITE} from {mirror}"));
    util::run_logged(
        Command::new("debootstrap")
            .args(["--variant=minbase", "--components=main"])
            .arg(format!("--include={}", PACKAGES.join(",")))
            .arg(SUITE)
            .arg(&root)
            .arg(mirror),
        &tmp.join("debootstrap.log"),
    )?;

    progress.step(
        &format!("rootfs: apt-get install {}", APT_PACKAGES.join(" ")),
        || {
            let apt = |args: &[&str]| {
                util::run_logged(
                    Command::new("chroot")
                        .arg(&root)
                        .arg("apt-get")
                        .args(args)
                        .env("DEBIAN_FRONTEND", "noninteractive"),
                    &tmp.join("apt.log"),
                )
            };
            apt(&["update", "-q"])?;
            let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
            install.extend_from_slice(APT_PACKAGES);
            apt(&install)?;
            apt(&["clean"])
        },
    )?;

    // BusyBox fills the gaps (nc, vi, ...) but never shadows a real tool: an applet is
    // linked only where no program of that name exists on the standard PATH. The
    // power-management applets stay out; only init may end the VM.
    progress.say("rootfs: linking BusyBox applets that have no real tool");
    util::run(
        Command::new("chroot")
            .arg(&root)
            .args(["/bin/busybox", "sh", "-c", BUSYBOX_LINKS]),
    )?;

    progress.say("rootfs: user, mountpoints, identity files");
    util::run(Command::new("chroot").arg(&root).args([
        "useradd",
        "-m",
        "-u",
        "1000",
        "-U",
        "-s",
        "/bin/bash",
        "-d",
        "/home/user",
        "user",
    ]))?;
    for dir in ["workspace", "home/user"] {
        util::mkdirs(&root.join(dir))?;
    }
    let write = |rel: &str, text: &str| {
        let p = root.join(rel);
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, text).map_err(|e| Error::io(&p, e))
    };
    // debootstrap copies the host's resolver and name; neither belongs in a guest.
    write("etc/resolv.conf", "")?;
    write("etc/hostname", "hearth\n")?;
    write(
        "etc/hosts",
        "127.0.0.1\tlocalhost\n127.0.1.1\thearth\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )?;

    let deno_version =
        progress.step("rootfs: deno from PyPI", || install_deno(tmp, &root, deno))?;

    progress.say("rootfs: stripping caches and docs");
    for rel in [
        "var/cache/apt",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "var/log",
        "root/.cache",
    ] {
        let p = root.join(rel);
        util::remove_dir_all_if_exists(&p)?;
        util::mkdirs(&p)?;
    }

    let pkg = |name: &str| -> Option<String> {
        let admin = root.join("var/lib/dpkg");
        util::run(
            Command::new("dpkg-query")
                .arg(format!("--admindir={}", admin.display()))
                .args(["-W", "-f=${Version}", name]),
        )
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    };
    Ok(BaseInfo {
        key: key.to_string(),
        suite: SUITE.to_string(),
        mirror: mirror.to_string(),
        node: pkg("nodejs"),
        python: pkg("python3"),
        deno: Some(deno_version),
    })
}

/// PyPI's `deno` wheel carries the release binary; it is the one source reachable here.
fn install_deno(tmp: &Path, root: &Path, spec: &str) -> Result<String> {
    let dl = tmp.join("deno-wheel");
    util::mkdirs(&dl)?;
    util::run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
            ])
            .args([
                "--platform",
                "manylinux_2_27_x86_64",
                "--python-version",
                "3.11",
            ])
            .arg("-d")
            .arg(&dl)
            .arg(spec),
    )?;
    let wheel = std::fs::read_dir(&dl)
        .map_err(|e| Error::io(&dl, e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| Error::Other(format!("pip left no deno wheel in {}", dl.display())))?;
    let version = wheel_version(&wheel.file_name().unwrap_or_default().to_string_lossy())
        .ok_or_else(|| Error::Other(format!("odd wheel name {}", wheel.display())))?;
    let out = dl.join("x");
    util::run(
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&out),
    )?;
    let bin = out.join(format!("deno-{version}.data/scripts/deno"));
    let dest = root.join("usr/local/bin/deno");
    util::mkdirs(dest.parent().expect("has parent"))?;
    std::fs::copy(&bin, &dest).map_err(|e| Error::io(&bin, e))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io(&dest, e))?;
    util::remove_dir_all_if_exists(&dl)?;
    Ok(version)
}

/// `deno-2.9.8-py3-none-manylinux_2_27_x86_64.whl` -> `2.9.8`.
pub fn wheel_version(file: &str) -> Option<String> {
    let mut parts = file.strip_suffix(".whl")?.split('-');
    parts.next()?;
    parts.next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn finds_the_mirror_in_deb822_sources() {
        let f = files(&[
            ("/etc/apt/sources.list.d/x.sources.disabled-by-farm", "Types: deb\nURIs: http://nope/\nSuites: bookworm\n"),
            (
                "/etc/apt/sources.list.d/debian.sources",
                "Types: deb\n# comment: http://old\nURIs: http://deb.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                 Types: deb\nURIs: http://sec.example\nSuites: bookworm-security\n",
            ),
        ]);
        assert_eq!(
            mirror_from_sources(&f, "bookworm").as_deref(),
            Some("http://deb.example/debian")
        );
        assert_eq!(
            mirror_from_sources(&f, "bookworm-security").as_deref(),
            Some("http://sec.example")
        );
        assert_eq!(mirror_from_sources(&f, "trixie"), None);
    }

    #[test]
    fn finds_the_mirror_in_one_line_lists() {
        let f = files(&[(
            "/etc/apt/sources.list",
            "# deb http://commented bookworm main\ndeb-src http://src bookworm main\n\
             deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n",
        )]);
        assert_eq!(
            mirror_from_sources(&f, "bookworm").as_deref(),
            Some("http://m.example/debian")
        );
    }

    #[test]
    fn disabled_deb822_entries_are_skipped() {
        let f = files(&[(
            "a.sources",
            "Enabled: no\nTypes: deb\nURIs: http://off\nSuites: bookworm\n",
        )]);
        assert_eq!(mirror_from_sources(&f, "bookworm"), None);
    }

    #[test]
    fn wheel_names_give_versions() {
        assert_eq!(
            wheel_version("deno-2.9.8-py3-none-manylinux_2_27_x86_64.whl").as_deref(),
            Some("2.9.8")
        );
        assert_eq!(wheel_version("deno.tar.gz"), None);
    }
}
