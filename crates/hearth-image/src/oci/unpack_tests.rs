//! Table-driven tests of layer unpacking: whiteouts, and every way out of the staging
//! root refused with nothing written outside it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::unpack::{LayerPath, Unpacker};

#[derive(Clone, Copy)]
enum E<'a> {
    File(&'a str, &'a str),
    Dir(&'a str),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Char(&'a str),
    Fifo(&'a str),
}

/// A layer tar with names written raw into the header, so `..` and friends survive.
fn layer(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_old();
        let (name, link, data, kind, mode): (&str, Option<&str>, &[u8], tar::EntryType, u32) =
            match *e {
                E::File(n, d) => (n, None, d.as_bytes(), tar::EntryType::Regular, 0o644),
                E::Dir(n) => (n, None, b"", tar::EntryType::Directory, 0o755),
                E::Sym(n, t) => (n, Some(t), b"", tar::EntryType::Symlink, 0o777),
                E::Hard(n, t) => (n, Some(t), b"", tar::EntryType::Link, 0o644),
                E::Char(n) => (n, None, b"", tar::EntryType::Char, 0o666),
                E::Fifo(n) => (n, None, b"", tar::EntryType::Fifo, 0o644),
            };
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Everything under `dir`, as sorted relative paths.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

struct Case<'a> {
    name: &'a str,
    /// `{out}` in names and targets becomes the absolute path of the outside dir.
    layers: &'a [&'a [E<'a>]],
    /// `None`: accepted; `Some(s)`: refused with `s` in the message.
    refused: Option<&'a str>,
}

fn run(case: &Case<'_>) -> (tempfile::TempDir, Result<Unpacker, String>) {
    let d = tempfile::tempdir().unwrap();
    let outside = d.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), "untouched").unwrap();
    let out = outside.display().to_string();
    let mut u = Unpacker::new(&d.path().join("staging/root")).unwrap();
    for entries in case.layers {
        let fixed: Vec<(String, Option<String>)> = entries
            .iter()
            .map(|e| match *e {
                E::Sym(_, t) | E::Hard(_, t) => (String::new(), Some(t.replace("{out}", &out))),
                _ => (String::new(), None),
            })
            .collect();
        let owned: Vec<E<'_>> = entries
            .iter()
            .zip(&fixed)
            .map(|(e, (_, t))| match (*e, t) {
                (E::Sym(n, _), Some(t)) => E::Sym(n, t),
                (E::Hard(n, _), Some(t)) => E::Hard(n, t),
                (e, _) => e,
            })
            .collect();
        if let Err(e) = u.apply(&layer(&owned)[..]) {
            assert_eq!(
                listing(&outside),
                ["victim"],
                "{}: wrote outside",
                case.name
            );
            assert_eq!(
                std::fs::read_to_string(outside.join("victim")).unwrap(),
                "untouched"
            );
            return (d, Err(e.to_string()));
        }
    }
    assert_eq!(
        listing(&outside),
        ["victim"],
        "{}: wrote outside",
        case.name
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("victim")).unwrap(),
        "untouched"
    );
    (d, Ok(u))
}

#[test]
fn escapes_are_refused_and_nothing_lands_outside() {
    use E::*;
    let cases = [
        Case {
            name: "dotdot entry",
            layers: &[&[File("../outside/pwned", "x")]],
            refused: Some("`..`"),
        },
        Case {
            name: "dotdot deep",
            layers: &[&[File("a/../../outside/pwned", "x")]],
            refused: Some("`..`"),
        },
        Case {
            name: "dotdot dir",
            layers: &[&[Dir("../../x")]],
            refused: Some("`..`"),
        },
        Case {
            name: "absolute symlink as parent",
            layers: &[&[Sym("evil", "{out}"), File("evil/pwned", "x")]],
            refused: Some("symlink"),
        },
        Case {
            name: "absolute symlink to / as parent",
            layers: &[&[Sym("evil", "/"), File("evil/tmp/hearth-unpack-pwned", "x")]],
            refused: Some("symlink"),
        },
        Case {
            name: "relative escaping symlink as parent",
            layers: &[&[
                Dir("a"),
                Sym("a/up", "../../../outside"),
                File("a/up/pwned", "x"),
            ]],
            refused: Some("symlink"),
        },
        Case {
            name: "symlink from a lower layer as parent",
            layers: &[&[Sym("evil", "{out}")], &[File("evil/pwned", "x")]],
            refused: Some("symlink"),
        },
        Case {
            name: "whiteout through a symlink",
            layers: &[&[Sym("evil", "{out}")], &[File("evil/.wh.victim", "")]],
            refused: Some("symlink"),
        },
        Case {
            name: "hard link out",
            layers: &[&[Hard("hl", "../outside/victim")]],
            refused: Some("`..`"),
        },
        Case {
            name: "hard link to an absolute path stays inside (and is missing)",
            layers: &[&[Hard("hl", "{out}/victim")]],
            refused: Some("does not exist"),
        },
        Case {
            name: "hard link through a symlink",
            layers: &[&[Sym("evil", "{out}"), Hard("hl", "evil/victim")]],
            refused: Some("symlink"),
        },
        Case {
            name: "hard link to a dir",
            layers: &[&[Dir("d"), Hard("hl", "d")]],
            refused: Some("directory"),
        },
        Case {
            name: "file replacing a symlink is written in place of the link",
            layers: &[&[Sym("link", "{out}/victim"), File("link", "new")]],
            refused: None,
        },
        Case {
            name: "device nodes are skipped",
            layers: &[&[Char("dev/null"), Fifo("fifo")]],
            refused: None,
        },
    ];
    for case in &cases {
        let (d, got) = run(case);
        match (case.refused, got) {
            (None, Ok(_)) => {}
            (Some(want), Err(msg)) => assert!(msg.contains(want), "{}: {msg}", case.name),
            (want, got) => panic!(
                "{}: wanted refused={want:?}, got {:?}",
                case.name,
                got.err()
            ),
        }
        drop(d);
    }
    assert!(!Path::new("/tmp/hearth-unpack-pwned").exists());
}

#[test]
fn replaced_links_and_skipped_devices() {
    let case = Case {
        name: "",
        layers: &[&[
            E::Sym("link", "/etc/passwd"),
            E::File("link", "new"),
            E::Char("dev/null"),
            E::Fifo("fifo"),
            E::File("f", "data"),
            E::Hard("g", "f"),
        ]],
        refused: None,
    };
    let (d, u) = run(&case);
    let u = u.unwrap();
    let root = d.path().join("staging/root");
    assert!(std::fs::symlink_metadata(root.join("link"))
        .unwrap()
        .is_file());
    assert_eq!(std::fs::read_to_string(root.join("link")).unwrap(), "new");
    assert_eq!(u.skipped, ["/dev/null (char device)"]);
    assert!(!root.join("dev/null").exists());
    let (f, g) = (root.join("f"), root.join("g"));
    assert_eq!(
        std::fs::metadata(f).unwrap().ino(),
        std::fs::metadata(g).unwrap().ino()
    );
}

#[test]
fn whiteouts_and_opaque_dirs_hide_lower_layers_only() {
    use E::*;
    let case = Case {
        name: "",
        layers: &[
            &[
                File("etc/motd", "hello"),
                File("etc/keep", "k"),
                File("d/a", "a"),
                File("d/sub/x", "x"),
                Dir("gone"),
                File("gone/inner", "i"),
            ],
            &[
                File("etc/.wh.motd", ""),
                File("d/sub/y", "y"),
                File("d/.wh..wh..opq", ""),
                File("d/b", "b"),
                File(".wh.gone", ""),
                File("etc/.wh.never-existed", ""),
            ],
        ],
        refused: None,
    };
    let (d, u) = run(&case);
    u.unwrap();
    let root = d.path().join("staging/root");
    assert_eq!(
        listing(&root),
        ["d", "d/b", "d/sub", "d/sub/y", "etc", "etc/keep"],
    );
}

#[test]
fn layer_paths_are_normalised() {
    let ok = [
        ("./a/b", "/a/b"),
        ("/abs/x", "/abs/x"),
        ("a//b/./c/", "/a/b/c"),
        ("..a/b..", "/..a/b.."),
    ];
    for (raw, want) in ok {
        assert_eq!(LayerPath::parse(raw.as_bytes()).unwrap().to_string(), want);
    }
    for bad in ["..", "a/..", "../a", "a/../b"] {
        assert!(LayerPath::parse(bad.as_bytes()).is_err(), "{bad}");
    }
    assert!(LayerPath::parse(&[b'a'; 256]).is_err());
}
