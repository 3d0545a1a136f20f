//! Where Hearth keeps its state (`HEARTH_DATA_DIR`) and rebuildable artifacts
//! (`HEARTH_CACHE_DIR`). Every crate goes through these so the layout in
//! ARCHITECTURE.md has exactly one definition.

use std::path::PathBuf;

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn home() -> PathBuf {
    env_dir("HOME").unwrap_or_else(|| PathBuf::from("/root"))
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `HEARTH_DATA_DIR`, else `/var/lib/hearth` for root, else `~/.local/share/hearth`.
pub fn data_dir() -> PathBuf {
    env_dir("HEARTH_DATA_DIR").unwrap_or_else(|| {
        if is_root() {
            PathBuf::from("/var/lib/hearth")
        } else {
            home().join(".local/share/hearth")
        }
    })
}

/// `HEARTH_CACHE_DIR`, else `~/.cache/hearth`.
pub fn cache_dir() -> PathBuf {
    env_dir("HEARTH_CACHE_DIR").unwrap_or_else(|| home().join(".cache/hearth"))
}

pub fn images_dir() -> PathBuf {
    data_dir().join("images")
}

pub fn image_dir(name: &str) -> PathBuf {
    images_dir().join(name)
}

pub fn vms_dir() -> PathBuf {
    data_dir().join("vms")
}

/// Names become directory names, so keep them to one safe path component.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_safe_components() {
        for ok in ["default", "py-3.11", "a_b"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
