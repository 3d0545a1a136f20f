//! Which tar entries an upload may contain, as a pure function over header fields.

use tar::EntryType;

use super::{ArchiveError, Result, WorkspacePath};

/// Upper bounds for one upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries of any kind, directories included.
    pub max_entries: u64,
    /// Sum of regular file sizes.
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_bytes: 1 << 30,
        }
    }
}

/// What an accepted entry turns into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File {
        size: u64,
    },
    Dir,
    /// Metadata-only records (e.g. a pax global header) that create nothing.
    Skip,
}

/// Running totals, so limits apply to the archive as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub entries: u64,
    pub bytes: u64,
}

/// Decides about one entry: `raw_path` as stored, `dest` the upload destination.
/// Returns the entry's final workspace path (under `dest`) and its kind.
///
/// Checks run cheapest-first but every rule runs before anything is created, so a
/// rejected entry never touches the disk.
pub fn check_entry(
    entry_type: EntryType,
    raw_path: &[u8],
    size: u64,
    dest: &WorkspacePath,
    limits: &Limits,
    tally: &mut Tally,
) -> Result<(WorkspacePath, EntryKind)> {
    let shown = String::from_utf8_lossy(raw_path).into_owned();
    tally.entries += 1;
    if tally.entries > limits.max_entries {
        return Err(ArchiveError::TooManyEntries {
            max: limits.max_entries,
            entry: shown,
        });
    }
    let kind = match entry_type {
        EntryType::Regular | EntryType::Continuous => EntryKind::File { size },
        EntryType::Directory => EntryKind::Dir,
        EntryType::XGlobalHeader => return Ok((dest.clone(), EntryKind::Skip)),
        other => {
            return Err(ArchiveError::BadType {
                entry: shown,
                kind: type_name(other),
            })
        }
    };
    // Non-UTF-8 names cannot be shown or round-tripped through JSON; refuse them.
    let Ok(text) = std::str::from_utf8(raw_path) else {
        return Err(ArchiveError::BadType {
            entry: shown,
            kind: "non-UTF-8 name",
        });
    };
    let bad_path = |source| ArchiveError::BadPath {
        entry: shown.clone(),
        source,
    };
    let parsed = WorkspacePath::parse(text).map_err(bad_path)?;
    let path = if WorkspacePath::is_absolute_str(text) {
        if !parsed.starts_with(dest) {
            return Err(ArchiveError::OutsideDest {
                entry: shown,
                dest: dest.to_string(),
            });
        }
        parsed
    } else {
        dest.join(&parsed).map_err(bad_path)?
    };
    if let EntryKind::File { size } = kind {
        if path == *dest {
            return Err(ArchiveError::Conflict {
                entry: shown,
                existing: "destination directory",
            });
        }
        tally.bytes = tally.bytes.saturating_add(size);
        if tally.bytes > limits.max_bytes {
            return Err(ArchiveError::TooManyBytes {
                max: limits.max_bytes,
                entry: shown,
            });
        }
    }
    Ok((path, kind))
}

fn type_name(t: EntryType) -> &'static str {
    match t {
        EntryType::Symlink => "symlink",
        EntryType::Link => "hard link",
        EntryType::Char => "character device",
        EntryType::Block => "block device",
        EntryType::Fifo => "FIFO",
        EntryType::GNUSparse => "sparse file",
        EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink => {
            "stray extension header"
        }
        _ => "entry of unsupported type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(t: EntryType, path: &str, size: u64) -> Result<(WorkspacePath, EntryKind)> {
        let dest = WorkspacePath::parse("up").unwrap();
        check_entry(
            t,
            path.as_bytes(),
            size,
            &dest,
            &Limits::default(),
            &mut Tally::default(),
        )
    }

    #[test]
    fn types_are_judged() {
        let table = [
            (EntryType::Regular, true),
            (EntryType::Continuous, true),
            (EntryType::Directory, true),
            (EntryType::Symlink, false),
            (EntryType::Link, false),
            (EntryType::Char, false),
            (EntryType::Block, false),
            (EntryType::Fifo, false),
            (EntryType::GNUSparse, false),
            (EntryType::new(b'Z'), false),
        ];
        for (t, ok) in table {
            assert_eq!(check(t, "x", 1).is_ok(), ok, "{t:?}");
            if !ok {
                let msg = check(t, "x", 1).unwrap_err().to_string();
                assert!(msg.contains("\"x\""), "error names the entry: {msg}");
            }
        }
    }

    #[test]
    fn paths_resolve_under_dest() {
        let (p, _) = check(EntryType::Regular, "a/b.txt", 3).unwrap();
        assert_eq!(p.to_string(), "/workspace/up/a/b.txt");
        let (p, _) = check(EntryType::Regular, "/workspace/up/c", 3).unwrap();
        assert_eq!(p.to_string(), "/workspace/up/c");
        let (p, k) = check(EntryType::Directory, "./", 0).unwrap();
        assert_eq!((p.as_str(), k), ("up", EntryKind::Dir));
        for bad in [
            "/workspace/other/c",
            "/etc/passwd",
            "../x",
            "/workspace/../x",
            "a\\b",
        ] {
            assert!(check(EntryType::Regular, bad, 1).is_err(), "{bad}");
        }
        assert!(matches!(
            check(EntryType::Regular, ".", 1),
            Err(ArchiveError::Conflict { .. })
        ));
    }

    #[test]
    fn limits_apply_to_the_whole_archive() {
        let dest = WorkspacePath::root();
        let limits = Limits {
            max_entries: 3,
            max_bytes: 10,
        };
        let mut tally = Tally::default();
        let mut run = |t, n| check_entry(t, b"f", n, &dest, &limits, &mut tally);
        assert!(run(EntryType::Regular, 6).is_ok());
        assert!(matches!(
            run(EntryType::Regular, 5),
            Err(ArchiveError::TooManyBytes { max: 10, .. })
        ));
        assert!(run(EntryType::Directory, 0).is_ok());
        assert!(matches!(
            run(EntryType::Directory, 0),
            Err(ArchiveError::TooManyEntries { max: 3, .. })
        ));
    }
}
