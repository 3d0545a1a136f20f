//! Every way out of `/workspace` through the single-file endpoints, table-driven: each
//! must be answered with a 4xx and leave everything outside untouched, including while
//! a directory on the path is being swapped for a symlink.

mod support;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::json;
use support::{tree, Agent};

/// Percent-encodes everything but unreserved characters, so NUL and `\` reach the agent.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `outside/{victim,secret}` next to the workspace, and links out of the workspace.
fn plant(a: &Agent) -> std::path::PathBuf {
    let outside = a.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"original").unwrap();
    std::fs::write(outside.join("secret"), b"top secret").unwrap();
    let ws = a.workspace();
    symlink(&outside, ws.join("abs")).unwrap();
    symlink("../outside", ws.join("rel")).unwrap();
    symlink("/etc", ws.join("etc")).unwrap();
    symlink(outside.join("victim"), ws.join("victim_link")).unwrap();
    symlink("/etc/passwd", ws.join("passwd")).unwrap();
    symlink("loop", ws.join("loop")).unwrap();
    std::fs::create_dir(ws.join("dir")).unwrap();
    std::fs::write(ws.join("dir/f"), b"mine").unwrap();
    outside
}

fn assert_untouched(outside: &Path, passwd: &[u8]) {
    assert_eq!(tree(outside), ["secret", "victim"]);
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"original");
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd);
}

#[tokio::test]
async fn every_escape_is_refused_and_writes_nothing_outside() {
    let a = Agent::start();
    let outside = plant(&a);
    let passwd = std::fs::read("/etc/passwd").unwrap();
    let long_component = "x".repeat(300);
    let long_path = "d/".repeat(2100);
    // Paths that lead out (or are malformed), each tried on every endpoint.
    let escapes = [
        "abs/victim",
        "rel/victim",
        "etc/passwd",
        "../outside/victim",
        "dir/../../outside/victim",
        "/workspace/../outside/victim",
        "/etc/passwd",
        "/",
        "loop/x",
        "a\0b",
        "a\\b",
        long_component.as_str(),
        long_path.as_str(),
    ];
    let mut checked = 0;
    for p in escapes {
        let e = enc(p);
        let calls: Vec<(&str, String, Vec<u8>)> = vec![
            ("GET", format!("/files/content?path={e}"), vec![]),
            ("PUT", format!("/files/content?path={e}"), b"pwned".to_vec()),
            (
                "PUT",
                format!("/files/content?path={e}/new&parents=true"),
                b"pwned".to_vec(),
            ),
            ("GET", format!("/files/list?path={e}&depth=2"), vec![]),
            ("GET", format!("/files/stat?path={e}"), vec![]),
            ("GET", format!("/files/watch?path={e}"), vec![]),
            ("DELETE", format!("/files?path={e}&recursive=true"), vec![]),
            ("GET", format!("/files/download?path={e}"), vec![]),
            (
                "POST",
                format!("/files/upload?dest={e}"),
                support::tar_gz(&[("pwned", b"x")]),
            ),
            (
                "POST",
                "/files/mkdir".into(),
                json!({"path": format!("{p}/newdir"), "parents": true})
                    .to_string()
                    .into(),
            ),
            (
                "POST",
                "/files/move".into(),
                json!({"from": "dir/f", "to": format!("{p}/moved")})
                    .to_string()
                    .into(),
            ),
            (
                "POST",
                "/files/move".into(),
                json!({"from": p, "to": "stolen", "overwrite": true})
                    .to_string()
                    .into(),
            ),
        ];
        for (method, uri, body) in calls {
            let (s, body) = a.request(method, &uri, body).await;
            let shown = &uri[..uri.len().min(120)];
            assert!(
                (400..500).contains(&s),
                "{method} {shown}: {s} {}",
                String::from_utf8_lossy(&body)
            );
            assert!(!String::from_utf8_lossy(&body).contains("top secret"));
            checked += 1;
        }
        assert_untouched(&outside, &passwd);
    }
    // A symlink as the last component: reads refuse to follow it out, writes refuse it
    // outright, and operations on the link itself stay inside.
    let last: &[(&str, &str, Vec<u8>, u16)] = &[
        ("GET", "/files/content?path=victim_link", vec![], 422),
        ("GET", "/files/content?path=passwd", vec![], 422),
        ("GET", "/files/content?path=abs", vec![], 422),
        (
            "PUT",
            "/files/content?path=victim_link",
            b"pwned".to_vec(),
            409,
        ),
        ("PUT", "/files/content?path=passwd", b"pwned".to_vec(), 409),
        ("PUT", "/files/content?path=abs", b"pwned".to_vec(), 409),
        ("GET", "/files/list?path=abs", vec![], 422),
        ("GET", "/files/watch?path=rel", vec![], 422),
        (
            "POST",
            "/files/mkdir",
            br#"{"path":"abs","parents":true}"#.to_vec(),
            422,
        ),
        ("POST", "/files/mkdir", br#"{"path":"abs"}"#.to_vec(), 409),
    ];
    for (method, uri, body, status) in last {
        let (s, b) = a.request(method, uri, body.clone()).await;
        assert_eq!(
            s,
            *status,
            "{method} {uri}: {}",
            String::from_utf8_lossy(&b)
        );
        checked += 1;
    }
    let (s, v) = a.call("GET", "/files/stat?path=abs", Vec::new()).await;
    assert_eq!((s, &v["type"]), (200, &json!("symlink")), "{v}");
    let (s, _) = a
        .call("DELETE", "/files?path=victim_link", Vec::new())
        .await;
    assert_eq!(s, 204);
    assert_untouched(&outside, &passwd);
    eprintln!("{checked} escape attempts refused");
}

/// Swaps `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) {
    let (a, b) = (
        CString::new(a.as_os_str().as_bytes()).unwrap(),
        CString::new(b.as_os_str().as_bytes()).unwrap(),
    );
    // SAFETY: two valid NUL-terminated paths; AT_FDCWD-relative (they are absolute).
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

#[tokio::test]
async fn a_directory_swapped_for_a_symlink_mid_request_leads_nowhere() {
    let a = Agent::start();
    let outside = plant(&a);
    let passwd = std::fs::read("/etc/passwd").unwrap();
    let ws = a.workspace();
    std::fs::create_dir(ws.join("d")).unwrap();
    std::fs::write(ws.join("d/secret"), b"inside").unwrap();
    symlink(&outside, ws.join("d_link")).unwrap();
    // `d` flips between the real directory and a symlink to `outside`, as fast as it can.
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, d, l) = (stop.clone(), ws.join("d"), ws.join("d_link"));
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                exchange(&d, &l);
                swaps += 1;
            }
            // Leave `d` as the real directory.
            if std::fs::symlink_metadata(&d)
                .unwrap()
                .file_type()
                .is_symlink()
            {
                exchange(&d, &l);
            }
            swaps
        })
    };
    let (mut ok, mut refused) = (0, 0);
    for i in 0..150 {
        let calls: Vec<(&str, String, Vec<u8>)> = vec![
            (
                "PUT",
                format!("/files/content?path=d/f{i}"),
                b"pwned".to_vec(),
            ),
            ("GET", "/files/content?path=d/secret".into(), vec![]),
            ("GET", "/files/list?path=d".into(), vec![]),
            ("GET", "/files/stat?path=d/secret".into(), vec![]),
            (
                "POST",
                "/files/mkdir".into(),
                json!({"path": format!("d/m{i}")}).to_string().into(),
            ),
            ("DELETE", "/files?path=d/victim".into(), vec![]),
            (
                "POST",
                "/files/move".into(),
                json!({"from": "d/victim", "to": format!("got{i}")})
                    .to_string()
                    .into(),
            ),
        ];
        for (method, uri, body) in calls {
            let (s, b) = a.request(method, &uri, body).await;
            let text = String::from_utf8_lossy(&b);
            assert!(
                !text.contains("top secret"),
                "{method} {uri} read outside: {text}"
            );
            match s {
                200..=299 => ok += 1,
                400..=499 => refused += 1,
                _ => panic!("{method} {uri}: {s} {text}"),
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    eprintln!("{swaps} swaps; {ok} requests went through the directory, {refused} were refused");
    assert!(
        ok > 0 && refused > 0,
        "the race never hit both sides: {ok}/{refused}"
    );
    assert_untouched(&outside, &passwd);
}
