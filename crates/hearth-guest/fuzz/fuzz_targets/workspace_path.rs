//! Fuzzes the upload path policy: `WorkspacePath::parse` and `check_entry` must never
//! panic, and whatever they accept must be a normalised path that stays in the workspace
//! (and under the destination).
//!
//! Run from `crates/hearth-guest/fuzz` (stable toolchain, nightly flags unlocked):
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run workspace_path -- -max_total_time=60`
#![no_main]

use std::path::{Component, Path};

use hearth_guest::archive::{check_entry, Limits, Tally, WorkspacePath, MAX_PATH_LEN};
use libfuzzer_sys::fuzz_target;

fn assert_contained(p: &WorkspacePath) {
    let rel = p.as_str();
    assert!(rel.len() <= MAX_PATH_LEN);
    assert!(!rel.starts_with('/') && !rel.ends_with('/'), "{rel:?}");
    assert!(!rel.contains('\0') && !rel.contains('\\'), "{rel:?}");
    if !rel.is_empty() {
        for c in rel.split('/') {
            assert!(!c.is_empty() && c != "." && c != "..", "{rel:?}");
        }
    }
    // What the file system would see: only plain names below the root.
    let joined = Path::new("/workspace").join(rel);
    let mut comps = joined.components();
    assert_eq!(comps.next(), Some(Component::RootDir));
    assert_eq!(comps.next(), Some(Component::Normal("workspace".as_ref())));
    assert!(comps.all(|c| matches!(c, Component::Normal(_))), "{rel:?}");
    // Normal form is a fixed point, in both spellings.
    assert_eq!(WorkspacePath::parse(&p.to_string()).as_ref(), Ok(p));
    if !rel.is_empty() {
        assert_eq!(WorkspacePath::parse(rel).as_ref(), Ok(p));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    if let Ok(s) = std::str::from_utf8(rest) {
        if let Ok(p) = WorkspacePath::parse(s) {
            assert_contained(&p);
        }
    }
    // The same bytes as a tar entry of any type under a fixed destination.
    let dest = WorkspacePath::parse("/workspace/dest").unwrap();
    let mut tally = Tally::default();
    let limits = Limits::default();
    if let Ok((p, _)) = check_entry(
        tar::EntryType::new(kind),
        rest,
        1,
        &dest,
        &limits,
        &mut tally,
    ) {
        assert_contained(&p);
        assert!(p.starts_with(&dest), "{p} escaped {dest}");
    }
});
