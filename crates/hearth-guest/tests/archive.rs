//! The upload/download archive policy on real tar.gz streams, without the agent: every
//! rejection rule, the all-or-nothing guarantee, merging, and pack round trips.

mod support;

use std::fs;
use std::os::unix::fs::symlink;

use hearth_guest::archive::{extract, pack, ArchiveError, Limits, WorkspacePath};
use support::{finish, gz_builder, raw_entry, tar_gz, tree};
use tar::EntryType;

fn root_dest() -> WorkspacePath {
    WorkspacePath::root()
}

/// An archive whose first entry is fine and whose second breaks `kind`/`name`.
fn with_bad_entry(name: &[u8], kind: EntryType, link: Option<&str>) -> Vec<u8> {
    let mut b = gz_builder();
    raw_entry(&mut b, b"good/", EntryType::Directory, b"", None);
    raw_entry(&mut b, b"good/file.txt", EntryType::Regular, b"hello", None);
    raw_entry(&mut b, name, kind, b"", link);
    finish(b)
}

#[test]
fn every_rejection_rule_leaves_nothing_behind() {
    let cases: &[(&[u8], EntryType, Option<&str>, &str)] = &[
        (b"link", EntryType::Symlink, Some("/etc/passwd"), "symlink"),
        (b"hard", EntryType::Link, Some("good/file.txt"), "hard link"),
        (b"chr", EntryType::Char, None, "character device"),
        (b"blk", EntryType::Block, None, "block device"),
        (b"fifo", EntryType::Fifo, None, "FIFO"),
        (b"../escape", EntryType::Regular, None, "`..`"),
        (b"a/../../escape", EntryType::Regular, None, "`..`"),
        (
            b"/etc/passwd",
            EntryType::Regular,
            None,
            "outside /workspace",
        ),
        (b"/workspace/../etc/x", EntryType::Regular, None, "`..`"),
        (
            b"/workspacefoo/x",
            EntryType::Regular,
            None,
            "outside /workspace",
        ),
        (b"back\\slash", EntryType::Regular, None, "backslash"),
        (b"bad\xffutf8", EntryType::Regular, None, "non-UTF-8"),
    ];
    for (name, kind, link, why) in cases {
        let ws = tempfile::tempdir().unwrap();
        fs::write(ws.path().join("existing"), b"keep").unwrap();
        let before = tree(ws.path());
        let tgz = with_bad_entry(name, *kind, *link);
        let err = extract(&tgz[..], ws.path(), &root_dest(), &Limits::default()).expect_err(
            &format!("{} must be rejected", String::from_utf8_lossy(name)),
        );
        let msg = err.to_string();
        assert!(msg.contains(why), "{msg} should say {why}");
        let shown = String::from_utf8_lossy(name);
        assert!(
            msg.contains(&format!("{shown:?}")),
            "{msg} should name {shown}"
        );
        assert_eq!(err.status() / 100, 4, "{msg}");
        assert_eq!(tree(ws.path()), before, "{msg}: leftovers");
    }
}

#[test]
fn limits_reject_whole_archives() {
    let ws = tempfile::tempdir().unwrap();
    let tgz = tar_gz(&[("a", b"1234"), ("b", b"5678"), ("c", b"9")]);
    let few = Limits {
        max_entries: 2,
        max_bytes: 1 << 20,
    };
    let e = extract(&tgz[..], ws.path(), &root_dest(), &few).unwrap_err();
    assert!(
        matches!(e, ArchiveError::TooManyEntries { max: 2, .. }),
        "{e}"
    );
    let small = Limits {
        max_entries: 100,
        max_bytes: 6,
    };
    let e = extract(&tgz[..], ws.path(), &root_dest(), &small).unwrap_err();
    assert!(
        matches!(e, ArchiveError::TooManyBytes { max: 6, .. }),
        "{e}"
    );
    assert_eq!(e.status(), 413);
    assert!(tree(ws.path()).is_empty(), "{:?}", tree(ws.path()));
}

#[test]
fn a_gzip_bomb_is_cut_off_by_the_stream_cap() {
    // One huge pax-free GNU long-name record is buffered by the tar reader itself, so the
    // per-entry byte limit never sees it; the decompressed-stream cap must.
    let mut b = gz_builder();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(EntryType::GNULongName);
    let big = vec![b'a'; 8 << 20];
    h.set_size(big.len() as u64);
    h.set_cksum();
    b.append(&h, &big[..]).unwrap();
    let tgz = finish(b);
    let ws = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_entries: 10,
        max_bytes: 1024,
    };
    let e = extract(&tgz[..], ws.path(), &root_dest(), &limits).unwrap_err();
    assert!(matches!(e, ArchiveError::TooManyBytes { .. }), "{e}");
    assert!(tree(ws.path()).is_empty());
}

#[test]
fn garbage_is_a_corrupt_archive() {
    let ws = tempfile::tempdir().unwrap();
    let e = extract(
        &b"not gzip at all"[..],
        ws.path(),
        &root_dest(),
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(e.status(), 400, "{e}");
    assert!(tree(ws.path()).is_empty());
}

#[test]
fn good_archives_merge_into_place() {
    let ws = tempfile::tempdir().unwrap();
    fs::create_dir_all(ws.path().join("proj/keep")).unwrap();
    fs::write(ws.path().join("proj/keep/old.txt"), b"old").unwrap();
    fs::write(ws.path().join("proj/replace.txt"), b"before").unwrap();
    let tgz = tar_gz(&[
        ("./", b""),
        ("keep/", b""),
        ("keep/new.txt", b"new"),
        ("replace.txt", b"after"),
        ("deep/er/x.bin", b"\x00\x01"),
    ]);
    let dest = WorkspacePath::parse("/workspace/proj").unwrap();
    let r = extract(&tgz[..], ws.path(), &dest, &Limits::default()).unwrap();
    assert_eq!((r.files, r.dirs, r.bytes), (3, 1, 10));
    assert_eq!(r.dest, "/workspace/proj");
    let read = |p: &str| fs::read(ws.path().join(p)).unwrap();
    assert_eq!(read("proj/keep/old.txt"), b"old");
    assert_eq!(read("proj/keep/new.txt"), b"new");
    assert_eq!(read("proj/replace.txt"), b"after");
    assert_eq!(read("proj/deep/er/x.bin"), b"\x00\x01");
    let mtime = fs::metadata(ws.path().join("proj/keep/new.txt"))
        .unwrap()
        .modified()
        .unwrap();
    let want = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_234_567_890);
    assert_eq!(mtime, want, "mtimes are kept");
    // No staging directory survives a success either.
    assert!(!tree(ws.path()).iter().any(|p| p.contains(".hearth-upload")));
}

#[test]
fn absolute_workspace_entries_must_stay_under_dest() {
    let ws = tempfile::tempdir().unwrap();
    let mut b = gz_builder();
    raw_entry(
        &mut b,
        b"/workspace/sub/in.txt",
        EntryType::Regular,
        b"x",
        None,
    );
    let dest = WorkspacePath::parse("sub").unwrap();
    extract(&finish(b)[..], ws.path(), &dest, &Limits::default()).unwrap();
    assert_eq!(fs::read(ws.path().join("sub/in.txt")).unwrap(), b"x");

    let mut b = gz_builder();
    raw_entry(
        &mut b,
        b"/workspace/other/x",
        EntryType::Regular,
        b"x",
        None,
    );
    let e = extract(&finish(b)[..], ws.path(), &dest, &Limits::default()).unwrap_err();
    assert!(matches!(e, ArchiveError::OutsideDest { .. }), "{e}");
    assert!(!ws.path().join("other").exists());
}

#[test]
fn conflicts_are_found_before_anything_moves() {
    let ws = tempfile::tempdir().unwrap();
    fs::write(ws.path().join("thing"), b"a file").unwrap();
    let tgz = tar_gz(&[("aaa.txt", b"first"), ("thing/inside.txt", b"x")]);
    let e = extract(&tgz[..], ws.path(), &root_dest(), &Limits::default()).unwrap_err();
    assert!(matches!(e, ArchiveError::Conflict { .. }), "{e}");
    assert_eq!(tree(ws.path()), vec!["thing"]);

    // Inside one archive: a file, then a directory of the same name.
    let tgz = tar_gz(&[("x", b"file"), ("x/y", b"under")]);
    let e = extract(&tgz[..], ws.path(), &root_dest(), &Limits::default()).unwrap_err();
    assert!(matches!(e, ArchiveError::Conflict { .. }), "{e}");
    assert_eq!(tree(ws.path()), vec!["thing"]);
}

#[test]
fn a_workspace_symlink_is_replaced_not_followed() {
    let ws = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, b"untouched").unwrap();
    symlink(&victim, ws.path().join("f")).unwrap();
    extract(
        &tar_gz(&[("f", b"new")])[..],
        ws.path(),
        &root_dest(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"untouched");
    assert_eq!(fs::read(ws.path().join("f")).unwrap(), b"new");
    assert!(!fs::symlink_metadata(ws.path().join("f"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn pack_round_trips_and_skips_symlinks() {
    let src = tempfile::tempdir().unwrap();
    fs::create_dir_all(src.path().join("d/e")).unwrap();
    fs::write(src.path().join("d/a.txt"), b"alpha").unwrap();
    fs::write(src.path().join("d/e/b.txt"), b"beta").unwrap();
    symlink("/etc/passwd", src.path().join("d/link")).unwrap();
    let mut out = Vec::new();
    let stats = pack(src.path(), &WorkspacePath::parse("d").unwrap(), &mut out).unwrap();
    assert_eq!((stats.files, stats.dirs, stats.skipped), (2, 2, 1));

    let dst = tempfile::tempdir().unwrap();
    let r = extract(&out[..], dst.path(), &root_dest(), &Limits::default()).unwrap();
    assert_eq!((r.files, r.bytes), (2, 9));
    assert_eq!(tree(dst.path()), vec!["d", "d/a.txt", "d/e", "d/e/b.txt"]);

    // A single file packs as one entry named after it.
    let mut out = Vec::new();
    pack(
        src.path(),
        &WorkspacePath::parse("d/a.txt").unwrap(),
        &mut out,
    )
    .unwrap();
    let dst = tempfile::tempdir().unwrap();
    extract(&out[..], dst.path(), &root_dest(), &Limits::default()).unwrap();
    assert_eq!(tree(dst.path()), vec!["a.txt"]);
}

#[test]
fn pack_refuses_symlinks_in_the_path_and_missing_paths() {
    let src = tempfile::tempdir().unwrap();
    fs::create_dir(src.path().join("real")).unwrap();
    symlink("real", src.path().join("via")).unwrap();
    symlink("/etc", src.path().join("etc")).unwrap();
    for (p, status) in [
        ("via", 422),
        ("etc/passwd", 422),
        ("nope", 404),
        ("real/nope", 404),
    ] {
        let mut out = Vec::new();
        let e = pack(src.path(), &WorkspacePath::parse(p).unwrap(), &mut out).unwrap_err();
        assert_eq!(e.status(), status, "{p}: {e}");
        assert!(out.is_empty(), "{p}: nothing written before the check");
    }
}
