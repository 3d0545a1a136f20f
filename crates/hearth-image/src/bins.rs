//! The static guest binaries (`hearth-init`, `hearth-agent`) every image carries:
//! where to find them, and the check that they need no dynamic loader.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

pub const GUEST_BINARIES: [&str; 2] = ["hearth-init", "hearth-agent"];

/// Directories searched for the guest binaries, in order.
pub fn guest_bin_candidates() -> Vec<PathBuf> {
    if let Some(d) = std::env::var_os("HEARTH_GUEST_BIN_DIR").filter(|d| !d.is_empty()) {
        return vec![PathBuf::from(d)];
    }
    let mut out = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(exe_dir.clone());
        out.push(exe_dir.join("../lib/hearth"));
        // `target/<profile>/hearth` -> the workspace's `target/`; also the workspace
        // this crate was compiled in.
        for anc in exe_dir.ancestors() {
            if anc.file_name().is_some_and(|n| n == "target") {
                out.push(anc.join("x86_64-unknown-linux-gnu/release"));
                break;
            }
        }
    }
    out.push(PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/x86_64-unknown-linux-gnu/release"
    )));
    out
}

/// Whether an x86_64 ELF executable has no program interpreter, i.e. runs in a rootfs
/// without our glibc. Anything that is not a 64-bit ELF counts as not static.
pub fn is_static_elf(path: &Path) -> Result<bool> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    if bytes.get(..5) != Some(b"\x7fELF\x02".as_slice()) {
        return Ok(false);
    }
    const PT_INTERP: u32 = 3;
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Ok(false);
    };
    for i in 0..phnum {
        match u32_at(phoff as usize + i * phentsize) {
            Some(PT_INTERP) => return Ok(false),
            Some(_) => {}
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// The first candidate directory holding both guest binaries, built static. A dynamic
/// build (say, `target/debug` next to a dev `hearth`) would not start in the guest.
pub fn find_guest_bins() -> Result<PathBuf> {
    let cands = guest_bin_candidates();
    for d in &cands {
        let all_static = GUEST_BINARIES
            .iter()
            .all(|b| d.join(b).is_file() && is_static_elf(&d.join(b)).unwrap_or(false));
        if all_static {
            return Ok(d.canonicalize().unwrap_or_else(|_| d.clone()));
        }
    }
    let looked: Vec<String> = cands.iter().map(|d| d.display().to_string()).collect();
    Err(Error::GuestBinary(
        GUEST_BINARIES.join(" + "),
        looked.join(", "),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_binaries_are_told_from_dynamic_ones() {
        let static_bin = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/x86_64-unknown-linux-gnu/release/hearth-init");
        if static_bin.exists() {
            assert!(is_static_elf(&static_bin).unwrap());
        }
        // This test binary is a normal dynamic executable.
        assert!(!is_static_elf(&std::env::current_exe().unwrap()).unwrap());
        assert!(!is_static_elf(Path::new("/bin/sh")).unwrap());
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("x"), b"#!/bin/sh\n").unwrap();
        assert!(!is_static_elf(&d.path().join("x")).unwrap());
    }
}
