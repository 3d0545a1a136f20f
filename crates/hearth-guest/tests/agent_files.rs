//! `/files/upload` and `/files/download` through the agent: streamed, confined to the
//! workspace, uid 1000 ownership, rejections that leave nothing behind.

mod support;

use std::os::unix::fs::{symlink, MetadataExt};

use serde_json::Value;
use support::{finish, gz_builder, raw_entry, tar_gz, tree, Agent, Options};
use tar::EntryType;

async fn upload(a: &Agent, dest: &str, body: Vec<u8>) -> (u16, Value) {
    let (status, bytes) = a
        .request("POST", &format!("/files/upload?dest={dest}"), body)
        .await;
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn upload_extracts_as_uid_1000() {
    let a = Agent::start();
    let tgz = tar_gz(&[
        ("dir/", b""),
        ("dir/a.txt", b"alpha"),
        ("b.bin", b"\x00\x01\x02"),
    ]);
    let (status, v) = upload(&a, "/workspace/up", tgz).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        serde_json::json!({"dest": "/workspace/up", "files": 2, "dirs": 1, "bytes": 8})
    );
    let ws = a.workspace();
    assert_eq!(std::fs::read(ws.join("up/dir/a.txt")).unwrap(), b"alpha");
    for p in ["up", "up/dir", "up/dir/a.txt", "up/b.bin"] {
        let m = std::fs::metadata(ws.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 1000), "{p}");
    }
    // Relative dest and the default dest.
    let (status, v) = upload(&a, "rel", tar_gz(&[("x", b"1")])).await;
    assert_eq!((status, v["dest"].as_str()), (200, Some("/workspace/rel")));
    let (status, _) = a
        .request("POST", "/files/upload", tar_gz(&[("top", b"1")]))
        .await;
    assert_eq!(status, 200);
    assert!(ws.join("top").is_file());
}

#[tokio::test]
async fn bad_archives_are_refused_and_leave_nothing() {
    let a = Agent::start_with(Options {
        extra_args: vec![
            "--max-upload-bytes".into(),
            "1000".into(),
            "--max-upload-entries".into(),
            "5".into(),
        ],
        ..Default::default()
    });
    let ws = a.workspace();
    std::fs::write(ws.join("keep"), b"k").unwrap();
    let before = tree(&ws);
    let bad = |name: &[u8], kind, link| {
        let mut b = gz_builder();
        raw_entry(&mut b, b"fine.txt", EntryType::Regular, b"ok", None);
        raw_entry(&mut b, name, kind, b"", link);
        finish(b)
    };
    let many: Vec<(String, &[u8])> = (0..6).map(|i| (format!("f{i}"), &b"x"[..])).collect();
    let many: Vec<(&str, &[u8])> = many.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "symlink",
            bad(b"ln", EntryType::Symlink, Some("/etc")),
            422,
            "\"ln\"",
        ),
        (
            "hardlink",
            bad(b"hl", EntryType::Link, Some("fine.txt")),
            422,
            "\"hl\"",
        ),
        ("chardev", bad(b"cd", EntryType::Char, None), 422, "\"cd\""),
        ("fifo", bad(b"ff", EntryType::Fifo, None), 422, "\"ff\""),
        (
            "traversal",
            bad(b"../../etc/x", EntryType::Regular, None),
            422,
            "\"../../etc/x\"",
        ),
        (
            "absolute",
            bad(b"/etc/cron.d/x", EntryType::Regular, None),
            422,
            "\"/etc/cron.d/x\"",
        ),
        ("entries", tar_gz(&many), 422, "more than 5 entries"),
        (
            "bytes",
            tar_gz(&[("big", &[7u8; 2000][..])]),
            413,
            "more than 1000 bytes",
        ),
        (
            "garbage",
            b"definitely not gzip".to_vec(),
            400,
            "not a valid tar.gz",
        ),
    ];
    for (what, body, status, mention) in cases {
        let (s, v) = upload(&a, "/workspace", body).await;
        assert_eq!(s, status, "{what}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(mention), "{what}: {msg}");
        assert_eq!(tree(&ws), before, "{what}: leftovers");
    }
    let (s, v) = upload(&a, "/etc", tar_gz(&[("x", b"1")])).await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = upload(&a, "/workspace/../etc", tar_gz(&[("x", b"1")])).await;
    assert_eq!(s, 422, "{v}");
}

#[tokio::test]
async fn a_user_symlink_cannot_redirect_an_upload() {
    let a = Agent::start();
    let outside = tempfile::tempdir().unwrap();
    // Writable by uid 1000, so only the confinement can stop a write there.
    std::fs::set_permissions(
        outside.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    symlink(outside.path(), a.workspace().join("escape")).unwrap();
    let (status, v) = upload(&a, "/workspace/escape", tar_gz(&[("planted", b"x")])).await;
    // The extraction runs chrooted in the workspace: the host path the link names does
    // not exist there.
    assert_ne!(status, 200, "{v}");
    assert!(tree(outside.path()).is_empty());
    // Nor does a magic link through /proc lead out: the agent's own root (the real one)
    // would be `/proc/self/root` to a thread of the agent, but there is no /proc inside.
    let magic = format!("/proc/self/root{}", outside.path().display());
    symlink(&magic, a.workspace().join("magic")).unwrap();
    for dest in ["/workspace/magic", "/workspace/magic/sub"] {
        let (status, v) = upload(&a, dest, tar_gz(&[("planted", b"x")])).await;
        assert_ne!(status, 200, "{dest}: {v}");
    }
    assert!(tree(outside.path()).is_empty());
    let (status, _) = a
        .request("GET", "/files/download?path=/workspace/magic", Vec::new())
        .await;
    assert_ne!(status, 200);
}

#[tokio::test]
async fn upload_streams_large_archives() {
    let a = Agent::start();
    // ~48 MiB of incompressible-ish data in one archive, sent in one request.
    let data: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let tgz = tar_gz(&[("big.bin", &data)]);
    let t = std::time::Instant::now();
    let (status, v) = upload(&a, "/workspace", tgz).await;
    assert_eq!(status, 200, "{v}");
    eprintln!("48 MiB upload: {:?}", t.elapsed());
    assert_eq!(
        std::fs::metadata(a.workspace().join("big.bin"))
            .unwrap()
            .len(),
        48 << 20
    );
}

#[tokio::test]
async fn download_round_trips_and_never_follows_symlinks() {
    let a = Agent::start();
    let ws = a.workspace();
    std::fs::create_dir_all(ws.join("proj/src")).unwrap();
    std::fs::write(ws.join("proj/src/main.rs"), b"fn main() {}").unwrap();
    std::fs::write(ws.join("proj/README"), b"hi").unwrap();
    symlink("/etc/hostname", ws.join("proj/hostlink")).unwrap();
    symlink("/etc", ws.join("etc")).unwrap();

    let (status, body) = a
        .request("GET", "/files/download?path=/workspace/proj", Vec::new())
        .await;
    assert_eq!(status, 200);
    let out = tempfile::tempdir().unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(&body[..]))
        .unpack(out.path())
        .unwrap();
    assert_eq!(
        tree(out.path()),
        vec!["proj", "proj/README", "proj/src", "proj/src/main.rs"]
    );
    assert_eq!(
        std::fs::read(out.path().join("proj/src/main.rs")).unwrap(),
        b"fn main() {}"
    );

    for (path, status) in [
        ("etc/passwd", 422),
        ("etc", 422),
        ("nope", 404),
        ("/etc/passwd", 422),
        ("../x", 422),
    ] {
        let (s, body) = a
            .request("GET", &format!("/files/download?path={path}"), Vec::new())
            .await;
        assert_eq!(s, status, "{path}: {}", String::from_utf8_lossy(&body));
    }
    let (s, _) = a.request("GET", "/files/download", Vec::new()).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn an_early_rejection_still_reaches_a_client_sending_a_big_body() {
    let a = Agent::start();
    let mut b = gz_builder();
    raw_entry(&mut b, b"evil", EntryType::Symlink, b"", Some("/"));
    let data: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "after", &data[..]).unwrap();
    let (status, v) = upload(&a, "/workspace", finish(b)).await;
    assert_eq!(status, 422, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("\"evil\""));
    assert!(tree(&a.workspace()).is_empty());
}
