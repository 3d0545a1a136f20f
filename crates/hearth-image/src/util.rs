//! Small helpers shared by the build steps: progress lines, running tools, hashing,
//! publishing a finished directory atomically.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Prints `[hearth-image  12.3s] step` lines to stderr so a long cold build shows
/// where the time goes.
pub struct Progress {
    start: Instant,
    quiet: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress {
            start: Instant::now(),
            quiet,
        }
    }

    pub fn say(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!(
                "[hearth-image {:>6.1}s] {}",
                self.start.elapsed().as_secs_f64(),
                msg.as_ref()
            );
        }
    }

    /// Runs one named step and reports how long it took.
    pub fn step<T>(&self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.say(format!("{name} ..."));
        let t = Instant::now();
        let out = f();
        match &out {
            Ok(_) => self.say(format!("{name}: done in {:.1}s", t.elapsed().as_secs_f64())),
            Err(e) => self.say(format!(
                "{name}: FAILED after {:.1}s: {e}",
                t.elapsed().as_secs_f64()
            )),
        }
        out
    }

    pub fn elapsed_secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The last lines of a tool's output: enough to see why it failed without flooding.
fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a tool to completion, returning its stdout; on failure the error carries the
/// tail of its combined output.
pub fn run(cmd: &mut Command) -> Result<String> {
    let what = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            cmd: what.clone(),
            source,
        })?;
    if !out.status.success() {
        let mut all = out.stdout.clone();
        all.extend_from_slice(&out.stderr);
        return Err(Error::Command {
            cmd: what,
            status: out.status.to_string(),
            output: tail(&all, 30),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`run`], but sends all output to `log` (kernel builds print megabytes).
pub fn run_logged(cmd: &mut Command, log: &Path) -> Result<()> {
    let what = describe(cmd);
    let f = File::create(log).map_err(|e| Error::io(log, e))?;
    let f2 = f.try_clone().map_err(|e| Error::io(log, e))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(f2)
        .status()
        .map_err(|source| Error::Spawn {
            cmd: what.clone(),
            source,
        })?;
    if !status.success() {
        let bytes = std::fs::read(log).unwrap_or_default();
        return Err(Error::Command {
            cmd: what,
            status: status.to_string(),
            output: format!("{}\n(full log: {})", tail(&bytes, 30), log.display()),
        });
    }
    Ok(())
}

/// Hex SHA-256 of a file. Uses coreutils' `sha256sum` when present: rootfs images are
/// hundreds of MB, and an unoptimised (debug) build of the pure-Rust hash takes a minute.
pub fn sha256_file(path: &Path) -> Result<String> {
    if let Ok(out) = run(Command::new("sha256sum").arg("--").arg(path)) {
        if let Some(hex) = out.split_whitespace().next().filter(|h| h.len() == 64) {
            return Ok(hex.to_string());
        }
    }
    sha256_file_rust(path)
}

fn sha256_file_rust(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Hash of labelled parts; labels and lengths are mixed in so that moving bytes from
/// one part to the next changes the key.
pub fn key_of(parts: &[(&str, &[u8])]) -> String {
    let mut h = Sha256::new();
    for (label, bytes) in parts {
        h.update(label.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    hex::encode(h.finalize())
}

/// A named subdirectory of the build cache.
pub fn cache_dir_for(what: &str) -> PathBuf {
    crate::paths::cache_dir().join(what)
}

pub fn mkdirs(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))
}

pub fn remove_dir_all_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// A scratch directory next to `final_dir` (same filesystem, so `rename` is atomic).
/// Stale scratch dirs of dead builds are left behind under a `.tmp` name and never
/// mistaken for finished output.
pub fn scratch_for(final_dir: &Path) -> Result<PathBuf> {
    let parent = final_dir.parent().unwrap_or(Path::new("."));
    mkdirs(parent)?;
    let name = final_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    remove_dead_scratch(parent, &name);
    let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    remove_dir_all_if_exists(&tmp)?;
    mkdirs(&tmp)?;
    Ok(tmp)
}

/// The PID in a scratch dir name `.{name}.{pid}.tmp`.
fn scratch_pid(file: &str, name: &str) -> Option<u32> {
    file.strip_prefix(&format!(".{name}."))?
        .strip_suffix(".tmp")?
        .parse()
        .ok()
}

/// Scratch dirs of builds that died (their PID is gone) only waste disk: a debootstrap
/// tree is ~600 MB. Dirs of live builds are left alone.
fn remove_dead_scratch(parent: &Path, name: &str) {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in rd.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = scratch_pid(&file, name) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Moves a complete scratch dir into place, replacing an older version if any.
/// Open files in the old version (a running VM's rootfs) stay valid.
pub fn publish_dir(tmp: &Path, final_dir: &Path) -> Result<()> {
    if final_dir.exists() {
        let old = tmp.with_extension("old");
        remove_dir_all_if_exists(&old)?;
        std::fs::rename(final_dir, &old).map_err(|e| Error::io(final_dir, e))?;
        std::fs::rename(tmp, final_dir).map_err(|e| Error::io(final_dir, e))?;
        remove_dir_all_if_exists(&old)?;
    } else {
        std::fs::rename(tmp, final_dir).map_err(|e| Error::io(final_dir, e))?;
    }
    Ok(())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 UTC timestamp from Unix seconds (proleptic Gregorian calendar), so the
/// manifest is readable without pulling in a date crate.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_559_167), "2026-11-24T22:26:07Z");
    }

    #[test]
    fn both_hash_paths_agree_on_a_known_value() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(&p).unwrap(), want);
        assert_eq!(sha256_file_rust(&p).unwrap(), want);
        assert!(sha256_file(&d.path().join("missing")).is_err());
    }

    #[test]
    fn keys_depend_on_part_boundaries() {
        let a = key_of(&[("x", b"ab"), ("y", b"c")]);
        let b = key_of(&[("x", b"a"), ("y", b"bc")]);
        assert_ne!(a, b);
        assert_eq!(a, key_of(&[("x", b"ab"), ("y", b"c")]));
    }

    #[test]
    fn failing_commands_report_their_output() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("boom") && msg.contains('3'), "{msg}");
    }

    #[test]
    fn scratch_of_dead_builds_is_removed_and_live_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        let fin = d.path().join("base");
        // PIDs above the kernel's pid_max (4194304 at most) never exist.
        let dead = d.path().join(".base.4194999.tmp");
        let live = d.path().join(format!(".base.{}.tmp", std::process::id()));
        let other = d.path().join(".other.4194999.tmp");
        for p in [&dead, &other] {
            std::fs::create_dir(p).unwrap();
        }
        let tmp = scratch_for(&fin).unwrap();
        assert_eq!(tmp, live);
        assert!(!dead.exists());
        assert!(
            other.exists(),
            "another name's scratch is not ours to delete"
        );
        assert_eq!(scratch_pid(".base.12.tmp", "base"), Some(12));
        assert_eq!(scratch_pid(".base.x.tmp", "base"), None);
    }

    #[test]
    fn publish_replaces_an_existing_dir() {
        let d = tempfile::tempdir().unwrap();
        let fin = d.path().join("img");
        for v in ["one", "two"] {
            let tmp = scratch_for(&fin).unwrap();
            std::fs::write(tmp.join("f"), v).unwrap();
            publish_dir(&tmp, &fin).unwrap();
            assert_eq!(std::fs::read_to_string(fin.join("f")).unwrap(), v);
        }
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no scratch dirs left behind");
    }
}
